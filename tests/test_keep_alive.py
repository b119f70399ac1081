"""Giving the memory back: ``ResidentModel`` (the library) and ``qaudio serve --keep-alive``.

The model is the tiny Qwen2-Audio loaded through llama.cpp; the server is a real process
on 127.0.0.1 whose resident memory is read from /proc.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np
import pytest

from qaudio_local.engine.model import AudioModel, ModelOptions
from qaudio_local.errors import ModelFileNotFoundError, OptionError
from qaudio_local.models.resident import ResidentModel, format_keep_alive, parse_keep_alive
from tests.support.audio import tone
from tests.support.cli import invoke
from tests.support.served import KEY, Served, audio_part, client, env_with, free_port

Pair = tuple[Path, Path]


# --- the duration syntax ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5m", 300.0),
        ("90s", 90.0),
        ("1h30m", 5400.0),
        ("2.5s", 2.5),
        ("500ms", 0.5),
        ("300", 300.0),
        ("0", 0.0),
        ("0s", 0.0),
        (" 10m ", 600.0),
        (45, 45.0),
        ("-1", None),
        ("-1m", None),
        (-1, None),
        (None, None),
    ],
)
def test_keep_alive_durations_read_as_ollama_reads_them(text: Any, seconds: float | None) -> None:
    assert parse_keep_alive(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "m", "5x", "1h30", "nan", "inf", "--5m"])
def test_a_keep_alive_that_is_no_duration_says_which_forms_are(text: str) -> None:
    with pytest.raises(OptionError, match="keep-alive"):
        parse_keep_alive(text)


def test_keep_alive_formats_back() -> None:
    assert [format_keep_alive(v) for v in (300, 5400, 90, 2.5, 0, None)] == [
        "5m",
        "1h30m",
        "1m30s",
        "2.5s",
        "0s",
        "never",
    ]


def test_serve_refuses_a_bad_keep_alive_before_loading_anything() -> None:
    result = invoke("serve", "--keep-alive", "soon")
    assert result.exit_code == 2
    assert "--keep-alive" in result.output and "5m, 90s" in result.output
    assert "Traceback" not in result.output


# --- the library: ResidentModel on the real tiny model ---------------------------------------


class CountingLoader:
    """Loads the tiny pair as ``AudioModel`` does, counting the loads; ``fail_first``
    loads a missing file first (llama.cpp is never reached: the real error)."""

    def __init__(self, pair: Pair, fail_first: int = 0, delay: float = 0.0) -> None:
        self.pair = pair
        self.calls = 0
        self.fail_first = fail_first
        self.delay = delay

    def __call__(self) -> AudioModel:
        self.calls += 1
        time.sleep(self.delay)  # a slow disk: callers pile up behind the load
        text = self.pair[0]
        if self.calls <= self.fail_first:
            text = text.with_name("missing.gguf")
        return AudioModel(text, self.pair[1], ModelOptions(n_ctx=2048, n_threads=2))


def _until(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def _answer(model: AudioModel) -> list[int]:
    from qaudio_local.engine.options import SamplingOptions

    result = model.generate(
        "What is said here?", [tone(1.0, 440.0)], sampling=SamplingOptions(max_tokens=12)
    )
    return list(result.tokens)


def test_an_idle_model_unloads_and_loads_again_for_the_same_answer(tiny_gguf: Pair) -> None:
    load = CountingLoader(tiny_gguf)
    resident = ResidentModel(load, keep_alive=0.3)
    try:
        assert resident.state == "unloaded" and load.calls == 0  # nothing until used
        with resident.use() as model:
            first = _answer(model)
            time.sleep(0.5)  # longer than keep_alive: never unloaded under a user
            assert resident.state == "loaded" and resident.expires_in is None
        assert resident.expires_in is not None and resident.expires_in <= 0.3
        assert _until(lambda: resident.state == "unloaded")
        assert model._ctx is None  # closed: its context and caches are gone
        with resident.use() as again:
            assert again is not model
            assert _answer(again) == first
        assert (load.calls, resident.loads, resident.context_length) == (2, 2, 2048)
    finally:
        resident.close()


def test_callers_during_a_load_share_it_and_each_is_answered_once(tiny_gguf: Pair) -> None:
    load = CountingLoader(tiny_gguf, delay=0.5)
    resident = ResidentModel(load, keep_alive=0)
    answers: list[list[int]] = []
    lock = threading.Lock()

    def work(_: int) -> None:
        with resident.use() as model:
            tokens = _answer(model)
        with lock:
            answers.append(tokens)

    try:
        for _ in range(2):  # from cold, then again after keep_alive 0 unloaded it
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(work, range(4)))
            assert _until(lambda: resident.state == "unloaded")
        assert load.calls == 2  # one load per burst, however many waited for it
        assert len(answers) == 8 and all(a == answers[0] for a in answers)
    finally:
        resident.close()


def test_a_failed_load_reaches_every_waiter_and_the_next_caller_tries_again(
    tiny_gguf: Pair,
) -> None:
    load = CountingLoader(tiny_gguf, fail_first=1, delay=0.3)
    resident = ResidentModel(load, keep_alive=None)
    errors: list[BaseException] = []

    def work(_: int) -> None:
        try:
            with resident.use():
                pass
        except ModelFileNotFoundError as exc:
            errors.append(exc)

    try:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(work, range(3)))
        assert len(errors) == 3 and load.calls == 1
        assert isinstance(resident.last_error, ModelFileNotFoundError)
        assert resident.state == "unloaded" and resident.users == 0
        with resident.use() as model:
            assert model.n_ctx == 2048
        assert load.calls == 2 and resident.last_error is None
        time.sleep(0.3)
        assert resident.state == "loaded" and resident.expires_in is None  # -1: for ever
    finally:
        resident.close()


def test_unload_waits_for_the_last_user_and_close_ends_it(tiny_gguf: Pair) -> None:
    resident = ResidentModel(CountingLoader(tiny_gguf), keep_alive="1h")
    try:
        assert resident.unload() is False  # nothing loaded
        with resident.use():
            assert resident.unload() is True
            time.sleep(0.2)
            assert resident.state == "loaded"  # in use: it stays
        assert _until(lambda: resident.state == "unloaded", 5)
        resident.load()
        assert resident.state == "loaded" and resident.users == 0
    finally:
        resident.close()
    assert resident.state == "unloaded"
    with pytest.raises(RuntimeError, match="closed"):
        resident.acquire()


# --- the server ------------------------------------------------------------------------------


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _health(url: str) -> dict[str, Any]:
    reply = httpx.get(f"{url}/health", timeout=5)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def _ask(url: str, clip: np.ndarray) -> str:
    reply = client(url).chat.completions.create(
        model="tiny-qwen2-audio.F32",
        messages=[{"role": "user", "content": [audio_part(clip), {"type": "text", "text": "?"}]}],
        max_tokens=12,
        temperature=0,
    )
    return str(reply.choices[0].message.content)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_serve_keep_alive_gives_the_memory_back_and_reloads_on_the_next_request(
    tiny_gguf: Pair, tmp_path: Path
) -> None:
    served = Served(
        tiny_gguf,
        free_port(),
        "--api-key",
        KEY,
        "--keep-alive",
        "2s",
        "--parallel",
        "4",
        env=env_with(QAUDIO_HOME=tmp_path / "home"),
    )
    url = served.url
    clip = tone(1.0, 440.0)
    try:
        served.wait_for("serving ", timeout=60)
        assert _health(url)["keep_alive"] == "2s"
        first = _ask(url, clip)
        loaded = _health(url)
        assert (loaded["model_state"], loaded["loads"]) == ("loaded", 1)
        rss_loaded = _rss_mb(served.proc.pid)
        card = client(url).models.list().data[0].model_extra
        assert card is not None and card["state"] == "loaded"

        assert _until(lambda: _health(url)["model_state"] == "unloaded", 15)
        rss_unloaded = _rss_mb(served.proc.pid)
        weights_mb = tiny_gguf[0].stat().st_size / 2**20
        # the weights (mapped and read), the KV cache and the compute buffers are gone
        assert rss_loaded - rss_unloaded > weights_mb, (rss_loaded, rss_unloaded, weights_mb)
        assert any("unloaded tiny-qwen2-audio.F32" in ln for ln in served.lines), served.lines
        gone = client(url).models.list().data[0].model_extra  # listing does not load it
        assert gone == {**card, "state": "unloaded"}

        with ThreadPoolExecutor(4) as pool:  # all wait for one load, all answered once
            answers = list(pool.map(lambda _: _ask(url, clip), range(4)))
        assert answers == [first] * 4
        again = _health(url)
        assert (again["model_state"], again["loads"]) == ("loaded", 2)
        assert _rss_mb(served.proc.pid) > rss_unloaded + weights_mb / 2

        # POST /unload: at once, with the key like every route but /health
        assert httpx.post(f"{url}/unload", timeout=5).status_code == 401
        reply = httpx.post(f"{url}/unload", headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
        assert reply.status_code == 200 and reply.json()["model"] == "tiny-qwen2-audio.F32"
        assert _until(lambda: _health(url)["model_state"] == "unloaded", 3)
        assert _health(url)["loads"] == 2
        assert _ask(url, clip) == first
    finally:
        code = served.stop()
    assert code == 0 and "Traceback" not in "\n".join(served.lines), served.lines


def test_a_live_session_reloads_an_unloaded_model_and_holds_it(
    tiny_gguf: Pair, tmp_path: Path
) -> None:
    from websockets.sync.client import connect

    served = Served(
        tiny_gguf,
        free_port(),
        "--api-key",
        KEY,
        "--keep-alive",
        "0",
        env=env_with(QAUDIO_HOME=tmp_path / "home"),
    )
    url = served.url
    try:
        served.wait_for("serving ", timeout=60)
        assert _until(lambda: _health(url)["model_state"] == "unloaded", 10)  # 0: at once
        ws_url = url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
        with connect(ws_url, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
            first = ws.recv(timeout=30)
            assert '"session.created"' in str(first)
            time.sleep(0.5)
            held = _health(url)
            assert (held["model_state"], held["in_use"], held["loads"]) == ("loaded", 1, 2)
        assert _until(lambda: _health(url)["model_state"] == "unloaded", 10)
    finally:
        code = served.stop()
    assert code == 0 and "Traceback" not in "\n".join(served.lines), served.lines


def test_library_users_get_the_same_through_load_model(tiny_gguf: Pair) -> None:
    """``ResidentModel(partial(load_model, ...))``: the README's library form."""
    from qaudio_local import ResidentModel as Exported
    from qaudio_local import load_model

    load = functools.partial(
        load_model, model_file=tiny_gguf[0], mmproj_file=tiny_gguf[1], n_threads=2
    )
    resident = Exported(load, keep_alive="0s")
    try:
        with resident.use() as model:
            assert model.n_ctx >= 1100
        assert _until(lambda: resident.state == "unloaded")
    finally:
        resident.close()


def test_a_reload_that_fails_is_that_requests_error_and_the_server_goes_on(
    tiny_gguf: Pair, tmp_path: Path
) -> None:
    import shutil

    import openai

    pair = (tmp_path / tiny_gguf[0].name, tmp_path / tiny_gguf[1].name)
    for src, dst in zip(tiny_gguf, pair, strict=True):
        shutil.copyfile(src, dst)
    served = Served(
        pair, free_port(), "--api-key", KEY, "--keep-alive", "0", env=env_with(QAUDIO_HOME=tmp_path)
    )
    url = served.url
    clip = tone(1.0, 440.0)
    try:
        served.wait_for("serving ", timeout=60)
        assert _until(lambda: _health(url)["model_state"] == "unloaded", 10)
        pair[0].rename(pair[0].with_suffix(".moved"))  # the file went away while unloaded
        with pytest.raises(openai.APIStatusError) as caught:
            _ask(url, clip)
        assert caught.value.status_code == ModelFileNotFoundError.http_status
        assert str(pair[0]) in caught.value.message
        assert _health(url)["model_state"] == "unloaded"  # up, and it will try again
        pair[0].with_suffix(".moved").rename(pair[0])
        assert _ask(url, clip)  # back: loaded again and answered
    finally:
        code = served.stop()
    assert code == 0 and "Traceback" not in "\n".join(served.lines), served.lines


def test_a_model_loaded_after_close_is_not_kept(tiny_gguf: Pair) -> None:
    load = CountingLoader(tiny_gguf, delay=0.5)
    resident = ResidentModel(load, keep_alive=None)
    failed: list[BaseException] = []

    def work() -> None:
        try:
            resident.acquire()
        except RuntimeError as exc:
            failed.append(exc)

    waiter = threading.Thread(target=work)
    waiter.start()
    assert _until(lambda: resident.state == "loading", 5)
    resident.close()  # the server stops while a request reloads the model
    waiter.join(10)
    assert len(failed) == 1 and "closed" in str(failed[0])
    assert resident.state == "unloaded" and load.calls == 1
