"""The registry's data model: models, their quantizations and projectors, as frozen dataclasses.

:mod:`.registry` fills them from ``models.toml`` files. Files on disk: a quant or projector
may give ``path`` (absolute, ``~``, or relative to its TOML file) instead of ``filename``. It
then has ``local_path`` set, and its ``file`` is a :class:`HubFile` with
``repo == LOCAL_REPO`` naming the file, so code that only looks at ``file`` still sees its
name and size; nothing is downloaded for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UnknownModelError

LOCAL_REPO = "local"
"""``HubFile.repo`` of a quant or projector that is a file on disk (see ``local_path``)."""


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
        local_path: A file on disk to use instead of downloading ``file`` (user entries).
    """

    name: str
    file: HubFile
    bits_per_weight: float
    local_path: Path | None = None


@dataclass(frozen=True)
class Projector:
    """One audio projector (mmproj) GGUF variant, e.g. ``"f16"`` or ``"q8_0"``.

    Attributes:
        name: e.g. ``"f16"``.
        file: The projector GGUF.
        local_path: A file on disk to use instead of downloading ``file`` (user entries).
    """

    name: str
    file: HubFile
    local_path: Path | None = None


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
        prompt_format: ``"chat"`` (the Instruct model's chat template) or ``"base"`` (the
            base model: the audio, then a task prompt).
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
    prompt_format: str = "chat"


@dataclass(frozen=True)
class Catalog:
    """Every model the registry knows, after user files are merged in.

    Attributes:
        models: The entries, in the order they were first defined.
        default: Canonical name of the model used when none is given.
        sources: The files read, in order (the packaged registry first).
    """

    models: tuple[ModelEntry, ...]
    default: str
    sources: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Canonical model names."""
        return tuple(m.name for m in self.models)

    def get(self, name: str | None = None) -> ModelEntry:
        """Find a model by name or alias (case-insensitive); ``None`` or ``""`` = the default.

        Raises:
            UnknownModelError: No model has that name or alias; the message lists them.
        """
        wanted = (name or self.default).strip().casefold()
        for m in self.models:
            if wanted == m.name.casefold() or wanted in (a.casefold() for a in m.aliases):
                return m
        raise UnknownModelError(name or "", kind="model", valid=self.names)

    def find_file(self, path: str | Path) -> ModelEntry | None:
        """The model one of whose text-model GGUFs ``path`` is, told by its file name (a
        hub file's name, e.g. ``Qwen2-Audio-7B-Instruct.Q4_K_M.gguf``, case-insensitive)
        or by being a registry entry's own ``path``; ``None`` when no model claims it."""
        p = Path(path).expanduser()
        for m in self.models:
            for q in m.quants:
                if q.local_path is not None and _same_file(q.local_path, p):
                    return m
                if q.file.filename.rsplit("/", 1)[-1].casefold() == p.name.casefold():
                    return m
        return None

    def resolve(self, spec: str | None = None) -> tuple[ModelEntry, str]:
        """Resolve ``"name[:quant]"`` to the entry and the quant's canonical name or ``"auto"``.

        An empty name means the default model; a missing or empty quant means ``"auto"``.
        Quant names are case-insensitive (``q4_k_m`` is ``Q4_K_M``).

        Raises:
            UnknownModelError: Unknown model or quant; the message lists the valid ones.
        """
        name, _, quant = (spec or "").strip().partition(":")
        entry = self.get(name)
        quant = quant.strip()
        if not quant or quant.casefold() == "auto":
            return entry, "auto"
        return entry, find_quant(entry, quant).name


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return a == b


def find_quant(entry: ModelEntry, name: str) -> Quant:
    """The quant of ``entry`` called ``name`` (case-insensitive).

    Raises:
        UnknownModelError: ``entry`` has no such quant; the message lists its quants.
    """
    for q in entry.quants:
        if q.name.casefold() == name.strip().casefold():
            return q
    valid = tuple(q.name for q in entry.quants)
    raise UnknownModelError(name, kind="quant", valid=valid, model=entry.name)


def find_projector(entry: ModelEntry, name: str) -> Projector:
    """The projector of ``entry`` called ``name`` (case-insensitive).

    Raises:
        UnknownModelError: ``entry`` has no such projector; the message lists its projectors.
    """
    for p in entry.projectors:
        if p.name.casefold() == name.strip().casefold():
            return p
    valid = tuple(p.name for p in entry.projectors)
    raise UnknownModelError(name, kind="projector", valid=valid, model=entry.name)
