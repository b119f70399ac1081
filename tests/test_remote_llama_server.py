"""llama.cpp's own llama-server (built from the sources vendored in the llama-cpp-python
sdist, cached outside the clone) as a backend of `qaudio transcribe --server`: another
implementation of the API, loading the same tiny pair through libmtmd."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import srt
import webvtt

from qaudio_dev.bench.build import llama_server
from tests.support.audio import MINUTE, make_recording
from tests.support.cli import invoke
from tests.support.served import free_port, wait_ready

Pair = tuple[Path, Path]
ARGS = ("-o", "all", "--language", "english", "--max-tokens", "8", "--quiet")


@pytest.fixture(scope="module")
def llama_server_url(tiny_gguf: Pair) -> Iterator[str]:
    binary, how = llama_server(lambda line: print(line, file=sys.stderr))
    assert binary is not None, how  # scripts/test.sh builds it before the tests
    port = free_port()
    cmd = [str(binary), "-m", str(tiny_gguf[0]), "--mmproj", str(tiny_gguf[1])]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "-c", "4096", "-np", "2", "-t", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def test_llama_server_as_a_backend(llama_server_url: str, tiny_gguf: Pair, tmp_path: Path) -> None:
    path = tmp_path / "minute.wav"
    truth = make_recording(path, MINUTE)
    r = invoke("transcribe", path, *ARGS, "--server", f"{llama_server_url}@2", "--output-dir",
               tmp_path / "remote")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert "2 at once" in r.stderr and "server 127.0.0.1" in r.stderr
    here = ("--model-file", tiny_gguf[0], "--mmproj-file", tiny_gguf[1], "--threads", "2")
    r = invoke("transcribe", path, *ARGS, *here, "--output-dir", tmp_path / "local")
    assert r.exit_code == 0, r.stderr
    remote = json.loads((tmp_path / "remote" / "minute.verbose.json").read_text())
    local = json.loads((tmp_path / "local" / "minute.verbose.json").read_text())
    spans = [(s["start"], s["end"]) for s in remote["segments"]]
    # the timestamps are this side's exact sample offsets, whoever answers
    assert spans == [(s["start"], s["end"]) for s in local["segments"]] and len(spans) >= 3
    assert all(e1 <= s2 for (_, e1), (s2, _) in zip(spans, spans[1:], strict=False))
    assert spans[0][0] * 16000 <= truth[0][0] and spans[-1][1] * 16000 >= truth[-1][1] - 1600
    for seg in remote["segments"]:
        assert seg["text"] and seg["tokens"] and seg["avg_logprob"] < 0  # ids and logprobs came
    subs = list(srt.parse((tmp_path / "remote" / "minute.srt").read_text()))
    assert [(s.start.total_seconds(), s.end.total_seconds()) for s in subs] == spans
    vtt = webvtt.read(str(tmp_path / "remote" / "minute.vtt"))
    assert [c.start_in_seconds for c in vtt] == [int(a) for a, _ in spans]
    assert json.loads((tmp_path / "remote" / "minute.json").read_text())["text"]
