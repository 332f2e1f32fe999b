#!/usr/bin/env bash
# The README's test command: installs what the tests need (idempotently), then checks
# formatting, lints and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
ensure_test_deps

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked --no-fail-fast
echo "== the app's keys in a real Secret Service (gnome-keyring on a private D-Bus session)"
scripts/test-keyring.sh
echo "== the app in its real window (Xvfb, tauri-driver, WebKitWebDriver), screenshots in target/e2e-screenshots"
scripts/test-app-e2e.sh
echo "== pi-agent for the Raspberry Pi (aarch64)"
if ensure_aarch64_target; then
    cargo check --locked --target aarch64-unknown-linux-gnu -p pi-agent
else
    echo "!! skipped: the aarch64 Rust target could not be installed here (no access to rustup's server)"
fi
