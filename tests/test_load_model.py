"""The library's one entry point, ``qaudio_local.load_model``, and the server's ``run``.

A library user needs only the names ``qaudio_local`` exports: load the registry model
(planned and pulled from a fake hub on 127.0.0.1), transcribe a file, hold a conversation.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

import qaudio_local as qa
from qaudio_local.errors import ModelFileNotFoundError, OptionError
from qaudio_local.models.load import CTX_PER_SEQUENCE, DEFAULT_N_CTX, context_for
from qaudio_local.models.manifest import read_manifest
from tests.support.fakehub import (  # noqa: F401  (fixtures)
    REPO,
    TEXT,
    FakeHub,
    fake_hub_fixture,
    loopback_only_fixture,
)
from tests.support.tiny_registry import cli_hub_fixture  # noqa: F401  (fixture)

EXAMPLE = str(Path(__file__).resolve().parent.parent / "examples" / "tone_chirp.wav")
Pair = tuple[Path, Path]


def test_a_library_user_needs_only_the_root_names(cli_hub: FakeHub) -> None:
    said = []
    with qa.load_model("tiny", n_ctx=2048, on_resolved=said.append) as model:
        assert isinstance(model, qa.AudioModel)
        assert [r.spec for r in said] == ["tiny:F32"]  # planned, then pulled
        assert (REPO, TEXT) in read_manifest()
        options = qa.TranscribeOptions(vad="energy", sampling=qa.SamplingOptions(max_tokens=4))
        segments = list(qa.transcribe(model, EXAMPLE, options))
        assert segments and all(isinstance(s, qa.Segment) for s in segments)
        assert segments[0].start >= 0 and segments[-1].end <= 3.01
        conv = qa.Conversation(model, sampling=qa.SamplingOptions(max_tokens=3))
        conv.add("What is this?", [EXAMPLE])
        answer = conv.reply().wait()
        assert answer.usage.completion_tokens == 3 and answer.usage.audio_tokens == 75
        assert [t.role for t in conv.turns] == ["user", "assistant"]


def test_context_is_sized_once_for_every_surface() -> None:
    assert context_for(1) == DEFAULT_N_CTX
    assert context_for(8) == 8 * CTX_PER_SEQUENCE > DEFAULT_N_CTX
    assert context_for(8, 1024) == 1024  # given: exactly that
    assert CTX_PER_SEQUENCE >= 750 + 256  # a 30 s window, an instruction and an answer


def test_local_files_load_with_the_sizes_and_determinism_decided_here(tiny_gguf: Pair) -> None:
    text, mmproj = tiny_gguf
    with qa.load_model(model_file=text, mmproj_file=mmproj, parallel=6) as model:
        assert model.n_ctx >= context_for(6) and model.options.n_parallel == 6
        with pytest.raises(OptionError, match="deterministic=True"):
            qa.transcribe(model, EXAMPLE, qa.TranscribeOptions(deterministic=True))
    with qa.load_model(model_file=text, mmproj_file=mmproj, parallel=8, deterministic=True) as m:
        assert m.options.n_parallel == 1 and m.options.resolved_flash_attn == "off"
        opts = qa.TranscribeOptions(
            deterministic=True, vad="energy", sampling=qa.SamplingOptions(max_tokens=2)
        )
        assert list(qa.transcribe(m, EXAMPLE, opts))


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"model_file": "a.gguf"}, "--mmproj-file"),
        ({"mmproj_file": "b.gguf"}, "--model-file"),
        ({"model": "tiny", "model_file": "a.gguf", "mmproj_file": "b.gguf"}, "--model"),
        ({"kv_type": "f32"}, "--kv-type"),
    ],
)
def test_contradictory_sources_are_refused_before_anything_loads(kwargs: dict, option: str) -> None:
    with pytest.raises(OptionError) as err:
        qa.load_model(**kwargs)
    assert err.value.option == option


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_server_stops_and_raises_when_the_model_cannot_load(tmp_path: Path) -> None:
    from qaudio_local.server.run import ServerSettings, run

    def load() -> qa.AudioModel:
        time.sleep(0.3)  # the server is listening by now
        raise ModelFileNotFoundError(str(tmp_path / "missing.gguf"))

    loading: list[str] = []
    t0 = time.monotonic()
    settings = ServerSettings(port=_free_port(), model_id="m", log_level="error")
    with pytest.raises(ModelFileNotFoundError):
        run(settings, load, on_loading=loading.append)
    assert loading == ["m"] and time.monotonic() - t0 < 30


def test_served_names_follow_the_registry(tiny_gguf: Pair) -> None:
    from qaudio_local.server.run import model_names

    model_id, aliases = model_names()
    assert model_id == "qwen2-audio-7b-instruct" and "qwen2-audio" in aliases
    assert model_names("qwen2-audio:Q4_K_M")[0] == "qwen2-audio:Q4_K_M"
    file_id, file_aliases = model_names(model_file=tiny_gguf[0])
    assert file_id == tiny_gguf[0].name.removesuffix(".gguf") and file_aliases == aliases
