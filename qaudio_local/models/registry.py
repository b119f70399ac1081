"""The model registry: ``models.toml`` files parsed strictly into :mod:`.catalog` entries.

The registry shipped in the package (``qaudio_local/models.toml``; the repository root holds an
identical copy) is read first, then user files on top: ``$QAUDIO_HOME/models.toml`` if present,
every file in ``QAUDIO_MODELS`` (``os.pathsep``-separated), then any passed to
:func:`load_catalog`. The schema is documented at the top of ``models.toml``.

Merge rule: a user table whose name (or alias) is already known *extends* that model:
scalar keys replace, aliases are added, quants and projectors are merged by name (a
same-named one replaces the old one, a new one is added). A model's ``repo`` and ``revision``
are defaults for the files listed after them, in any file, so an added quant may omit them. A
new name defines a new model, which must then be complete in that one file.

Every table is checked for unknown keys, missing keys and wrong types; a problem raises
:class:`CatalogError` naming the file, the table and the key.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import CatalogError
from ..paths import qaudio_home
from .catalog import LOCAL_REPO, Catalog, HubFile, ModelDims, ModelEntry, Projector, Quant

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_SHA256_RE = re.compile(r"[0-9a-f]{64}\Z")
_TOP_KEYS = ("default", "models")
_MODEL_KEYS = (
    "aliases", "description", "prompt", "repo", "revision", "dims", "quants", "projectors",
)  # fmt: skip
PROMPT_FORMATS = ("chat", "base")
_DIM_KEYS = tuple(f.name for f in dataclasses.fields(ModelDims))
_FILE_KEYS = ("name", "filename", "path", "size", "repo", "revision", "sha256")
_QUANT_KEYS = (*_FILE_KEYS, "bits_per_weight")
_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    dict: "a table",
    list: "an array",
}


@dataclass
class _Draft:
    """A model being assembled from one or more files (private, mutable while loading)."""

    name: str
    source: str
    aliases: list[str] = field(default_factory=list)
    description: str = ""
    prompt: str = "chat"
    repo: str | None = None  # default hub repo for its files
    revision: str = "main"
    dims: dict[str, int] = field(default_factory=dict)
    quants: dict[str, Quant] = field(default_factory=dict)
    projectors: dict[str, Projector] = field(default_factory=dict)


@dataclass(frozen=True)
class _Where:
    """Where a value sits, for error messages."""

    src: str
    table: str | None = None

    def error(self, message: str, key: str | None = None) -> CatalogError:
        return CatalogError(message, path=self.src, table=self.table, key=key)

    def sub(self, table: str) -> _Where:
        return _Where(self.src, table)


def _check_keys(tbl: dict[str, Any], allowed: tuple[str, ...], where: _Where) -> None:
    for key in tbl:
        if key not in allowed:
            raise where.error(f"unknown key; valid keys here: {', '.join(allowed)}", key)


def _get(tbl: dict[str, Any], key: str, kind: type, where: _Where, required: bool) -> Any:
    """``tbl[key]`` checked to be of ``kind`` (ints accepted for floats, bools never)."""
    if key not in tbl:
        if required:
            raise where.error("missing; add it", key)
        return None
    value = tbl[key]
    ok = isinstance(value, int | float) if kind is float else isinstance(value, kind)
    if not ok or (isinstance(value, bool) and kind is not bool):
        raise where.error(f"expected {_TYPE_NAMES.get(kind, kind.__name__)}, got {value!r}", key)
    return float(value) if kind is float else value


def _positive(tbl: dict[str, Any], key: str, kind: type, where: _Where, required: bool) -> Any:
    value = _get(tbl, key, kind, where, required)
    if value is not None and value <= 0:
        raise where.error(f"must be positive, got {value!r}", key)
    return value


def _name(value: str, where: _Where, key: str) -> str:
    if not _NAME_RE.match(value) or value.casefold() == "auto":
        raise where.error(
            f"{value!r} is not a valid name (letters, digits, '.', '_', '-'; not 'auto')", key
        )
    return value


def _table_list(tbl: dict[str, Any], key: str, where: _Where) -> list[dict[str, Any]]:
    value = tbl.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise where.error(f"expected an array of tables ([[...{key}]]), got {value!r}", key)
    return value


class RegistryBuilder:
    """Applies registry files one after another, then builds the entries."""

    def __init__(self) -> None:
        self._drafts: list[_Draft] = []
        self._sources: list[str] = []
        self._default: tuple[str, str] | None = None  # (name as written, file that set it)

    def apply_file(self, path: Path) -> None:
        """Read and apply one user file (relative ``path`` values resolve against its folder).

        Raises:
            CatalogError: The file is missing, unreadable, not TOML, or breaks the schema.
        """
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CatalogError(
                f"cannot read this models file ({exc.strerror or exc}); fix the path "
                "(QAUDIO_MODELS lists files separated by the OS path separator)",
                path=str(path),
            ) from exc
        self.apply_text(text, str(path), path.resolve().parent)

    def apply_text(self, text: str, src: str, base_dir: Path | None) -> None:
        """Apply the registry in ``text``, labelled ``src`` in errors.

        Raises:
            CatalogError: ``text`` is not TOML or breaks the schema.
        """
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise CatalogError(f"not valid TOML ({exc}); fix the syntax", path=src) from exc
        where = _Where(src)
        _check_keys(data, _TOP_KEYS, where)
        default = _get(data, "default", str, where, required=False)
        if default is not None:
            self._default = (default, src)
        models = _get(data, "models", dict, where, required=False) or {}
        for key, tbl in models.items():
            mw = where.sub(f"models.{key}")
            if not isinstance(tbl, dict):
                raise mw.error(f"expected a table, got {tbl!r}")
            self._apply_model(_name(key, mw, "(table name)"), tbl, mw, base_dir)
        self._sources.append(src)
        self._check_unique(src)

    def _find(self, name: str) -> _Draft | None:
        key = name.casefold()
        for d in self._drafts:
            if key == d.name.casefold() or key in (a.casefold() for a in d.aliases):
                return d
        return None

    def _apply_model(
        self, name: str, tbl: dict[str, Any], where: _Where, base_dir: Path | None
    ) -> None:
        _check_keys(tbl, _MODEL_KEYS, where)
        draft = self._find(name)
        new = draft is None
        if draft is None:
            draft = _Draft(name=name, source=where.src)
        aliases = _get(tbl, "aliases", list, where, required=False) or []
        for alias in aliases:
            if not isinstance(alias, str):
                raise where.error(f"expected a list of strings, got {aliases!r}", "aliases")
            alias = _name(alias, where, "aliases")
            known = [draft.name.casefold(), *(a.casefold() for a in draft.aliases)]
            if alias.casefold() not in known:
                draft.aliases.append(alias)
        description = _get(tbl, "description", str, where, required=new)
        if description is not None:
            draft.description = description
        prompt = _get(tbl, "prompt", str, where, required=False)
        if prompt is not None:
            if prompt not in PROMPT_FORMATS:
                raise where.error(f"must be one of {', '.join(PROMPT_FORMATS)}", "prompt")
            draft.prompt = prompt
        dims = _get(tbl, "dims", dict, where, required=new)
        if dims is not None:
            draft.dims.update(_parse_dims(dims, where.sub(f"{where.table}.dims"), complete=new))
        draft.repo = _get(tbl, "repo", str, where, required=False) or draft.repo
        draft.revision = _get(tbl, "revision", str, where, required=False) or draft.revision
        defaults = {"repo": draft.repo, "revision": draft.revision}
        for kind, target in (("quants", draft.quants), ("projectors", draft.projectors)):
            items = _table_list(tbl, kind, where)
            if new and not items:
                raise where.error(f"a new model needs at least one [[{where.table}.{kind}]]", kind)
            seen: set[str] = set()
            for i, item in enumerate(items):
                iw = where.sub(f"{where.table}.{kind}[{i}]")
                parsed = _parse_file(item, iw, defaults, base_dir, quant=kind == "quants")
                if parsed.name.casefold() in seen:
                    raise iw.error(f"{parsed.name!r} appears twice in this model", "name")
                seen.add(parsed.name.casefold())
                target[parsed.name.casefold()] = parsed  # type: ignore[assignment]
        if new:
            self._drafts.append(draft)

    def _check_unique(self, src: str) -> None:
        owner: dict[str, str] = {}
        for d in self._drafts:
            for n in (d.name, *d.aliases):
                other = owner.setdefault(n.casefold(), d.name)
                if other != d.name:
                    raise CatalogError(
                        f"the name or alias {n!r} is used by both {other!r} and {d.name!r}; "
                        "rename one of them",
                        path=src,
                        table=f"models.{d.name}",
                        key="aliases",
                    )

    def build(self) -> tuple[tuple[ModelEntry, ...], str, tuple[str, ...]]:
        """The merged entries, the default model's canonical name and the files read.

        Raises:
            CatalogError: No model at all, or ``default`` names an unknown model.
        """
        if not self._drafts:
            raise CatalogError("no models defined; add a [models.NAME] table", path="registry")
        entries = tuple(_entry(d) for d in self._drafts)
        default = entries[0].name
        if self._default is not None:
            found = self._find(self._default[0])
            if found is None:
                raise CatalogError(
                    f"names no known model; valid: {', '.join(e.name for e in entries)}",
                    path=self._default[1],
                    key="default",
                )
            default = found.name
        return entries, default, tuple(self._sources)


def _parse_dims(tbl: dict[str, Any], where: _Where, complete: bool) -> dict[str, int]:
    _check_keys(tbl, _DIM_KEYS, where)
    dims = {k: _positive(tbl, k, int, where, required=complete) for k in _DIM_KEYS}
    return {k: v for k, v in dims.items() if v is not None}


def _parse_file(
    tbl: dict[str, Any],
    where: _Where,
    defaults: dict[str, Any],
    base_dir: Path | None,
    quant: bool,
) -> Quant | Projector:
    """One ``[[...quants]]`` or ``[[...projectors]]`` table."""
    _check_keys(tbl, _QUANT_KEYS if quant else _FILE_KEYS, where)
    name = _name(_get(tbl, "name", str, where, required=True), where, "name")
    filename = _get(tbl, "filename", str, where, required=False)
    local = _get(tbl, "path", str, where, required=False)
    if (filename is None) == (local is None):
        raise where.error("give exactly one of `filename` (on the hub) or `path` (on disk)")
    sha256 = _get(tbl, "sha256", str, where, required=False)
    if sha256 is not None and not _SHA256_RE.match(sha256):
        raise where.error("expected 64 lowercase hex digits", "sha256")
    revision = _get(tbl, "revision", str, where, required=False) or defaults["revision"]
    local_path = None
    if local is not None:
        local_path = Path(local).expanduser()
        if not local_path.is_absolute():
            if base_dir is None:
                raise where.error("must be an absolute path here", "path")
            local_path = base_dir / local_path
        size = _local_size(tbl, local_path, where)
        hub = HubFile(LOCAL_REPO, local_path.name, size, revision, sha256)
    else:
        repo = _get(tbl, "repo", str, where, required=False) or defaults["repo"]
        if repo is None:
            raise where.error("missing; set `repo` here or on the model", "repo")
        size = _positive(tbl, "size", int, where, required=True)
        hub = HubFile(repo, filename, size, revision, sha256)
    if not quant:
        return Projector(name=name, file=hub, local_path=local_path)
    bpw = _positive(tbl, "bits_per_weight", float, where, required=True)
    return Quant(name=name, file=hub, bits_per_weight=bpw, local_path=local_path)


def _local_size(tbl: dict[str, Any], path: Path, where: _Where) -> int:
    """The size of a file on disk: measured when it exists, else the ``size`` key."""
    given = _positive(tbl, "size", int, where, required=False)
    try:
        return path.stat().st_size
    except OSError:
        if given is None:
            raise where.error(f"file {path} not found; fix `path` or also give `size`") from None
        return int(given)


def _entry(d: _Draft) -> ModelEntry:
    dims = ModelDims(**d.dims)
    where = _Where(d.source, f"models.{d.name}.dims")
    if dims.hidden_size % dims.n_heads or dims.n_heads % dims.n_kv_heads:
        raise where.error("hidden_size must divide by n_heads, and n_heads by n_kv_heads")
    quants = sorted(d.quants.values(), key=lambda q: (q.bits_per_weight, q.file.size))
    return ModelEntry(
        name=d.name,
        aliases=tuple(d.aliases),
        description=d.description,
        prompt_format=d.prompt,
        dims=dims,
        quants=tuple(quants),
        projectors=tuple(d.projectors.values()),
    )


def user_registry_files() -> list[Path]:
    """The user's registry files: ``$QAUDIO_HOME/models.toml`` if present, then ``QAUDIO_MODELS``.

    Paths listed in ``QAUDIO_MODELS`` are returned whether or not they exist, so that a
    mistyped one is reported rather than ignored.
    """
    files = []
    home_file = qaudio_home() / "models.toml"
    if home_file.is_file():
        files.append(home_file)
    env = os.environ.get("QAUDIO_MODELS", "")
    files += [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    return files


def load_catalog(extra: list[Path] | None = None, *, user_files: bool = True) -> Catalog:
    """Load the packaged registry, then merge user files on top (see the module docstring).

    Args:
        extra: More TOML files, applied last (after ``$QAUDIO_HOME/models.toml`` and
            ``QAUDIO_MODELS``).
        user_files: Whether to read ``$QAUDIO_HOME/models.toml`` and ``QAUDIO_MODELS``.

    Raises:
        CatalogError: A file is missing, unreadable, not TOML, or breaks the schema; the
            message names the file, the table and the key.
    """
    builder = RegistryBuilder()
    packaged = resources.files("qaudio_local").joinpath("models.toml")
    builder.apply_text(packaged.read_text(encoding="utf-8"), f"{packaged} (packaged)", None)
    for path in [*(user_registry_files() if user_files else []), *(extra or [])]:
        builder.apply_file(Path(path))
    models, default, sources = builder.build()
    return Catalog(models=models, default=default, sources=sources)
