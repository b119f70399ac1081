"""Live sessions in tests: a real ``qaudio serve`` on 127.0.0.1, the official SDK's
connection read in a thread (every wait bounded), and audio as a client sends it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np
import openai
import soxr

KEY = "live-key"
Pair = tuple[Path, Path]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``qaudio serve`` with the tiny pair on a free port; stderr read into ``lines``."""

    def __init__(self, pair: Pair, home: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "qaudio_local", "serve", "--port", str(self.port)]
        args += ["--model-file", str(pair[0]), "--mmproj-file", str(pair[1]), "--threads", "2"]
        env = dict(  # user state in ``home`` (the autouse fixture is not set up yet)
            os.environ,
            QAUDIO_HOME=str(home / "qaudio"),
            QAUDIO_CACHE_DIR=str(home / "cache"),
            HF_HOME=str(home / "hf"),
            HF_HUB_OFFLINE="1",
            XDG_CACHE_HOME=str(home / "xdg"),
        )
        self.proc = subprocess.Popen(
            [*args, "--api-key", KEY, *extra],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self.lines.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.lines
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"the server did not become ready: {self.lines}")

    def wait_for_line(self, needle: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [ln for ln in self.lines if needle in ln]
            if found:
                return found[-1]
            time.sleep(0.02)
        raise AssertionError(f"no line with {needle!r}: {self.lines}")

    def stop(self) -> int:
        self.proc.terminate()
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self._reader.join(timeout=10)
        return code


@contextlib.contextmanager
def serving(pair: Pair, home: Path, *extra: str) -> Iterator[Server]:
    """A ready server; on leaving: stopped normally, with no traceback on its stderr."""
    server = Server(pair, home, *extra)
    try:
        server.wait_ready()
        yield server
    finally:
        code = server.stop()
        assert "Traceback" not in "\n".join(server.lines), server.lines
        assert code == 0, server.lines


def client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)


class Events:
    """The server events of an SDK connection, read in a thread as they come."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.seen: list[Any] = []
        self._q: queue.Queue[Any] = queue.Queue()
        self.closed = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for event in self.conn:
                self._q.put(event)
        except Exception as exc:  # the connection ended: tell the waiter
            self._q.put(exc)
        finally:
            self.closed.set()
            self._q.put(None)

    def until(self, done: Callable[[Any], bool], timeout: float = 60) -> list[Any]:
        """Events up to and including the first for which ``done`` is true."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"timed out; got {self._summary(out)}") from None
            if event is None or isinstance(event, Exception):
                raise AssertionError(f"the connection ended ({event!r}) after {self._summary(out)}")
            out.append(event)
            self.seen.append(event)
            if done(event):
                return out

    @staticmethod
    def _summary(events: list[Any]) -> str:
        """The types in order, a run of one type counted (``delta x300``)."""
        runs: list[list[Any]] = []
        for e in events:
            if runs and runs[-1][0] == e.type:
                runs[-1][1] += 1
            else:
                runs.append([e.type, 1])
        return ", ".join(t if n == 1 else f"{t} x{n}" for t, n in runs)

    def of(self, kind: str) -> list[Any]:
        return [e for e in self.seen if e.type == kind]


def pcm16(x: np.ndarray, rate: int = 24_000) -> bytes:
    """16 kHz float samples as a client at ``rate`` sends them: PCM16 little-endian."""
    if rate != 16_000:
        x = soxr.resample(x, 16_000, rate, quality="HQ")
    return np.clip(np.round(x * 32768), -32768, 32767).astype("<i2").tobytes()


def send_audio(conn: Any, raw: bytes, rate: int = 24_000, seed: int = 0) -> None:
    """Append ``raw`` in chunks of 20-100 ms (as microphones and files are streamed)."""
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(raw):
        n = int(rng.integers(20, 101)) * rate // 1000 * 2
        conn.input_audio_buffer.append(audio=base64.b64encode(raw[i : i + n]).decode())
        i += n
