"""``qaudio listen`` against the real ``/v1/realtime`` endpoint of ``qaudio serve``, with the
tiny model: a recording of two spoken clips, sent as fast as possible; its SRT parsed.

tests/test_listen.py covers the client's other paths against a fake peer.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
import srt

from tests.support.audio import SR, make_recording
from tests.support.cli import invoke

PREFIX_S, SILENCE_S = 0.3, 0.5  # the VAD settings qaudio listen sends by default
CAPTION = re.compile(r"^\[\d\d:\d\d\.\d -> \d\d:\d\d\.\d\] \S.*$")


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, int]]]:
    path = tmp_path_factory.mktemp("live") / "two-turns.wav"
    plan: list[tuple[str, float | str]] = [("sil", 1.0), ("say", "a"), ("sil", 1.5)]
    return path, make_recording(path, [*plan, ("say", "b"), ("sil", 1.0)])


def _model_args(pair: tuple[Path, Path]) -> list[Any]:
    return ["--model-file", pair[0], "--mmproj-file", pair[1], "--n-ctx", "2048"]


def _check_srt(path: Path, truth: list[tuple[int, int]]) -> list[srt.Subtitle]:
    """The SRT parses, and holds one cue per spoken clip, where the clip is."""
    text = path.read_text(encoding="utf-8")
    subs = list(srt.parse(text))
    assert list(srt.parse(srt.compose(subs))) == subs
    assert len(subs) == len(truth), text
    for cue, (a, b) in zip(subs, truth, strict=True):  # clips 1.5 s apart: no confusion
        start, end = cue.start.total_seconds(), cue.end.total_seconds()
        assert a / SR - PREFIX_S - 0.7 <= start <= a / SR + 0.3, (cue, a / SR)
        assert b / SR - 0.3 <= end <= b / SR + SILENCE_S + 0.5, (cue, b / SR)
        assert cue.content.strip()
    return subs


def test_listen_to_a_file_through_the_local_server(
    tiny_gguf: tuple[Path, Path], recording: Any, tmp_path: Path
) -> None:
    path, truth = recording
    result = invoke("listen", "--input", path, "--speed", "0", *_model_args(tiny_gguf),
                    "--threads", "2", "-o", "srt,json", "--output-dir", tmp_path)  # fmt: skip
    assert result.exit_code == 0, result.output
    captions = result.stdout.splitlines()
    assert len(captions) == len(truth) and all(CAPTION.match(c) for c in captions), captions
    _check_srt(tmp_path / "two-turns.srt", truth)


def test_manual_commit_is_one_turn(
    tiny_gguf: tuple[Path, Path], recording: Any, tmp_path: Path
) -> None:
    path, _ = recording
    result = invoke("listen", "-i", path, "--speed", "0", "--manual", *_model_args(tiny_gguf),
                    "-o", "srt", "--output-dir", tmp_path)  # fmt: skip
    assert result.exit_code == 0, result.output
    (cue,) = list(srt.parse((tmp_path / "two-turns.srt").read_text()))
    seconds = sf.info(str(path)).frames / SR
    assert cue.start.total_seconds() == 0 and abs(cue.end.total_seconds() - seconds) < 0.01


def test_a_spoken_conversation(tiny_gguf: tuple[Path, Path], recording: Any) -> None:
    path, truth = recording
    result = invoke("listen", "-i", path, "--speed", "0", "--chat", *_model_args(tiny_gguf),
                    "--system", "Answer in one word.")  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert sum(bool(re.match(r"^\[.*\] you(: .*)?$", line)) for line in lines) == len(truth)
    assert sum(line.startswith("> ") for line in lines) == len(truth)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_same_through_a_remote_server(
    tiny_gguf: tuple[Path, Path], recording: Any, tmp_path: Path
) -> None:
    """--server: the same protocol path, against `qaudio serve` in its own process."""
    import httpx2 as httpx

    path, truth = recording
    port = _free_port()
    args = [sys.executable, "-m", "qaudio_local", "serve", "--port", str(port), "--api-key"]
    args += ["k3y", *map(str, _model_args(tiny_gguf)), "--quiet"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        result = invoke("listen", "--server", url, "--api-key", "k3y", "-i", path, "--speed",
                        "0", "-o", "srt", "--output-dir", tmp_path)  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert result.exit_code == 0, result.output
    _check_srt(tmp_path / "two-turns.srt", truth)
