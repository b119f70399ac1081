"""Arithmetic of the Qwen2-Audio (Whisper) encoder, counted the way benchmarks count it:
two operations per multiply-add, matrix products and convolutions only (norms, softmax,
GELU and adds are a fraction of a percent at these sizes), and the peak each kind of
arithmetic is measured against."""

from __future__ import annotations


def encoder_flops(dims: dict[str, int], n_frames: int, out_dim: int = 4096) -> float:
    """Operations to encode ``n_frames`` mel frames (3000 = a full 30 s window).

    Args:
        dims: ``d_model``, ``layers``, ``ffn`` and optionally ``n_mels`` (default 128).
        n_frames: Mel frames the encoder runs over (the faithful path runs only the valid
            ones; the reference pads every window to 3000).
        out_dim: The projector's output width (the text model's hidden size).
    """
    d, layers, ffn = dims["d_model"], dims["layers"], dims["ffn"]
    mels = dims.get("n_mels", 128)
    n = (n_frames - 1) // 2 + 1  # positions after the stride-2 convolution
    conv = 2 * n_frames * mels * d * 3 + 2 * n * d * d * 3
    projections = 4 * 2 * n * d * d  # q, k, v, out
    attention = 2 * 2 * n * n * d  # scores and the weighted sum
    mlp = 2 * 2 * n * d * ffn
    pooled = n // 2
    return float(conv + layers * (projections + attention + mlp) + 2 * pooled * d * out_dim)


# Each arithmetic can be carried by a wider one (bfloat16 products widened to float32, int8
# ones too), so the peak of a type is the best measured rate of it or of any wider type:
# on a CPU without AVX-512, torch's bfloat16 and int8 products are emulated, far slower
# than float32's.
WIDER = {"int8": ("bfloat16", "float32"), "bfloat16": ("float32",), "float32": ()}


def peak_source(measured: dict[str, float]) -> dict[str, str]:
    """For each type, the type whose measured rate is its peak (itself or a wider one)."""
    return {k: max((k, *WIDER[k]), key=lambda t: measured[t]) for k in measured}


def effective_peak(measured: dict[str, float]) -> dict[str, float]:
    """The peak each type's arithmetic is measured against (see :data:`WIDER`)."""
    return {k: measured[src] for k, src in peak_source(measured).items()}


def emulated(measured: dict[str, float], factor: float = 4.0) -> set[str]:
    """Types whose own product runs ``factor`` times slower than a wider type's.

    torch has no fast kernel for them on this CPU (bfloat16 and int8 without AVX-512 or
    AMX), so a model run in that type takes many times longer than in the wider one.
    """
    return {k for k, src in peak_source(measured).items() if measured[k] * factor < measured[src]}
