"""scripts/bench_live.py (qaudio_dev.live_bench): its pure parts (the recording and where
its speech is, turns observed in stamped events and matched to the speech, latencies,
statistics, the Markdown report), one session played into the fake Realtime peer, and
``--help``. A run against the real endpoint waits for ``/v1/realtime``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf

from qaudio_dev.live_bench import (
    Observed,
    TurnLatency,
    build_recording,
    latencies,
    markdown,
    match_turns,
    observe,
    play,
    speech_in,
    stats,
    summary,
)
from tests.support.realtime_peer import Peer, ScriptTurn, running

ROOT = Path(__file__).resolve().parents[1]


def ev(type_: str, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "event_id": "e", **fields}


def test_the_recording_knows_where_its_speech_is(tmp_path: Path) -> None:
    plan: list[tuple[str, float | str]] = [("sil", 1.0), ("say", "a"), ("sil", 2.0), ("say", "c")]
    speech = build_recording(tmp_path / "r.wav", plan)
    x, rate = sf.read(tmp_path / "r.wav", dtype="float32")
    assert rate == 16000 and len(speech) == 2 and speech[0][0] >= 16000
    for a, b in speech:
        assert abs(x[a]) > 0.02 and abs(x[b - 1]) > 0.02  # speech starts and ends there
    found = speech_in(tmp_path / "r.wav")  # the offline VAD, for a recording of one's own
    assert len(found) == 2
    for (a, b), (fa, fb) in zip(speech, found, strict=True):
        assert abs(fa - a) < 0.3 * 16000 and abs(fb - b) < 0.3 * 16000


TRANSCRIPTION = [
    (10.0, ev("session.updated")),
    (11.0, ev("input_audio_buffer.speech_started", item_id="i1", audio_start_ms=700)),
    (12.6, ev("input_audio_buffer.speech_stopped", item_id="i1", audio_end_ms=2000)),
    (12.6, ev("input_audio_buffer.committed", item_id="i1")),
    (12.9, ev("conversation.item.input_audio_transcription.delta", item_id="i1", delta="a")),
    (13.1, ev("conversation.item.input_audio_transcription.completed", item_id="i1")),
    (14.0, ev("input_audio_buffer.speech_started", item_id="i2", audio_start_ms=3700)),
    (15.6, ev("input_audio_buffer.speech_stopped", item_id="i2", audio_end_ms=5000)),
]
CHAT = [
    (11.0, ev("input_audio_buffer.speech_started", item_id="u1", audio_start_ms=700)),
    (12.6, ev("input_audio_buffer.speech_stopped", item_id="u1", audio_end_ms=2000)),
    (12.7, ev("response.created", response={"id": "r1", "status": "in_progress"})),
    (13.0, ev("response.output_text.delta", response_id="r1", delta="Hi")),
    (13.2, ev("response.output_text.delta", response_id="r1", delta="!")),
    (13.5, ev("response.done", response={"id": "r1", "status": "completed"})),
]


def test_turns_are_observed_from_stamped_events() -> None:
    first, second = observe(TRANSCRIPTION)
    assert (first.item_id, first.start_ms, first.end_ms) == ("i1", 700, 2000)
    assert (first.stopped_at, first.completed_at, first.answer_at) == (12.6, 13.1, None)
    assert second.stopped_at == 15.6 and second.completed_at is None
    (turn,) = observe(CHAT)
    assert (turn.answer_at, turn.answered_at, turn.completed_at) == (13.0, 13.5, None)


def test_speech_is_matched_to_the_turn_that_covers_it_most() -> None:
    a = Observed("a", 900, 2500)
    b = Observed("b", 2400, 6100)  # covers the second and third stretch: one turn, once
    unopened = Observed("x")
    assert match_turns([(1000, 2000), (3000, 4000), (5000, 6000)], [unopened, a, b]) == [a, b, None]
    assert match_turns([(1000, 2000)], [Observed("open", 800)]) == [Observed("open", 800)]


def test_latencies_count_from_the_end_of_speech_at_the_pace_played() -> None:
    speech = [(12_000, 32_000), (60_000, 80_000)]  # ends at 2.0 s and 5.0 s
    rows = latencies("transcription", 1, speech, TRANSCRIPTION, t0=10.0, speed=1.0)
    assert rows[0] == TurnLatency("transcription", 1, 1, 1.25, pytest.approx(0.6),
                                  pytest.approx(1.1), None)  # fmt: skip
    assert rows[1].to_stopped == pytest.approx(0.6) and rows[1].to_completed is None
    twice = latencies("chat", 2, speech[:1], CHAT, t0=11.0, speed=2.0)  # speech end at 12.0
    assert twice[0].to_answer == pytest.approx(1.0) and twice[0].run == 2


def test_statistics_and_the_report() -> None:
    assert stats([None, 0.5, 1.5, 1.0]) == (1.0, 1.5, 3) and stats([None]) is None
    rows = [
        TurnLatency("transcription", 1, 1, 2.0, 0.6, 1.1, None),
        TurnLatency("transcription", 1, 2, 2.0, 0.7, 1.3, None),
        TurnLatency("transcription", 1, 3, 2.0, None, None, None),
        TurnLatency("chat", 1, 1, 2.0, 0.6, None, 1.9),
    ]
    assert summary(rows, 0.5) == [
        "| transcription | 2/3 | 0.65 (max 0.70) | 1.20 (max 1.30) | 0.70 (max 0.80) | - |",
        "| chat | 1/1 | 0.60 (max 0.60) | - | - | 1.90 (max 1.90) |",
    ]
    meta = {"date": "2026-12-10", "machine": "Test CPU, 2 cores, 8 GiB RAM, Linux 6", "rate": 16000,
            "model": "the tiny model", "audio": "rec.wav (3 stretches of speech)", "chunk_ms": 40,
            "speed": 1.0, "threshold": 0.5, "prefix_ms": 300, "silence_ms": 500}  # fmt: skip
    report = markdown(rows, meta)
    assert "on Test CPU, 2 cores, 8 GiB RAM, Linux 6" in report
    assert "hangover (silence_duration_ms) **500 ms**" in report
    tables = [line for line in report.splitlines() if line.startswith("|")]
    widths = [line.count("|") for line in tables]
    assert widths == [7] * 4 + [8] * 6  # header, rule, 2 modes; header, rule, 4 turns
    assert "| chat | 1 | 1 | 2.00 | 0.60 | - | 1.90 |" in tables


def test_a_session_played_into_the_fake_peer(tmp_path: Path) -> None:
    """play() and latencies() together, without the real endpoint: the peer ends each turn
    0.5 s (its hangover) of audio after the speech, so at 2x that is 0.25 s and more."""
    from qaudio_local.cli.realtime_client import SessionConfig

    plan: list[tuple[str, float | str]] = [("sil", 0.3), ("say", "c"), ("sil", 1.0)]
    speech = build_recording(tmp_path / "r.wav", plan)
    turns = [ScriptTurn(a // 16, b // 16, "words") for a, b in speech]
    with running(Peer(turns)) as peer:
        events, t0 = play(peer.url, "peer-key", SessionConfig(), tmp_path / "r.wav", 2.0, 40)
    (row,) = latencies("transcription", 1, speech, events, t0, 2.0)
    assert row.to_stopped is not None and 0.2 <= row.to_stopped < 1.5
    assert row.to_completed is not None and row.to_completed >= row.to_stopped


def test_help_works_without_the_endpoint() -> None:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_live.py"), "--help"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0 and "--real-width" in result.stdout
    assert "hangover" in result.stdout and "Markdown" in result.stdout
