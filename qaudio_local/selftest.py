"""Check an install end to end, offline, in seconds.

Builds the tiny synthetic Qwen2-Audio in a temporary folder, converts it to GGUF,
and runs the whole pipeline (audio -> encoder -> text model -> tokens) twice with
greedy decoding on a generated clip, through the real llama.cpp libraries.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backend import BackendInfo, backend_info
from .config import SAMPLE_RATE


@dataclass(frozen=True)
class SelftestReport:
    """What the self-test found.

    Attributes:
        backend: The llama.cpp build in use.
        build_s: Seconds to build and convert the tiny model.
        audio_seconds: Length of the test clip.
        audio_tokens: Audio tokens the encoder produced.
        completion_tokens: Tokens generated.
        deterministic: Two greedy runs gave the same tokens.
        gpu_checked: A run with every layer on the GPU was made and matched the CPU run.
        ok: Everything worked.
    """

    backend: BackendInfo
    build_s: float
    audio_seconds: float
    audio_tokens: int
    completion_tokens: int
    deterministic: bool
    gpu_checked: bool
    ok: bool


def selftest_clip(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A deterministic test signal: a rising chirp over light noise, at 16 kHz."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    chirp = 0.3 * np.sin(2 * np.pi * (200 + 400 * t) * t)
    noise = 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    return (chirp + noise).astype(np.float32)


def run_selftest(work_dir: str | Path | None = None, max_tokens: int = 16) -> SelftestReport:
    """Run the self-test; see the module docstring.

    Args:
        work_dir: Where to build (default: a temporary folder, removed afterwards).
        max_tokens: Tokens to generate per run.
    """
    from .convert import convert_checkpoint
    from .runtime import AudioModel, ModelOptions, SamplingOptions
    from .tiny import make_tiny_checkpoint

    info = backend_info()
    with tempfile.TemporaryDirectory(prefix="qaudio-selftest-") as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        t0 = time.perf_counter()
        ckpt = make_tiny_checkpoint(root / "tiny-qwen2-audio")
        conv = convert_checkpoint(ckpt, root / "gguf", outtype="f32")
        build_s = time.perf_counter() - t0
        clip = selftest_clip()
        sampling = SamplingOptions(max_tokens=max_tokens, stop_at_end_of_turn=False)
        with AudioModel(conv.model_path, conv.mmproj_path, ModelOptions(n_ctx=2048)) as model:
            first = model.generate("Describe this sound.", [clip], sampling=sampling)
            second = model.generate("Describe this sound.", [clip], sampling=sampling)
        gpu_checked = False
        same_on_gpu = True
        if info.gpu_offload:
            opts = ModelOptions(n_ctx=2048, n_gpu_layers=-1)
            with AudioModel(conv.model_path, conv.mmproj_path, opts) as model:
                gpu = model.generate("Describe this sound.", [clip], sampling=sampling)
            gpu_checked = True
            same_on_gpu = gpu.usage.completion_tokens == first.usage.completion_tokens
    deterministic = first.tokens == second.tokens
    ok = (
        deterministic
        and same_on_gpu
        and first.usage.audio_tokens > 0
        and first.usage.completion_tokens == max_tokens
    )
    return SelftestReport(
        backend=info,
        build_s=build_s,
        audio_seconds=first.usage.audio_seconds,
        audio_tokens=first.usage.audio_tokens,
        completion_tokens=first.usage.completion_tokens,
        deterministic=deterministic,
        gpu_checked=gpu_checked,
        ok=ok,
    )
