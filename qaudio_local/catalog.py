"""The model registry: ``models.toml`` parsed into frozen dataclasses.

(Skeleton: the data model is fixed here so the hub and the planner can be written
against it; parsing and name resolution are filled in next.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HubFile:
    """One file on the Hugging Face Hub.

    Attributes:
        repo: Repository id, e.g. ``"mradermacher/Qwen2-Audio-7B-Instruct-GGUF"``.
        filename: Path inside the repository.
        size: Expected size in bytes, from the registry (used for planning and the free-disk
            check before the hub is asked; the hub's own size wins when known).
        revision: Branch, tag or commit (default ``"main"``).
        sha256: Pinned digest, if the registry knows it; otherwise the hub's LFS digest is
            used and recorded locally at download time.
    """

    repo: str
    filename: str
    size: int
    revision: str = "main"
    sha256: str | None = None


@dataclass(frozen=True)
class Quant:
    """One quantization level of a model's text GGUF.

    Attributes:
        name: e.g. ``"Q4_K_M"``.
        file: The text-model GGUF.
        bits_per_weight: Average bits per weight (for display and sanity checks).
    """

    name: str
    file: HubFile
    bits_per_weight: float


@dataclass(frozen=True)
class Projector:
    """One audio projector (mmproj) GGUF variant, e.g. ``"f16"`` or ``"q8_0"``."""

    name: str
    file: HubFile


@dataclass(frozen=True)
class ModelDims:
    """What the planner needs before anything is downloaded."""

    n_layers: int
    hidden_size: int
    n_heads: int
    n_kv_heads: int
    max_context: int
    vocab_size: int


@dataclass(frozen=True)
class ModelEntry:
    """A model in the registry.

    Attributes:
        name: Canonical name, e.g. ``"qwen2-audio-7b-instruct"``.
        aliases: Other accepted names, e.g. ``("qwen2-audio",)``.
        description: One line for ``qaudio list``.
        dims: Architecture numbers for planning.
        quants: Quantization levels, best (largest) last.
        projectors: Projector variants, preferred first.
    """

    name: str
    aliases: tuple[str, ...]
    description: str
    dims: ModelDims
    quants: tuple[Quant, ...]
    projectors: tuple[Projector, ...]
