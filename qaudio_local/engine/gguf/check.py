"""Validate GGUF files before llama.cpp sees them.

llama.cpp aborts the whole process on some malformed inputs, so every file is checked
here first, in three steps:

1. :mod:`.scan` reads the header with every count and length bounded by the file's
   size (a hostile file costs milliseconds and no more memory than its header);
2. :mod:`.schema` checks every key llama.cpp reads, with its type and range, and
   every tensor's name, shape and ggml type, against a closed schema of the two files;
3. :func:`check_pair` checks that the files belong together and, given the load options,
   has :mod:`.loadcheck` load them and decode once in a child process (once per
   pair: the verdict is cached), so that whatever llama.cpp still aborts on becomes a
   one-line error naming the file.

Whatever goes wrong inside the checks themselves is reported as a
:class:`~qaudio_local.errors.ModelFileError` naming the file, never as a foreign exception.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ...errors import ModelFileError, ModelFileNotFoundError, QAudioError
from .info import ProjectorInfo, TextModelInfo
from .meta import Meta
from .scan import GGUF_MAGIC, GGUFFormatError, GGUFScan, scan
from .schema import validate_projector, validate_text

if TYPE_CHECKING:
    from ..options import ModelOptions

__all__ = [
    "GGUF_MAGIC",
    "check_pair",
    "check_projector",
    "check_text_model",
]

R = TypeVar("R")


def check_text_model(path: str | Path) -> TextModelInfo:
    """Check that ``path`` is a complete Qwen2 text-model GGUF llama.cpp can load.

    Raises:
        ModelFileNotFoundError: No such file.
        ModelFileError: Not GGUF, truncated, or not a valid Qwen2 text model (the message
            names the key or tensor at fault).
    """

    def check(s: GGUFScan, meta: Meta) -> TextModelInfo:
        f = validate_text(meta)
        return TextModelInfo(
            s.path, "qwen2", f.n_embd, f.n_layer, f.n_ctx_train, f.n_vocab, f.quantized,
            s.header_digest, s.alignment, f.prompt_format,
        )  # fmt: skip

    return _checked(path, "model file", check)


def check_projector(path: str | Path) -> ProjectorInfo:
    """Check that ``path`` is a complete Qwen2-Audio (qwen2a) projector GGUF.

    Raises:
        ModelFileNotFoundError: No such file.
        ModelFileError: Not GGUF, truncated, or not a valid qwen2a audio projector (the
            message names the key or tensor at fault).
    """

    def check(s: GGUFScan, meta: Meta) -> ProjectorInfo:
        f = validate_projector(meta)
        return ProjectorInfo(
            s.path, f.projector_type, f.projection_dim, f.n_mels, f.quantized, s.header_digest
        )

    return _checked(path, "projector file", check)


def check_pair(
    model: TextModelInfo, projector: ProjectorInfo, options: ModelOptions | None = None
) -> None:
    """Check that the projector's output width matches the text model.

    With the :class:`~qaudio_local.engine.options.ModelOptions` the pair is about to be
    loaded with, also prove that llama.cpp loads it and decodes once, in a child process
    (see :mod:`.loadcheck`; cached per pair, skipped inside that child).

    Raises:
        ModelFileError: The two files do not belong together, or llama.cpp fails on them
            in the child (the message names the file).
    """
    if projector.projection_dim != model.n_embd:
        raise ModelFileError(
            f"projector {projector.path.name} outputs {projector.projection_dim}-wide embeddings "
            f"but text model {model.path.name} expects {model.n_embd}; use the mmproj file that "
            "was converted or published with this model",
            path=str(projector.path),
        )
    if options is not None:
        from .loadcheck import check_loads

        check_loads(model, projector, options)


def _checked(path: str | Path, what: str, check: Callable[[GGUFScan, Meta], R]) -> R:
    p = _existing(path, what)
    label = f"{what} {p}"
    try:
        s = scan(p)
        return check(s, Meta(s, label))
    except QAudioError:
        raise
    except GGUFFormatError as exc:
        raise ModelFileError(
            f"{label} is not a usable GGUF: {exc}; download or convert it again", path=str(p)
        ) from exc
    except OSError as exc:
        raise ModelFileError(f"cannot read {label}: {exc}", path=str(p)) from exc
    except Exception as exc:  # a check that did not foresee this file: still the file's fault
        raise ModelFileError(
            f"{label} could not be validated ({type(exc).__name__}: {exc}); it is damaged or "
            "not a Qwen2-Audio GGUF; convert or download it again",
            path=str(p),
        ) from exc


def _existing(path: str | Path, what: str) -> Path:
    """``path`` as a Path, after checking it is a readable GGUF file llama.cpp can open.

    Raises:
        ModelFileNotFoundError: No such file.
        ModelFileError: A directory, an unreadable file, a name llama.cpp cannot be given,
            or not a GGUF.
    """
    p = Path(path)
    shown = str(p).encode("utf-8", "backslashreplace").decode("utf-8")
    try:
        str(p).encode("utf-8")  # llama.cpp takes the path as UTF-8 bytes
    except UnicodeEncodeError:
        raise ModelFileError(
            f"the {what} name {shown} is not valid UTF-8, which llama.cpp cannot open; "
            "rename the file",
            path=shown,
        ) from None
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
    if os.path.getsize(p) < 24:
        raise ModelFileError(f"{what} {p} is truncated (no GGUF header)", path=str(p))
    return p
