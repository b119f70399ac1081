"""``scripts/bench_remote.py``: what ``--server`` costs, and how well the pool splits work.

1. Overhead: the same recording transcribed in process and through one local
   ``qaudio serve`` (same model, threads and parallel sequences), interleaved, wall time
   and RTF of the transcription alone (the model loaded, the server ready).
2. Scheduling: a pool of paced stand-ins (each answers after ``audio seconds / rate``,
   at most ``capacity`` at once, like a server of known speed) against the ideal split,
   where every server is busy until the same moment: ``speech / sum(capacity * rate)``.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT / "tests" / "data"


def make_recording(path: Path, minutes: float, seed: int = 0) -> float:
    """Speech clips (tests/data) with pauses of 0.4-3 s; returns the duration in seconds."""
    clips = [sf.read(CLIPS / f"speech-{k}.flac", dtype="float32")[0] for k in "abc"]
    rng = np.random.default_rng(seed)
    total, target = 0, int(minutes * 60 * 16000)
    with sf.SoundFile(path, "w", 16000, 1, subtype="PCM_16") as f:
        while total < target:
            x = clips[int(rng.integers(3))]
            pause = np.zeros(int(rng.choice([0.4, 0.8, 3.0]) * 16000), np.float32)
            for part in (x, pause):
                part = part[: target - total]
                f.write(part)
                total += len(part)
    return total / 16000


class PacedServer:
    """An OpenAI-compatible stand-in of known speed: each chat completion takes
    ``audio seconds / rate`` and at most ``capacity`` run at once (more wait their turn);
    the answer is a fixed word. ``busy`` sums the seconds its slots worked."""

    def __init__(self, rate: float, capacity: int = 1) -> None:
        self.rate, self.capacity = rate, capacity
        self.slots = threading.Semaphore(capacity)
        self.busy = 0.0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                card = {"id": "paced", "parallel": outer.capacity}
                self._send(json.dumps({"object": "list", "data": [card]}).encode())

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                seconds = sum(_audio_seconds(p) for m in body["messages"] for p in _parts(m))
                with outer.slots:
                    t0 = time.monotonic()
                    time.sleep(seconds / outer.rate)
                    with outer.lock:
                        outer.busy += time.monotonic() - t0
                answer = {
                    "choices": [{"message": {"content": "words"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1},
                }
                self._send(json.dumps(answer).encode())

            def _send(self, raw: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _parts(message: dict[str, Any]) -> list[Any]:
    content = message.get("content")
    return content if isinstance(content, list) else []


def _audio_seconds(part: dict[str, Any]) -> float:
    if part.get("type") != "input_audio":
        return 0.0
    info = sf.info(io.BytesIO(base64.b64decode(part["input_audio"]["data"])))
    return float(info.frames) / info.samplerate


def timed_transcription(model: Any, audio: Path, parallel: int | None) -> dict[str, Any]:
    """Transcribe ``audio`` with ``model`` (loaded, or remote); wall time and counts."""
    from qaudio_local.transcription import TranscribeOptions, transcribe

    opts = TranscribeOptions(language="english", parallel=parallel)
    t0 = time.perf_counter()
    tr = transcribe(model, audio, opts)
    spans = [seg.end - seg.start for seg in tr]
    wall = time.perf_counter() - t0
    out = {"wall": wall, "duration": tr.info.duration, "speech": tr.info.speech}
    return {**out, "n": len(spans), "longest": max(spans, default=0.0), "spans": spans}


def best_split(spans: list[float], slots: list[float]) -> float:
    """The makespan of a clairvoyant split: longest segments first, each to the slot
    (of speed ``slots[i]``) that finishes it first, all known in advance."""
    free = [0.0] * len(slots)
    for d in sorted(spans, reverse=True):
        i = min(range(len(slots)), key=lambda k: free[k] + d / slots[k])
        free[i] += d / slots[i]
    return max(free, default=0.0)


def start_serve(pair: tuple[Path, Path], port: int, parallel: int, threads: int) -> Any:
    """``qaudio serve`` on the pair; returns the process once /health says ok."""
    import httpx2 as httpx

    cmd = [sys.executable, "-m", "qaudio_local", "serve", "--model-file", str(pair[0])]
    cmd += ["--mmproj-file", str(pair[1]), "--port", str(port), "--parallel", str(parallel)]
    cmd += ["--threads", str(threads), "--keep-alive", "-1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("qaudio serve ended before it was ready")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("qaudio serve was not ready in 10 minutes")


def overhead_rows(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The Markdown table of the overhead runs (medians), and the ratio."""
    rows = ["| path | runs | segments | median wall s | RTF |", "|---|---|---|---|---|"]
    med = {}
    for name, runs in results.items():
        walls = sorted(r["wall"] for r in runs)
        med[name] = walls[len(walls) // 2]
        rtf = med[name] / runs[0]["duration"]
        rows.append(f"| {name} | {len(runs)} | {runs[0]['n']:.0f} | {med[name]:.2f} | {rtf:.4f} |")
    a, b = med.get("in process"), med.get("one qaudio serve")
    if a and b:
        rows.append(f"\nremote / in process: {b / a:.3f} (overhead {100 * (b / a - 1):+.1f}%)")
    return rows


def scheduling(audio: Path, servers: list[tuple[float, int]]) -> list[str]:
    """Transcribe ``audio`` over paced stand-ins ``(rate, capacity)``; the table. The
    floor is the same run with one instant stand-in (reading and cutting the recording)."""
    from qaudio_local.remote import open_remote

    instant = PacedServer(1e6, 4)
    try:
        with open_remote([f"{instant.url}@4"]) as model:
            floor = timed_transcription(model, audio, None)["wall"]
    finally:
        instant.close()

    paced = [PacedServer(rate, cap) for rate, cap in servers]
    try:
        with open_remote([f"{p.url}@{p.capacity}" for p in paced]) as model:
            r = timed_transcription(model, audio, None)
            stats = model.pool.stats()
    finally:
        for p in paced:
            p.close()
    fluid = r["speech"] / sum(rate * cap for rate, cap in servers)
    split = best_split(r["spans"], [rate for rate, cap in servers for _ in range(cap)])
    ideal = max(split, floor)
    rows = ["| server | capacity | speed (x real time per slot) | requests | audio s | busy |"]
    rows.append("|---|---|---|---|---|---|")
    for (rate, cap), p, s in zip(servers, paced, stats, strict=True):
        share = p.busy / (cap * r["wall"])
        rows.append(
            f"| {s.name} | {cap} | {rate:g} | {s.done} | {s.audio_seconds:.0f} | {share:.0%} |"
        )
    rows.append(
        f"\n{r['n']:.0f} segments (longest {r['longest']:.1f} s), {r['speech']:.0f} s of speech "
        f"in {r['duration']:.0f} s. Wall {r['wall']:.2f} s; ideal split {ideal:.2f} s (the "
        f"best split of these segments {split:.2f} s, the recording read and cut alone "
        f"{floor:.2f} s; the fluid bound {fluid:.2f} s): wall {r['wall'] / ideal:.3f} x ideal"
    )
    return rows
