"""Conversations: the Python API on the tiny model, and ``qaudio chat`` driven in a pty.

What a turn costs is checked by counting what the engine fed llama.cpp, not by timing.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pexpect
import pytest
import soundfile as sf

from qaudio_local.chat import Conversation
from qaudio_local.cli.chat import ChatSession
from qaudio_local.engine.model import AudioModel
from qaudio_local.engine.options import ModelOptions, SamplingOptions
from qaudio_local.errors import ContextFullError, ConversationFileError
from tests.support.audio import tone
from tests.support.files import mode, umask

Pair = tuple[Path, Path]
SHORT = SamplingOptions(max_tokens=10, stop_at_end_of_turn=False)


@pytest.fixture
def clips(tmp_path: Path) -> list[Path]:
    paths = []
    for i, (sec, hz) in enumerate([(1.0, 300), (1.6, 520), (0.7, 800)]):
        p = tmp_path / f"clip{i}.wav"
        sf.write(p, tone(sec, hz), 16000)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def model(tiny_gguf: Pair):
    with AudioModel(*tiny_gguf, ModelOptions(n_ctx=2048, n_threads=2)) as m:
        yield m


def test_each_turn_feeds_only_what_is_new(model: AudioModel, clips: list[Path]) -> None:
    model.clear_cache()
    conv = Conversation(model, sampling=SHORT)
    turns = [("What is this?", [clips[0]]), ("Is it loud?", []), ("And this one?", [clips[1]])]
    previous_total = 0
    for i, (text, audio) in enumerate(turns):
        before, calls = model.stats, model.encoder_calls
        res = conv.ask(text, audio).wait()
        after = model.stats
        u = res.usage
        assert model.encoder_calls - calls == len(audio)  # only the new clip is encoded
        new_audio = sum(_tokens(c) for c in audio)
        assert after.embeddings_fed - before.embeddings_fed == new_audio  # old clips: cached
        fed = after.tokens_fed - before.tokens_fed + after.embeddings_fed - before.embeddings_fed
        assert fed == u.prompt_tokens - u.cached_tokens + len(res.tokens) - 1
        if i:  # everything before this turn came from the cache, but the last answer token
            assert u.cached_tokens == previous_total - 1
        previous_total = u.prompt_tokens + len(res.tokens)
    assert [t.role for t in conv.turns] == ["user", "assistant"] * 3
    assert all(t.tokens and t.text for t in conv.turns if t.role == "assistant")


def _tokens(path: Path) -> int:
    from qaudio_local.audio.windows import audio_token_count

    return audio_token_count(sf.info(str(path)).frames)


def test_a_voice_turn_and_retry(model: AudioModel, clips: list[Path]) -> None:
    conv = Conversation(model, sampling=SHORT)
    first = conv.ask("", [clips[2]]).wait()  # audio only: a voice-chat turn
    assert first.usage.audio_tokens == _tokens(clips[2])
    again = conv.retry().wait()
    assert again.tokens == first.tokens  # greedy: the same answer
    assert len(conv.turns) == 2
    with pytest.raises(ValueError, match="needs text or audio"):
        conv.add("", [])
    conv.add("hm")
    with pytest.raises(ValueError, match="has not answered"):
        conv.add("again")


def test_save_and_load_refuse_a_changed_clip(
    model: AudioModel, clips: list[Path], tmp_path: Path
) -> None:
    conv = Conversation(model, sampling=SHORT)
    conv.ask("What is it?", [clips[0], tone(0.5, 1000)]).wait()  # a path and an array
    with umask(0o022):
        saved = conv.save(tmp_path / "c.json")
    assert mode(saved) == 0o644  # a file like any other, not mkstemp's 0o600
    data = json.loads(saved.read_text())
    assert data["format"] == "qaudio-conversation" and len(data["turns"]) == 2
    assert all(len(a["sha256"]) == 64 for a in data["turns"][0]["audio"])
    loaded = Conversation.load(saved, model)
    assert [t.text for t in loaded.turns] == [t.text for t in conv.turns]
    assert loaded.turns[1].tokens == conv.turns[1].tokens
    res = loaded.ask("More?").wait()
    assert res.usage.cached_tokens > 0  # the loaded turns were still in the cache
    sf.write(clips[0], tone(1.0, 301), 16000)  # the clip changes
    with pytest.raises(ConversationFileError, match="has changed since"):
        Conversation.load(saved, model)
    clips[0].unlink()
    with pytest.raises(ConversationFileError, match="which is gone"):
        Conversation.load(saved, model)
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(ConversationFileError, match="not a readable conversation"):
        Conversation.load(tmp_path / "junk.json", model)


def test_a_full_context_drops_the_oldest_turns(tiny_gguf: Pair) -> None:
    opts = ModelOptions(n_ctx=256, n_threads=2)
    with AudioModel(*tiny_gguf, opts) as small:
        conv = Conversation(small, sampling=SamplingOptions(max_tokens=30))
        for i in range(8):
            conv.ask(f"Turn {i}: tell me more.").wait()
            assert conv.tokens_used() <= small.n_ctx
        assert conv.dropped > 0 and conv.turns[0].role == "user"
        strict = Conversation(small, sampling=SamplingOptions(max_tokens=30), on_full="error")
        with pytest.raises(ContextFullError, match="/clear"):
            for i in range(8):
                strict.ask(f"Turn {i}: tell me more.").wait()


# --- the terminal chat ---------------------------------------------------------------------


def chat_lines(conv: Conversation, *lines: str) -> ChatSession:
    """Run a chat session over ``conv`` that reads ``lines``, then Ctrl+D."""
    queue = list(lines)

    def read(prompt: str) -> str:
        if not queue:
            raise EOFError
        return queue.pop(0)

    session = ChatSession(conv, read)
    session.loop()
    return session


def test_a_path_alone_is_attached_and_the_next_line_asks_about_it(
    model: AudioModel, clips: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spaced = tmp_path / "my clip.wav"
    sf.write(spaced, tone(0.5, 400), 16000)
    missing = tmp_path / "missing.wav"
    conv = Conversation(model, sampling=SHORT)
    chat_lines(conv, str(clips[0]), "What is this sound?", str(spaced), "")
    err = capsys.readouterr().err
    assert "[Y/n]" not in err
    assert "attached: clip0.wav (ask about it, or press Enter to send it alone)" in err
    assert "attached: my clip.wav (ask about it" in err  # an unquoted path with a space
    user = [t for t in conv.turns if t.role == "user"]
    assert [t.text for t in user] == ["What is this sound?", ""]  # the question, a voice turn
    assert [[Path(c.path or "") for c in t.clips] for t in user] == [[clips[0]], [spaced]]
    # a file that is not there is named in an error and attaches nothing
    session = chat_lines(conv, f"/audio {missing}", str(missing))
    err = capsys.readouterr().err
    assert f"error: no such file: {missing}" in err
    assert "attached:" not in err and session.attached == []
    # of several, only those found are attached, and only they are listed
    session = chat_lines(conv, f"/audio {clips[1]} {missing} {clips[2]}")
    err = capsys.readouterr().err
    assert "error: no such file" in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("attached:")]
    assert line == "attached: clip1.wav, clip2.wav (2 clips in all; ask about them, or press " + (
        "Enter to send them alone)"
    )
    assert session.attached == [clips[1], clips[2]]
    chat_lines(conv, "/help")
    assert "alone on a line is attached" in " ".join(capsys.readouterr().err.split())


def spawn_chat(pair: Pair, *extra: str) -> pexpect.spawn:
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200")
    args = ["-m", "qaudio_local", "chat", "--model-file", str(pair[0])]
    args += ["--mmproj-file", str(pair[1]), "--threads", "2", *extra]
    child = pexpect.spawn(sys.executable, args, env=env, encoding="utf-8", timeout=60)
    child.expect(">>> ")
    return child


def say(child: pexpect.spawn, line: str, until: str = ">>> ") -> str:
    child.sendline(line)
    child.expect(until)
    return child.before


def stats(child: pexpect.spawn) -> tuple[int, int]:
    out = say(child, "/stats")
    m = re.search(r"prompt (\d+) tokens, (\d+) reused, (\d+) computed", out)
    assert m, out
    return int(m.group(1)), int(m.group(2))


def test_a_chat_session_interrupted_saved_and_resumed(
    tiny_gguf: Pair, clips: list[Path], tmp_path: Path
) -> None:
    child = spawn_chat(tiny_gguf, "--max-tokens", "12", "--n-ctx", "8192")
    out = say(child, str(clips[0]))  # a path alone: attached at once, no question asked
    assert "attached: clip0.wav (ask about it, or press Enter to send it alone)" in out
    first = say(child, "What is this sound?")
    prompt1, reused1 = stats(child)
    assert reused1 == 0
    retried = say(child, "/retry")
    assert retried.strip().splitlines()[-1] == first.strip().splitlines()[-1]  # greedy
    # a long answer, stopped with Ctrl+C; the session goes on. The tiny model is random:
    # greedy on this conversation, "Talk for a long time." ends within a second, but
    # "Repeat this forever: la la la" runs until the context is full (about 30 s, with and
    # without AMX kernels), so Ctrl+C always lands mid-answer
    say(child, "/set max_tokens 200000")
    child.sendline("Repeat this forever: la la la")
    child.expect(r"\S{20}")  # some of the answer has arrived
    child.sendcontrol("c")
    child.expect(r"\[stopped\]")
    child.expect(">>> ")
    say(child, "/set max_tokens 12")
    say(child, "/audio " + str(clips[1]))
    say(child, "And this one?")
    prompt3, reused3 = stats(child)
    assert reused3 > prompt1  # turn 3 reused turns 1 and 2 ...
    # ... and computed only its own clip and text (the chat markup and ~5 words)
    assert prompt3 - reused3 <= _tokens(clips[1]) + 30 < prompt3 // 2
    saved = tmp_path / "talk.json"
    assert "saved to" in say(child, f"/save {saved}")
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    # a new process: load, continue
    child = spawn_chat(tiny_gguf, "--max-tokens", "12", "--n-ctx", "8192")
    out = say(child, f"/load {saved}")
    assert "loaded 3 turn(s)" in out  # what is this, the long talk (stopped), and this one
    say(child, "Thanks. Once more?")
    prompt4, _ = stats(child)
    assert prompt4 > prompt3
    out = say(child, "/bye", until=pexpect.EOF)
    assert "Traceback" not in out
    # the clip changes: the conversation is refused, the session stays up
    sf.write(clips[1], tone(1.6, 521), 16000)
    child = spawn_chat(tiny_gguf)
    out = say(child, f"/load {saved}")
    assert "has changed since" in out and "Traceback" not in out
    say(child, "/bye", until=pexpect.EOF)


def test_the_chat_warns_before_the_context_is_full(tiny_gguf: Pair) -> None:
    child = spawn_chat(tiny_gguf, "--max-tokens", "40", "--n-ctx", "256")
    seen = ""
    for i in range(6):
        seen += say(child, f"Question {i}, go on please.")
    assert "the context is" in seen and "% full" in seen
    assert "dropped the" in seen  # and the oldest turns made room
    assert "Traceback" not in seen
    out = say(child, "/help")
    assert "/audio PATH" in out and "/retry" in out
    out = say(child, "/nonsense")
    assert "unknown command /nonsense" in out
    child.sendcontrol("d")
    child.expect(pexpect.EOF)


def test_chat_help_has_examples() -> None:
    from click.testing import CliRunner

    from qaudio_local.cli import main

    out = CliRunner().invoke(main, ["chat", "--help"]).output
    assert "Examples:" in out and "qaudio chat meeting.wav" in out
