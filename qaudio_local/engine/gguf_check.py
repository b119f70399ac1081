"""Validate GGUF files before llama.cpp sees them.

llama.cpp aborts the whole process on some malformed inputs, so every file is
checked here first: it must be a complete GGUF of the right kind, and the
projector must fit the text model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelFileError, ModelFileNotFoundError

GGUF_MAGIC = b"GGUF"
_FLOAT_TYPES = {0, 1, 30}  # ggml_type F32, F16, BF16: everything else is quantized


def _quantized(tensors: Any) -> bool:
    """Whether any weight matrix is stored in a quantized ggml type."""
    return any(len(t.shape) >= 2 and int(t.tensor_type) not in _FLOAT_TYPES for t in tensors)


@dataclass(frozen=True)
class TextModelInfo:
    """What the runtime needs to know about a text GGUF."""

    path: Path
    architecture: str
    n_embd: int
    n_layer: int
    n_ctx_train: int
    n_vocab: int
    quantized: bool = False


@dataclass(frozen=True)
class ProjectorInfo:
    """What the runtime needs to know about an audio projector GGUF."""

    path: Path
    projector_type: str
    projection_dim: int
    n_mels: int
    quantized: bool = False


def _open(path: str | Path, what: str) -> tuple[Path, Any]:
    p = Path(path)
    if not p.exists():
        raise ModelFileNotFoundError(str(p), what=what)
    if not p.is_file():
        raise ModelFileError(f"{what} {p} is not a file", path=str(p))
    try:
        with p.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelFileError(f"cannot read {what} {p}: {exc}", path=str(p)) from exc
    if magic != GGUF_MAGIC:
        raise ModelFileError(
            f"{what} {p} is not a GGUF file (it does not start with 'GGUF'); "
            "pass a .gguf produced by `qaudio convert` or a GGUF download",
            path=str(p),
        )
    import gguf

    try:
        reader = gguf.GGUFReader(p)
    except Exception as exc:  # the reader raises many types on garbage
        raise ModelFileError(
            f"{what} {p} is truncated or corrupt ({exc}); download or convert it again", path=str(p)
        ) from exc
    size = os.path.getsize(p)
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size:
            raise ModelFileError(
                f"{what} {p} is truncated: tensor {t.name} ends at byte "
                f"{t.data_offset + t.n_bytes} but the file has {size}; "
                "download or convert it again",
                path=str(p),
            )
    return p, reader


def _value(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def check_text_model(path: str | Path) -> TextModelInfo:
    """Check that ``path`` is a complete Qwen2 text-model GGUF.

    Raises:
        ModelFileNotFoundError: No such file.
        ModelFileError: Not GGUF, truncated, or not a Qwen2 text model.
    """
    p, reader = _open(path, "model file")
    arch = _value(reader, "general.architecture")
    if arch == "clip":
        raise ModelFileError(
            f"{p} is an audio projector (mmproj), not the text model; pass it "
            "as --mmproj-file and the main GGUF as --model-file",
            path=str(p),
        )
    if arch != "qwen2":
        raise ModelFileError(
            f"{p} holds a {arch!r} model, not Qwen2-Audio's qwen2 text model", path=str(p)
        )
    n_embd = _value(reader, "qwen2.embedding_length")
    n_layer = _value(reader, "qwen2.block_count")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if n_embd is None or n_layer is None or tokens is None:
        raise ModelFileError(
            f"{p} lacks qwen2 hyper-parameters or a tokenizer; convert it "
            "again with `qaudio convert`",
            path=str(p),
        )
    tensors = {t.name: t for t in reader.tensors}
    embd = tensors.get("token_embd.weight")
    if embd is None or int(embd.shape[0]) != int(n_embd):
        raise ModelFileError(
            f"{p} lacks token_embd.weight of width {n_embd}; it is incomplete or inconsistent",
            path=str(p),
        )
    for i in range(int(n_layer)):
        if f"blk.{i}.attn_q.weight" not in tensors:
            raise ModelFileError(
                f"{p} lacks tensor blk.{i}.attn_q.weight; it is incomplete", path=str(p)
            )
    return TextModelInfo(
        path=p,
        architecture=str(arch),
        n_embd=int(n_embd),
        n_layer=int(n_layer),
        n_ctx_train=int(_value(reader, "qwen2.context_length") or 0),
        n_vocab=len(tokens.data),
        quantized=_quantized(reader.tensors),
    )


def check_projector(path: str | Path) -> ProjectorInfo:
    """Check that ``path`` is a complete Qwen2-Audio (qwen2a) projector GGUF.

    Raises:
        ModelFileNotFoundError: No such file.
        ModelFileError: Not GGUF, truncated, or not a qwen2a audio projector.
    """
    p, reader = _open(path, "projector file")
    arch = _value(reader, "general.architecture")
    if arch != "clip":
        raise ModelFileError(
            f"{p} is not a projector (architecture {arch!r}); pass the "
            "mmproj GGUF as --mmproj-file",
            path=str(p),
        )
    if not _value(reader, "clip.has_audio_encoder"):
        raise ModelFileError(
            f"{p} is a vision projector with no audio encoder; Qwen2-Audio needs its audio mmproj",
            path=str(p),
        )
    ptype = _value(reader, "clip.audio.projector_type") or _value(reader, "clip.projector_type")
    if ptype not in ("qwen2a", "qwen2.5o"):
        raise ModelFileError(
            f"{p} is a {ptype!r} audio projector, not Qwen2-Audio's qwen2a", path=str(p)
        )
    dim = _value(reader, "clip.audio.projection_dim")
    mels = _value(reader, "clip.audio.num_mel_bins")
    if dim is None or mels is None:
        raise ModelFileError(f"{p} lacks audio hyper-parameters; convert it again", path=str(p))
    tensors = {t.name: t for t in reader.tensors}
    for needed in ("a.conv1d.1.weight", "a.conv1d.2.weight", "mm.a.fc.weight"):
        if needed not in tensors:
            raise ModelFileError(f"{p} lacks tensor {needed}; it is incomplete", path=str(p))
    _check_projector_shapes(p, reader, tensors, int(dim), int(mels))
    return ProjectorInfo(
        path=p,
        projector_type=str(ptype),
        projection_dim=int(dim),
        n_mels=int(mels),
        quantized=_quantized(reader.tensors),
    )


def _check_projector_shapes(
    p: Path, reader: Any, tensors: dict[str, Any], dim: int, mels: int
) -> None:
    """Compare the encoder's metadata with its tensor shapes.

    llama.cpp trusts the metadata and aborts the process (GGML_ASSERT) when the tensors
    disagree, so a mismatch is refused here.
    """

    def meta(key: str) -> int:
        value = _value(reader, f"clip.audio.{key}")
        if value is None:
            raise ModelFileError(f"{p} lacks clip.audio.{key}; convert it again", path=str(p))
        return int(value)

    d, heads, ffn, n_layer = (
        meta("embedding_length"),
        meta("attention.head_count"),
        meta("feed_forward_length"),
        meta("block_count"),
    )
    if heads <= 0 or d % heads:
        raise ModelFileError(
            f"{p} is inconsistent: width {d} is not divisible into {heads} "
            "attention heads; convert it again",
            path=str(p),
        )
    # ggml order (ne0, ne1, ...): the reverse of PyTorch's
    expected: dict[str, tuple[int, ...]] = {
        "a.conv1d.1.weight": (3, mels, d),
        "a.conv1d.2.weight": (3, d, d),
        "a.position_embd.weight": (d, -1),
        "mm.a.fc.weight": (d, dim),
    }
    for i in range(n_layer):
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            expected[f"a.blk.{i}.{name}.weight"] = (d, d)
        expected[f"a.blk.{i}.ffn_up.weight"] = (d, ffn)
        expected[f"a.blk.{i}.ffn_down.weight"] = (ffn, d)
    for name, shape in expected.items():
        t = tensors.get(name)
        if t is None:
            raise ModelFileError(f"{p} lacks tensor {name}; it is incomplete", path=str(p))
        got = tuple(int(x) for x in t.shape)
        if len(got) != len(shape) or any(e not in (-1, g) for e, g in zip(shape, got, strict=True)):
            raise ModelFileError(
                f"{p} is inconsistent: tensor {name} has shape {got} but its "
                f"metadata implies {shape}; convert it again",
                path=str(p),
            )


def check_pair(model: TextModelInfo, projector: ProjectorInfo) -> None:
    """Check that the projector's output width matches the text model.

    Raises:
        ModelFileError: The two files do not belong together.
    """
    if projector.projection_dim != model.n_embd:
        raise ModelFileError(
            f"projector {projector.path.name} outputs {projector.projection_dim}-wide embeddings "
            f"but text model {model.path.name} expects {model.n_embd}; use the mmproj file that "
            "was converted or published with this model",
            path=str(projector.path),
        )
