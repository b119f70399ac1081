"""The Realtime protocol client of ``qaudio listen``: the address built from ``--server``,
the key, the ``session.update`` it sends, and one clean error for each way connecting
fails (against the fake peer of tests/support/realtime_peer.py, or nothing at all)."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from qaudio_local.cli.realtime_client import (
    RealtimeConnection,
    SessionConfig,
    TurnDetection,
    auth_headers,
    realtime_url,
)
from qaudio_local.errors import RealtimeSessionError, ServerConnectionError
from tests.support.realtime_peer import Peer, running


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("http://127.0.0.1:8000", "ws://127.0.0.1:8000/v1/realtime"),
        ("http://127.0.0.1:8000/", "ws://127.0.0.1:8000/v1/realtime"),
        ("http://127.0.0.1:8000/v1", "ws://127.0.0.1:8000/v1/realtime"),
        ("http://127.0.0.1:8000/v1/", "ws://127.0.0.1:8000/v1/realtime"),
        ("https://gpu.example:443/v1", "wss://gpu.example:443/v1/realtime"),
        ("https://gpu.example/proxy/qaudio", "wss://gpu.example/proxy/qaudio/v1/realtime"),
        ("ws://host:9000/v1/realtime", "ws://host:9000/v1/realtime"),
        ("wss://host", "wss://host/v1/realtime"),
        ("localhost:8000", "ws://localhost:8000/v1/realtime"),
        ("http://[::1]:8000", "ws://[::1]:8000/v1/realtime"),
    ],
)
def test_the_url_is_the_sdks(server: str, expected: str) -> None:
    """http -> ws, https -> wss, the API's /v1 base, then /realtime (as the SDK appends
    it to its base_url)."""
    assert realtime_url(server, transcription=False) == expected


def test_the_url_carries_the_intent_and_the_model() -> None:
    url = realtime_url("http://h:1/v1?x=1&model=old", transcription=True, model="qwen2-audio")
    assert url == "ws://h:1/v1/realtime?x=1&model=qwen2-audio&intent=transcription"
    assert realtime_url("http://h:1", transcription=False, model="m a") == (
        "ws://h:1/v1/realtime?model=m+a"
    )


@pytest.mark.parametrize("bad", ["ftp://h:1", "http://", "http://h:99999", "http://h:port"])
def test_a_url_that_is_not_an_address_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="address"):
        realtime_url(bad, transcription=True)


def test_the_key_is_a_bearer_token() -> None:
    assert auth_headers("k") == {"Authorization": "Bearer k"}
    assert auth_headers(None) == {} and auth_headers("") == {}


def test_session_update_in_the_sdks_shape() -> None:
    transcription = SessionConfig(
        rate=24000, language="en", prompt="names: Ada", turn_detection=TurnDetection(0.6, 200, 700)
    ).session()
    assert transcription == {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.6,
                    "prefix_padding_ms": 200,
                    "silence_duration_ms": 700,
                },
                "transcription": {"language": "en", "prompt": "names: Ada"},
            }
        },
    }
    chat = SessionConfig(chat=True, turn_detection=None, model="m", instructions="Be brief.")
    assert chat.session() == {
        "type": "realtime",
        "output_modalities": ["text"],
        "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": None}
        },
        "model": "m",
        "instructions": "Be brief.",
    }


def test_events_go_out_with_the_key_and_ids_and_come_back_as_dicts() -> None:
    with running(Peer([])) as peer:
        url = realtime_url(peer.url, transcription=True, model="tiny")
        with RealtimeConnection.open(url, "peer-key") as conn:
            assert conn.receive(timeout=5)["type"] == "session.created"  # type: ignore[index]
            first = conn.update_session(SessionConfig(rate=16000))
            assert conn.receive(timeout=5)["type"] == "session.updated"  # type: ignore[index]
            second = conn.append(b"\x01\x00\xff\x7f")
            assert conn.receive(timeout=0.05) is None  # nothing to say: no event
    assert first != second and first.startswith("qaudio_session_update")
    assert peer.headers["Authorization"] == "Bearer peer-key"
    assert peer.path == "/v1/realtime?model=tiny&intent=transcription"
    assert peer.received[1] == {
        "type": "input_audio_buffer.append",
        "event_id": second,
        "audio": "AQD/fw==",
    }
    assert bytes(peer.audio) == b"\x01\x00\xff\x7f"


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (401, ["HTTP 401", "--api-key KEY or --api-key-file FILE"]),
        (403, ["HTTP 403", "/v1/realtime", "the key"]),
        (404, ["HTTP 404", "/v1/realtime", "update the server"]),
        (503, ["HTTP 503", "still loading"]),
    ],
)
def test_a_refused_upgrade_is_one_error_naming_the_url_and_what_to_check(
    status: int, words: list[str]
) -> None:
    with running(Peer([], refuse_status=status)) as peer:
        url = realtime_url(peer.url, transcription=True)
        with pytest.raises(ServerConnectionError) as info:
            RealtimeConnection.open(url, "peer-key")
    message = str(info.value)
    assert info.value.status == status and info.value.url == url
    assert message.startswith(f"could not open a live session at {url}: ")
    assert f"(refused ({status}))" in message  # the server's own message, from its body
    assert all(w in message for w in words), message


def test_a_wrong_key_is_a_401() -> None:
    with running(Peer([])) as peer, pytest.raises(ServerConnectionError, match="401") as info:
        RealtimeConnection.open(realtime_url(peer.url, transcription=True), "wrong")
    assert "peer-key" not in str(info.value) and "wrong" not in str(info.value)


def test_nothing_listening_is_one_error_naming_the_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = realtime_url(f"127.0.0.1:{port}", transcription=True)
    with pytest.raises(ServerConnectionError) as info:
        RealtimeConnection.open(url, None)
    assert info.value.status is None
    assert str(info.value).startswith(f"could not connect to {url}: ")
    assert "check that `qaudio serve` runs there" in str(info.value)


def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()  # accepts the TCP connection, never answers the upgrade
        url = f"ws://127.0.0.1:{s.getsockname()[1]}/v1/realtime"
        with pytest.raises(ServerConnectionError, match="no answer within 1 s"):
            RealtimeConnection.open(url, None, timeout=1)


def test_a_closed_session_is_one_error_with_the_close_reason() -> None:
    with running(Peer([], close_after=1)) as peer:
        conn = RealtimeConnection.open(realtime_url(peer.url, transcription=True), "peer-key")
        conn.receive(timeout=5)
        conn.append(b"\x00\x00")
        with pytest.raises(RealtimeSessionError, match="code 1011: the fake peer gives up"):
            for _ in range(50):
                conn.receive(timeout=0.1)
        with pytest.raises(RealtimeSessionError, match="closed the session"):
            conn.append(b"\x00\x00")
        conn.close()


def test_sends_from_two_threads_stay_whole() -> None:
    with running(Peer([])) as peer:
        conn = RealtimeConnection.open(realtime_url(peer.url, transcription=True), "peer-key")
        chunk = bytes(range(256)) * 8

        def many() -> None:
            for _ in range(50):
                conn.append(chunk)

        threads = [threading.Thread(target=many) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        conn.update_session(SessionConfig())
        while (event := conn.receive(timeout=5)) and event["type"] != "session.updated":
            pass
        conn.close()
    assert peer.types().count("input_audio_buffer.append") == 100
    assert bytes(peer.audio) == chunk * 100
    assert all(json.dumps(e) for e in peer.received)
