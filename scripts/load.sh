#!/usr/bin/env bash
# Load table: N simulated meters at 1 Hz through Debian's mosquitto to providers that open
# every record (p1consent-loadgen, docs/PERFORMANCE.md "Load"). Builds the release binary,
# then one `run` per meter count; each prints a table row (the first also the header).
#
# Usage: scripts/load.sh [--duration 60s] [--meters "1 100 1000 10000"] [more `run` flags]
#   e.g. scripts/load.sh --duration 10m --meters 10000      (the 10-minute soak)
#        scripts/load.sh --meters "1000" --providers-per-meter 3 --meter-conns 100
# Exit status: 0 all runs clean, 2 a run measured loss/duplicates/refusals, 1 an error.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=60s
meters="1 100 1000 10000"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --meters) meters=$2; shift 2 ;;
    *) break ;;
  esac
done

cargo build --release --locked -p p1consent-loadgen
bin=target/release/p1consent-loadgen
# 10,000 meters on their own connections need as many descriptors (the binary raises its
# soft limit to the hard one too; children, mosquitto included, inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); nproc: $(nproc);" \
  "cpu: $(lscpu | sed -n 's/^Model name: *//p'); mosquitto: $(dpkg-query -W -f='${Version}' mosquitto 2>/dev/null || echo '?');" \
  "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
first=1
status=0
for n in $meters; do
  args=(run --meters "$n" --duration "$duration" "$@")
  [[ $first == 1 ]] || args+=(--no-header)
  echo "+ p1consent-loadgen ${args[*]}" >&2
  rc=0
  "$bin" "${args[@]}" || rc=$?
  if [[ $rc -ne 0 && $status -ne 1 ]]; then status=$rc; fi
  first=0
done
exit "$status"
