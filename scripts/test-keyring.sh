#!/usr/bin/env bash
# Runs the app's keyring tests against a real Secret Service: a private D-Bus session with
# gnome-keyring-daemon (unlocked with a throw-away password). Needs apt: gnome-keyring dbus
# dbus-x11 libsecret-tools libdbus-1-dev (see scripts/lib/deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
ensure_test_deps
exec dbus-run-session -- sh -c '
  set -e
  eval "$(printf "p1consent-test" | gnome-keyring-daemon --unlock --components=secrets)"
  export GNOME_KEYRING_CONTROL
  cargo test --workspace --locked --test keyring -- --ignored --test-threads=1
'
