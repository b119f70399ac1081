"""Downloads against a local fake hub serving the tiny model's real GGUF files.

Covers: full pull, resume after a dropped connection and after an interrupted pull, flipped
bytes, missing file / repo / revision, a full disk (before and during), offline mode, an
unreachable hub, verification on disk, removal and the manifest's atomic updates.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from pathlib import Path

import pytest

from qaudio_local import paths
from qaudio_local.errors import (
    DiskFullError,
    HubUnreachableError,
    IntegrityError,
    OfflineModelMissingError,
    QAudioError,
    RemoteFileNotFoundError,
)
from qaudio_local.models import hub, store
from qaudio_local.models.catalog import HubFile
from qaudio_local.models.manifest import ManifestRecord, read_manifest, update_manifest
from tests.support.fakehub import (  # noqa: F401  (fixtures)
    MMPROJ,
    REPO,
    TEXT,
    FakeHub,
    closed_port,
    fake_hub_fixture,
    hf_cache_copy,
    loopback_only_fixture,
    silent_port,
)


def text_file(fake: FakeHub, **kw: object) -> HubFile:
    return HubFile(REPO, TEXT, len(fake.repos[REPO][TEXT].data), **kw)  # type: ignore[arg-type]


def both(fake: FakeHub) -> list[HubFile]:
    return [text_file(fake), HubFile(REPO, MMPROJ, len(fake.repos[REPO][MMPROJ].data))]


def final(name: str = TEXT) -> Path:
    return paths.models_dir() / "tiny--Tiny-Qwen2-Audio-GGUF" / name


def leftovers() -> list[Path]:
    folder = paths.models_dir() / "tiny--Tiny-Qwen2-Audio-GGUF" / ".incomplete"
    return sorted(folder.glob("*.part")) if folder.is_dir() else []


# --- full pull -----------------------------------------------------------------------------------


def test_full_pull_writes_verified_files_and_records_them(fake_hub: FakeHub) -> None:
    events: list[hub.Progress] = []
    got = hub.pull(both(fake_hub), progress=events.append)

    for lf, name in zip(got, (TEXT, MMPROJ), strict=True):
        served = fake_hub.repos[REPO][name]
        assert lf.path == final(name)
        assert lf.path.read_bytes() == served.data
        assert lf.sha256 == served.sha256 and lf.size == len(served.data)
        assert lf.commit == fake_hub.commits[REPO]
        assert lf.transferred == len(served.data)
    records = read_manifest()
    rec = records[(REPO, TEXT)]
    assert rec.sha256 == fake_hub.repos[REPO][TEXT].sha256
    assert rec.commit == fake_hub.commits[REPO] and rec.revision == "main"
    assert rec.downloaded_at.endswith("Z") and rec.verified_at
    raw = json.loads(paths.manifest_path().read_text())
    assert raw["version"] == 1 and len(raw["files"]) == 2
    assert leftovers() == []

    text_events = [e.done for e in events if e.file.filename == TEXT]
    assert text_events[0] == 0 and text_events[-1] == len(fake_hub.repos[REPO][TEXT].data)
    assert text_events == sorted(text_events) and len(text_events) > 2
    assert hub.local_path(text_file(fake_hub)) == final()


def test_pull_again_asks_the_hub_but_downloads_nothing(fake_hub: FakeHub) -> None:
    hub.pull(both(fake_hub))
    fake_hub.reset_log()
    got = hub.pull(both(fake_hub))
    assert [lf.transferred for lf in got] == [0, 0]
    assert fake_hub.requests("GET") == [] and len(fake_hub.requests("HEAD")) == 2


def test_ensure_makes_no_request_when_everything_is_present(fake_hub: FakeHub) -> None:
    hub.pull(both(fake_hub))
    fake_hub.reset_log()
    got = hub.ensure(both(fake_hub))
    assert [lf.path for lf in got] == [final(TEXT), final(MMPROJ)]
    assert fake_hub.requests() == []


def test_changed_upstream_file_is_downloaded_again(fake_hub: FakeHub) -> None:
    hub.pull([text_file(fake_hub)])
    new = fake_hub.add(REPO, TEXT, fake_hub.repos[REPO][TEXT].data + b"\0" * 64)
    (lf,) = hub.pull([HubFile(REPO, TEXT, len(new.data))])
    assert lf.sha256 == new.sha256 and final().read_bytes() == new.data
    assert read_manifest()[(REPO, TEXT)].sha256 == new.sha256


def test_pull_through_a_cdn_redirect_keeps_the_token_on_the_hub(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_hub.cdn = True
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 34)
    (lf,) = hub.pull([text_file(fake_hub)])
    assert lf.path.read_bytes() == fake_hub.repos[REPO][TEXT].data
    (head,) = fake_hub.requests("HEAD")
    (get,) = fake_hub.requests("GET")
    assert head.server == "hub" and "authorization" in {k.lower() for k in head.headers}
    assert get.server == "cdn" and "authorization" not in {k.lower() for k in get.headers}


def test_small_non_lfs_file_is_checked_against_its_git_blob_id(fake_hub: FakeHub) -> None:
    fake_hub.add(REPO, "README.md", b"# tiny\n", lfs=False)
    (lf,) = hub.pull([HubFile(REPO, "README.md", 7)])
    assert lf.path.read_bytes() == b"# tiny\n"
    fake_hub.corrupt(REPO, "README.md")
    hub.remove([HubFile(REPO, "README.md", 7)])
    with pytest.raises(IntegrityError):
        hub.pull([HubFile(REPO, "README.md", 7)])


# --- resume --------------------------------------------------------------------------------------


def test_dropped_connection_is_resumed_within_the_pull(fake_hub: FakeHub) -> None:
    size = len(fake_hub.repos[REPO][TEXT].data)
    fake_hub.interrupt(at=1_000_000, times=1)
    (lf,) = hub.pull([text_file(fake_hub)])
    assert lf.path.read_bytes() == fake_hub.repos[REPO][TEXT].data
    gets = fake_hub.requests("GET")
    assert [g.headers.get("Range") for g in gets] == [None, "bytes=1000000-"]
    assert fake_hub.body_bytes == size  # nothing was transferred twice


def test_interrupted_pull_is_resumed_by_the_next_one(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = fake_hub.repos[REPO][TEXT].data
    cut = 2_500_000
    monkeypatch.setattr(hub, "MAX_RETRIES", 1)
    fake_hub.interrupt(at=cut)  # every response stops at the same offset: the pull gives up
    with pytest.raises(HubUnreachableError, match="pull again to resume"):
        hub.pull([text_file(fake_hub)])
    assert not final().exists() and read_manifest() == {}
    (part,) = leftovers()
    assert part.read_bytes() == data[:cut]

    fake_hub.interrupt(at=None)
    fake_hub.reset_log()
    (lf,) = hub.pull([text_file(fake_hub)])
    (get,) = fake_hub.requests("GET")
    assert get.headers.get("Range") == f"bytes={cut}-" and get.status == 206
    assert fake_hub.body_bytes == len(data) - cut == lf.transferred
    assert final().read_bytes() == data and leftovers() == []
    assert read_manifest()[(REPO, TEXT)].sha256 == fake_hub.repos[REPO][TEXT].sha256


def test_ctrl_c_keeps_the_partial_download_for_the_next_pull(fake_hub: FakeHub) -> None:
    def stop(p: hub.Progress) -> None:
        if p.done >= 3_000_000:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hub.pull([text_file(fake_hub)], progress=stop)
    (part,) = leftovers()
    kept = part.stat().st_size
    assert kept >= 3_000_000 and not final().exists()

    fake_hub.reset_log()
    events: list[hub.Progress] = []
    hub.pull([text_file(fake_hub)], progress=events.append)
    assert events[0].done == kept  # the bar starts where the partial file ends
    assert fake_hub.requests("GET")[0].headers.get("Range") == f"bytes={kept}-"
    assert final().read_bytes() == fake_hub.repos[REPO][TEXT].data


# --- integrity -----------------------------------------------------------------------------------


def test_flipped_bytes_are_rejected_and_nothing_is_kept(fake_hub: FakeHub) -> None:
    fake_hub.corrupt(REPO, TEXT)
    with pytest.raises(IntegrityError) as info:
        hub.pull([text_file(fake_hub)], name_hint="tiny:F32")
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, QAudioError)
    assert err.expected == fake_hub.repos[REPO][TEXT].sha256 != err.actual
    assert "qaudio pull tiny:F32" in str(err)
    assert not final().exists() and leftovers() == [] and read_manifest() == {}
    assert hub.local_path(text_file(fake_hub)) is None


def test_a_pinned_digest_that_the_hub_does_not_serve_is_refused_before_downloading(
    fake_hub: FakeHub,
) -> None:
    with pytest.raises(IntegrityError, match="pins sha256"):
        hub.pull([text_file(fake_hub, sha256="0" * 64)])
    assert fake_hub.requests("GET") == []
    pinned = text_file(fake_hub, sha256=fake_hub.repos[REPO][TEXT].sha256)
    (lf,) = hub.pull([pinned])
    assert lf.path == final()


@pytest.mark.parametrize(
    ("repo", "name", "revision", "missing"),
    [
        (REPO, "Tiny-Qwen2-Audio.Q9_X.gguf", "main", "file"),
        ("tiny/No-Such-Repo", TEXT, "main", "repo"),
        (REPO, TEXT, "v9", "revision"),
    ],
)
def test_missing_upstream_is_reported_with_repo_and_file(
    fake_hub: FakeHub, repo: str, name: str, revision: str, missing: str
) -> None:
    with pytest.raises(RemoteFileNotFoundError) as info:
        hub.pull([text_file(fake_hub), HubFile(repo, name, 10, revision)])
    err = info.value
    assert isinstance(err, FileNotFoundError)
    assert (err.repo, err.path_in_repo, err.missing) == (repo, name, missing)
    assert repo in str(err) and name in str(err)
    assert fake_hub.requests("GET") == []  # checked before anything is downloaded


# --- disk space ----------------------------------------------------------------------------------


def test_full_disk_is_refused_before_any_download(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    monkeypatch.setattr(store.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1, 1, 1000))
    with pytest.raises(DiskFullError) as info:
        hub.pull(both(fake_hub))
    err = info.value
    total = sum(len(f.data) for f in fake_hub.repos[REPO].values())
    assert err.free == 1000 and err.needed == total + store.DISK_MARGIN
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC
    assert "need" in str(err) and "qaudio rm" in str(err)
    assert fake_hub.requests("GET") == []


def test_disk_filling_up_during_the_download_gives_the_space_back(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = store.write_all
    written = []

    def write(fh: object, data: bytes) -> None:
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(len(data))
        real(fh, data)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "write_all", write)
    with pytest.raises(DiskFullError, match="filled up while downloading"):
        hub.pull([text_file(fake_hub)])
    assert written and not final().exists() and leftovers() == [] and read_manifest() == {}


# --- offline and unreachable ---------------------------------------------------------------------


@pytest.mark.parametrize("switch", ["QAUDIO_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_returns_present_files_without_any_request(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch, switch: str
) -> None:
    hub.pull(both(fake_hub))
    fake_hub.reset_log()
    monkeypatch.setenv(switch, "1")
    assert [lf.path for lf in hub.pull(both(fake_hub))] == [final(TEXT), final(MMPROJ)]
    assert [lf.path for lf in hub.ensure(both(fake_hub))] == [final(TEXT), final(MMPROJ)]
    assert fake_hub.requests() == []


@pytest.mark.parametrize("switch", ["QAUDIO_OFFLINE", "HF_HUB_OFFLINE", None])
def test_offline_missing_file_names_the_pull_command(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch, switch: str | None
) -> None:
    if switch:
        monkeypatch.setenv(switch, "1")
    with pytest.raises(OfflineModelMissingError) as info:
        hub.ensure(both(fake_hub), name_hint="tiny:F32", offline=None if switch else True)
    err = info.value
    assert isinstance(err, FileNotFoundError)
    assert err.command == "qaudio pull tiny:F32"
    assert "`qaudio pull tiny:F32` while online" in str(err)
    assert fake_hub.requests() == []


def test_unreachable_hub_fails_fast_but_pulled_files_still_work(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.pull([text_file(fake_hub)])
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    t0 = time.monotonic()
    with pytest.raises(HubUnreachableError) as info:
        hub.pull(both(fake_hub))
    assert time.monotonic() - t0 < 5
    assert isinstance(info.value, ConnectionError) and "qaudio list" in str(info.value)
    (lf,) = hub.ensure([text_file(fake_hub)])
    assert lf.path == final()
    with pytest.raises(HubUnreachableError):
        hub.ensure(both(fake_hub))  # the projector is missing and the hub is down


def test_a_hung_hub_times_out_after_hf_hub_etag_timeout(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "0.5")
    with silent_port() as port:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
        t0 = time.monotonic()
        with pytest.raises(HubUnreachableError, match="timed out"):
            hub.pull([text_file(fake_hub)])
        assert time.monotonic() - t0 < 3


# --- the local store -----------------------------------------------------------------------------


def test_verify_finds_a_file_corrupted_on_disk_while_offline(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.pull(both(fake_hub))
    monkeypatch.setenv("QAUDIO_OFFLINE", "1")
    fake_hub.reset_log()
    assert [r.status for r in hub.verify()] == ["ok", "ok"]
    data = bytearray(final().read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only hashing can tell
    final().write_bytes(bytes(data))
    assert hub.local_path(text_file(fake_hub)) == final()  # cheap check cannot see it
    results = {r.file.filename: r for r in hub.verify(both(fake_hub))}
    assert results[MMPROJ].ok
    bad = results[TEXT]
    assert bad.status == "corrupt" and bad.removed
    assert bad.actual_sha256 != bad.file.sha256
    assert not final().exists() and (REPO, TEXT) not in read_manifest()
    assert hub.local_path(text_file(fake_hub)) is None
    assert fake_hub.requests() == []


def test_truncated_file_is_never_returned(fake_hub: FakeHub) -> None:
    hub.pull([text_file(fake_hub)])
    with final().open("r+b") as fh:
        fh.truncate(1000)
    assert hub.local_path(text_file(fake_hub)) is None
    (lf,) = hub.ensure([text_file(fake_hub)])  # downloads it again
    assert lf.path.read_bytes() == fake_hub.repos[REPO][TEXT].data


def test_an_unrecorded_exact_copy_is_adopted_without_downloading(fake_hub: FakeHub) -> None:
    hub.pull([text_file(fake_hub)])
    paths.manifest_path().unlink()
    assert hub.local_path(text_file(fake_hub)) is None
    fake_hub.reset_log()
    (lf,) = hub.pull([text_file(fake_hub)])
    assert lf.transferred == 0 and fake_hub.requests("GET") == []
    assert hub.local_path(text_file(fake_hub)) == final()


def test_remove_frees_files_partials_and_records(fake_hub: FakeHub) -> None:
    files = both(fake_hub)
    hub.pull(files[:1])
    fake_hub.interrupt(at=100_000)
    with pytest.raises(HubUnreachableError):
        hub.pull(files[1:])
    partial = leftovers()[0].stat().st_size
    freed = hub.remove(files)
    assert freed == len(fake_hub.repos[REPO][TEXT].data) + partial
    assert hub.list_local() == []
    assert not (paths.models_dir() / "tiny--Tiny-Qwen2-Audio-GGUF").exists()
    assert hub.remove(files) == 0


def test_list_local_reports_records(fake_hub: FakeHub) -> None:
    hub.pull(both(fake_hub))
    keys = [(r.repo, r.filename) for r in hub.list_local()]
    assert keys == sorted([(REPO, MMPROJ), (REPO, TEXT)])


# --- the manifest --------------------------------------------------------------------------------


def _rec(i: int) -> ManifestRecord:
    return ManifestRecord("o/r", f"f{i}.gguf", "main", None, i, f"{i:064x}", "t", "t")


def test_concurrent_manifest_updates_lose_nothing() -> None:
    threads = [threading.Thread(target=update_manifest, args=([_rec(i)],)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.size for r in read_manifest().values()) == list(range(16))
    leftover = [p.name for p in paths.qaudio_home().iterdir() if p.suffix == ".tmp"]
    assert leftover == []


def test_a_failed_manifest_write_keeps_the_old_manifest(monkeypatch: pytest.MonkeyPatch) -> None:

    update_manifest([_rec(1)])
    before = paths.manifest_path().read_bytes()

    def broken(src: object, dst: object) -> None:
        raise OSError(errno.EIO, "I/O error")

    with monkeypatch.context() as m:
        m.setattr(os, "replace", broken)
        with pytest.raises(OSError):
            update_manifest([_rec(2)])
    assert paths.manifest_path().read_bytes() == before
    assert [p.name for p in paths.qaudio_home().iterdir() if p.suffix == ".tmp"] == []


def test_an_unreadable_manifest_trusts_nothing() -> None:
    paths.manifest_path().parent.mkdir(parents=True, exist_ok=True)
    paths.manifest_path().write_text("{not json")
    assert read_manifest() == {} and hub.list_local() == []


def test_default_home_is_the_platform_data_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QAUDIO_HOME")
    assert paths.qaudio_home().name == "qaudio-local"
    monkeypatch.setenv("QAUDIO_HOME", "~/elsewhere")
    assert paths.qaudio_home() == Path("~/elsewhere").expanduser()
    assert paths.file_path("a/b", "sub/f.gguf") == paths.qaudio_home() / "models/a--b/sub/f.gguf"


# --- files already in the Hugging Face cache ----------------------------------------------------


@pytest.mark.parametrize("offline", [True, False])
def test_a_file_in_the_hf_cache_is_used_in_place(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch, offline: bool
) -> None:
    snap = hf_cache_copy(fake_hub)
    fake_hub.reset_log()
    (lf,) = hub.ensure([text_file(fake_hub)], offline=offline)
    assert lf.path == snap and lf.transferred == 0
    assert lf.sha256 == fake_hub.repos[REPO][TEXT].sha256
    assert not final().exists()  # nothing copied into the store
    assert fake_hub.requests("GET") == []  # not downloaded (online: a HEAD to verify)
    assert bool(fake_hub.requests("HEAD")) is not offline
    rec = read_manifest()[(REPO, TEXT)]
    assert rec.location == str(snap) and rec.path == snap
    assert store.verify([text_file(fake_hub)])[0].ok
    fake_hub.reset_log()
    assert hub.ensure([text_file(fake_hub)])[0].path == snap  # recorded: no network at all
    assert fake_hub.requests() == []
    assert hub.remove([text_file(fake_hub)]) == 0 and snap.is_file()  # never deleted there


def test_a_damaged_hf_cache_copy_is_not_used(fake_hub: FakeHub) -> None:
    data = bytearray(fake_hub.repos[REPO][TEXT].data)
    data[100] ^= 0xFF
    hf_cache_copy(fake_hub, data=bytes(data))
    with pytest.raises(OfflineModelMissingError):
        hub.ensure([text_file(fake_hub)], offline=True)
    (lf,) = hub.ensure([text_file(fake_hub)], offline=False)  # downloaded into the store
    assert lf.path == final() and lf.transferred == len(data)
