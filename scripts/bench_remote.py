"""Benchmark `--server`: overhead against in-process, and the pool's scheduling efficiency.

    .venv/bin/python scripts/bench_remote.py                       # tiny model, 3 minutes
    .venv/bin/python scripts/bench_remote.py --real --minutes 1    # real encoder size (slow)

See qaudio_dev/remote_bench.py for what is measured and how.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from qaudio_dev.remote_bench import (
    make_recording,
    overhead_rows,
    scheduling,
    start_serve,
    timed_transcription,
)


def models(args: argparse.Namespace) -> tuple[Path, Path]:
    if args.real:
        from qaudio_dev.synthetic import REAL_AUDIO, REAL_TEXT, build_synthetic

        real = build_synthetic(args.work / "real-encoder", REAL_AUDIO, {**REAL_TEXT, "layers": 1})
        return real.gguf["F16"], real.mmproj
    from qaudio_local.convert import convert_checkpoint
    from qaudio_local.convert.tiny import make_tiny_checkpoint

    out = args.work / "tiny" / "gguf"
    if not out.is_dir():
        convert_checkpoint(make_tiny_checkpoint(args.work / "tiny" / "ckpt"), out, outtype="f32")
    files = sorted(out.glob("*.gguf"))
    mm = next(p for p in files if "mmproj" in p.name)
    return next(p for p in files if p is not mm), mm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=3, help="interleaved runs of each path")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--real", action="store_true", help="real encoder size (slow)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--port", type=int, default=18477)
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "qaudio-bench")
    ap.add_argument("--skip-overhead", action="store_true")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    audio = args.work / f"remote-{args.minutes:g}min.wav"
    if not audio.exists():
        make_recording(audio, args.minutes)
    if not args.skip_overhead:
        from qaudio_local.engine.model import AudioModel
        from qaudio_local.engine.options import ModelOptions
        from qaudio_local.remote import open_remote

        pair = models(args)
        n_ctx = max(4096, args.parallel * 1100)
        opts = ModelOptions(n_ctx=n_ctx, n_threads=args.threads, n_parallel=args.parallel)
        server = start_serve(pair, args.port, args.parallel, args.threads)
        results: dict[str, list[dict[str, Any]]] = {"in process": [], "one qaudio serve": []}
        try:
            with open_remote([f"http://127.0.0.1:{args.port}"]) as remote:
                for _ in range(args.runs):  # interleaved; one model in memory at a time
                    with AudioModel(*pair, opts) as model:
                        results["in process"].append(
                            timed_transcription(model, audio, args.parallel)
                        )
                    results["one qaudio serve"].append(
                        timed_transcription(remote, audio, args.parallel)
                    )
        finally:
            server.kill()
        kind = "real encoder size" if args.real else "tiny model"
        print(f"\n## overhead ({kind}, {args.minutes:g} min, parallel {args.parallel})\n")
        print("\n".join(overhead_rows(results)))
    print(f"\n## scheduling ({args.minutes:g} min, paced stand-ins)\n")
    print("\n".join(scheduling(audio, [(8.0, 1), (4.0, 1), (2.0, 2)])))


if __name__ == "__main__":
    main()
