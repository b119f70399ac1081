"""A small, dependency-free reader and writer for the safetensors format.

Why not the ``safetensors`` package: numpy has no bfloat16, and the package's numpy API
cannot return BF16 tensors (the official Qwen2-Audio checkpoint is stored in BF16), so
the converter would need torch just to read its input. This module reads one tensor at a
time through :class:`numpy.memmap` and widens BF16 to float32, so peak memory stays at
the largest single tensor, and it lists names, shapes and dtypes without touching the data.
It needs only the standard library and numpy, so it also runs inside ``qaudio selftest``.

The format: an 8-byte little-endian header length ``N``, ``N`` bytes of JSON mapping each
tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to
the byte buffer that follows the header) plus an optional ``"__metadata__"`` map of
strings, then the raw little-endian tensor bytes, packed without gaps.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import NoReturn

import numpy as np

from ..errors import CheckpointNotFoundError, ConversionError

__all__ = ["SafetensorsFile", "write_safetensors", "bf16_to_float32", "float32_to_bf16"]

# safetensors dtype string -> little-endian numpy dtype of the stored bytes.
# BF16 is stored as raw uint16 and widened to float32 on read.
_DTYPES: dict[str, str] = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}
# Valid in the format but not readable here (no numpy equivalent).
_UNREADABLE = {"F8_E4M3", "F8_E5M2", "U16", "U32", "U64"}
_MAX_HEADER = 100 * 1024 * 1024  # the limit the reference implementation enforces
_FIX_HINT = "re-download or re-export the checkpoint (the file is truncated or not safetensors)"


def bf16_to_float32(raw: np.ndarray) -> np.ndarray:
    """Widen raw BF16 bit patterns (uint16) to float32 exactly.

    Args:
        raw: An array of dtype uint16 holding BF16 bit patterns.

    Returns:
        A new float32 array of the same shape.
    """
    return (raw.astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16(values: np.ndarray) -> np.ndarray:
    """Round float32 values to BF16 (round to nearest, ties to even), keeping NaN a NaN.

    Args:
        values: A float array; it is converted to float32 first.

    Returns:
        A uint16 array of BF16 bit patterns, same shape.
    """
    bits = _contiguous(values, "<f4").view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    nan = np.isnan(values)
    if nan.any():
        rounded = np.where(nan, (bits >> 16) | 0x40, rounded)
    return rounded.astype(np.uint16).reshape(np.shape(values))


def _contiguous(values: np.ndarray, dtype: str) -> np.ndarray:
    """Return ``values`` as a C-contiguous array of ``dtype`` (0-d arrays stay 0-d)."""
    out = np.asarray(values, dtype=dtype)
    return out if out.flags.c_contiguous else out.copy(order="C")


class SafetensorsFile:
    """Random access to the tensors of one ``.safetensors`` file.

    Opening parses and validates the header only; :meth:`read` maps one tensor at a time.
    Usable as a context manager (there is nothing to release; it exists for symmetry with
    file objects and so callers need not change if a handle is ever kept open).

    Attributes:
        path: The file.
        metadata: The ``__metadata__`` map (empty when absent).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Open ``path`` and validate its header.

        Args:
            path: A ``.safetensors`` file.

        Raises:
            CheckpointNotFoundError: If the file does not exist.
            ConversionError: If the header is malformed (bad length, not JSON, unknown
                dtype, offsets outside the file or inconsistent with the shape).
        """
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointNotFoundError(
                f"safetensors file not found: {self.path}; check the checkpoint directory",
                path=str(self.path),
            )
        size = self.path.stat().st_size
        with self.path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                self._fail(f"file is {size} bytes, too short for a header")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER or n > size - 8:
                self._fail(f"header length {n} does not fit a {size}-byte file")
            raw = f.read(n)
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._fail(f"header is not valid JSON ({exc})")
        if not isinstance(header, dict):
            self._fail("header is not a JSON object")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            self._fail("__metadata__ is not a map of strings")
        self.metadata: dict[str, str] = dict(meta)
        self._data_start = 8 + n
        self._entries = {
            name: self._check_entry(name, entry, size - self._data_start)
            for name, entry in header.items()
        }

    def _fail(self, what: str) -> NoReturn:
        raise ConversionError(
            f"malformed safetensors file {self.path}: {what}; {_FIX_HINT}", path=str(self.path)
        )

    def _check_entry(self, name: str, entry: object, buffer_size: int) -> tuple[str, tuple, int]:
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            self._fail(f"tensor {name!r} lacks dtype/shape/data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in _DTYPES and dtype not in _UNREADABLE:
            self._fail(f"tensor {name!r} has unknown dtype {dtype!r}")
        ok_shape = isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)
        ok_offsets = (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= buffer_size
        )
        if not ok_shape or not ok_offsets:
            self._fail(f"tensor {name!r} has offsets {offsets} outside the file or bad shape")
        if dtype in _DTYPES:
            expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[dtype]).itemsize
            if expected != offsets[1] - offsets[0]:
                self._fail(f"tensor {name!r}: shape {shape} {dtype} needs {expected} bytes")
        return dtype, tuple(shape), offsets[0]

    def close(self) -> None:
        """Release the file (a no-op: each :meth:`read` maps and unmaps on its own)."""

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def keys(self) -> list[str]:
        """Return the tensor names in file order."""
        return list(self._entries)

    def _entry(self, name: str) -> tuple[str, tuple, int]:
        try:
            return self._entries[name]
        except KeyError:
            raise ConversionError(
                f"tensor {name!r} not in {self.path}; the checkpoint is incomplete or of "
                "another architecture",
                path=str(self.path),
            ) from None

    def shape(self, name: str) -> tuple[int, ...]:
        """Return the shape of tensor ``name`` without reading it.

        Raises:
            ConversionError: If there is no such tensor.
        """
        return self._entry(name)[1]

    def dtype(self, name: str) -> str:
        """Return the safetensors dtype string of tensor ``name`` (e.g. ``"BF16"``).

        Raises:
            ConversionError: If there is no such tensor.
        """
        return self._entry(name)[0]

    def read(self, name: str) -> np.ndarray:
        """Read one tensor into memory.

        Args:
            name: The tensor name.

        Returns:
            A new, writable array: F32/F16/F64 and integer tensors in their own numpy
            dtype, BF16 widened to float32.

        Raises:
            ConversionError: If there is no such tensor or its dtype has no numpy equivalent.
        """
        dtype, shape, begin = self._entry(name)
        if dtype in _UNREADABLE:
            raise ConversionError(
                f"tensor {name!r} in {self.path} is {dtype}, which cannot be read here; "
                "export the checkpoint in F32, F16 or BF16",
                path=str(self.path),
            )
        np_dtype = np.dtype(_DTYPES[dtype])
        if int(np.prod(shape, dtype=np.int64)) == 0:
            out = np.zeros(shape, dtype=np_dtype)
        else:
            mapped = np.memmap(
                self.path, dtype=np_dtype, mode="r", offset=self._data_start + begin, shape=shape
            )
            out = np.array(mapped)
            del mapped
        if dtype == "BF16":
            return bf16_to_float32(out)
        return out.astype(np_dtype.newbyteorder("="), copy=False)


def _stored(name: str, array: np.ndarray, bf16: bool, path: str) -> tuple[str, np.ndarray]:
    """Return (safetensors dtype, little-endian contiguous array to write)."""
    if array.dtype == np.float32 and bf16:
        return "BF16", float32_to_bf16(array)
    if array.dtype == np.float32:
        return "F32", _contiguous(array, "<f4")
    if array.dtype == np.float16:
        return "F16", _contiguous(array, "<f2")
    raise ConversionError(
        f"tensor {name!r} has dtype {array.dtype}; write_safetensors takes float32 or float16 "
        "(cast it first)",
        path=path,
    )


def write_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
    *,
    bf16: bool = False,
) -> Path:
    """Write ``tensors`` to a safetensors file, in name order, deterministically.

    Args:
        path: The output file (overwritten).
        tensors: Name -> float32 or float16 array.
        metadata: Optional string map stored as ``__metadata__`` (Hugging Face expects
            ``{"format": "pt"}``).
        bf16: Store float32 arrays as BF16 (round to nearest even) instead of F32.

    Returns:
        The path written.

    Raises:
        ConversionError: If a tensor has another dtype or a metadata value is not a string.
    """
    path = Path(path)
    stored = {name: _stored(name, tensors[name], bf16, str(path)) for name in sorted(tensors)}
    header: dict[str, object] = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ConversionError(
                "safetensors metadata must map strings to strings", path=str(path)
            )
        header["__metadata__"] = dict(sorted(metadata.items()))
    offset = 0
    for name, (dtype, array) in stored.items():
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        offset += array.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # pad so the data starts 8-byte aligned, as the reference does
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for _dtype, array in stored.values():
            f.write(array.reshape(-1).view(np.uint8).data)
    return path
