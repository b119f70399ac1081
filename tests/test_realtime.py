"""``GET /v1/realtime`` against the official, unmodified ``openai`` SDK, on 127.0.0.1.

Each server is a real ``qaudio serve`` process with the tiny model; audio is streamed as a
client streams it, 24 kHz PCM16 in chunks of 20-100 ms, faster than real time; every
event is parsed by the SDK's own types. Turn boundaries and texts are compared with the
long-form path on the same audio (``qaudio transcribe --deterministic``'s library call).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import websockets.sync.client as wsc
from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionCompletedEvent as TranscriptionCompleted,
)
from openai.types.realtime import InputAudioBufferSpeechStartedEvent, ResponseDoneEvent
from websockets.exceptions import InvalidStatus

from qaudio_local.transcription import TranscribeOptions, detect_language, transcribe
from qaudio_local.transcription.writers import clean, full_text
from tests.support.audio import clip, make_recording
from tests.support.realtime import KEY, Events, Pair, Server, client, pcm16, send_audio, serving

MODEL = "tiny-qwen2-audio.F32"
COMPLETED = "conversation.item.input_audio_transcription.completed"
THREE = [("sil", 1.5), ("say", "a"), ("sil", 3), ("say", "b"), ("sil", 3), ("say", "c"), ("sil", 3)]
TRANSCRIBE = {"intent": "transcription"}


@pytest.fixture(scope="module")
def det(tiny_gguf: Pair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Deterministic: one sequence, each turn alone from an empty cache."""
    home = tmp_path_factory.mktemp("det")
    with serving(tiny_gguf, home, "--deterministic", "--max-sessions", "4") as server:
        yield server


@pytest.fixture(scope="module")
def par(tiny_gguf: Pair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Four sequences decoded together, room for nine sessions."""
    home = tmp_path_factory.mktemp("par")
    with serving(
        tiny_gguf, home, "--parallel", "4", "--max-sessions", "9", "--kv-type", "f32"
    ) as server:
        yield server


@pytest.fixture(scope="module")
def offline(tiny_gguf: Pair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The model as ``qaudio transcribe --deterministic --threads 2`` loads it."""
    from qaudio_local.models.load import load_model

    home = tmp_path_factory.mktemp("offline")
    with pytest.MonkeyPatch.context() as mp:  # the autouse fixture is not set up yet
        mp.setenv("QAUDIO_HOME", str(home / "q"))
        mp.setenv("QAUDIO_CACHE_DIR", str(home / "c"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        model = load_model(
            model_file=tiny_gguf[0], mmproj_file=tiny_gguf[1], deterministic=True, n_threads=2
        )
    with model:
        yield model


def _count(kind: str, n: int) -> Callable[[Any], bool]:
    seen = [0]

    def done(event: Any) -> bool:
        seen[0] += event.type == kind
        return seen[0] >= n

    return done


def _item(event: Any) -> str | None:
    item = getattr(event, "item", None)
    return item.id if item is not None else getattr(event, "item_id", None)


def _is(kind: str) -> Callable[[Any], bool]:
    return lambda e: e.type == kind


def _session_audio(tmp_path: Path, plan: list) -> tuple[bytes, Path]:
    """A recording as a client sends it (24 kHz PCM16), and the same bytes as a WAV file
    for the offline run."""
    src = tmp_path / "src.wav"
    make_recording(src, plan)
    raw = pcm16(sf.read(src, dtype="float32")[0])
    wav = tmp_path / "session.wav"
    sf.write(wav, np.frombuffer(raw, "<i2"), 24_000, subtype="PCM_16")
    return raw, wav


def _transcribe_live(url: str, raw: bytes, turns: int, seed: int = 0) -> Events:
    with client(url).realtime.connect(extra_query=TRANSCRIBE) as conn:
        events = Events(conn)
        events.until(_is("session.created"))
        send_audio(conn, raw, seed=seed)
        events.until(_count(COMPLETED, turns), timeout=120)
    return events


def test_three_turns_equal_the_offline_run(det: Server, offline: Any, tmp_path: Path) -> None:
    raw, wav = _session_audio(tmp_path, THREE)
    segments = list(transcribe(offline, wav, TranscribeOptions(deterministic=True)))
    assert len(segments) == 3
    events = _transcribe_live(det.url, raw, 3)
    created = events.of("session.created")[0]
    assert created.session.type == "transcription"
    assert created.session.audio.input.format.rate == 24_000
    assert created.session.audio.input.turn_detection.silence_duration_ms == 2000
    started = events.of("input_audio_buffer.speech_started")
    stopped = events.of("input_audio_buffer.speech_stopped")
    committed = events.of("input_audio_buffer.committed")
    completed = events.of(COMPLETED)
    assert all(isinstance(e, InputAudioBufferSpeechStartedEvent) for e in started)
    assert all(isinstance(e, TranscriptionCompleted) for e in completed)
    # the bounds are the segmenter's, exactly (sample // 16 = ms)
    assert [e.audio_start_ms for e in started] == [s.start_sample // 16 for s in segments]
    assert [e.audio_end_ms for e in stopped] == [s.end_sample // 16 for s in segments]
    items = [e.item_id for e in started]
    assert [e.item_id for e in stopped] == [e.item_id for e in committed] == items
    assert [e.item_id for e in completed] == items
    assert [e.previous_item_id for e in committed] == [None, *items[:2]]
    # the words are the offline run's
    assert [e.transcript for e in completed] == [clean(s.text) for s in segments]
    seen = events.seen
    for item, done in zip(items, completed, strict=True):
        deltas = [e for e in seen if e.type.endswith(".delta") and e.item_id == item]
        assert deltas and clean("".join(d.delta for d in deltas)) == done.transcript
        order = [
            seen.index(next(e for e in seen if e.type == kind and _item(e) == item))
            for kind in (
                "input_audio_buffer.speech_started",
                "input_audio_buffer.speech_stopped",
                "input_audio_buffer.committed",
                "conversation.item.added",
                "conversation.item.input_audio_transcription.delta",
                COMPLETED,
            )
        ]
        assert order == sorted(order)
        assert done.usage.type == "tokens" and done.usage.output_tokens > 0
        assert 0 < done.usage.input_token_details.audio_tokens < done.usage.input_tokens


def test_manual_commits_at_16_khz(det: Server, offline: Any) -> None:
    """turn_detection null: the client's commits end the turns, each transcribed whole;
    nothing to commit is an error, clear drops what was appended."""
    raw = [pcm16(clip(k), 16_000) for k in ("a", "b")]
    with client(det.url).realtime.connect(extra_query=TRANSCRIBE) as conn:
        events = Events(conn)
        events.until(_is("session.created"))
        fmt = {"type": "audio/pcm", "rate": 16_000}
        conn.session.update(
            session={
                "type": "transcription",
                "audio": {"input": {"format": fmt, "turn_detection": None}},
            }
        )
        updated = events.until(_is("session.updated"))[-1]
        assert updated.session.audio.input.turn_detection is None
        assert updated.session.audio.input.format.rate == 16_000
        conn.input_audio_buffer.commit(event_id="early")
        error = events.until(_is("error"))[-1].error
        assert (error.code, error.event_id) == ("input_audio_buffer_commit_empty", "early")
        send_audio(conn, raw[1][:32_000], rate=16_000)
        conn.input_audio_buffer.clear()
        events.until(_is("input_audio_buffer.cleared"))
        for r in raw:
            send_audio(conn, r, rate=16_000)
            conn.input_audio_buffer.commit()
        events.until(_count(COMPLETED, 2))
    assert not events.of("input_audio_buffer.speech_started")
    assert len(events.of("input_audio_buffer.committed")) == 2
    opts = TranscribeOptions()
    audio = [np.frombuffer(r, "<i2").astype(np.float32) / 32768 for r in raw]
    language = detect_language(offline, audio[0], cold=True, keep_cache=False)
    expected = [
        clean(
            offline.generate(
                opts.instruction(language),
                [x],
                sampling=opts.sampling_for(len(x) / 16_000),
                cold=True,
            ).text
        )
        for x in audio
    ]
    assert [e.transcript for e in events.of(COMPLETED)] == expected


@pytest.mark.slow
def test_a_45_second_turn_is_cut_and_transcribed_whole(
    det: Server, offline: Any, tmp_path: Path
) -> None:
    raw, wav = _session_audio(tmp_path, [("sil", 1), *[("say", "long")] * 3, ("sil", 3)])
    segments = list(transcribe(offline, wav, TranscribeOptions(deterministic=True)))
    assert len(segments) >= 2  # cut in the pauses between the sentences, not dropped
    ends = [s.end_sample for s in segments[:-1]]
    assert ends == [s.start_sample for s in segments[1:]]  # one after another
    assert segments[-1].end_sample - segments[0].start_sample > 44 * 16_000
    events = _transcribe_live(det.url, raw, 1)
    (started,) = events.of("input_audio_buffer.speech_started")
    (stopped,) = events.of("input_audio_buffer.speech_stopped")
    (done,) = events.of(COMPLETED)
    assert started.audio_start_ms == segments[0].start_sample // 16
    assert stopped.audio_end_ms == segments[-1].end_sample // 16
    assert done.transcript == full_text(segments)  # both pieces, nothing dropped
    assert done.usage.input_tokens == sum(s.prompt_tokens for s in segments)


def _raw_errors(conn: Any, events: Events, sends: list[str | bytes], n: int) -> list[Any]:
    for message in sends:
        conn.send_raw(message)
    return [e.error for e in events.until(_count("error", n)) if e.type == "error"]


def test_malformed_events_get_errors_and_the_session_goes_on(det: Server) -> None:
    def ev(kind: str, eid: str, **fields: Any) -> str:
        return json.dumps({"type": kind, "event_id": eid, **fields})

    def update(eid: str, **inp: Any) -> str:
        return ev("session.update", eid, session={"type": "transcription", "audio": {"input": inp}})

    odd = base64.b64encode(b"\x01\x02\x03").decode()
    cases: list[tuple[str | bytes, str | None, str]] = [
        ("not json {", None, "invalid_json"),
        ('["a", "list"]', None, "invalid_event"),
        ('{"event_id": "no-type"}', "no-type", "invalid_event"),
        (ev("no.such.event", "unknown"), "unknown", "invalid_value"),
        (ev("conversation.item.truncate", "truncate"), "truncate", "unsupported_event"),
        (ev("input_audio_buffer.append", "b64", audio="**not base64**"), "b64", "invalid_audio"),
        (
            ev("input_audio_buffer.append", "odd", audio=odd),
            "odd",
            "invalid_audio",
        ),
        (update("rate", format={"type": "audio/pcm", "rate": 44_100}), "rate", "invalid_value"),
        (update("ulaw", format={"type": "audio/pcmu"}), "ulaw", "invalid_value"),
        (update("semantic", turn_detection={"type": "semantic_vad"}), "semantic", "unsupported"),
        (update("vad", turn_detection={"threshold": 2}), "vad", "invalid_value"),
        (ev("session.update", "type", session={"type": "realtime"}), "type", "invalid_value"),
        (ev("response.create", "respond"), "respond", "unsupported_event"),
        (ev("response.cancel", "cancel"), "cancel", "response_cancel_not_active"),
        (ev("input_audio_buffer.commit", "commit"), "commit", "input_audio_buffer_commit_empty"),
        (b"\x00binary", None, "invalid_event"),
        (ev("input_audio_buffer.append", "huge", audio="A" * (2 << 20)), None, "event_too_large"),
    ]
    with client(det.url).realtime.connect(extra_query=TRANSCRIBE) as conn:
        events = Events(conn)
        events.until(_is("session.created"))
        errors = _raw_errors(conn, events, [c[0] for c in cases], len(cases))
        got = sorted((str(e.event_id), e.code) for e in errors)
        assert got == sorted((str(eid), code) for _, eid, code in cases)
        assert all(e.type == "invalid_request_error" and e.message for e in errors)
        assert not events.of("session.updated")  # every refused update changed nothing
        conn.session.update(session={"type": "transcription"})
        updated = events.until(_is("session.updated"))[-1]
        assert updated.session.audio.input.format.rate == 24_000
        send_audio(conn, pcm16(np.concatenate([clip("a"), np.zeros(40_000, np.float32)])))
        events.until(_is(COMPLETED))  # the session still works


def test_conversation_turn_two_reuses_turn_one(par: Server) -> None:
    pause = np.full(32_000, 0.0003, np.float32)
    with client(par.url).realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        created = events.until(_is("session.created"))[-1]
        assert created.session.type == "realtime" and created.session.output_modalities == ["text"]
        conn.session.update(session={"type": "realtime", "output_modalities": ["text", "audio"]})
        error = events.until(_is("error"))[-1].error
        assert error.param == "session.output_modalities" and "text only" in error.message
        vad = {"type": "server_vad", "silence_duration_ms": 800}
        conn.session.update(
            session={
                "type": "realtime",
                "instructions": "Answer in one short sentence.",
                "max_output_tokens": 8,
                "audio": {"input": {"turn_detection": vad}},
            }
        )
        events.until(_is("session.updated"))
        answers = []
        for key in ("a", "b"):
            send_audio(conn, pcm16(np.concatenate([clip(key), pause])))
            answers.append(events.until(_is("response.done"))[-1])
    first, second = (a.response for a in answers)
    assert all(isinstance(a, ResponseDoneEvent) for a in answers)
    assert first.status in ("completed", "incomplete") and first.usage.output_tokens <= 8
    # turn 2's prompt starts with turn 1's (its audio and the answer): those cells are reused
    cached = second.usage.input_token_details.cached_tokens
    assert cached >= first.usage.input_tokens > 0
    assert second.usage.input_tokens - cached < first.usage.input_tokens
    seen = events.seen
    texts = [e.text for e in seen if e.type == "response.output_text.done"]
    for rid, text in zip([first.id, second.id], texts, strict=True):
        deltas = [
            e.delta for e in seen if e.type == "response.output_text.delta" and e.response_id == rid
        ]
        assert "".join(deltas) == text
    kinds = [e.type for e in seen]
    assert kinds.index("input_audio_buffer.committed") < kinds.index("response.created")
    assert kinds.index("response.created") < kinds.index("response.output_text.delta")


def test_cancel_and_barge_in_stop_the_answer(par: Server) -> None:
    """The tiny model's answer to "Go." runs to any limit: only a cancel ends it early."""
    go = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Go."}]}
    with client(par.url).realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        events.until(_is("session.created"))
        conn.session.update(session={"type": "realtime", "max_output_tokens": 3000})
        conn.conversation.item.create(item=go)
        conn.response.create()
        conn.response.create(event_id="twice")  # one answer at a time
        error = events.until(_is("error"))[-1].error
        assert (error.code, error.event_id) == ("conversation_already_has_active_response", "twice")
        events.until(_is("response.output_text.delta"))
        conn.response.cancel()
        done = events.until(_is("response.done"))[-1].response
        assert done.status == "cancelled" and done.status_details.reason == "client_cancelled"
        assert 0 < done.usage.output_tokens < 3000
        assert done.output[0].content[0].text  # what was said is kept
        conn.response.cancel(event_id="late")
        error = events.until(_is("error"))[-1].error
        assert (error.code, error.event_id) == ("response_cancel_not_active", "late")
    with client(par.url).realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        events.until(_is("session.created"))
        conn.session.update(session={"type": "realtime", "max_output_tokens": 3000})
        conn.conversation.item.create(item=go)
        conn.response.create()
        events.until(_is("response.output_text.delta"))
        send_audio(conn, pcm16(clip("b")))  # the user speaks over the answer
        done = events.until(_is("response.done"))[-1].response
        assert done.status == "cancelled" and done.status_details.reason == "turn_detected"
        send_audio(conn, pcm16(np.full(40_000, 0.0003, np.float32)))
        events.until(_is("input_audio_buffer.committed"))
        created = events.until(_is("response.created"))[-1].response  # the new turn's answer
        conn.response.cancel()
        last = events.until(_is("response.done"))[-1].response
        assert last.id == created.id and last.status in ("cancelled", "completed")
    assert len(events.of("input_audio_buffer.speech_started")) == 1


@pytest.mark.slow
def test_eight_sessions_give_the_same_texts_as_one(par: Server, tmp_path: Path) -> None:
    raw, _ = _session_audio(tmp_path, THREE)

    def texts(seed: int) -> list[tuple[int, int, str]]:
        events = _transcribe_live(par.url, raw, 3, seed=seed)
        bounds = zip(
            events.of("input_audio_buffer.speech_started"),
            events.of("input_audio_buffer.speech_stopped"),
            events.of(COMPLETED),
            strict=True,
        )
        return [(a.audio_start_ms, b.audio_end_ms, c.transcript) for a, b, c in bounds]

    alone = texts(0)
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(texts, range(1, 9)))
    assert together == [alone] * 8


def test_the_readmes_live_voice_snippet_runs(det: Server, tmp_path: Path) -> None:
    """README.md's Live voice example, as written: only the port and the key file differ."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("\n### Live voice\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    assert "http://127.0.0.1:8000/v1" in code
    code = code.replace("http://127.0.0.1:8000/v1", f"{det.url}/v1")
    (tmp_path / ".qaudio-key").write_text(KEY + "\n")
    sf.write(tmp_path / "talk-24k.wav", np.frombuffer(pcm16(clip("a")), "<i2"), 24_000)
    env = dict(os.environ, HOME=str(tmp_path))
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert re.search(r"\n\[item_\w+\] \S", run.stdout), run.stdout


def _refusal(url: str, **kw: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(InvalidStatus) as refused:
        wsc.connect(url, open_timeout=10, **kw).close()
    response = refused.value.response
    return response.status_code, json.loads(response.body)


def test_auth_by_header_or_subprotocol_and_refusals_before_the_upgrade(det: Server) -> None:
    url = det.url.replace("http://", "ws://") + "/v1/realtime"
    for protocols, chosen in (
        (["realtime", f"openai-insecure-api-key.{KEY}"], "realtime"),
        ([f"openai-insecure-api-key.{KEY}"], None),  # never the key back
    ):
        with wsc.connect(f"{url}?intent=transcription", subprotocols=protocols) as ws:
            assert ws.subprotocol == chosen
            assert json.loads(ws.recv(timeout=10))["type"] == "session.created"
    header = {"Authorization": f"Bearer {KEY}"}
    with wsc.connect(url, additional_headers=header) as ws:
        assert json.loads(ws.recv(timeout=10))["session"]["type"] == "realtime"
    for kw in ({}, {"subprotocols": ["realtime", "openai-insecure-api-key.wrong"]}):
        status, body = _refusal(url, **kw)
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
    status, body = _refusal(f"{url}?model=whisper-9", additional_headers=header)
    assert status == 404 and body["error"]["code"] == "model_not_found"
    status, body = _refusal(f"{url}?intent=translation", additional_headers=header)
    assert status == 400 and body["error"]["param"] == "intent"
    sdk = client(det.url, key="wrong").realtime.connect(extra_query=TRANSCRIBE)
    with pytest.raises(InvalidStatus) as refused:  # the SDK sees the same refusal
        sdk.enter()
    assert refused.value.response.status_code == 401
    assert det.wait_for_line("GET /v1/realtime 401")
    assert det.wait_for_line("GET /v1/realtime 101")


@pytest.fixture(scope="module")
def tight(tiny_gguf: Pair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One sequence with a long context, two sessions at most, idle after 3 s."""
    home = tmp_path_factory.mktemp("tight")
    extra = ("--parallel", "1", "--n-ctx", "8192", "--max-sessions", "2")
    with serving(tiny_gguf, home, *extra, "--session-idle-seconds", "3") as server:
        yield server


def test_max_sessions_refuses_with_a_reason_and_idle_sessions_end(tight: Server) -> None:
    url = tight.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    header = {"Authorization": f"Bearer {KEY}"}
    with client(tight.url).realtime.connect(extra_query=TRANSCRIBE) as one:
        first = Events(one)
        first.until(_is("session.created"))
        with wsc.connect(url, additional_headers=header) as two:
            assert json.loads(two.recv(timeout=10))["type"] == "session.created"
            status, body = _refusal(url, additional_headers=header)
            assert status == 429 and body["error"]["code"] == "session_limit"
            assert "--max-sessions" in body["error"]["message"]
        t0 = time.monotonic()
        error = first.until(_is("error"), timeout=10)[-1].error  # nothing sent for 3 s
        assert error.code == "session_idle_timeout" and time.monotonic() - t0 < 6
        assert first.closed.wait(10)
    deadline = time.monotonic() + 10
    while True:  # both have ended: a new session is served
        try:
            with wsc.connect(url, additional_headers=header) as three:
                assert json.loads(three.recv(timeout=10))["type"] == "session.created"
            break
        except InvalidStatus:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_a_disconnect_mid_answer_frees_the_sequence(tight: Server) -> None:
    """--parallel 1: a client that leaves while its answer runs (up to the 8192-token
    context, many seconds) must not hold the one sequence: the next session is served."""
    say = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Go on."}]}
    with client(tight.url).realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        first = events.until(_is("session.created"))[-1].session.id
        conn.conversation.item.create(item=say)
        conn.response.create()
        events.until(_count("response.output_text.delta", 5))
    left = time.monotonic()
    with client(tight.url).realtime.connect(model=MODEL) as conn:
        events = Events(conn)
        events.until(_is("session.created"))
        conn.conversation.item.create(item=say)
        conn.response.create(response={"max_output_tokens": 4})
        done = events.until(_is("response.done"), timeout=20)[-1].response
    assert done.status in ("completed", "incomplete") and done.usage.output_tokens <= 4
    assert time.monotonic() - left < 4  # the first answer was stopped, not finished
    line = tight.wait_for_line(
        f"realtime conversation {first} "
    )  # the first one's, not the second's
    assert "(client left)" in line and "1 responses (1 stopped)" in line
