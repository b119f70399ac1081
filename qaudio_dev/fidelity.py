"""Shared by the parity tests and ``scripts/fidelity_report.py``: clips and comparisons.

Import only where torch and transformers are installed (it imports the reference).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qaudio_dev.reference import ReferenceModel
from qaudio_local.audio import load_audio
from qaudio_local.config import SAMPLE_RATE
from qaudio_local.engine.model import AudioModel, SamplingOptions

PROMPT = "What does the person say?"
CLIP_SECONDS = (0.5, 1.0, 5.0, 17.3, 29.9, 30.0, 45.0, 180.0)
NORMAL_PEAK, QUIET_PEAK = 0.5, 0.01
N_GREEDY = 20
# (seconds, peak, stereo source): every length normal, a few quiet, two stereo
CASES = [(s, NORMAL_PEAK, False) for s in CLIP_SECONDS]
CASES += [(s, QUIET_PEAK, False) for s in (1.0, 17.3, 45.0)]
CASES += [(s, NORMAL_PEAK, True) for s in (5.0, 30.0)]


def make_clip(
    seconds: float, peak: float = NORMAL_PEAK, stereo: bool = False, seed: int = 0
) -> np.ndarray:
    """A speech-like test signal at 16 kHz, mono float32, scaled to ``peak``.

    Syllable-rate amplitude modulation of a few harmonics plus noise, so every window
    differs. A stereo source is built as two different channels and downmixed by the
    project's own front end (:func:`qaudio_local.audio.load_audio`), as a file would be.
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)
    voice = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / SAMPLE_RATE) / k for k in (1, 2, 3, 5))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6.28))
    x = voice * envelope + 0.2 * rng.standard_normal(n)
    if stereo:
        other = np.roll(x, 37) * 0.6 + 0.1 * rng.standard_normal(n)
        frames = np.stack([x, other], axis=1)
        frames *= peak / np.abs(frames).max()
        return load_audio(frames.astype(np.float32), source_rate=SAMPLE_RATE)
    return (x * (peak / np.abs(x).max())).astype(np.float32)


@dataclass(frozen=True)
class Comparison:
    """How one audio path's output compares with the reference on one clip."""

    ref_tokens: int
    audio_tokens: int
    max_abs: float
    cosine: float
    top1: bool
    greedy_match: int  # leading greedy tokens equal to the reference's, out of N_GREEDY
    encode_ms: float
    prefill_ms: float


def reference_run(ref: ReferenceModel, clip: np.ndarray) -> tuple[np.ndarray, list[int], int]:
    """(last logits, greedy tokens, audio token count) from the reference."""
    logits = ref.last_logits(PROMPT, [clip])
    greedy = ref.greedy(PROMPT, [clip], n=N_GREEDY)
    return logits, greedy, int(ref.audio_embeddings(clip).shape[0])


def compare(
    model: AudioModel, reference: tuple[np.ndarray, list[int], int], clip: np.ndarray
) -> Comparison:
    """Run ``model`` on ``clip`` and measure it against the reference's outputs."""
    ref_logits, ref_greedy, ref_tokens = reference
    logits = model.prompt_logits(PROMPT, [clip])
    res = model.generate(
        PROMPT, [clip], sampling=SamplingOptions(max_tokens=N_GREEDY, stop_at_end_of_turn=False)
    )
    match = 0
    for a, b in zip(res.tokens, ref_greedy, strict=False):
        if a != b:
            break
        match += 1
    cos = float(np.dot(logits, ref_logits) / (np.linalg.norm(logits) * np.linalg.norm(ref_logits)))
    return Comparison(
        ref_tokens=ref_tokens,
        audio_tokens=res.usage.audio_tokens,
        max_abs=float(np.abs(logits - ref_logits).max()),
        cosine=cos,
        top1=int(np.argmax(logits)) == int(np.argmax(ref_logits)),
        greedy_match=match,
        encode_ms=res.timings.encode_ms,
        prefill_ms=res.timings.prefill_ms,
    )
