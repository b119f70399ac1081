"""``qaudio run``: answer a prompt about audio files, streaming the answer."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ..config import DEFAULT_PROMPT, DEFAULT_SYSTEM_PROMPT
from .main import handle_errors, main, vram_ram_options

_PATH = click.Path(path_type=Path)


@main.command()
@click.argument("audio", nargs=-1, required=True, type=str)
@click.option(
    "-p",
    "--prompt",
    default=None,
    help=f"The question or instruction (default: {DEFAULT_PROMPT!r}). "
    "Pass '' for a voice-chat turn of audio only.",
)
@click.option(
    "-m",
    "--model",
    "model_name",
    default=None,
    help="Registry model as NAME[:QUANT] (default: the registry's default model, quant "
    "planned for this machine); pulled once, then used offline. See `qaudio plan`.",
)
@click.option("--quant", default=None, help="Quantization to use instead of the planned one.")
@click.option("--model-file", type=_PATH, default=None, help="Use this text-model GGUF instead.")
@click.option("--mmproj-file", type=_PATH, default=None, help="Use this projector GGUF instead.")
@click.option(
    "--system",
    "system_prompt",
    default=DEFAULT_SYSTEM_PROMPT,
    show_default=True,
    help="System prompt.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object with text, usage and timings instead of streaming.",
)
@click.option(
    "--stats",
    is_flag=True,
    help="After the answer, print token counts and timings on stderr.",
)
@click.option(
    "--max-tokens",
    default=256,
    show_default=True,
    type=click.IntRange(min=1),
    help="Most tokens to generate.",
)
@click.option(
    "--temperature",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="0 = greedy decoding (deterministic).",
)
@click.option(
    "--top-p",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True),
    help="Nucleus sampling; 1 = off.",
)
@click.option("--top-k", default=0, show_default=True, type=click.IntRange(min=0), help="0 = off.")
@click.option(
    "--repetition-penalty",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help=">1 discourages repeats.",
)
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Random seed when --temperature > 0."
)
@click.option(
    "--n-ctx",
    default=4096,
    show_default=True,
    type=click.IntRange(min=256),
    help="Context window in tokens (30 s of audio takes 750).",
)
@click.option(
    "--n-gpu-layers",
    default=None,
    type=click.IntRange(min=-1),
    help="Text-model layers on the GPU; -1 = all (default: the plan's choice for a registry "
    "model, 0 for --model-file).",
)
@click.option(
    "--kv-type",
    type=click.Choice(["f16", "q8_0", "f32"]),
    default="f16",
    show_default=True,
    help="KV cache type: q8_0 halves its memory; f32 is exact (with --model-file only).",
)
@vram_ram_options
@click.option("--force", is_flag=True, help="Use --quant even if the plan says it does not fit.")
@click.option(
    "--threads", default=None, type=click.IntRange(min=1), help="CPU threads (default: all cores)."
)
@click.option("--no-mmproj-gpu", is_flag=True, help="Keep the audio encoder on the CPU.")
@click.option(
    "--cpu-kernels",
    type=click.Choice(["auto", "fast", "portable"]),
    default="auto",
    show_default=True,
    help="Kernels for quantized weights on the CPU: auto uses llama.cpp's fast (repacked/AMX) "
    "ones unless a one-time probe found that they crash this machine; fast or portable force "
    "either way.",
)
@click.option(
    "--audio-path",
    type=click.Choice(["faithful", "mtmd"]),
    default="faithful",
    show_default=True,
    help="faithful: reference-exact audio (25 tokens/s, padding masked); "
    "mtmd: llama.cpp's own path (every clip padded to 30 s windows), for comparison.",
)
@handle_errors
def run(
    audio: tuple[str, ...],
    prompt: str | None,
    as_json: bool,
    stats: bool,
    system_prompt: str,
    **opts: Any,
) -> None:
    """Answer a prompt about one or more AUDIO files, streaming the answer to stdout.

    AUDIO may be any file libsndfile reads (wav, flac, ogg, mp3, ...), or '-' for
    standard input. Several files become "Audio 1", "Audio 2", ... in one turn.

    With no model options, the registry's default model is planned for this machine
    (`qaudio plan` shows how), downloaded and verified once (`qaudio pull`), and used
    offline afterwards. --model-file and --mmproj-file run local GGUF files instead.
    """
    from ..audio.decode import load_audio
    from ..engine.model import AudioModel, SamplingOptions

    _check_model_options(opts)  # usage errors before any audio is read or model pulled
    clips = [load_audio(sys.stdin.buffer.read() if a == "-" else a) for a in audio]
    sampling = SamplingOptions(
        temperature=opts["temperature"],
        top_p=opts["top_p"],
        top_k=opts["top_k"],
        repetition_penalty=opts["repetition_penalty"],
        seed=opts["seed"],
        max_tokens=opts["max_tokens"],
    )
    model_file, mmproj_file, options = _model_and_options(opts)
    with AudioModel(model_file, mmproj_file, options) as model:
        for notice in model.notices:
            click.echo(f"note: {notice}", err=True)
        gen = model.stream(prompt, clips, sampling=sampling, system_prompt=system_prompt)
        for chunk in gen:
            if not as_json:
                click.echo(chunk.text, nl=False)
                sys.stdout.flush()
        result = gen.result
    assert result is not None
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        click.echo()
    if stats:
        sys.stdout.flush()
        u, t = result.usage, result.timings
        click.echo(
            f"{u.audio_seconds:.1f} s of audio -> {u.audio_tokens} audio tokens; prompt "
            f"{u.prompt_tokens} tokens; {u.completion_tokens} generated "
            f"({result.finish_reason}); encode {t.encode_ms:.0f} ms, prefill "
            f"{t.prefill_ms:.0f} ms, decode {t.decode_tokens_per_s:.1f} tokens/s",
            err=True,
        )


def _check_model_options(opts: dict[str, Any]) -> None:
    """Usage errors in the model options, raised before anything slow happens."""
    if (opts["model_file"] is None) != (opts["mmproj_file"] is None):
        raise click.UsageError(
            "pass both --model-file and --mmproj-file, or neither (then the registry model "
            "is planned and pulled)"
        )
    if opts["model_file"] is not None and (opts["model_name"] or opts["quant"]):
        raise click.UsageError(
            "--model/--quant choose from the registry; they cannot be combined with --model-file"
        )
    if opts["model_file"] is None and opts["kv_type"] == "f32":
        raise click.UsageError("--kv-type f32 is for exact comparisons with --model-file")


def _model_and_options(opts: dict[str, Any]) -> tuple[Path, Path, Any]:
    """The GGUF pair and load options: local files as given, or planned and pulled."""
    from ..engine.results import ModelOptions

    common = {
        "n_ctx": opts["n_ctx"],
        "n_threads": opts["threads"],
        "audio_path": opts["audio_path"],
        "kv_type": opts["kv_type"],
        "cpu_kernels": opts["cpu_kernels"],
    }
    if opts["model_file"] is not None:
        return (
            opts["model_file"],
            opts["mmproj_file"],
            ModelOptions(
                n_gpu_layers=opts["n_gpu_layers"] or 0,
                mmproj_on_gpu=not opts["no_mmproj_gpu"],
                **common,
            ),
        )
    from ..models.resolve import resolve_model
    from .hub import _Bars

    bars = _Bars()
    with bars.active():
        r = resolve_model(
            opts["model_name"],
            quant=opts["quant"],
            n_ctx=opts["n_ctx"],
            kv_type=opts["kv_type"],
            vram_gb=opts["vram"],
            ram_gb=opts["ram"],
            force=opts["force"],
            progress=bars,
        )
    plan: Any = r.plan
    click.echo(f"using {r.spec}: {plan.placement()} (`qaudio plan` says why)", err=True)
    for warning in plan.warnings:
        click.echo(f"note: {warning}", err=True)
    layers = plan.n_gpu_layers if opts["n_gpu_layers"] is None else opts["n_gpu_layers"]
    gpu_encoder = plan.mmproj_on_gpu and not opts["no_mmproj_gpu"]
    return (
        r.model_path,
        r.mmproj_path,
        ModelOptions(n_gpu_layers=layers, mmproj_on_gpu=gpu_encoder, **common),
    )
