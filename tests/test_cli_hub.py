"""``qaudio pull / list / rm / verify`` end to end: registry -> planner -> fake hub -> disk.

The registry gets a ``tiny`` model through ``$QAUDIO_HOME/models.toml`` whose files are the
tiny model's real GGUF pair, served by the fake hub; the machine is a fixed CPU-only one.
"""

from __future__ import annotations

import shutil

import pytest

from qaudio_local import paths
from qaudio_local.models import store
from qaudio_local.models.manifest import read_manifest
from tests.support.cli import invoke
from tests.support.fakehub import (  # noqa: F401  (fixtures)
    MMPROJ,
    REPO,
    TEXT,
    FakeHub,
    fake_hub_fixture,
    loopback_only_fixture,
)
from tests.support.tiny_registry import GONE, Q8, cli_hub_fixture, registry  # noqa: F401  (fixture)


def models() -> str:
    return str(paths.models_dir() / "tiny--Tiny-Qwen2-Audio-GGUF")


# --- pull ----------------------------------------------------------------------------------------


def test_pull_without_a_quant_gets_the_planned_quant_and_projector(cli_hub: FakeHub) -> None:
    r = invoke("pull", "tiny")
    assert r.exit_code == 0, r.stderr
    assert "tiny:F32 with projector f32: ready (qwen2" in r.stdout
    assert f"{models()}/{TEXT}" in r.stdout and f"{models()}/{MMPROJ}" in r.stdout
    assert "downloaded" in r.stdout and TEXT in r.stderr  # the progress bar's label
    assert set(read_manifest()) == {(REPO, TEXT), (REPO, MMPROJ)}

    cli_hub.reset_log()
    again = invoke("pull", "tiny:f32")
    assert again.exit_code == 0 and "already up to date" in again.stdout
    assert cli_hub.requests("GET") == []


def test_pull_with_a_quant_option(cli_hub: FakeHub) -> None:
    r = invoke("pull", "tiny", "--quant", "Q8_0")
    assert r.exit_code == 0, r.stderr
    assert "tiny:Q8_0 with projector f32: ready" in r.stdout
    assert (paths.models_dir() / "tiny--Tiny-Qwen2-Audio-GGUF" / Q8).is_file()


def test_pull_of_a_file_missing_upstream_names_repo_and_file(cli_hub: FakeHub) -> None:
    r = invoke("pull", "tiny:Q4_K_M")
    assert r.exit_code == 1
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: ") and REPO in line and GONE in line
    assert cli_hub.requests("GET") == []


def test_pull_offline_names_the_command_and_makes_no_request(
    cli_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QAUDIO_OFFLINE", "1")
    r = invoke("pull", "tiny:F32")
    assert r.exit_code == 1
    assert "run `qaudio pull tiny:F32` while online" in r.stderr
    assert cli_hub.requests() == []


def test_pull_on_a_full_disk_says_how_much_is_needed(
    cli_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 5))
    r = invoke("pull", "tiny:F32")
    assert r.exit_code == 1 and "not enough disk space" in r.stderr and "5 B free" in r.stderr
    assert cli_hub.requests("GET") == []


def test_unknown_model_lists_the_choices(cli_hub: FakeHub) -> None:
    r = invoke("pull", "nope")
    assert r.exit_code == 2 and "tiny" in r.stderr


# --- list ----------------------------------------------------------------------------------------


def test_list_shows_pulled_available_and_incomplete(cli_hub: FakeHub) -> None:
    assert invoke("pull", "tiny:F32").exit_code == 0
    cli_hub.interrupt(at=100_000)
    assert invoke("pull", "tiny:Q8_0").exit_code == 1  # interrupted: a partial file stays
    r = invoke("list")
    assert r.exit_code == 0, r.stderr
    rows = {ln.split()[0]: ln for ln in r.stdout.splitlines() if ln.startswith("  ")}
    assert "pulled, verified 20" in rows["F32"] and "pulled, verified" in rows["f32"]
    assert "incomplete (100.0 kB of" in rows["Q8_0"]
    assert rows["Q4_K_M"].endswith("available")
    assert "qwen2-audio-7b-instruct" in r.stdout  # the packaged model too
    assert "2 file(s) pulled" in r.stdout


def test_list_flags_a_damaged_file_and_files_the_registry_forgot(cli_hub: FakeHub) -> None:
    assert invoke("pull", "tiny:F32").exit_code == 0
    (paths.qaudio_home() / "models.toml").unlink()  # "tiny" leaves the registry
    r = invoke("list")
    assert "no longer in the registry" in r.stdout and TEXT in r.stdout
    (paths.qaudio_home() / "models.toml").write_text(registry(cli_hub), encoding="utf-8")
    (paths.models_dir() / "tiny--Tiny-Qwen2-Audio-GGUF" / TEXT).write_bytes(b"GGUF")
    rows = {ln.split()[0]: ln for ln in invoke("list").stdout.splitlines() if ln.startswith("  ")}
    assert "damaged or deleted; run `qaudio verify`" in rows["F32"]


def test_conflicting_quants_are_a_usage_error(cli_hub: FakeHub) -> None:
    r = invoke("pull", "tiny:F32", "--quant", "Q8_0")
    assert r.exit_code == 2 and "pick one" in r.stderr
    assert cli_hub.requests() == []


# --- verify --------------------------------------------------------------------------------------


def test_verify_reports_ok_then_corrupt_with_the_fix_offline(
    cli_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert invoke("pull", "tiny:F32").exit_code == 0
    monkeypatch.setenv("QAUDIO_OFFLINE", "1")
    cli_hub.reset_log()
    ok = invoke("verify")
    assert ok.exit_code == 0, ok.stdout
    assert [ln.split()[0] for ln in ok.stdout.splitlines()] == ["OK", "OK"]

    path = paths.models_dir() / "tiny--Tiny-Qwen2-Audio-GGUF" / TEXT
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    bad = invoke("verify", "tiny")
    assert bad.exit_code == 1
    lines = {ln.split()[0]: ln for ln in bad.stdout.splitlines()}
    assert "sha256 does not match; deleted; run `qaudio pull tiny:F32`" in lines["CORRUPT"]
    assert "OK" in lines and not path.exists()
    assert cli_hub.requests() == []


def test_verify_with_nothing_pulled(cli_hub: FakeHub) -> None:
    r = invoke("verify")
    assert r.exit_code == 0 and "nothing pulled yet" in r.stdout


# --- rm ------------------------------------------------------------------------------------------


def test_rm_frees_space_and_keeps_the_projector_while_a_quant_needs_it(cli_hub: FakeHub) -> None:
    assert invoke("pull", "tiny:F32").exit_code == 0
    assert invoke("pull", "tiny:Q8_0").exit_code == 0
    size = len(cli_hub.repos[REPO][TEXT].data)

    r = invoke("rm", "tiny:F32")
    assert r.exit_code == 0 and f"removed tiny:F32: freed {size / 1e6:.1f} MB" in r.stdout
    assert set(read_manifest()) == {(REPO, Q8), (REPO, MMPROJ)}

    r = invoke("rm", "tiny", "--quant", "Q8_0")  # the last quant: the projector goes too
    assert r.exit_code == 0 and "freed" in r.stdout
    assert read_manifest() == {} and not paths.models_dir().joinpath(models()).exists()
    assert "nothing to remove" in invoke("rm", "tiny").stdout


def test_rm_of_a_local_file_entry_never_deletes_it(
    cli_hub: FakeHub, tiny_gguf: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = paths.qaudio_home() / "mine.toml"
    extra.write_text(
        f'[models.tiny]\n[[models.tiny.quants]]\nname = "F32"\npath = "{tiny_gguf[0]}"\n'
        "bits_per_weight = 32\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("QAUDIO_MODELS", str(extra))
    r = invoke("rm", "tiny:F32")
    assert r.exit_code == 0 and tiny_gguf[0].exists()


def test_pull_uses_a_local_file_entry_as_is(
    cli_hub: FakeHub, tiny_gguf: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = paths.qaudio_home() / "mine.toml"
    extra.write_text(
        f'[models.tiny]\n[[models.tiny.quants]]\nname = "F32"\npath = "{tiny_gguf[0]}"\n'
        "bits_per_weight = 32\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("QAUDIO_MODELS", str(extra))
    r = invoke("pull", "tiny:F32")
    assert r.exit_code == 0, r.stderr
    assert f"model:  {tiny_gguf[0]}" in r.stdout
    assert [g.path.rsplit("/", 1)[-1] for g in cli_hub.requests("GET")] == [MMPROJ]


def test_ram_override_reaches_the_planner(cli_hub: FakeHub) -> None:
    # with 5 MB of RAM nothing fits: the planner falls back to the smallest quant, with a note
    # (here Q4_K_M, which is missing upstream)
    r = invoke("pull", "tiny", "--ram", "0.005")
    assert r.exit_code == 1
    assert "note:" in r.stderr and GONE in r.stderr.splitlines()[-1]
