"""The ``qaudio`` command line, end to end on the tiny model through the real llama.cpp.

In-process runs use click's ``CliRunner``; every bad input is also run in a fresh
interpreter (``python -m qaudio_local``) so that a crash of the process (an abort or
segfault inside llama.cpp or libsndfile) cannot hide behind an exit code.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qaudio_local.audio.windows import audio_token_count
from qaudio_local.cli.main import main
from qaudio_local.config import SAMPLE_RATE
from tests.support.audio import tone
from tests.support.cli import MAX_TOKENS, Pair, invoke, run_args, runner

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CLIP = REPO / "examples" / "tone_chirp.wav"
# The default (faithful) audio path gives the reference's 25 tokens per second.
TOKENS_PER_SECOND = 25


# --- helpers --------------------------------------------------------------------------------


def invoke_process(
    *args: str | Path, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m qaudio_local ARGS`` in a fresh interpreter (isolated env inherited)."""
    proc = subprocess.run(
        [sys.executable, "-m", "qaudio_local", *map(str, args)],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )
    return subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode("utf-8", errors="replace"),
        proc.stderr.decode("utf-8", errors="replace"),
    )


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    """Exit status and the telling part of stderr (the assertion, if llama.cpp aborted)."""
    lines = proc.stderr.splitlines()
    telling = [ln for ln in lines if "GGML_ASSERT" in ln or ln.startswith("error:")]
    return f"exit status {proc.returncode}: " + "\n".join(telling or lines[-10:])


def error_line(stderr: str) -> str:
    """The single ``error: ...`` line of ``stderr``; fails on a traceback or several errors."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def run_json(
    pair: Pair, *audio: str | Path, extra: tuple[str, ...] = (), stdin: bytes | None = None
) -> dict:
    """``qaudio run --json``: check it succeeded and printed one JSON object; return it."""
    result = invoke(*run_args(pair, *audio, extra=("--json", *extra)), stdin=stdin)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("\n") == 1, result.stdout
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def write_clip(path: Path, seconds: float, rate: int, channels: int = 1, **kw: str) -> Path:
    """Write a tone of ``seconds`` at ``rate`` Hz with ``channels`` to ``path``."""
    mono = tone(seconds, rate=rate)
    data = (
        mono
        if channels == 1
        else np.stack([mono * (0.5 + 0.5 * c / channels) for c in range(channels)], axis=1)
    )
    sf.write(path, data, rate, **kw)
    return path


def gguf_files(folder: Path) -> list[Path]:
    """Every GGUF or half-written file under ``folder``."""
    if not folder.exists():
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix in {".gguf", ".partial"})


# --- help -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), ["run", "convert", "selftest", "--debug", "--version"]),
        (
            ("run",),
            [
                "AUDIO",
                "standard input",
                "--prompt",
                "--model-file",
                "--mmproj-file",
                "--json",
                "--max-tokens",
                "--temperature",
                "--n-ctx",
                "--n-gpu-layers",
                "--system",
                "--seed",
            ],
        ),
        (("convert",), ["HF_DIR", "OUT_DIR", "--outtype", "f16", "f32"]),
        (("selftest",), ["tiny model", "backend"]),
    ],
)
def test_help_explains_the_options(args: tuple[str, ...], expected: list[str]) -> None:
    result = invoke(*args, "--help")
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: ")
    text = " ".join(result.stdout.split())  # undo click's line wrapping
    for word in expected:
        assert word in text, (word, result.stdout)


def test_qaudio_ui_help_offers_no_option_it_refuses() -> None:
    """serve's --no-ui is shared through its options but means nothing for ``qaudio ui``:
    not in its help, and a clear usage error if given anyway."""
    assert "--no-ui" in invoke("serve", "--help").stdout
    assert "--no-ui" not in invoke("ui", "--help").stdout
    refused = invoke("ui", "--no-ui")
    assert refused.exit_code == 2 and "--no-ui is for qaudio serve" in refused.output


def test_every_command_takes_debug_after_its_name() -> None:
    """`qaudio selftest --debug` works as `qaudio --debug selftest` does (and says it)."""
    assert {"run", "chat", "serve", "transcribe", "selftest", "hardware"} <= set(main.commands)
    for name in main.commands:
        result = invoke(name, "--help")
        assert result.exit_code == 0, (name, result.stderr)
        assert "--debug" in result.stdout and "llama.cpp's log" in result.stdout, name
    proc = invoke_process("hardware", "--debug")  # a cheap command: the option is accepted
    assert proc.returncode == 0 and "CPU:" in proc.stdout, explain(proc)
    assert "qaudio selftest --debug" in invoke("selftest", "--help").stdout


def test_version() -> None:
    from qaudio_local import __version__

    result = invoke("--version")
    assert result.exit_code == 0
    assert __version__ in result.stdout


def test_python_dash_m_runs_the_cli() -> None:
    proc = invoke_process("--help")
    assert proc.returncode == 0, proc.stderr
    assert "selftest" in proc.stdout


# --- convert ----------------------------------------------------------------------------------


@pytest.mark.parametrize("outtype", ["f16", "f32"])
def test_convert_writes_the_printed_pair(
    tiny_checkpoint: Path, tmp_path: Path, outtype: str
) -> None:
    out = tmp_path / "out"
    default = outtype == "f16"  # f16 is the default: leave --outtype out
    result = invoke("convert", tiny_checkpoint, out, *([] if default else ["--outtype", outtype]))
    assert result.exit_code == 0, result.stderr
    printed = dict(line.split(":", 1) for line in result.stdout.splitlines())
    model, mmproj = Path(printed["model"].strip()), Path(printed["mmproj"].strip())
    assert model.name == f"tiny-qwen2-audio.{outtype.upper()}.gguf"
    assert mmproj.name == f"tiny-qwen2-audio.mmproj-{outtype}.gguf"
    assert gguf_files(out) == sorted([model, mmproj])

    import gguf

    types = {gguf.GGMLQuantizationType(t.tensor_type).name for t in gguf.GGUFReader(model).tensors}
    assert outtype.upper() in types
    assert types <= {"F32", "F16"}
    # the printed pair is usable as it is
    assert run_json((model, mmproj), EXAMPLE_CLIP)["usage"]["completion_tokens"] > 0


def _not_qwen2_audio(tmp_path: Path, ckpt: Path) -> Path:
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"})
    )
    shutil.copy(ckpt / "model.safetensors", folder)
    return folder


def _no_weights(tmp_path: Path, ckpt: Path) -> Path:
    folder = tmp_path / "no-weights"
    shutil.copytree(ckpt, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    return folder


def _extra_tensor(tmp_path: Path, ckpt: Path) -> Path:
    """The tiny checkpoint plus a shard (listed in an index) holding an unknown tensor."""
    from qaudio_local.convert.safetensors_io import SafetensorsFile, write_safetensors

    folder = tmp_path / "extra-tensor"
    shutil.copytree(ckpt, folder)
    with SafetensorsFile(folder / "model.safetensors") as st:
        weight_map = dict.fromkeys(st, "model.safetensors")
    write_safetensors(
        folder / "model-extra.safetensors",
        {"audio_tower.mystery.weight": np.ones((4, 4), np.float32)},
        {"format": "pt"},
    )
    weight_map["audio_tower.mystery.weight"] = "model-extra.safetensors"
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    return folder


def _misshaped_tensor(tmp_path: Path, ckpt: Path) -> Path:
    """The tiny checkpoint with one projector matrix of the wrong shape."""
    from qaudio_local.convert.safetensors_io import SafetensorsFile, write_safetensors

    folder = tmp_path / "misshaped"
    shutil.copytree(ckpt, folder)
    with SafetensorsFile(folder / "model.safetensors") as st:
        tensors = {name: st.read(name) for name in st}
    tensors["multi_modal_projector.linear.weight"] = np.zeros((7, 5), np.float32)
    write_safetensors(folder / "model.safetensors", tensors, {"format": "pt"})
    return folder


@pytest.mark.parametrize(
    ("make", "wording"),
    [
        (_not_qwen2_audio, "not a Qwen2-Audio checkpoint"),
        (lambda tmp, _ckpt: tmp / "does-not-exist", "not found"),
        (_no_weights, "safetensors"),
        (_extra_tensor, "audio_tower.mystery.weight"),
        (_misshaped_tensor, "multi_modal_projector.linear.weight"),
    ],
    ids=["not-qwen2-audio", "missing-folder", "no-weights", "unknown-tensor", "misshaped-tensor"],
)
def test_convert_refuses_bad_checkpoints_cleanly(
    tiny_checkpoint: Path, tmp_path: Path, make: Callable[[Path, Path], Path], wording: str
) -> None:
    src = make(tmp_path, tiny_checkpoint)
    out = tmp_path / "out"
    result = invoke("convert", src, out)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert wording in error_line(result.stderr)
    assert result.stdout == ""
    assert gguf_files(out) == []


def test_convert_into_a_file_fails_cleanly(tiny_checkpoint: Path, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "out"
    not_a_dir.write_text("x")
    result = invoke("convert", tiny_checkpoint, not_a_dir)
    assert result.exit_code == 2
    assert str(not_a_dir) in error_line(result.stderr)
    assert not list(tmp_path.glob("*.gguf*"))


def test_convert_rejects_an_unknown_outtype(tiny_checkpoint: Path, tmp_path: Path) -> None:
    result = invoke("convert", tiny_checkpoint, tmp_path / "out", "--outtype", "q4_0")
    assert result.exit_code == 2  # click's usage error
    assert "q4_0" in result.stderr
    assert gguf_files(tmp_path / "out") == []


# --- run: inputs that work --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "seconds", "rate", "channels", "kw"),
    [
        ("int16-8k-mono.wav", 1.5, 8_000, 1, {"subtype": "PCM_16"}),
        ("44k-stereo.flac", 1.0, 44_100, 2, {}),
        ("48k.ogg", 1.0, 48_000, 1, {"format": "OGG", "subtype": "VORBIS"}),
        ("16k.mp3", 1.5, 16_000, 1, {"format": "MP3", "subtype": "MPEG_LAYER_III"}),
        ("float-22k-6ch.wav", 0.5, 22_050, 6, {"subtype": "FLOAT"}),
    ],
)
def test_run_reads_formats_rates_and_channels(
    tiny_gguf: Pair,
    tmp_path: Path,
    name: str,
    seconds: float,
    rate: int,
    channels: int,
    kw: dict[str, str],
) -> None:
    clip = write_clip(tmp_path / name, seconds, rate, channels, **kw)
    result = invoke(*run_args(tiny_gguf, clip))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip(), "no answer printed"
    assert result.stderr == ""

    data = run_json(tiny_gguf, clip)
    assert data["usage"]["audio_seconds"] == pytest.approx(seconds, abs=0.05)
    assert result.stdout == data["text"] + "\n"  # streaming prints the same answer


def test_run_json_has_text_usage_and_timings(tiny_gguf: Pair) -> None:
    data = run_json(tiny_gguf, EXAMPLE_CLIP)
    assert set(data) == {"text", "finish_reason", "usage", "timings"}
    assert isinstance(data["text"], str) and data["text"]

    usage = data["usage"]
    assert set(usage) == {
        "audio_seconds",
        "audio_tokens",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
    }
    assert usage["cached_tokens"] == 0  # one request in a fresh process: nothing to reuse
    assert usage["audio_seconds"] == pytest.approx(sf.info(str(EXAMPLE_CLIP)).duration, abs=0.01)
    assert usage["audio_tokens"] == audio_token_count(sf.info(str(EXAMPLE_CLIP)).frames)
    assert usage["audio_tokens"] == 3 * TOKENS_PER_SECOND
    assert usage["prompt_tokens"] > usage["audio_tokens"]  # plus system, prompt, markers
    assert data["finish_reason"] in {"stop", "length"}
    if data["finish_reason"] == "length":
        assert usage["completion_tokens"] == MAX_TOKENS
    else:
        assert 0 <= usage["completion_tokens"] < MAX_TOKENS

    timings = data["timings"]
    assert set(timings) == {"encode_ms", "prefill_ms", "decode_ms", "decode_tokens_per_s"}
    assert all(isinstance(v, int | float) and v >= 0 for v in timings.values())
    assert timings["encode_ms"] > 0 and timings["prefill_ms"] > 0
    if usage["completion_tokens"]:
        assert timings["decode_tokens_per_s"] > 0
        expected_rate = usage["completion_tokens"] / (timings["decode_ms"] / 1e3)
        assert timings["decode_tokens_per_s"] == pytest.approx(expected_rate, rel=0.05)


def test_run_max_tokens_bounds_the_answer(tiny_gguf: Pair) -> None:
    data = run_json(tiny_gguf, EXAMPLE_CLIP, extra=("--max-tokens", "3"))
    assert data["usage"]["completion_tokens"] <= 3
    if data["finish_reason"] == "length":
        assert data["usage"]["completion_tokens"] == 3


def test_run_greedy_is_deterministic(tiny_gguf: Pair) -> None:
    first = invoke(*run_args(tiny_gguf, EXAMPLE_CLIP))
    second = invoke(*run_args(tiny_gguf, EXAMPLE_CLIP))
    assert first.exit_code == second.exit_code == 0
    assert first.stdout == second.stdout
    assert first.stdout.strip()


def test_run_sampling_options_are_accepted(tiny_gguf: Pair) -> None:
    extra: tuple[str, ...] = ("--temperature", "0.8", "--top-p", "0.9", "--top-k", "20")
    extra += ("--repetition-penalty", "1.1", "--seed", "7")
    first = run_json(tiny_gguf, EXAMPLE_CLIP, extra=extra)
    second = run_json(tiny_gguf, EXAMPLE_CLIP, extra=extra)
    assert first["text"] == second["text"]  # same seed, same tokens


def test_run_reads_standard_input(tiny_gguf: Pair) -> None:
    data = run_json(tiny_gguf, "-", stdin=EXAMPLE_CLIP.read_bytes())
    from_file = run_json(tiny_gguf, EXAMPLE_CLIP)
    assert data["usage"] == from_file["usage"]
    assert data["text"] == from_file["text"]


def test_run_reads_a_real_pipe_and_prints_nothing_else(tiny_gguf: Pair) -> None:
    proc = invoke_process(*run_args(tiny_gguf, "-"), stdin=EXAMPLE_CLIP.read_bytes())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert proc.stderr == ""  # llama.cpp's log is not shown without --debug


def test_run_two_clips_give_more_audio_tokens(tiny_gguf: Pair, tmp_path: Path) -> None:
    other = write_clip(tmp_path / "other.wav", 1.0, SAMPLE_RATE)
    one = run_json(tiny_gguf, EXAMPLE_CLIP)
    two = run_json(tiny_gguf, EXAMPLE_CLIP, other)
    assert two["usage"]["audio_tokens"] > one["usage"]["audio_tokens"]
    assert two["usage"]["audio_tokens"] == one["usage"]["audio_tokens"] + TOKENS_PER_SECOND
    assert two["usage"]["prompt_tokens"] > one["usage"]["prompt_tokens"]
    assert two["usage"]["audio_seconds"] == pytest.approx(
        one["usage"]["audio_seconds"] + 1.0, abs=0.01
    )


def test_run_voice_chat_with_an_empty_prompt(tiny_gguf: Pair) -> None:
    chat = run_json(tiny_gguf, EXAMPLE_CLIP, extra=("--prompt", ""))
    asked = run_json(tiny_gguf, EXAMPLE_CLIP, extra=("--prompt", "What is this sound?"))
    assert chat["usage"]["audio_tokens"] == asked["usage"]["audio_tokens"]
    assert chat["usage"]["prompt_tokens"] < asked["usage"]["prompt_tokens"]
    assert chat["finish_reason"] in {"stop", "length"}


def test_run_system_prompt_changes_the_prompt(tiny_gguf: Pair) -> None:
    default = run_json(tiny_gguf, EXAMPLE_CLIP)
    longer = run_json(
        tiny_gguf, EXAMPLE_CLIP, extra=("--system", "You are a very careful and thorough listener.")
    )
    assert longer["usage"]["prompt_tokens"] > default["usage"]["prompt_tokens"]


# --- run: inputs that must fail with one clean line --------------------------------------------


def _truncated(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _edited_copy(src: Path, dst: Path, fields: dict[str, int]) -> Path:
    """Copy a GGUF and overwrite integer metadata ``fields`` in place."""
    import gguf

    shutil.copy(src, dst)
    reader = gguf.GGUFReader(dst, "r+")
    for key, value in fields.items():
        field = reader.fields[key]
        field.parts[field.data[0]][0] = value
    reader.data.flush()
    del reader
    return dst


def _mmproj_with_wrong_metadata(mmproj: Path, dst: Path) -> Path:
    """The projector with only its ``projection_dim`` metadata changed to 128."""
    return _edited_copy(mmproj, dst, {"clip.audio.projection_dim": 128})


def _mmproj_for_another_model(mmproj: Path, dst: Path) -> Path:
    """A self-consistent projector that outputs 128-wide embeddings (the text model takes 256).

    The metadata and the shapes of the last linear layer are narrowed in place; the
    tensor data past the new size is simply never read.
    """
    import gguf

    _edited_copy(mmproj, dst, {"clip.audio.projection_dim": 128})
    reader = gguf.GGUFReader(dst, "r+")
    for t in reader.tensors:
        if t.name in ("mm.a.fc.weight", "mm.a.fc.bias"):
            t.field.parts[3][-1] = 128  # ggml order: the output width is the last dim
    reader.data.flush()
    del reader
    return dst


def _bad_run_case(kind: str, tmp: Path, pair: Pair) -> tuple[list[str], int, str]:
    """(``qaudio`` arguments, expected exit code, wording in the error) for one bad input."""
    model, mmproj = pair
    clip: Path = EXAMPLE_CLIP
    extra: tuple[str, ...] = ()
    if kind == "missing-audio":
        clip, code, wording = tmp / "nope.wav", 2, "audio file not found"
    elif kind == "empty-wav":
        clip = tmp / "empty.wav"
        sf.write(clip, np.zeros(0, np.int16), SAMPLE_RATE, subtype="PCM_16")
        code, wording = 2, "empty.wav"
    elif kind == "zero-byte-wav":
        clip = tmp / "zero.wav"
        clip.write_bytes(b"")
        code, wording = 2, "empty"
    elif kind == "random-bytes-wav":
        clip = tmp / "random.wav"
        clip.write_bytes(np.random.default_rng(0).bytes(5000))
        code, wording = 2, "could not decode"
    elif kind == "text-as-mp3":
        clip = tmp / "notes.mp3"
        clip.write_text("this is a text file, not audio\n" * 40)
        code, wording = 2, "notes.mp3"
    elif kind == "directory-as-audio":
        clip, code, wording = tmp, 2, "directory"
    elif kind == "missing-model":
        model, code, wording = tmp / "nope.gguf", 2, "model file not found"
    elif kind == "missing-mmproj":
        mmproj, code, wording = tmp / "nope.gguf", 2, "not found"
    elif kind == "swapped-files":
        model, mmproj = mmproj, model
        code, wording = 2, "--mmproj-file"
    elif kind == "not-gguf-model":
        model = tmp / "model.gguf"
        model.write_bytes(b"PK\x03\x04 this is a zip, not a gguf" * 100)
        code, wording = 2, "not a GGUF file"
    elif kind == "truncated-model":
        model, code, wording = _truncated(model, tmp / "half.gguf"), 2, "truncated"
    elif kind == "truncated-mmproj":
        mmproj, code, wording = _truncated(mmproj, tmp / "half-mmproj.gguf"), 2, "truncated"
    elif kind == "mmproj-tail-cut":
        mmproj = tmp / "cut-mmproj.gguf"
        mmproj.write_bytes(pair[1].read_bytes()[:-64])
        code, wording = 2, "truncated"
    elif kind == "mmproj-metadata-edited":
        mmproj = _mmproj_with_wrong_metadata(mmproj, tmp / "edited.gguf")
        code, wording = 2, "128"
    elif kind == "mmproj-width-mismatch":
        mmproj = _mmproj_for_another_model(mmproj, tmp / "narrow.gguf")
        code, wording = 2, "expects 256"
    elif kind == "context-overflow":
        clip = write_clip(tmp / "long.wav", 15.0, SAMPLE_RATE)  # 375 audio tokens
        extra, code, wording = ("--n-ctx", "256"), 2, "--n-ctx"
    else:  # pragma: no cover
        raise AssertionError(kind)
    return run_args((model, mmproj), clip, extra=extra), code, wording


BAD_RUN_CASES = [
    "missing-audio",
    "empty-wav",
    "zero-byte-wav",
    "random-bytes-wav",
    "text-as-mp3",
    "directory-as-audio",
    "missing-model",
    "missing-mmproj",
    "swapped-files",
    "not-gguf-model",
    "truncated-model",
    "truncated-mmproj",
    "mmproj-tail-cut",
    "mmproj-metadata-edited",
    "mmproj-width-mismatch",
    "context-overflow",
]


@pytest.mark.parametrize("kind", BAD_RUN_CASES)
def test_run_bad_input_gives_one_clean_error(tiny_gguf: Pair, tmp_path: Path, kind: str) -> None:
    args, code, wording = _bad_run_case(kind, tmp_path, tiny_gguf)
    result = invoke(*args)
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert wording in error_line(result.stderr)
    assert result.stdout == ""


@pytest.mark.parametrize("kind", BAD_RUN_CASES)
def test_run_bad_input_never_crashes_the_interpreter(
    tiny_gguf: Pair, tmp_path: Path, kind: str
) -> None:
    args, code, wording = _bad_run_case(kind, tmp_path, tiny_gguf)
    proc = invoke_process(*args)
    # a negative code is a signal (SIGABRT -6, SIGSEGV -11); 134/139 the same through a shell
    assert proc.returncode == code, explain(proc)
    assert wording in error_line(proc.stderr)
    assert proc.stderr.strip().splitlines() == [error_line(proc.stderr)], proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize(
    "fields",
    [
        {"clip.audio.embedding_length": 32},
        {"clip.audio.attention.head_count": 3},
        {"clip.audio.num_mel_bins": 80},
        {"clip.audio.block_count": 5},
    ],
    ids=lambda f: next(iter(f)),
)
def test_run_inconsistent_projector_never_crashes_the_interpreter(
    tiny_gguf: Pair, tmp_path: Path, fields: dict[str, int]
) -> None:
    """Audio hyper-parameters that contradict the projector's tensors.

    Only in a subprocess: llama.cpp answers some of these with a GGML_ASSERT that aborts
    the process, which would take pytest down with it.
    """
    mmproj = _edited_copy(tiny_gguf[1], tmp_path / "edited-mmproj.gguf", fields)
    proc = invoke_process(*run_args((tiny_gguf[0], mmproj), EXAMPLE_CLIP))
    assert proc.returncode in (1, 2), explain(proc)
    assert "edited-mmproj.gguf" in error_line(proc.stderr)
    assert proc.stdout == ""


@pytest.mark.parametrize("samples", [1, 31 * SAMPLE_RATE], ids=["one-sample", "31-seconds"])
def test_run_extreme_lengths(tiny_gguf: Pair, tmp_path: Path, samples: int) -> None:
    clip = tmp_path / "clip.wav"
    sf.write(clip, np.full(samples, 0.1, np.float32), SAMPLE_RATE, subtype="FLOAT")
    proc = invoke_process(*run_args(tiny_gguf, clip, extra=("--json",)))
    assert proc.returncode == 0, explain(proc)
    usage = json.loads(proc.stdout)["usage"]
    assert usage["audio_seconds"] == pytest.approx(samples / SAMPLE_RATE, abs=1e-3)
    # 1 sample: too short for one token; 31 s: a 750-token window + 1 s (25 tokens)
    assert usage["audio_tokens"] == audio_token_count(samples)
    assert usage["audio_tokens"] == {1: 0, 31 * SAMPLE_RATE: 775}[samples]


def test_context_overflow_names_the_size_needed(tiny_gguf: Pair, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "long.wav", 15.0, SAMPLE_RATE)
    result = invoke(*run_args(tiny_gguf, clip, extra=("--n-ctx", "256")))
    assert result.exit_code == 2
    line = error_line(result.stderr)
    assert "context holds 256" in line
    assert "--n-ctx (at least" in line


@pytest.mark.parametrize("how", ["flag", "flag-after-the-command", "env"])
def test_debug_shows_the_traceback(
    tiny_gguf: Pair, tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = run_args(tiny_gguf, tmp_path / "nope.wav")
    if how == "flag":
        args.insert(0, "--debug")
    elif how == "flag-after-the-command":  # `qaudio run ... --debug`, as messages suggest
        args.append("--debug")
    else:
        monkeypatch.setenv("QAUDIO_DEBUG", "1")
    proc = invoke_process(*args)
    assert proc.returncode == 2
    assert "Traceback (most recent call last)" in proc.stderr
    assert "AudioFileNotFoundError" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("error: audio file not found")


def test_debug_shows_llama_cpp_log(tiny_gguf: Pair) -> None:
    proc = invoke_process("--debug", *run_args(tiny_gguf, EXAMPLE_CLIP))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert "qaudio_local.llama" in proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["run", "clip.wav", "--model-file", "m.gguf"],  # --mmproj-file missing
        ["run", "clip.wav", "--mmproj-file", "p.gguf"],  # --model-file missing
        ["run", "clip.wav", "--model-file", "m", "--mmproj-file", "p", "--quant", "Q4_K_M"],
        ["run", "clip.wav", "--kv-type", "f32"],  # exact KV only with local files
        ["run", "--model-file", "m.gguf", "--mmproj-file", "p.gguf"],  # no AUDIO
        ["run", "clip.wav", "--model-file", "m", "--mmproj-file", "p", "--max-tokens", "0"],
        ["run", "clip.wav", "--model-file", "m", "--mmproj-file", "p", "--n-ctx", "16"],
        ["run", "clip.wav", "--model-file", "m", "--mmproj-file", "p", "--top-p", "0"],
        ["run", "clip.wav", "--model-file", "m", "--mmproj-file", "p", "--temperature", "-1"],
        ["nonsense"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stderr.strip() == error_line(result.stderr)
    assert result.stdout == ""


# --- selftest ---------------------------------------------------------------------------------


def test_selftest_passes() -> None:
    result = invoke("selftest")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert lines[-1] == "OK"
    assert lines[0].startswith("llama-cpp-python ")
    assert "backends: " in lines[0] and "CPU" in lines[0]
    assert any(ln.startswith("GPU offload: ") for ln in lines)
    assert "greedy runs identical: yes" in result.stdout
    assert any(ln.startswith("CPU quantized kernels: ") for ln in lines)
    quant = [ln for ln in lines if ln.startswith("quantized ")]
    assert len(quant) == 4 and all(": ok (logits cosine 0.9" in ln for ln in quant)
    for level in ("Q4_K_M", "Q8_0"):
        for path in ("faithful", "mtmd"):
            assert f"quantized {level} + q8_0 projector, {path} path: ok" in result.stdout


def test_selftest_fails_loudly_where_quantized_models_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine where libmtmd faults on a quantized projector: FAILED lines, exit 1."""
    from qaudio_local.engine import cpu_probe

    here = cpu_probe.cpu_kernel_verdict()  # keep this machine's text outcomes: no crash
    monkeypatch.setenv("QAUDIO_CACHE_DIR", str(tmp_path))
    steps = tuple(
        (s, "SIGILL" if s == cpu_probe.MTMD_STEP else here.outcome(s)) for s in cpu_probe.STEPS
    )
    cpu_probe._store(cpu_probe.build_key(), cpu_probe.KernelVerdict(steps=steps))
    result = invoke("selftest")
    assert result.exit_code == 1
    failed = [ln for ln in result.stdout.splitlines() if "FAILED" in ln]
    assert len(failed) == 2 and all(
        "mtmd path: FAILED: llama.cpp's audio path" in ln for ln in failed
    )
    assert "quantized Q4_K_M + q8_0 projector, faithful path: ok" in result.stdout
    assert "error: the self-test failed" in result.stderr


@pytest.mark.slow
def test_selftest_names_the_reinstall_when_a_gpu_is_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU the CPU-only llama.cpp build cannot use gets the exact reinstall command."""
    from qaudio_local.engine.bindings import backend
    from qaudio_local.models import hardware

    if backend.backend_info().gpu_offload:
        pytest.skip("this llama.cpp build can offload: nothing to warn about")
    gpu = hardware.Gpu(0, "NVIDIA GeForce RTX 4070", "nvidia", 12 * hardware.GIB, 11 * hardware.GIB)
    machine = hardware.Hardware(
        gpus=(gpu,),
        cpu_cores=2,
        physical_cores=2,
        ram_total=16 * hardware.GIB,
        ram_available=16 * hardware.GIB,
        llama_gpu_offload=False,
    )
    monkeypatch.setattr(hardware, "detect", lambda *a, **k: machine)
    result = invoke("selftest")
    assert result.exit_code == 0
    assert 'CMAKE_ARGS="-DGGML_CUDA=on"' in result.stderr
    assert "llama-cpp-python==0.3.36" in result.stderr


def test_run_stats_go_to_stderr(tiny_gguf: Pair) -> None:
    result = invoke(*run_args(tiny_gguf, EXAMPLE_CLIP, extra=("--stats",)))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip()  # the answer stays alone on stdout
    (line,) = result.stderr.strip().splitlines()
    assert "3.0 s of audio -> 75 audio tokens" in line and "tokens/s" in line


def test_convert_outtypes_match_the_converter() -> None:
    from qaudio_local.cli.tools import CONVERT_OUTTYPES
    from qaudio_local.convert import OUTTYPES

    assert set(CONVERT_OUTTYPES) == set(OUTTYPES)


def test_convert_a_k_quant_from_the_cli(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke(
        "convert", tiny_checkpoint, out, "--outtype", "q4_k_m", "--mmproj-outtype", "Q8_0"
    )
    assert result.exit_code == 0, result.stderr
    assert "quantized to Q4_K_M by llama.cpp" in result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["tiny-qwen2-audio.Q4_K_M.gguf", "tiny-qwen2-audio.mmproj-q8_0.gguf"]
    assert f"model:  {out / names[0]}" in result.stdout


# --- option values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "gib"),
    [("8", 8.0), ("8G", 8.0), ("8GB", 8.0), ("8gib", 8.0), ("8192M", 8.0), ("6.5 GiB", 6.5)],
)
def test_sizes_read_as_people_type_them(text: str, gib: float) -> None:
    from qaudio_local.cli.options import Size

    assert Size().convert(text, None, None) == gib


def test_plan_takes_sizes_with_units() -> None:
    a = json.loads(invoke("plan", "--vram", "8GB", "--ram", "16G", "--json").stdout)
    b = json.loads(invoke("plan", "--vram", "8", "--ram", "16384M", "--json").stdout)
    assert a["plan"] == b["plan"] and a["hardware"]["vram_override"] == 8 * 2**30
    bad = invoke("plan", "--vram", "lots")
    assert bad.exit_code == 2 and "write it like 8, 8G, 8GB" in bad.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--temperature", "nan"), "not a finite number"),
        (("--temperature", "inf"), "--temperature"),
        (("--repetition-penalty", "nan"), "not a finite number"),
        (("--n-ctx", "4294967552"), "--n-ctx"),
        (("--threads", "2147483648"), "--threads"),
        (("--threads", "100000"), "--threads"),
        (("--seed", "-1"), "--seed"),
        (("--max-tokens", "0"), "--max-tokens"),
    ],
)
def test_out_of_range_numbers_are_usage_errors(
    tiny_gguf: Pair, extra: tuple[str, str], message: str
) -> None:
    result = invoke(*run_args(tiny_gguf, EXAMPLE_CLIP, extra=extra))
    assert result.exit_code == 2 and message in error_line(result.stderr)
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "wording", "where"),
    [
        (("run", "--no-such-flag", "x.wav"), "No such option '--no-such-flag'", "qaudio run"),
        (("nosuch",), "No such command 'nosuch'", "qaudio"),
        (("run",), "Missing argument 'AUDIO...'", "qaudio run"),
    ],
)
def test_usage_errors_are_one_error_line_too(
    args: tuple[str, ...], wording: str, where: str
) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stderr.strip() == error_line(result.stderr)  # no usage block around it
    assert wording in result.stderr and f"see `{where} --help`" in result.stderr


def test_a_context_beyond_training_needs_a_flag(tiny_gguf: Pair) -> None:
    result = invoke(*run_args(tiny_gguf, EXAMPLE_CLIP, extra=("--n-ctx", "16384")))
    assert result.exit_code == 2
    assert "beyond the 8192 tokens" in result.stderr and "--allow-long-context" in result.stderr
    ok = invoke(
        *run_args(tiny_gguf, EXAMPLE_CLIP, extra=("--n-ctx", "16384", "--allow-long-context"))
    )
    assert ok.exit_code == 0, ok.stderr


def test_every_command_help_has_an_example() -> None:
    for name in main.commands:
        out = runner().invoke(main, [name, "--help"]).output
        assert "Examples:" in out and f"qaudio {name}" in out.split("Examples:")[1], name
