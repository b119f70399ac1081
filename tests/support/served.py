"""`qaudio serve` as a real process on a free 127.0.0.1 port, and what tests ask it with."""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2 as httpx
import numpy as np
import openai
import soundfile as sf

KEY = "test-key"
Pair = tuple[Path, Path]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, LOGS.get(url)
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not become ready")


LOGS: dict[str, list[str]] = {}  # a server's URL -> the lines of its stderr so far


class Served:
    """`qaudio serve` on 127.0.0.1:port (the tiny pair, or the registry's model without);
    its stderr is read as it comes (a full pipe would stall the server) into ``lines``."""

    def __init__(
        self, pair: Pair | None, port: int, *extra: str, env: dict[str, str] | None = None
    ) -> None:
        args = [sys.executable, "-m", "qaudio_local", "serve", "--port", str(port)]
        if pair is not None:
            args += ["--model-file", str(pair[0]), "--mmproj-file", str(pair[1])]
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [*args, "--threads", "2", *extra],
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

    def wait_for(self, prefix: str, timeout: float = 60) -> str:
        """The first stderr line that starts with ``prefix`` (fails if the process ends)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [ln for ln in self.lines if ln.startswith(prefix)]
            if found:
                return found[0]
            assert self.proc.poll() is None and time.monotonic() < deadline, self.lines
            time.sleep(0.02)

    def wait(self, timeout: float = 60) -> int:
        """The exit code, once the process has ended and its stderr is read."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self._reader.join(timeout=10)
        return code

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.wait(timeout=20)


def env_with(**changes: str | Path) -> dict[str, str]:
    return dict(os.environ, **{k: str(v) for k, v in changes.items()})


def client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def wav_bytes(x: np.ndarray, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, 16000, format=fmt)
    return buf.getvalue()


def audio_part(x: np.ndarray, fmt: str = "wav") -> dict:
    data = base64.b64encode(wav_bytes(x, fmt.upper())).decode()
    return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}
