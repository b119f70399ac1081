"""Where ``qaudio listen``'s audio comes from: a file paced at real time, or the microphone.

Both are an :class:`InputSource`: PCM16 little-endian mono chunks of ``chunk_ms``
milliseconds (20-100) at the session's rate, in order, until the input ends or ``stop``
is set. The concatenated chunks are exactly the audio (the last chunk holds what remains).

- :class:`FileSource` reads any file the front end reads (:class:`~..audio.stream.AudioStream`:
  the same 16 kHz samples ``qaudio transcribe`` reads, in flat memory), resamples to 24 kHz
  when the session asks for it, and sends each chunk when it would have been recorded
  (``speed`` 1: real time; 0: as fast as possible; 2: twice real time).
- :class:`MicrophoneSource` records through sounddevice (PortAudio). PortAudio calls
  :meth:`MicrophoneSource.callback` on its own thread with ``(indata, frames, time,
  status)``; the callback only queues a copy; :meth:`~MicrophoneSource.chunks` resamples
  from the device's rate and cuts the chunks. The sounddevice module is a parameter, so a
  test can stand in for PortAudio and drive that same callback.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..config import SAMPLE_RATE
from ..errors import AudioDeviceError

CHUNK_MS = 40  # default chunk: 40 ms (640 samples at 16 kHz, 960 at 24 kHz)
CHUNK_MS_RANGE = (20, 100)  # what OpenAI's guides use; each chunk is one WebSocket message
MIC_QUEUE_SECONDS = 30.0  # recorded audio held while the network stalls; older is dropped
PCM_SCALE = 32768.0  # int16 <-> float as libsndfile reads PCM_16: k / 32768, so files round-trip
MIC_INSTALL = (
    "`pip install 'qaudio-local[mic]'` and the PortAudio library (Debian/Ubuntu: `sudo apt "
    "install libportaudio2`; Fedora: `sudo dnf install portaudio`; macOS: `brew install "
    "portaudio`); or read a recording with --input FILE"
)


def pcm16(samples: np.ndarray) -> bytes:
    """Float samples as PCM16 little-endian bytes (rounded, clipped to the int16 range)."""
    scaled = np.clip(np.rint(np.asarray(samples, np.float64) * PCM_SCALE), -32768, 32767)
    return scaled.astype("<i2").tobytes()


def chunk_samples(rate: int, chunk_ms: int) -> int:
    """Samples in one chunk of ``chunk_ms`` at ``rate`` (640 for 40 ms at 16 kHz)."""
    return rate * chunk_ms // 1000


class Chunker:
    """Cuts a stream of float blocks into PCM16 chunks of exactly ``size`` samples."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._held = np.zeros(0, np.float32)

    def push(self, block: np.ndarray) -> Iterator[bytes]:
        data = np.concatenate([self._held, np.asarray(block, np.float32).ravel()])
        n = data.size - data.size % self.size
        for i in range(0, n, self.size):
            yield pcm16(data[i : i + self.size])
        self._held = data[n:]

    def flush(self) -> Iterator[bytes]:
        """What remains (fewer than ``size`` samples), if anything."""
        if self._held.size:
            yield pcm16(self._held)
        self._held = np.zeros(0, np.float32)


class Resampler:
    """soxr's streaming resampler (exact timing across blocks), or nothing at equal rates."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self._stream = None
        if rate_in != rate_out:
            import soxr

            from ..audio.limits import RESAMPLE_QUALITY

            self._stream = soxr.ResampleStream(
                rate_in, rate_out, 1, dtype="float32", quality=RESAMPLE_QUALITY
            )

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return block
        return self._stream.resample_chunk(np.asarray(block, np.float32), last=last)


class InputSource(Protocol):
    """Audio for a live session (see the module's docstring)."""

    rate: int
    chunk_ms: int
    name: str  # in messages and as the transcript's default file name
    description: str  # what is being read, for the first line on stderr
    started_at: float | None  # time.monotonic() of the first chunk's first sample

    def chunks(self, stop: threading.Event) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class FileSource:
    """A recording, sent as if it were being recorded now.

    Raises:
        AudioError: The file is missing or cannot be read (the front end's errors).

    Args:
        source: A path, or a whole file's bytes (standard input).
        name: How it is named (its path, or ``"stdin"``).
        rate: The session's rate (16000 or 24000).
        chunk_ms: Milliseconds per chunk.
        speed: 1 real time, 0 as fast as possible, other factors scale the pace.
    """

    def __init__(
        self, source: Any, name: str, *, rate: int, chunk_ms: int = CHUNK_MS, speed: float = 1.0
    ) -> None:
        from ..audio.stream import AudioStream

        self.name, self.rate, self.chunk_ms, self.speed = name, rate, chunk_ms, speed
        self._stream = AudioStream(source)  # a missing or unreadable file fails here, at once
        pace = "as fast as possible" if speed == 0 else f"at {speed:g}x real time"
        self.description = f"{name}, {pace}"
        self.started_at: float | None = None

    def chunks(self, stop: threading.Event) -> Iterator[bytes]:
        """The file's chunks, each when its last sample would have been recorded.

        Raises:
            AudioError: The file cannot be read part way (the front end's errors).
        """
        size = chunk_samples(self.rate, self.chunk_ms)
        chunker, resample = Chunker(size), Resampler(SAMPLE_RATE, self.rate)
        sent = 0
        with self._stream as stream:
            for block in _blocks(stream, resample):
                for chunk in chunker.push(block):
                    sent += len(chunk) // 2
                    if not self._wait(sent / self.rate, stop):
                        return
                    yield chunk
        for chunk in chunker.flush():
            sent += len(chunk) // 2
            if self._wait(sent / self.rate, stop):
                yield chunk

    def _wait(self, audio_s: float, stop: threading.Event) -> bool:
        """Sleep until ``audio_s`` seconds of the file have "been recorded"; False: stop."""
        now = time.monotonic()
        if self.started_at is None:
            self.started_at = now
        if self.speed > 0:
            delay = self.started_at + audio_s / self.speed - now
            if delay > 0:
                stop.wait(delay)
        return not stop.is_set()

    def close(self) -> None:
        self._stream.close()


def _blocks(stream: Any, resample: Resampler) -> Iterator[np.ndarray]:
    for block in stream.blocks(seconds=1.0):  # small blocks: the first chunk goes out at once
        yield resample(block)
    yield resample(np.zeros(0, np.float32), last=True)


def import_sounddevice() -> Any:
    """The sounddevice module, or an error that says what to install.

    Raises:
        AudioDeviceError: sounddevice is not installed, or PortAudio is missing (sounddevice
            raises OSError when it cannot load the library).
    """
    try:
        import sounddevice
    except ImportError as exc:
        raise AudioDeviceError(
            f"the microphone needs the sounddevice package, which is not installed: {MIC_INSTALL}"
        ) from exc
    except OSError as exc:
        raise AudioDeviceError(
            f"the microphone needs the PortAudio library, which was not found ({exc}): "
            f"{MIC_INSTALL}"
        ) from exc
    return sounddevice


@dataclass(frozen=True)
class InputDevice:
    """A device that records: PortAudio's index, name, channels and default rate."""

    index: int
    name: str
    channels: int
    rate: int
    default: bool


def input_devices(sd: Any) -> list[InputDevice]:
    """The devices that can record, from sounddevice's ``query_devices()``."""
    try:
        default = sd.default.device[0]
        found = sd.query_devices()
    except Exception as exc:
        raise AudioDeviceError(f"the audio devices could not be listed: {exc}") from exc
    return [
        InputDevice(i, str(d["name"]), int(d["max_input_channels"]), int(rate), i == default)
        for i, d in enumerate(found)
        if (rate := d["default_samplerate"]) is not None
        if int(d["max_input_channels"]) > 0
    ]


class MicrophoneSource:
    """The default (or a chosen) microphone, through sounddevice.

    Args:
        rate: The session's rate; the device records at its own default rate and the
            chunks are resampled.
        chunk_ms: Milliseconds per chunk (and per PortAudio block).
        device: PortAudio's index or a part of the device's name; ``None``: the default.
        sd: The sounddevice module (``None``: import it; a test passes a stand-in).
    """

    def __init__(
        self,
        *,
        rate: int,
        chunk_ms: int = CHUNK_MS,
        device: int | str | None = None,
        sd: Any = None,
    ) -> None:
        self.rate, self.chunk_ms, self.device = rate, chunk_ms, device
        self.sd = sd if sd is not None else import_sounddevice()
        self.started_at: float | None = None
        self.dropped = 0  # samples the queue had no room for (the network stalled)
        self.overflows = 0  # blocks PortAudio flagged (input overflow: the machine was busy)
        self._stream: Any = None
        try:
            info = self.sd.query_devices(device, "input")
        except Exception as exc:  # ValueError for no such device, PortAudioError
            raise AudioDeviceError(
                f"no input device {device if device is not None else '(default)'}: {exc}; "
                "`qaudio listen --list-devices` lists the microphones",
                device=None if device is None else str(device),
            ) from exc
        self.device_rate = int(info["default_samplerate"])
        self.name = "microphone"
        self.description = f"microphone {info['name']!r} ({self.device_rate} Hz)"
        blocks = int(MIC_QUEUE_SECONDS * 1000 / chunk_ms)
        self._queue: queue.Queue[np.ndarray] = queue.Queue(maxsize=blocks)

    def callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's callback (its thread): queue a mono copy, never block."""
        if status:
            self.overflows += 1
        if self.started_at is None:
            self.started_at = time.monotonic() - frames / self.device_rate
        try:
            self._queue.put_nowait(np.array(indata[:, 0], dtype=np.float32))
        except queue.Full:
            self.dropped += frames

    def start(self) -> None:
        """Open and start the input stream.

        Raises:
            AudioDeviceError: PortAudio cannot open the device.
        """
        if self._stream is not None:
            return
        try:
            self._stream = self.sd.InputStream(
                samplerate=self.device_rate,
                blocksize=chunk_samples(self.device_rate, self.chunk_ms),
                device=self.device,
                channels=1,
                dtype="float32",
                callback=self.callback,
            )
            self._stream.start()
        except Exception as exc:
            self._stream = None
            raise AudioDeviceError(
                f"the microphone could not be opened: {exc}; `qaudio listen --list-devices` "
                "lists the devices, --device N picks one",
                device=None if self.device is None else str(self.device),
            ) from exc

    def chunks(self, stop: threading.Event) -> Iterator[bytes]:
        """Chunks as they are recorded, until ``stop`` is set (then what was recorded)."""
        self.start()
        chunker = Chunker(chunk_samples(self.rate, self.chunk_ms))
        resample = Resampler(self.device_rate, self.rate)
        while not stop.is_set():
            try:
                block = self._queue.get(timeout=0.05)
            except queue.Empty:
                if not self._stream.active:
                    raise AudioDeviceError("the microphone stopped recording") from None
                continue
            yield from chunker.push(resample(block))
        self.close()
        while not self._queue.empty():
            yield from chunker.push(resample(self._queue.get_nowait()))
        yield from chunker.push(resample(np.zeros(0, np.float32), last=True))
        yield from chunker.flush()

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
                stream.close()
            except Exception:  # the device went away: nothing left to release
                pass
