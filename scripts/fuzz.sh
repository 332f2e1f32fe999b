#!/usr/bin/env bash
# Bounded fuzzing of every protocol decoder: builds fuzz/ once and runs each cargo-fuzz target
# for N seconds (default 30). Exits non-zero if any target crashes (artifacts in
# fuzz/artifacts/<target>/). Needs the nightly toolchain and cargo-fuzz. See docs/FUZZING.md.
#   scripts/fuzz.sh [seconds] [target...]
set -uo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-30}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
[ -d corpus/dsmr_parse ] || ./seed.sh >/dev/null
cargo +nightly fuzz build -O || exit 2
failed=()
for t in "${targets[@]}"; do
  mkdir -p corpus/"$t"
  log=$(mktemp)
  echo "== $t (${secs}s)"
  if cargo +nightly fuzz run -O "$t" corpus/"$t" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
    grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$log" | tail -2
  else
    echo "!! $t FAILED"; grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -5
    failed+=("$t")
  fi
  rm -f "$log"
done
if [ ${#failed[@]} -ne 0 ]; then
  echo "crashes in: ${failed[*]}"; exit 1
fi
echo "all ${#targets[@]} targets ran ${secs}s without a crash"
