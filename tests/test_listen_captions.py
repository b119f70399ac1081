"""From Realtime events to turns, captions and transcript files (``qaudio listen``): the
events are recorded in OpenAI's shapes (the SDK's ``types/realtime``), fed in order."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import srt

from qaudio_local.cli.captions import CaptionView, LiveTranscript, clock
from qaudio_local.errors import RealtimeSessionError
from qaudio_local.transcription import TranscriptionInfo, write_outputs


def ev(type_: str, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "event_id": "event_x", **fields}


def vad_turn(item: str, start: int, end: int, *words: str) -> list[dict[str, Any]]:
    """A turn as a server VAD reports it: started, stopped, committed, deltas, completed."""
    out = [
        ev("input_audio_buffer.speech_started", item_id=item, audio_start_ms=start),
        ev("input_audio_buffer.speech_stopped", item_id=item, audio_end_ms=end),
        ev("input_audio_buffer.committed", item_id=item, previous_item_id=None),
    ]
    tr = "conversation.item.input_audio_transcription"
    out += [ev(f"{tr}.delta", item_id=item, content_index=0, delta=w + " ") for w in words]
    usage = {"type": "tokens", "input_tokens": 9, "output_tokens": 2, "total_tokens": 11}
    done = ev(f"{tr}.completed", item_id=item, content_index=0, transcript=" ".join(words))
    return [*out, {**done, "usage": usage}]


def answer(rid: str, text: str, status: str = "completed") -> list[dict[str, Any]]:
    where = {"response_id": rid, "item_id": "out_1", "output_index": 0, "content_index": 0}
    response = {"id": rid, "object": "realtime.response", "status": "in_progress"}
    out = [ev("response.created", response=response)]
    out += [ev("response.output_text.delta", delta=w + " ", **where) for w in text.split()]
    out.append(ev("response.output_text.done", text=text, **where))
    out.append(ev("response.done", response={**response, "status": status}))
    return out


def screen(text: str) -> list[str]:
    """What a terminal shows after ``text``: ``\\r\\x1b[K`` clears the current line."""
    lines = [""]
    for i, part in enumerate(text.split("\r\x1b[K")):
        rows = part.split("\n")
        lines[-1] = rows[0] if i else lines[-1] + rows[0]
        lines += rows[1:]
    return [line for line in lines if line]


def follow(events: list[dict[str, Any]], chat: bool = False, tty: bool = False) -> Any:
    out, err = io.StringIO(), io.StringIO()
    transcript = LiveTranscript(chat=chat, view=CaptionView(out, err, tty=tty))
    transcript.handle(ev("session.updated", session={}))
    actions = [transcript.handle(e) for e in events]
    return transcript, out.getvalue(), err.getvalue(), actions


TWO_TURNS = [
    *vad_turn("item_1", 1000, 2500, "hello", "world"),
    *vad_turn("item_2", 61_230, 64_040, "second", "turn"),
]


def test_clock() -> None:
    assert [clock(ms) for ms in (0, 1234, 59_960, 61_230, 4_503_200, None)] == [
        "00:00.0",
        "00:01.2",
        "01:00.0",
        "01:01.2",
        "75:03.2",
        "...",
    ]


def test_plain_lines_when_not_a_terminal() -> None:
    transcript, out, err, _ = follow(TWO_TURNS)
    assert out == "[00:01.0 -> 00:02.5] hello world\n[01:01.2 -> 01:04.0] second turn\n"
    assert err == "" and transcript.pending() == 0
    segments = transcript.segments()
    assert [(s.start, s.end, s.start_sample, s.end_sample, s.text) for s in segments] == [
        (1.0, 2.5, 16000, 40000, "hello world"),
        (61.23, 64.04, 979_680, 1_024_640, "second turn"),
    ]


def test_on_a_terminal_the_turn_is_redrawn_then_printed() -> None:
    _, out, _, _ = follow(TWO_TURNS[:4], tty=True)
    assert out.startswith("[00:01.0 -> ...] ...\r\x1b[K")  # speech started: the line appears
    assert out.endswith("\r\x1b[K[00:01.0 -> 00:02.5] hello")  # redrawn as text arrives
    _, out, _, _ = follow(TWO_TURNS, tty=True)
    assert screen(out) == ["[00:01.0 -> 00:02.5] hello world", "[01:01.2 -> 01:04.0] second turn"]


def test_a_long_partial_is_cut_to_the_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    words = [f"word{i}" for i in range(30)]
    _, out, _, _ = follow(vad_turn("i", 0, 9000, *words)[:-1], tty=True)
    last = out.rsplit("\r\x1b[K", 1)[1]
    assert len(last) == 39 and last.startswith("[00:00.0 -> 00:09.0] ...")
    assert last.endswith("word29")


def test_a_turn_in_pieces_and_a_failed_turn() -> None:
    tr = "conversation.item.input_audio_transcription"
    events = [
        *vad_turn("a", 0, 45_000, "first", "part"),
        ev(f"{tr}.completed", item_id="a", content_index=0, transcript="second part"),
        ev("input_audio_buffer.speech_started", item_id="b", audio_start_ms=46_000),
        ev("input_audio_buffer.speech_stopped", item_id="b", audio_end_ms=47_000),
        ev("input_audio_buffer.committed", item_id="b"),
        ev(f"{tr}.failed", item_id="b", content_index=0, error={"message": "decode failed"}),
    ]
    transcript, _, err, _ = follow(events)
    assert [s.text for s in transcript.segments()] == ["first part second part"]
    assert err == "turn [00:46.0 -> 00:47.0] was not transcribed: decode failed\n"
    assert transcript.pending() == 0


def test_a_commit_of_the_clients_is_timed_by_the_audio_it_had_sent() -> None:
    transcript = LiveTranscript(manual=True)
    transcript.handle(ev("session.updated"))
    transcript.commit_sent("c1", 3200)
    assert transcript.pending() == 1
    transcript.handle(ev("input_audio_buffer.committed", item_id="m1"))
    transcript.commit_sent("c2", 5000)
    transcript.handle(ev("input_audio_buffer.committed", item_id="m2"))
    tr = "conversation.item.input_audio_transcription.completed"
    for item, text in (("m1", "one"), ("m2", "two")):
        transcript.handle(ev(tr, item_id=item, content_index=0, transcript=text))
    assert [(s.start, s.end, s.text) for s in transcript.segments()] == [
        (0.0, 3.2, "one"),
        (3.2, 5.0, "two"),
    ]


def test_a_commit_while_the_vad_hears_speech_closes_that_turn() -> None:
    transcript, _, _, _ = follow(
        [ev("input_audio_buffer.speech_started", item_id="v", audio_start_ms=700)]
    )
    transcript.commit_sent("c", 2000)
    transcript.handle(ev("input_audio_buffer.committed", item_id="other-id"))
    turn = transcript.turns["other-id"]
    assert (turn.start_ms, turn.end_ms, turn.committed, turn.heard) == (700, 2000, True, True)


def test_an_empty_commit_is_no_problem_and_other_errors_are_noted() -> None:
    transcript, _, err, _ = follow([])
    transcript.commit_sent("c9", 100)
    error = {"type": "invalid_request_error", "code": "input_audio_buffer_commit_empty"}
    transcript.handle(ev("error", error={**error, "message": "empty", "event_id": "c9"}))
    assert transcript.pending() == 0 and transcript.turns == {}
    transcript.commit_sent("c10", 100)  # the same, from a server that names no event
    transcript.handle(ev("error", error={**error, "message": "empty"}))
    assert transcript.pending() == 0
    transcript.handle(ev("error", error={"type": "server_error", "message": "queue is full"}))
    view = transcript.view
    assert isinstance(view, CaptionView) and view.err.getvalue() == (  # type: ignore[attr-defined]
        "the server says: queue is full\n"
    )


def test_an_error_before_the_session_is_ready_ends_it() -> None:
    transcript = LiveTranscript()
    transcript.update_id = "u1"
    bad = {"type": "invalid_request_error", "code": "invalid_value", "message": "rate 8000"}
    with pytest.raises(RealtimeSessionError, match="refused the session's settings: rate 8000"):
        transcript.handle(ev("error", error={**bad, "event_id": "u1"}))
    transcript.handle(ev("session.updated"))
    with pytest.raises(RealtimeSessionError) as info:  # a later update refused: the same
        transcript.handle(ev("error", error={**bad, "event_id": "u1"}))
    assert info.value.code == "invalid_value"


def test_a_conversation_prints_and_writes_the_answers() -> None:
    events = [*vad_turn("u1", 500, 1500), *answer("r1", "Hi there."), *vad_turn("u2", 3000, 4000)]
    events += answer("r2", "Cut short", status="cancelled")
    transcript, out, _, _ = follow(events, chat=True)
    assert out == (
        "[00:00.5 -> 00:01.5] you\n> Hi there.\n[00:03.0 -> 00:04.0] you\n> Cut short [cancelled]\n"
    )
    assert [(s.start, s.text) for s in transcript.segments()] == [
        (0.5, "Hi there."),
        (3.0, "Cut short"),
    ]
    _, out, _, _ = follow(events, chat=True, tty=True)
    assert screen(out) == [
        "[00:00.5 -> 00:01.5] you",
        "> Hi there. ",
        "[00:03.0 -> 00:04.0] you",
        "> Cut short  [cancelled]",
    ]


def test_a_conversation_on_a_terminal_without_transcripts() -> None:
    """The usual case: the server answers, and transcribes nothing."""
    heard = [e for e in vad_turn("u1", 500, 1500) if "transcription" not in e["type"]]
    _, out, _, _ = follow([*heard, *answer("r1", "Hello.")], chat=True, tty=True)
    assert out.startswith("[00:00.5 -> ...] ...")  # heard: shown at once
    assert screen(out) == ["[00:00.5 -> 00:01.5] you", "> Hello. "]  # nothing left behind


def test_a_conversation_asks_for_answers_to_its_own_commits_with_speech() -> None:
    transcript, _, _, _ = follow([], chat=True)
    transcript.commit_sent("c1", 4000)  # the end of the input, after the last turn: silence
    assert transcript.handle(ev("input_audio_buffer.committed", item_id="s")) is None
    transcript.handle(ev("input_audio_buffer.speech_started", item_id="v", audio_start_ms=5000))
    transcript.commit_sent("c2", 6000)  # the input ended while the VAD heard speech
    assert transcript.handle(ev("input_audio_buffer.committed", item_id="v")) == "create_response"
    assert transcript.pending() == 1  # its answer
    manual = LiveTranscript(chat=True, manual=True)
    manual.handle(ev("session.updated"))
    manual.commit_sent("c1", 1000)
    assert manual.handle(ev("input_audio_buffer.committed", item_id="m")) == "create_response"


def _info(n: int) -> TranscriptionInfo:
    return TranscriptionInfo(source="microphone", task="transcribe", duration=70.0, segments=n)


def test_files_hold_what_finished_when_the_session_is_cut(tmp_path: Path) -> None:
    """Ctrl+C in the middle of the second turn: the files hold the first turn, whole."""
    cut = TWO_TURNS[: len(TWO_TURNS) - 1]  # the second turn has deltas, no completed
    transcript, _, _, _ = follow(cut)
    assert transcript.pending() == 1
    segments = transcript.segments()
    paths = write_outputs(tmp_path / "talk", ["srt", "vtt", "txt", "json"], segments, _info(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
    subs = list(srt.parse((tmp_path / "talk.srt").read_text()))
    assert [(s.start.total_seconds(), s.end.total_seconds(), s.content) for s in subs] == [
        (1.0, 2.5, "hello world")
    ]
    assert (tmp_path / "talk.txt").read_text() == "hello world\n"
    assert json.loads((tmp_path / "talk.json").read_text()) == {"text": "hello world"}
    assert "00:00:01.000 --> 00:00:02.500\nhello world" in (tmp_path / "talk.vtt").read_text()
