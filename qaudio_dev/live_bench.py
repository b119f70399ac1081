"""Latency of live sessions (``scripts/bench_live.py``): recordings played into
``/v1/realtime`` at real time, timed per turn from the end of speech.

A recording is built from the speech clips in tests/data with silences between them (so
where each clip's speech ends is known to the sample), or given (then its speech is found
by the offline Silero VAD). It is sent by ``qaudio listen``'s own client
(:class:`~qaudio_local.cli.listen_session.LiveSession`, paced by
:class:`~qaudio_local.cli.listen_audio.FileSource`), and every server event is stamped with
``time.monotonic()`` as it arrives. The end of speech at sample ``e`` happened at
``t0 + e / 16000 / speed`` (``t0``: the first chunk's first sample), and per turn the table
reports the time from there to ``input_audio_buffer.speech_stopped``, to
``conversation.item.input_audio_transcription.completed`` and, in conversation mode, to the
first ``response.output_text.delta``. The VAD's hangover (``silence_duration_ms``: silence
it must hear before it ends a turn) is part of those times by design and is reported
beside them, with the time to the final text less the hangover.

The pure parts (:func:`observe`, :func:`match_turns`, :func:`latencies`, :func:`summary`,
:func:`markdown`) are unit-tested; the rest needs a server with the endpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT / "tests" / "data"
SR = 16000
SPEECH_LEVEL = 0.02  # a clip's speech starts and ends where |x| first and last exceeds this
# about 25 s: three clips, each followed by a pause well above the VAD's hangover
PLAN: list[tuple[str, float | str]] = [("sil", 1.0), ("say", "a"), ("sil", 2.0), ("say", "b")]
PLAN += [("sil", 2.0), ("say", "c"), ("sil", 2.0)]
Events = list[tuple[float, dict[str, Any]]]


def build_recording(path: Path, plan: Sequence[tuple[str, float | str]] = PLAN) -> list:
    """Write ``plan`` (quiet noise for ``("sil", s)``, a clip for ``("say", "a"|"b"|"c")``)
    as 16 kHz PCM; return where each clip's speech is, as (start, end) samples."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    parts, speech, pos = [], [], 0
    for kind, what in plan:
        if kind == "sil":
            x = (0.0003 * rng.standard_normal(int(float(what) * SR))).astype(np.float32)
        else:
            x = sf.read(CLIPS / f"speech-{what}.flac", dtype="float32")[0]
            loud = np.flatnonzero(np.abs(x) > SPEECH_LEVEL)
            speech.append((pos + int(loud[0]), pos + int(loud[-1]) + 1))
        parts.append(x)
        pos += len(x)
    sf.write(path, np.concatenate(parts), SR, subtype="PCM_16")
    return speech


def speech_in(path: Path) -> list[tuple[int, int]]:
    """Where a given recording's speech is (16 kHz samples), by the offline Silero VAD
    without padding."""
    from qaudio_local.audio.stream import AudioStream
    from qaudio_local.audio.vad import VadOptions, make_vad, segments

    with AudioStream(path) as stream:
        found = segments(stream.blocks(), make_vad("silero"), VadOptions(pad_s=0.0))
        return [(s.start, s.end) for s in found]


@dataclass
class Observed:
    """One turn as the client saw it: the server's bounds (ms) and when events came."""

    item_id: str
    start_ms: int | None = None
    end_ms: int | None = None
    stopped_at: float | None = None
    completed_at: float | None = None
    answer_at: float | None = None  # first response.output_text.delta
    answered_at: float | None = None  # response.done


def observe(events: Events) -> list[Observed]:
    """The turns in a session's stamped events, in the order the server opened them."""
    turns: dict[str, Observed] = {}
    responses: dict[str, Observed] = {}

    def turn(item: Any) -> Observed:
        return turns.setdefault(str(item), Observed(str(item)))

    for t, e in events:
        kind = e.get("type", "")
        if kind == "input_audio_buffer.speech_started":
            turn(e.get("item_id")).start_ms = e.get("audio_start_ms")
        elif kind == "input_audio_buffer.speech_stopped":
            o = turn(e.get("item_id"))
            o.end_ms, o.stopped_at = e.get("audio_end_ms"), t
        elif kind == "conversation.item.input_audio_transcription.completed":
            turn(e.get("item_id")).completed_at = t
        elif kind == "response.created":
            waiting = [o for o in turns.values() if o not in responses.values()]
            if waiting:
                responses[str(e["response"]["id"])] = waiting[0]
        elif kind in ("response.output_text.delta", "response.done"):
            rid = e.get("response_id") or (e.get("response") or {}).get("id")
            answered = responses.get(str(rid))
            if answered is not None and kind == "response.done":
                answered.answered_at = t
            elif answered is not None and answered.answer_at is None:
                answered.answer_at = t
    return list(turns.values())


def match_turns(speech_ms: list[tuple[int, int]], turns: list[Observed]) -> list[Observed | None]:
    """For each spoken stretch, the server's turn that overlaps it most (each turn once);
    ``None`` for speech no turn covers."""
    out: list[Observed | None] = []
    used: set[str] = set()
    for a, b in speech_ms:
        best, overlap = None, 0
        for o in turns:
            if o.item_id in used or o.start_ms is None:
                continue
            end = o.end_ms if o.end_ms is not None else 1 << 62
            common = min(b, end) - max(a, o.start_ms)
            if common > overlap:
                best, overlap = o, common
        if best is not None:
            used.add(best.item_id)
        out.append(best)
    return out


@dataclass(frozen=True)
class TurnLatency:
    """Seconds from the end of one stretch of speech to each event (``None``: not seen)."""

    mode: str
    run: int
    turn: int
    speech_s: float
    to_stopped: float | None
    to_completed: float | None
    to_answer: float | None


def latencies(
    mode: str, run: int, speech: list[tuple[int, int]], events: Events, t0: float, speed: float
) -> list[TurnLatency]:
    """Per stretch of speech (16 kHz samples), its latencies in a session that began at
    ``t0`` (the first chunk's first sample) and played at ``speed``."""
    speech_ms = [(a * 1000 // SR, b * 1000 // SR) for a, b in speech]
    matched = match_turns(speech_ms, observe(events))
    rows = []
    for i, ((a, b), o) in enumerate(zip(speech, matched, strict=True)):
        spoken_end = t0 + b / SR / speed
        seen = o if o is not None else Observed("")
        times = (seen.stopped_at, seen.completed_at, seen.answer_at)
        after = [None if t is None else t - spoken_end for t in times]
        rows.append(TurnLatency(mode, run, i + 1, (b - a) / SR, *after))
    return rows


def stats(values: Sequence[float | None]) -> tuple[float, float, int] | None:
    """(median, max, count) of the values seen; ``None`` if none was."""
    seen = [v for v in values if v is not None]
    return (statistics.median(seen), max(seen), len(seen)) if seen else None


def _cell(s: tuple[float, float, int] | None, less: float = 0.0) -> str:
    if s is None:
        return "-"
    return f"{s[0] - less:.2f} (max {s[1] - less:.2f})"


def summary(rows: list[TurnLatency], hangover_s: float) -> list[str]:
    """One Markdown row per mode: medians (and maxima) over every turn and run."""
    out = []
    for mode in dict.fromkeys(r.mode for r in rows):
        mine = [r for r in rows if r.mode == mode]
        done = stats([r.to_completed for r in mine])
        seen = sum(r.to_stopped is not None or r.to_answer is not None for r in mine)
        out.append(
            f"| {mode} | {seen}/{len(mine)} | {_cell(stats([r.to_stopped for r in mine]))} | "
            f"{_cell(done)} | {_cell(done, hangover_s)} | "
            f"{_cell(stats([r.to_answer for r in mine]))} |"
        )
    return out


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def markdown(rows: list[TurnLatency], meta: dict[str, Any]) -> str:
    """The report: what was measured where, the summary, then every turn."""
    hang = meta["silence_ms"] / 1000
    lines = [
        f"**Live latency**, measured {meta['date']} on {meta['machine']}; {meta['model']}; "
        f"{meta['audio']}; PCM {meta['rate']} Hz in {meta['chunk_ms']} ms chunks at "
        f"{meta['speed']:g}x real time; server VAD threshold {meta['threshold']}, prefix "
        f"{meta['prefix_ms']} ms, hangover (silence_duration_ms) **{meta['silence_ms']} ms**.",
        "",
        "Seconds after the end of speech, median (max) over every turn and run; the hangover "
        "is part of each figure (the VAD waits that long before it ends a turn), and the "
        "fourth column takes it out.",
        "",
        "| mode | turns seen | -> speech_stopped | -> completed | -> completed, less the "
        f"{meta['silence_ms']} ms hangover | -> first answer delta |",
        "|---|---|---|---|---|---|",
        *summary(rows, hang),
        "",
        "| mode | run | turn | speech s | -> speech_stopped | -> completed | -> first answer "
        "delta |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.mode} | {r.run} | {r.turn} | {r.speech_s:.2f} | {_s(r.to_stopped)} | "
        f"{_s(r.to_completed)} | {_s(r.to_answer)} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


# --- running it: the server, the sessions ---------------------------------------------------


def model_pair(work: Path, real_width: bool) -> tuple[Path, Path]:
    """The tiny model, or (``real_width``) the real encoder with one text layer of the real
    width, built once into ``work`` (shared with ``bench_longform.py --real``)."""
    if real_width:
        from qaudio_dev.synthetic import REAL_AUDIO, REAL_TEXT, build_synthetic

        real = build_synthetic(work / "real-encoder", REAL_AUDIO, {**REAL_TEXT, "layers": 1})
        return real.gguf["F16"], real.mmproj
    from qaudio_local.convert import convert_checkpoint
    from qaudio_local.convert.tiny import make_tiny_checkpoint

    out = work / "tiny" / "gguf"
    if not out.is_dir():
        convert_checkpoint(make_tiny_checkpoint(work / "tiny" / "ckpt"), out, outtype="f32")
    files = sorted(out.glob("*.gguf"))
    mmproj = next(p for p in files if "mmproj" in p.name)
    return next(p for p in files if p is not mmproj), mmproj


@contextlib.contextmanager
def served(pair: tuple[Path, Path], threads: int, key: str) -> Iterator[str]:
    """``qaudio serve`` on the pair in a process of its own; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-m", "qaudio_local", "serve", "--port", str(port), "--api-key", key]
    args += ["--model-file", str(pair[0]), "--mmproj-file", str(pair[1]), "--quiet"]
    args += ["--threads", str(threads), "--parallel", "2"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        while proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):
                    break
            except OSError:  # not listening yet, or 503 while the model loads
                time.sleep(0.2)
        if proc.poll() is not None:
            raise SystemExit(f"qaudio serve stopped (exit code {proc.returncode})")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def play(url: str, key: str | None, config: Any, audio: Path, speed: float, chunk_ms: int) -> Any:
    """One session: the recording into the endpoint; returns (stamped events, t0)."""
    from qaudio_local.cli.captions import LiveTranscript
    from qaudio_local.cli.listen_audio import FileSource
    from qaudio_local.cli.listen_session import LiveSession
    from qaudio_local.cli.realtime_client import RealtimeConnection, realtime_url

    events: Events = []
    source = FileSource(audio, audio.name, rate=config.rate, chunk_ms=chunk_ms, speed=speed)
    target = realtime_url(url, transcription=not config.chat, model=config.model)
    with RealtimeConnection.open(target, key) as conn:
        transcript = LiveTranscript(config.chat, config.turn_detection is None)
        LiveSession(
            conn, source, config, transcript, on_event=lambda t, e: events.append((t, e))
        ).run()
    if source.started_at is None:
        raise SystemExit("no audio was sent")
    return events, source.started_at


def main(argv: Sequence[str] | None = None) -> None:
    from qaudio_dev.bench.report import machine
    from qaudio_local.cli.realtime_client import SessionConfig, TurnDetection

    args = _parser().parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    audio = args.audio or args.work / "live-recording.wav"
    speech = speech_in(audio) if args.audio else build_recording(audio)
    vad = TurnDetection(args.threshold, args.prefix_ms, args.silence_ms)
    modes = ["transcription", "chat"] if args.mode == "both" else [args.mode]
    rows: list[TurnLatency] = []
    with contextlib.ExitStack() as stack:
        url, key = args.server, args.api_key
        if url is None:
            key = "bench-key"
            pair = (
                (args.model_file, args.mmproj_file)
                if args.model_file
                else model_pair(args.work, args.real_width)
            )
            url = stack.enter_context(served(pair, args.threads, key))
        for mode in modes:
            config = SessionConfig(chat=mode == "chat", rate=args.rate, turn_detection=vad)
            for run in range(1, args.repeats + 1):
                events, t0 = play(url, key, config, audio, args.speed, args.chunk_ms)
                rows += latencies(mode, run, speech, events, t0, args.speed)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "model": _model_label(args),
        "audio": f"{audio.name} ({len(speech)} stretches of speech)",
        "rate": args.rate,
        "chunk_ms": args.chunk_ms,
        "speed": args.speed,
        "threshold": args.threshold,
        "prefix_ms": args.prefix_ms,
        "silence_ms": args.silence_ms,
    }
    print(markdown(rows, meta))


def _model_label(args: argparse.Namespace) -> str:
    if args.server:
        return f"the server at {args.server}"
    if args.model_file:
        return f"model {args.model_file.name}"
    if args.real_width:
        return "real encoder size (synthetic: encoder 1280 x 32 layers, one text layer of 4096)"
    return "the tiny model"


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be above 0 (latency is timed against the pace)")
    return value


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="bench_live.py",
        description="Latency of qaudio serve's /v1/realtime: recordings played at real time, "
        "per turn from the end of speech to speech_stopped, to the final text and (chat) to "
        "the first answer delta; prints a Markdown report labelled with this machine.",
    )
    ap.add_argument("--audio", type=Path, help="a recording of your own (speech found by VAD)")
    ap.add_argument("--mode", choices=["transcription", "chat", "both"], default="both")
    ap.add_argument("--repeats", type=int, default=1, help="sessions per mode")
    ap.add_argument("--real-width", action="store_true", help="real encoder size (slow)")
    ap.add_argument("--model-file", type=Path, help="a text-model GGUF (with --mmproj-file)")
    ap.add_argument("--mmproj-file", type=Path)
    ap.add_argument("--server", help="bench a running `qaudio serve` at this URL instead")
    ap.add_argument("--api-key", help="its key")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--speed", type=_positive, default=1.0, help="1: real time (2: twice)")
    ap.add_argument("--rate", type=int, choices=[16000, 24000], default=16000)
    ap.add_argument("--chunk-ms", type=int, default=40)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--prefix-ms", type=int, default=300)
    ap.add_argument("--silence-ms", type=int, default=500, help="the VAD's hangover")
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "qaudio-bench")
    return ap
