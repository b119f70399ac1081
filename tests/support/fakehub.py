"""A stand-in for the Hugging Face Hub's file endpoints, on 127.0.0.1, for download tests.

It speaks the part of the protocol that ``huggingface_hub.get_hf_file_metadata`` and our own
download loop use:

- ``HEAD``/``GET /{owner}/{repo}/resolve/{revision}/{filename}`` with ``X-Repo-Commit``,
  ``ETag`` (the sha256 for LFS files, the git blob sha1 otherwise), ``X-Linked-Etag`` and
  ``X-Linked-Size`` for LFS files, ``Content-Length`` and ``Accept-Ranges``;
- ``Range: bytes=N-`` -> ``206`` with ``Content-Range`` (``416`` past the end);
- in ``cdn`` mode, LFS files answer ``302`` with ``Location`` on a second server (another
  origin, like the real CDN) that serves ``/blobs/{sha256}``;
- ``404`` with ``X-Error-Code: RepoNotFound`` / ``RevisionNotFound`` / ``EntryNotFound``.

Knobs for tests: :meth:`FakeHub.corrupt` (serve flipped bytes, still advertise the true sha256),
:meth:`FakeHub.interrupt` (close the connection once the body reaches a file offset), a request
log and a body byte counter (to prove what was transferred, or that nothing was).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_BLOB = re.compile(r"^/blobs/(?P<sha>[0-9a-f]{64})$")


@dataclass
class FakeFile:
    """One served file."""

    data: bytes
    lfs: bool = True
    flipped: bool = False  # serve corrupted bytes while advertising the true digest

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def etag(self) -> str:
        if self.lfs:
            return self.sha256
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    def body(self) -> bytes:
        if not self.flipped:
            return self.data
        mid = len(self.data) // 2
        return (
            self.data[:mid]
            + bytes(b ^ 0xFF for b in self.data[mid : mid + 16])
            + (self.data[mid + 16 :])
        )


@dataclass
class Request:
    """One request as the server saw it."""

    server: str  # "hub" or "cdn"
    method: str
    path: str
    headers: dict[str, str]
    status: int = 0
    body_bytes: int = 0


@dataclass
class FakeHub:
    """The served repositories, the knobs and the log (see the module docstring)."""

    repos: dict[str, dict[str, FakeFile]] = field(default_factory=dict)
    commits: dict[str, str] = field(default_factory=dict)
    cdn: bool = False
    log: list[Request] = field(default_factory=list)
    endpoint: str = ""
    cdn_endpoint: str = ""
    _cut_at: int | None = None
    _cut_times: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- content -----------------------------------------------------------------------------

    def add(self, repo: str, filename: str, data: bytes, *, lfs: bool = True) -> FakeFile:
        """Serve ``data`` as ``filename`` in ``repo`` (and give the repo a new commit)."""
        self.repos.setdefault(repo, {})[filename] = FakeFile(data, lfs)
        self.commits[repo] = hashlib.sha1(f"{repo}{len(self.log)}{filename}".encode()).hexdigest()
        return self.repos[repo][filename]

    def corrupt(self, repo: str, filename: str, flipped: bool = True) -> None:
        """Serve flipped bytes for a file while still advertising its true sha256."""
        self.repos[repo][filename].flipped = flipped

    def interrupt(self, at: int | None, times: int | None = None) -> None:
        """Close the connection when a body reaches file offset ``at`` (``None`` = never).

        ``times`` limits how many responses are cut (``None`` = every one).
        """
        with self._lock:
            self._cut_at, self._cut_times = at, times

    # --- what happened -----------------------------------------------------------------------

    def requests(self, method: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self.log if method is None or r.method == method]

    @property
    def body_bytes(self) -> int:
        """File bytes sent in GET bodies so far."""
        return sum(r.body_bytes for r in self.requests("GET"))

    def reset_log(self) -> None:
        with self._lock:
            self.log.clear()

    # --- serving -----------------------------------------------------------------------------

    def _cut(self) -> int | None:
        with self._lock:
            if self._cut_at is None or self._cut_times == 0:
                return None
            if self._cut_times is not None:
                self._cut_times -= 1
            return self._cut_at

    def _find_blob(self, sha: str) -> FakeFile | None:
        for files in self.repos.values():
            for f in files.values():
                if f.lfs and f.sha256 == sha:
                    return f
        return None


def _handler(hub: FakeHub, server_name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass  # quiet

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._serve(body=True)

        def _record(self) -> Request:
            req = Request(server_name, self.command, self.path, dict(self.headers.items()))
            with hub._lock:
                hub.log.append(req)
            return req

        def _error(self, req: Request, status: int, code: str, commit: str | None = None) -> None:
            req.status = status
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", code)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _serve(self, body: bool) -> None:
            req = self._record()
            if server_name == "cdn":
                m = _BLOB.match(self.path)
                f = hub._find_blob(m["sha"]) if m else None
                if f is None:
                    return self._error(req, 404, "EntryNotFound")
                return self._send_file(req, f, None, None, body)
            m = _RESOLVE.match(self.path)
            if m is None:
                return self._error(req, 404, "RepoNotFound")
            repo, rev, name = m["repo"], unquote(m["rev"]), unquote(m["file"])
            if repo not in hub.repos:
                return self._error(req, 404, "RepoNotFound")
            commit = hub.commits[repo]
            if rev not in ("main", commit):
                return self._error(req, 404, "RevisionNotFound")
            f = hub.repos[repo].get(name)
            if f is None:
                return self._error(req, 404, "EntryNotFound", commit)
            if hub.cdn and f.lfs:
                req.status = 302
                self.send_response(302)
                self.send_header("Location", f"{hub.cdn_endpoint}/blobs/{f.sha256}")
                self._file_headers(f, commit)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            return self._send_file(req, f, commit, f, body)

        def _file_headers(self, f: FakeFile, commit: str) -> None:
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{f.etag}"')
            if f.lfs:
                self.send_header("X-Linked-Etag", f'"{f.sha256}"')
                self.send_header("X-Linked-Size", str(len(f.data)))

        def _send_file(
            self, req: Request, f: FakeFile, commit: str | None, meta: FakeFile | None, body: bool
        ) -> None:
            data = f.body()
            start = 0
            rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            if rng:
                start = int(rng[1])
                if start >= len(data):
                    req.status = 416
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            req.status = 206 if rng else 200
            self.send_response(req.status)
            if meta is not None and commit is not None:
                self._file_headers(meta, commit)
            else:
                self.send_header("ETag", f'"{f.sha256}"')
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(data) - start))
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if not body:
                return
            cut = hub._cut()
            end = len(data) if cut is None else max(start, min(cut, len(data)))
            chunk = data[start:end]
            try:
                self.wfile.write(chunk)
                self.wfile.flush()
            except OSError:
                return
            req.body_bytes = len(chunk)
            if end < len(data):  # drop the connection mid-body
                self.close_connection = True
                with suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

    return Handler


@contextmanager
def serve(hub: FakeHub) -> Iterator[FakeHub]:
    """Run ``hub`` on two loopback ports (hub and CDN) for the duration of the block."""
    servers = []
    for name in ("hub", "cdn"):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub, name))
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True).start()
        servers.append(srv)
    hub.endpoint = f"http://127.0.0.1:{servers[0].server_address[1]}"
    hub.cdn_endpoint = f"http://127.0.0.1:{servers[1].server_address[1]}"
    try:
        yield hub
    finally:
        for srv in servers:
            srv.shutdown()
            srv.server_close()


@contextmanager
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections but never answers (a hung server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


def closed_port() -> int:
    """A loopback port that nothing listens on (connections are refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- pytest fixtures (import them into a test module to use them) ------------------------------

REPO = "tiny/Tiny-Qwen2-Audio-GGUF"
TEXT = "Tiny-Qwen2-Audio.F32.gguf"
MMPROJ = "Tiny-Qwen2-Audio.mmproj-f32.gguf"


def go_online(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Point huggingface_hub and qaudio at ``endpoint`` with offline mode off (tests only)."""
    import huggingface_hub.constants

    from qaudio_local.models import hub

    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in ("HF_HUB_OFFLINE", "QAUDIO_OFFLINE", "HF_TOKEN", "HF_HUB_ETAG_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    # huggingface_hub read HF_HUB_OFFLINE (set by the autouse isolation) when it was imported
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    # no telemetry side requests (huggingface_hub asks its ENDPOINT for an agent registry)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(hub, "RETRY_WAIT_S", 0.0)


@pytest.fixture(name="fake_hub")
def fake_hub_fixture(
    tiny_gguf: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeHub]:
    """A running fake hub serving the tiny model's GGUF pair as ``REPO``/``TEXT``, ``MMPROJ``."""
    fake = FakeHub()
    fake.add(REPO, TEXT, tiny_gguf[0].read_bytes())
    fake.add(REPO, MMPROJ, tiny_gguf[1].read_bytes())
    with serve(fake):
        go_online(monkeypatch, fake.endpoint)
        yield fake


@pytest.fixture(name="loopback_only", autouse=True)
def loopback_only_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Refuse, and fail the test on, any connection to anything but 127.0.0.1.

    (The refusal alone could be swallowed by best-effort code; the check at teardown cannot.)
    """
    real_connect = socket.socket.connect
    attempts: list[object] = []

    def connect(self: socket.socket, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1"):
            attempts.append(address)
            raise ConnectionRefusedError(f"tests may only connect to 127.0.0.1, not {address!r}")
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield
    assert attempts == [], f"the test tried to reach {attempts}"


def hf_cache_copy(fake: FakeHub, name: str = TEXT, data: bytes | None = None) -> Path:
    """Lay ``name`` out in the Hugging Face cache as huggingface_hub (and llama.cpp's -hf)
    do: a blob named by its sha256, a snapshot link, refs/main."""
    served = fake.repos[REPO][name]
    root = Path(os.environ["HF_HOME"]) / "hub" / f"models--{REPO.replace('/', '--')}"
    commit = fake.commits[REPO]
    blob = root / "blobs" / served.sha256
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(served.data if data is None else data)
    snap = root / "snapshots" / commit / name
    snap.parent.mkdir(parents=True, exist_ok=True)
    snap.symlink_to(os.path.relpath(blob, snap.parent))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snap
