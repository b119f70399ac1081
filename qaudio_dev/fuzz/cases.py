"""Fuzz cases: audio inputs, GGUF pairs and command lines as a hostile user writes them.

Each case is a small dict; its input is rebuilt from ``seed`` inside the child that runs it
(:mod:`qaudio_dev.fuzz.harness`), so a failing case is reproduced with
``python scripts/fuzz.py --only KIND:FAMILY:SEED``. The generators are this project's own
(seeded numpy), not a fuzzing library: they know where the dangerous numbers are (declared
rates, counts, lengths, hyper-parameters) and aim there.
"""

from __future__ import annotations

import io
import math
import os
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
AUDIO_FAMILIES = ("encoded", "header", "array", "form", "stdin")
GGUF_FAMILIES = ("valid", "truncate", "flip", "metadata", "tensor", "count", "token")
CLI_FAMILIES = ("numbers",)


def cases(kind: str, n: int, *, seed0: int = 0, **extra: Any) -> Iterator[dict[str, Any]]:
    """``n`` cases of ``kind``, cycling through its families (``extra`` goes into each)."""
    families = {"audio": AUDIO_FAMILIES, "gguf": GGUF_FAMILIES[1:], "cli": CLI_FAMILIES}[kind]
    for i in range(n):
        family = families[i % len(families)]
        if kind == "gguf" and i % 100 == 0:
            family = "valid"  # the unmutated pair, now and then: it must keep working
        yield {"kind": kind, "family": family, "seed": seed0 + i, **extra}


def execute(case: dict[str, Any]) -> dict[str, Any]:
    """Run one audio or GGUF case here (in the child) and classify it."""
    if case["kind"] == "audio":
        return _run_audio(case)
    if case["kind"] == "probe":
        return _run_probe(case)
    return _run_gguf(case)


def _run_probe(case: dict[str, Any]) -> dict[str, Any]:
    """Misbehaviour on purpose, to show the harness classifies it (tests/test_fuzz_quick.py)."""
    family = case["family"]
    if family == "abort":
        os.abort()
    if family == "hang":
        time.sleep(3600)
    if family == "memory":
        block = bytearray(1 << 36)  # 64 GiB: past the limit, refused before any page is touched
        return {"outcome": "accepted", "detail": str(len(block))}
    if family == "print":
        print("a library must not print this")
        return {"outcome": "accepted"}
    try:
        raise KeyError("not ours")
    except KeyError as exc:
        return _classify_exception(exc)


def _classify_exception(exc: BaseException) -> dict[str, Any]:
    from qaudio_local.errors import QAudioError

    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, QAudioError):
        msg = str(exc)
        if "\n" in msg.strip() or len(msg) > 1200:
            return {"outcome": "wrong", "detail": f"messy message: {text[:300]}"}
        return {"outcome": "clean", "detail": text[:300]}
    return {"outcome": "foreign", "detail": text[:400]}


# --- audio ------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, items: Any) -> Any:
    """One of ``items``, exactly as written (numpy's choice would round big ints to floats)."""
    seq = list(items)
    return seq[int(rng.integers(len(seq)))]


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
    rate = 48000 if subtype == "OPUS" else int(_pick(rng, _RATES))
    if fmt == "MP3":
        rate = int(_pick(rng, [8000, 16000, 22050, 32000, 44100, 48000]))
    channels = int(_pick(rng, [1, 1, 2, 2, 3, 6]))
    if fmt == "MP3":
        channels = min(channels, 2)
    data = _tone(rng, rate, float(_pick(rng, [0.0, 0.01, 0.3, 1.0, 2.5])), channels)
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
        b[i : i + 4] = struct.pack("<I", int(_pick(rng, [0, 1, 2**31 - 1, 2**32 - 1, 48000])))
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
        rate = int(_pick(rng, hostile))
        b[24:28] = struct.pack("<I", rate)
        b[28:32] = struct.pack("<I", 2 * rate % 2**32)
    elif field == 1:  # channels
        b[22:24] = struct.pack("<H", int(_pick(rng, [0, 2, 64, 1024, 1025, 65535])))
    elif field == 2:  # bits per sample
        b[34:36] = struct.pack("<H", int(_pick(rng, [0, 1, 7, 12, 24, 32, 33, 64, 65535])))
    elif field == 3:  # data chunk size
        b[40:44] = struct.pack("<I", int(_pick(rng, [0, 1, 3, 2**31, 2**32 - 1])))
    elif field == 4:  # fmt chunk size
        b[16:20] = struct.pack("<I", int(_pick(rng, [0, 2, 15, 100, 2**32 - 1])))
    else:  # format tag
        b[20:22] = struct.pack("<H", int(_pick(rng, [0, 2, 3, 6, 0xFFFE, 0x55])))
    return bytes(b)


def _aiff_rate_case(rng: np.random.Generator) -> bytes:
    """An AIFF whose 80-bit sample rate is 0, tiny, huge or not a number."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, _tone(rng, 16000, 0.3, 1), 16000, format="AIFF", subtype="PCM_16")
    b = bytearray(buf.getvalue())
    at = b.index(b"COMM") + 16
    exp = int(_pick(rng, [0, 1, 0x3FFF, 0x401E, 0x403E, 0x7FFE, 0x7FFF]))
    mant = int(_pick(rng, [0, 1 << 63, (1 << 64) - 1, 0xFA00000000000000]))
    b[at : at + 10] = struct.pack(">HQ", exp, mant)
    return bytes(b)


def _hostile_array(rng: np.random.Generator) -> tuple[Any, dict[str, Any]]:
    dtype = _pick(rng, ["float32", "float64", "float16", "int16", "int32", "uint8", "int8",
                        "int64", "complex64", "bool", "object", ">f4", "<U4"])  # fmt: skip
    shape_kind = rng.integers(7)
    n = int(_pick(rng, [0, 1, 2, 3, 100, 16000, 44100]))
    shapes = [(n,), (n, 2), (2, n), (n, 1), (1, n), (3, 2, n), ()]
    shape = shapes[shape_kind]
    scale = float(_pick(rng, [0.0, 1e-30, 0.5, 1.0, 4e4, 2**31, 1e38]))
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
    import sys

    from qaudio_local.audio.decode import read_stdin_audio

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


def _run_audio(case: dict[str, Any]) -> dict[str, Any]:
    from qaudio_local.audio.decode import load_clip
    from qaudio_local.audio.native_stderr import quiet_c_stderr  # noqa: F401 - what it uses

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        limit = 600.0
        try:
            source, kwargs = _audio_input(case, tmp)
        except BaseException as exc:  # the library was not called: the harness is at fault
            if type(exc).__module__.startswith("qaudio_local"):  # read_stdin_audio refused
                return _classify_exception(exc)
            return {"outcome": "foreign", "detail": f"harness: {type(exc).__name__}: {exc}"}
        try:
            clip = load_clip(source, **kwargs)
        except BaseException as exc:
            return _classify_exception(exc)
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


# --- GGUF -------------------------------------------------------------------------------

_TEXT_INT_KEYS = [
    "qwen2.block_count",
    "qwen2.embedding_length",
    "qwen2.feed_forward_length",
    "qwen2.attention.head_count",
    "qwen2.attention.head_count_kv",
    "qwen2.context_length",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.padding_token_id",
    "general.file_type",
]
_CLIP_INT_KEYS = [
    "clip.audio.block_count",
    "clip.audio.embedding_length",
    "clip.audio.feed_forward_length",
    "clip.audio.attention.head_count",
    "clip.audio.projection_dim",
    "clip.audio.num_mel_bins",
]
_FLOAT_KEYS = {
    "text": ["qwen2.attention.layer_norm_rms_epsilon", "qwen2.rope.freq_base"],
    "mmproj": ["clip.audio.attention.layer_norm_epsilon"],
}
_EXTRA_KEYS = {
    "text": [
        "qwen2.rope.dimension_count",
        "qwen2.attention.key_length",
        "qwen2.expert_count",
        "qwen2.rope.scaling.type",
        "qwen2.rope.scaling.factor",
        "general.alignment",
        "tokenizer.ggml.model",
        "tokenizer.ggml.pre",
        "split.count",
        "qwen2.attention.causal",
        "qwen2.vocab_size",
    ],
    "mmproj": [
        "clip.has_vision_encoder",
        "clip.audio.attention.head_count_kv",
        "clip.audio.attention.head_dim",
        "clip.projector_type",
        "clip.use_gelu",
        "clip.audio.feature_layer",
        "general.alignment",
    ],
}
_HOSTILE_INTS = [0, 1, 2, 3, 31, 63, 64, 128, 1500, 2**16, 2**31 - 1, 2**31, 2**32 - 1]
_HOSTILE_FLOATS = [math.nan, -1.0, 0.0, -0.0, math.inf, -math.inf, 1e-45, 1e38, 1.0, 1e-5]


def _value_for(rng: np.random.Generator, key: str) -> Any:
    """A hostile (value, type, element type) for metadata ``key``."""
    from qaudio_dev.gguf_edit import VT

    pick = int(rng.integers(8))
    if pick == 0:
        return (int(_pick(rng, _HOSTILE_INTS)), VT.INT32 if rng.random() < 0.5 else VT.UINT64, None)
    if pick == 1:
        return ("qwen2" if rng.random() < 0.3 else "x" * int(rng.integers(0, 40)), VT.STRING, None)
    if pick == 2:
        return ([1, 2, 3], VT.ARRAY, VT.UINT32)
    if pick == 3:
        return (float(_pick(rng, _HOSTILE_FLOATS)), VT.FLOAT32, None)
    if pick == 4:
        return (bool(rng.random() < 0.5), VT.BOOL, None)
    if pick == 5:
        return (["none", "yarn", "gpt2", "llama", "qwen2a", "bert"][int(rng.integers(6))],
                VT.STRING, None)  # fmt: skip
    return (int(_pick(rng, _HOSTILE_INTS)) % 2**32, VT.UINT32, None)


def _mutate_pair(case: dict[str, Any], pair: tuple[Path, Path], tmp: Path) -> tuple[Path, Path]:
    """The pair with one mutation applied to one file (chosen by ``seed``)."""
    from qaudio_dev import gguf_edit as ge

    rng = np.random.default_rng(case["seed"])
    family = case["family"]
    target = "text" if rng.random() < 0.5 else "mmproj"
    src = pair[0] if target == "text" else pair[1]
    dst = tmp / f"{target}-{case['seed']}.gguf"
    size = src.stat().st_size
    reader_fields = _field_names(src)
    if family == "valid":
        return pair
    if family == "truncate":
        raw = src.read_bytes()
        cut = int(rng.integers(0, size)) if rng.random() < 0.5 else int(rng.integers(0, 30000))
        dst.write_bytes(raw[: min(cut, size - 1)])
    elif family == "flip":
        flipped = bytearray(src.read_bytes())
        header = _header_size(src)
        for _ in range(int(rng.integers(1, 6))):
            where = header if rng.random() < 0.85 else size
            flipped[int(rng.integers(0, where))] ^= 1 << int(rng.integers(8))
        dst.write_bytes(bytes(flipped))
    elif family == "metadata":
        keys = (_TEXT_INT_KEYS if target == "text" else _CLIP_INT_KEYS) + _FLOAT_KEYS[target]
        keys = keys + _EXTRA_KEYS[target]
        key = keys[int(rng.integers(len(keys)))]
        if rng.random() < 0.15 and key in reader_fields:
            ge.rewrite(src, dst, drop=(key,))
        else:
            value = _value_for(rng, key)
            if key in _FLOAT_KEYS[target] and rng.random() < 0.6:
                value = (float(_pick(rng, _HOSTILE_FLOATS)), ge.VT.FLOAT32, None)
            elif key in reader_fields and rng.random() < 0.5 and value[1] != ge.VT.STRING:
                value = (int(_pick(rng, _HOSTILE_INTS)), ge.VT.UINT32, None)
            ge.rewrite(src, dst, kv={key: value})
    elif family == "tensor":
        _tensor_mutation(rng, src, dst, target)
    elif family == "count":
        _count_mutation(rng, src, dst, target)
    else:
        src = pair[0]
        target = "text"
        dst = tmp / f"text-{case['seed']}.gguf"
        _token_mutation(rng, src, dst)
    return (dst, pair[1]) if target == "text" else (pair[0], dst)


def _field_names(path: Path) -> set[str]:
    import gguf

    return set(gguf.GGUFReader(path).fields)


def _header_size(path: Path) -> int:
    from qaudio_local.engine.gguf_scan import scan

    return scan(path).data_start


def _tensor_mutation(rng: np.random.Generator, src: Path, dst: Path, target: str) -> None:
    from qaudio_dev import gguf_edit as ge

    fields, tensors = ge.read(src)
    names = [t.name for t in tensors]
    op = int(rng.integers(6))
    name = names[int(rng.integers(len(names)))]
    vectors = [t.name for t in tensors if t.data.ndim == 1 or t.data.shape[0] == 1]
    if op == 0 and vectors:  # a norm or bias in another type
        name = vectors[int(rng.integers(len(vectors)))]
        qtype = [ge.QT.F16, ge.QT.BF16, ge.QT.Q8_0][int(rng.integers(3))]
        ge.rewrite(src, dst, tensors=ge.retype(lambda n: n == name, qtype))
        return
    if op == 1:  # a tensor one row short (or longer)

        def edit(t: ge.Tensor) -> ge.Tensor:
            if t.name != name or t.ggml_type not in (ge.QT.F32, ge.QT.F16):
                return t
            grow = rng.random() < 0.3
            data = np.concatenate([t.data, t.data[:1]]) if grow else t.data[:-1]
            return ge.Tensor(
                t.name, np.ascontiguousarray(data) if data.size else t.data, t.ggml_type
            )

        ge.rewrite(src, dst, tensors=edit)
        return
    if op == 2:  # a tensor missing
        ge.rewrite(src, dst, tensors=lambda t: None if t.name == name else t)
        return
    if op == 3:  # an extra tensor
        extra_names = ["blk.99.attn_q.weight", "a.blk.0.attn_k.bias", "a.blk.0.attn_q_norm.weight",
                       "blk.0.attn_qkv.weight", "mystery.weight", "a.blk.0.ffn_gate.weight",
                       "output.bias", "v.patch_embd.weight"]  # fmt: skip
        shape = [(64,), (256,), (2, 2, 2, 2), (64, 64), (768,)][int(rng.integers(5))]
        extra = ge.Tensor(extra_names[int(rng.integers(len(extra_names)))],
                          np.zeros(shape, np.float32), ge.QT.F32)  # fmt: skip
        ge.rewrite(src, dst, extra=(extra,))
        return
    if op == 4:  # a matrix stored in another type
        qtype = [ge.QT.F32, ge.QT.F16, ge.QT.BF16, ge.QT.Q8_0][int(rng.integers(4))]
        ge.rewrite(src, dst, tensors=ge.retype(lambda n: n == name, qtype))
        return
    # position embeddings with too few rows, or a conv bias of the wrong size
    if target == "mmproj":
        which = "a.position_embd.weight" if rng.random() < 0.5 else "a.conv1d.1.bias"

        def cut(t: ge.Tensor) -> ge.Tensor:
            if t.name != which:
                return t
            data = t.data[: int(rng.integers(1, 1500))] if t.data.shape[0] > 1 else t.data[0]
            return ge.Tensor(t.name, np.ascontiguousarray(data), t.ggml_type)

        ge.rewrite(src, dst, tensors=cut)
    else:
        ge.rewrite(src, dst, tensors=ge.retype(lambda n: n.endswith("norm.weight"), ge.QT.F16))


def _count_mutation(rng: np.random.Generator, src: Path, dst: Path, target: str) -> None:
    """Hostile counts, lengths, offsets and shapes written into the layout itself."""
    import gguf

    from qaudio_dev import gguf_edit as ge

    reader = gguf.GGUFReader(src)
    huge = [2**31, 2**32 - 1, 2**63, 2**64 - 1, 2**40, 10**9]
    op = int(rng.integers(5))
    if op == 0:  # an array's declared length
        arrays = [k for k, f in reader.fields.items() if f.types and f.types[0] == ge.VT.ARRAY]
        if arrays:
            key = arrays[int(rng.integers(len(arrays)))]
            n = len(reader.fields[key].data)
            value = int(_pick(rng, [*huge, n + 1, n - 1, 0]))
            ge.patch_field(src, dst, key, value, part=4)
            return
    if op == 1:  # a string's declared length
        strings = [k for k, f in reader.fields.items() if f.types == [ge.VT.STRING]]
        key = strings[int(rng.integers(len(strings)))]
        ge.patch_field(src, dst, key, int(_pick(rng, huge)), part=3)
        return
    if op == 2:  # the header's own counts
        raw = bytearray(src.read_bytes())
        at = 8 if rng.random() < 0.5 else 16
        raw[at : at + 8] = struct.pack("<Q", int(_pick(rng, [*huge, 0, 1])))
        dst.write_bytes(bytes(raw))
        return
    t = reader.tensors[int(rng.integers(len(reader.tensors)))]
    if op == 3:  # a tensor's dimension, dimension count or type
        what = ["dims", "n_dims", "type"][int(rng.integers(3))]
        value = {
            "dims": int(_pick(rng, [0, 1, 3, 1 << 40, 2**63, 2**64 - 1])),
            "n_dims": int(_pick(rng, [0, 1, 3, 5, 2**32 - 1])),
            "type": int(_pick(rng, [1, 2, 4, 8, 12, 31, 39, 99, 2**31])),
        }[what]
        ge.patch_tensor_info(src, dst, t.name, what, value, dim=0)
        return
    value = int(_pick(rng, [0, 1, 31, 2**40, 2**63, int(t.data_offset) + 32]))  # an offset
    ge.patch_tensor_info(src, dst, t.name, "offset", value)


def _token_mutation(rng: np.random.Generator, src: Path, dst: Path) -> None:
    from qaudio_dev import gguf_edit as ge

    fields, tensors = ge.read(src)
    tokens = list(fields["tokenizer.ggml.tokens"][0])
    types = list(fields["tokenizer.ggml.token_type"][0])
    op = int(rng.integers(6))
    i = int(rng.integers(len(tokens)))
    if op == 0:
        tokens[i] = tokens[(i + 1) % len(tokens)]  # a duplicate
    elif op == 1:
        tokens[i] = ""
    elif op == 2:
        special = ["<|AUDIO|>", "<|audio_bos|>", "<|im_end|>", "<|im_start|>", "<|endoftext|>"]
        j = tokens.index(special[int(rng.integers(len(special)))])
        tokens[j] = tokens[j].replace("|", "_") if rng.random() < 0.5 else tokens[j].lower()
    elif op == 3:
        j = tokens.index("<|AUDIO|>")
        types[j] = 1  # the audio token as ordinary text
    elif op == 4:
        fields["tokenizer.ggml.token_type"] = (types[:-1], ge.VT.ARRAY, ge.VT.INT32)
    else:
        fields["tokenizer.ggml.merges"] = (["a", " ", "Ġ Ġ Ġ", ""], ge.VT.ARRAY, ge.VT.STRING)
    fields["tokenizer.ggml.tokens"] = (tokens, ge.VT.ARRAY, ge.VT.STRING)
    if op != 4:
        fields["tokenizer.ggml.token_type"] = (types, ge.VT.ARRAY, ge.VT.INT32)
    ge.write(dst, fields, tensors)
    if op == 1 and rng.random() < 0.5:  # invalid UTF-8 instead of an empty token
        raw = bytearray(dst.read_bytes())
        at = raw.find(b"<|im_start|>")
        raw[at + 2] = 0xFF
        dst.write_bytes(bytes(raw))


def _run_gguf(case: dict[str, Any]) -> dict[str, Any]:
    from qaudio_local.engine.gguf_check import check_projector, check_text_model
    from qaudio_local.engine.model import AudioModel
    from qaudio_local.engine.results import ModelOptions, SamplingOptions
    from qaudio_local.errors import QAudioError

    pair = (Path(case["text"]), Path(case["mmproj"]))
    with tempfile.TemporaryDirectory() as d:
        try:
            text, mmproj = _mutate_pair(case, pair, Path(d))
        except BaseException as exc:  # the mutation does not apply to this file: skip it
            return {"outcome": "clean", "detail": f"(no mutation: {type(exc).__name__})"}
        t0 = time.perf_counter()
        for check, path in ((check_text_model, text), (check_projector, mmproj)):
            try:
                check(path)
            except QAudioError:
                pass
            except BaseException as exc:
                return _classify_exception(exc)
        check_s = time.perf_counter() - t0
        if check_s > 1.0:
            return {"outcome": "hang", "detail": f"validation took {check_s:.1f} s"}
        t = np.arange(SAMPLE_RATE // 2) / SAMPLE_RATE
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        opts = ModelOptions(n_ctx=2048, n_threads=1, audio_path=case["audio_path"])
        try:
            with AudioModel(text, mmproj, opts) as model:
                result = model.generate(
                    "What is it?", [tone], sampling=SamplingOptions(max_tokens=3)
                )
        except BaseException as exc:
            return _classify_exception(exc)
        return {"outcome": "accepted", "detail": f"{result.usage.completion_tokens} tokens"}


# --- the command line -------------------------------------------------------------------

_CLI_VALUES = {  # hostile values, and the valid edges next to them
    "--n-ctx": ["0", "255", "256", "4294967552", "-1", "9223372036854775808", "abc", "1e3",
                "8192", "8193", "1048577", "2048"],
    "--threads": ["0", "1", "1000", "2147483648", "-1", "nan", "2", "8"],
    "--temperature": ["nan", "inf", "-inf", "-0.1", "1e308", "100.1", "0x10", "0", "100", "1e-9"],
    "--top-p": ["0", "nan", "1.5", "-1", "1", "1e-9"],
    "--top-k": ["-1", "2147483648", "1e9", "0", "1", "1048576"],
    "--repetition-penalty": ["nan", "0", "inf", "-1", "1", "100", "1e-9"],
    "--seed": ["-1", "4294967296", "18446744073709551616", "0", "4294967295"],
    "--max-tokens": ["0", "2147483648", "-5", "1", "7"],
    "--n-gpu-layers": ["-2", "2147483648", "4097", "-1", "0", "4096"],
    "--kv-type": ["x", "Q8_0", "", "q8_0", "f32"],
    "--audio-path": ["x", "", "mtmd", "faithful"],
    "--cpu-kernels": ["fast", "portable", "x"],
    "--vram": ["nan", "-1", "1e400", "8XB", "0", "8G"],
}  # fmt: skip


def cli_command(case: dict[str, Any]) -> tuple[list[str], str | None]:
    """The ``qaudio`` arguments of a CLI case (and a file to feed on stdin, if any)."""
    rng = np.random.default_rng(case["seed"])
    opts = list(_CLI_VALUES)
    args: list[str] = []
    for _ in range(1 if rng.random() < 0.7 else 2):
        opt = opts[int(rng.integers(len(opts)))]
        vals = _CLI_VALUES[opt]
        args += [opt, vals[int(rng.integers(len(vals)))]]
    if "--n-ctx" in args and rng.random() < 0.3:
        args.append("--allow-long-context")
    audio = case["clip"]
    stdin = None
    if rng.random() < 0.15:
        audio, stdin = "-", case["clip"] if rng.random() < 0.6 else "/dev/zero"
    files = ["--model-file", case["text"], "--mmproj-file", case["mmproj"]]
    if "--vram" in args:
        files = []  # the registry path: planning refuses before any download (offline)
    return ["run", audio, *files, "--max-tokens", "2", *args], stdin
