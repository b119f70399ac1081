"""The local download manifest: what was pulled, from which commit, and its sha256.

``<home>/manifest.json`` (see :mod:`qaudio_local.paths`) looks like::

    {
      "version": 1,
      "files": [
        {
          "repo": "mradermacher/Qwen2-Audio-7B-Instruct-GGUF",
          "filename": "Qwen2-Audio-7B-Instruct.Q4_K_M.gguf",
          "revision": "main",
          "commit": "0123...cdef",
          "size": 4815162342,
          "sha256": "9f86...0a08",
          "downloaded_at": "2025-01-31T12:00:00Z",
          "verified_at": "2025-01-31T12:00:00Z"
        }
      ]
    }

``sha256`` is what the file hashed to when it was written; it matched the hub's own digest
(and any digest pinned in the registry). It is what :func:`qaudio_local.hub.verify` re-checks,
with no network. The manifest is replaced atomically (temporary file, fsync, ``os.replace``),
so a reader never sees half of it; :func:`update_manifest` serialises read-modify-write cycles
between threads and processes with a lock file (``<home>/manifest.lock``).
Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..paths import file_path, manifest_path, qaudio_home, write_atomic

FORMAT_VERSION = 1
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ManifestRecord:
    """One downloaded file.

    Attributes:
        repo: Hub repository id.
        filename: Path inside the repository.
        revision: The revision asked for (branch, tag or commit).
        commit: The commit the hub resolved it to, when it said.
        size: Size in bytes.
        sha256: Hex digest of the file as written.
        downloaded_at: When the download completed (ISO 8601, UTC).
        verified_at: When the file last hashed to ``sha256`` (ISO 8601, UTC).
        location: Where the file is when it is not in this store: a Hugging Face cache
            snapshot (downloaded by llama.cpp's ``-hf`` or ``huggingface-cli``) adopted in
            place; ``None`` for files in the store.
    """

    repo: str
    filename: str
    revision: str
    commit: str | None
    size: int
    sha256: str
    downloaded_at: str
    verified_at: str
    location: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        """``(repo, filename)``: a file has at most one record."""
        return (self.repo, self.filename)

    @property
    def path(self) -> Path:
        """Where the file lives."""
        return Path(self.location) if self.location else file_path(self.repo, self.filename)


def now_utc() -> str:
    """The current time as ISO 8601 UTC with a ``Z``, to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _record(raw: object) -> ManifestRecord | None:
    if not isinstance(raw, dict):
        return None
    try:
        rec = ManifestRecord(
            repo=str(raw["repo"]),
            filename=str(raw["filename"]),
            revision=str(raw.get("revision", "main")),
            commit=None if raw.get("commit") is None else str(raw["commit"]),
            size=int(raw["size"]),
            sha256=str(raw["sha256"]).lower(),
            downloaded_at=str(raw.get("downloaded_at", "")),
            verified_at=str(raw.get("verified_at", "")),
            location=None if raw.get("location") is None else str(raw["location"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    return rec if len(rec.sha256) == 64 and rec.size >= 0 else None


def read_manifest(path: Path | None = None) -> dict[tuple[str, str], ManifestRecord]:
    """Every record, keyed by ``(repo, filename)``; empty when there is no manifest yet.

    An unreadable or malformed manifest reads as empty (logged as a warning): the files it
    described are then treated as not downloaded, never as trusted.
    """
    path = path or manifest_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable manifest %s: %s", path, exc)
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list):
        logger.warning("ignoring malformed manifest %s", path)
        return {}
    records = [r for r in map(_record, files) if r is not None]
    return {r.key: r for r in records}


def write_manifest(records: Iterable[ManifestRecord], path: Path | None = None) -> None:
    """Replace the manifest atomically with ``records``.

    Raises:
        OSError: The folder is not writable or the disk is full (the old manifest is kept).
    """
    path = path or manifest_path()
    rows = [asdict(r) for r in sorted(records, key=lambda r: r.key)]
    write_atomic(path, json.dumps({"version": FORMAT_VERSION, "files": rows}, indent=2) + "\n")
    fsync_dir(path.parent)


def update_manifest(
    add: Sequence[ManifestRecord] = (), drop: Sequence[tuple[str, str]] = ()
) -> None:
    """Add (or replace) and drop records, under the manifest lock.

    Raises:
        OSError: The manifest could not be written (it is left as it was).
    """
    with file_lock(qaudio_home() / "manifest.lock"):
        records = read_manifest()
        for key in drop:
            records.pop(key, None)
        records.update({r.key: r for r in add})
        write_manifest(records.values())


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) between threads and processes.

    Raises:
        OSError: The lock file cannot be created.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as fh:
        if sys.platform == "win32":
            import msvcrt

            while True:
                fh.seek(0)
                try:
                    msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)  # retries for ~10 s itself
                    break
                except OSError:
                    continue
            try:
                yield
            finally:
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
