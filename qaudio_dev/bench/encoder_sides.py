"""One side of the encoder benchmark, run in a child process of its own.

``python -m qaudio_dev.bench.encoder_sides SIDE SPEC.json`` loads what ``SIDE`` names,
encodes each input of the spec ``repeats`` times after one warm-up, and prints one JSON
line: ``{"side": ..., "load_s": ..., "seconds": {input: [times]}}``. Sides:

- ``ggml:<TYPE>``: this project's encoder (:class:`~qaudio_local.engine.encoder.AudioEncoder`)
  on the projector GGUF of that weight type; a long input is its 30 s windows one by one,
  each only as long as its audio (the faithful path), as ``qaudio transcribe`` runs them;
  Q8_0 weights on the matrix units where the runtime would put them (the CPU-kernel
  verdict's plan: llama.cpp's AMX buffer type where its AMX matmul runs).
- ``torch:<dtype>``: transformers' Qwen2-Audio audio tower and projector on the same
  checkpoint, in ``float32`` or ``bfloat16``; every window padded to 30 s, as the reference
  processor does, several windows as one batch.
- ``ct2:<compute type>``: CTranslate2's Whisper encoder (faster-whisper's engine) on a
  random Whisper-large-v3-shaped model converted by CTranslate2's own converter; windows
  padded to 30 s, several as one batch.
- ``wcpp:<TYPE>``: whisper.cpp's encoder (libwhisper 1.8.5 from the pywhispercpp wheel,
  through :mod:`~qaudio_dev.bench.whisper_cpp`) on the same random Whisper written in its
  own format, F16 or Q8_0 (:mod:`~qaudio_dev.bench.whisper_ggml`), with its default
  context parameters on the CPU (flash attention on); whisper.cpp has no batch and its API
  always encodes a full 30 s window (1500 positions), so each window is padded to 30 s and
  encoded one by one. ``whisper_encode`` also computes the one decoder layer's
  cross-attention keys and values (under 0.5% of a real-size window's arithmetic).
- ``peak``: the machine's measured peak: large matrix products through torch in float32,
  bfloat16 and int8, in GFLOP/s (GOP/s for int8).

Each side runs alone in its process so thread pools and allocators of one library cannot
slow another; the parent interleaves the sides round by round.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qaudio_local.config import SAMPLE_RATE

WINDOW = 30 * SAMPLE_RATE


def clip(seconds: float, seed: int = 1) -> np.ndarray:
    """A voiced-sounding test signal: a buzz with a slow tremolo, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    x = np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (0.4 * x + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def _timed(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm-up: first-touch of weights, thread pools, graph allocations
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _ggml(spec: dict[str, Any], wtype: str) -> tuple[float, dict[str, Callable[[], object]]]:
    from qaudio_local.audio.features import log_mel
    from qaudio_local.audio.windows import split_windows
    from qaudio_local.engine.cpu_probe import kernel_plan
    from qaudio_local.engine.encoder import AudioEncoder

    plan = kernel_plan("auto", text_quantized=False, projector_quantized=wtype == "Q8_0")
    t0 = time.perf_counter()
    enc = AudioEncoder(
        spec["projectors"][wtype],
        use_gpu=False,
        n_threads=spec["threads"],
        extra_bufts=plan.encoder_extra_bufts,
    )
    load = time.perf_counter() - t0

    def run(seconds: float) -> Callable[[], object]:
        feats = [log_mel(w) for w in split_windows(clip(seconds))]
        return lambda: [enc.encode(f.mel, f.n_valid_frames) for f in feats]

    return load, {k: run(v) for k, v in spec["inputs"].items()}


def _padded_windows(seconds: float) -> np.ndarray:
    """(windows, 128, 3000) log-mel, each window padded to 30 s (the reference's way)."""
    from qaudio_local.audio.features import log_mel

    x = clip(seconds)
    wins = [x[i : i + WINDOW] for i in range(0, x.size, WINDOW)]
    return np.stack([log_mel(np.pad(w, (0, WINDOW - w.size))).mel for w in wins])


def _torch(spec: dict[str, Any], dtype_name: str) -> tuple[float, dict[str, Callable[[], object]]]:
    import torch
    from transformers import Qwen2AudioForConditionalGeneration

    torch.set_num_threads(spec["threads"])
    dtype = getattr(torch, dtype_name)
    t0 = time.perf_counter()
    model = Qwen2AudioForConditionalGeneration.from_pretrained(spec["checkpoint"], dtype=dtype)
    tower = model.model.audio_tower.eval()
    projector = model.model.multi_modal_projector.eval()
    load = time.perf_counter() - t0

    def run(seconds: float) -> Callable[[], object]:
        feats = torch.from_numpy(_padded_windows(seconds)).to(dtype)

        def go() -> object:
            with torch.inference_mode():
                return projector(tower(feats).last_hidden_state)

        return go

    return load, {k: run(v) for k, v in spec["inputs"].items()}


def _ct2(spec: dict[str, Any], compute: str) -> tuple[float, dict[str, Callable[[], object]]]:
    import ctranslate2

    t0 = time.perf_counter()
    model = ctranslate2.models.Whisper(
        spec["ct2_model"], device="cpu", compute_type=compute, intra_threads=spec["threads"]
    )
    load = time.perf_counter() - t0

    def run(seconds: float) -> Callable[[], object]:
        feats = ctranslate2.StorageView.from_array(np.ascontiguousarray(_padded_windows(seconds)))
        return lambda: model.encode(feats, to_cpu=True)

    return load, {k: run(v) for k, v in spec["inputs"].items()}


def _wcpp(spec: dict[str, Any], wtype: str) -> tuple[float, dict[str, Callable[[], object]]]:
    from qaudio_dev.bench.whisper_cpp import WhisperCpp

    t0 = time.perf_counter()
    model = WhisperCpp(Path(spec["wcpp_models"][wtype]), n_threads=spec["threads"])
    load = time.perf_counter() - t0

    def run(seconds: float) -> Callable[[], object]:
        windows = _padded_windows(seconds)

        def go() -> None:
            for w in windows:
                model.encode(w)

        return go

    return load, {k: run(v) for k, v in spec["inputs"].items()}


def _product_rate(
    make: Callable[[int], Any], mm: Callable[[Any, Any], Any], n: int, repeats: int
) -> float:
    a, b = make(n), make(n)
    best = min(_timed(lambda: mm(a, b), repeats))
    return 2 * n**3 / best / 1e9


def peak(threads: int, n_max: int = 2048, repeats: int = 3) -> dict[str, float]:
    """Best rate of a square matrix product per type, in G(FL)OP/s.

    The size is chosen per type from a small probe so that one product takes about half a
    second (at most ``n_max`` a side): where torch has no fast kernel for a type on this
    CPU (bfloat16 or int8 without AVX-512), a 2048-cube product would take minutes.
    """
    import torch

    torch.set_num_threads(threads)
    out = {}
    for name, make in (
        ("float32", lambda n: torch.randn(n, n)),
        ("bfloat16", lambda n: torch.randn(n, n).to(torch.bfloat16)),
        ("int8", lambda n: torch.randint(-127, 127, (n, n), dtype=torch.int8)),
    ):
        mm: Callable[[Any, Any], Any] = torch._int_mm if name == "int8" else torch.mm
        probe = _product_rate(make, mm, 256, 1)
        n = int((0.5 * probe * 1e9 / 2) ** (1 / 3)) // 64 * 64
        out[name] = max(probe, _product_rate(make, mm, max(256, min(n_max, n)), repeats))
    return out


def main(argv: list[str]) -> int:
    side, spec_path = argv[0], Path(argv[1])
    spec = json.loads(spec_path.read_text())
    if side == "peak":
        print(json.dumps({"side": side, "peak": peak(spec["threads"])}))
        return 0
    kind, _, variant = side.partition(":")
    make = {"ggml": _ggml, "torch": _torch, "ct2": _ct2, "wcpp": _wcpp}[kind]
    load, runs = make(spec, variant)
    seconds = {name: _timed(fn, spec["repeats"]) for name, fn in runs.items()}
    print(json.dumps({"side": side, "load_s": load, "seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
