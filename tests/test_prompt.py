"""The Qwen2-Audio chat format, checked against the checkpoint's own Jinja template."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import numpy as np
import pytest

from qaudio_local import AudioModel, SamplingOptions, load_audio
from qaudio_local.engine.prompt import Message, render, user
from qaudio_local.errors import InvalidAudioError

MARK = "<__media__>"
AUDIO = "<|audio_bos|><|AUDIO|><|audio_eos|>"


def _hf_render(ckpt: Path, messages: list[dict]) -> str:
    template = json.loads((ckpt / "tokenizer_config.json").read_text())["chat_template"]
    env = jinja2.Environment(loader=jinja2.BaseLoader(), keep_trailing_newline=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True)


def _as_hf(text: str) -> str:
    return text.replace(MARK, AUDIO)


def test_single_audio_turn_exact_text() -> None:
    clip = np.zeros(16000, np.float32)
    got = render([user(clip, "What is said?")], MARK)
    assert got.text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\nAudio 1: {MARK}\nWhat is said?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert len(got.audios) == 1


@pytest.mark.parametrize(
    "conversation",
    [
        [("user", ["a", "Transcribe."])],
        [("user", ["a"])],  # voice chat: audio only
        [("user", ["a", "a", "Compare them."])],
        [("system", ["Be brief."]), ("user", ["a", "Who speaks?"])],
        [("user", ["a", "First?"]), ("assistant", ["A dog."]), ("user", ["a", "And this?"])],
        [("user", ["Just text."])],
    ],
)
def test_matches_the_checkpoint_template(tiny_checkpoint: Path, conversation) -> None:
    clip = np.zeros(8000, np.float32)
    ours = [
        Message(role, tuple(clip if p == "a" else p for p in parts)) for role, parts in conversation
    ]
    hf = [
        {"role": role, "content": [{"audio": "x.wav"} if p == "a" else {"text": p} for p in parts]}
        for role, parts in conversation
    ]
    got = render(ours, MARK)
    assert _as_hf(got.text) == _hf_render(tiny_checkpoint, hf)
    assert len(got.audios) == sum(p == "a" for _, parts in conversation for p in parts)


def test_audio_numbering_spans_turns() -> None:
    clip = np.zeros(10, np.float32)
    text = render([user(clip, "x"), Message("assistant", ("y",)), user(clip, clip)], MARK).text
    assert "Audio 1:" in text and "Audio 2:" in text and "Audio 3:" in text


def test_invalid_conversations() -> None:
    with pytest.raises(ValueError, match="user turn"):
        render([Message("system", ("hi",))], MARK)
    with pytest.raises(ValueError, match="role"):
        Message("robot", ("hi",))
    with pytest.raises(ValueError, match="user turns"):
        Message("assistant", (np.zeros(3, np.float32),))
    with pytest.raises(InvalidAudioError, match="a message part must be text"):
        Message("user", (3,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="marker"):
        render([user(f"sneaky {MARK}")], MARK)


@pytest.mark.parametrize(
    ("part", "why"),
    [
        ([0.1] * 1600, "a message part must be text"),
        (np.array(0.5, np.float32), "must be a 1-D float array"),
        (np.zeros(0, np.float32), "is empty"),
        (np.full(16000, 3.4e38, np.float32), "far beyond full scale"),
        (np.full(16000, np.nan, np.float32), "NaN or infinite"),
    ],
    ids=["list", "0-d", "empty", "huge", "nan"],
)
def test_audio_in_a_prompt_is_checked_as_every_audio_is(
    tiny_model: AudioModel, part: object, why: str
) -> None:
    """A clear error, never a TypeError or an answer to overflowed features; the same
    reason load_audio gives for the same array."""
    sampling = SamplingOptions(max_tokens=2)
    for call in (
        lambda: tiny_model.generate("hi", [part], sampling=sampling),  # type: ignore[list-item]
        lambda: tiny_model.generate(messages=[Message("user", ("hi", part))], sampling=sampling),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidAudioError, match=why):
            call()
    if isinstance(part, np.ndarray) and part.ndim == 1 and part.size:
        with pytest.raises(InvalidAudioError, match=why):
            load_audio(part, source_rate=16000)
