"""What the GGUF checks learn about a file: the facts the runtime needs, as frozen records.

:mod:`.check` produces them and :mod:`.loadcheck` keys its cached verdicts on them; they
live here so that both can import them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProjectorInfo", "TextModelInfo"]


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
    header_digest: str = ""


@dataclass(frozen=True)
class ProjectorInfo:
    """What the runtime needs to know about an audio projector GGUF."""

    path: Path
    projector_type: str
    projection_dim: int
    n_mels: int
    quantized: bool = False
    header_digest: str = ""
