#!/usr/bin/env bash
# Write the synthetic speech clips the long-form tests build recordings from
# (tests/data/speech-*.flac, 16 kHz mono). Made with espeak-ng (Debian: apt install espeak-ng)
# so that a real voice-activity detector hears speech; the texts are this project's own.
set -euo pipefail
cd "$(dirname "$0")/.."
out=tests/data
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
espeak-ng -v en-us -s 150 -w "$tmp/a.wav" \
  "Welcome to the weekly meeting. Today we talk about the budget, the new office and the summer plans."
espeak-ng -v en-gb -s 170 -p 30 -w "$tmp/b.wav" \
  "Thank you. The numbers for the last quarter look better than we expected, mostly because of the new customers."
espeak-ng -v en-us+f3 -s 140 -p 60 -w "$tmp/c.wav" \
  "Could you send me the slides after the call? I would like to read them again."
# one long sentence without a comma or a pause in it (15 s): cuts must go around it
espeak-ng -v en-us -s 165 -w "$tmp/long.wav" \
  "the quarterly report that the finance team prepared over the last three weeks shows that the new customers from the northern region bought more licences than the old customers from the southern region which means that the sales plan for next year has to change in several important ways"
for x in a b c long; do
  .venv/bin/python - "$tmp/$x.wav" "$out/speech-$x.flac" <<'PY'
import sys
import soundfile as sf
import soxr
x, rate = sf.read(sys.argv[1], dtype="float32")
sf.write(sys.argv[2], soxr.resample(x, rate, 16000), 16000, subtype="PCM_16")
PY
done
ls -l "$out"
