"""``qaudio convert`` and ``qaudio selftest``: make GGUF files, check the install."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .main import handle_errors, main

_PATH = click.Path(path_type=Path)

# the converter's outtypes (qaudio_local.convert.OUTTYPES; kept here so --help stays light)
CONVERT_OUTTYPES = ("f16", "f32", "q8_0", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K")


@main.command()
@click.argument("hf_dir", type=_PATH)
@click.argument("out_dir", type=_PATH)
@click.option(
    "--outtype",
    type=click.Choice(CONVERT_OUTTYPES, case_sensitive=False),
    default="f16",
    show_default=True,
    help="Storage of the text model's matrices: f16, f32, q8_0 (8-bit, about half of f16), "
    "or a llama.cpp K-quant (Q3_K_M, Q4_K_M, Q5_K_M, Q6_K: written as F16, then quantized by "
    "llama.cpp's own quantizer, as community GGUFs are). Norms and biases stay f32; the "
    "encoder's conv kernels are f16.",
)
@click.option(
    "--mmproj-outtype",
    type=click.Choice(["f16", "f32", "q8_0"], case_sensitive=False),
    default=None,
    help="Storage of the audio projector (default: the --outtype for f16/f32/q8_0, f16 for "
    "the K-quants).",
)
@handle_errors
def convert(hf_dir: Path, out_dir: Path, outtype: str, mmproj_outtype: str | None) -> None:
    """Convert a Hugging Face Qwen2-Audio checkpoint in HF_DIR to a GGUF pair in OUT_DIR.

    Writes the text model (<name>.<OUTTYPE>.gguf) and the audio projector
    (<name>.mmproj-<type>.gguf). Tensors are streamed one at a time, so memory stays
    near the largest tensor; nothing is left half-written on failure. A K-quant needs
    room for the F16 text model next to the output while it is quantized.

    \b
    Examples:
      qaudio convert Qwen2-Audio-7B-Instruct ./gguf
      qaudio convert Qwen2-Audio-7B-Instruct ./gguf --outtype Q4_K_M --mmproj-outtype q8_0
    """
    from ..convert import convert_checkpoint

    with click.progressbar(length=1, label="converting", file=sys.stderr, show_pos=True) as bar:

        def progress(name: str, done: int, total: int) -> None:
            bar.length = total
            bar.update(done - bar.pos)

        if outtype.upper() in CONVERT_OUTTYPES[3:]:
            click.echo(
                f"the text model is written as F16, then quantized to {outtype.upper()} by "
                "llama.cpp (the pause after its last tensor)",
                err=True,
            )

        result = convert_checkpoint(
            hf_dir, out_dir, outtype=outtype, mmproj_outtype=mmproj_outtype, progress=progress
        )
    click.echo(f"model:  {result.model_path}")
    click.echo(f"mmproj: {result.mmproj_path}")


@main.command()
@handle_errors
def selftest() -> None:
    """Check the install: build a tiny model, run the whole pipeline offline, report the backend.

    \b
    Examples:
      qaudio selftest
      qaudio selftest --debug
    """
    from ..selftest import GPU_TOLERANCE, run_selftest

    click.echo("building a tiny Qwen2-Audio and running it through llama.cpp ...", err=True)
    r = run_selftest()
    b = r.backend
    click.echo(f"llama-cpp-python {b.version}; backends: {', '.join(b.backends)}")
    if b.gpu_offload:
        click.echo("GPU offload: available")
    else:
        from ..models.hardware import cpu_only_build_warning, detect

        click.echo("GPU offload: not available in this build (CPU only)")
        warning = cpu_only_build_warning(detect())
        if warning:  # a GPU is there but this llama.cpp cannot use it
            click.echo(f"warning: {warning}", err=True)
    click.echo(r.cpu_kernels)
    if r.cpu_kernels_cause:
        click.echo(r.cpu_kernels_cause)
    click.echo(f"tiny models built and converted in {r.build_s:.1f} s")
    click.echo(
        f"pipeline: {r.audio_seconds:.1f} s clip -> {r.audio_tokens} audio tokens -> "
        f"{r.completion_tokens} tokens generated; greedy runs identical: "
        f"{'yes' if r.deterministic else 'NO'}"
    )
    for c in r.quantized:
        verdict = f"ok (logits cosine {c.cosine:.4f} to f32)" if c.ok else f"FAILED: {c.detail}"
        click.echo(f"quantized {c.level} + q8_0 projector, {c.audio_path} path: {verdict}")
    if r.gpu_max_abs_diff is not None:
        same = "same" if r.gpu_same_top1 else "DIFFERENT"
        click.echo(
            f"GPU vs CPU: logits within {r.gpu_max_abs_diff:.2e} (tolerance {GPU_TOLERANCE:.0e}), "
            f"{same} next token"
        )
    if not r.ok:
        click.echo(
            "error: the self-test failed; run `qaudio selftest --debug` and report the output",
            err=True,
        )
        sys.exit(1)
    click.echo("OK")
