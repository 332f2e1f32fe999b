#!/usr/bin/env bash
# Runs the app's real-window test (app/tests/window.rs): the app binary driven through
# tauri-driver + WebKitWebDriver in Xvfb, keys in gnome-keyring on a private D-Bus session,
# against mosquitto, an in-process pi-agent and an SDK provider. Screenshots of every step
# land in target/e2e-screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
ensure_app_e2e_deps
PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export PATH
rm -rf "${CARGO_TARGET_DIR:-target}/e2e-screenshots"
# Built first so the X server and session below only live for the test itself.
cargo test --workspace --locked --test window --no-run
exec xvfb-run --auto-servernum --server-args="-screen 0 1280x1024x24" \
    dbus-run-session -- sh -c '
  set -e
  eval "$(printf "p1consent-test" | gnome-keyring-daemon --unlock --components=secrets)"
  export GNOME_KEYRING_CONTROL
  cargo test --workspace --locked --test window -- --ignored --nocapture --test-threads=1
'
