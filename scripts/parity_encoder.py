"""Each encoder mode against transformers, at real size: the held-out parity run.

Builds (or reuses, with --keep) the synthetic Qwen2-Audio with the real encoder (d_model
1280 x 32 layers) and its projector in every weight type the project's encoder runs, then
encodes clips of synthetic speech of several lengths (one to two 30 s windows) with each
and compares the audio embeddings with transformers' in float32: max abs difference, the
same relative to the reference's largest value, and the lowest per-token cosine. Q8_0 runs
on the matrix units where the CPU-kernel plan puts the encoder's weights there (the table
says so). With --check the exit code is 1 when a mode is outside its bound
(qaudio_dev.bench.encoder_parity.BOUNDS).

    .venv/bin/python scripts/parity_encoder.py --keep ~/.cache/qaudio-bench/encoder  # ~10 min
    .venv/bin/python scripts/parity_encoder.py --types F16,Q8_0 --seconds 30
    .venv/bin/python scripts/parity_encoder.py --smoke --check      # tiny dims (a check)

Needs the [parity] extra and torch (`pip install torch==2.13.0`), ~12 GB of RAM at real size.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from qaudio_dev.bench.encoder_inputs import SMOKE_TEXT, WIDE_TEXT, projector_variants
from qaudio_dev.bench.encoder_parity import (
    BOUNDS,
    compare,
    encode_ours,
    encode_reference,
    speech,
    within,
)
from qaudio_dev.synthetic import REAL_AUDIO, SMALL_AUDIO, build_synthetic


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default=",".join(BOUNDS), help="comma list of " + ",".join(BOUNDS))
    ap.add_argument("--seconds", default="5,17,30,45", help="clip lengths, comma list")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--keep", type=Path, default=None, help="build into (and reuse) this folder")
    ap.add_argument("--smoke", action="store_true", help="tiny dimensions (plumbing check)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a mode is out of bounds")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    types = [t.strip().upper() for t in args.types.split(",")]
    if not set(types) <= set(BOUNDS):
        ap.error(f"--types takes {', '.join(BOUNDS)}")
    lengths = [float(s) for s in args.seconds.split(",")]
    clips = {f"{s:g} s": speech(s) for s in lengths}
    audio, text = (SMALL_AUDIO, SMOKE_TEXT) if args.smoke else (REAL_AUDIO, WIDE_TEXT)
    with tempfile.TemporaryDirectory(prefix="qaudio-parity-encoder-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"building the inputs in {work} (reused if an earlier --keep run built them)")
        synth = build_synthetic(work / "qwen2-audio", audio, text)
        projectors = projector_variants(synth.mmproj, work)
        print("the reference: transformers, float32", flush=True)
        ref = encode_reference(synth.ckpt, clips)
        rows: dict[str, dict] = {}
        for wtype in types:
            print(f"the project's encoder: {wtype}", flush=True)
            ours, amx = encode_ours(projectors[wtype], wtype, clips, args.threads)
            rows[wtype] = {"amx": amx, "clips": {k: compare(ours[k], ref[k]) for k in clips}}
    dims = "x".join(str(audio[k]) for k in ("d_model", "layers"))
    print(f"\nencoder modes against transformers float32 (d_model x layers {dims})\n")
    print("| mode | clip | tokens | max abs | relative | min cosine | bound (relative, cosine) |")
    print("|---|---|---|---|---|---|---|")
    failed = []
    for wtype, row in rows.items():
        mode = wtype + (" (matrix units)" if row["amx"] else "")
        for name, r in row["clips"].items():
            bound = "{:g}, {:g}".format(*BOUNDS[wtype])
            if "error" in r:
                print(f"| {mode} | {name} | - | {r['error']} | | | {bound} |")
            else:
                print(
                    f"| {mode} | {name} | {r['tokens']} | {r['max_abs']:.3g} | {r['rel']:.3g} | "
                    f"{r['min_cosine']:.7f} | {bound} |"
                )
            if not within(wtype, r):
                failed.append(f"{wtype} on {name}")
    print("\nout of bounds: " + (", ".join(failed) if failed else "none"))
    if args.json:
        args.json.write_text(json.dumps({"dims": audio, "modes": rows, "failed": failed}, indent=1))
    return 1 if failed and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
