"""Whisper / Qwen2-Audio log-mel features for one 30 s window, in numpy.

:func:`log_mel` computes what the official front end gives for one window of at most 30 s:
``WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160,
chunk_length=30, n_fft=400)`` called the way ``Qwen2AudioProcessor`` calls it
(``padding="max_length"``, ``truncation=True``, ``return_attention_mask=True``):

1. the samples, rounded to float32 (the extractor casts float64 input to float32), are
   zero-padded to 480 000 (30 s);
2. STFT with a periodic Hann window of 400, hop 160, ``center=True`` (200 samples of reflect
   padding on each side), giving 3001 frames; the power spectrum ``|X|**2`` of 201 bins;
3. 128 Slaney-scale, Slaney-normalised mel filters over 0-8 kHz;
4. ``log10(max(mel, 1e-10))``; the last frame is dropped (3000 frames remain);
5. values are clamped to ``max - 8`` over the window (an 80 dB range), then ``(x + 4) / 4``.

Precision: the extractor has two implementations and picks one at call time.

- Without torch it uses numpy: a float64 FFT whose result is stored as complex64, float64
  power, mel and log10, then float32 for the clamp and ``(x + 4) / 4``. This module takes the
  same precision steps and gives **bit-identical** output (max abs difference 0 on every
  clip tested).
- With torch installed (the usual set-up, and what ``Qwen2AudioProcessor`` then uses) it
  runs ``torch.stft`` and everything after it in float32. Float32 FFT rounding noise sits
  ~140 dB below each frame's peak, so values within 40 dB of the window's max agree with
  this module to ~2e-6, but mel bins 60-80 dB down (just above the clamp) differ by up to
  ~6e-5. That is the torch implementation's own error: this module is within one float32
  ulp of an all-float64 computation.

The valid-frame count is the one the reference attention mask sums to: the sample-level
padding mask subsampled with ``[::160]`` has a 1 at every frame start ``160 * t`` that lies
inside the audio, so a window of ``n`` samples has ``ceil(n / 160)`` valid frames (the
extractor's trim of the subsampled mask applies only when the padded length, 480 000, is not
a multiple of 160, which never happens here).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..config import HOP_LENGTH, N_FFT, N_FRAMES, N_MELS, N_SAMPLES, SAMPLE_RATE
from ..errors import InvalidAudioError

__all__ = [
    "Features",
    "audio_tokens",
    "conv_frames",
    "log_mel",
    "mel_filters",
    "valid_frames",
]

N_FREQS = N_FFT // 2 + 1  # 201 one-sided FFT bins, 40 Hz apart
MEL_FMIN = 0.0  # Hz, lowest mel band edge
MEL_FMAX = 8000.0  # Hz, highest mel band edge (Nyquist at 16 kHz)
PAD = N_FFT // 2  # 200 samples of reflect padding on each side (center=True)
LOG_FLOOR = 1e-10  # mel power floor before log10 -> -10
DYNAMIC_RANGE = 8.0  # log10 units kept below the window's max (80 dB)
LOG_OFFSET = 4.0  # (x + 4) / 4 maps the usual [-4, 4] log10 range to about [-1, 1]
LOG_SCALE = 4.0

# Slaney mel scale (librosa's default, ``htk=False``): linear below 1 kHz, log above.
# Written as transformers.audio_utils writes them, so the filterbank is bit-identical.
_SLANEY_MIN_LOG_HZ = 1000.0  # start of the log part; below it 3 mels per 200 Hz
_SLANEY_MIN_LOG_MEL = 15.0  # = 1000 Hz * 3 / 200
_SLANEY_MELS_PER_LOG_HZ = 27.0 / np.log(6.4)  # 27 mels per factor 6.4 (1 kHz -> 6.4 kHz)


@dataclass(frozen=True, eq=False)
class Features:
    """Log-mel features of one window, with the reference's valid length.

    Attributes:
        mel: float32 array of shape (128, 3000), the encoder's ``input_features`` for one
            window (padding included: the encoder always takes 3000 frames).
        n_valid_frames: Frames that hold audio, ``ceil(n_samples / 160)``: what the
            reference ``feature_attention_mask`` sums to.
    """

    mel: np.ndarray
    n_valid_frames: int

    @property
    def n_conv_frames(self) -> int:
        """Encoder positions the valid frames reach after the stride-2 convolution."""
        return conv_frames(self.n_valid_frames)

    @property
    def n_audio_tokens(self) -> int:
        """Audio tokens that reach the text model after the stride-2 average pooling."""
        return audio_tokens(self.n_valid_frames)


def valid_frames(n_samples: int) -> int:
    """Return the valid mel frames of a window of ``n_samples`` (at most 480 000).

    A frame ``t`` is valid when its start sample ``160 * t`` lies inside the audio, which is
    how the extractor's mask (``attention_mask[:, ::160]``) counts: ``ceil(n / 160)``.
    """
    return -(-min(n_samples, N_SAMPLES) // HOP_LENGTH)


def conv_frames(n_frames: int) -> int:
    """Return the encoder positions after conv2 (kernel 3, stride 2, padding 1)."""
    return (n_frames - 1) // 2 + 1


def audio_tokens(n_frames: int) -> int:
    """Return the audio tokens for ``n_frames`` valid mel frames (after the stride-2 pool).

    ``(conv_frames(n) - 2) // 2 + 1``: 100 frames per second -> 50 -> 25 tokens per second;
    3000 frames (30 s) -> 750; fewer than 3 frames -> 0.
    """
    return (conv_frames(n_frames) - 2) // 2 + 1


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    mel = 3.0 * hz / 200.0
    log_part = hz >= _SLANEY_MIN_LOG_HZ
    mel[log_part] = (
        _SLANEY_MIN_LOG_MEL + np.log(hz[log_part] / _SLANEY_MIN_LOG_HZ) * _SLANEY_MELS_PER_LOG_HZ
    )
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    hz = 200.0 * mel / 3.0
    log_part = mel >= _SLANEY_MIN_LOG_MEL
    log_step = np.log(6.4) / 27.0
    hz[log_part] = _SLANEY_MIN_LOG_HZ * np.exp(log_step * (mel[log_part] - _SLANEY_MIN_LOG_MEL))
    return hz


@functools.lru_cache(maxsize=1)
def mel_filters() -> np.ndarray:
    """Return the (128, 201) float64 Slaney mel filterbank over 0-8 kHz (read-only).

    Triangles between consecutive band edges spaced evenly on the Slaney mel scale, each
    scaled by ``2 / (upper edge - lower edge)`` in Hz (Slaney area normalisation), as
    ``transformers.audio_utils.mel_filter_bank(..., norm="slaney", mel_scale="slaney")``
    and ``librosa.filters.mel(norm="slaney")`` build it.
    """
    edges_mel = np.linspace(
        _hz_to_mel(np.array([MEL_FMIN]))[0], _hz_to_mel(np.array([MEL_FMAX]))[0], N_MELS + 2
    )
    edges = _mel_to_hz(edges_mel)  # 130 band edges in Hz
    fft_hz = np.linspace(0, SAMPLE_RATE // 2, N_FREQS)  # bin centres, 0..8000 Hz
    rel = edges[None, :] - fft_hz[:, None]  # (201, 130)
    width = np.diff(edges)  # (129,)
    rising = -rel[:, :-2] / width[:-1]
    falling = rel[:, 2:] / width[1:]
    bank = np.maximum(0.0, np.minimum(rising, falling))  # (201, 128)
    bank *= 2.0 / (edges[2:] - edges[:-2])
    out = np.ascontiguousarray(bank.T)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    """Periodic Hann window of N_FFT samples (``torch.hann_window(400)``), float64.

    The symmetric window of N_FFT + 1 points without its last one, as transformers'
    ``window_function(400, "hann")`` builds it.
    """
    return np.hanning(N_FFT + 1)[:-1]


def log_mel(window: np.ndarray) -> Features:
    """Compute the reference log-mel features of one window of at most 30 s.

    Args:
        window: Mono samples at 16 kHz, 1-D, at most 480 000 of them (float arrays of any
            precision; they are rounded to float32 first, as the extractor does).

    Returns:
        The (128, 3000) float32 features and the number of valid frames.

    Raises:
        InvalidAudioError: ``window`` is not 1-D, is empty or longer than 480 000 samples.
    """
    samples = np.asarray(window)
    if samples.ndim != 1 or not 0 < samples.size <= N_SAMPLES:
        raise InvalidAudioError(
            f"a feature window must be 1-D with 1 to {N_SAMPLES} samples, got shape "
            f"{samples.shape}; split long audio with qaudio_local.windows.split_windows",
            source="<array>",
        )
    padded = np.zeros(N_SAMPLES + 2 * PAD, dtype=np.float64)
    padded[PAD : PAD + samples.size] = samples.astype(np.float32)
    # Reflect padding (excluding the edge sample) at both ends of the 480 000-sample signal.
    padded[:PAD] = padded[2 * PAD : PAD : -1]
    padded[-PAD:] = padded[-PAD - 2 : -2 * PAD - 2 : -1]
    # Frame t covers padded[160 t : 160 t + 400]; only the first 3000 of the 3001 are kept.
    frames = sliding_window_view(padded, N_FFT)[: N_FRAMES * HOP_LENGTH : HOP_LENGTH]
    # float64 FFT stored as complex64, float64 magnitude, mel and log10, then float32 for the
    # clamp and scaling: the precision steps of the extractor's numpy implementation.
    spectrum = np.fft.rfft(frames * _hann(), axis=-1).astype(np.complex64)  # (3000, 201)
    power = np.abs(spectrum, dtype=np.float64) ** 2
    mel = mel_filters() @ power.T  # (128, 3000)
    log_spec = np.log10(np.maximum(mel, LOG_FLOOR)).astype(np.float32)
    log_spec = np.maximum(log_spec, log_spec.max() - np.float32(DYNAMIC_RANGE))
    out = (log_spec + np.float32(LOG_OFFSET)) / np.float32(LOG_SCALE)
    return Features(mel=out, n_valid_frames=valid_frames(samples.size))
