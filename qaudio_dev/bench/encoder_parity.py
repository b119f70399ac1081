"""Each encoder mode against transformers: the clips, both sides' embeddings, the figures.

The reference is :class:`qaudio_dev.reference.ReferenceModel` (transformers' audio tower and
projector in float32, windows and masks as Qwen2-Audio's own forward makes them), the one
the tiny model's parity tests use; the project's side is :class:`AudioEncoder` on the
projector of each weight type, windows and features as ``AudioModel`` makes them, Q8_0 on
the matrix units where the CPU-kernel plan puts the encoder's weights there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from qaudio_local.config import SAMPLE_RATE

ROOT = Path(__file__).resolve().parents[2]
# a mode's worst figures over the clips may not pass these (--check): 2-3x the worst measured
# at real size on an Intel Xeon VM (README, "Each encoder mode against transformers") and at
# the smoke dims
BOUNDS = {  # weight type: (max abs relative to the reference's largest value, min cosine)
    "F32": (5e-4, 0.999999),
    "F16": (1.5e-3, 0.99999),
    "BF16": (2e-2, 0.9999),
    "Q8_0": (6e-2, 0.999),
}


def speech(seconds: float) -> np.ndarray:
    """``seconds`` of the synthetic speech clips in tests/data, with short pauses between."""
    import soundfile as sf

    clips = [
        sf.read(ROOT / "tests" / "data" / f"speech-{k}.flac", dtype="float32")[0] for k in "abc"
    ]
    pause = np.zeros(SAMPLE_RATE // 2, np.float32)
    parts, total, k = [], 0, 0
    while total < seconds * SAMPLE_RATE:
        for part in (clips[k % 3], pause):
            parts.append(part)
            total += part.size
        k += 1
    return np.concatenate(parts)[: int(seconds * SAMPLE_RATE)]


def encode_ours(
    projector: Path, wtype: str, clips: dict[str, np.ndarray], threads: int
) -> tuple[dict[str, np.ndarray], bool]:
    """Each clip's embeddings from the project's encoder; and whether the matrix units ran."""
    from qaudio_local.audio.features import log_mel
    from qaudio_local.audio.windows import split_windows
    from qaudio_local.engine.cpu_probe import kernel_plan
    from qaudio_local.engine.encoder import AudioEncoder

    plan = kernel_plan("auto", text_quantized=False, projector_quantized=wtype == "Q8_0")
    extra = plan.encoder_extra_bufts
    out = {}
    with AudioEncoder(projector, use_gpu=False, n_threads=threads, extra_bufts=extra) as enc:
        for name, x in clips.items():
            feats = [log_mel(w) for w in split_windows(x)]
            out[name] = np.concatenate([enc.encode(f.mel, f.n_valid_frames) for f in feats])
    return out, bool(extra)


def encode_reference(checkpoint: Path, clips: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each clip's embeddings from transformers (float32)."""
    from qaudio_dev.reference import ReferenceModel

    ref = ReferenceModel(checkpoint)
    return {name: ref.audio_embeddings(x).numpy() for name, x in clips.items()}


def compare(ours: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    """Max abs difference (also relative to the reference's largest value) and the lowest
    cosine between a token's two embeddings."""
    if ours.shape != ref.shape:
        return {"error": f"shapes differ: {ours.shape} against {ref.shape}"}
    a, b = ours.astype(np.float64), ref.astype(np.float64)
    diff = float(np.abs(a - b).max())
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {
        "tokens": int(ref.shape[0]),
        "max_abs": diff,
        "rel": diff / float(np.abs(b).max()),
        "min_cosine": float(cos.min()),
    }


def within(wtype: str, row: dict[str, Any]) -> bool:
    rel, cosine = BOUNDS[wtype]
    return "error" not in row and row["rel"] <= rel and row["min_cosine"] >= cosine
