"""The trial load (engine.gguf.loadcheck): what llama.cpp still aborts on becomes one error.

The files here are refused by the schema already, so the trial is called directly with the
facts a schema would have accepted: it shows that llama.cpp itself aborts on them (a
pytest process would die), and that the child turns that into a ModelFileError naming the
file, cached so the trial runs once per pair.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from qaudio_dev import gguf_edit as ge
from qaudio_local.engine.gguf import TextModelInfo, check_projector, check_text_model
from qaudio_local.engine.gguf import loadcheck as gguf_loadcheck
from qaudio_local.engine.model import AudioModel
from qaudio_local.engine.options import ModelOptions
from qaudio_local.errors import ModelFileError, RuntimeBackendError

Pair = tuple[Path, Path]
REPO = Path(__file__).resolve().parents[1]
OPTS = ModelOptions(n_ctx=512, n_threads=1)


def unchecked_facts(path: Path) -> TextModelInfo:
    """What the schema would report for the valid tiny model, for a file it refuses."""
    return TextModelInfo(path, "qwen2", 256, 2, 8192, 768, False, f"digest of {path.name}")


def fresh_pair(tiny_gguf: Pair, folder: Path) -> Pair:
    """Copies of the tiny pair: new paths, so no cached verdict applies."""
    folder.mkdir(parents=True, exist_ok=True)
    return shutil.copy(tiny_gguf[0], folder), shutil.copy(tiny_gguf[1], folder)  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("edit", "cause"),
    [
        ({"kv": {"qwen2.block_count": (0, ge.VT.UINT32, None)}}, "GGML_ASSERT(hparams.n_layer_all"),
        ({"tensors": ge.retype(lambda n: n == "output_norm.weight", ge.QT.F16)}, "unsupported"),
    ],
    ids=["block-count-0-at-load", "f16-norm-at-decode"],
)
def test_a_real_abort_in_llama_cpp_becomes_one_error_naming_the_file(
    tiny_gguf: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: dict, cause: str
) -> None:
    bad = ge.rewrite(tiny_gguf[0], tmp_path / "aborts.gguf", **edit)
    with pytest.raises(ModelFileError):
        check_text_model(bad)  # the schema's own verdict, for the record
    projector = check_projector(tiny_gguf[1])
    with pytest.raises(ModelFileError) as err:
        gguf_loadcheck.check_loads(unchecked_facts(bad), projector, OPTS)
    msg = str(err.value)
    assert err.value.path == str(bad) and "model file" in msg and str(bad) in msg
    assert cause in msg and "\n" not in msg
    if sys.platform != "win32":
        assert "SIGABRT" in msg

    def no_child(*_a: object, **_k: object) -> None:
        raise AssertionError("the verdict should come from the cache")

    monkeypatch.setattr(gguf_loadcheck.subprocess, "run", no_child)
    with pytest.raises(ModelFileError, match="llama.cpp crashes on model file"):
        gguf_loadcheck.check_loads(unchecked_facts(bad), projector, OPTS)


@pytest.mark.parametrize(("stage", "blamed"), [("text", 0), ("pair", 1)])
def test_the_blame_follows_the_stage_that_crashed(
    tiny_gguf: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str, blamed: int
) -> None:
    pair = fresh_pair(tiny_gguf, tmp_path / stage)
    monkeypatch.setenv("QAUDIO_LOAD_CHECK_INJECT_FAULT", stage)
    with pytest.raises(ModelFileError) as err:
        AudioModel(*pair, OPTS)
    assert err.value.path == str(pair[blamed])
    assert ("model file" if blamed == 0 else "projector file") in str(err.value)


def test_a_pair_is_tried_once_and_again_when_a_file_changes(
    tiny_gguf: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = fresh_pair(tiny_gguf, tmp_path)
    calls = []
    real = gguf_loadcheck._trial

    def counted(*args: object) -> object:
        calls.append(args)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(gguf_loadcheck, "_trial", counted)
    for _ in range(2):
        with AudioModel(*pair, OPTS):
            pass
    assert len(calls) == 1
    with AudioModel(*pair, dataclasses.replace(OPTS, audio_path="mtmd", n_ctx=2048)):
        pass  # another audio path runs other code: tried on its own
    assert len(calls) == 2
    later = time.time() + 5
    os.utime(pair[1], (later, later))
    with AudioModel(*pair, OPTS):
        pass
    assert len(calls) == 3


def test_a_trial_that_never_ends_is_stopped_and_not_cached(
    tiny_gguf: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = fresh_pair(tiny_gguf, tmp_path)
    monkeypatch.setenv("QAUDIO_LOAD_CHECK_INJECT_FAULT", "hang")
    monkeypatch.setenv("QAUDIO_LOAD_CHECK_TIMEOUT", "2")
    t0 = time.perf_counter()
    with pytest.raises(RuntimeBackendError, match="did not finish in 2 s"):
        AudioModel(*pair, OPTS)
    assert time.perf_counter() - t0 < 15
    monkeypatch.delenv("QAUDIO_LOAD_CHECK_INJECT_FAULT")
    with AudioModel(*pair, OPTS) as model:
        assert model.tokenize("hi")


def test_the_trial_can_be_switched_off(
    tiny_gguf: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = fresh_pair(tiny_gguf, tmp_path)
    monkeypatch.setenv("QAUDIO_LOAD_CHECK_INJECT_FAULT", "text")
    monkeypatch.setenv("QAUDIO_LOAD_CHECK", "0")
    with AudioModel(*pair, OPTS) as model:
        assert model.tokenize("hi")


def test_the_cli_reports_a_contained_crash_in_one_line(tiny_gguf: Pair, tmp_path: Path) -> None:
    pair = fresh_pair(tiny_gguf, tmp_path)
    env = {**os.environ, "QAUDIO_LOAD_CHECK_INJECT_FAULT": "pair"}
    clip = REPO / "examples" / "tone_chirp.wav"
    args = ["run", str(clip), "--model-file", str(pair[0]), "--mmproj-file", str(pair[1])]
    proc = subprocess.run(
        [sys.executable, "-m", "qaudio_local", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: llama.cpp crashes on projector file")
    assert str(pair[1]) in lines[0] and proc.stdout == ""


# --- files that load and answer garbage (issue 25) -------------------------------------------


def _nan(name: str) -> ge.TensorEdit:
    def edit(t: ge.Tensor) -> ge.Tensor:
        return ge.Tensor(t.name, np.full_like(t.data, np.nan), t.ggml_type) if t.name == name else t

    return edit


@pytest.mark.parametrize("audio_path", ["faithful", "mtmd"])
@pytest.mark.parametrize(
    ("which", "tensor"), [(0, "blk.0.attn_q.weight"), (1, "a.blk.0.attn_q.weight")]
)
def test_weights_holding_nan_are_refused_naming_the_file(
    tiny_gguf: Pair, tmp_path: Path, audio_path: str, which: int, tensor: str
) -> None:
    """The trial load's decode gives NaN logits: a ModelFileError naming the file, cached,
    on both audio paths (llama.cpp itself answers '!!!!')."""
    pair = list(fresh_pair(tiny_gguf, tmp_path / "pair"))
    pair[which] = ge.rewrite(pair[which], tmp_path / f"nan-{which}.gguf", tensors=_nan(tensor))
    opts = dataclasses.replace(OPTS, audio_path=audio_path, n_ctx=2048)
    for _ in range(2):  # the second answer comes from the cache
        with pytest.raises(ModelFileError) as err:
            AudioModel(pair[0], pair[1], opts)
        assert err.value.path == str(pair[which]) and "NaN or infinite" in str(err.value)
        assert ("model file" if which == 0 else "projector file") in str(err.value)


def test_a_tensor_count_edited_down_is_refused(tiny_gguf: Pair, tmp_path: Path) -> None:
    import struct

    edited = tmp_path / "count.gguf"
    shutil.copy(tiny_gguf[0], edited)
    with edited.open("r+b") as fh:  # tensor_count: a uint64 after the magic and version
        fh.seek(8)
        n = struct.unpack("<Q", fh.read(8))[0]
        fh.seek(8)
        fh.write(struct.pack("<Q", n - 1))
    for path in ("faithful", "mtmd"):
        with pytest.raises(ModelFileError, match="header"):
            AudioModel(edited, tiny_gguf[1], dataclasses.replace(OPTS, audio_path=path))


def test_no_token_types_is_one_verdict_for_both_audio_paths(
    tiny_gguf: Pair, tmp_path: Path
) -> None:
    bare = ge.rewrite(tiny_gguf[0], tmp_path / "bare.gguf", drop=("tokenizer.ggml.token_type",))
    for path in ("faithful", "mtmd"):
        with pytest.raises(ModelFileError, match="token_type"):
            AudioModel(bare, tiny_gguf[1], dataclasses.replace(OPTS, audio_path=path))


@pytest.mark.parametrize("alignment", [1, 8, 16, 64])
def test_any_power_of_two_alignment_loads_and_answers_the_same(
    tiny_gguf: Pair, tmp_path: Path, alignment: int
) -> None:
    """Valid GGUF at any alignment: mapped when it is aligned enough for llama.cpp, else
    read into memory; the logits are the same as the 32-aligned file's."""
    import soundfile as sf

    fields, tensors = ge.read(tiny_gguf[0])
    aligned = ge.write(tmp_path / f"a{alignment}.gguf", fields, tensors, alignment=alignment)
    assert check_text_model(aligned).alignment == alignment
    clip = sf.read(REPO / "examples" / "tone_chirp.wav", dtype="float32")[0]
    logits = []
    for text in (tiny_gguf[0], aligned):
        with AudioModel(text, tiny_gguf[1], OPTS) as model:
            logits.append(model.prompt_logits("What is this?", [clip]))
    assert np.array_equal(logits[0], logits[1])


def test_a_file_merged_by_gguf_split_loads(tiny_gguf: Pair, tmp_path: Path) -> None:
    """`llama-gguf-split --merge` keeps the split keys as the writers write them:
    split.count 0 and split.no 0 (UINT16), split.tensors.count as INT32."""
    n = len(ge.read(tiny_gguf[0])[1])
    merged = ge.rewrite(
        tiny_gguf[0],
        tmp_path / "merged.gguf",
        kv={
            "split.no": (0, ge.VT.UINT16, None),
            "split.count": (0, ge.VT.UINT16, None),
            "split.tensors.count": (n, ge.VT.INT32, None),
        },
    )
    with AudioModel(merged, tiny_gguf[1], OPTS) as model:
        assert model.generate("Hi").usage.completion_tokens > 0
    wrong = ge.rewrite(
        tiny_gguf[0], tmp_path / "uint16.gguf", kv={"split.tensors.count": (n, ge.VT.UINT16, None)}
    )
    with pytest.raises(ModelFileError, match="split.tensors.count"):
        check_text_model(wrong)  # llama.cpp reads it as INT32 and would refuse this one
