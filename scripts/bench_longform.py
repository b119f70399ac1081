"""Benchmark long-form transcription: real-time factor, linearity in duration, peak memory.

Recordings of several lengths are assembled from the synthetic speech clips in tests/data
(about 70% speech, pauses of 0.4-3 s), and each is transcribed in a fresh process (so that
its peak RSS is its own) with 1 and with 4 parallel sequences, interleaved. For each
parallel setting the script fits time = a + b * duration and reports R^2.

    .venv/bin/python scripts/bench_longform.py --minutes 1,10,60            # tiny model
    .venv/bin/python scripts/bench_longform.py --real --minutes 1,3         # real encoder

``--real`` uses a synthetic model with the real encoder (d_model 1280, 32 layers) and a
one-layer text model of the real width (built once into --work by qaudio_dev.synthetic,
shared with bench_engine.py); at that size a 30 s segment costs about 15-50 s on 2 CPU
cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def make_recording(path: Path, minutes: float, seed: int = 0) -> float:
    """Speech clips with pauses, block by block; returns the duration in seconds."""
    import soundfile as sf

    clips = [
        sf.read(ROOT / "tests" / "data" / f"speech-{k}.flac", dtype="float32")[0] for k in "abc"
    ]
    rng = np.random.default_rng(seed)
    total, target = 0, int(minutes * 60 * 16000)
    with sf.SoundFile(path, "w", 16000, 1, subtype="PCM_16") as f:
        while total < target:
            x = clips[int(rng.integers(3))]
            pause = np.zeros(int(rng.choice([0.4, 0.8, 3.0]) * 16000), np.float32)
            for part in (x, pause):
                part = part[: target - total]
                f.write(part)
                total += len(part)
    return total / 16000


def run_one(model: str, mmproj: str, audio: str, parallel: int, threads: int) -> None:
    """In the child: load, transcribe, print the timings as JSON."""
    from qaudio_local.engine.model import AudioModel
    from qaudio_local.engine.options import ModelOptions
    from qaudio_local.transcription import TranscribeOptions, transcribe

    opts = ModelOptions(n_ctx=max(4096, parallel * 1100), n_threads=threads, n_parallel=parallel)
    with AudioModel(model, mmproj, opts) as m:
        t0 = time.perf_counter()
        tr = transcribe(m, audio, TranscribeOptions(language="English", parallel=parallel))
        n = sum(1 for _ in tr)
        secs = time.perf_counter() - t0
    print(json.dumps({"seconds": secs, "duration": tr.info.duration, "segments": n}))


def measure(pair: tuple[Path, Path], audio: Path, parallel: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--run-one", str(pair[0]), str(pair[1]), str(audio)]
    proc = subprocess.Popen([*cmd, str(parallel), str(threads)], stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the child failed on {audio}")
    out = json.loads(proc.stdout.read().strip().splitlines()[-1])  # type: ignore[union-attr]
    out["rss_mib"] = usage.ru_maxrss / 1024
    return out


def fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares y = a + b x, and R^2."""
    b, a = np.polyfit(xs, ys, 1)
    pred = a + b * np.asarray(xs)
    ss_res = float(np.sum((np.asarray(ys) - pred) ** 2))
    ss_tot = float(np.sum((np.asarray(ys) - np.mean(ys)) ** 2)) or 1e-12
    return float(a), float(b), 1 - ss_res / ss_tot


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
    if len(sys.argv) > 1 and sys.argv[1] == "--run-one":
        run_one(*sys.argv[2:5], int(sys.argv[5]), int(sys.argv[6]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", default="1,10,60")
    ap.add_argument("--real", action="store_true", help="real encoder size (slow)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "qaudio-bench")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    pair = models(args)
    minutes = [float(m) for m in args.minutes.split(",")]
    rows: dict[int, list[dict]] = {1: [], 4: []}
    for m in minutes:
        audio = args.work / f"longform-{m:g}min.wav"
        if not audio.exists():
            make_recording(audio, m)
        for parallel in (1, 4):  # interleaved: both settings per length
            rows[parallel].append(measure(pair, audio, parallel, args.threads))
    kind = "real encoder size" if args.real else "tiny model"
    print(f"\nlong-form, {kind}, {args.threads} threads\n")
    print("| audio | parallel | segments | seconds | RTF | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for i, m in enumerate(minutes):
        for parallel in (1, 4):
            r = rows[parallel][i]
            print(
                f"| {m:g} min | {parallel} | {r['segments']} | {r['seconds']:.1f} | "
                f"{r['seconds'] / r['duration']:.4f} | {r['rss_mib']:.0f} |"
            )
    for parallel in (1, 4):
        if len(minutes) >= 3:
            _, b, r2 = fit(
                [r["duration"] for r in rows[parallel]], [r["seconds"] for r in rows[parallel]]
            )
            print(f"\nparallel {parallel}: {b:.4f} s per second of audio, R^2 = {r2:.4f}")
    speed = [a["seconds"] / b["seconds"] for a, b in zip(rows[1], rows[4], strict=True)]
    print(f"parallel 4 vs 1: {', '.join(f'{s:.2f}x' for s in speed)} faster")


if __name__ == "__main__":
    main()
