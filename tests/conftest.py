"""Shared fixtures: isolated user state, and the tiny Qwen2-Audio as real GGUF files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the whole run: the CPU-kernel probe runs once, not per test."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, _session_cache: Path
) -> None:
    """Point every user-state location into a temporary folder; forbid the network hub."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("QAUDIO_CACHE_DIR", str(_session_cache))
    monkeypatch.delenv("QAUDIO_CPU_KERNELS", raising=False)
    monkeypatch.delenv("QAUDIO_PROBE_INJECT_FAULT", raising=False)
    monkeypatch.setenv("QAUDIO_HOME", str(home / "qaudio"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.delenv("QAUDIO_DEBUG", raising=False)
    for name in ("QAUDIO_SERVER", "QAUDIO_SERVERS", "QAUDIO_API_KEY"):  # else the CLI goes remote
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic Qwen2-Audio checkpoint (Hugging Face layout, float32)."""
    from qaudio_local.convert.tiny import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-qwen2-audio")


@pytest.fixture(scope="session")
def tiny_gguf(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(text model, projector) GGUF pair converted from the tiny checkpoint, f32."""
    from qaudio_local.convert import convert_checkpoint

    res = convert_checkpoint(tiny_checkpoint, tmp_path_factory.mktemp("gguf"), outtype="f32")
    return res.model_path, res.mmproj_path


@pytest.fixture(scope="session")
def tiny_model(tiny_gguf: tuple[Path, Path]) -> Iterator[object]:
    """The tiny model loaded once through llama.cpp (CPU, 2048-token context, faithful audio)."""
    from qaudio_local.engine.model import AudioModel, ModelOptions

    with AudioModel(*tiny_gguf, ModelOptions(n_ctx=2048, n_threads=2)) as model:
        yield model


@pytest.fixture(scope="session")
def tiny_model_mtmd(tiny_gguf: tuple[Path, Path]) -> Iterator[object]:
    """The tiny model with llama.cpp's own (libmtmd) audio path."""
    from qaudio_local.engine.model import AudioModel, ModelOptions

    opts = ModelOptions(n_ctx=2048, n_threads=2, audio_path="mtmd")
    with AudioModel(*tiny_gguf, opts) as model:
        yield model


@pytest.fixture(params=["faithful", "mtmd"])
def any_model(request: pytest.FixtureRequest) -> object:
    """Each audio path in turn."""
    name = "tiny_model" if request.param == "faithful" else "tiny_model_mtmd"
    return request.getfixturevalue(name)
