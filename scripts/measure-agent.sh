#!/usr/bin/env bash
# Measures the pi-agent for docs/PERFORMANCE.md ("Agent"): release binary size, memory and
# CPU at 1 Hz (simulator, one grant), and telegrams/s when replaying the 1 Hz capture as
# fast as possible into Debian's mosquitto. Prints the machine and its load next to each
# figure. Usage: scripts/measure-agent.sh [seconds at 1 Hz, default 180] [seconds of replay, default 30]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/deps.sh
ensure_rust
apt_install mosquitto

secs="${1:-180}"
replay_secs="${2:-30}"

echo "== machine"
date -u '+%Y-%m-%d %H:%M UTC'
echo "nproc: $(nproc)"
grep -m1 'model name' /proc/cpuinfo || true
grep MemTotal /proc/meminfo
echo "rustc: $(rustc --version)"

echo "== release build"
cargo build --release --locked -p pi-agent
bin="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/pi-agent"
echo "pi-agent (x86_64, release): $(stat -c %s "$bin") bytes = $(awk "BEGIN{printf \"%.1f\", $(stat -c %s "$bin")/1048576}") MiB"

echo "== agent at 1 Hz for ${secs} s, then replay at full speed for ${replay_secs} s"
echo "load before: $(uptime)"
P1C_AGENT_BIN="$bin" P1C_MEASURE_SECS="$secs" P1C_MEASURE_REPLAY_SECS="$replay_secs" \
    cargo test --locked -p p1consent-scenarios --test crash_restart -- \
    --ignored --exact measure_agent --nocapture 2>&1 | grep -E '^MEASURE|test result|panicked'
echo "load after: $(uptime)"
