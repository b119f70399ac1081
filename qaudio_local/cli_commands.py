"""The ``qaudio`` subcommands: run, convert, selftest."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .cli import handle_errors, main
from .config import DEFAULT_PROMPT, DEFAULT_SYSTEM_PROMPT

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
    "--model-file", type=_PATH, required=True, help="Text-model GGUF (e.g. from `qaudio convert`)."
)
@click.option("--mmproj-file", type=_PATH, required=True, help="Audio projector GGUF.")
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
    help="Context window in tokens.",
)
@click.option(
    "--n-gpu-layers",
    default=0,
    show_default=True,
    type=click.IntRange(min=-1),
    help="Text-model layers on the GPU; -1 = all.",
)
@click.option(
    "--threads", default=None, type=click.IntRange(min=1), help="CPU threads (default: all cores)."
)
@click.option("--no-mmproj-gpu", is_flag=True, help="Keep the audio encoder on the CPU.")
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
    model_file: Path,
    mmproj_file: Path,
    system_prompt: str,
    as_json: bool,
    max_tokens: int,
    temperature: float,
    top_p: float,
    top_k: int,
    repetition_penalty: float,
    seed: int,
    n_ctx: int,
    n_gpu_layers: int,
    threads: int | None,
    no_mmproj_gpu: bool,
    audio_path: str,
) -> None:
    """Answer a prompt about one or more AUDIO files, streaming the answer to stdout.

    AUDIO may be any file libsndfile reads (wav, flac, ogg, mp3, ...), or '-' for
    standard input. Several files become "Audio 1", "Audio 2", ... in one turn.
    """
    from .audio import load_audio
    from .runtime import AudioModel, ModelOptions, SamplingOptions

    clips = [load_audio(sys.stdin.buffer.read() if a == "-" else a) for a in audio]
    sampling = SamplingOptions(
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        repetition_penalty=repetition_penalty,
        seed=seed,
        max_tokens=max_tokens,
    )
    options = ModelOptions(
        n_gpu_layers=n_gpu_layers,
        n_ctx=n_ctx,
        n_threads=threads,
        mmproj_on_gpu=not no_mmproj_gpu,
        audio_path=audio_path,
    )
    with AudioModel(model_file, mmproj_file, options) as model:
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


@main.command()
@click.argument("hf_dir", type=_PATH)
@click.argument("out_dir", type=_PATH)
@click.option(
    "--outtype",
    type=click.Choice(["f16", "f32"]),
    default="f16",
    show_default=True,
    help="Storage of the weight matrices (norms and biases stay f32).",
)
@handle_errors
def convert(hf_dir: Path, out_dir: Path, outtype: str) -> None:
    """Convert a Hugging Face Qwen2-Audio checkpoint in HF_DIR to a GGUF pair in OUT_DIR.

    Writes the text model (<name>.F16.gguf) and the audio projector
    (<name>.mmproj-f16.gguf). Tensors are streamed one at a time, so memory stays
    near the largest tensor; nothing is left half-written on failure.
    """
    from .convert import convert_checkpoint

    with click.progressbar(length=1, label="converting", file=sys.stderr, show_pos=True) as bar:

        def progress(name: str, done: int, total: int) -> None:
            bar.length = total
            bar.update(done - bar.pos)

        result = convert_checkpoint(hf_dir, out_dir, outtype=outtype, progress=progress)
    click.echo(f"model:  {result.model_path}")
    click.echo(f"mmproj: {result.mmproj_path}")


@main.command()
@handle_errors
def selftest() -> None:
    """Check the install: build a tiny model, run the whole pipeline offline, report the backend."""
    from .selftest import run_selftest

    click.echo("building a tiny Qwen2-Audio and running it through llama.cpp ...", err=True)
    r = run_selftest()
    b = r.backend
    click.echo(f"llama-cpp-python {b.version}; backends: {', '.join(b.backends)}")
    if b.gpu_offload:
        click.echo(f"GPU offload: available ({'checked' if r.gpu_checked else 'not checked'})")
    else:
        click.echo(
            "GPU offload: not available in this build (CPU only); to use an NVIDIA GPU "
            'reinstall with CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall '
            "--no-cache-dir llama-cpp-python==0.3.36"
        )
    click.echo(f"tiny model built and converted in {r.build_s:.1f} s")
    click.echo(
        f"pipeline: {r.audio_seconds:.1f} s clip -> {r.audio_tokens} audio tokens -> "
        f"{r.completion_tokens} tokens generated; greedy runs identical: "
        f"{'yes' if r.deterministic else 'NO'}"
    )
    if not r.ok:
        click.echo(
            "error: the self-test failed; rerun with --debug and report the output", err=True
        )
        sys.exit(1)
    click.echo("OK")
