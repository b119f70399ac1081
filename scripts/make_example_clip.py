"""Generate the example clip shipped as ``examples/tone_chirp.wav``.

A deterministic 3 s, 16 kHz, mono, 16-bit WAV (~94 KiB) that exercises the audio path
without needing a recording:

- 0.0-1.0 s: three 1/3 s notes, A4 (440 Hz), C#5 (554.37 Hz) and E5 (659.26 Hz);
- 1.0-2.0 s: a logarithmic chirp from 100 Hz to 6 kHz;
- 2.0-2.6 s: three 0.1 s DTMF "1" bursts (697 Hz + 1209 Hz), 0.1 s apart;
- 2.6-3.0 s: silence;
- throughout: white noise at -60 dBFS (seed 20240601).

Every segment has 10 ms raised-cosine fades so there are no clicks, and the whole signal
peaks at -3 dBFS. Usage::

    python scripts/make_example_clip.py [OUT]

OUT defaults to ``examples/tone_chirp.wav`` next to this script's parent directory.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16_000  # Hz, what the model expects (qaudio_local.config.SAMPLE_RATE)
DURATION = 3.0  # seconds
SEED = 20240601
PEAK = 10 ** (-3 / 20)  # -3 dBFS
NOISE_RMS = 10 ** (-60 / 20)  # -60 dBFS
FADE = 0.010  # seconds of raised-cosine fade at each segment edge
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "examples" / "tone_chirp.wav"


def _faded(x: np.ndarray) -> np.ndarray:
    """Return ``x`` with raised-cosine fades at both ends."""
    n = min(int(FADE * SAMPLE_RATE), x.shape[0] // 2)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))
    out = x.copy()
    out[:n] *= ramp
    out[x.shape[0] - n :] *= ramp[::-1]
    return out


def _tone(freqs: tuple[float, ...], seconds: float) -> np.ndarray:
    """Return a faded sum of equal-amplitude sines, peak about 1."""
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    x = sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs)
    return _faded(np.asarray(x))


def _chirp(f0: float, f1: float, seconds: float) -> np.ndarray:
    """Return a faded logarithmic sine sweep from ``f0`` to ``f1`` Hz."""
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    k = np.log(f1 / f0) / seconds
    phase = 2 * np.pi * f0 * (np.exp(k * t) - 1) / k
    return _faded(np.sin(phase))


def make_signal() -> np.ndarray:
    """Build the example signal as float64 samples at :data:`SAMPLE_RATE`.

    Returns:
        A 1-D array of ``DURATION * SAMPLE_RATE`` samples peaking at :data:`PEAK`.
    """
    notes = [_tone((f,), 1 / 3) for f in (440.0, 554.37, 659.26)]
    gap = np.zeros(int(0.1 * SAMPLE_RATE))
    dtmf = [part for _ in range(3) for part in (_tone((697.0, 1209.0), 0.1), gap)]
    signal = np.concatenate([*notes, _chirp(100.0, 6000.0, 1.0), *dtmf])
    n_total = int(DURATION * SAMPLE_RATE)
    signal = np.pad(signal, (0, n_total - signal.shape[0]))
    signal *= PEAK / np.abs(signal).max()
    rng = np.random.default_rng(SEED)
    signal += NOISE_RMS * rng.standard_normal(n_total)
    return np.clip(signal, -1.0, 1.0)


def main(argv: list[str] | None = None) -> int:
    """Write the example clip.

    Args:
        argv: Command-line arguments (defaults to ``sys.argv[1:]``).

    Returns:
        The process exit code.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT, help="output WAV path")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(args.out, make_signal(), SAMPLE_RATE, subtype="PCM_16")
    info = sf.info(str(args.out))
    size = args.out.stat().st_size
    print(f"wrote {args.out}: {info.duration:.2f} s, {info.samplerate} Hz, {size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
