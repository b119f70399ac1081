"""Audio fuzz cases: encoded files with damaged headers and bytes, absurd rates and
lengths, hostile arrays, and every input form (paths, bytes, file objects, memoryviews,
arrays, FIFOs, stdin), each fed to :func:`qaudio_local.audio.load_clip`."""

from __future__ import annotations

import io
import math
import os
import struct
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from qaudio_dev.fuzz.common import classify_exception, pick_one


def _tone(rng: np.random.Generator, rate: int, seconds: float, channels: int) -> np.ndarray:
    n = max(0, int(rate * seconds))
    t = np.arange(n) / rate
    x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 3000) * t)[:, None]
    return (x + 0.01 * rng.standard_normal((n, channels))).astype(np.float32)


_FORMATS = [
    ("WAV", "PCM_16", ".wav"),
    ("WAV", "PCM_24", ".wav"),
    ("WAV", "FLOAT", ".wav"),
    ("WAV", "DOUBLE", ".wav"),
    ("WAV", "ULAW", ".wav"),
    ("FLAC", "PCM_16", ".flac"),
    ("OGG", "VORBIS", ".ogg"),
    ("OGG", "OPUS", ".opus"),
    ("MP3", "MPEG_LAYER_III", ".mp3"),
    ("AIFF", "PCM_16", ".aiff"),
    ("AU", "PCM_16", ".au"),
    ("W64", "PCM_16", ".w64"),
    ("CAF", "PCM_16", ".caf"),
]
_RATES = [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 96000]


def _encoded(rng: np.random.Generator) -> tuple[bytes, str]:
    import soundfile as sf

    fmt, subtype, ext = _FORMATS[rng.integers(len(_FORMATS))]
    rate = 48000 if subtype == "OPUS" else int(pick_one(rng, _RATES))
    if fmt == "MP3":
        rate = int(pick_one(rng, [8000, 16000, 22050, 32000, 44100, 48000]))
    channels = int(pick_one(rng, [1, 1, 2, 2, 3, 6]))
    if fmt == "MP3":
        channels = min(channels, 2)
    data = _tone(rng, rate, float(pick_one(rng, [0.0, 0.01, 0.3, 1.0, 2.5])), channels)
    buf = io.BytesIO()
    try:
        sf.write(buf, data, rate, format=fmt, subtype=subtype)
    except Exception:  # an empty clip some encoders refuse: use a plain WAV
        buf = io.BytesIO()
        sf.write(buf, data, rate, format="WAV", subtype="PCM_16")
        ext = ".wav"
    return buf.getvalue(), ext


def _mutate_bytes(rng: np.random.Generator, raw: bytes) -> bytes:
    b = bytearray(raw)
    op = rng.integers(8)
    if not b:
        return bytes(b)
    if op == 0:  # truncate
        return bytes(b[: int(rng.integers(0, len(b)))])
    if op == 1:  # flip a few bytes, biased to the header
        for _ in range(int(rng.integers(1, 8))):
            i = int(rng.integers(0, min(len(b), 256) if rng.random() < 0.7 else len(b)))
            b[i] ^= int(rng.integers(1, 256))
        return bytes(b)
    if op == 2:  # zero a region
        i = int(rng.integers(0, len(b)))
        b[i : i + int(rng.integers(1, 512))] = bytes(len(b[i : i + 512]))[: len(b[i:])]
        return bytes(b)
    if op == 3:  # insert junk
        i = int(rng.integers(0, len(b)))
        return bytes(b[:i] + rng.bytes(int(rng.integers(1, 64))) + b[i:])
    if op == 4:  # drop the head (no magic, no tag)
        return bytes(b[int(rng.integers(1, min(len(b), 600))) :])
    if op == 5:  # prefix junk
        return rng.bytes(int(rng.integers(1, 300))) + bytes(b)
    if op == 6:  # overwrite a 32-bit field in the header with a hostile number
        i = int(rng.integers(0, max(1, min(len(b) - 4, 80))))
        b[i : i + 4] = struct.pack("<I", int(pick_one(rng, [0, 1, 2**31 - 1, 2**32 - 1, 48000])))
        return bytes(b)
    return bytes(b)  # unchanged


def _wav_header_case(rng: np.random.Generator) -> bytes:
    """A WAV whose header fields are hostile numbers."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, _tone(rng, 16000, 0.5, 1), 16000, format="WAV", subtype="PCM_16")
    b = bytearray(buf.getvalue())
    hostile = [0, 1, 2, 7, 999, 1000, 8000, 1_000_001, 2**31 - 1, 2**32 - 1]
    field = rng.integers(6)
    if field == 0:  # sample rate (and byte rate)
        rate = int(pick_one(rng, hostile))
        b[24:28] = struct.pack("<I", rate)
        b[28:32] = struct.pack("<I", 2 * rate % 2**32)
    elif field == 1:  # channels
        b[22:24] = struct.pack("<H", int(pick_one(rng, [0, 2, 64, 1024, 1025, 65535])))
    elif field == 2:  # bits per sample
        b[34:36] = struct.pack("<H", int(pick_one(rng, [0, 1, 7, 12, 24, 32, 33, 64, 65535])))
    elif field == 3:  # data chunk size
        b[40:44] = struct.pack("<I", int(pick_one(rng, [0, 1, 3, 2**31, 2**32 - 1])))
    elif field == 4:  # fmt chunk size
        b[16:20] = struct.pack("<I", int(pick_one(rng, [0, 2, 15, 100, 2**32 - 1])))
    else:  # format tag
        b[20:22] = struct.pack("<H", int(pick_one(rng, [0, 2, 3, 6, 0xFFFE, 0x55])))
    return bytes(b)


def _aiff_rate_case(rng: np.random.Generator) -> bytes:
    """An AIFF whose 80-bit sample rate is 0, tiny, huge or not a number."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, _tone(rng, 16000, 0.3, 1), 16000, format="AIFF", subtype="PCM_16")
    b = bytearray(buf.getvalue())
    at = b.index(b"COMM") + 16
    exp = int(pick_one(rng, [0, 1, 0x3FFF, 0x401E, 0x403E, 0x7FFE, 0x7FFF]))
    mant = int(pick_one(rng, [0, 1 << 63, (1 << 64) - 1, 0xFA00000000000000]))
    b[at : at + 10] = struct.pack(">HQ", exp, mant)
    return bytes(b)


def _hostile_array(rng: np.random.Generator) -> tuple[Any, dict[str, Any]]:
    dtype = pick_one(rng, ["float32", "float64", "float16", "int16", "int32", "uint8", "int8",
                        "int64", "complex64", "bool", "object", ">f4", "<U4"])  # fmt: skip
    shape_kind = rng.integers(7)
    n = int(pick_one(rng, [0, 1, 2, 3, 100, 16000, 44100]))
    shapes = [(n,), (n, 2), (2, n), (n, 1), (1, n), (3, 2, n), ()]
    shape = shapes[shape_kind]
    scale = float(pick_one(rng, [0.0, 1e-30, 0.5, 1.0, 4e4, 2**31, 1e38]))
    x = np.array(rng.standard_normal(shape) * scale, ndmin=0)  # an ndarray, even 0-D
    poison = rng.integers(5)
    if x.size and poison == 1:
        x.flat[int(rng.integers(x.size))] = np.nan
    elif x.size and poison == 2:
        x.flat[int(rng.integers(x.size))] = -np.inf
    elif x.size and poison == 3:
        x.flat[int(rng.integers(x.size))] = 1e300
    with np.errstate(all="ignore"):
        try:
            arr: Any = np.asarray(x.astype(str(dtype)))
        except (TypeError, ValueError):
            arr = x
    layout = rng.integers(5)
    if layout == 1 and arr.ndim:
        arr = arr[::2]
    elif layout == 2 and arr.ndim == 2:
        arr = np.asfortranarray(arr)
    elif layout == 3:
        arr = arr.tolist() if rng.random() < 0.5 else (float(x.flat[0]) if x.size else 0.5)
    elif layout == 4 and isinstance(arr, np.ndarray):
        arr.flags.writeable = False
    rates: list[Any] = [0, -1, 1, 999, 1000, 8000, 16000, 44100, 48000, 1_000_000]
    rates += [1_000_001, 2**48, 44100.0, 44100.5, np.float32(22050), "16000", None, True]
    kwargs: dict[str, Any] = {"source_rate": rates[int(rng.integers(len(rates)))]}
    if rng.random() < 0.3:
        kwargs["sample_rate"] = [8000, 16000, 48000, 0, 7, 2**40][int(rng.integers(6))]
    if rng.random() < 0.3:
        ms: list[Any] = [None, 0, -1, 1e-9, 0.001, 0.5, 600, math.nan, math.inf, "5"]
        kwargs["max_seconds"] = ms[int(rng.integers(len(ms)))]
    return arr, kwargs


class _Unseekable(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._inner.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def _as_form(rng: np.random.Generator, raw: bytes, ext: str, tmp: Path) -> Any:
    """``raw`` handed over as a path, bytes, a buffer or a file object."""
    form = int(rng.integers(8))
    if form == 0:
        path = tmp / f"clip{ext}"
        path.write_bytes(raw)
        return str(path)
    if form == 1:
        return raw
    if form == 2:
        return bytearray(raw)
    if form == 3:
        strided = np.zeros(2 * len(raw), np.uint8)
        strided[::2] = np.frombuffer(raw, np.uint8)
        return memoryview(strided[::2])  # type: ignore[arg-type]  # numpy arrays are buffers
    if form == 4:
        return io.BytesIO(raw)
    if form == 5:
        return _Unseekable(raw)
    if form == 6:
        path = tmp / f"clip{ext}"
        path.write_bytes(raw)
        return open(path, "rb")  # noqa: SIM115 - closed with the child
    return memoryview(raw)


def _odd_form(rng: np.random.Generator, raw: bytes, tmp: Path) -> Any:
    """A valid WAV (or nothing) behind an unusual kind of source."""
    kind = int(rng.integers(12))
    path = tmp / "clip.wav"
    path.write_bytes(raw)
    if kind == 0:
        f = open(path, "rb")  # noqa: SIM115
        f.close()
        return f
    if kind == 1:
        return open(path, encoding="latin-1")  # noqa: SIM115 - text mode
    if kind == 2:
        return io.StringIO("RIFF")
    if kind == 3:
        view = memoryview(raw)
        view.release()
        return view
    if kind == 4:
        fifo = tmp / "pipe.wav"
        os.mkfifo(fifo)
        threading.Thread(target=lambda: fifo.write_bytes(raw), daemon=True).start()
        return str(fifo)
    if kind == 5:
        return "/dev/null"
    if kind == 6:
        return "/dev/zero"
    if kind == 7:
        return str(tmp)
    if kind == 8:
        return str(tmp / "missing.wav")
    if kind == 9:
        weird = os.path.join(os.fsencode(tmp), b"clip-\xff\xfe.wav")
        with open(weird, "wb") as out:
            out.write(raw)
        return os.fsdecode(weird)
    if kind == 10:
        return str(path) + "\0.wav"
    empty = tmp / "empty.wav"
    empty.touch()
    return str(empty)


def _audio_input(case: dict[str, Any], tmp: Path) -> tuple[Any, dict[str, Any]]:
    rng = np.random.default_rng(case["seed"])
    family = case["family"]
    if family == "encoded":
        raw, ext = _encoded(rng)
        if rng.random() < 0.8:
            raw = _mutate_bytes(rng, raw)
        return _as_form(rng, raw, ext, tmp), {}
    if family == "header":
        raw = _wav_header_case(rng) if rng.random() < 0.7 else _aiff_rate_case(rng)
        return _as_form(rng, raw, ".wav", tmp), {}
    if family == "array":
        return _hostile_array(rng)
    raw, _ = _encoded(rng)
    if family == "form":
        return _odd_form(rng, raw, tmp), {}
    return _stdin_source(rng, raw, tmp), {}


def _stdin_source(rng: np.random.Generator, raw: bytes, tmp: Path) -> Any:
    """Standard input as ``qaudio run -`` reads it: fd 0 is a pipe (or a device) here."""

    from qaudio_local.audio import read_stdin_audio

    kind = int(rng.integers(5))
    if kind == 3:
        data_path = "/dev/zero"
    else:
        chosen = raw if kind < 2 else (b"" if kind == 3 else _mutate_bytes(rng, raw))
        data_path = str(tmp / "stdin.bin")
        Path(data_path).write_bytes(chosen)
    fd = os.open(data_path, os.O_RDONLY)
    os.dup2(fd, 0)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - fd 0, as at start-up
    return read_stdin_audio()


def run_audio(case: dict[str, Any]) -> dict[str, Any]:
    from qaudio_local.audio import load_clip
    from qaudio_local.audio.native_stderr import quiet_c_stderr  # noqa: F401 - what it uses

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        limit = 600.0
        try:
            source, kwargs = _audio_input(case, tmp)
        except BaseException as exc:  # the library was not called: the harness is at fault
            if type(exc).__module__.startswith("qaudio_local"):  # read_stdin_audio refused
                return classify_exception(exc)
            return {"outcome": "foreign", "detail": f"harness: {type(exc).__name__}: {exc}"}
        try:
            clip = load_clip(source, **kwargs)
        except BaseException as exc:
            return classify_exception(exc)
        if isinstance(kwargs.get("max_seconds"), float | int) and not isinstance(
            kwargs.get("max_seconds"), bool
        ):
            limit = float(kwargs["max_seconds"])
        elif "max_seconds" in kwargs and kwargs["max_seconds"] is None:
            limit = math.inf
        x = clip.samples
        rate = clip.sample_rate
        if not (
            isinstance(x, np.ndarray)
            and x.ndim == 1
            and x.dtype == np.float32
            and x.size > 0
            and np.isfinite(x).all()
            and x.size <= limit * rate + 1
        ):
            return {"outcome": "wrong", "detail": f"bad samples {getattr(x, 'shape', '?')}"}
        return {"outcome": "accepted", "detail": f"{x.size} samples"}
