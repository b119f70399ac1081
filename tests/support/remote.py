"""Several `qaudio serve` processes for the remote tests, and `qaudio transcribe` run
against them as a child process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.served import KEY, Served, free_port, wait_ready

Pair = tuple[Path, Path]


class Fleet:
    """``n`` `qaudio serve` on the tiny pair (each with ``extra`` flags and the test key);
    :meth:`urls` starts again any that was killed."""

    def __init__(self, pair: Pair, n: int, *extra: str) -> None:
        self.pair, self.extra = pair, extra
        self.servers = [self._start() for _ in range(n)]
        for s in self.servers:
            wait_ready(s.url, s.proc)

    def _start(self) -> Served:
        return Served(self.pair, free_port(), "--api-key", KEY, "--threads", "1", *self.extra)

    def urls(self) -> list[str]:
        for i, s in enumerate(self.servers):
            if s.proc.poll() is not None:
                self.servers[i] = self._start()
                wait_ready(self.servers[i].url, self.servers[i].proc)
        return [s.url for s in self.servers]

    def close(self) -> None:
        for s in self.servers:
            if s.proc.poll() is None:
                s.stop(signal.SIGKILL)


def transcribe_child(*args: str | Path) -> subprocess.Popen[str]:
    """`qaudio transcribe ARGS` as a child process (stdout and stderr piped)."""
    cmd = [sys.executable, "-m", "qaudio_local", "transcribe", *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_lines(path: Path, n: int, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """Until ``path`` (a journal) has ``n`` lines; fails if ``proc`` ends first."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().count("\n") >= n):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the journal did not grow"
        time.sleep(0.005)
