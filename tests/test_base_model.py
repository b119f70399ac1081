"""The base model (Qwen2-Audio-7B, not -Instruct): its prompt format is read from the GGUF
or the registry, transcription uses its task prompts, and chat refuses it clearly.

The tiny checkpoint is built base-shaped (no chat template) and converted; parity with the
official processor is in tests/test_parity.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import qaudio_local as qa
from qaudio_dev import gguf_edit as ge
from qaudio_local.config import BASE_DEFAULT_PROMPT
from qaudio_local.engine.gguf import check_text_model
from qaudio_local.errors import OptionError
from qaudio_local.transcription.base_prompts import (
    ASR,
    TRANSLATE,
    base_instruction,
    language_tag,
    split_language_tag,
)
from tests.support.audio import tone

Pair = tuple[Path, Path]


@pytest.fixture(scope="module")
def base_gguf(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    from qaudio_local.convert import convert_checkpoint
    from qaudio_local.convert.tiny import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("base")
    ckpt = make_tiny_checkpoint(root / "tiny-qwen2-audio-base", base=True)
    res = convert_checkpoint(ckpt, root / "gguf", outtype="f32")
    return res.model_path, res.mmproj_path


STR = ge.VT.STRING


@pytest.mark.parametrize(
    ("kv", "drop", "expected"),
    [
        ({}, (), "chat"),  # the tiny Instruct-shaped model: its chat template
        ({}, ("tokenizer.chat_template",), "base"),  # no template: cannot chat
        ({"general.name": ("Qwen2-Audio-7B", STR, None)}, (), "base"),
        ({"general.name": ("Qwen2 Audio 7B", STR, None)}, (), "base"),
        ({"general.name": ("Qwen2 Audio 7B Instruct", STR, None)}, (), "chat"),
        (
            {
                "general.name": ("x", STR, None),
                "general.basename": ("Qwen2-Audio", STR, None),
                "general.size_label": ("7B", STR, None),
            },
            (),
            "base",
        ),
        (
            {
                "general.name": ("Qwen2-Audio-7B", STR, None),
                "general.finetune": ("Instruct", STR, None),
            },
            (),
            "chat",
        ),
        ({"general.name": ("my-qwen2-audio-finetune", STR, None)}, (), "chat"),
    ],
    ids=["tiny", "no-template", "name", "spaced", "instruct", "basename", "finetune", "other"],
)
def test_the_prompt_format_is_read_from_the_gguf(
    tiny_gguf: Pair, tmp_path: Path, kv: dict, drop: tuple, expected: str
) -> None:
    edited = ge.rewrite(tiny_gguf[0], tmp_path / "t.gguf", kv=kv, drop=drop)
    assert check_text_model(edited).prompt_format == expected


def test_the_base_model_runs_its_own_prompt(base_gguf: Pair) -> None:
    with qa.load_model(model_file=base_gguf[0], mmproj_file=base_gguf[1], n_ctx=1024) as m:
        assert m.prompt_format == "base"
        clip = tone(1.0)
        # no system turn, no chat markup: the audio (25 tokens + bos/eos), then the task
        n_task = len(m.tokenize(BASE_DEFAULT_PROMPT))
        assert m.prompt_tokens(None, [clip]) == 25 + 2 + n_task
        assert m.generate(None, [clip], sampling=qa.SamplingOptions(max_tokens=3)).tokens
        with pytest.raises(OptionError, match="not a chat model"):
            m.generate(messages=[qa.Message("system", ("Be brief.",)), qa.user(clip, "Hi")])
        with pytest.raises(OptionError, match="does not chat"):
            qa.Conversation(m)


def test_the_registry_names_the_format(
    tiny_gguf: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry entry's `prompt` decides, whatever the file's own metadata says."""
    toml = tmp_path / "models.toml"
    toml.write_text(
        "[models.tiny-base]\n"
        'description = "the tiny chat-shaped pair, prompted as the base model"\n'
        'prompt = "base"\n'
        "[models.tiny-base.dims]\n"
        "n_layers = 2\nhidden_size = 256\nn_heads = 4\nn_kv_heads = 4\n"
        "max_context = 8192\nvocab_size = 768\n"
        "[[models.tiny-base.quants]]\n"
        f'name = "F32"\npath = "{tiny_gguf[0]}"\nbits_per_weight = 32.0\n'
        "[[models.tiny-base.projectors]]\n"
        f'name = "f32"\npath = "{tiny_gguf[1]}"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("QAUDIO_MODELS", str(toml))
    with qa.load_model("tiny-base", n_ctx=1024, ram_gb=16) as m:
        assert m.model_info.prompt_format == "chat" and m.prompt_format == "base"


def test_task_prompts_and_language_tags() -> None:
    assert base_instruction("transcribe", None, "english") == ASR + "<|en|>"
    assert base_instruction("transcribe", None, "unknown") == ASR
    assert base_instruction("transcribe", None, "de") == ASR + "<|de|>"
    assert base_instruction("translate", None, "german") == TRANSLATE
    assert (
        base_instruction("transcribe", "Describe the sounds.", "english") == "Describe the sounds."
    )
    assert language_tag("klingon") == ""
    assert split_language_tag("<|en|>Hello there") == ("english", "Hello there")
    assert split_language_tag(" <|zh|> 你好") == ("chinese", "你好")
    assert split_language_tag("no tag") == (None, "no tag")
    opts = qa.TranscribeOptions(language="english")
    assert opts.instruction("english", base=True) == ASR + "<|en|>"
    assert opts.instruction("english").startswith("Transcribe the speech")


def test_transcribe_and_chat_on_the_command_line(base_gguf: Pair, tmp_path: Path) -> None:
    import soundfile as sf

    clip = tmp_path / "c.wav"
    sf.write(clip, np.concatenate([tone(2.0), np.zeros(16000, np.float32)]), 16000)
    files = ["--model-file", str(base_gguf[0]), "--mmproj-file", str(base_gguf[1])]
    cmd = [sys.executable, "-m", "qaudio_local"]
    tr = subprocess.run(
        [*cmd, "transcribe", str(clip), *files, "--vad", "energy", "--language", "english",
         "--max-tokens", "3", "-o", "json", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert tr.returncode == 0, tr.stderr
    assert (tmp_path / "c.json").is_file()
    chat = subprocess.run(
        [*cmd, "chat", *files], input="hi\n", capture_output=True, text=True, timeout=120
    )
    assert chat.returncode == 2
    (line,) = [ln for ln in chat.stderr.splitlines() if ln.startswith("error:")]
    assert "does not chat" in line and "qwen2-audio-7b-instruct" in line
