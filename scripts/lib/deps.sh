# Idempotent installation of what the build and tests need. Sourced by scripts/*.sh.

# Debian packages the tests use (real parts, not mocks).
# The desktop app (Tauri on WebKitGTK) and its keyring tests (Secret Service on a private
# D-Bus session) need the rest.
TEST_APT_PACKAGES=(pkg-config mosquitto socat
    build-essential file libwebkit2gtk-4.1-dev libxdo-dev libssl-dev libayatana-appindicator3-dev
    librsvg2-dev libdbus-1-dev gnome-keyring dbus dbus-x11 libsecret-tools)
TEST_APT_PACKAGES+=(chromium) # the provider dashboard test renders the page in headless Chromium

apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "== installing Debian packages: ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

ensure_rust() {
    command -v cargo >/dev/null || { echo "cargo not found: install Rust from rustup.rs first" >&2; exit 1; }
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
}

ensure_test_deps() {
    ensure_rust
    apt_install "${TEST_APT_PACKAGES[@]}"
}

# The Raspberry Pi cross target: Debian's cross gcc (for crates that build C) and rustup's
# aarch64 standard library. Returns non-zero when rustup cannot fetch it.
ensure_aarch64_target() {
    apt_install gcc-aarch64-linux-gnu libc6-dev-arm64-cross
    rustup target list --installed 2>/dev/null | grep -q '^aarch64-unknown-linux-gnu$' && return 0
    timeout 300 rustup target add aarch64-unknown-linux-gnu
}

# The real-window test of the app (scripts/test-app-e2e.sh): an X server, WebKitGTK's
# WebDriver, a D-Bus session with gnome-keyring, and tauri-driver.
APP_E2E_APT_PACKAGES=(webkit2gtk-driver xvfb xauth gnome-keyring dbus-x11 libsecret-tools)

ensure_tauri_driver() {
    command -v tauri-driver >/dev/null && return 0
    [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/tauri-driver" ] && return 0
    echo "== installing tauri-driver"
    cargo install tauri-driver --locked
}

ensure_app_e2e_deps() {
    ensure_test_deps
    apt_install "${APP_E2E_APT_PACKAGES[@]}"
    ensure_tauri_driver
}
