"""Fuzz the front end, the GGUF checks and the command line; print the totals table.

Every case runs in its own child process with a time and memory limit (see
qaudio_dev/fuzz/harness.py) against the tiny model, built here into a temporary folder:

    .venv/bin/python scripts/fuzz.py                       # the full run (~15 min, 2 cores)
    .venv/bin/python scripts/fuzz.py --audio 500 --gguf 60 --cli 20   # a smaller one
    .venv/bin/python scripts/fuzz.py --only gguf:count:1234 --audio-path mtmd  # one case

Exit status 1 when any case ends as a foreign exception, a signal, a hang or a wrong
output; those cases are listed with the seed that reproduces them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from qaudio_dev.fuzz.cases import cases
from qaudio_dev.fuzz.harness import Outcome, run_cases, table


def build_model(folder: Path) -> tuple[Path, Path, Path]:
    """The tiny model as an f16 GGUF pair, and a short clip, in ``folder``."""
    import numpy as np
    import soundfile as sf

    from qaudio_local.convert import convert_checkpoint
    from qaudio_local.convert.tiny import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(folder / "tiny-qwen2-audio")
    res = convert_checkpoint(ckpt, folder / "gguf", outtype="f16")
    clip = folder / "clip.wav"
    t = np.arange(8000) / 16000
    sf.write(clip, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    return res.model_path, res.mmproj_path, clip


def plan(args: argparse.Namespace, text: Path, mmproj: Path, clip: Path) -> list[dict[str, Any]]:
    files = {"text": str(text), "mmproj": str(mmproj)}
    if args.only:
        kind, family, seed = args.only.split(":")
        case: dict[str, Any] = {"kind": kind, "family": family, "seed": int(seed), **files}
        if kind == "gguf":
            case["audio_path"] = args.audio_path
        if kind == "cli":
            case["clip"] = str(clip)
        return [case]
    todo = list(cases("audio", args.audio, seed0=args.seed))
    for path in ("faithful", "mtmd"):
        todo += cases("gguf", args.gguf, seed0=args.seed, audio_path=path, **files)
    todo += cases("cli", args.cli, seed0=args.seed, clip=str(clip), **files)
    return todo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--audio", type=int, default=16000, help="audio cases (default 16000)")
    ap.add_argument("--gguf", type=int, default=1200, help="GGUF cases per audio path (1200)")
    ap.add_argument("--cli", type=int, default=60, help="command lines (default 60)")
    ap.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    ap.add_argument("--workers", type=int, default=2, help="parallel lanes (default 2)")
    ap.add_argument("--only", help="one case, as KIND:FAMILY:SEED")
    ap.add_argument("--audio-path", default="faithful", help="for --only gguf cases")
    ap.add_argument("--json", type=Path, help="also write every outcome to this file")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qaudio-fuzz-") as d:
        work = Path(d)
        text, mmproj, clip = build_model(work / "model")
        todo = plan(args, text, mmproj, clip)
        t0 = time.perf_counter()
        done = [0]

        def progress(o: Outcome) -> None:
            done[0] += 1
            bad = o.outcome in ("foreign", "signal", "hang", "wrong")
            if bad or args.only:
                c = o.case
                tag = f"{c['kind']}:{c['family']}:{c['seed']}"
                extra = f" ({c['audio_path']})" if "audio_path" in c else ""
                print(f"{o.outcome:8s} {tag}{extra} {o.detail}", flush=True)
            if done[0] % 500 == 0:
                print(f"... {done[0]}/{len(todo)} in {time.perf_counter() - t0:.0f} s", flush=True)

        outcomes = run_cases(todo, work / "run", workers=args.workers, progress=progress)
        print(f"\n{len(outcomes)} cases in {time.perf_counter() - t0:.0f} s\n")
        print(table(outcomes))
        if args.json:
            rows = [{"case": o.case, "outcome": o.outcome, "detail": o.detail} for o in outcomes]
            args.json.write_text(json.dumps(rows, indent=1))
    bad = [o for o in outcomes if o.outcome in ("foreign", "signal", "hang", "wrong")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
