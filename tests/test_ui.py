"""The page ``qaudio serve`` serves at ``/``, in a real browser against a real server.

Debian's Chromium (headless, driven by Playwright with ``executable_path``: no browser is
downloaded) opens the page of a ``qaudio serve`` with the tiny model and ``--api-key`` on
127.0.0.1; its microphone is Chromium's own capture fed from a WAV of the speech clips.
Each flow runs end to end: the key prompt, a typed turn, a file turn, a recorded turn, an
error banner, a long recording transcribed with a segment clicked and played, live
captions, the downloads (parsed by ``srt``, ``webvtt`` and ``json``), what runs here, and
the phone width. Every request the page makes is checked to be same-origin, and the key to
be in no URL and no line of the server's log. Screenshots go to ``$QAUDIO_SCREENSHOTS``
(else a temporary folder).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np
import pytest
import soundfile as sf
import srt
import webvtt

from tests.support.audio import clip, make_recording
from tests.support.browser import DESKTOP, PHONE, Watched, chromium, open_page
from tests.support.realtime import KEY, Pair, Server, free_port, serving

pytestmark = pytest.mark.slow
LONG = [
    ("sil", 1),
    ("say", "a"),
    ("sil", 2.5),
    ("say", "b"),
    ("sil", 2.5),
    ("say", "c"),
    ("sil", 1),
]
VIEWS = ("talk", "transcribe", "captions", "status")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ui-audio")
    mic = d / "mic.wav"  # what the fake microphone hears, in a loop: a pause, a sentence
    sf.write(
        mic,
        np.concatenate([np.zeros(16000, np.float32), clip("a"), np.zeros(40000, np.float32)]),
        16000,
        subtype="PCM_16",
    )
    make_recording(d / "long.wav", LONG)
    (d / "broken.wav").write_bytes(b"this is not audio at all, only text" * 20)
    clip_b = Path(__file__).parent / "data/speech-b.flac"
    return {"mic": mic, "long": d / "long.wav", "clip": clip_b, "broken": d / "broken.wav"}


@pytest.fixture(scope="module")
def server(tiny_gguf: Pair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("ui-server")
    with serving(tiny_gguf, home, "--parallel", "2") as s:
        yield s
    logged = "\n".join(s.lines)
    assert KEY not in logged  # the key is in no line the server wrote


@pytest.fixture(scope="module")
def browser(files: dict[str, Path]) -> Iterator[Any]:
    with chromium(files["mic"]) as b:
        yield b


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    named = os.environ.get("QAUDIO_SCREENSHOTS")
    folder = Path(named) if named else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def same_origin(w: Watched, url: str) -> None:
    """Every request went to the server itself (or was the page's own blob:/data: URL),
    and no URL carries the key."""
    ws_url = url.replace("http://", "ws://", 1)
    for u in w.requests + w.sockets:
        assert u.startswith((url + "/", ws_url + "/", "blob:", "data:")), u
        assert KEY not in u, u
    assert not w.errors, w.errors


def wait_until(page: Any, js: str, timeout: float = 30) -> None:
    """Poll ``js`` (an expression) until it is true: the page's CSP forbids the eval that
    Playwright's ``wait_for_function`` uses, as it should."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(js):
        assert time.monotonic() < deadline, f"never true: {js}"
        time.sleep(0.05)


def enter_key(w: Watched) -> None:
    page = w.page
    page.wait_for_selector("#key-dialog[open]")
    assert page.is_visible("#key-input")
    page.fill("#key-input", KEY)
    page.click("#key-ok")
    wait_until(page, "document.getElementById('model-name').textContent.length > 0")
    assert page.evaluate("sessionStorage.getItem('qaudio-api-key')") == KEY
    assert not page.is_visible("#banner")  # no error, no banner


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Watched]:
    with open_page(browser, server.url + "/") as w:
        enter_key(w)
        w.page.fill("#talk-max", "24")  # the tiny model never ends an answer by itself
        yield w
        same_origin(w, server.url)


def answered(w: Watched, n: int) -> Any:
    """The n-th answer (1-based), once it has streamed to its end."""
    w.page.wait_for_selector(f"#talk-log .assistant:nth-of-type({2 * n})[data-done='done']")
    return w.page.locator("#talk-log .assistant").nth(n - 1)


# --- the page as served -------------------------------------------------------------------


def test_page_and_files_open_api_keyed_csp_strict(server: Server) -> None:
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    for rule in ("default-src 'self'", "script-src 'self'", "connect-src 'self'"):
        assert rule in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    html = page.text
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)  # no inline script
    assert " style=" not in html and "<style" not in html and " on" + "click=" not in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing from elsewhere
    for name in ("app.js", "api.js", "style.css", "capture-worklet.js", "icon.svg"):
        r = httpx.get(f"{server.url}/ui/{name}")
        assert r.status_code == 200 and r.headers["content-security-policy"] == csp, name
        assert not re.search(r"https?://(?!www.w3.org/2000/svg)", r.text), name
    assert httpx.get(f"{server.url}/ui/nothing.js").status_code == 404
    assert httpx.get(f"{server.url}/ui/..%2Fui.py").status_code == 404
    assert httpx.get(f"{server.url}/v1/status").status_code == 401  # the API keeps its key
    # CORS is closed: no other origin is allowed, not even in a preflight
    pre = httpx.options(
        f"{server.url}/v1/status",
        headers={"Origin": "http://elsewhere.test", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in pre.headers


def test_status_route(server: Server) -> None:
    r = httpx.get(f"{server.url}/v1/status", headers={"Authorization": f"Bearer {KEY}"})
    s = r.json()
    assert s["model"] == "tiny-qwen2-audio.F32"
    assert s["quantization"] == "F32" and s["projector"] == "f32"
    assert s["backend"] == "CPU" and s["gpu_layers"] == 0 and s["n_layers"] == 2
    assert s["plan"] is None  # model files: nothing planned
    assert s["parallel"] == 2 and s["busy"] == 0 and s["queued"] == 0
    assert s["engine"]["n_ctx"] == s["n_ctx"] > 0
    assert isinstance(s["engine"]["tokens_per_s"], float)


def test_streamed_transcription_carries_segments(server: Server, files: dict[str, Path]) -> None:
    with httpx.stream(
        "POST",
        f"{server.url}/v1/audio/transcriptions",
        headers={"Authorization": f"Bearer {KEY}"},
        files={"file": ("long.wav", files["long"].read_bytes(), "audio/wav")},
        data={"model": "tiny-qwen2-audio.F32", "stream": "true"},
        timeout=120,
    ) as r:
        events = [json.loads(ln[6:]) for ln in r.iter_lines() if ln.startswith("data: ")]
    deltas = [e for e in events if e["type"] == "transcript.text.delta"]
    assert events[-1]["type"] == "transcript.text.done" and len(deltas) >= 2
    duration = sf.info(files["long"]).duration
    last_end = 0.0
    for e in deltas:
        seg = e["segment"]
        assert last_end <= seg["start"] < seg["end"] <= duration + 0.01
        assert e["delta"].strip() == seg["text"]
        assert e["duration"] == pytest.approx(duration, abs=0.01)
        last_end = seg["end"]


# --- the flows ------------------------------------------------------------------------------


def test_key_prompt_then_typed_turns_reuse_the_cache(page: Watched, shots: Path) -> None:
    p = page.page
    p.fill("#talk-input", "Hello there")
    p.keyboard.press("Enter")
    first = answered(page, 1)
    assert p.locator("#talk-log .user").first.inner_text().endswith("Hello there")
    assert re.search(
        r"prompt \d+ tokens: \d+ reused from the cache, \d+ computed", first.inner_text()
    )
    p.fill("#talk-input", "And again")
    p.click("#talk-send")
    second = answered(page, 2).inner_text()
    reused = int(re.search(r"(\d+) reused", second).group(1))  # type: ignore[union-attr]
    assert reused > 0  # the first exchange's prefix came from the server's cache
    p.screenshot(path=str(shots / "talk-typed-desktop.png"))
    p.click("#talk-clear")
    assert p.locator("#talk-log li").count() == 0


def test_file_turn_with_inline_player(page: Watched, files: dict[str, Path], shots: Path) -> None:
    p = page.page
    p.set_input_files("#talk-file", str(files["clip"]))
    p.wait_for_selector("#talk-attachments li audio")
    p.fill("#talk-input", "What is said here?")
    p.click("#talk-send")
    answer = answered(page, 1).inner_text()
    user = p.locator("#talk-log .user").first
    assert user.locator("audio").count() == 1
    assert user.locator("audio").evaluate("a => a.src.startsWith('blob:')")
    audio_tokens = int(re.search(r"prompt (\d+) tokens", answer).group(1))  # type: ignore[union-attr]
    assert audio_tokens > 6 * 25  # 6.4 s of audio at 25 tokens a second, and the text
    p.screenshot(path=str(shots / "talk-desktop.png"))


def test_retry_and_stop(page: Watched, server: Server, files: dict[str, Path]) -> None:
    p = page.page
    p.fill("#talk-input", "Say something")
    p.click("#talk-send")
    answered(page, 1)
    p.click("#talk-retry")  # the answer is asked for again: still one answer
    answered(page, 1)
    assert p.locator("#talk-log .assistant").count() == 1
    before = len([ln for ln in server.lines if "POST /v1/chat/completions" in ln])
    p.set_input_files("#talk-file", str(files["long"]))  # 25 s of audio: time to stop it
    p.wait_for_selector("#talk-attachments li")
    p.click("#talk-send")
    p.click("#talk-stop")
    p.wait_for_selector("#talk-log .assistant[data-done='stopped']")
    assert p.locator("#talk-log .assistant").last.inner_text().rstrip().endswith("stopped")
    assert p.get_attribute("#talk-stop", "disabled") is not None
    # the server saw the client go away and ended the request
    deadline = time.monotonic() + 30
    while len([ln for ln in server.lines if "POST /v1/chat/completions" in ln]) == before:
        assert time.monotonic() < deadline, server.lines[-5:]
        time.sleep(0.1)


def test_recorded_turn_from_the_microphone(page: Watched) -> None:
    p = page.page
    p.keyboard.press("Alt+M")  # the shortcut starts the recording
    p.wait_for_selector("#talk-mic[aria-pressed='true']")
    wait_until(p, "/Recording: [2-9]/.test(document.getElementById('talk-rec-status').textContent)")
    p.click("#talk-mic")  # stop: the recording is sent as the turn
    answer = answered(page, 1).inner_text()
    user = p.locator("#talk-log .user").first
    assert "recording 1" in user.inner_text() and user.locator("audio").count() == 1
    tokens = int(re.search(r"prompt (\d+) tokens", answer).group(1))  # type: ignore[union-attr]
    assert tokens > 2 * 25  # two seconds or more of audio reached the model
    p.hover("#talk-mic")  # held down, it records until it is let go
    p.mouse.down()
    wait_until(p, "/Recording: [1-9]/.test(document.getElementById('talk-rec-status').textContent)")
    p.mouse.up()
    answered(page, 2)
    assert "recording 2" in p.locator("#talk-log .user").nth(1).inner_text()


def test_bad_audio_gives_the_servers_message(page: Watched, files: dict[str, Path]) -> None:
    p = page.page
    p.set_input_files("#talk-file", str(files["broken"]))
    p.fill("#talk-input", "and this?")
    p.click("#talk-send")
    p.wait_for_selector("#banner:not([hidden])")
    message = p.inner_text("#banner-text")
    assert message.startswith("messages[0].content[1]: could not decode")  # the server's words
    assert p.get_attribute("#banner", "data-status") == "400"
    assert p.input_value("#talk-input") == "and this?"  # the turn is back, to fix
    assert p.locator("#talk-attachments li").count() == 1
    assert p.locator("#talk-log li").count() == 0
    page.errors.clear()  # the browser logs the 400 itself


def test_transcribe_click_to_play_and_downloads(
    page: Watched, files: dict[str, Path], shots: Path, tmp_path: Path
) -> None:
    p = page.page
    p.click("#tab-transcribe")
    p.set_input_files("#tr-file", str(files["long"]))
    p.fill("#tr-prompt", "a test recording")
    p.click("#tr-start")
    p.wait_for_selector("#tr-downloads:not([hidden])", timeout=120_000)
    assert p.evaluate("document.getElementById('tr-progress').value") == 1
    assert re.search(
        r"elapsed [\d.]+ s · remaining ~\d+ s · [\d.]+× real time", p.inner_text("#tr-figures")
    )
    segs = p.locator("#tr-segments .segment")
    n = segs.count()
    assert n >= 2
    second = segs.nth(1)
    start = float(second.get_attribute("data-start") or "nan")
    second.click()
    wait_until(p, "!document.getElementById('tr-audio').paused")
    t = p.evaluate("document.getElementById('tr-audio').currentTime")
    assert start <= t < start + 1.0  # the audio jumped to the segment
    assert "playing" in (second.get_attribute("class") or "")
    assert second.get_attribute("aria-current") == "true"
    assert "playing" not in (segs.nth(0).get_attribute("class") or "")
    p.evaluate("window.scrollTo(0, 0)")
    p.screenshot(path=str(shots / "transcribe-desktop.png"))
    got = {}
    for fmt in ("text", "srt", "vtt", "json", "verbose_json"):
        with p.expect_download() as dl:
            p.click(f"#tr-downloads button[data-format='{fmt}']")
        path = tmp_path / dl.value.suggested_filename
        dl.value.save_as(path)
        got[fmt] = path
    subs = list(srt.parse(got["srt"].read_text()))
    assert len(subs) == n and subs[1].start.total_seconds() == pytest.approx(start, abs=0.001)
    cues = webvtt.read(str(got["vtt"]))
    assert len(cues) == n and cues[1].text == subs[1].content
    assert len(got["text"].read_text().splitlines()) == n
    assert json.loads(got["json"].read_text())["text"].startswith(subs[0].content)
    verbose = json.loads(got["verbose_json"].read_text())
    assert [s["start"] for s in verbose["segments"]] == [s.start.total_seconds() for s in subs]
    assert verbose["duration"] == pytest.approx(sf.info(files["long"]).duration, abs=0.01)


def test_live_captions_from_the_microphone(
    page: Watched, server: Server, shots: Path, tmp_path: Path
) -> None:
    p = page.page
    p.click("#tab-captions")
    p.keyboard.press("Alt+M")
    p.wait_for_selector("#cap-toggle[aria-pressed='true']")
    p.wait_for_selector("#cap-turns li[data-done='true']", timeout=60_000)
    first = p.locator("#cap-turns li[data-done='true']").first.inner_text()
    assert re.match(r"\d+:\d\d–\d+:\d\d \S", first)  # times, then words
    p.screenshot(path=str(shots / "captions-desktop.png"))
    p.click("#cap-toggle")
    p.wait_for_selector("#cap-downloads:not([hidden])", timeout=30_000)
    got = {}
    for fmt in ("srt", "vtt", "txt", "json"):
        with p.expect_download() as dl:
            p.click(f"#cap-downloads button[data-format='{fmt}']")
        path = tmp_path / f"captions.{fmt}"
        dl.value.save_as(path)
        got[fmt] = path
    subs = list(srt.parse(got["srt"].read_text()))
    assert subs and all(s.start < s.end for s in subs)
    assert subs[0].start.total_seconds() == pytest.approx(1.0, abs=0.6)  # the pause, then speech
    assert len(webvtt.read(str(got["vtt"]))) == len(subs)
    data = json.loads(got["json"].read_text())
    assert len(data["segments"]) == len(subs) and data["text"]
    assert page.sockets and all("intent=transcription" in u for u in page.sockets)
    server.wait_for_line("GET /v1/realtime 101")


def test_what_runs_here(page: Watched, shots: Path) -> None:
    p = page.page
    p.click("#tab-status")
    p.wait_for_selector("#st-facts dd[data-name='Quantization']")
    assert p.inner_text("#st-facts dd[data-name='Quantization']") == "F32"
    assert p.inner_text("#st-facts dd[data-name='Backend']").startswith("CPU")
    assert p.inner_text("#st-facts dd[data-name='GPU layers']").startswith("0 of 3")
    assert "Nothing was planned" in p.inner_text("#st-plan")
    assert p.inner_text("#st-live dd[data-name='Sequences busy']") == "0 of 2"
    p.screenshot(path=str(shots / "status-desktop.png"))


def test_keyboard_only_and_labels(page: Watched) -> None:
    p = page.page
    p.focus("#tab-talk")
    p.keyboard.press("ArrowRight")
    assert p.evaluate("document.activeElement.id") == "tab-transcribe"
    assert p.is_visible("#view-transcribe") and not p.is_visible("#view-talk")
    p.keyboard.press("ArrowLeft")
    # every control has a name a screen reader says
    unnamed = p.evaluate(
        """() => [...document.querySelectorAll('button, input, select, textarea')]
            .filter(e => e.type !== 'file' || e.labels.length === 0)
            .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                         && !e.textContent.trim())
            .map(e => e.id)"""
    )
    assert unnamed == []


def test_phone_width(browser: Any, server: Server, shots: Path) -> None:
    with open_page(browser, server.url + "/", PHONE) as w:
        enter_key(w)
        p = w.page
        for view in VIEWS:
            p.click(f"#tab-{view}")
            p.wait_for_selector(f"#view-{view}:not([hidden])")
            if view == "status":
                p.wait_for_selector("#st-facts dd")
            wide = p.evaluate("document.documentElement.scrollWidth")
            assert wide <= PHONE["width"], view  # nothing wider than the phone
            tabs = p.evaluate(
                "(() => { const t = document.querySelector('.tabs');"
                " return [t.scrollWidth, t.clientWidth]; })()"
            )
            assert tabs[0] <= tabs[1], (view, tabs)  # every tab in sight, no sideways scroll
            p.screenshot(path=str(shots / f"{view}-phone.png"))
        same_origin(w, server.url)
    assert DESKTOP["width"] > PHONE["width"]


def test_no_ui_and_cors_origin(tiny_gguf: Pair, tmp_path: Path) -> None:
    origin = "http://elsewhere.test"
    with serving(tiny_gguf, tmp_path, "--no-ui", "--cors-origin", origin) as s:
        auth = {"Authorization": f"Bearer {KEY}"}
        assert httpx.get(s.url + "/").status_code == 401  # everything is the API's, keyed
        assert httpx.get(s.url + "/", headers=auth).status_code == 404
        assert httpx.get(s.url + "/ui/app.js", headers=auth).status_code == 404
        pre = httpx.options(
            f"{s.url}/v1/status",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == origin
        r = httpx.get(
            f"{s.url}/v1/status", headers={"Origin": origin, "Authorization": f"Bearer {KEY}"}
        )
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
        other = httpx.get(
            f"{s.url}/v1/status",
            headers={"Origin": "http://x.test", "Authorization": f"Bearer {KEY}"},
        )
        assert "access-control-allow-origin" not in other.headers


def test_qaudio_ui_opens_the_page_in_a_browser(tiny_gguf: Pair, tmp_path: Path) -> None:
    """``qaudio ui`` serves, then hands the page's URL to the browser (``$BROWSER`` here: a
    script that writes down what it was given)."""
    opened = tmp_path / "opened.txt"
    fake = tmp_path / "browser.sh"
    fake.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    fake.chmod(0o755)
    port = free_port()
    args = [sys.executable, "-m", "qaudio_local", "ui", "--port", str(port), "--threads", "2"]
    args += ["--model-file", str(tiny_gguf[0]), "--mmproj-file", str(tiny_gguf[1])]
    env = dict(os.environ, BROWSER=f"{fake} %s", QAUDIO_HOME=str(tmp_path / "q"))
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (opened.exists() and opened.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        assert opened.read_text().strip() == f"http://127.0.0.1:{port}/"
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0 and f"page: http://127.0.0.1:{port}/" in err.decode()


def test_busy_server_banner_says_when_to_retry(
    tiny_gguf: Pair, tmp_path: Path, browser: Any, files: dict[str, Path]
) -> None:
    """A server with every place taken answers 429 with Retry-After: the banner says the
    server's words and when to retry, and the turn goes back to the composer."""
    import threading

    x, rate = sf.read(files["long"], dtype="float32")
    sf.write(tmp_path / "longer.wav", np.concatenate([x] * 4), rate, subtype="PCM_16")
    with serving(tiny_gguf, tmp_path, "--parallel", "1", "--max-queue", "0") as s:
        busy = threading.Thread(
            target=httpx.post,
            args=(f"{s.url}/v1/audio/transcriptions",),
            kwargs={
                "headers": {"Authorization": f"Bearer {KEY}"},
                "files": {"file": ("a.wav", (tmp_path / "longer.wav").read_bytes())},
                "data": {"model": "tiny-qwen2-audio.F32"},
                "timeout": 120,
            },
        )
        with open_page(browser, s.url + "/") as w:
            enter_key(w)
            busy.start()
            deadline = time.monotonic() + 20
            while not _in_flight(s.url):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            w.page.fill("#talk-input", "are you there?")
            w.page.click("#talk-send")
            w.page.wait_for_selector("#banner:not([hidden])")
            text = w.page.inner_text("#banner-text")
            assert "the server is busy" in text and text.endswith("(retry in 1 s)")
            assert w.page.get_attribute("#banner", "data-status") == "429"
            assert w.page.input_value("#talk-input") == "are you there?"
            same_origin(w, s.url)
        busy.join(timeout=120)


def _in_flight(url: str) -> bool:
    r = httpx.get(f"{url}/v1/status", headers={"Authorization": f"Bearer {KEY}"})
    return bool(r.json()["busy"])
