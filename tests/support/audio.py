"""Test audio: a sine tone, and recordings assembled from the synthetic speech clips.

The clips (``tests/data/speech-*.flac``) were made with espeak-ng by
``scripts/make_speech_clips.sh``; a recording places them and quiet noise at known sample
offsets, so a test knows where the speech is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from qaudio_local.config import SAMPLE_RATE

DATA = Path(__file__).resolve().parents[1] / "data"
SR = 16000

# about a minute: ("sil", seconds) of quiet noise or ("say", "a" | "b" | "c") a speech clip
MINUTE: list[tuple[str, float | str]] = [
    ("sil", 3),
    ("say", "a"),
    ("sil", 0.6),
    ("say", "b"),
    ("sil", 0.5),
    ("say", "c"),
    ("sil", 0.7),
    ("say", "a"),
    ("sil", 0.4),
    ("say", "b"),  # ~33 s of speech with short pauses: must be cut at a pause
    ("sil", 6),
    ("say", "c"),
    ("sil", 8),
    ("say", "b"),
    ("sil", 4),
]


def tone(
    seconds: float = 1.0, freq: float = 440.0, rate: int = SAMPLE_RATE, amplitude: float = 0.3
) -> np.ndarray:
    """A sine tone, float32."""
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def clip(key: str) -> np.ndarray:
    """The speech clip ``key`` ("a", "b" or "c"), 16 kHz mono float32."""
    return sf.read(DATA / f"speech-{key}.flac", dtype="float32")[0]


def speech_bounds(x: np.ndarray) -> tuple[int, int]:
    """Where a clip's speech starts and ends (its own leading/trailing silence cut)."""
    loud = np.flatnonzero(np.abs(x) > 0.02)
    return int(loud[0]), int(loud[-1]) + 1


def make_recording(path: Path, plan: list[tuple[str, float | str]], seed: int = 0) -> list:
    """Write ``plan`` (("sil", seconds) or ("say", "a"|"b"|"c")) block by block; return
    the speech intervals (start, end) in samples."""
    rng = np.random.default_rng(seed)
    truth, pos = [], 0
    with sf.SoundFile(path, "w", SR, 1, subtype="PCM_16") as f:
        for kind, what in plan:
            if kind == "sil":
                n = int(float(what) * SR)
                for i in range(0, n, 10 * SR):
                    k = min(10 * SR, n - i)
                    f.write((0.0003 * rng.standard_normal(k)).astype(np.float32))
                pos += n
            else:
                x = clip(str(what))
                a, b = speech_bounds(x)
                truth.append((pos + a, pos + b))
                f.write(x)
                pos += len(x)
    return truth
