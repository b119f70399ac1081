"""Make damaged or edited copies of GGUF files, for the GGUF checks' tests and the fuzzers.

Two kinds of edit:

- :func:`rewrite` reads a file with gguf-py and writes a new, well-formed GGUF with some
  metadata set, retyped or dropped and some tensors converted, reshaped, dropped or added:
  the file is valid as a GGUF, only its content is wrong;
- :func:`patch_field` and :func:`patch_tensor_info` overwrite numbers in place (a value, an
  array's declared count, a string's length, a tensor's dimension, type or offset): the
  layout itself becomes hostile.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

VT = gguf.GGUFValueType
QT = gguf.GGMLQuantizationType


@dataclass
class Tensor:
    """One tensor to write: its data (as numpy holds it) and ggml type."""

    name: str
    data: np.ndarray
    ggml_type: int


Field = tuple[Any, VT, VT | None]  # value, type, element type for arrays
TensorEdit = Callable[[Tensor], Tensor | None]


def read(path: Path) -> tuple[dict[str, Field], list[Tensor]]:
    """The metadata (in file order) and tensors of ``path``."""
    reader = gguf.GGUFReader(path)
    fields: dict[str, Field] = {}
    for key, f in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        vtype = VT(f.types[0])
        sub = VT(f.types[1]) if vtype == VT.ARRAY else None
        fields[key] = (f.contents(), vtype, sub)
    tensors = [Tensor(t.name, np.array(t.data), int(t.tensor_type)) for t in reader.tensors]
    return fields, tensors


def write(
    path: Path, fields: dict[str, Field], tensors: list[Tensor], alignment: int | None = None
) -> Path:
    """Write a GGUF with exactly these fields and tensors (laid out at ``alignment``, which
    is then declared in ``general.alignment``; by default gguf-py's 32, undeclared)."""
    writer = gguf.GGUFWriter(path, arch="x")
    writer.kv_data[0].clear()  # drop the architecture the constructor adds: ours comes next
    if alignment is not None:
        writer.data_alignment = alignment
        fields = {**fields, "general.alignment": (alignment, VT.UINT32, None)}
    for key, (value, vtype, sub) in fields.items():
        writer.add_key_value(key, value, vtype, sub_type=sub)
    for t in tensors:
        qtype = QT(t.ggml_type)
        if qtype in (QT.F32, QT.F16):
            writer.add_tensor(t.name, t.data, raw_dtype=qtype)
        else:  # bf16 and quantized data: raw bytes
            raw = np.ascontiguousarray(t.data).view(np.uint8)  # gguf-py takes byte shapes
            writer.add_tensor(t.name, raw, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def rewrite(
    src: Path,
    dst: Path,
    *,
    kv: dict[str, Field] | None = None,
    drop: tuple[str, ...] = (),
    tensors: TensorEdit | None = None,
    extra: tuple[Tensor, ...] = (),
) -> Path:
    """Copy ``src`` to ``dst`` with metadata ``kv`` set (or added), ``drop`` removed, each
    tensor passed through ``tensors`` (returning ``None`` drops it) and ``extra`` added."""
    fields, ts = read(src)
    for key in drop:
        fields.pop(key, None)
    fields.update(kv or {})
    out = [e for t in ts if (e := tensors(t) if tensors else t) is not None]
    return write(dst, fields, [*out, *extra])


def as_type(data: np.ndarray, ggml_type: int) -> Tensor:
    """Float data converted to ``ggml_type`` (F32, F16, BF16 or Q8_0), as a Tensor to write."""
    x = np.asarray(data, np.float32)
    if ggml_type == QT.F32:
        return Tensor("", x, ggml_type)
    if ggml_type == QT.F16:
        return Tensor("", x.astype(np.float16), ggml_type)
    q = gguf.quants.quantize(x, QT(ggml_type))
    return Tensor("", q, ggml_type)


def retype(names: Callable[[str], bool], ggml_type: int) -> TensorEdit:
    """A tensor edit storing the tensors whose name ``names`` accepts as ``ggml_type``."""

    def edit(t: Tensor) -> Tensor:
        if not names(t.name):
            return t
        out = as_type(dequantized(t), ggml_type)
        return Tensor(t.name, out.data, out.ggml_type)

    return edit


def dequantized(t: Tensor) -> np.ndarray:
    """A tensor's values as float32 (numpy shape, PyTorch order)."""
    if t.ggml_type in (QT.F32, QT.F16):
        return t.data.astype(np.float32)
    return gguf.quants.dequantize(t.data, QT(t.ggml_type)).astype(np.float32)


def patch_field(src: Path, dst: Path, key: str, value: int, part: int = -1) -> Path:
    """Copy ``src`` and overwrite one number of field ``key`` in place.

    ``part`` indexes gguf-py's parts of the field: for a scalar ``-1`` is the value; for an
    array ``4`` is the declared element count; for a string ``3`` its length.
    """
    shutil.copy(src, dst)
    reader = gguf.GGUFReader(dst, "r+")
    f = reader.fields[key]
    f.parts[part if part >= 0 else len(f.parts) + part][0] = value
    reader.data.flush()
    del reader
    return dst


def patch_tensor_info(src: Path, dst: Path, name: str, what: str, value: int, dim: int = 0) -> Path:
    """Copy ``src`` and overwrite a tensor's ``"dims"`` (entry ``dim``), ``"n_dims"``,
    ``"type"`` or ``"offset"`` in place."""
    shutil.copy(src, dst)
    reader = gguf.GGUFReader(dst, "r+")
    t = next(t for t in reader.tensors if t.name == name)
    index = {"n_dims": 2, "dims": 3, "type": 4, "offset": 5}[what]
    t.field.parts[index][dim if what == "dims" else 0] = value
    reader.data.flush()
    del reader
    return dst


def byte_offset_of(path: Path, key: str, part: int) -> int:
    """Where in the file one part of field ``key`` lies (for raw byte edits)."""
    reader = gguf.GGUFReader(path)
    f = reader.fields[key]
    offset = f.offset
    for p in f.parts[:part]:
        offset += p.nbytes
    return offset
