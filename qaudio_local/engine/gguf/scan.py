"""A bounded reader of a GGUF file's header: its metadata and tensor descriptions.

Nothing a file declares is trusted before it is checked against the file's size: every
count and length is compared with the bytes that are left *before* anything is read or
allocated for it, so a declared array of 2**63 elements or a 4 GiB string costs nothing.
Reading takes time and memory proportional to the header (the file is mapped, and only
the header's pages are touched), never to what the header claims. The layout rules are
the ones llama.cpp's own reader (``ggml/src/gguf.cpp``) enforces, so a file this reader
accepts is one llama.cpp parses the same way.

:func:`scan` raises :class:`GGUFFormatError` with a short reason; :mod:`.check` turns
it into a :class:`~qaudio_local.errors.ModelFileError` naming the file.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT
MAX_NAME = 63  # GGML_MAX_NAME (64) less the terminating NUL
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ELEMENTS = 1 << 30  # GGUF_MAX_ARRAY_ELEMENTS, and GGUF_MAX_STRING_LENGTH in bytes

# GGUF value types, and the struct format of the fixed-size ones
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY = range(10)
UINT64, INT64, FLOAT64 = 10, 11, 12
TYPE_NAMES = {
    UINT8: "UINT8",
    INT8: "INT8",
    UINT16: "UINT16",
    INT16: "INT16",
    UINT32: "UINT32",
    INT32: "INT32",
    FLOAT32: "FLOAT32",
    BOOL: "BOOL",
    STRING: "STRING",
    ARRAY: "ARRAY",
    UINT64: "UINT64",
    INT64: "INT64",
    FLOAT64: "FLOAT64",
}
_SCALAR = {
    UINT8: "B",
    INT8: "b",
    UINT16: "H",
    INT16: "h",
    UINT32: "I",
    INT32: "i",
    FLOAT32: "f",
    BOOL: "?",
    UINT64: "Q",
    INT64: "q",
    FLOAT64: "d",
}
_NUMPY = {k: np.dtype("<" + v if v != "?" else "u1") for k, v in _SCALAR.items()}


class GGUFFormatError(ValueError):
    """The file breaks the GGUF layout (the message says where and how)."""


@dataclass(frozen=True)
class KV:
    """One metadata entry.

    Attributes:
        type: Its GGUF value type (``ARRAY`` for arrays).
        value: A Python number or bool, ``bytes`` for a string, a numpy array for a numeric
            array, a list of ``bytes`` for an array of strings.
        item_type: The element type of an array, else ``None``.
    """

    type: int
    value: Any
    item_type: int | None = None

    def type_name(self) -> str:
        """``"UINT32"``, or ``"ARRAY[STRING]"`` for arrays."""
        if self.item_type is None:
            return TYPE_NAMES[self.type]
        return f"ARRAY[{TYPE_NAMES[self.item_type]}]"


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's description (shape in ggml order: ne0 first)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # relative to the data section
    nbytes: int

    @property
    def type_name(self) -> str:
        return ggml_type_name(self.ggml_type)


@dataclass(frozen=True)
class GGUFScan:
    """A file's header, as read by :func:`scan`.

    Attributes:
        path: The file.
        size: Its size in bytes.
        version: The GGUF version (2 or 3).
        alignment: The data alignment in bytes.
        kv: The metadata, in file order.
        tensors: The tensor descriptions, in file order.
        data_start: Where the tensor data begins.
        header_digest: sha256 of everything before the tensor data.
    """

    path: Path
    size: int
    version: int
    alignment: int
    kv: dict[str, KV]
    tensors: list[TensorInfo]
    data_start: int
    header_digest: str
    by_name: dict[str, TensorInfo] = field(default_factory=dict, repr=False)


def ggml_type_name(ggml_type: int) -> str:
    """The ggml name of a tensor type id, e.g. ``"Q8_0"``."""
    from gguf.constants import GGMLQuantizationType

    try:
        return GGMLQuantizationType(ggml_type).name
    except ValueError:
        return f"type {ggml_type}"


def _type_sizes() -> dict[int, tuple[int, int]]:
    """ggml type id -> (elements per block, bytes per block), from gguf-py's table."""
    from gguf.constants import GGML_QUANT_SIZES

    return {int(t): (int(b), int(s)) for t, (b, s) in GGML_QUANT_SIZES.items()}


class _Cursor:
    """Reads little-endian values from ``buf``, each checked against the bytes left."""

    def __init__(self, buf: Any, size: int) -> None:
        self.buf, self.size, self.pos = buf, size, 0

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise GGUFFormatError(
                f"it is truncated: {what} needs {n} bytes at offset {self.pos} but the file "
                f"has {self.size - self.pos} left"
            )

    def scalar(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        self.need(n, what)
        (value,) = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += n
        return value

    def string(self, what: str, limit: int = MAX_ELEMENTS) -> bytes:
        n = self.scalar("Q", what)
        if n > limit:
            raise GGUFFormatError(f"{what} declares a length of {n} bytes (at most {limit})")
        self.need(n, what)
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out


def scan(path: str | os.PathLike[str]) -> GGUFScan:
    """Read and check the header of the GGUF file at ``path``.

    Raises:
        GGUFFormatError: The file breaks the GGUF layout, is truncated, or declares counts
            or sizes it cannot hold.
        OSError: It cannot be read.
    """
    p = Path(path)
    with p.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < 24:
            raise GGUFFormatError(f"it is truncated: {size} bytes, less than a GGUF header")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _scan(p, buf, size)


def _scan(p: Path, buf: Any, size: int) -> GGUFScan:
    cur = _Cursor(buf, size)
    if bytes(buf[:4]) != GGUF_MAGIC:
        raise GGUFFormatError("it does not start with 'GGUF'")
    cur.pos = 4
    version = cur.scalar("I", "the version")
    if version not in (2, 3):
        big = " (a big-endian file?)" if version > 0xFFFF else ""
        raise GGUFFormatError(f"it is GGUF version {version}{big}; llama.cpp reads 2 and 3")
    n_tensors = cur.scalar("Q", "the tensor count")
    n_kv = cur.scalar("Q", "the metadata count")
    # the smallest entry: a key of 1 byte with its length (9), a type (4), a value (1)
    if n_kv > (size - cur.pos) // 14:
        raise GGUFFormatError(f"it declares {n_kv} metadata entries, more than its size can hold")
    kv: dict[str, KV] = {}
    for i in range(n_kv):
        key_bytes = cur.string(f"metadata key {i}", limit=1 << 16)
        try:
            key = key_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFFormatError(f"metadata key {i} is not valid UTF-8") from None
        if not key:
            raise GGUFFormatError(f"metadata key {i} is empty")
        if key in kv:
            raise GGUFFormatError(f"metadata key {key!r} appears twice")
        kv[key] = _read_value(cur, key)
    alignment = DEFAULT_ALIGNMENT
    if "general.alignment" in kv:
        entry = kv["general.alignment"]
        if entry.type != UINT32:
            raise GGUFFormatError(f"general.alignment is {entry.type_name()}, not UINT32")
        alignment = int(entry.value)
        if alignment <= 0 or alignment & (alignment - 1):
            raise GGUFFormatError(f"general.alignment {alignment} is not a power of 2")
    # the smallest tensor description: name length (8), n_dims (4), type (4), offset (8)
    if n_tensors > (size - cur.pos) // 24:
        raise GGUFFormatError(f"it declares {n_tensors} tensors, more than its size can hold")
    sizes = _type_sizes()
    tensors = [_read_tensor_info(cur, i, sizes) for i in range(n_tensors)]
    header_end = cur.pos
    data_start = -(-header_end // alignment) * alignment if tensors else header_end
    by_name: dict[str, TensorInfo] = {}
    expected = 0
    for t in tensors:
        if t.name in by_name:
            raise GGUFFormatError(f"tensor {t.name!r} appears twice")
        by_name[t.name] = t
        # llama.cpp wants each tensor right after the one before; a gap is its own (clean)
        # error there, but an overlap or a misaligned start is refused here
        if t.offset < expected or t.offset % alignment:
            raise GGUFFormatError(
                f"tensor {t.name} starts at data offset {t.offset}, but the tensors before it "
                f"end at {expected} (alignment {alignment})"
            )
        end = data_start + t.offset + t.nbytes
        if end > size:
            raise GGUFFormatError(
                f"it is truncated: tensor {t.name} ends at byte {end} but the file has {size}"
            )
        expected = t.offset + -(-t.nbytes // alignment) * alignment
    if tensors:
        _check_no_unlisted_bytes(buf, header_end, data_start, size, tensors, alignment)
    digest = hashlib.sha256(buf[:header_end]).hexdigest()
    return GGUFScan(p, size, version, alignment, kv, tensors, data_start, digest, by_name)


def _check_no_unlisted_bytes(
    buf: Any, header_end: int, data_start: int, size: int, tensors: list[TensorInfo], alignment: int
) -> None:
    """Every writer pads the header with zeros to the alignment and ends the file with the
    last tensor (and its padding). Bytes in the padding, or after the last tensor, mean the
    header does not describe the file: a tensor count edited down leaves the rest of the
    header where llama.cpp would read weights, shifted, and answer garbage.

    Raises:
        GGUFFormatError: Non-zero padding, or a tensor's worth of bytes nobody lists.
    """
    if any(buf[header_end:data_start]):
        raise GGUFFormatError(
            "its header does not end where its tensor data starts (the padding holds data): "
            "the header lists fewer entries than the file holds"
        )
    last = max(tensors, key=lambda t: t.offset)
    trailing = size - (data_start + last.offset + last.nbytes)
    if trailing >= alignment:  # a writer pads the last tensor to the alignment, no more
        raise GGUFFormatError(
            f"it holds {trailing} bytes after its last listed tensor: its header does not "
            f"describe its data (tensors missing from the {len(tensors)} listed, or a wrong "
            "general.alignment)"
        )


def _read_value(cur: _Cursor, key: str) -> KV:
    vtype = cur.scalar("I", f"the type of {key}")
    if vtype in _SCALAR:
        value = cur.scalar(_SCALAR[vtype], f"the value of {key}")
        if vtype == BOOL:
            value = bool(value)
        return KV(vtype, value)
    if vtype == STRING:
        return KV(vtype, cur.string(f"the value of {key}"))
    if vtype != ARRAY:
        raise GGUFFormatError(f"{key} has an unknown value type {vtype}")
    item = cur.scalar("I", f"the element type of {key}")
    n = cur.scalar("Q", f"the length of {key}")
    if n > MAX_ELEMENTS:
        raise GGUFFormatError(f"{key} declares {n} elements (at most {MAX_ELEMENTS})")
    if item == STRING:
        if n > (cur.size - cur.pos) // 8:
            raise GGUFFormatError(
                f"it is truncated: {key} declares {n} strings, more than the file can hold"
            )
        return KV(ARRAY, _read_strings(cur, n, key), STRING)
    if item not in _NUMPY:
        raise GGUFFormatError(f"{key} is an array of {TYPE_NAMES.get(item, item)}, not of values")
    dtype = _NUMPY[item]
    cur.need(n * dtype.itemsize, f"the {n} elements of {key}")
    data = np.frombuffer(cur.buf, dtype=dtype, count=n, offset=cur.pos).copy()
    cur.pos += n * dtype.itemsize
    if item == BOOL:
        data = data.astype(bool)
    return KV(ARRAY, data, item)


_U64 = struct.Struct("<Q")


def _read_strings(cur: _Cursor, n: int, key: str) -> list[bytes]:
    """``n`` length-prefixed strings (a hot loop: a vocabulary holds ~150 000)."""
    buf, pos, size, unpack = cur.buf, cur.pos, cur.size, _U64.unpack_from
    out: list[bytes] = []
    append = out.append
    for _ in range(n):
        if size - pos < 8:
            break
        (length,) = unpack(buf, pos)
        pos += 8
        if length > size - pos:
            break
        append(buf[pos : pos + length])
        pos += length
    else:
        cur.pos = pos
        return out
    raise GGUFFormatError(f"it is truncated: element {len(out)} of {key} runs past its end")


def _read_tensor_info(cur: _Cursor, i: int, sizes: dict[int, tuple[int, int]]) -> TensorInfo:
    raw = cur.string(f"the name of tensor {i}", limit=1 << 16)
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise GGUFFormatError(f"the name of tensor {i} is not valid UTF-8") from None
    if len(raw) > MAX_NAME:
        raise GGUFFormatError(f"tensor name {name[:80]!r} is longer than {MAX_NAME} bytes")
    n_dims = cur.scalar("I", f"the dimensions of {name}")
    if n_dims > MAX_DIMS:
        raise GGUFFormatError(f"tensor {name} has {n_dims} dimensions (at most {MAX_DIMS})")
    shape = tuple(cur.scalar("Q", f"the shape of {name}") for _ in range(n_dims))
    ggml_type = cur.scalar("I", f"the type of {name}")
    offset = cur.scalar("Q", f"the offset of {name}")
    if ggml_type not in sizes:
        raise GGUFFormatError(f"tensor {name} has an unknown ggml type {ggml_type}")
    block, type_size = sizes[ggml_type]
    if any(d == 0 or d >= 1 << 62 for d in shape):
        raise GGUFFormatError(f"tensor {name} has an impossible shape {shape}")
    n_elements = 1
    for d in shape:
        n_elements *= d
    if n_elements >= 1 << 62:
        raise GGUFFormatError(f"tensor {name} has an impossible shape {shape}")
    if (shape[0] if shape else 1) % block:
        raise GGUFFormatError(
            f"tensor {name} of type {ggml_type_name(ggml_type)} has rows of "
            f"{shape[0] if shape else 1} elements, not a multiple of its block size {block}"
        )
    return TensorInfo(name, shape, ggml_type, offset, n_elements // block * type_size)
