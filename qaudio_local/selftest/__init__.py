"""Check an install end to end, offline, in seconds.

Builds the tiny synthetic Qwen2-Audio in a temporary folder and converts it to GGUF: an
f32 pair, and the quantized pairs users run (a Q4_K_M text model made by llama.cpp's own
quantizer and a Q8_0 one, each with a q8_0 projector). It runs the whole pipeline
(audio -> encoder -> text model -> tokens) through the real llama.cpp libraries: the f32
pair twice with greedy decoding (it must be deterministic), each quantized pair on both
audio paths (its logits must stay close to the f32 pair's), and, where llama.cpp can
offload, the f32 pair on the GPU (its logits must match the CPU's within
:data:`GPU_TOLERANCE`).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import SAMPLE_RATE
from ..engine.bindings.backend import BackendInfo, backend_info
from ..errors import QAudioError

# text-model level -> least cosine of its prompt logits to the f32 pair's, on the tiny model
# (measured here: Q4_K_M 0.985-0.988, Q8_0 0.9997; broken kernels give noise, near 0)
QUANT_MIN_COSINE = {"Q4_K_M": 0.95, "Q8_0": 0.99}
QUANT_LEVELS = tuple(QUANT_MIN_COSINE)
GPU_TOLERANCE = 2e-2  # max abs difference of GPU vs CPU prompt logits (f32 weights)
PROMPT = "Describe this sound."


@dataclass(frozen=True)
class QuantCheck:
    """One quantized pair on one audio path.

    Attributes:
        level: The text model's quantization (``"Q4_K_M"``, ``"Q8_0"``).
        audio_path: ``"faithful"`` or ``"mtmd"``.
        ok: It ran, generated every token, and its logits stayed close to the f32 pair's.
        cosine: Cosine similarity of its prompt logits to the f32 pair's (0 if it failed).
        detail: Why it failed, else ``""``.
    """

    level: str
    audio_path: str
    ok: bool
    cosine: float
    detail: str = ""


@dataclass(frozen=True)
class SelftestReport:
    """What the self-test found.

    Attributes:
        backend: The llama.cpp build in use.
        cpu_kernels: The CPU-kernel probe's one-line verdict.
        cpu_kernels_cause: Why the fast kernels fault, when the build explains it, else ``""``.
        build_s: Seconds to build and convert the tiny models.
        audio_seconds: Length of the test clip.
        audio_tokens: Audio tokens the encoder produced.
        completion_tokens: Tokens generated.
        deterministic: Two greedy runs gave the same tokens.
        quantized: The quantized pairs' checks.
        gpu_checked: A run with every layer on the GPU was made.
        gpu_max_abs_diff: Its largest logit difference from the CPU run (``None`` if not run).
        gpu_same_top1: Its most likely next token equals the CPU run's.
        ok: Everything worked.
    """

    backend: BackendInfo
    cpu_kernels: str
    build_s: float
    audio_seconds: float
    audio_tokens: int
    completion_tokens: int
    deterministic: bool
    quantized: tuple[QuantCheck, ...]
    gpu_checked: bool
    gpu_max_abs_diff: float | None
    gpu_same_top1: bool
    ok: bool
    cpu_kernels_cause: str = ""


def selftest_clip(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A deterministic test signal: a rising chirp over light noise, at 16 kHz."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    chirp = 0.3 * np.sin(2 * np.pi * (200 + 400 * t) * t)
    noise = 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    return (chirp + noise).astype(np.float32)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def compare_gpu(cpu: np.ndarray, gpu: np.ndarray) -> tuple[float, bool]:
    """(max abs difference, same most likely token) of GPU logits against CPU logits."""
    return float(np.abs(cpu - gpu).max()), int(np.argmax(cpu)) == int(np.argmax(gpu))


def _check_quant(
    level: str, pair: Any, path: str, reference: np.ndarray, clip: np.ndarray, max_tokens: int
) -> QuantCheck:
    from ..engine.model import AudioModel, ModelOptions, SamplingOptions

    sampling = SamplingOptions(max_tokens=max_tokens, stop_at_end_of_turn=False)
    try:
        opts = ModelOptions(n_ctx=2048, audio_path=path)
        with AudioModel(pair.model_path, pair.mmproj_path, opts) as model:
            logits = model.prompt_logits(PROMPT, [clip])
            res = model.generate(PROMPT, [clip], sampling=sampling)
    except QAudioError as exc:
        return QuantCheck(level, path, False, 0.0, str(exc))
    cos = _cosine(logits, reference)
    if res.usage.completion_tokens != max_tokens:
        return QuantCheck(level, path, False, cos, f"generated {res.usage.completion_tokens}")
    if not cos >= QUANT_MIN_COSINE[level]:
        return QuantCheck(level, path, False, cos, f"logits too far from f32 (cosine {cos:.4f})")
    return QuantCheck(level, path, True, cos)


def run_selftest(work_dir: str | Path | None = None, max_tokens: int = 16) -> SelftestReport:
    """Run the self-test; see the module docstring.

    Args:
        work_dir: Where to build (default: a temporary folder, removed afterwards).
        max_tokens: Tokens to generate per run.
    """
    from ..convert import convert_checkpoint
    from ..convert.tiny import make_tiny_checkpoint
    from ..engine.cpu_probe import cpu_kernel_verdict
    from ..engine.model import AudioModel, ModelOptions, SamplingOptions

    info = backend_info()
    verdict = cpu_kernel_verdict()
    with tempfile.TemporaryDirectory(prefix="qaudio-selftest-") as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        t0 = time.perf_counter()
        ckpt = make_tiny_checkpoint(root / "tiny-qwen2-audio")
        conv = convert_checkpoint(ckpt, root / "gguf", outtype="f32")
        quants = {
            q: convert_checkpoint(ckpt, root / q, outtype=q, mmproj_outtype="q8_0")
            for q in QUANT_LEVELS
        }
        build_s = time.perf_counter() - t0
        clip = selftest_clip()
        sampling = SamplingOptions(max_tokens=max_tokens, stop_at_end_of_turn=False)
        reference: dict[str, np.ndarray] = {}
        for path in ("faithful", "mtmd"):
            opts = ModelOptions(n_ctx=2048, audio_path=path)
            with AudioModel(conv.model_path, conv.mmproj_path, opts) as model:
                reference[path] = model.prompt_logits(PROMPT, [clip])
                if path == "faithful":
                    first = model.generate(PROMPT, [clip], sampling=sampling)
                    model.clear_cache()  # a cold second run: determinism, not reuse
                    second = model.generate(PROMPT, [clip], sampling=sampling)
        checks = tuple(
            _check_quant(q, quants[q], path, reference[path], clip, max_tokens)
            for q in QUANT_LEVELS
            for path in ("faithful", "mtmd")
        )
        gpu_diff, gpu_top1 = None, True
        if info.gpu_offload:
            opts = ModelOptions(n_ctx=2048, n_gpu_layers=-1)
            with AudioModel(conv.model_path, conv.mmproj_path, opts) as model:
                gpu_diff, gpu_top1 = compare_gpu(
                    reference["faithful"], model.prompt_logits(PROMPT, [clip])
                )
    deterministic = first.tokens == second.tokens
    gpu_ok = gpu_diff is None or (gpu_diff <= GPU_TOLERANCE and gpu_top1)
    ok = (
        deterministic
        and gpu_ok
        and all(c.ok for c in checks)
        and first.usage.audio_tokens > 0
        and first.usage.completion_tokens == max_tokens
    )
    return SelftestReport(
        backend=info,
        cpu_kernels=verdict.summary(),
        cpu_kernels_cause=verdict.cause(),
        build_s=build_s,
        audio_seconds=first.usage.audio_seconds,
        audio_tokens=first.usage.audio_tokens,
        completion_tokens=first.usage.completion_tokens,
        deterministic=deterministic,
        quantized=checks,
        gpu_checked=gpu_diff is not None,
        gpu_max_abs_diff=gpu_diff,
        gpu_same_top1=gpu_top1,
        ok=ok,
    )
