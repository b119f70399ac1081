"""Where ``qaudio listen``'s audio comes from: chunks of exact sizes whose concatenation
is the (resampled) recording, real-time pacing, and the microphone through a stand-in for
sounddevice that calls the very callback PortAudio would call; the clean error when
sounddevice or PortAudio is missing."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import soxr

from qaudio_local.cli.listen_audio import (
    Chunker,
    FileSource,
    MicrophoneSource,
    chunk_samples,
    input_devices,
    pcm16,
)
from qaudio_local.errors import AudioDeviceError, AudioFileNotFoundError
from tests.support.audio import clip

ROOT = Path(__file__).resolve().parents[1]


def _collect(source: Any, stop: threading.Event | None = None) -> list[bytes]:
    return list(source.chunks(stop or threading.Event()))


def _pcm_file(tmp_path: Path, seconds: float = 1.3, rate: int = 16000) -> Path:
    path = tmp_path / f"rec-{rate}.wav"
    x = np.random.default_rng(1).uniform(-0.5, 0.5, int(seconds * rate)).astype(np.float32)
    sf.write(path, x, rate, subtype="PCM_16")
    return path


def test_pcm16_is_little_endian_and_round_trips_a_pcm_file(tmp_path: Path) -> None:
    assert pcm16(np.array([0.0, 1.0, -1.0, 0.5, 2.0], np.float32)) == (
        b"\x00\x00\xff\x7f\x00\x80\x00\x40\xff\x7f"
    )
    path = _pcm_file(tmp_path)
    raw, _ = sf.read(path, dtype="int16")
    assert pcm16(sf.read(path, dtype="float32")[0]) == raw.astype("<i2").tobytes()


@pytest.mark.parametrize("chunk_ms", [20, 40, 100])
def test_chunks_of_a_16khz_file_are_exactly_the_file(tmp_path: Path, chunk_ms: int) -> None:
    path = _pcm_file(tmp_path)
    chunks = _collect(FileSource(path, "rec", rate=16000, chunk_ms=chunk_ms, speed=0))
    size = 2 * chunk_samples(16000, chunk_ms)
    assert {len(c) for c in chunks[:-1]} == {size} and 0 < len(chunks[-1]) <= size
    raw, _ = sf.read(path, dtype="int16")
    assert b"".join(chunks) == raw.astype("<i2").tobytes()  # every sample, unchanged


def test_chunks_at_24khz_are_the_file_resampled(tmp_path: Path) -> None:
    path = _pcm_file(tmp_path)
    chunks = _collect(FileSource(path, "rec", rate=24000, chunk_ms=40, speed=0))
    assert {len(c) for c in chunks[:-1]} == {2 * 960}
    x16 = sf.read(path, dtype="float32")[0]
    expected = pcm16(soxr.resample(x16, 16000, 24000, quality="HQ"))
    assert b"".join(chunks) == expected and len(expected) == 2 * int(1.3 * 24000)


def test_any_file_is_read_as_qaudio_transcribe_reads_it(tmp_path: Path) -> None:
    """A 44.1 kHz stereo FLAC: the same 16 kHz samples as the long-form reader's."""
    from qaudio_local.audio.stream import read_range

    path = tmp_path / "stereo.flac"
    a, b = clip("a"), clip("b")
    n = min(len(a), len(b))
    x = np.stack([a[:n], b[:n]], axis=1)
    sf.write(path, soxr.resample(x, 16000, 44100), 44100)
    chunks = _collect(FileSource(path, "stereo", rate=16000, chunk_ms=50, speed=0))
    assert b"".join(chunks) == pcm16(read_range(path, 0, 1 << 40))


def test_a_missing_file_fails_before_anything_is_sent(tmp_path: Path) -> None:
    with pytest.raises(AudioFileNotFoundError):
        FileSource(tmp_path / "nope.wav", "nope", rate=16000)


def test_real_time_pacing_takes_about_the_duration(tmp_path: Path) -> None:
    path = _pcm_file(tmp_path, seconds=1.0)
    for speed, low, high in ((1.0, 0.9, 3.0), (4.0, 0.2, 1.5), (0.0, 0.0, 0.5)):
        source = FileSource(path, "rec", rate=16000, chunk_ms=40, speed=speed)
        t0 = time.monotonic()
        stamps = [time.monotonic() - t0 for _ in source.chunks(threading.Event())]
        took = time.monotonic() - t0
        assert low <= took <= high, (speed, took)
        if speed == 1.0:  # each chunk once it "was recorded": about 40 ms apart, not at once
            assert stamps[len(stamps) // 2] >= 0.4
            assert source.started_at is not None


def test_stop_ends_the_file_early(tmp_path: Path) -> None:
    path = _pcm_file(tmp_path, seconds=5.0)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    chunks = _collect(FileSource(path, "rec", rate=16000, chunk_ms=40, speed=1), stop)
    assert time.monotonic() - t0 < 2.0 and 3 <= len(chunks) < 40


def test_the_chunker_keeps_every_sample_across_blocks() -> None:
    chunker = Chunker(7)
    x = np.linspace(-0.9, 0.9, 100, dtype=np.float32)
    out = [c for i in range(0, 100, 13) for c in chunker.push(x[i : i + 13])]
    out += list(chunker.flush())
    assert [len(c) for c in out] == [14] * 14 + [4] and b"".join(out) == pcm16(x)


# --- the microphone, through a stand-in for sounddevice -------------------------------------


class FakeSoundDevice:
    """What MicrophoneSource uses of sounddevice: ``query_devices``, ``default.device`` and
    an ``InputStream`` whose thread calls ``callback(indata, frames, time, status)`` as
    PortAudio does: ``indata`` float32 of shape (frames, channels), a block at a time."""

    class default:  # noqa: N801 (sounddevice's name)
        device = (1, 3)

    def __init__(self, signal: np.ndarray, rate: int = 48000, overflow_at: int = -1) -> None:
        self.signal, self.rate, self.overflow_at = signal, rate, overflow_at
        self.streams: list[Any] = []
        self.fed = threading.Event()

    def query_devices(self, device: Any = None, kind: str | None = None) -> Any:
        devices = [
            {"name": "HDMI", "max_input_channels": 0, "default_samplerate": 48000.0},
            {"name": "USB mic", "max_input_channels": 1, "default_samplerate": float(self.rate)},
            {"name": "Webcam", "max_input_channels": 2, "default_samplerate": 16000.0},
        ]
        if device is None and kind is None:
            return devices
        index = self.default.device[0] if device is None else device
        if not isinstance(index, int) or not 0 <= index < 3 or index == 0:
            raise ValueError(f"No input device matching {device!r}")
        return devices[index]

    def InputStream(self, **kwargs: Any) -> Any:  # noqa: N802 (sounddevice's name)
        fake = self

        class Stream:
            active = False

            def start(self) -> None:
                self.active = True
                self.thread = threading.Thread(target=self.feed, daemon=True)
                self.thread.start()

            def feed(self) -> None:
                n, callback = kwargs["blocksize"], kwargs["callback"]
                for i, pos in enumerate(range(0, len(fake.signal), n)):
                    block = fake.signal[pos : pos + n].reshape(-1, 1).astype(np.float32)
                    status = "input overflow" if i == fake.overflow_at else ""
                    callback(block, len(block), None, status)
                fake.fed.set()

            def stop(self) -> None:
                self.active = False

            def close(self) -> None:
                pass

        stream = Stream()
        self.streams.append((kwargs, stream))
        return stream


def test_the_microphone_seam_resamples_and_chunks_what_portaudio_hands_over() -> None:
    signal = np.sin(np.arange(48000 * 1.5) * 2 * np.pi * 440 / 48000).astype(np.float32) * 0.3
    sd = FakeSoundDevice(signal, overflow_at=3)
    mic = MicrophoneSource(rate=16000, chunk_ms=40, sd=sd)
    assert mic.description == "microphone 'USB mic' (48000 Hz)"
    stop = threading.Event()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(mic.chunks(stop)))
    reader.start()
    assert sd.fed.wait(10)
    stop.set()
    reader.join(10)
    kwargs, stream = sd.streams[0]
    assert kwargs["samplerate"] == 48000 and kwargs["channels"] == 1
    assert kwargs["blocksize"] == 1920 and kwargs["dtype"] == "float32"
    assert kwargs["callback"] == mic.callback and not stream.active  # closed at the end
    assert {len(c) for c in got[:-1]} == {1280} and mic.overflows == 1 and mic.dropped == 0
    assert b"".join(got) == pcm16(soxr.resample(signal, 48000, 16000, quality="HQ"))


def test_a_full_queue_drops_and_counts_instead_of_blocking_portaudio() -> None:
    mic = MicrophoneSource(rate=16000, chunk_ms=100, sd=FakeSoundDevice(np.zeros(0)))
    block = np.zeros((4800, 1), np.float32)
    for _ in range(400):  # 40 s of callbacks that nobody reads
        mic.callback(block, 4800, None, "")
    assert mic.dropped == 100 * 4800


def test_devices_are_listed_and_a_wrong_one_is_named() -> None:
    sd = FakeSoundDevice(np.zeros(0))
    devices = input_devices(sd)
    assert [(d.index, d.name, d.default) for d in devices] == [
        (1, "USB mic", True),
        (2, "Webcam", False),
    ]
    with pytest.raises(AudioDeviceError, match="no input device 7") as info:
        MicrophoneSource(rate=16000, device=7, sd=sd)
    assert "--list-devices" in str(info.value) and info.value.device == "7"


def _qaudio(args: list[str], env_path: str | None = None, prelude: str = "") -> Any:
    code = f"import sys\n{prelude}\nfrom qaudio_local.cli import main\nmain({args!r})\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [env_path, str(ROOT)]))}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize("args", [["listen", "--list-devices"], ["listen", "--server", "h:1"]])
def test_without_sounddevice_the_error_says_what_to_install(args: list[str]) -> None:
    result = _qaudio(args, prelude="sys.modules['sounddevice'] = None")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("error: the microphone needs the sounddevice package")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "pip install 'qaudio-local[mic]'" in result.stderr
    assert "libportaudio2" in result.stderr and "brew install portaudio" in result.stderr
    assert "--input FILE" in result.stderr


def test_without_portaudio_the_error_names_the_system_package(tmp_path: Path) -> None:
    """sounddevice raises OSError at import when it finds no PortAudio library."""
    (tmp_path / "sounddevice.py").write_text('raise OSError("PortAudio library not found")\n')
    result = _qaudio(["listen", "--list-devices"], env_path=str(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(
        "error: the microphone needs the PortAudio library, which was not found "
        "(PortAudio library not found): "
    )
    assert "sudo apt install libportaudio2" in result.stderr and result.stderr.count("\n") == 1
