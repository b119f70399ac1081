"""`qaudio transcribe`, `run` and `chat` against remote servers (`--server`): real
`qaudio serve` processes on 127.0.0.1 running the tiny model, and a hostile stand-in."""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pexpect
import pytest
import soundfile as sf

from qaudio_local.remote import parse_server
from tests.support.audio import MINUTE, clip, make_recording
from tests.support.cli import invoke
from tests.support.remote import Fleet, transcribe_child, wait_for_lines
from tests.support.served import KEY, Served, free_port, wait_ready
from tests.support.standin import MODES, StandIn

Pair = tuple[Path, Path]
ARGS = ("-o", "srt", "-o", "verbose_json", "--deterministic", "--language", "english")
ARGS += ("--max-tokens", "12", "--quiet")
RECORDINGS = {
    "ten": [("sil", 20), *(MINUTE * 9)],  # about 10 minutes, 36 segments
    "three": MINUTE * 3,
    "one": MINUTE,
}


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("recordings")
    for name, plan in RECORDINGS.items():
        make_recording(folder / f"{name}.wav", plan)
    return {name: folder / f"{name}.wav" for name in RECORDINGS}


@pytest.fixture(scope="module")
def local(tiny_gguf: Pair, recordings: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """Each recording transcribed here with --deterministic: what the servers must match."""
    out = tmp_path_factory.mktemp("local")
    pair = ("--model-file", tiny_gguf[0], "--mmproj-file", tiny_gguf[1], "--threads", "2")
    for path in recordings.values():
        r = invoke("transcribe", path, *ARGS, *pair, "--output-dir", out)
        assert r.exit_code == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def trio(tiny_gguf: Pair) -> Iterator[Fleet]:
    """Three `qaudio serve --deterministic` (one sequence each, from an empty cache)."""
    fleet = Fleet(tiny_gguf, 3, "--deterministic")
    yield fleet
    fleet.close()


def servers(*urls: str) -> list[str]:
    return [x for u in urls for x in ("--server", u)]


def same_files(a: Path, b: Path, stem: str) -> None:
    for name in (f"{stem}.srt", f"{stem}.verbose.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def shares(err: str) -> dict[str, tuple[int, int]]:
    """host:port -> (requests answered, requests failed there) from the closing report."""
    out = {}
    for line in err.splitlines():
        m = re.match(r"server (\S+): (\d+) requests", line)
        if m:
            failed = re.search(r", (\d+) failed", line)
            out[m.group(1)] = (int(m.group(2)), int(failed.group(1)) if failed else 0)
    return out


def n_segments(folder: Path, stem: str) -> int:
    return len(json.loads((folder / f"{stem}.verbose.json").read_text())["segments"])


def test_ten_minutes_over_three_servers_equal_a_local_run(
    trio: Fleet, recordings: dict[str, Path], local: Path, tmp_path: Path
) -> None:
    urls = trio.urls()
    r = invoke(
        "transcribe", recordings["ten"], *ARGS, *servers(*urls), "--api-key", KEY,
        "--output-dir", tmp_path,
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    same_files(tmp_path, local, "ten")
    got = shares(r.stderr)
    assert set(got) == {u.removeprefix("http://") for u in urls}, r.stderr
    assert all(done > 0 for done, _ in got.values()), r.stderr  # every server took a share
    assert sum(done for done, _ in got.values()) == n_segments(local, "ten") >= 30


def test_a_server_killed_mid_run_changes_nothing(
    trio: Fleet, recordings: dict[str, Path], local: Path, tmp_path: Path
) -> None:
    urls = trio.urls()
    key = tmp_path / "key"
    key.write_text(KEY + "\n")
    proc = transcribe_child(
        recordings["ten"], *ARGS, *servers(*urls), "--api-key-file", key, "--output-dir", tmp_path
    )
    wait_for_lines(tmp_path / "ten.qaudio-journal.jsonl", 4, proc)
    trio.servers[1].proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    same_files(tmp_path, local, "ten")
    got = shares(err)
    assert sum(done for done, _ in got.values()) == n_segments(local, "ten")  # each once


@pytest.mark.parametrize("mode", MODES)
def test_a_hostile_server_in_the_pool_is_worked_around(
    mode: str, trio: Fleet, recordings: dict[str, Path], local: Path, tmp_path: Path
) -> None:
    with StandIn((mode,)) as bad:
        t0 = time.monotonic()
        r = invoke(
            "transcribe", recordings["one"], *ARGS, *servers(bad.url, trio.urls()[0]),
            "--api-key", KEY, "--server-timeout", "2", "--output-dir", tmp_path,
        )  # fmt: skip
        took = time.monotonic() - t0
    assert r.exit_code == 0, r.stderr
    same_files(tmp_path, local, "one")
    assert bad.posts, "the stand-in was never asked"
    got = shares(r.stderr)
    stand_in = got[bad.url.removeprefix("http://")]
    assert stand_in == (0, len(bad.posts)), r.stderr  # nothing from it was used
    assert sum(done for done, _ in got.values()) == n_segments(local, "one")
    assert took < 40  # a stalled socket is given up after --server-timeout


def test_every_server_down_stops_cleanly_and_the_journal_resumes(
    tiny_gguf: Pair, recordings: dict[str, Path], local: Path, tmp_path: Path
) -> None:
    only = Served(tiny_gguf, free_port(), "--api-key", KEY, "--deterministic", "--threads", "1")
    wait_ready(only.url, only.proc)
    journal = tmp_path / "three.qaudio-journal.jsonl"
    proc = transcribe_child(
        recordings["three"], *ARGS, *servers(only.url), "--api-key", KEY, "--output-dir", tmp_path
    )
    wait_for_lines(journal, 3, proc)
    only.stop(signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: every server failed") and "Traceback" not in err, err
    assert "run the same command again" in lines[-1]
    assert journal.exists() and not (tmp_path / "three.srt").exists()
    again = Served(tiny_gguf, free_port(), "--api-key", KEY, "--deterministic", "--threads", "1")
    try:
        wait_ready(again.url, again.proc)
        r = invoke(
            "transcribe", recordings["three"], *ARGS, *servers(again.url), "--api-key", KEY,
            "--output-dir", tmp_path,
        )  # fmt: skip
    finally:
        again.stop()
    assert r.exit_code == 0, r.stderr
    assert re.search(r"resuming \d+ segments from the journal", r.stderr), r.stderr
    same_files(tmp_path, local, "three")
    assert not journal.exists()


def test_no_server_answering_is_one_clear_line(recordings: dict[str, Path], tmp_path: Path) -> None:
    port = free_port()
    r = invoke("transcribe", recordings["one"], "--server", f"127.0.0.1:{port}@2")
    assert r.exit_code == 1
    assert r.stderr.startswith("error: no server answered (127.0.0.1:") and "refused" in r.stderr
    assert r.stderr.count("\n") == 1


def test_usage_errors_with_server(recordings: dict[str, Path], tmp_path: Path) -> None:
    r = invoke("transcribe", recordings["one"], "--server", "h:1", "--model-file", tmp_path)
    assert r.exit_code == 2 and "--model-file: for a local model, not with --server" in r.stderr
    r = invoke("run", recordings["one"], "--api-key", "k")
    assert r.exit_code == 2 and "--api-key is for --server" in r.stderr
    r = invoke("run", recordings["one"], "--server", "ftp://h:1")
    assert r.exit_code == 2 and "not an http(s) address" in r.stderr


def test_server_addresses() -> None:
    assert parse_server("h:8000").base == "http://h:8000/v1"
    assert parse_server("https://h/api/v1/@3") == parse_server("https://h/api@3")
    assert parse_server("http://h:1/v1@3").capacity == 3
    assert parse_server("[::1]:9").base == "http://[::1]:9/v1"
    for bad in ("h:1@0", "h:1@65", "h:x", "ws://h:1", "http://u:p@h:1"):
        with pytest.raises(ValueError):
            parse_server(bad)


@pytest.fixture(scope="module")
def plain(tiny_gguf: Pair) -> Iterator[Served]:
    """One `qaudio serve` that keeps its cache (as people run it)."""
    s = Served(tiny_gguf, free_port(), "--api-key", KEY)
    wait_ready(s.url, s.proc)
    yield s
    s.stop()


def test_run_with_server_reuses_the_servers_cache(
    plain: Served, tiny_gguf: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "clip.wav"
    sf.write(path, clip("a"), 16000)
    monkeypatch.setenv("QAUDIO_SERVERS", plain.url)
    monkeypatch.setenv("QAUDIO_API_KEY", KEY)
    ask = ("-p", "What is said?", "--max-tokens", "8", "--json")
    first, second = (json.loads(invoke("run", path, *ask).stdout) for _ in range(2))
    assert first["usage"]["cached_tokens"] == 0 < first["usage"]["prompt_tokens"]
    # the same clip and question again: the server computes only the last position
    assert second["usage"]["cached_tokens"] == first["usage"]["prompt_tokens"] - 1
    monkeypatch.delenv("QAUDIO_SERVERS")
    monkeypatch.delenv("QAUDIO_API_KEY")
    here = invoke("run", path, *ask, "--model-file", tiny_gguf[0], "--mmproj-file", tiny_gguf[1])
    assert json.loads(here.stdout)["text"] == first["text"] == second["text"]


def test_chat_with_server_reuses_earlier_turns(plain: Served, tmp_path: Path) -> None:
    path = tmp_path / "clip.wav"
    sf.write(path, np.concatenate([clip("b"), clip("c")]), 16000)
    args = ["-m", "qaudio_local", "chat", "--server", plain.url, "--api-key", KEY]
    child = pexpect.spawn(sys.executable, [*args, "--max-tokens", "8"], timeout=60)
    child.expect(">>> ")
    child.sendline(str(path))
    child.expect(">>> ")
    stats = []
    for question in ("What is said here?", "And who says it?"):
        child.sendline(question)
        child.expect(">>> ")
        child.sendline("/stats")
        child.expect(r"prompt (\d+) tokens, (\d+) reused")
        stats.append((int(child.match.group(1)), int(child.match.group(2))))
        child.expect(">>> ")
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    (p1, r1), (p2, r2) = stats
    assert p1 - r1 > 100  # the clip (~4 s, 100+ audio tokens) computed once ...
    assert r2 >= p1 and p2 - r2 < 40  # ... then reused: turn 2 computes its own words only


def test_answers_read_from_other_servers() -> None:
    """The ids of llama-server ("id") and of vLLM (--return-tokens-as-token-ids); an answer
    that is not a chat completion is an AnswerError (the pool sends it elsewhere)."""
    from qaudio_local.remote.wire import AnswerError, StreamReader, read_answer

    vllm = {
        "choices": [
            {
                "message": {"content": "hi there"},
                "finish_reason": "length",
                "logprobs": {"content": [{"token": "token_id:12", "logprob": -0.5}]},
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1},
    }
    _, res = read_answer(json.dumps(vllm).encode(), 1.5, 10.0)
    assert (res.text, res.tokens, res.logprobs, res.finish_reason) == (
        "hi there", (12,), (-0.5,), "length",
    )  # fmt: skip
    assert res.usage.prompt_tokens == 9 and res.usage.audio_seconds == 1.5
    for bad in (b"", b"<html>", b'{"choices": []}', b'{"choices": [{"message": {}}]}'):
        with pytest.raises(AnswerError):
            read_answer(bad, 0.0, 1.0)
    reader = StreamReader(0.0)
    reader.feed('data: {"choices": [{"delta": {"content": "par"}}]}')
    with pytest.raises(AnswerError, match="ended before its end"):
        reader.result(1.0)  # no finish_reason, no [DONE]: a truncated stream
    with pytest.raises(AnswerError, match="the server stopped"):
        reader.feed('data: {"error": {"message": "out of memory"}}')


def test_a_slow_server_leaves_the_last_requests_to_a_fast_one() -> None:
    from qaudio_local.remote.schedule import Slot, pick

    fast_busy, slow_free = Slot("fast", 1.0, 8.0), Slot("slow", 0.0, 1.0)
    slots = [fast_busy, slow_free]
    # one 8 s request: the fast server, free in 1 s, ends it at 2 s; the slow one at 8 s
    assert pick("slow", slots, [(8.0, None)], 0.0) is None
    # six: the fast server still ends them all (at 7 s) before the slow one would end one;
    # ten: it cannot, and the slow one takes the seventh
    assert pick("slow", slots, [(8.0, None)] * 6, 0.0) is None
    assert pick("slow", slots, [(8.0, None)] * 10, 0.0) == 6
    # near-equal: the free one takes it (nobody waits for a small gain)
    assert pick("slow", [Slot("fast", 0.5, 1.0), slow_free], [(8.0, None)], 0.0) == 0
    # a request that failed on the fast server is not laid on it again
    assert pick("slow", slots, [(8.0, "fast")], 0.0) == 0
    assert pick("fast", [Slot("fast", 0.0, 8.0)], [(8.0, "fast")], 0.0) == 0  # unless alone
