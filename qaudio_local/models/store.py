"""The local store of downloaded model files: look-ups, verification and removal.

No network and no huggingface_hub here (see :mod:`qaudio_local.hub` for downloads); the layout
is described in :mod:`qaudio_local.paths`, the manifest in :mod:`qaudio_local.manifest`.
Standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Literal

from ..errors import DiskFullError
from ..paths import file_path, models_dir, partial_files
from .catalog import HubFile
from .manifest import ManifestRecord, now_utc, read_manifest, update_manifest

HASH_BLOCK = 8 * 1024**2  # bytes read at a time when hashing
DISK_MARGIN = 256 * 1024**2  # bytes left free beyond the downloads themselves
_HEX40 = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class LocalFile:
    """A verified file on disk.

    Attributes:
        file: What was asked for.
        path: Where it is.
        size: Its size in bytes.
        sha256: Its digest, as recorded in the manifest.
        commit: The hub commit it came from, when known.
        transferred: Bytes this call downloaded (0 when it was already present).
    """

    file: HubFile
    path: Path
    size: int
    sha256: str
    commit: str | None
    transferred: int = 0


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of re-checking one file.

    Attributes:
        file: The manifest record (or a synthetic one for a file never pulled).
        status: ``"ok"``, ``"corrupt"`` (wrong size or digest), ``"missing"`` (recorded but
            gone) or ``"not-pulled"``.
        actual_sha256: What the file hashed to (``None`` if it was not hashed).
        removed: Whether a corrupt file and its record were deleted.
    """

    file: ManifestRecord
    status: Literal["ok", "corrupt", "missing", "not-pulled"]
    actual_sha256: str | None = None
    removed: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def matches(file: HubFile, rec: ManifestRecord) -> bool:
    """Whether a record is acceptable for ``file`` (pinned digest, pinned commit)."""
    if file.sha256 and file.sha256.lower() != rec.sha256:
        return False
    return not (_HEX40.fullmatch(file.revision) and rec.commit and rec.commit != file.revision)


def present(file: HubFile, rec: ManifestRecord | None) -> LocalFile | None:
    """The local copy of ``file`` described by ``rec`` if it is there and of its size."""
    if rec is None or not matches(file, rec):
        return None
    path = rec.path
    try:
        if not path.is_file() or path.stat().st_size != rec.size:
            return None
    except OSError:
        return None
    return LocalFile(file, path, rec.size, rec.sha256, rec.commit)


def local_path(file: HubFile) -> Path | None:
    """The file's path if it is downloaded, recorded and of the recorded size (no hashing)."""
    found = present(file, read_manifest().get((file.repo, file.filename)))
    return found.path if found else None


def list_local() -> list[ManifestRecord]:
    """Every recorded download, sorted by repository and file name."""
    return sorted(read_manifest().values(), key=lambda r: r.key)


def hash_file(path: Path) -> str:
    """The sha256 of a file, hex."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def verify(
    files: Sequence[HubFile] | None = None, *, full: bool = True, discard_corrupt: bool = True
) -> list[VerifyResult]:
    """Re-check downloaded files against the manifest; never touches the network.

    Args:
        files: The files to check; ``None`` checks every recorded download.
        full: Re-hash each file (else only its size is checked).
        discard_corrupt: Delete a corrupt file and its record, so that it is never loaded and
            the next pull fetches it again.

    Returns:
        One result per file, in order.

    Raises:
        OSError: A file could not be read or deleted.
    """
    records = read_manifest()
    if files is None:
        files = [HubFile(r.repo, r.filename, r.size, r.revision) for r in records.values()]
    results: list[VerifyResult] = []
    for f in files:
        rec = records.get((f.repo, f.filename))
        if rec is None:
            dummy = ManifestRecord(f.repo, f.filename, f.revision, None, f.size, "", "", "")
            results.append(VerifyResult(dummy, "not-pulled"))
            continue
        path = rec.path
        if not path.is_file():
            results.append(VerifyResult(rec, "missing"))
            continue
        actual = hash_file(path) if full else None
        bad = path.stat().st_size != rec.size or not matches(f, rec)
        if bad or (actual is not None and actual != rec.sha256):
            if discard_corrupt and rec.location is None:  # never delete outside the store
                path.unlink()
            discarded = discard_corrupt and rec.location is None
            results.append(VerifyResult(rec, "corrupt", actual, removed=discarded))
        else:
            results.append(VerifyResult(rec, "ok", actual))
    checked = [replace(r.file, verified_at=now_utc()) for r in results if r.ok and full]
    dropped = [
        r.file.key
        for r in results
        if r.removed or r.status == "missing" or (r.status == "corrupt" and r.file.location)
    ]
    if checked or dropped:
        update_manifest(checked, dropped)
    return results


def remove(files: Sequence[HubFile]) -> int:
    """Delete downloaded and partial copies of ``files`` and their records. Files adopted
    from the Hugging Face cache (records with a ``location``) are forgotten, never deleted:
    they belong to that cache.

    Returns:
        The bytes freed.

    Raises:
        OSError: A file could not be deleted.
    """
    freed = 0
    for f in files:
        path = file_path(f.repo, f.filename)
        for p in [path, *partial_files(f.repo, f.filename)]:
            with contextlib.suppress(FileNotFoundError):
                size = p.stat().st_size
                p.unlink()
                freed += size
        _prune_empty(path.parent)
    update_manifest(drop=[(f.repo, f.filename) for f in files])
    return freed


def _prune_empty(folder: Path) -> None:
    root = models_dir()
    while folder != root and root in folder.parents:
        incomplete = folder / ".incomplete"
        with contextlib.suppress(OSError):
            incomplete.rmdir()
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


# --- downloads in progress ---------------------------------------------------------------------


def free_bytes(where: Path) -> int:
    """Free bytes on the disk holding ``where`` (or its nearest existing parent)."""
    probe = next(p for p in [where, *where.parents] if p.exists())
    return shutil.disk_usage(probe).free


def check_free_space(todo: int) -> None:
    """Make sure ``todo`` more bytes plus :data:`DISK_MARGIN` fit in the models folder.

    Raises:
        DiskFullError: They do not; it carries both numbers.
    """
    if todo <= 0:
        return
    where = models_dir()
    free = free_bytes(where)
    if free < todo + DISK_MARGIN:
        raise DiskFullError(
            str(where),
            needed=todo + DISK_MARGIN,
            free=free,
            detail=f"{todo:,} bytes to download plus a {DISK_MARGIN // 1024**2} MiB margin",
        )


def write_all(fh: BinaryIO, data: bytes) -> None:
    """Write all of ``data`` to an unbuffered file (the one place downloads touch the disk)."""
    view = memoryview(data)
    while view:
        n = fh.write(view)
        view = view[n or 0 :]


class PartialFile:
    """A ``.part`` file being downloaded (opened ``a+b``, unbuffered), with running digests.

    On creation, whatever an earlier attempt left in the file is hashed, so the download
    resumes after it; a file longer than ``size`` is emptied. Besides the sha256, the git blob
    id (``sha1("blob <size>\\0" + data)``) is computed when ``digest`` is a 40-hex one, as the
    hub's ETag is for small non-LFS files.

    Attributes:
        offset: Bytes in the file so far.
    """

    def __init__(self, fh: BinaryIO, size: int, digest: str) -> None:
        self.fh, self.size, self.git = fh, size, bool(_HEX40.fullmatch(digest))
        self._restart()
        if os.fstat(fh.fileno()).st_size > size:
            self.reset()
        fh.seek(0)
        while block := fh.read(HASH_BLOCK):
            self._hash(block)

    def _restart(self) -> None:
        self.offset = 0
        self.sha256 = hashlib.sha256()
        self.sha1: Any = hashlib.sha1(f"blob {self.size}\0".encode()) if self.git else None

    def _hash(self, data: bytes) -> None:
        self.sha256.update(data)
        if self.sha1 is not None:
            self.sha1.update(data)
        self.offset += len(data)

    def reset(self) -> None:
        """Empty the file and start over."""
        self.fh.seek(0)
        self.fh.truncate()
        self._restart()

    def take(self, data: bytes) -> None:
        """Append ``data`` to the file and the digests."""
        write_all(self.fh, data)
        self._hash(data)

    def matches(self, digest: str, size: int) -> bool:
        """Whether the bytes are exactly ``size`` long and hash to ``digest``."""
        got = (self.sha1 or self.sha256).hexdigest()
        return got == digest and self.offset == size
