"""The live core (qaudio_local.live) in process, on the tiny model: where its audio goes,
how turns are cut, and its bounds (audio it holds, a close that stops the generation).

The protocol around it is tests/test_realtime.py's.
"""

from __future__ import annotations

import queue
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from qaudio_local.audio.stream import AudioStream
from qaudio_local.audio.vad import SpeechSegment, VadOptions
from qaudio_local.engine.model import AudioModel
from qaudio_local.live import LiveConfig, LiveLimits, LiveSession, TurnDetection
from qaudio_local.live import events as ev
from qaudio_local.live.turns import PcmInput, Turns
from qaudio_local.live.work import Edges
from tests.support.audio import MINUTE, clip, make_recording

SR = 16_000


def test_turn_detection_defaults_are_the_long_form_ones() -> None:
    assert TurnDetection().vad_options() == VadOptions()
    vad = TurnDetection(threshold=0.6, prefix_padding_ms=300, silence_duration_ms=500)
    assert vad.vad_options() == VadOptions(0.6, 0.45, pad_s=0.3, min_silence_s=0.5)
    for bad in ({"threshold": 1.0}, {"silence_duration_ms": 0}, {"prefix_padding_ms": -1}):
        with pytest.raises(ValueError):
            TurnDetection(**bad)
    with pytest.raises(ValueError, match="rate"):
        LiveConfig(rate=44_100)


def test_pcm_input_is_what_transcribe_reads(tmp_path: Path) -> None:
    """24 kHz PCM16 resampled as a stream, in chunks of any size: the same samples as the
    long-form path reads from a file of those bytes."""
    rng = np.random.default_rng(3)
    pcm = (rng.standard_normal(24_000 * 3) * 3000).astype("<i2")
    path = tmp_path / "x.wav"
    sf.write(path, pcm, 24_000, subtype="PCM_16")
    with AudioStream(path) as stream:
        want = np.concatenate(list(stream.blocks()))
    raw, pos, got = pcm.tobytes(), 0, []
    pcm_in = PcmInput(24_000)
    while pos < len(raw):
        n = int(rng.integers(1, 2000)) * 2
        got.append(pcm_in.push(raw[pos : pos + n]))
        pos += n
    got.append(pcm_in.flush())
    np.testing.assert_array_equal(np.concatenate(got), want)
    assert pcm_in.produced == len(want) == 48_000
    with pytest.raises(ValueError, match="16-bit"):
        pcm_in.push(b"\x00\x01\x02")


def test_a_committed_turn_over_30_s_is_cut_in_pieces() -> None:
    speech = np.concatenate([clip("long")] * 3)  # 46 s, pauses only between sentences
    turns = Turns(None)
    assert turns.feed(np.zeros(SR, np.float32)) == [] and turns.held == SR
    turns.clear()
    assert turns.feed(speech) == [] and turns.open
    pieces = turns.commit()
    assert all(isinstance(p, SpeechSegment) for p in pieces) and len(pieces) >= 2
    assert pieces[0].start == SR and pieces[-1].end == SR + len(speech)  # all of it
    assert all(a.end == b.start for a, b in zip(pieces, pieces[1:], strict=False))
    assert all(p.end - p.start <= 30 * SR for p in pieces)
    assert [p.final for p in pieces] == [False] * (len(pieces) - 1) + [True]
    np.testing.assert_array_equal(np.concatenate([p.audio for p in pieces]), speech)
    assert not turns.open and turns.commit() == []


def test_manual_audio_goes_to_the_detector_when_vad_is_turned_on() -> None:
    x = np.concatenate([np.zeros(SR, np.float32), clip("a"), np.zeros(3 * SR, np.float32)])
    turns = Turns(None)
    turns.feed(x[: 2 * SR])
    events = turns.reconfigure(TurnDetection()) + turns.feed(x[2 * SR :])
    whole = Turns(TurnDetection()).feed(x)

    def bounds(events: list) -> list:
        return [(type(e).__name__, e.start, getattr(e, "end", None)) for e in events]

    assert bounds(events) == bounds(whole) and len(whole) == 2  # a start, then the segment


def test_edges_trim_each_piece_and_join_pieces_with_a_space() -> None:
    edges = Edges(" ")
    out = [edges.feed(t) for t in ["  Hello", " wor", "ld ", " ", "!", "  "]]
    assert "".join(out) == " " + "  Hello world  !  ".strip()
    assert Edges("").feed("\n") == ""


class Collect:
    """A session's events, as its emit callback."""

    def __init__(self) -> None:
        self.q: queue.Queue[Any] = queue.Queue()
        self.seen: list[Any] = []

    def __call__(self, event: Any) -> None:
        self.q.put(event)

    def until(self, kind: type, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            event = self.q.get(timeout=max(0.0, deadline - time.monotonic()))
            self.seen.append(event)
            if isinstance(event, kind):
                return event


def _pcm(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


MANUAL = LiveConfig(rate=SR, turn_detection=None, language="English")


def test_audio_beyond_the_limit_is_refused(tiny_model: AudioModel) -> None:
    out = Collect()
    session = LiveSession(tiny_model, MANUAL, out, limits=LiveLimits(max_buffer_seconds=5))
    try:
        session.append(_pcm(clip("a")[: 3 * SR]), event_id="first")
        session.append(_pcm(clip("b")[: 3 * SR]), event_id="second")
        error = out.until(ev.SessionError)
        assert (error.code, error.event_id) == ("input_audio_buffer_full", "second")
        assert "5 s" in error.message and session.held_seconds == pytest.approx(3.0)
        session.commit()
        done = out.until(ev.TranscriptCompleted)
        assert done.usage.audio_tokens == 75  # 3 s: the refused audio never got in
        deadline = time.monotonic() + 5
        while session.held_seconds and time.monotonic() < deadline:
            time.sleep(0.01)
        assert session.held_seconds == 0
    finally:
        session.close()
        assert session.join()


def test_a_flood_faster_than_the_model_is_bounded(tiny_model: AudioModel, tmp_path: Path) -> None:
    """Server VAD, a minute of speech appended at once: what waits for the model stays
    within the limit (plus the piece being cut), the rest is refused; turns still end."""
    path = tmp_path / "minute.wav"
    make_recording(path, MINUTE)
    x = sf.read(path, dtype="float32")[0]
    out = Collect()
    limits = LiveLimits(max_buffer_seconds=10)
    config = LiveConfig(rate=SR, language="English")
    session = LiveSession(tiny_model, config, out, limits=limits)
    most = 0.0
    try:
        for i in range(0, len(x), SR // 2):
            session.append(_pcm(x[i : i + SR // 2]))
            most = max(most, session.held_seconds)
        assert most <= 10 + 30 + 0.5
        deadline = time.monotonic() + 30
        while session.held_seconds > 1 and time.monotonic() < deadline:  # the model catches up
            time.sleep(0.01)
        session.append(_pcm(np.zeros(3 * SR, np.float32)))  # then a pause ends the turn
        out.until(ev.TranscriptCompleted)
        refused = [e for e in out.seen if isinstance(e, ev.SessionError)]
        assert refused and {e.code for e in refused} == {"input_audio_buffer_full"}
    finally:
        session.close()
        assert session.join()


@pytest.mark.parametrize("mode", ["transcription", "conversation"])
def test_close_stops_the_generation_within_a_step(tiny_model: AudioModel, mode: str) -> None:
    out = Collect()
    config = LiveConfig(mode=mode, rate=SR, turn_detection=None, language="English")
    session = LiveSession(tiny_model, config, out)
    speech = np.concatenate([clip("a"), clip("b")])
    before = tiny_model.stats
    try:
        if mode == "transcription":
            session.append(_pcm(speech))
            session.commit()
            out.until(ev.TranscriptDelta)
        else:
            session.add_text("Go on.")
            session.create_response(max_tokens=100_000)
            out.until(ev.ResponseDelta)
        session.close()
        emitted = out.q.qsize()  # events sent before the close, not yet read
        t0 = time.monotonic()
        while tiny_model.stats.requests == before.requests and time.monotonic() - t0 < 5:
            time.sleep(0.001)
        stopped = time.monotonic() - t0
    finally:
        session.close()
        assert session.join()
    after = tiny_model.stats
    assert after.requests == before.requests + 1 and stopped < 0.5
    # cancelled, not finished: a whole turn is 300 tokens, an answer runs to the context
    assert after.tokens_fed - before.tokens_fed < 250
    if mode == "transcription":  # its cells are free again (not kept: a one-off prompt)
        assert after.cells_used == before.cells_used
    assert out.q.qsize() == emitted  # nothing after close


def test_a_closed_session_is_freed_at_once(tiny_model: AudioModel) -> None:
    """Nothing refers back to a session: once closed and dropped it is gone, with its
    detector and audio, without waiting for a full garbage collection (RSS stays flat
    over hundreds of sessions)."""
    import gc
    import weakref

    out = Collect()
    session = LiveSession(tiny_model, LiveConfig(rate=SR), out)
    session.append(_pcm(np.zeros(SR, np.float32)))
    session.close()
    assert session.join()
    ref = weakref.ref(session)
    gc.disable()
    try:
        del session
        assert ref() is None
    finally:
        gc.enable()
