"""``qaudio run``: answer a prompt about audio files, streaming the answer."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..config import DEFAULT_PROMPT, DEFAULT_SYSTEM_PROMPT
from .main import handle_errors, main
from .options import check_model_options, load_model, model_options, sampling_from, sampling_options
from .remote import check_remote_usage, open_servers, server_options


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
@sampling_options
@model_options
@server_options
@handle_errors
@click.pass_context
def run(
    ctx: click.Context,
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

    \b
    Examples:
      qaudio run talk.wav
      qaudio run talk.wav --prompt "Translate this into English."
      qaudio run a.wav b.wav -p "Which of the two is louder?" --json
      cat clip.flac | qaudio run - --quant Q5_K_M
      qaudio run talk.wav --server http://gpu-box:8000
    """
    from ..audio import load_audio, read_stdin_audio

    remote = check_remote_usage(ctx, opts)
    if not remote:
        check_model_options(opts)  # usage errors before any audio is read or model pulled
    clips = [load_audio(read_stdin_audio() if a == "-" else a) for a in audio]
    sampling = sampling_from(opts)
    with open_servers(opts) if remote else load_model(opts) as model:
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
