#!/usr/bin/env bash
# The README's first command: P1 Consent on this machine. A pi-agent with a simulated smart
# meter and its embedded MQTT broker (loopback only), a sample provider "Wattt Insights" with a
# request and its live dashboard, and the owner's wallet:
#   - with a display: the wallet app (Tauri), and what to click;
#   - with --headless (or no display): the whole story with the CLIs, step by step.
# Ctrl-C (or the end of the story) stops everything the script started.
#
#   scripts/demo.sh [--headless] [--keep-running] [--dir DIR]
#
# Debug build on purpose: it is the build scripts/test.sh makes too (one build for both), and
# the dev profile already optimises every dependency (crypto included), so the demo runs as
# smoothly as a release build, which would take much longer to compile (thin LTO).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/deps.sh
. scripts/lib/deps.sh

HEADLESS=auto
KEEP=0
DEMO_DIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --headless) HEADLESS=1 ;;
        --keep-running) KEEP=1 ;;
        --dir)
            [ $# -ge 2 ] || { echo "--dir needs a directory" >&2; exit 2; }
            DEMO_DIR=$2
            shift
            ;;
        -h | --help)
            sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "unknown option $1 (try --help)" >&2
            exit 2
            ;;
    esac
    shift
done
if [ "$HEADLESS" = auto ]; then
    if [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]; then HEADLESS=0; else HEADLESS=1; fi
fi

# ---- output helpers ---------------------------------------------------------------------
if [ -t 1 ]; then B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' D=$'\e[2m' N=$'\e[0m'; else B="" G="" R="" D="" N=""; fi
STEP=0
step() { STEP=$((STEP + 1)); printf '\n%s== %d. %s%s\n' "$B" "$STEP" "$*" "$N"; }
say() { printf '   %s\n' "$*"; }
ok() { printf '   %s✔ %s%s\n' "$G" "$*" "$N"; }
indent() { sed 's/^/   │ /'; }
die() {
    printf '\n%s✘ %s%s\n' "$R" "$*" "$N" >&2
    for f in "${LOGS_ON_FAILURE[@]}"; do
        [ -s "$f" ] && { printf '%s--- last lines of %s%s\n' "$D" "$f" "$N" >&2; tail -n 15 "$f" >&2; }
    done
    exit 1
}
LOGS_ON_FAILURE=()

# ---- everything started here is stopped on exit ----------------------------------------
PIDS=()
cleanup() {
    local code=$?
    trap - EXIT INT TERM
    if [ ${#PIDS[@]} -gt 0 ]; then
        printf '\n%sstopping what the demo started…%s\n' "$D" "$N"
        for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
        for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    fi
    [ -n "${DEMO_DIR:-}" ] && [ -d "$DEMO_DIR" ] && printf '%sdemo files (logs, keys, data) are in %s%s\n' "$D" "$DEMO_DIR" "$N"
    exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits until "$@" succeeds (polling), at most $WAIT_S seconds; returns 1 on timeout.
WAIT_S=90
wait_for() {
    local deadline=$((SECONDS + WAIT_S))
    until "$@"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.5
    done
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 40000))
        port_open "$p" || { echo "$p"; return 0; }
    done
    return 1
}
alive() { kill -0 "$1" 2>/dev/null; }

# ---- 0. what the demo needs ---------------------------------------------------------------
step "Preparing this machine"
command -v cargo >/dev/null || die "cargo not found: install Rust from https://rustup.rs first"
apt_install build-essential pkg-config curl jq
ok "Debian packages and Rust are there"

step "Building pi-agent, p1consent-provider and p1consent-wallet (debug build; the first time takes a few minutes)"
cargo build --locked -p pi-agent -p p1consent-provider -p p1consent-wallet ||
    die "the build failed (see cargo's messages above)"
BIN="${CARGO_TARGET_DIR:-target}/debug"
for b in pi-agent p1consent-provider p1consent-wallet; do
    [ -x "$BIN/$b" ] || die "the build did not produce $BIN/$b (run: cargo build -p pi-agent -p p1consent-provider -p p1consent-wallet)"
done
BIN=$(cd "$BIN" && pwd)
ok "built into $BIN"

if [ -z "$DEMO_DIR" ]; then DEMO_DIR=$(mktemp -d "${TMPDIR:-/tmp}/p1consent-demo.XXXXXX"); fi
mkdir -p "$DEMO_DIR"
DEMO_DIR=$(cd "$DEMO_DIR" && pwd)
[ -z "$(ls -A "$DEMO_DIR")" ] || die "$DEMO_DIR is not empty: give an empty or new directory with --dir"
say "demo directory: $DEMO_DIR"

# ---- 1. the meter ---------------------------------------------------------------------------
step "Starting the meter's agent: simulated DSMR 5 meter, embedded MQTT broker on loopback"
PORT=$(free_port) || die "no free TCP port found"
BROKER="mqtt://127.0.0.1:$PORT"
AGENT_DIR="$DEMO_DIR/agent"
LOGS_ON_FAILURE+=("$DEMO_DIR/agent.log")
# Through the environment, so `pi-agent pair` below puts the same broker in its code.
export P1C_BROKER_LISTEN="127.0.0.1:$PORT"
RUST_LOG=${RUST_LOG:-info} "$BIN/pi-agent" --state-dir "$AGENT_DIR" run --simulate \
    >"$DEMO_DIR/agent.log" 2>&1 &
AGENT_PID=$!
PIDS+=("$AGENT_PID")
wait_for port_open "$PORT" || die "the agent's broker did not open port $PORT"
alive "$AGENT_PID" || die "the agent stopped"
say "P1C_BROKER_LISTEN=127.0.0.1:$PORT pi-agent --state-dir $AGENT_DIR run --simulate   (log: $DEMO_DIR/agent.log)"
ok "agent running, broker at $BROKER"

"$BIN/pi-agent" --state-dir "$AGENT_DIR" pair >"$DEMO_DIR/pairing.txt" 2>&1 || die "pi-agent pair failed: $(cat "$DEMO_DIR/pairing.txt")"
PAIR_LINK=$(grep -o 'p1consent://pair?[^[:space:]]*' "$DEMO_DIR/pairing.txt" | head -n 1)
[ -n "$PAIR_LINK" ] || die "no pairing link in the output of pi-agent pair"
say "The meter's pairing code (pi-agent pair):"
grep -v '^\s*$' "$DEMO_DIR/pairing.txt" | grep -v 'p1consent://pair' | indent
say "pairing link: $PAIR_LINK"

# ---- 2. the provider ------------------------------------------------------------------------
step "Creating the sample provider \"Wattt Insights\" and its request"
export P1C_PROVIDER_DIR="$DEMO_DIR/provider"
export P1C_PROVIDER_PASSPHRASE="demo passphrase, not secret"
P="$BIN/p1consent-provider"
"$P" init --name "Wattt Insights" --contact privacy@wattt.example | indent ||
    die "p1consent-provider init failed"
REQUEST_LINK=$("$P" request --purpose "Energy saving advice from your live power use" \
    --fields power_delivered,power_returned,energy_delivered --resolution ten_seconds \
    --retention-days 30 --expires-in 90d --png "$DEMO_DIR/request.png" 2>"$DEMO_DIR/request.txt") ||
    die "p1consent-provider request failed: $(cat "$DEMO_DIR/request.txt")"
say "p1consent-provider request --purpose … --fields power_delivered,power_returned,energy_delivered --resolution ten_seconds"
indent <"$DEMO_DIR/request.txt"
say "request link: $REQUEST_LINK"
ok "request signed by Wattt Insights (QR code also in $DEMO_DIR/request.png)"

step "Starting the provider's live dashboard"
LOGS_ON_FAILURE+=("$DEMO_DIR/dashboard.log")
"$P" dashboard --broker "$BROKER" --listen 127.0.0.1:0 --request-link "$REQUEST_LINK" \
    >"$DEMO_DIR/dashboard.out" 2>"$DEMO_DIR/dashboard.log" &
DASH_PID=$!
PIDS+=("$DASH_PID")
dash_url() { grep -o 'http://[^ ]*' "$DEMO_DIR/dashboard.out" 2>/dev/null | head -n 1; }
dash_started() { [ -n "$(dash_url)" ] || { alive "$DASH_PID" || die "the dashboard stopped"; false; }; }
wait_for dash_started || die "the dashboard did not start"
URL=$(dash_url)
api() { curl -fsS --max-time 10 "${URL}api/state"; }
dash_is() { api 2>/dev/null | jq -e "$1" >/dev/null 2>&1; }
wait_for dash_is '.connected' || die "the dashboard did not connect to the broker"
ok "dashboard: ${B}$URL${N}   (log: $DEMO_DIR/dashboard.log)"

# ---- 3a. with a display: the wallet app -----------------------------------------------------
run_app() {
    step "Building and starting the wallet app (Tauri; the first build takes 10-15 minutes)"
    # The app's Debian packages (docs/APP.md); the demo keeps its keys in a file, no keyring.
    apt_install build-essential pkg-config file libwebkit2gtk-4.1-dev libxdo-dev libssl-dev \
        libayatana-appindicator3-dev librsvg2-dev libdbus-1-dev ||
        { say "could not install the app's Debian packages"; return 1; }
    if ! cargo build --locked -p p1consent-app >"$DEMO_DIR/app-build.log" 2>&1; then
        say "the app did not build (see $DEMO_DIR/app-build.log)"
        return 1
    fi
    mkdir -p "$DEMO_DIR/wallet-app"
    P1CONSENT_DATA_DIR="$DEMO_DIR/wallet-app" P1CONSENT_SECRET_STORE=file \
        "$BIN/p1consent-app" "$PAIR_LINK" >"$DEMO_DIR/app.log" 2>&1 &
    APP_PID=$!
    PIDS+=("$APP_PID")
    sleep 5
    if ! alive "$APP_PID"; then
        say "the app stopped right away (see $DEMO_DIR/app.log)"
        return 1
    fi
    if command -v xdg-open >/dev/null; then xdg-open "$URL" >/dev/null 2>&1 || true; fi
    cat <<EOF

   ${B}Your turn, in the wallet app${N} (files in $DEMO_DIR/wallet-app):
   1. Welcome: create your identity. Then "Pair a meter" (the app opened with the meter's
      link; else paste it):
        $PAIR_LINK
   2. Open the dashboard in a browser: ${B}$URL${N}
      It says "waiting" and shows Wattt Insights' request. Click "Open in the P1 Consent
      wallet", or paste the request link on the app's Requests page:
        $REQUEST_LINK
   3. Read who asks what and why, choose "My meter", click ${B}Approve${N}.
   4. Watch the dashboard: "receiving", a power point every 10 seconds.
   5. "Who has access" → ${B}Withdraw access…${N} (tick "also ask to erase"): the dashboard says
      "revoked", the data it had is erased, nothing new arrives.
   6. "Check the records": every signed entry verifies.

   Ctrl-C stops the agent, the dashboard and the app.
EOF
    while alive "$APP_PID"; do sleep 1; done
    say "the app was closed"
    return 0
}

# ---- 3b. headless: the story with the CLIs --------------------------------------------------
run_story() {
    local W=("$BIN/p1consent-wallet" --data-dir "$DEMO_DIR/wallet" --timeout 30)
    local out rid cid owner data
    step "The owner creates a wallet"
    say "p1consent-wallet init"
    out=$("${W[@]}" --json init) || die "wallet init failed"
    owner=$(jq -r .owner <<<"$out")
    ok "owner identity created (public key ${owner:0:16}…)"

    step "The owner pairs the meter with its pairing link"
    say "p1consent-wallet pair 'p1consent://pair?…'"
    "${W[@]}" pair "$PAIR_LINK" | indent || die "pairing failed"
    ok "paired: the meter now follows this owner's signed consent log"

    step "The owner opens Wattt Insights' request"
    say "p1consent-wallet open 'p1consent://request?…'"
    "${W[@]}" open "$REQUEST_LINK" | indent || die "the wallet refused the request"
    rid=$("${W[@]}" --json requests | jq -r '.[0].request_id') || die "no open request"
    ok "request verified (signature, expiry) and shown in plain words"

    step "The owner grants it"
    say "p1consent-wallet grant ${rid:0:12} --device 'My meter'"
    out=$("${W[@]}" --json grant "$rid" --device "My meter") || die "grant failed"
    cid=$(jq -r .consent_id <<<"$out")
    ok "granted consent ${cid:0:12}; the meter hands Wattt Insights the key of this view only"

    step "Wattt Insights receives readings (ten-second windows; the first one takes up to ~20 s)"
    wait_for dash_is '.state == "receiving" and (.points | length) >= 3' ||
        die "the provider received no readings: $(api 2>&1 | head -c 400)"
    data="$P1C_PROVIDER_DIR/state/data/$cid.jsonl"
    say "dashboard: $(api | jq -r .state_text)"
    say "the last readings, as the provider stored them ($data):"
    tail -n 3 "$data" | jq -c '{seq, window_end_ms: .payload.end_ms, mean_power_kw: .payload.power_delivered_kw.mean,
        meter_kwh: ((.payload.energy_delivered_tariff1_kwh.end // 0) + (.payload.energy_delivered_tariff2_kwh.end // 0) | . * 1000 | round / 1000)}' | indent
    say "chart points on the dashboard: $(api | jq '.points | length')"
    ok "data flows, end-to-end encrypted from the meter to the provider"

    step "The owner revokes the consent and asks for erasure"
    say "p1consent-wallet revoke ${cid:0:12} --erase"
    "${W[@]}" revoke "$cid" --erase | indent || die "revoke failed"
    wait_for dash_is '.state == "revoked" and .consent.phase.state == "erased"' ||
        die "the provider did not see the revocation: $(api 2>&1 | head -c 400)"
    say "dashboard: $(api | jq -r .state_text)"
    grep -E 'REVOKED|ERASED|ROTATED|ACCESS ENDED' "$DEMO_DIR/dashboard.log" | indent || true
    [ ! -e "$data" ] || die "the provider's data file $data still exists"
    say "p1consent-provider status:"
    "$P" status 2>/dev/null | indent
    ok "revoked: the meter rotated its key, the provider's data is deleted, the erasure confirmed"
    local before after
    before=$(api | jq '.consent.readings')
    sleep 12
    after=$(api | jq '.consent.readings')
    { [ "$before" = "$after" ] && [ ! -e "$data" ]; } ||
        die "the provider still receives data after the revocation ($before → $after)"
    ok "12 s later: nothing new has arrived (the meter seals with a key Wattt Insights does not have)"

    step "The owner checks the records and gets a receipt"
    say "p1consent-wallet consents"
    "${W[@]}" consents | indent || die "consents failed"
    say "p1consent-wallet log --verify"
    "${W[@]}" log --verify | indent || die "the log does not verify"
    "${W[@]}" receipt "$cid" >"$DEMO_DIR/receipt.json" || die "no receipt"
    say "p1consent-wallet receipt ${cid:0:12} > receipt.json; the provider checks it:"
    "$P" verify-receipt "$DEMO_DIR/receipt.json" --owner "$owner" 2>/dev/null | indent ||
        die "the receipt does not verify"
    ok "every entry verifies; the receipt is signed by the owner"
}

if [ "$HEADLESS" = 0 ]; then
    if ! run_app; then
        say "falling back to the command-line story"
        run_story
    fi
else
    say "no display (or --headless): the owner's side runs with the p1consent-wallet CLI"
    run_story
fi

printf '\n%s%s✔ demo complete%s\n' "$G" "$B" "$N"
if [ "$KEEP" = 1 ]; then
    say "still running: the dashboard at $URL and the agent (broker $BROKER). Ctrl-C stops them."
    wait "$AGENT_PID" "$DASH_PID" || true
fi
