"""Benchmark the audio encoder at real Qwen2-Audio size: faithful path vs libmtmd.

Builds a random checkpoint whose audio encoder has the real dimensions (d_model 1280,
32 layers, 20 heads, ffn 5120, 128 mels, 1500 positions; ~0.64 B parameters) and a
one-layer text model of the real width (4096), converts it to F16 GGUFs, and times
encode + prefill for a few clip lengths on both audio paths, interleaved in one run.
It also checks the two paths against each other on an almost-full window (where padding
matters least): a wrong graph at full size would show up as a low cosine.

    .venv/bin/python scripts/bench_encoder.py [--threads N] [--repeats N] [--keep DIR]

Needs ~3 GB of RAM and ~2 GB of disk; takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np

from qaudio_dev.synthetic import REAL_AUDIO, REAL_TEXT, build_synthetic
from qaudio_local.engine.model import AudioModel, ModelOptions, SamplingOptions

WIDE_TEXT = {**REAL_TEXT, "layers": 1, "ffn": 256}  # one layer of the real width
CLIPS = (5.0, 29.9)


def _clip(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(1)
    t = np.arange(int(seconds * 16000)) / 16000
    x = np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (0.4 * x + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def build(work: Path) -> tuple[Path, Path]:
    """The F16 pair in ``work``: built there unless an earlier run with ``--keep`` did."""
    synth = build_synthetic(work, REAL_AUDIO, WIDE_TEXT)
    if synth.built_s:
        size = synth.mmproj.stat().st_size / 1e9
        print(f"built a real-size encoder ({size:.2f} GB projector) in {synth.built_s:.0f} s")
    return synth.gguf["F16"], synth.mmproj


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--keep", type=Path, default=None, help="build into (and reuse) this folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_path, mmproj_path = build(args.keep or Path(tmp))
        models = {
            path: AudioModel(
                model_path,
                mmproj_path,
                ModelOptions(n_ctx=2048, n_threads=args.threads, audio_path=path),
            )
            for path in ("faithful", "mtmd")
        }
        one = SamplingOptions(max_tokens=1)
        print(f"\nCPU, {args.threads} threads, median of {args.repeats} interleaved runs\n")
        print("| clip | path | audio tokens | encode s | prefill s |")
        print("|---|---|---|---|---|")
        for seconds in CLIPS:
            clip = _clip(seconds)
            rows: dict[str, list] = {p: [] for p in models}
            for _ in range(args.repeats):
                for path, model in models.items():
                    model.clear_cache()  # time the cold path: no reused encoding or cells
                    r = model.generate("Transcribe.", [clip], sampling=one)
                    rows[path].append(r)
            med = {}
            for path, results in rows.items():
                enc = statistics.median(r.timings.encode_ms for r in results) / 1e3
                pre = statistics.median(r.timings.prefill_ms for r in results) / 1e3
                med[path] = enc + pre
                print(
                    f"| {seconds:g} s | {path} | {results[0].usage.audio_tokens} | "
                    f"{enc:.2f} | {pre:.2f} |"
                )
            print(
                f"| {seconds:g} s | mtmd / faithful (encode + prefill) | | "
                f"{med['mtmd'] / med['faithful']:.1f}x | |"
            )
        a = models["faithful"].prompt_logits("Transcribe.", [_clip(29.9)])
        b = models["mtmd"].prompt_logits("Transcribe.", [_clip(29.9)])
        cos = float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))
        print(f"\n29.9 s clip, faithful vs mtmd last-position logits: cosine {cos:.4f}")
        for model in models.values():
            model.close()


if __name__ == "__main__":
    main()
