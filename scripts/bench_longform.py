"""Benchmark long-form transcription: real-time factor, linearity in duration, peak memory.

Recordings of several lengths are assembled from the synthetic speech clips in tests/data
(about 70% speech, pauses of 0.4-3 s), and each is transcribed in a fresh process (so that
its peak RSS is its own) with 1 and with 4 parallel sequences, interleaved. For each
parallel setting the script fits time = a + b * duration and reports R^2.

    .venv/bin/python scripts/bench_longform.py --minutes 1,10,60            # tiny model
    .venv/bin/python scripts/bench_longform.py --real --minutes 1,3         # real encoder
    .venv/bin/python scripts/bench_longform.py --real --minutes 1,2 --parallel 1 \
        --projectors f16,q8_0       # the projector a CPU-only plan may pick, side by side
    .venv/bin/python scripts/bench_longform.py --real --minutes 1,2 --parallel 1 \
        --text on,off,4             # the text guards on (as shipped) and off, and text of
                                    # a real transcript's length (4 tokens per second)

``--real`` uses a synthetic model with the real encoder (d_model 1280, 32 layers) and a
one-layer text model of the real width (built once into --work by qaudio_dev.synthetic,
shared with bench_engine.py); at that size a 30 s segment costs about 15-50 s on 2 CPU
cores. ``--projectors f16,q8_0`` runs each length with each projector (q8_0: the F16 one
with its matrix weights rewritten, as ``scripts/bench_encoder.py`` makes it); the engine
puts q8_0 weights on the matrix units where the CPU-kernel verdict lets llama.cpp's AMX
kernels run, as ``qaudio transcribe`` would.

``--text`` says how long each segment's text may run; the table's tokens column counts what
the segments wrote. ``on``: as ``qaudio transcribe`` ships (a loop is stopped, at most 10
tokens per second of a segment's audio); ``off``: neither guard (``--keep-loops``, and
``max_tokens`` alone, as before both existed). A number R: the guards on and at most R
tokens per second of audio, a stand-in for a real model's transcript, since random weights
never end a segment by themselves; the synthetic clips hold 2.7-3.0 words per second of
speech, about 4 tokens at 1.3 tokens a word.
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


def run_one(model: str, mmproj: str, audio: str, parallel: int, threads: int, text: str) -> None:
    """In the child: load, transcribe, print the timings and tokens written as JSON."""
    from dataclasses import replace

    from qaudio_dev.bench.run import own_peak_bytes
    from qaudio_local.engine.model import AudioModel
    from qaudio_local.engine.options import ModelOptions
    from qaudio_local.transcription import TranscribeOptions, transcribe

    opts = ModelOptions(n_ctx=max(4096, parallel * 1100), n_threads=threads, n_parallel=parallel)
    options = TranscribeOptions(language="English", parallel=parallel)
    if text == "off":
        sampling = replace(options.sampling, stop_loops=False)
        options = replace(options, sampling=sampling, tokens_per_second=None)
    elif text != "on":
        options = replace(options, tokens_per_second=float(text))
    with AudioModel(model, mmproj, opts) as m:
        t0 = time.perf_counter()
        tr = transcribe(m, audio, options)
        tokens = [len(s.tokens) for s in tr]
        secs = time.perf_counter() - t0
    out = {"seconds": secs, "duration": tr.info.duration, "segments": len(tokens)}
    print(json.dumps({**out, "tokens": sum(tokens), "vmhwm": own_peak_bytes()}))


def measure(side: tuple[str, int, str], pairs: dict, audio: Path, threads: int) -> dict:
    (model, mmproj), parallel, text = pairs[side[0]], side[1], side[2]
    cmd = [sys.executable, __file__, "--run-one", str(model), str(mmproj), str(audio)]
    cmd += [str(parallel), str(threads), text]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the child failed on {audio}")
    out = json.loads(proc.stdout.read().strip().splitlines()[-1])  # type: ignore[union-attr]
    # the child's own peak: wait4's starts at this parent's (about 4.9 GiB after it has
    # built the real-size model), which Linux hands every child at the fork
    out["rss_mib"] = (out.pop("vmhwm", None) or usage.ru_maxrss * 1024) / 2**20
    return out


def fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares y = a + b x, and R^2."""
    b, a = np.polyfit(xs, ys, 1)
    pred = a + b * np.asarray(xs)
    ss_res = float(np.sum((np.asarray(ys) - pred) ** 2))
    ss_tot = float(np.sum((np.asarray(ys) - np.mean(ys)) ** 2)) or 1e-12
    return float(a), float(b), 1 - ss_res / ss_tot


def models(args: argparse.Namespace) -> dict[str, tuple[Path, Path]]:
    """(text GGUF, projector) per projector name asked for."""
    if args.real:
        from qaudio_dev.synthetic import REAL_AUDIO, REAL_TEXT, build_synthetic

        real = build_synthetic(args.work / "real-encoder", REAL_AUDIO, {**REAL_TEXT, "layers": 1})
        text, f16 = real.gguf["F16"], real.mmproj
    else:
        from qaudio_local.convert import convert_checkpoint
        from qaudio_local.convert.tiny import make_tiny_checkpoint

        out = args.work / "tiny" / "gguf"
        if not out.is_dir():
            ckpt = make_tiny_checkpoint(args.work / "tiny" / "ckpt")
            convert_checkpoint(ckpt, out, outtype="f32", mmproj_outtype="f16")
        files = sorted(out.glob("*.gguf"))
        f16 = next(p for p in files if "mmproj" in p.name)
        text = next(p for p in files if p is not f16)
    return {name: (text, f16 if name == "f16" else _q8_0(f16)) for name in args.projectors}


def _q8_0(f16: Path) -> Path:
    """The projector with its matrix weights in Q8_0, built once beside the F16 one."""
    from qaudio_dev import gguf_edit
    from qaudio_dev.bench.encoder_inputs import is_matmul_weight
    from qaudio_dev.synthetic import stamped

    dst = f16.with_name(f16.stem + ".q8_0.gguf")

    def make() -> dict[str, str]:
        qt = int(gguf_edit.QT.Q8_0)
        gguf_edit.rewrite(f16, dst, tensors=gguf_edit.retype(is_matmul_weight, qt))
        return {"path": dst.name}

    stamped(dst.with_suffix(".complete.json"), make)
    return dst


def _ratios(slow: list[dict], fast: list[dict]) -> str:
    """How many times faster ``fast`` ran than ``slow``, length by length."""
    return ", ".join(f"{a['seconds'] / b['seconds']:.2f}x" for a, b in zip(slow, fast, strict=True))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--run-one":
        run_one(*sys.argv[2:5], int(sys.argv[5]), int(sys.argv[6]), sys.argv[7])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", default="1,10,60")
    ap.add_argument("--real", action="store_true", help="real encoder size (slow)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "qaudio-bench")
    ap.add_argument("--parallel", default="1,4", help="sequences, comma list (default 1,4)")
    ap.add_argument("--projectors", default="f16", help="f16 and/or q8_0, comma list")
    ap.add_argument(
        "--text",
        default="on",
        help="on (the text guards as shipped), off, and/or a number of tokens per second "
        "of audio (a real transcript's length), comma list",
    )
    args = ap.parse_args()
    args.projectors = [p.strip().casefold() for p in args.projectors.split(",")]
    if not set(args.projectors) <= {"f16", "q8_0"}:
        ap.error("--projectors takes f16 and/or q8_0")
    args.text = [p.strip().casefold() for p in args.text.split(",")]
    if not all(t in ("on", "off") or t.replace(".", "", 1).isdigit() for t in args.text):
        ap.error("--text takes on, off and/or numbers")
    settings = [int(p) for p in args.parallel.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    pairs = models(args)
    minutes = [float(m) for m in args.minutes.split(",")]
    sides = [(p, par, t) for p in args.projectors for par in settings for t in args.text]
    rows: dict[tuple[str, int, str], list[dict]] = {side: [] for side in sides}
    for m in minutes:
        audio = args.work / f"longform-{m:g}min.wav"
        if not audio.exists():
            make_recording(audio, m)
        for side in sides:  # interleaved: every setting per length
            rows[side].append(measure(side, pairs, audio, args.threads))
    kind = "real encoder size" if args.real else "tiny model"
    print(f"\nlong-form, {kind}, {args.threads} threads\n")
    cols = [
        "audio",
        "projector",
        "parallel",
        "text",
        "segments",
        "tokens",
        "seconds",
        "RTF",
        "peak_RSS_MiB",
    ]
    print("| " + " | ".join(c.replace("_", " ") for c in cols) + " |")
    print("|" + "---|" * len(cols))
    for i, m in enumerate(minutes):
        for side in sides:
            r = rows[side][i]
            print(
                f"| {m:g} min | {side[0]} | {side[1]} | {side[2]} | {r['segments']} | "
                f"{r['tokens']} | {r['seconds']:.1f} | {r['seconds'] / r['duration']:.4f} | "
                f"{r['rss_mib']:.0f} |"
            )
    for side in sides:
        if len(minutes) >= 3:
            _, b, r2 = fit([r["duration"] for r in rows[side]], [r["seconds"] for r in rows[side]])
            name = ", ".join(map(str, side))
            print(f"\n{name}: {b:.4f} s per second of audio, R^2 = {r2:.4f}")
    for proj, t in ((p, t) for p in args.projectors for t in args.text):
        if {(proj, 1, t), (proj, 4, t)} <= set(rows):
            got = _ratios(rows[proj, 1, t], rows[proj, 4, t])
            print(f"{proj}, text {t}: parallel 4 vs 1: {got} faster")
    for par, t in ((par, t) for par in settings for t in args.text):
        if len(args.projectors) == 2:
            got = _ratios(rows["f16", par, t], rows["q8_0", par, t])
            print(f"parallel {par}, text {t}: q8_0 vs f16: {got}")
    for proj, par in ((p, par) for p in args.projectors for par in settings):
        if {"on", "off"} <= set(args.text):
            got = _ratios(rows[proj, par, "off"], rows[proj, par, "on"])
            print(f"{proj}, parallel {par}: text guards on vs off: {got}")


if __name__ == "__main__":
    main()
