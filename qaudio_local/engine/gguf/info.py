"""What the GGUF checks learn about a file: the facts the runtime needs, as frozen records.

:mod:`.check` produces them and :mod:`.loadcheck` keys its cached verdicts on them; they
live here so that both can import them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["MMAP_ALIGNMENT", "ProjectorInfo", "TextModelInfo"]


# llama.cpp's backends want tensor data at this alignment: a file aligned to less (any
# power of two is valid GGUF) cannot be mapped into memory, only read into buffers
MMAP_ALIGNMENT = 32


@dataclass(frozen=True)
class TextModelInfo:
    """What the runtime needs to know about a text GGUF.

    Attributes:
        alignment: The file's data alignment; below :data:`MMAP_ALIGNMENT` the file is
            read into memory instead of mapped (llama.cpp aborts on a mapped one).
        prompt_format: ``"chat"`` (the Instruct model's chat template) or ``"base"`` (the
            base model: audio, then a task prompt), from the file's metadata.
    """

    path: Path
    architecture: str
    n_embd: int
    n_layer: int
    n_ctx_train: int
    n_vocab: int
    quantized: bool = False
    header_digest: str = ""
    alignment: int = MMAP_ALIGNMENT
    prompt_format: str = "chat"

    @property
    def mappable(self) -> bool:
        """llama.cpp may map the file into memory (its data is aligned enough)."""
        return self.alignment % MMAP_ALIGNMENT == 0


@dataclass(frozen=True)
class ProjectorInfo:
    """What the runtime needs to know about an audio projector GGUF."""

    path: Path
    projector_type: str
    projection_dim: int
    n_mels: int
    quantized: bool = False
    header_digest: str = ""
