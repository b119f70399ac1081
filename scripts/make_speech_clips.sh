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
for x in a b c; do
  .venv/bin/python - "$tmp/$x.wav" "$out/speech-$x.flac" <<'PY'
import sys
import soundfile as sf
import soxr
x, rate = sf.read(sys.argv[1], dtype="float32")
sf.write(sys.argv[2], soxr.resample(x, rate, 16000), 16000, subtype="PCM_16")
PY
done
ls -l "$out"
