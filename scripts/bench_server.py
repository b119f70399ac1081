"""Load-test ``qaudio serve`` on 127.0.0.1: parallel decoding against serial, side by side.

Starts the server twice on the same model (``--parallel 8``, then ``--parallel 1``) and
sends each the same mixed load from 8 client threads through the official openai client:
chat with a short clip (3 in 4 requests) and transcription of a short recording. Reports
errors, throughput, p50/p95 latency, and the server's RSS after warm-up and at the end.

    .venv/bin/python scripts/bench_server.py --requests 1000            # tiny model
    .venv/bin/python scripts/bench_server.py --model-file M --mmproj-file P --requests 200
"""

from __future__ import annotations

import argparse
import base64
import io
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _clip_b64(seconds: float, hz: float) -> str:
    import soundfile as sf

    t = np.arange(int(seconds * 16000)) / 16000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), 16000, format="WAV")
    return base64.b64encode(buf.getvalue()).decode()


def run(
    pair: tuple[Path, Path],
    parallel: int,
    requests: int,
    clients: int,
    speech: Path,
    args_every: int = 4,
    max_tokens: int = 16,
) -> dict:
    import httpx2 as httpx
    import openai

    port = _port()
    cmd = [sys.executable, "-m", "qaudio_local", "serve", "--model-file", str(pair[0])]
    cmd += ["--mmproj-file", str(pair[1]), "--port", str(port), "--parallel", str(parallel)]
    cmd += ["--max-queue", str(4 * clients)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=600)
        model = client.models.list().data[0].id
        clips = [_clip_b64(0.5 + 0.3 * i, 200 + 90 * i) for i in range(4)]
        speech_bytes = speech.read_bytes()
        lat: list[float] = []
        errors: list[str] = []
        rss: list[float] = []
        lock = threading.Lock()

        def one(i: int) -> None:
            t0 = time.perf_counter()
            try:
                if i % args_every == args_every - 1:
                    client.audio.transcriptions.create(
                        model=model, file=("talk.flac", speech_bytes), response_format="srt"
                    )
                else:
                    part = {"type": "input_audio", "input_audio": {"data": clips[i % 4]}}
                    client.chat.completions.create(
                        model=model,
                        max_tokens=max_tokens,
                        messages=[
                            {"role": "user", "content": [part, {"type": "text", "text": f"Q{i}"}]}
                        ],
                    )
            except Exception as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                return
            with lock:
                lat.append(time.perf_counter() - t0)

        order = iter(range(requests))  # one shared queue: each client takes the next request,
        # so transcriptions spread over all clients (a fixed stride would give them all to one)

        def worker(k: int) -> None:
            while True:
                with lock:
                    i = next(order, None)
                if i is None:
                    return
                one(i)
                with lock:
                    if len(lat) >= requests // 5 and not rss:
                        rss.append(_rss(proc.pid))  # after warm-up

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        rss.append(_rss(proc.pid))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    lat.sort()
    return {
        "parallel": parallel,
        "ok": len(lat),
        "errors": errors,
        "wall": wall,
        "p50": statistics.median(lat) if lat else 0.0,
        "p95": lat[int(0.95 * (len(lat) - 1))] if lat else 0.0,
        "rss": rss,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--every", type=int, default=4, help="one request in EVERY transcribes")
    ap.add_argument("--max-tokens", type=int, default=16, help="tokens per chat answer")
    ap.add_argument("--model-file", type=Path, default=None)
    ap.add_argument("--mmproj-file", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "qaudio-bench")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.model_file:
        pair = (args.model_file, args.mmproj_file)
    else:
        from qaudio_local.convert import convert_checkpoint
        from qaudio_local.convert.tiny import make_tiny_checkpoint

        out = args.work / "tiny" / "gguf"
        if not out.is_dir():
            convert_checkpoint(
                make_tiny_checkpoint(args.work / "tiny" / "ckpt"), out, outtype="f32"
            )
        files = sorted(out.glob("*.gguf"))
        mm = next(p for p in files if "mmproj" in p.name)
        pair = (next(p for p in files if p is not mm), mm)
    speech = ROOT / "tests" / "data" / "speech-a.flac"
    results = [
        run(pair, p, args.requests, args.clients, speech, args.every, args.max_tokens)
        for p in (8, 1)
    ]
    print(
        f"\n{args.clients} clients x {args.requests} requests "
        f"(1 in {args.every} a transcription, the rest chat with a clip, "
        f"{args.max_tokens} tokens per answer)\n"
    )
    print("| server | ok | errors | wall s | req/s | p50 s | p95 s | RSS MiB after warm-up / end |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        rss = " / ".join(f"{x:.0f}" for x in r["rss"])
        print(
            f"| --parallel {r['parallel']} | {r['ok']} | {len(r['errors'])} | {r['wall']:.1f} | "
            f"{r['ok'] / r['wall']:.1f} | {r['p50']:.3f} | {r['p95']:.3f} | {rss} |"
        )
        for e in r["errors"][:3]:
            print(f"  error: {e}")
    print(f"\nparallel 8 vs 1: {results[1]['wall'] / results[0]['wall']:.2f}x faster")


if __name__ == "__main__":
    main()
