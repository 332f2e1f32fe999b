#!/usr/bin/env bash
# P1 parse throughput: Python dsmr-parser (PyPI) against our parser, same files, same rounds,
# both as in-process loops (no process start-up in the figures).
#
#   scripts/bench-compare-python.sh [ROUNDS]        (default 300)
#
# 1. A venv in target/bench-venv with dsmr-parser (pinned below).
# 2. Python picks the sample files it accepts: the telegram specification matching the
#    file's version (V2_2, V3, V4, V5, BELGIUM_FLUVIUS, …), CRC validated where the version
#    has one, parse(throw_ex=True) must not raise. Those files, ROUNDS times (after one
#    untimed warm-up round); plus the 1 Hz capture through TelegramBuffer + V5, ROUNDS times.
# 3. Our framer + parser (CRC checked) on the very same file list and capture, ROUNDS times:
#    `cargo bench -p p1consent-shared --bench parse_folder` (release, in-process loop).
# 4. Prints both throughputs and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${1:-300}"
DSMR_PARSER_VERSION="${DSMR_PARSER_VERSION:-1.11.2}"
VENV="${VENV:-$PWD/target/bench-venv}"
OUT="$PWD/target/bench-compare"
SAMPLES="$PWD/shared/tests/data/p1-samples"
STREAM="$PWD/shared/tests/data/p1-streams/iskra-am550t_dsmr50_566-telegrams_1s.txt"
mkdir -p "$OUT"

if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import dsmr_parser, importlib.metadata as m, sys; sys.exit(m.version('dsmr-parser') != '$DSMR_PARSER_VERSION')" 2>/dev/null; then
    echo "== pip install dsmr-parser==$DSMR_PARSER_VERSION"
    "$VENV/bin/pip" install -q "dsmr-parser==$DSMR_PARSER_VERSION"
fi

echo "== Python dsmr-parser $DSMR_PARSER_VERSION ($("$VENV/bin/python" --version)), $ROUNDS rounds"
"$VENV/bin/python" - "$SAMPLES" "$STREAM" "$ROUNDS" "$OUT/accepted.txt" > "$OUT/python.txt" <<'PY'
import logging, os, sys, time
from dsmr_parser import telegram_specifications as S
from dsmr_parser.parsers import TelegramParser
from dsmr_parser.clients.telegram_buffer import TelegramBuffer

logging.disable(logging.CRITICAL)  # rejected lines are logged; keep logging out of the timing
samples, stream, rounds, accepted_out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

# File name prefix -> the specification a user of dsmr-parser would pick for that meter.
SPECS = [
    ("dsmr22", S.V2_2), ("dsmr30", S.V3), ("dsmr40", S.V4), ("dsmr42", S.V4),
    ("dsmr50", S.V5), ("emucs", S.BELGIUM_FLUVIUS), ("se-", S.SWEDEN),
    ("ie-", S.ISKRA_IE), ("de-easymeter", S.Q3D), ("lux-", S.V5),
]

def spec_for(name):
    for prefix, spec in SPECS:
        if name.startswith(prefix):
            return spec
    return None

accepted = []  # (path, parser, text, bytes)
rejected = []
for name in sorted(os.listdir(samples)):
    if not name.endswith(".txt"):
        continue
    path = os.path.join(samples, name)
    raw = open(path, "rb").read()
    spec = spec_for(name)
    if spec is None:
        rejected.append((name, "no specification"))
        continue
    parser = TelegramParser(spec)
    text = raw.decode("latin-1")  # decoded once, outside the timing
    try:
        parser.parse(text, throw_ex=True)
    except Exception as e:  # noqa: BLE001 - any failure means "not accepted"
        rejected.append((name, type(e).__name__))
        continue
    accepted.append((path, parser, text, len(raw)))

with open(accepted_out, "w") as f:
    for path, *_ in accepted:
        f.write(path + "\n")

def run_files():
    n = 0
    for _, parser, text, _ in accepted:
        parser.parse(text)
        n += 1
    return n

run_files()  # warm-up
t0 = time.perf_counter()
n = sum(run_files() for _ in range(rounds))
s = time.perf_counter() - t0
b = sum(x[3] for x in accepted) * rounds
print(f"RESULT files telegrams={n} bytes={b} seconds={s:.6f}")

data = open(stream, "rb").read()
text = data.decode("latin-1")
v5 = TelegramParser(S.V5)
def run_stream():
    buf = TelegramBuffer()
    buf.append(text)
    n = 0
    for t in buf.get_all():
        v5.parse(t)
        n += 1
    return n

run_stream()  # warm-up
t0 = time.perf_counter()
n = sum(run_stream() for _ in range(rounds))
s = time.perf_counter() - t0
print(f"RESULT stream telegrams={n} bytes={len(data) * rounds} seconds={s:.6f}")
print(f"ACCEPTED {len(accepted)}")
for name, why in rejected:
    print(f"REJECTED {name} {why}")
PY
grep -v '^REJECTED' "$OUT/python.txt"
echo "   rejected by dsmr-parser: $(grep -c '^REJECTED' "$OUT/python.txt" || true) files (see $OUT/python.txt)"

echo "== p1consent-shared (cargo bench --bench parse_folder, release), same files, $ROUNDS rounds"
cargo bench -q -p p1consent-shared --bench parse_folder -- \
    --files "$OUT/accepted.txt" --stream "$STREAM" --rounds "$ROUNDS" > "$OUT/rust.txt"
grep '^RESULT' "$OUT/rust.txt"

echo "== summary"
python3 - "$OUT/python.txt" "$OUT/rust.txt" <<'PY'
import sys
def load(p):
    out = {}
    for line in open(p):
        if line.startswith("RESULT "):
            _, name, *kv = line.split()
            d = dict(x.split("=") for x in kv)
            out[name] = (int(d["telegrams"]), int(d["bytes"]), float(d["seconds"]))
    return out
py, rs = load(sys.argv[1]), load(sys.argv[2])
print(f"{'set':<7} {'side':<22} {'telegrams':>10} {'telegrams/s':>13} {'MB/s':>8}")
for name in ("files", "stream"):
    if name not in py or name not in rs:
        continue
    for side, (n, b, s) in (("python dsmr-parser", py[name]), ("rust p1consent-shared", rs[name])):
        print(f"{name:<7} {side:<22} {n:>10} {n / s:>13.0f} {b / s / 1e6:>8.2f}")
    if py[name][0] != rs[name][0]:
        print(f"   note: telegram counts differ ({py[name][0]} vs {rs[name][0]})")
    ratio = (rs[name][0] / rs[name][2]) / (py[name][0] / py[name][2])
    print(f"{name}: p1consent-shared / dsmr-parser throughput = {ratio:.0f}x")
PY
