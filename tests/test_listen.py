"""``qaudio listen`` end to end against a fake Realtime peer (tests/support/realtime_peer.py):
what it sends (session.update, PCM chunks, commits), the captions it prints, the files it
writes, the microphone path through a stand-in for sounddevice, Ctrl+C, and one clean
error for each way a session fails. The same command against the real endpoint is in
tests/test_listen_realtime.py; the local server it starts without --server is here."""

from __future__ import annotations

import _thread
import base64
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import srt

from qaudio_local.cli import listen_audio
from qaudio_local.cli.captions import LiveTranscript
from qaudio_local.cli.listen_audio import FileSource
from qaudio_local.cli.listen_session import LiveSession
from qaudio_local.cli.realtime_client import RealtimeConnection, SessionConfig, realtime_url
from tests.support.audio import SR, make_recording
from tests.support.cli import invoke
from tests.support.realtime_peer import Peer, ScriptTurn, running

PLAN: list[tuple[str, float | str]] = [("sil", 1.0), ("say", "a"), ("sil", 1.5), ("say", "b")]
PLAN += [("sil", 1.0)]


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, int]]]:
    path = tmp_path_factory.mktemp("listen") / "two-turns.wav"
    return path, make_recording(path, PLAN)


def script(truth: list[tuple[int, int]]) -> list[ScriptTurn]:
    texts = ["the first turn", "and the second"]
    return [
        ScriptTurn(a * 1000 // SR, b * 1000 // SR, text, answer=f"answer {i + 1}")
        for i, ((a, b), text) in enumerate(zip(truth, texts, strict=True))
    ]


def listen(peer: Peer, *args: Any) -> Any:
    return invoke("listen", "--server", peer.url, "--api-key", "peer-key", *args)


def test_a_file_is_captioned_and_written(recording: Any, tmp_path: Path) -> None:
    path, truth = recording
    turns = script(truth)
    with running(Peer(turns)) as peer:
        result = listen(peer, "--input", path, "--speed", "0", "-o", "srt,txt", "-o", "json",
                        "--output-dir", tmp_path, "--language", "en")  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [f"[{_c(t.start_ms)} -> {_c(t.end_ms)}] {t.text}" for t in turns]
    assert result.stdout == "\n".join(lines) + "\n"
    assert "wrote" in result.stderr and "2 turn(s)" in result.stderr
    subs = list(srt.parse((tmp_path / "two-turns.srt").read_text()))
    assert [(s.start.total_seconds(), s.end.total_seconds(), s.content) for s in subs] == [
        (t.start_ms / 1000, t.end_ms / 1000, t.text) for t in turns
    ]
    assert json.loads((tmp_path / "two-turns.json").read_text())["text"] == (
        "the first turn and the second"
    )
    # what went out: the session, every sample of the file in 40 ms chunks, one commit
    update = peer.received[0]
    assert update["type"] == "session.update" and peer.path.endswith("intent=transcription")
    audio_in = update["session"]["audio"]["input"]
    assert update["session"]["type"] == "transcription"
    assert audio_in["format"] == {"type": "audio/pcm", "rate": 16000}
    assert audio_in["turn_detection"]["silence_duration_ms"] == 500
    assert audio_in["transcription"] == {"language": "en"}
    appends = [e for e in peer.received if e["type"] == "input_audio_buffer.append"]
    sizes = {len(base64.b64decode(e["audio"])) for e in appends[:-1]}
    assert sizes == {1280}
    raw, _ = sf.read(path, dtype="int16")
    assert bytes(peer.audio) == raw.astype("<i2").tobytes()
    assert peer.types()[-1] == "input_audio_buffer.commit"  # the end of the input


def _c(ms: int) -> str:
    tenths = round(ms / 100)
    return f"{tenths // 600:02d}:{tenths % 600 // 10:02d}.{tenths % 10}"


def test_manual_turns_at_24khz(recording: Any, tmp_path: Path) -> None:
    path, _ = recording
    peer_ = Peer([], manual_texts=["all of it"])
    with running(peer_) as peer:
        result = listen(peer, "-i", path, "--speed", "0", "--manual", "--rate", "24000",
                        "--chunk-ms", "100", "-o", "vtt", "--output-dir", tmp_path,
                        "--name", "manual")  # fmt: skip
    assert result.exit_code == 0, result.output
    seconds = sf.info(str(path)).frames / SR
    assert result.stdout == f"[00:00.0 -> {_c(round(seconds * 1000))}] all of it\n"
    audio_in = peer.received[0]["session"]["audio"]["input"]
    assert audio_in["turn_detection"] is None and audio_in["format"]["rate"] == 24000
    assert len(peer.audio) == 2 * round(seconds * 24000)
    assert peer.types().count("input_audio_buffer.commit") == 1
    assert "all of it" in (tmp_path / "manual.vtt").read_text()


def test_a_conversation(recording: Any, tmp_path: Path) -> None:
    path, truth = recording
    with running(Peer(script(truth))) as peer:
        result = listen(peer, "-i", path, "--speed", "0", "--chat", "-m", "qwen2-audio",
                        "--system", "Be brief.", "-o", "txt", "--output-dir", tmp_path)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.count(" you\n") == 2
    assert "> answer 1\n" in result.stdout and "> answer 2\n" in result.stdout
    session = peer.received[0]["session"]
    assert session["type"] == "realtime" and session["instructions"] == "Be brief."
    assert session["output_modalities"] == ["text"] and peer.path.endswith("model=qwen2-audio")
    assert "response.create" not in peer.types()  # the VAD's turns: the server answers them
    assert (tmp_path / "two-turns.txt").read_text() == "answer 1\nanswer 2\n"


def test_a_manual_conversation_asks_for_each_answer(recording: Any) -> None:
    path, _ = recording
    with running(Peer([], manual_texts=["x"])) as peer:
        result = listen(peer, "-i", path, "--speed", "0", "--chat", "--manual")
    assert result.exit_code == 0, result.output
    assert peer.types()[-2:] == ["input_audio_buffer.commit", "response.create"]
    assert "> a manual answer\n" in result.stdout


@pytest.mark.parametrize(
    ("peer_args", "args", "message"),
    [
        ({"refuse_session": True}, [], "error: the server refused the session's settings: rate "),
        ({"key": "other"}, [], "HTTP 401"),
        ({"close_after": 5}, [], "closed the session (code 1011: the fake peer gives up)"),
    ],
)
def test_a_failed_session_is_one_error_line(
    recording: Any, tmp_path: Path, peer_args: dict[str, Any], args: list[str], message: str
) -> None:
    path, truth = recording
    with running(Peer(script(truth), **peer_args)) as peer:
        result = listen(peer, "-i", path, "--speed", "0", "-o", "srt", "--output-dir", tmp_path)
    assert result.exit_code == 1 and message in result.stderr, result.stderr
    assert result.stderr.count("error:") == 1 and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing finished: nothing written


def test_the_key_from_a_file(recording: Any, tmp_path: Path) -> None:
    path, truth = recording
    (tmp_path / "key").write_text("peer-key\n")
    with running(Peer(script(truth))) as peer:
        result = invoke("listen", "--server", f"{peer.url}/v1", "--api-key-file",
                        tmp_path / "key", "-i", path, "--speed", "0")  # fmt: skip
    assert result.exit_code == 0 and peer.headers["Authorization"] == "Bearer peer-key"


def test_the_server_and_key_from_the_environment(
    recording: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As for transcribe, run and chat: $QAUDIO_SERVERS (the first; its @N means nothing to
    one live session) and $QAUDIO_API_KEY."""
    path, truth = recording
    with running(Peer(script(truth))) as peer:
        monkeypatch.setenv("QAUDIO_SERVERS", f"{peer.url}@3, http://127.0.0.1:9")
        monkeypatch.setenv("QAUDIO_API_KEY", "peer-key")
        result = invoke("listen", "-i", path, "--speed", "0")
    assert result.exit_code == 0, result.stderr
    assert peer.headers["Authorization"] == "Bearer peer-key"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--api-key", "k"], "--api-key is for --server"),
        (["--server", "h:1", "--model-file", "m.gguf"], "--model-file: for the local model"),
        (["--server", "h:1", "--chat", "--prompt", "p"], "--prompt and --language are for"),
        (["--server", "h:1", "--system", "s"], "--system is for --chat"),
        (["--server", "h:1", "-i", "f.wav", "--device", "1"], "--device is for the microphone"),
        (["--server", "h:1", "--speed", "2"], "--speed is for --input"),
        (["--server", "h:1", "-o", "srt,doc"], "doc: choose from txt, srt"),
        (["--server", "ftp://h", "-i", "x"], "is not an http(s) or ws(s) address"),
    ],
)
def test_usage_errors(args: list[str], message: str, tmp_path: Path) -> None:
    wav = tmp_path / "x"
    sf.write(wav, np.zeros(1600, np.float32), SR, format="WAV")
    result = invoke("listen", *[str(wav) if a == "x" else a for a in args])
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


def test_enter_ends_a_manual_turn(recording: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each Enter (a line on the terminal) asks for a commit, made between two chunks."""
    import io
    import queue

    from qaudio_local.cli.listen import _enter_commits

    requests: queue.Queue[object] = queue.Queue()
    monkeypatch.setattr("sys.stdin", io.StringIO("\n\n"))
    _enter_commits(requests)
    for _ in range(2):
        requests.get(timeout=5)
    requests.put(None)  # Enter, pressed before the first chunk went out
    path, _ = recording
    with running(Peer([], manual_texts=["one", "two"])) as peer:
        conn = RealtimeConnection.open(realtime_url(peer.url, transcription=True), "peer-key")
        source = FileSource(path, "rec", rate=16000, speed=0)
        config = SessionConfig(turn_detection=None)
        live = LiveSession(conn, source, config, LiveTranscript(manual=True), commits=requests)
        result = live.run()
        conn.close()
    kinds = peer.types()
    assert kinds[1:3] == ["input_audio_buffer.append", "input_audio_buffer.commit"]
    assert kinds.count("input_audio_buffer.commit") == 2 and result.unfinished == 0
    segments = live.transcript.segments()
    assert [(s.start, s.end, s.text) for s in segments] == [
        (0.0, 0.04, "one"),
        (0.04, result.sent_ms / 1000, "two"),
    ]


# --- the microphone, and Ctrl+C --------------------------------------------------------------


class FedThenInterrupted:
    """sounddevice's stand-in: its stream's thread hands the recording to the callback, a
    block at a time as PortAudio does, then presses Ctrl+C (the main thread's
    KeyboardInterrupt), as a person ends a session at the microphone."""

    class default:  # noqa: N801
        device = (0, 0)

    def __init__(self, x: np.ndarray) -> None:
        self.x = x

    def query_devices(self, device: Any = None, kind: Any = None) -> Any:
        return {"name": "test mic", "max_input_channels": 1, "default_samplerate": 16000.0}

    def InputStream(self, **kw: Any) -> Any:  # noqa: N802
        x = self.x

        class Stream:
            active = True

            def start(self) -> None:
                threading.Thread(target=self.feed, daemon=True).start()

            def feed(self) -> None:
                n = kw["blocksize"]
                for i in range(0, len(x), n):
                    block = x[i : i + n].reshape(-1, 1)
                    kw["callback"](block, len(block), None, "")
                _thread.interrupt_main()

            def stop(self) -> None:
                self.active = False

            def close(self) -> None:
                pass

        return Stream()


def test_the_microphone_until_ctrl_c(
    recording: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole path from PortAudio's callback to the WebSocket, then Ctrl+C: the turns
    under way are finished and written, and a microphone session ends with status 0."""
    path, truth = recording
    x = sf.read(path, dtype="float32")[0]
    monkeypatch.setattr(listen_audio, "import_sounddevice", lambda: FedThenInterrupted(x))
    turns = script(truth)
    turns[1].end_ms = 60_000  # the speaker is still talking when Ctrl+C comes
    with running(Peer(turns)) as peer:
        result = listen(peer, "-o", "srt", "--output-dir", tmp_path, "--name", "mic")
    assert result.exit_code == 0, result.output
    assert "listening to microphone 'test mic' (16000 Hz)" in result.stderr
    raw, _ = sf.read(path, dtype="int16")
    assert bytes(peer.audio) == raw.astype("<i2").tobytes()  # every sample recorded
    subs = list(srt.parse((tmp_path / "mic.srt").read_text()))
    assert [s.content for s in subs] == ["the first turn", "and the second"]
    assert subs[1].end.total_seconds() == pytest.approx(len(x) / SR, abs=0.001)  # committed


def test_ctrl_c_during_a_file_writes_what_finished(recording: Any, tmp_path: Path) -> None:
    path, truth = recording
    turns = script(truth)
    done_at = (turns[0].end_ms + 500) / 1000 + 0.4  # the first turn has its text by then
    with running(Peer(turns)) as peer:
        timer = threading.Timer(done_at, _thread.interrupt_main)
        timer.start()
        result = listen(peer, "-i", path, "-o", "srt", "--output-dir", tmp_path)
        timer.join()
    assert result.exit_code == 130, result.output
    assert "stopping: finishing 0 turn(s) under way" in result.stderr
    subs = list(srt.parse((tmp_path / "two-turns.srt").read_text()))
    assert [s.content for s in subs] == ["the first turn"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two-turns.srt"]  # no temp file


def test_ctrl_c_twice_leaves_the_turn_under_way(recording: Any) -> None:
    path, truth = recording
    turns = script(truth)[:1]
    turns[0].text = "slow words come one at a time"
    with running(Peer(turns, event_delay=0.4)) as peer:
        conn = RealtimeConnection.open(realtime_url(peer.url, transcription=True), "peer-key")
        source = FileSource(path, "rec", rate=16000, speed=0)
        live = LiveSession(conn, source, SessionConfig(), LiveTranscript())
        for at in (0.8, 1.3):
            threading.Timer(at, _thread.interrupt_main).start()
        result = live.run()
        conn.close()
    assert result.interrupted and result.aborted and result.unfinished >= 1
    assert live.transcript.segments() == []


# --- without --server: the model served from this process -------------------------------


def test_the_local_server_serves_the_model_and_stops(tiny_gguf: tuple[Path, Path]) -> None:
    pytest.importorskip("fastapi")
    import httpx2 as httpx

    from qaudio_local.cli.listen import listen as command
    from qaudio_local.cli.listen_server import local_server

    model, mmproj = tiny_gguf
    args = ["--model-file", str(model), "--mmproj-file", str(mmproj), "--n-ctx", "2048"]
    opts = command.make_context("listen", [*args, "--threads", "2"]).params
    with local_server(opts) as (base, key, model_id):
        assert base.startswith("http://127.0.0.1:") and base.endswith("/v1") and len(key) > 20
        assert model_id == model.name.removesuffix(".gguf")
        models = httpx.get(f"{base}/models", headers={"Authorization": f"Bearer {key}"})
        assert models.json()["data"][0]["id"] == model_id
        assert httpx.get(f"{base}/models").status_code == 401  # the random key is needed
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/models", timeout=2)
