"""The audio front end (qaudio_local.audio): decoding, downmix, resampling, errors."""

from __future__ import annotations

import dataclasses
import io
import os
import runpy
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from qaudio_local import audio
from qaudio_local.audio import AudioClip, load_audio, load_clip, mpeg, sources
from qaudio_local.config import SAMPLE_RATE
from qaudio_local.errors import (
    AudioDecodeError,
    AudioError,
    AudioFileNotFoundError,
    AudioTooLargeError,
    AudioTooLongError,
    EmptyAudioError,
    InvalidAudioError,
    OptionError,
    QAudioError,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "tone_chirp.wav"
RATES = [8000, 16000, 22050, 44100, 48000]


def tone(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    """A float32 sine of ``freq`` Hz."""
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, rate: int) -> float:
    """The frequency of the largest FFT bin of ``x`` (Hann-windowed)."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.shape[0])))
    return float(np.fft.rfftfreq(x.shape[0], 1 / rate)[np.argmax(spectrum)])


def expected_len(n: int, rate: int, target: int = SAMPLE_RATE) -> int:
    return round(n * target / rate)


def wav_bytes(data: np.ndarray, rate: int, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, data, rate, format=kwargs.pop("format", "WAV"), **kwargs)
    return buf.getvalue()


def check_decode_message(err: pytest.ExceptionInfo[AudioDecodeError], name: str) -> None:
    """A decode error names the source, the readable formats and an ffmpeg command."""
    msg = str(err.value)
    assert name in msg
    assert "WAV" in msg and "FLAC" in msg
    assert "ffmpeg -i" in msg
    assert len(msg) < 600  # never the repr of the whole input
    assert not isinstance(err.value, sf.SoundFileError)


# --- decoding files ------------------------------------------------------------


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
@pytest.mark.parametrize("rate", RATES)
def test_wav_rates_resample_to_16k_and_keep_the_tone(
    tmp_path: Path, rate: int, subtype: str
) -> None:
    data = tone(440.0, rate)
    path = tmp_path / f"tone_{rate}.wav"
    sf.write(path, data, rate, subtype=subtype)

    clip = load_clip(path)

    assert clip.samples.dtype == np.float32 and clip.samples.ndim == 1
    assert abs(clip.samples.shape[0] - expected_len(data.shape[0], rate)) <= 1
    assert clip.sample_rate == SAMPLE_RATE and clip.source_rate == rate
    assert clip.source_channels == 1 and clip.source == str(path)
    assert clip.duration == pytest.approx(1.0, abs=1e-3)
    assert peak_hz(clip.samples, SAMPLE_RATE) == pytest.approx(440.0, abs=1.5)
    assert np.abs(clip.samples[1000:-1000]).max() == pytest.approx(0.5, rel=0.02)


def test_no_resampling_when_rates_match(tmp_path: Path) -> None:
    data = tone(440.0, SAMPLE_RATE) + np.float32(1e-7)
    path = tmp_path / "exact.wav"
    sf.write(path, data, SAMPLE_RATE, subtype="FLOAT")
    out = load_audio(path)
    np.testing.assert_array_equal(out, data)  # bit-exact: soxr was not involved


@pytest.mark.parametrize("rate", [22050, 44100, 48000])
def test_resampling_keeps_duration(rate: int) -> None:
    data = tone(440.0, rate, seconds=2.37)
    for target in (SAMPLE_RATE, 8000):
        out = load_audio(data, source_rate=rate, sample_rate=target)
        assert abs(out.shape[0] - expected_len(data.shape[0], rate, target)) <= 1
        assert peak_hz(out, target) == pytest.approx(440.0, abs=1.0)


@pytest.mark.parametrize("channels", [2, 6])
def test_multichannel_files_are_averaged(tmp_path: Path, channels: int) -> None:
    rng = np.random.default_rng(channels)
    data = (0.2 * rng.standard_normal((8000, channels))).astype(np.float32)
    path = tmp_path / f"multi{channels}.wav"
    sf.write(path, data, SAMPLE_RATE, subtype="FLOAT")
    clip = load_clip(path)
    assert clip.source_channels == channels
    np.testing.assert_allclose(clip.samples, data.mean(axis=1), atol=1e-6)


def test_stereo_l_minus_l_downmixes_to_silence(tmp_path: Path) -> None:
    left = (tone(440.0, 44100) * 32767).astype(np.int16)
    path = tmp_path / "antiphase.wav"
    sf.write(path, np.stack([left, -left], axis=1), 44100, subtype="PCM_16")
    out = load_audio(path)
    assert abs(out.shape[0] - SAMPLE_RATE) <= 1
    assert np.abs(out).max() < 1e-6


def test_long_file_streamed_in_blocks_matches_one_shot_resampling(tmp_path: Path) -> None:
    rate = 48000
    n = audio.BLOCK_FRAMES + 12345  # more than one block
    rng = np.random.default_rng(0)
    data = (0.1 * rng.standard_normal((n, 2))).astype(np.float32)
    path = tmp_path / "long.wav"
    sf.write(path, data, rate, subtype="FLOAT")
    out = load_audio(path)
    reference = soxr.resample(data.mean(axis=1), rate, SAMPLE_RATE, quality="HQ")
    assert out.shape == reference.shape
    np.testing.assert_allclose(out, reference, atol=1e-6)


LOSSLESS = [("flac", "FLAC", "PCM_16"), ("aiff", "AIFF", "PCM_16"), ("wav", "WAV", "PCM_24")]


@pytest.mark.parametrize(("ext", "fmt", "subtype"), LOSSLESS)
def test_lossless_formats(tmp_path: Path, ext: str, fmt: str, subtype: str) -> None:
    data = tone(440.0, 22050)
    path = tmp_path / f"tone.{ext}"
    sf.write(path, data, 22050, format=fmt, subtype=subtype)
    out = load_audio(path)
    reference = soxr.resample(data, 22050, SAMPLE_RATE, quality="HQ")
    np.testing.assert_allclose(out, reference, atol=1e-3)


LOSSY = [("ogg", "OGG", "VORBIS", 44100), ("opus", "OGG", "OPUS", 48000)]


@pytest.mark.parametrize(("ext", "fmt", "subtype", "rate"), LOSSY)
def test_lossy_ogg_formats(tmp_path: Path, ext: str, fmt: str, subtype: str, rate: int) -> None:
    assert subtype in sf.available_subtypes(fmt), f"libsndfile lacks {fmt}/{subtype}"
    path = tmp_path / f"tone.{ext}"
    sf.write(path, tone(440.0, rate), rate, format=fmt, subtype=subtype)
    out = load_audio(path)
    assert abs(out.shape[0] - SAMPLE_RATE) <= 0.02 * SAMPLE_RATE
    assert peak_hz(out, SAMPLE_RATE) == pytest.approx(440.0, abs=2.0)


def test_mp3(tmp_path: Path) -> None:
    if "MP3" not in sf.available_formats():
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} was built without MP3 support")
    path = tmp_path / "tone.mp3"
    sf.write(path, tone(440.0, 44100), 44100, format="MP3")
    out = load_audio(path)
    assert abs(out.shape[0] - SAMPLE_RATE) <= 0.05 * SAMPLE_RATE
    assert peak_hz(out, SAMPLE_RATE) == pytest.approx(440.0, abs=2.0)


def test_example_clip_ships_and_loads() -> None:
    assert EXAMPLE.stat().st_size < 200_000
    info = sf.info(str(EXAMPLE))
    assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
    clip = load_clip(EXAMPLE)
    assert clip.duration == pytest.approx(3.0)
    assert not clip.resampled
    assert 0.5 < np.abs(clip.samples).max() <= 1.0
    assert peak_hz(clip.samples[: SAMPLE_RATE // 3], SAMPLE_RATE) == pytest.approx(440, abs=4)


def test_example_clip_script_reproduces_the_shipped_clip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = runpy.run_path(str(REPO / "scripts" / "make_example_clip.py"), run_name="script")
    out = tmp_path / "clip.wav"
    assert script["main"]([str(out)]) == 0
    assert "3.00 s" in capsys.readouterr().out
    fresh, _ = sf.read(out, dtype="int16")
    shipped, _ = sf.read(EXAMPLE, dtype="int16")
    assert fresh.shape == shipped.shape
    assert np.abs(fresh.astype(np.int32) - shipped).max() <= 1  # allow last-bit rounding


# --- other source kinds --------------------------------------------------------


class _Unseekable(io.RawIOBase):
    """A read-only stream that cannot seek, like a pipe or an HTTP body."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        chunk = self._inner.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_bytes_file_objects_and_paths_all_agree(tmp_path: Path) -> None:
    data = tone(440.0, 44100, seconds=0.5)
    raw = wav_bytes(data, 44100, subtype="PCM_16")
    path = tmp_path / "tone.wav"
    path.write_bytes(raw)
    reference = load_audio(str(path))
    with path.open("rb") as fobj:
        from_file = load_clip(fobj)
    assert from_file.source == str(path)
    sources: list[object] = [path, raw, bytearray(raw), memoryview(raw), io.BytesIO(raw)]
    sources.append(_Unseekable(raw))
    for source in sources:
        np.testing.assert_array_equal(load_audio(source), reference)  # type: ignore[arg-type]
    np.testing.assert_array_equal(from_file.samples, reference)
    assert load_clip(raw).source == "<bytes>"
    assert load_clip(io.BytesIO(raw)).source == "<file>"


def test_arrays_in_both_layouts_give_the_same_result() -> None:
    left, right = tone(440.0, 44100), tone(660.0, 44100, amp=0.25)
    frames = np.stack([left, right], axis=1)  # (n_samples, channels), soundfile's layout
    a = load_clip(frames, source_rate=44100)
    b = load_clip(np.ascontiguousarray(frames.T), source_rate=44100)  # (channels, n_samples)
    assert a.source_channels == b.source_channels == 2 and a.source == "<array>"
    np.testing.assert_array_equal(a.samples, b.samples)
    mono = load_audio((left + right) / 2, source_rate=44100)
    np.testing.assert_allclose(a.samples, mono, atol=1e-6)
    six = np.tile(left, (6, 1))  # (6, n): channels first
    np.testing.assert_allclose(
        load_audio(six, source_rate=44100), load_audio(left, source_rate=44100), atol=1e-6
    )
    one_row = load_clip(left[np.newaxis, :], source_rate=44100)
    assert one_row.source_channels == 1 and abs(one_row.samples.shape[0] - SAMPLE_RATE) <= 1
    # (2, 2) is ambiguous and follows soundfile's layout: 2 samples of 2 channels.
    tiny = load_clip(np.ones((2, 2), np.float32), source_rate=SAMPLE_RATE)
    assert tiny.samples.shape == (2,) and tiny.source_channels == 2


def test_array_at_target_rate_is_copied_not_aliased() -> None:
    data = tone(440.0, SAMPLE_RATE)
    out = load_audio(data, source_rate=SAMPLE_RATE)
    np.testing.assert_array_equal(out, data)
    out[:] = 0
    assert np.abs(data).max() > 0.4


@pytest.mark.parametrize(("dtype", "subtype"), [("int16", "PCM_16"), ("int32", "PCM_32")])
def test_int_arrays_scale_like_soundfile(tmp_path: Path, dtype: str, subtype: str) -> None:
    path = tmp_path / "pcm.wav"
    sf.write(path, tone(440.0, SAMPLE_RATE), SAMPLE_RATE, subtype=subtype)
    ints, _ = sf.read(path, dtype=dtype)
    np.testing.assert_array_equal(load_audio(ints, source_rate=SAMPLE_RATE), load_audio(path))


def test_small_int_and_other_float_arrays() -> None:
    u8 = np.array([0, 128, 255], np.uint8)
    np.testing.assert_allclose(load_audio(u8, source_rate=SAMPLE_RATE), [-1.0, 0.0, 127 / 128])
    i8 = np.array([-128, 0, 64], np.int8)
    np.testing.assert_allclose(load_audio(i8, source_rate=SAMPLE_RATE), [-1.0, 0.0, 0.5])
    i16 = np.array([-32768, 16384], np.int16)
    np.testing.assert_allclose(load_audio(i16, source_rate=SAMPLE_RATE), [-1.0, 0.5])
    for dtype in (np.float16, np.float64):
        out = load_audio(np.array([0.25, -0.5], dtype), source_rate=SAMPLE_RATE)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, [0.25, -0.5])
    loud = load_audio(np.array([1.5, -2.0], np.float32), source_rate=SAMPLE_RATE)
    np.testing.assert_array_equal(loud, [1.5, -2.0])  # neither clipped nor normalised


def test_rates_accept_numpy_ints_and_whole_floats() -> None:
    data = tone(440.0, 22050)
    a = load_audio(data, source_rate=np.int64(22050))
    b = load_audio(data, source_rate=22050.0)  # type: ignore[arg-type]
    np.testing.assert_array_equal(a, b)


def test_audio_clip_is_frozen() -> None:
    clip = load_clip(np.zeros(1600, np.float32), source_rate=SAMPLE_RATE)
    assert clip.duration == pytest.approx(0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        clip.sample_rate = 8000  # type: ignore[misc]
    assert isinstance(clip, AudioClip)


# --- errors --------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.wav"
    with pytest.raises(AudioFileNotFoundError) as err:
        load_audio(missing)
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, QAudioError)
    assert err.value.path == str(missing) and "check the path" in str(err.value)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError, match="is a directory") as err:
        load_audio(tmp_path)
    assert err.value.source == str(tmp_path)


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret.wav"
    path.write_bytes(wav_bytes(tone(440.0, SAMPLE_RATE), SAMPLE_RATE))
    monkeypatch.setattr(os, "access", lambda *_args, **_kwargs: False)  # root ignores chmod
    with pytest.raises(AudioDecodeError, match="permission denied"):
        load_audio(path)


def test_empty_inputs(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.touch()
    with pytest.raises(EmptyAudioError, match=r"0 bytes"):
        load_audio(empty)
    header_only = tmp_path / "header_only.wav"
    sf.write(header_only, np.zeros(0, np.float32), SAMPLE_RATE, subtype="PCM_16")
    assert header_only.stat().st_size > 0
    with pytest.raises(EmptyAudioError, match="no audio frames") as err:
        load_audio(header_only)
    assert err.value.source == str(header_only)
    with pytest.raises(EmptyAudioError, match="no audio frames"):
        load_audio(header_only.read_bytes())
    with pytest.raises(EmptyAudioError, match="0 bytes"):
        load_audio(b"")
    for array in (np.zeros(0, np.float32), np.zeros((0, 2), np.float32)):
        with pytest.raises(EmptyAudioError, match="empty"):
            load_audio(array, source_rate=SAMPLE_RATE)
    with pytest.raises(EmptyAudioError, match="too short"):
        load_audio(np.zeros(1, np.float32), source_rate=48000)


def test_truncated_and_corrupt_bytes(tmp_path: Path) -> None:
    raw = wav_bytes(tone(440.0, SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")
    with pytest.raises(AudioDecodeError, match="Malformed") as err:
        load_audio(raw[:20])
    check_decode_message(err, "<bytes>")
    assert isinstance(err.value.__cause__, sf.LibsndfileError)

    flac = bytearray(wav_bytes(tone(440.0, SAMPLE_RATE, 3.0), SAMPLE_RATE, format="FLAC"))
    for i in range(2000, len(flac) - 100, 37):
        flac[i] ^= 0xFF
    path = tmp_path / "corrupt.flac"
    path.write_bytes(bytes(flac))
    with pytest.raises(AudioDecodeError) as err:
        load_audio(path)
    check_decode_message(err, str(path))


def test_random_bytes_and_text_renamed_wav(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).bytes(5000)
    with pytest.raises(AudioDecodeError, match="Format not recognised") as err:
        load_audio(noise)
    check_decode_message(err, "<bytes>")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    with pytest.raises(AudioDecodeError, match="Format not recognised") as err:
        load_audio(text)
    check_decode_message(err, str(text))
    assert "notes-16k.wav" in str(err.value)


def test_unsupported_container_names_the_problem(tmp_path: Path) -> None:
    m4a = tmp_path / "voice memo.m4a"
    m4a.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(200))
    with pytest.raises(AudioDecodeError, match=r"\.m4a files are not a format") as err:
        load_audio(m4a)
    assert "'" in str(err.value)  # the path with a space is shell-quoted in the ffmpeg hint


def test_non_finite_samples(tmp_path: Path) -> None:
    data = tone(440.0, SAMPLE_RATE)
    data[8000] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, data, SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(
        InvalidAudioError, match=r"1 NaN or infinite sample\(s\) \(the first at 0.500 s"
    ):
        load_audio(path)
    for bad in (np.nan, np.inf, -np.inf):
        array = np.zeros((100, 2), np.float64)
        array[10, 1] = bad
        with pytest.raises(InvalidAudioError, match="NaN or infinite"):
            load_audio(array, source_rate=SAMPLE_RATE)


def test_non_finite_sample_in_a_later_block_reports_its_time(tmp_path: Path) -> None:
    rate = 48000
    data = np.zeros(audio.BLOCK_FRAMES * 2, np.float32)
    data[audio.BLOCK_FRAMES + rate] = np.inf
    path = tmp_path / "late_inf.wav"
    sf.write(path, data, rate, subtype="FLOAT")
    first = (audio.BLOCK_FRAMES + rate) / rate
    with pytest.raises(InvalidAudioError, match=f"the first at {first:.3f} s"):
        load_audio(path)


def test_array_misuse() -> None:
    with pytest.raises(InvalidAudioError, match="source_rate") as err:
        load_audio(np.zeros(100, np.float32))
    assert err.value.source == "<array>" and isinstance(err.value, ValueError)
    with pytest.raises(InvalidAudioError, match=r"shape \(2, 3, 100\)"):
        load_audio(np.zeros((2, 3, 100), np.float32), source_rate=SAMPLE_RATE)
    with pytest.raises(InvalidAudioError, match=r"shape \(\)"):
        load_audio(np.array(0.5), source_rate=SAMPLE_RATE)
    with pytest.raises(InvalidAudioError, match=r"shape \(\)"):
        load_audio(np.float32(0.5), source_rate=SAMPLE_RATE)
    for dtype in (np.complex64, np.bool_, object, np.int64, np.uint16):
        with pytest.raises(InvalidAudioError, match="dtype"):
            load_audio(np.zeros(100, dtype), source_rate=SAMPLE_RATE)


@pytest.mark.parametrize("rate", [0, -16000, 22050.5, True, "16000", None])
def test_bad_rates(rate: object) -> None:
    with pytest.raises(InvalidAudioError, match="positive whole number"):
        load_audio(np.zeros(100, np.float32), source_rate=SAMPLE_RATE, sample_rate=rate)  # type: ignore[arg-type]
    if rate is not None:
        with pytest.raises(InvalidAudioError, match="source_rate must be"):
            load_audio(np.zeros(100, np.float32), source_rate=rate)  # type: ignore[arg-type]


def test_source_rate_is_refused_for_files() -> None:
    raw = wav_bytes(tone(440.0, SAMPLE_RATE), SAMPLE_RATE)
    with pytest.raises(InvalidAudioError, match="only for numpy arrays"):
        load_audio(raw, source_rate=SAMPLE_RATE)


def test_wrong_source_types(tmp_path: Path) -> None:
    for source in ([0.0, 0.1], None, 16000):
        with pytest.raises(InvalidAudioError, match="cannot load audio from a"):
            load_audio(source)  # type: ignore[arg-type]
    path = tmp_path / "tone.wav"
    path.write_bytes(wav_bytes(tone(440.0, SAMPLE_RATE), SAMPLE_RATE))
    with (
        path.open("r", encoding="latin-1") as text_mode,
        pytest.raises(InvalidAudioError, match="text mode"),
    ):
        load_audio(text_mode)  # type: ignore[arg-type]
    with pytest.raises(InvalidAudioError, match="text mode"):
        load_audio(io.StringIO("RIFF"))  # type: ignore[arg-type]


def test_every_audio_error_is_a_value_error() -> None:
    for cls in (AudioDecodeError, EmptyAudioError, InvalidAudioError):
        assert issubclass(cls, AudioError) and issubclass(cls, ValueError)


# --- hostile input: nothing a file declares is trusted -------------------------


def wav_with_rate(rate: int, n: int = 30_000) -> bytes:
    """A 16-bit mono WAV whose header declares ``rate`` Hz (and a matching byte rate)."""
    raw = bytearray(wav_bytes(np.zeros(n, np.float32), SAMPLE_RATE, subtype="PCM_16"))
    raw[24:32] = rate.to_bytes(4, "little") + (2 * rate % 2**32).to_bytes(4, "little")
    return bytes(raw)


@pytest.mark.parametrize("rate", [1, 999, 1_000_001, 2**31 - 1])
def test_impossible_declared_rates_are_refused_before_decoding(
    rate: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(soxr, "ResampleStream", None)  # must never be reached
    with pytest.raises(AudioDecodeError, match=f"declares a sample rate of {rate} Hz") as err:
        load_audio(wav_with_rate(rate))
    assert "1000-1000000 Hz" in str(err.value)


def test_a_zero_rate_header_is_a_clean_error() -> None:
    raw = bytearray(wav_bytes(tone(440.0, SAMPLE_RATE), SAMPLE_RATE, format="AIFF"))
    at = raw.index(b"COMM") + 8 + 8  # the 80-bit sample rate of the COMM chunk
    raw[at : at + 10] = bytes(10)
    with pytest.raises(AudioError):
        load_audio(bytes(raw))


def test_length_is_checked_before_resampling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "long.wav"
    sf.write(path, tone(440.0, 8000, seconds=3.0), 8000, subtype="PCM_16")
    monkeypatch.setattr(soxr, "ResampleStream", None)  # refused before any resampling
    with pytest.raises(AudioTooLongError) as err:
        load_audio(path, max_seconds=2.5)
    assert (err.value.limit, err.value.rate, err.value.source) == (2.5, 8000, str(path))
    assert err.value.seconds == pytest.approx(3.0)
    assert "2.5 s" in str(err.value) and "qaudio transcribe" in str(err.value)
    monkeypatch.setattr(soxr, "resample", None)
    with pytest.raises(AudioTooLongError):
        load_audio(np.zeros(10 * 8000, np.float32), source_rate=8000, max_seconds=9.99)


def test_the_length_limit_is_configurable(tmp_path: Path) -> None:
    assert audio.MAX_SECONDS >= 330  # one full 8192-token context of audio fits
    long = np.zeros(int(audio.MAX_SECONDS * SAMPLE_RATE) + 1, np.float32)
    with pytest.raises(AudioTooLongError):
        load_audio(long, source_rate=SAMPLE_RATE)
    assert load_audio(long, source_rate=SAMPLE_RATE, max_seconds=None).shape == long.shape
    assert load_audio(long, source_rate=SAMPLE_RATE, max_seconds=3600).shape == long.shape
    exact = np.zeros(2 * SAMPLE_RATE, np.float32)
    assert load_audio(exact, source_rate=SAMPLE_RATE, max_seconds=2).shape == exact.shape
    for bad in (0, -1.0, float("nan"), float("inf"), "10", True):
        with pytest.raises(OptionError, match="max_seconds"):
            load_audio(exact, source_rate=SAMPLE_RATE, max_seconds=bad)  # type: ignore[arg-type]


def test_a_many_channel_header_reads_small_blocks(tmp_path: Path) -> None:
    data = (0.1 * np.ones((2000, 64))).astype(np.float32)
    path = tmp_path / "many.wav"
    sf.write(path, data, SAMPLE_RATE, subtype="FLOAT")
    clip = load_clip(path)
    assert clip.source_channels == 64
    np.testing.assert_allclose(clip.samples, 0.1, rtol=1e-6)


@pytest.mark.parametrize("peak", [3e38, 1e300, audio.MAX_PEAK * 2])
def test_absurdly_loud_samples_are_refused(tmp_path: Path, peak: float) -> None:
    data = np.zeros(1000, np.float64)
    data[500] = peak
    with pytest.raises(InvalidAudioError, match="far beyond full scale"):
        load_audio(data, source_rate=44100)
    if peak < 3.4e38:  # representable in a float WAV
        path = tmp_path / "loud.wav"
        sf.write(path, data.astype(np.float32), 44100, subtype="FLOAT")
        with pytest.raises(InvalidAudioError, match="far beyond full scale"):
            load_audio(path)


def test_loud_but_plausible_samples_resample_to_finite_values() -> None:
    rng = np.random.default_rng(1)
    data = (audio.MAX_PEAK * np.sign(rng.standard_normal(4410))).astype(np.float32)
    out = load_audio(data, source_rate=44100)
    assert np.isfinite(out).all()


def test_closed_file_objects_and_released_buffers(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    path.write_bytes(wav_bytes(tone(440.0, SAMPLE_RATE), SAMPLE_RATE))
    with path.open("rb") as fobj:
        pass
    with pytest.raises(InvalidAudioError, match="closed file object") as err:
        load_audio(fobj)
    assert err.value.source == str(path)
    closed = io.BytesIO(path.read_bytes())
    closed.close()
    with pytest.raises(InvalidAudioError, match="closed"):
        load_audio(closed)
    view = memoryview(path.read_bytes())
    view.release()
    with pytest.raises(InvalidAudioError, match="released"):
        load_audio(view)


def test_memoryviews_of_any_layout() -> None:
    raw = wav_bytes(tone(440.0, 22050), 22050)
    reference = load_audio(raw)
    strided = np.zeros(2 * len(raw), np.uint8)
    strided[::2] = np.frombuffer(raw, np.uint8)
    view = memoryview(strided[::2])
    assert not view.contiguous
    np.testing.assert_array_equal(load_audio(view), reference)
    padded = raw + bytes(-len(raw) % 4)
    as_floats = memoryview(np.frombuffer(padded, np.float32))  # format "f", not bytes
    np.testing.assert_array_equal(load_audio(as_floats)[: reference.size], reference)


def test_lists_and_numbers_as_samples() -> None:
    samples = [0.0, 0.25, -0.5, 0.125]
    np.testing.assert_array_equal(load_audio(samples, source_rate=SAMPLE_RATE), samples)  # type: ignore[arg-type]
    stereo = tuple((s, -s) for s in samples)
    assert load_clip(stereo, source_rate=SAMPLE_RATE).source_channels == 2  # type: ignore[arg-type]
    with pytest.raises(InvalidAudioError, match="rectangular"):
        load_audio([[0.1], [0.2, 0.3]], source_rate=SAMPLE_RATE)  # type: ignore[arg-type]
    with pytest.raises(InvalidAudioError, match="dtype"):
        load_audio(["a", "b"], source_rate=SAMPLE_RATE)  # type: ignore[arg-type]
    with pytest.raises(InvalidAudioError, match=r"shape \(\)"):
        load_audio(0.5, source_rate=SAMPLE_RATE)  # type: ignore[arg-type]
    with pytest.raises(InvalidAudioError, match="without source_rate"):
        load_audio(samples)  # type: ignore[arg-type]


def test_paths_that_are_not_utf8(tmp_path: Path) -> None:
    raw_dir = os.fsencode(tmp_path)
    name = os.path.join(raw_dir, b"clip-\xff\xfe.wav")
    with open(name, "wb") as out:
        out.write(wav_bytes(tone(440.0, SAMPLE_RATE), SAMPLE_RATE))
    path = os.fsdecode(name)  # holds surrogate escapes
    clip = load_clip(path)
    assert clip.samples.size == SAMPLE_RATE
    clip.source.encode("utf-8")  # printable
    with pytest.raises(AudioFileNotFoundError) as err:
        load_audio(os.fsdecode(os.path.join(raw_dir, b"gone-\xff.wav")))
    str(err.value).encode("utf-8")


def test_a_fifo_carrying_a_wav(tmp_path: Path) -> None:
    import threading

    raw = wav_bytes(tone(440.0, 44100, seconds=0.3), 44100)
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as out:
            out.write(raw)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        clip = load_clip(str(fifo))
    finally:
        writer.join(10)
    np.testing.assert_array_equal(clip.samples, load_audio(raw))
    assert clip.source == str(fifo)


def test_devices_are_read_with_a_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero here")
    monkeypatch.setattr(mpeg, "MAX_STREAM_BYTES", 1 << 20)
    monkeypatch.setattr(sources.open_source, "__defaults__", (1 << 20,))
    with pytest.raises(AudioTooLargeError, match="more than 1 MiB") as err:
        load_audio("/dev/zero")
    assert err.value.limit_bytes == 1 << 20
    with pytest.raises(EmptyAudioError, match="no bytes"):
        load_audio("/dev/null")


class _Stdin:
    """A stand-in for sys.stdin: a text stream whose .buffer holds ``data``."""

    def __init__(self, data: bytes, tty: bool = False) -> None:
        self.buffer = _Unseekable(data)
        self.buffer.isatty = lambda: tty  # type: ignore[method-assign]


def test_stdin_is_read_whole_with_a_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = wav_bytes(tone(440.0, 44100, seconds=0.3), 44100)
    monkeypatch.setattr("sys.stdin", _Stdin(raw))
    clip = load_clip(audio.read_stdin_audio())
    assert clip.source == "<stdin>"
    np.testing.assert_array_equal(clip.samples, load_audio(raw))
    monkeypatch.setattr("sys.stdin", _Stdin(raw))
    with pytest.raises(AudioTooLargeError, match="<stdin> holds more than 0 MiB"):
        audio.read_stdin_audio(max_bytes=len(raw) - 1)
    monkeypatch.setattr("sys.stdin", _Stdin(b""))
    with pytest.raises(EmptyAudioError, match="standard input holds no audio"):
        audio.read_stdin_audio()
    monkeypatch.setattr("sys.stdin", _Stdin(raw, tty=True))
    with pytest.raises(InvalidAudioError, match="nothing is piped in"):
        audio.read_stdin_audio()
    monkeypatch.setattr("sys.stdin", None)
    with pytest.raises(InvalidAudioError, match="no standard input"):
        audio.read_stdin_audio()


def test_unseekable_streams_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources.open_source, "__defaults__", (1000,))
    with pytest.raises(AudioTooLargeError):
        load_audio(_Unseekable(bytes(5000)))  # type: ignore[arg-type]


def mp3_without_tag(tmp_path: Path) -> bytes:
    """MP3 data that starts part-way into a frame: no ID3 tag, no sync at byte 0."""
    if "MP3" not in sf.available_formats():
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} was built without MP3 support")
    buf = io.BytesIO()
    sf.write(buf, tone(440.0, 44100, seconds=2.0), 44100, format="MP3")
    return buf.getvalue()[100:]


def test_mp3_without_id3_decodes_the_same_from_every_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = mp3_without_tag(tmp_path)
    assert not raw.startswith(b"ID3") and raw[:2] != b"\xff\xfb"
    path = tmp_path / "untagged.mp3"
    path.write_bytes(raw)
    reference = load_audio(path)
    assert reference.size > 0
    with path.open("rb") as fobj:
        from_file = load_audio(fobj)
    monkeypatch.setattr("sys.stdin", _Stdin(raw))
    from_stdin = load_audio(audio.read_stdin_audio())
    for out in (load_audio(raw), load_audio(io.BytesIO(raw)), from_file, from_stdin):
        np.testing.assert_array_equal(out, reference)
    before = set(os.listdir(tempfile.gettempdir()))
    load_audio(raw)
    assert not {n for n in set(os.listdir(tempfile.gettempdir())) - before if "qaudio" in n}


def test_data_that_only_resembles_mpeg_is_still_refused() -> None:
    junk = bytearray(np.random.default_rng(3).bytes(4000))
    junk[10:14] = b"\xff\xfb\x90\xc4"  # one plausible frame header, not followed by more
    with pytest.raises(AudioDecodeError, match="Format not recognised"):
        load_audio(bytes(junk))


def test_nothing_is_printed_and_no_warning_is_raised(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import warnings

    raw = wav_bytes(tone(440.0, 44100), 44100, subtype="FLOAT")
    bad = [raw[:60], raw[:44] + bytes(3), np.random.default_rng(0).bytes(3000)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for source in bad:
            with pytest.raises(AudioError):
                load_audio(source)
        for array in (np.full(10, 1e300), np.array([np.nan, 1.0]), np.full((4, 3), -np.inf)):
            with pytest.raises(AudioError):
                load_audio(array, source_rate=44100)
        load_audio(np.full(100, 1e9), source_rate=44100)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


@pytest.mark.parametrize("damage", ["magic", "encoding", "truncated-header"])
def test_a_damaged_file_is_read_alike_as_a_path_bytes_a_file_object_and_a_stream(
    tmp_path: Path, damage: str
) -> None:
    """libsndfile guesses a damaged header's format from a path's extension only: every
    form is now opened by content, so all of them refuse the same bytes (or all read them)."""
    from qaudio_local.audio.stream import AudioStream

    buf = io.BytesIO()
    sf.write(buf, np.zeros(8000, np.float32), 16000, format="AU", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    if damage == "magic":
        data[1] ^= 0x5F  # ".snd" no more
    elif damage == "encoding":
        data[12:16] = (99).to_bytes(4, "big")
    else:
        data = data[:20]
    path = tmp_path / "damaged.au"
    path.write_bytes(bytes(data))

    def outcome(call: Callable[[], object]) -> str:
        try:
            call()
        except AudioError as exc:
            return type(exc).__name__
        return "read"

    forms = {
        "path": outcome(lambda: load_audio(path)),
        "bytes": outcome(lambda: load_audio(bytes(data))),
        "file object": outcome(lambda: load_audio(io.BytesIO(bytes(data)))),
        "stream of the path": outcome(lambda: AudioStream(path).close()),
        "stream of the bytes": outcome(lambda: AudioStream(bytes(data)).close()),
    }
    assert set(forms.values()) == {"AudioDecodeError"}, forms
