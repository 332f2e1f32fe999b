#!/usr/bin/env bash
# Builds the seed corpora fuzz/corpus/<target>/seed-* from the P1 samples and the hex byte
# strings of shared/tests/vectors/*.json. Needs jq and xxd. Re-run after the vectors change.
set -euo pipefail
cd "$(dirname "$0")"
V=../shared/tests/vectors
S=../shared/tests/data/p1-samples
c() { mkdir -p "corpus/$1"; }
hexto() { c "$2"; jq -r "$1" "$3" | xxd -r -p > "corpus/$2/$4"; }

for t in dsmr_framer dsmr_parse; do c $t; done
i=0
for f in dsmr22_iskra-mt382_dsmrparser-example.txt dsmr42_kaifa_3ph_events.txt \
         dsmr50_spec-example.txt dsmr50_sagemcom-t211_crc-mismatch.txt \
         emucs_fluvius_gas-and-water.txt de-easymeter-q3d.txt dsmr42_landisgyr-e350_truncated-header.txt; do
  i=$((i+1))
  cp "$S/$f" "corpus/dsmr_parse/seed-$f"
  # framer input: 2 bytes of chunk-size seed, then the stream (two telegrams back to back)
  { printf '\\x%02x\\x%02x' $i $((i*37 % 256)) | xargs -0 printf; cat "$S/$f" "$S/$f"; } > "corpus/dsmr_framer/seed-$f"
done

hexto '.records[0].record' channel_record $V/channel.json seed-data0
hexto '.records[1].record' channel_record $V/channel.json seed-data1
hexto '.records[2].record' channel_record $V/channel.json seed-rotation
hexto '.deliveries[0].delivery' key_delivery $V/channel.json seed-sntrup
hexto '.deliveries[1].delivery' key_delivery $V/channel.json seed-mlkem
hexto '.request.hex' request_decode $V/consent.json seed-request
c request_link; jq -j '.request.link' $V/consent.json > corpus/request_link/seed-link
hexto '.envelope.hex' thread_envelope $V/consent.json seed-envelope
# log_entry: the full vector entry, plus [role][event body] plaintexts.
hexto '.entry.hex' log_entry $V/consent.json seed-entry
z16=00000000000000000000000000000000
dev=$(jq -r '.public.device' $V/consent.json)
req=$(jq -r '.request.hex' $V/consent.json)
b() { echo -n "$2" | xxd -r -p > "corpus/log_entry/seed-$1"; }
b revoked    "0103${z16}01"
b expired    "0104${z16}"
b unpaired   "0105${dev}"
b delivered  "0221${z16}${z16}00000001"
b rotated    "0222${z16}0000000201"
b erased     "0331${z16}"
b granted    "0102${z16}$(printf '%08x' $(( ${#req} / 2 )))${req}${dev}000000010000038400000000697d6400"
hexto '.messages.qr_payload' pairing_qr $V/pairing.json seed-qr
c pairing_link; jq -j '.messages.link' $V/pairing.json > corpus/pairing_link/seed-link
for m in claim challenge answer result; do hexto ".messages.$m" pairing_$m $V/pairing.json seed-$m; done
c view_payload
printf '%s' '{"type":"reading","v":1,"time_ms":1767225660000,"energy_delivered_kwh":[1.5,2.25],"power_delivered_kw":0.42}' > corpus/view_payload/seed-reading
printf '%s' '{"type":"aggregate","v":1,"resolution_s":900,"start_ms":1767225600000,"end_ms":1767226500000,"samples":3}' > corpus/view_payload/seed-aggregate
ls corpus | while read t; do echo "$t: $(ls corpus/$t | wc -l) files"; done
