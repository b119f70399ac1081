"""``qaudio serve`` against the official openai client, on 127.0.0.1, with the tiny model.

Each server is a real process (python -m qaudio_local serve) on a free loopback port;
every reply is parsed by the SDK's own response models.
"""

from __future__ import annotations

import base64
import io
import json
import re
import select
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
import soundfile as sf
import srt
import webvtt
from openai.types.audio import Transcription, TranscriptionVerbose

from tests.support.audio import MINUTE, make_recording, tone
from tests.support.served import (
    KEY,
    LOGS,
    Pair,
    Served,
    audio_part,
    client,
    env_with,
    free_port,
    wait_ready,
    wav_bytes,
)


@pytest.fixture(scope="module")
def server(tiny_gguf: Pair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _serve(tiny_gguf, tmp_path_factory, "--parallel", "4", "--max-body-mb", "8")


@pytest.fixture(scope="module")
def tight(tiny_gguf: Pair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One sequence, no queue, 1 MiB bodies: for 429 and 413."""
    yield from _serve(
        tiny_gguf, tmp_path_factory, "--parallel", "1", "--max-queue", "0", "--max-body-mb", "1"
    )


def _serve(pair: Pair, factory: pytest.TempPathFactory, *extra: str) -> Iterator[str]:
    home = factory.mktemp("serve-home")
    served = Served(pair, free_port(), "--api-key", KEY, *extra, env=env_with(QAUDIO_HOME=home))
    LOGS[served.url] = served.lines
    try:
        wait_ready(served.url, served.proc)
        yield served.url
    finally:
        code = served.stop()
        assert "Traceback" not in "\n".join(served.lines), served.lines
        assert code == 0, served.lines  # SIGTERM is a normal stop


MODEL = "tiny-qwen2-audio.F32"

TEN_HOURS = 16000 * 3600 * 10


def flac_bomb() -> bytes:
    """A quarter second of FLAC whose STREAMINFO declares ten hours of samples."""
    b = bytearray(wav_bytes(0.1 * tone(0.25), "FLAC"))
    assert b[:4] == b"fLaC"
    fields = int.from_bytes(b[18:26], "big")  # rate 20 bits, channels 3, depth 5, total 36
    fields = (fields >> 36 << 36) | TEN_HOURS
    b[18:26] = fields.to_bytes(8, "big")
    return bytes(b)


def wav_bomb() -> bytes:
    """A quarter second of WAV whose header declares ten hours of 16-bit samples."""
    b = bytearray(wav_bytes(0.1 * tone(0.25), "WAV"))
    assert b[:4] == b"RIFF" and b[36:40] == b"data"
    b[4:8] = (0xFFFFFFF0).to_bytes(4, "little")
    b[40:44] = (TEN_HOURS * 2).to_bytes(4, "little")
    return bytes(b)


def test_models_and_health(server: str) -> None:
    c = client(server)
    (model,) = c.models.list().data
    assert model.id == MODEL and model.owned_by == "qaudio-local"
    assert model.model_extra and model.model_extra["input_modalities"] == ["text", "audio"]
    assert httpx.get(f"{server}/health").json()["status"] == "ok"  # open without a key


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_chat_with_audio(server: str, fmt: str) -> None:
    c = client(server)
    r = c.chat.completions.create(
        model=MODEL,
        max_tokens=6,
        messages=[
            {
                "role": "user",
                "content": [audio_part(tone(1.0, 300), fmt), {"type": "text", "text": "What?"}],
            }
        ],
    )
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    u = r.usage
    assert u is not None and u.prompt_tokens_details is not None
    assert u.prompt_tokens_details.audio_tokens in (25, 26)  # 1 s: 25 per second
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens


def test_streaming_with_usage(server: str) -> None:
    c = client(server)
    stream = c.chat.completions.create(
        model=MODEL,
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Say something."}],
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert finishes[-1] == "length" and all(f is None for f in finishes[:-1])
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text


def test_multi_turn_with_two_audios_reuses_the_cache(server: str) -> None:
    c = client(server)
    turn1 = [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [audio_part(tone(1.2, 250)), {"type": "text", "text": "First?"}],
        },
    ]
    r1 = c.chat.completions.create(model=MODEL, max_tokens=6, messages=turn1)
    turn2 = [
        *turn1,
        {"role": "assistant", "content": r1.choices[0].message.content},
        {
            "role": "user",
            "content": [audio_part(tone(0.8, 700)), {"type": "text", "text": "And this?"}],
        },
    ]
    r2 = c.chat.completions.create(model=MODEL, max_tokens=6, messages=turn2)
    d1, d2 = r1.usage.prompt_tokens_details, r2.usage.prompt_tokens_details  # type: ignore[union-attr]
    assert d2.audio_tokens == d1.audio_tokens + 20  # "Audio 1" and "Audio 2": both clips
    assert d2.cached_tokens >= r1.usage.prompt_tokens  # type: ignore[union-attr]  # turn 1 reused


def test_logprobs_and_stop(server: str) -> None:
    c = client(server)
    r = c.chat.completions.create(
        model=MODEL, max_tokens=4, logprobs=True, messages=[{"role": "user", "content": "Hi"}]
    )
    lps = r.choices[0].logprobs.content  # type: ignore[union-attr]
    assert len(lps) == r.usage.completion_tokens and all(t.logprob <= 0 for t in lps)  # type: ignore[union-attr]
    # each entry names its token id too ("id", as llama-server does): remote clients keep them
    assert all(isinstance((t.model_extra or {}).get("id"), int) for t in lps)
    free = c.chat.completions.create(
        model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "Tell"}]
    )
    text = free.choices[0].message.content or ""
    if len(text) > 6:
        cut = c.chat.completions.create(
            model=MODEL,
            max_tokens=20,
            stop=[text[3:6]],
            messages=[{"role": "user", "content": "Tell"}],
        )
        assert cut.choices[0].message.content == text[:3] and cut.choices[0].finish_reason == "stop"


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rec") / "talk.flac"
    make_recording(path, MINUTE[:8])
    return path


@pytest.mark.slow
def test_transcription_in_every_format(server: str, recording: Path) -> None:
    c = client(server)
    as_json = c.audio.transcriptions.create(model=MODEL, file=recording.open("rb"))
    assert isinstance(as_json, Transcription) and as_json.text
    verbose = c.audio.transcriptions.create(
        model=MODEL,
        file=recording.open("rb"),
        response_format="verbose_json",
        timestamp_granularities=["segment"],
        language="en",
    )
    assert isinstance(verbose, TranscriptionVerbose)
    assert verbose.duration == pytest.approx(sf.info(str(recording)).duration, abs=0.01)
    assert verbose.language == "English" and verbose.segments
    starts = [s.start for s in verbose.segments]
    assert starts == sorted(starts) and all(s.end - s.start <= 30 for s in verbose.segments)
    text = c.audio.transcriptions.create(
        model=MODEL, file=recording.open("rb"), response_format="text"
    )
    assert isinstance(text, str) and text.strip()
    subs = list(
        srt.parse(
            c.audio.transcriptions.create(
                model=MODEL, file=recording.open("rb"), response_format="srt"
            )
        )
    )
    assert [round(s.start.total_seconds(), 3) for s in subs] == [round(x, 3) for x in starts]
    vtt = c.audio.transcriptions.create(
        model=MODEL, file=recording.open("rb"), response_format="vtt"
    )
    assert len(webvtt.from_string(vtt).captions) == len(subs)


def test_streamed_transcription_and_translation(server: str, recording: Path) -> None:
    c = client(server)
    events = list(
        c.audio.transcriptions.create(model=MODEL, file=recording.open("rb"), stream=True)
    )
    assert [e.type for e in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1)
    done = events[-1]
    assert done.type == "transcript.text.done"
    assert done.text == "".join(e.delta for e in events[:-1])  # type: ignore[union-attr]
    assert done.usage is not None and done.usage.output_tokens > 0
    tr = c.audio.translations.create(
        model=MODEL, file=recording.open("rb"), response_format="verbose_json"
    )
    assert tr.segments and tr.text  # type: ignore[union-attr]


def test_errors_have_openais_shape(server: str) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(server, key="wrong").models.list()
    r = httpx.get(f"{server}/v1/models")
    assert r.status_code == 401 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    c = client(server)
    with pytest.raises(openai.NotFoundError, match="does not exist here"):
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    bad_b64 = {"type": "input_audio", "input_audio": {"data": "!!!not base64", "format": "wav"}}
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [bad_b64]}])
    assert "base64" in str(err.value) and err.value.body["param"].startswith(
        "messages[0].content[0]"
    )  # type: ignore[index]
    garbage = {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(b"not audio" * 50).decode()},
    }
    with pytest.raises(openai.BadRequestError, match="messages\\[0\\].content\\[0\\]"):
        c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [garbage]}])
    for field, value in (("n", 2), ("tools", [{"type": "function", "function": {"name": "f"}}])):
        with pytest.raises(openai.BadRequestError) as err:
            c.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}], **{field: value}
            )
        assert err.value.body["param"] == field  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="remote audio"):
        part = {"type": "audio_url", "audio_url": {"url": "http://127.0.0.1:9/a.wav"}}
        c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [part]}])
    with pytest.raises(openai.BadRequestError, match="word timestamps"):
        c.audio.transcriptions.create(
            model=MODEL, file=io.BytesIO(wav_bytes(tone(1.0))), timestamp_granularities=["word"]
        )
    ok = c.chat.completions.create(  # harmless unknown fields are ignored, as OpenAI does
        model=MODEL,
        max_tokens=2,
        messages=[{"role": "user", "content": "x"}],
        extra_body={"foo": 1},
    )
    assert ok.choices


def test_data_uri_audio(server: str) -> None:
    uri = "data:audio/wav;base64," + base64.b64encode(wav_bytes(tone(0.5))).decode()
    part = {"type": "audio_url", "audio_url": {"url": uri}}
    r = client(server).chat.completions.create(
        model=MODEL, max_tokens=2, messages=[{"role": "user", "content": [part]}]
    )
    assert r.usage.prompt_tokens_details.audio_tokens == 12  # type: ignore[union-attr]


DISPOSITION = b'Content-Disposition: form-data; name="file"; filename="a"'


def test_malformed_requests_get_4xx_and_the_server_goes_on(server: str) -> None:
    h = {"Authorization": f"Bearer {KEY}"}
    url = f"{server}/v1/chat/completions"
    cases = [
        httpx.post(url, headers=h, content=b"{not json"),
        httpx.post(url, headers={**h, "Content-Type": "text/plain"}, content=b"hello"),
        httpx.post(url, headers=h, content=b"[" * 100_000 + b"]" * 100_000),
        httpx.post(url, headers=h, json={"model": MODEL}),
        httpx.post(url, headers=h, json={"model": MODEL, "messages": "nope"}),
        httpx.post(
            f"{server}/v1/audio/transcriptions",
            headers={**h, "Content-Type": "multipart/form-data; boundary=xyz"},
            content=b"--xyz\r\n" + DISPOSITION + b"\r\n\r\nRIFF",
        ),
        httpx.post(f"{server}/v1/audio/transcriptions", headers=h, data={"model": MODEL}),
        httpx.post(
            f"{server}/v1/audio/transcriptions",
            headers=h,
            data={"model": MODEL},
            files={"file": ("x.wav", b"garbage" * 100)},
        ),
    ]
    for r in cases:
        assert 400 <= r.status_code < 500, (r.status_code, r.text)
        assert "error" in r.json() and "Traceback" not in r.text
    huge = httpx.get(f"{server}/health", headers={"X-Big": "a" * 200_000})
    assert huge.status_code == 431 and huge.json()["error"]["code"] == "headers_too_large"
    t0 = time.monotonic()  # a few KiB that declare 10 hours of samples
    r = httpx.post(
        f"{server}/v1/audio/transcriptions",
        headers=h,
        data={"model": MODEL},
        files={"file": ("bomb.flac", flac_bomb())},
    )
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text
    r = httpx.post(  # libsndfile trims a WAV's lie to the bytes there: a 0.25 s clip
        f"{server}/v1/audio/transcriptions",
        headers=h,
        data={"model": MODEL, "response_format": "verbose_json"},
        files={"file": ("bomb.wav", wav_bomb())},
    )
    assert r.status_code == 200 and r.json()["duration"] < 1, r.text
    assert time.monotonic() - t0 < 20  # neither was decoded, or waited for, for hours
    assert client(server).models.list().data  # still serving


def test_413_and_429(tight: str) -> None:
    h = {"Authorization": f"Bearer {KEY}"}
    big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * (2 << 20)}]}
    r = httpx.post(f"{tight}/v1/chat/completions", headers=h, json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted while it arrives
        yield b'{"model": "x", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}]}'

    r = httpx.post(f"{tight}/v1/chat/completions", headers=h, content=chunked())
    assert r.status_code == 413
    c = client(tight)
    long = c.chat.completions.create(
        model=MODEL,
        max_tokens=100_000,
        stream=True,
        messages=[{"role": "user", "content": "Go on forever."}],
    )
    next(iter(long))  # the only sequence is busy now
    with pytest.raises(openai.RateLimitError) as err:
        c.chat.completions.create(
            model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.response.headers["retry-after"] == "1"
    long.close()  # the client hangs up: its generation stops within a step
    deadline = time.monotonic() + 30
    while True:
        try:
            c.chat.completions.create(
                model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "x"}]
            )
            break
        except openai.RateLimitError:
            assert time.monotonic() < deadline, "the hung-up stream kept its sequence"
            time.sleep(0.1)


def test_serve_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "qaudio_local", "serve", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    for word in ("/v1/chat/completions", "--api-key", "--parallel", "--max-body-mb", "Examples:"):
        assert word in out.stdout


def test_concurrent_clients(server: str) -> None:
    c = client(server)
    results: list = []
    errors: list = []

    def work(i: int) -> None:
        try:
            for j in range(3):
                results.append(
                    c.chat.completions.create(
                        model=MODEL,
                        max_tokens=4,
                        messages=[{"role": "user", "content": f"q{i}{j}"}],
                    )
                )
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 18
    assert json.dumps([r.usage.completion_tokens for r in results])


def test_family_names_are_accepted(server: str) -> None:
    """A --model-file not in the registry serves the default family: its names work."""
    c = client(server)
    for name in ("qwen2-audio-7b-instruct", "Qwen2-Audio", "qwen2-audio-instruct", MODEL.upper()):
        assert c.models.retrieve(name).id == MODEL
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("qwen2-audio-7b:Q4_K_M")


# --- the process: what it says, when it stops ------------------------------------------------

LOG_LINE = re.compile(r"(GET|POST) (/\S*) (\d{3}|-) (\d+\.\d{3})s")


def _settled(lines: list[str], quiet_s: float = 0.3) -> int:
    """How many lines there are once the earlier tests' last lines have been written (a
    request is logged just after its response went out)."""
    n, since = len(lines), time.monotonic()
    while time.monotonic() - since < quiet_s:
        time.sleep(0.02)
        if len(lines) != n:
            n, since = len(lines), time.monotonic()
    return n


def test_each_request_is_logged_without_keys_queries_or_bodies(server: str) -> None:
    lines = LOGS[server]
    before = _settled(lines)
    h = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(f"{server}/v1/models?api_key=in-the-query", headers=h).status_code == 200
    wrong = {"Authorization": "Bearer wrong-key"}
    assert httpx.post(f"{server}/v1/chat/completions", headers=wrong, json={}).status_code == 401
    client(server).chat.completions.create(
        model=MODEL, max_tokens=2, messages=[{"role": "user", "content": "a private question"}]
    )
    deadline = time.monotonic() + 10
    while len(lines) < before + 3:  # each is written once its response has gone out
        assert time.monotonic() < deadline, lines[before:]
        time.sleep(0.02)
    new = lines[before:]
    parsed = [LOG_LINE.fullmatch(line) for line in new]
    assert all(parsed), new
    assert [m.group(1, 2, 3) for m in parsed if m] == [
        ("GET", "/v1/models", "200"),
        ("POST", "/v1/chat/completions", "401"),
        ("POST", "/v1/chat/completions", "200"),
    ]
    text = "\n".join(lines)
    for secret in ("in-the-query", "wrong-key", KEY, "a private question"):
        assert secret not in text


@pytest.mark.parametrize(
    ("sig", "quiet"),
    [(signal.SIGINT, "--quiet"), (signal.SIGTERM, "--log-level=warning")],
    ids=["ctrl-c-quiet", "sigterm-warning"],
)
def test_serve_says_when_it_serves_and_stops_cleanly(
    tiny_gguf: Pair, tmp_path: Path, sig: int, quiet: str
) -> None:
    served = Served(tiny_gguf, free_port(), quiet, env=env_with(QAUDIO_HOME=tmp_path))
    try:
        line = served.wait_for("serving ")
        assert httpx.get(f"{served.url}/health").json()["status"] == "ok"  # ready when it says
        assert httpx.get(f"{served.url}/v1/models").status_code == 200
    finally:
        code = served.stop(sig)
    assert code == 0, served.lines  # a normal stop: a service manager sees no failure
    assert served.lines[0] == f"loading {MODEL} ..."
    assert line.startswith(f"serving {MODEL} on {served.url}/v1 (4 in parallel")
    assert not [ln for ln in served.lines if "/v1/models" in ln or ln.startswith("error")]
    assert "Traceback" not in "\n".join(served.lines)


def test_serve_exits_when_the_model_cannot_be_loaded(tmp_path: Path) -> None:
    """Nothing pulled and offline: one error line and exit code 1, not a server left
    answering 503."""
    served = Served(None, free_port(), env=env_with(QAUDIO_HOME=tmp_path, QAUDIO_OFFLINE="1"))
    code = served.wait(timeout=60)
    assert code == 1, served.lines
    assert served.lines[0] == "loading qwen2-audio-7b-instruct ..."
    (error,) = [ln for ln in served.lines if ln.startswith("error: ")]
    assert "offline mode is on" in error and "qaudio pull" in error, served.lines
    assert not [ln for ln in served.lines if ln.startswith("serving")]
    assert "Traceback" not in "\n".join(served.lines)


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_server_blocks() -> tuple[str, str]:
    """The shell and Python blocks of README.md's Server section, as a reader copies them."""
    section = README.read_text().split("\n## Server\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    shell = next(code for lang, code in blocks if lang == "bash")
    python = next(code for lang, code in blocks if lang == "python")
    return shell, python


def test_the_readmes_server_snippet_runs(tiny_gguf: Pair, tmp_path: Path) -> None:
    """The README's key file line, its server command, and its Python, as written: only the
    port and the model files differ."""
    shell, python = readme_server_blocks()
    home = tmp_path / "home"
    home.mkdir()
    env = env_with(HOME=home, QAUDIO_HOME=home / "qaudio")
    (make_key,) = [ln for ln in shell.splitlines() if ".qaudio-key" in ln and "secrets" in ln]
    subprocess.run(["bash", "-c", make_key], env=env, check=True, cwd=tmp_path)
    key_file = home / ".qaudio-key"
    assert key_file.read_text().endswith("\n")  # the newline that used to break the client
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    (command,) = [ln.split("#")[0].split() for ln in shell.splitlines() if "qaudio serve" in ln]
    assert command[:2] == ["qaudio", "serve"]
    args = [a.replace("~", str(home)) for a in command[2:]]
    port = free_port()
    served = Served(tiny_gguf, port, *args, env=env)
    try:
        served.wait_for("serving ")
        sf.write(tmp_path / "talk.wav", 0.1 * tone(1.0), 16000)
        make_recording(tmp_path / "meeting.flac", MINUTE[:4])
        assert "http://127.0.0.1:8000/v1" in python
        code = python.replace("http://127.0.0.1:8000/v1", f"{served.url}/v1")
        run = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
        )
    finally:
        served.stop()
    assert run.returncode == 0, run.stderr
    answer, _, subtitles = run.stdout.partition("\n1\n")  # the chat answer, then the SRT
    assert answer.strip()
    subs = list(srt.parse("1\n" + subtitles))
    assert subs and subs[0].start.total_seconds() > 0


# --- hostile HTTP (issue 25) ------------------------------------------------------------------


def _raw(url: str, request: bytes) -> tuple[bytes, dict]:
    """Send raw bytes; return the status line and the JSON body of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"content-length: (\d+)", head, re.I)
        assert length is not None, head
        while len(body) < int(length.group(1)):
            body += s.recv(65536)
    return head.split(b"\r\n")[0], json.loads(body)


def test_a_non_ascii_key_is_a_401_not_a_500(server: str) -> None:
    request = "GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer kéy-ü\r\n\r\n"
    status, body = _raw(server, request.encode("utf-8"))
    assert status.startswith(b"HTTP/1.1 401")
    assert body["error"]["code"] == "invalid_api_key"
    assert client(server).models.list().data  # and the server is fine
    assert not [ln for ln in LOGS[server] if "Traceback" in ln or "Error" in ln]


@pytest.mark.parametrize("declared", [b"abc", b"-1", b"1, 2", b"99999999999999999999999x"])
def test_a_malformed_content_length_gets_openais_error_shape(server: str, declared: bytes) -> None:
    request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
    request += KEY.encode() + b"\r\nContent-Length: " + declared + b"\r\n\r\n{}"
    status, body = _raw(server, request)
    assert status.startswith(b"HTTP/1.1 400")
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["message"]


def test_a_chunked_body_over_the_limit_is_not_read_past_it(tight: str) -> None:
    """The 413 comes at the limit (1 MiB here) and the connection is closed: the rest of a
    large upload is never read."""
    host, port = tight.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
    s.sendall(
        (head + "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    )
    frame = b"10000\r\n" + b"y" * 65536 + b"\r\n"
    s.setblocking(False)
    sent, pending, answer, answered_at = 0, b"", b"", None
    deadline = time.monotonic() + 30
    closed = False
    while time.monotonic() < deadline and not closed:
        readable, writable, _ = select.select([s], [s], [], 0.5)
        if readable:
            try:
                more = s.recv(65536)
            except ConnectionError:
                more = b""
            if not more:
                closed = True
            answer += more
            if answered_at is None and b"\r\n\r\n" in answer:
                answered_at = time.monotonic()
                sent_at_answer = sent
        if writable and not closed:
            pending = pending or frame
            try:
                n = s.send(pending)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                continue
            sent, pending = sent + n, pending[n:]
        if answered_at is not None and time.monotonic() - answered_at > 5:
            break
    s.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"body_too_large" in answer
    assert sent_at_answer < 5 * 2**20  # 1 MiB read, the rest socket buffers at most
    assert closed, f"the server kept reading: {sent / 2**20:.1f} MiB sent in all"


def test_the_route_and_the_cli_cut_a_recording_the_same_way(
    server: str, recording: Path, tiny_gguf: Pair, tmp_path: Path
) -> None:
    """Same segments from `qaudio transcribe` and from the route, whole or streamed."""
    cmd = [sys.executable, "-m", "qaudio_local", "transcribe", str(recording), "--quiet"]
    cmd += ["--model-file", str(tiny_gguf[0]), "--mmproj-file", str(tiny_gguf[1])]
    cmd += ["--max-tokens", "3", "-o", "verbose_json", "--output-dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env_with())
    assert proc.returncode == 0, proc.stderr
    cli = json.loads(next(tmp_path.glob("*.verbose.json")).read_text())["segments"]
    c = client(server)
    whole = c.audio.transcriptions.create(
        model=MODEL, file=recording.open("rb"), response_format="verbose_json"
    )
    assert [(s["start"], s["end"]) for s in cli] == [
        (s.start, s.end)
        for s in whole.segments  # type: ignore[union-attr]
    ]
    events = list(
        c.audio.transcriptions.create(model=MODEL, file=recording.open("rb"), stream=True)
    )
    usage = events[-1].usage  # type: ignore[union-attr]
    speech = sum(s["end"] - s["start"] for s in cli)
    assert usage.input_token_details.audio_tokens == pytest.approx(speech * 25, abs=len(cli))
