"""Download model files from the Hugging Face Hub once, verify them, use them offline.

The only module that imports ``huggingface_hub``. Files land in our own layout (see
:mod:`qaudio_local.paths`): ``<home>/models/<owner>--<repo>/<filename>``, recorded in
``<home>/manifest.json`` (see :mod:`qaudio_local.manifest`); deleting a file there frees it.

How a pull works:

1. Metadata: ``huggingface_hub.get_hf_file_metadata`` (a HEAD on ``/resolve/<rev>/<file>``)
   gives the commit, the size, the download location (the hub or a CDN) and the ETag, which is
   the file's LFS sha256 (or the git blob sha1 of a small non-LFS file). Missing repos, files
   and revisions are reported here, before anything is downloaded. A digest pinned in the
   registry (``HubFile.sha256``) must equal the hub's.
2. The free disk space is checked for everything still to transfer plus
   :data:`qaudio_local.store.DISK_MARGIN`.
3. Each file is streamed with huggingface_hub's HTTP client (``get_session``, so proxies,
   tokens and offline mode behave as in huggingface_hub) into
   ``.incomplete/<file>.<digest>.part``, hashed as it is written. A dropped connection is
   resumed with an HTTP ``Range`` request, within the pull (:data:`MAX_RETRIES`) and by the next
   pull after an interruption; huggingface_hub >= 1.x deletes its own partial files on failure,
   so this resume is ours. A disk that fills up mid-way gives the space back (the partial
   file is deleted).
4. Only a file whose sha256 matches is moved (``os.replace``) to its final path, and then
   recorded. Anything else is deleted and reported as :class:`IntegrityError`.

A file that is not in the store but in the Hugging Face cache (``HF_HUB_CACHE``: llama.cpp's
``-hf`` and ``huggingface-cli download`` put it there) is verified and used in place, never
downloaded again (:func:`_from_hf_cache`).

Offline (``QAUDIO_OFFLINE=1``, ``HF_HUB_OFFLINE=1`` or ``offline=True``) nothing touches the
network: present files are returned, missing ones raise :class:`OfflineModelMissingError`.
:func:`ensure` never touches the network when every file is present and recorded.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from .. import __version__
from ..errors import (
    DiskFullError,
    HubUnreachableError,
    IntegrityError,
    OfflineModelMissingError,
    RemoteFileNotFoundError,
)
from ..paths import file_path, hf_hub_cache, hub_endpoint, models_dir, offline_enabled, partial_path
from .catalog import HubFile
from .manifest import ManifestRecord, file_lock, fsync_dir, now_utc, read_manifest, update_manifest
from .store import (
    LocalFile,
    PartialFile,
    VerifyResult,
    check_free_space,
    free_bytes,
    hash_file,
    list_local,
    local_path,
    present,
    remove,
    verify,
)

__all__ = [
    "LocalFile",
    "Progress",
    "ProgressCallback",
    "VerifyResult",
    "ensure",
    "list_local",
    "local_path",
    "pull",
    "remove",
    "verify",
]

MAX_RETRIES = 5  # resumes of a dropped transfer within one pull (reset by progress)
RETRY_WAIT_S = 1.0  # pause before such a resume
CONNECT_TIMEOUT_S = 5.0  # an unreachable hub fails after this, not after a read timeout
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX40 = re.compile(r"[0-9a-f]{40}")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """A download progress report: ``done`` of ``total`` bytes of ``file`` are on disk."""

    file: HubFile
    done: int
    total: int


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class _Remote:
    file: HubFile
    url: str
    commit: str | None
    digest: str  # lowercase hex: sha256 (LFS) or git blob sha1
    size: int
    headers: dict[str, str]


# --- pulling ------------------------------------------------------------------------------------


def _unique(files: Sequence[HubFile]) -> list[HubFile]:
    return list(dict.fromkeys(files))


def ensure(
    files: Sequence[HubFile],
    *,
    progress: ProgressCallback | None = None,
    offline: bool | None = None,
    name_hint: str | None = None,
) -> list[LocalFile]:
    """Local paths of ``files``, downloading only what is missing.

    When every file is present and recorded no network call is made, whatever the network
    state. Args and errors as :func:`pull`.
    """
    files = _unique(files)
    records = read_manifest()
    found = {f: present(f, records.get((f.repo, f.filename))) for f in files}
    missing = [f for f in files if found[f] is None]
    pulled = {}
    if missing:
        pulled = {
            lf.file: lf
            for lf in pull(missing, progress=progress, offline=offline, name_hint=name_hint)
        }
    return [found[f] or pulled[f] for f in files]


def pull(
    files: Sequence[HubFile],
    *,
    progress: ProgressCallback | None = None,
    offline: bool | None = None,
    name_hint: str | None = None,
    force: bool = False,
) -> list[LocalFile]:
    """Download ``files`` (or confirm they match the hub), verified, into the local store.

    A file already present is re-downloaded only if the hub now serves a different digest
    (or ``force``). Offline, present files are returned as they are.

    Args:
        files: What to download.
        progress: Called with a :class:`Progress` as bytes arrive (from this thread).
        offline: Force offline (``True``) or online (``False``); ``None`` reads
            ``QAUDIO_OFFLINE`` / ``HF_HUB_OFFLINE``.
        name_hint: The model name for messages (``qaudio pull NAME``).
        force: Download again even when an identical file is present.

    Returns:
        One :class:`LocalFile` per distinct file, in order.

    Raises:
        OfflineModelMissingError: Offline and a file is not downloaded.
        RemoteFileNotFoundError: The hub has no such repository, revision or file.
        HubUnreachableError: No network, a timeout, or a hub error (a partial download is kept
            and resumed next time).
        DiskFullError: Not enough free space, before starting or during the download.
        IntegrityError: The bytes do not match the hub's (or the registry's) sha256.
    """
    files = _unique(files)
    records = read_manifest()
    if offline if offline is not None else offline_enabled():
        out = []
        for f in files:
            found = present(f, records.get((f.repo, f.filename))) or _from_hf_cache(f, None)
            if found is None:
                raise OfflineModelMissingError(f.repo, f.filename, name_hint=name_hint)
            out.append(found)
        return out
    endpoint = hub_endpoint()
    remotes = [_remote(f, endpoint, name_hint) for f in files]
    current = {
        r.file: None if force else (_current(r, records) or _from_hf_cache(r.file, r))
        for r in remotes
    }
    _check_disk([r for r in remotes if current[r.file] is None])
    return [current[r.file] or _download(r, endpoint, progress, name_hint) for r in remotes]


def _current(remote: _Remote, records: dict[tuple[str, str], ManifestRecord]) -> LocalFile | None:
    """The local copy if it is what the hub serves now (adopting an unrecorded exact copy)."""
    f = remote.file
    rec = records.get((f.repo, f.filename))
    found = present(f, rec)
    if found is not None:
        if _HEX64.fullmatch(remote.digest):
            return found if found.sha256 == remote.digest else None
        return found if found.commit == remote.commit else None
    path = file_path(f.repo, f.filename)
    adoptable = rec is None and _HEX64.fullmatch(remote.digest) and path.is_file()
    if adoptable and path.stat().st_size == remote.size and hash_file(path) == remote.digest:
        _record(remote, remote.digest)
        return LocalFile(f, path, remote.size, remote.digest, remote.commit)
    return None


def _from_hf_cache(f: HubFile, remote: _Remote | None) -> LocalFile | None:
    """The copy of ``f`` that llama.cpp's ``-hf`` or ``huggingface-cli download`` left in the
    Hugging Face cache (``HF_HUB_CACHE``), verified and adopted in place (recorded in the
    manifest with its location; never copied, moved or deleted).

    It must hash to the hub's sha256 (``remote``, online) or, offline, to the digest the
    cache filed it under (an LFS blob is named by its sha256), and to a digest the registry
    pins. ``None`` when there is no such copy or it does not verify.
    """
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(
            f.repo, f.filename, cache_dir=hf_hub_cache(), revision=f.revision
        )
    except Exception:  # a malformed cache folder is not a reason to fail the pull
        return None
    if not isinstance(found, str):  # None, or "known not to exist"
        return None
    path = Path(found)
    try:
        blob = path.resolve(strict=True)
        size = blob.stat().st_size
    except OSError:
        return None
    expected = remote.digest if remote is not None else blob.name
    if not _HEX64.fullmatch(expected) or (f.sha256 and f.sha256.lower() != expected):
        return None
    if remote is not None and size != remote.size:
        return None
    try:
        if hash_file(blob) != expected:
            logger.warning("%s in the Hugging Face cache does not match its sha256", path)
            return None
    except OSError:
        return None
    commit = remote.commit if remote is not None else path.parent.name
    now = now_utc()
    rec = ManifestRecord(
        f.repo, f.filename, f.revision, commit, size, expected, now, now, str(path)
    )
    update_manifest([rec])
    return LocalFile(f, path, size, expected, commit)


def _check_disk(remotes: Sequence[_Remote]) -> None:
    todo = 0
    for r in remotes:
        part = partial_path(r.file.repo, r.file.filename, r.digest)
        todo += max(r.size - (part.stat().st_size if part.is_file() else 0), 0)
    check_free_space(todo)


def _record(remote: _Remote, sha256: str) -> None:
    f, now = remote.file, now_utc()
    rec = ManifestRecord(
        f.repo, f.filename, f.revision, remote.commit, remote.size, sha256, now, now
    )
    update_manifest([rec])


# --- the network ---------------------------------------------------------------------------------


def _timeout(var: str) -> Any:
    """An httpx timeout: ``var`` (huggingface_hub's variable, default 10 s) to wait for data,
    at most :data:`CONNECT_TIMEOUT_S` to connect."""
    from huggingface_hub.utils import httpx

    try:
        seconds = float(os.environ.get(var, "") or 10.0)
    except ValueError:
        seconds = 10.0
    return httpx.Timeout(seconds, connect=min(seconds, CONNECT_TIMEOUT_S))


def _reraise(exc: Exception, f: HubFile, endpoint: str, name_hint: str | None) -> NoReturn:
    """Raise our error for a huggingface_hub / HTTP error (anything else unchanged)."""
    err = _translate(exc, f, endpoint, name_hint)
    if err is exc:
        raise exc
    raise err from exc


def _translate(exc: Exception, f: HubFile, endpoint: str, name_hint: str | None) -> Exception:
    """huggingface_hub / HTTP errors -> ours (anything unknown is returned unchanged)."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import httpx

    kind = {
        EntryNotFoundError: "file",
        RevisionNotFoundError: "revision",
        RepositoryNotFoundError: "repo",
    }
    for cls, missing in kind.items():
        if isinstance(exc, cls):
            return RemoteFileNotFoundError(f.repo, f.filename, revision=f.revision, missing=missing)
    if isinstance(exc, OfflineModeIsEnabled):
        return OfflineModelMissingError(f.repo, f.filename, name_hint=name_hint)
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        return HubUnreachableError(endpoint, f"the hub answered HTTP {exc.response.status_code}")
    if isinstance(exc, httpx.TimeoutException):
        return HubUnreachableError(endpoint, "timed out")
    if isinstance(exc, httpx.TransportError):
        return HubUnreachableError(endpoint, f"{type(exc).__name__}: {exc}")
    return exc


def _remote(f: HubFile, endpoint: str, name_hint: str | None) -> _Remote:
    """Ask the hub where ``f`` is, how big it is and what it must hash to."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(f.repo, f.filename, revision=f.revision, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(
            url,
            timeout=_timeout("HF_HUB_ETAG_TIMEOUT"),  # an httpx.Timeout passes through
            library_name="qaudio-local",
            library_version=__version__,
            endpoint=endpoint,
        )
    except Exception as exc:
        _reraise(exc, f, endpoint, name_hint)
    digest = (meta.etag or "").lower()
    if not (_HEX64.fullmatch(digest) or _HEX40.fullmatch(digest)):
        raise IntegrityError(
            f.repo,
            f.filename,
            expected=f.sha256 or "?",
            actual=digest,
            message=f"the hub gives no sha256 for {f.filename} in {f.repo} "
            f"(ETag {meta.etag!r}), so the download could not be verified; "
            "check HF_ENDPOINT, or pin sha256 in the registry entry",
        )
    if f.sha256 and _HEX64.fullmatch(digest) and f.sha256.lower() != digest:
        raise IntegrityError(
            f.repo,
            f.filename,
            expected=f.sha256.lower(),
            actual=digest,
            message=f"the registry pins sha256 {f.sha256} for {f.filename} but "
            f"{f.repo} now serves {digest}; nothing was downloaded; update the "
            "pin in your models TOML if the upstream change is expected",
        )
    headers = build_hf_headers(library_name="qaudio-local", library_version=__version__)
    headers["Accept-Encoding"] = "identity"  # byte offsets must be file offsets (Range)
    location = meta.location
    if location == url and meta.commit_hash:  # served by the hub itself: pin the commit
        location = hf_hub_url(f.repo, f.filename, revision=meta.commit_hash, endpoint=endpoint)
    elif _origin(location) != _origin(url):
        headers.pop("authorization", None)  # never send the token to a CDN
    size = meta.size if meta.size is not None else f.size
    return _Remote(f, location, meta.commit_hash, digest, size, headers)


def _origin(url: str) -> tuple[str, str, int | None]:
    from urllib.parse import urlsplit

    u = urlsplit(url)
    return (u.scheme, u.hostname or "", u.port)


def _range_starts_at(resp: Any, offset: int) -> bool:
    """Whether a 206 response's ``Content-Range`` starts at ``offset``."""
    m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
    return m is not None and int(m[1]) == offset


def _download(
    remote: _Remote, endpoint: str, progress: ProgressCallback | None, name_hint: str | None
) -> LocalFile:
    f = remote.file
    part = partial_path(f.repo, f.filename, remote.digest)
    with file_lock(part.with_suffix(".lock")):
        # another process may have finished it while we waited for the lock
        done = present(f, read_manifest().get((f.repo, f.filename)))
        if done is not None and done.sha256 == remote.digest:
            return done
        start = part.stat().st_size if part.is_file() else 0
        try:
            with part.open("a+b", buffering=0) as fh:
                state = PartialFile(fh, remote.size, remote.digest)
                _fetch(state, remote, endpoint, progress, name_hint)
                os.fsync(fh.fileno())
        except OSError as exc:
            if exc.errno not in _NO_SPACE:
                raise
            part.unlink(missing_ok=True)
            where = models_dir()
            raise DiskFullError(
                str(where),
                needed=0,
                free=free_bytes(where),
                detail=f"the disk filled up while downloading {f.filename}; the partial "
                "download was deleted to give the space back",
            ) from exc
        if not state.matches(remote.digest, remote.size):
            part.unlink(missing_ok=True)
            raise IntegrityError(
                f.repo,
                f.filename,
                expected=remote.digest,
                actual=state.sha256.hexdigest(),
                name_hint=name_hint,
            )
        sha256 = state.sha256.hexdigest()
        if f.sha256 and f.sha256.lower() != sha256:
            part.unlink(missing_ok=True)
            raise IntegrityError(
                f.repo, f.filename, expected=f.sha256.lower(), actual=sha256, name_hint=name_hint
            )
        final = file_path(f.repo, f.filename)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, final)
        fsync_dir(final.parent)
        _record(remote, sha256)
    with contextlib.suppress(OSError):
        part.with_suffix(".lock").unlink()
    return LocalFile(f, final, remote.size, sha256, remote.commit, state.offset - start)


def _fetch(
    state: PartialFile,
    remote: _Remote,
    endpoint: str,
    progress: ProgressCallback | None,
    name_hint: str | None,
) -> None:
    """Stream the rest of ``remote`` into ``state``, resuming dropped connections."""
    from huggingface_hub.utils import get_session, hf_raise_for_status, httpx

    f = remote.file
    timeout = _timeout("HF_HUB_DOWNLOAD_TIMEOUT")
    if progress:
        progress(Progress(f, state.offset, remote.size))
    failures = 0
    while state.offset < remote.size:
        headers = dict(remote.headers)
        if state.offset:
            headers["Range"] = f"bytes={state.offset}-"
        before = state.offset
        try:
            with get_session().stream(
                "GET", remote.url, headers=headers, timeout=timeout, follow_redirects=True
            ) as resp:
                if resp.status_code == 416:  # the server disagrees about the size: start over
                    state.reset()
                    raise httpx.RemoteProtocolError("range not satisfiable")
                hf_raise_for_status(resp)
                if state.offset and resp.status_code != 206:  # Range ignored: start over
                    state.reset()
                elif state.offset and not _range_starts_at(resp, state.offset):
                    state.reset()
                    raise httpx.RemoteProtocolError("the server sent another byte range")
                for chunk in resp.iter_bytes():  # as it arrives: a drop loses nothing
                    state.take(chunk)
                    if progress:
                        progress(Progress(f, state.offset, remote.size))
                    if state.offset > remote.size:
                        break
            if state.offset == before:
                raise httpx.RemoteProtocolError("the server sent no data")
            if state.offset > remote.size or resp.status_code not in (200, 206):
                return  # more than advertised: let verification reject it
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            failures = 0 if state.offset > before else failures + 1
            if failures > MAX_RETRIES:
                raise HubUnreachableError(
                    endpoint,
                    f"the download of {f.filename} kept failing at {state.offset:,} of "
                    f"{remote.size:,} bytes ({type(exc).__name__}); pull again to resume",
                ) from exc
            logger.info("download of %s interrupted (%s); resuming", f.filename, exc)
            time.sleep(RETRY_WAIT_S)
        except Exception as exc:
            _reraise(exc, f, endpoint, name_hint)
