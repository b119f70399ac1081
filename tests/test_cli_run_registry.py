"""``qaudio run AUDIO`` with no model files: plan, pull once, then run offline.

Uses the ``tiny`` registry entry and fake hub of ``tests.support.tiny_registry`` (a fixed
CPU-only 16 GiB machine; the tiny model's real GGUF pair served on 127.0.0.1).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qaudio_local.models.manifest import read_manifest
from tests.support.cli import invoke
from tests.support.fakehub import (  # noqa: F401  (fixtures)
    MMPROJ,
    REPO,
    TEXT,
    FakeHub,
    fake_hub_fixture,
    hf_cache_copy,
    loopback_only_fixture,
)
from tests.support.tiny_registry import cli_hub_fixture  # noqa: F401  (fixture)

EXAMPLE = str(Path(__file__).resolve().parent.parent / "examples" / "tone_chirp.wav")
RUN = ("run", EXAMPLE, "--model", "tiny", "--max-tokens", "4", "--n-ctx", "1024", "--json")


def test_first_run_pulls_then_runs_offline(
    cli_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = invoke(*RUN)
    assert first.exit_code == 0, first.stderr
    data = json.loads(first.stdout)
    assert data["usage"]["audio_tokens"] == 75 and data["usage"]["completion_tokens"] == 4
    assert set(read_manifest()) == {(REPO, TEXT), (REPO, MMPROJ)}  # pulled and recorded
    assert "using tiny:F32: all layers on the CPU" in first.stderr
    assert cli_hub.requests("GET")

    cli_hub.reset_log()
    for var in ("QAUDIO_OFFLINE", "HF_HUB_OFFLINE"):
        with monkeypatch.context() as m:
            m.setenv(var, "1")
            again = invoke(*RUN)
        assert again.exit_code == 0, again.stderr
        assert json.loads(again.stdout)["text"] == data["text"]  # greedy: the same answer
    online_again = invoke(*RUN)  # already pulled: no request even online
    assert online_again.exit_code == 0
    assert cli_hub.requests() == []


def test_quant_option_picks_the_file(cli_hub: FakeHub) -> None:
    r = invoke(*RUN, "--quant", "Q8_0")
    assert r.exit_code == 0, r.stderr
    assert (REPO, "Tiny-Qwen2-Audio.Q8_0.gguf") in read_manifest()
    assert (REPO, TEXT) not in read_manifest()


def test_offline_without_a_pull_names_the_command(
    cli_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QAUDIO_OFFLINE", "1")
    r = invoke(*RUN)
    assert r.exit_code == 1
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: ") and "qaudio pull tiny:F32" in line
    assert cli_hub.requests() == []


def test_a_quant_that_does_not_fit_is_refused_unless_forced(cli_hub: FakeHub) -> None:
    r = invoke(*RUN, "--quant", "F32", "--ram", "0.01")
    assert r.exit_code == 2
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: ") and "F32 does not fit" in line and "--force" in line
    assert "needs 576 MiB of RAM but 10 MiB is available" in line  # both numbers
    assert cli_hub.requests("GET") == []  # refused before any download
    forced = invoke(*RUN, "--quant", "F32", "--ram", "0.01", "--force")
    assert forced.exit_code == 0, forced.stderr
    assert "note:" in forced.stderr


def test_files_in_the_hf_cache_are_used_not_downloaded(cli_hub: FakeHub) -> None:
    """As llama.cpp's -hf or huggingface-cli leave them: run with zero bytes downloaded,
    listed where they live, and rm forgets them without deleting them."""
    snaps = [hf_cache_copy(cli_hub, name) for name in (TEXT, MMPROJ)]
    cli_hub.reset_log()
    r = invoke(*RUN)
    assert r.exit_code == 0, r.stderr
    assert cli_hub.requests("GET") == []  # verified with a HEAD each, nothing downloaded
    listing = invoke("list").stdout
    assert f"in the Hugging Face cache: {snaps[0]}" in listing
    removed = invoke("rm", "tiny")
    assert removed.exit_code == 0 and "stays in the Hugging Face cache" in removed.stdout
    assert all(s.is_file() for s in snaps)
