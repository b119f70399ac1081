"""The page in a real browser: Debian's Chromium driven by Playwright (never a downloaded
browser), its microphone fed from a WAV file, every request it makes recorded."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("QAUDIO_CHROMIUM", "/usr/bin/chromium")
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


def chromium_path() -> str:
    found = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    assert found, (
        f"no Chromium at {CHROMIUM}: the browser tests need the OS package "
        "(`apt-get install chromium`, done by scripts/test.sh)"
    )
    return found


def launch_args(mic_wav: Path) -> list[str]:
    return [
        "--no-sandbox",  # the tests run as root in CI
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic_wav}",
    ]


@contextmanager
def chromium(mic_wav: Path) -> Iterator[Any]:
    """One headless Chromium whose microphone plays ``mic_wav`` in a loop."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=launch_args(mic_wav))
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Watched:
    """A page and what it did: every request's URL, WebSocket URLs, console errors (the
    browser's own line for an HTTP error status left out: the page shows those)."""

    page: Any
    requests: list[str] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@contextmanager
def open_page(browser: Any, url: str, viewport: dict[str, int] = DESKTOP) -> Iterator[Watched]:
    """A fresh context (its own sessionStorage) with the page at ``url`` loaded."""
    context = browser.new_context(viewport=viewport, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    w = Watched(page)
    page.on("request", lambda r: w.requests.append(r.url))
    page.on("websocket", lambda ws: w.sockets.append(ws.url))

    def console(m: Any) -> None:  # a script error or a CSP refusal, not an HTTP status
        if m.type == "error" and not m.text.startswith("Failed to load resource"):
            w.errors.append(m.text)

    page.on("console", console)
    page.on("pageerror", lambda e: w.errors.append(str(e)))
    try:
        page.goto(url)
        page.wait_for_selector("body[data-ready='true']")
        yield w
    finally:
        context.close()
