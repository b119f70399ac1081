"""``qaudio listen``: live captions (or a spoken conversation) from the microphone or a
recording, through the Realtime protocol of ``qaudio serve``.

There is one path: this command is always a client of a ``/v1/realtime`` endpoint. With
``--server URL`` it is a remote one; without, the model is planned, pulled and loaded as
for ``qaudio run`` and served on 127.0.0.1 (a free port, a random key) from a thread of
this process, for this session only (:mod:`.listen_server`).
"""

from __future__ import annotations

import datetime
import queue
import sys
import threading
from pathlib import Path
from typing import Any

import click

from ..transcription.writers import FORMATS
from .listen_server import local_server
from .main import handle_errors, main
from .options import Finite, check_model_options, model_options
from .remote import api_key, first_server
from .transcribe import output_formats

LOCAL_ONLY = (  # model options that only mean something for the local server
    "quant",
    "model_file",
    "mmproj_file",
    "n_ctx",
    "allow_long_context",
    "n_gpu_layers",
    "kv_type",
    "vram",
    "ram",
    "force",
    "threads",
    "no_mmproj_gpu",
    "cpu_kernels",
    "audio_path",
)


@main.command()
@click.option(
    "-i",
    "--input",
    "input_path",
    metavar="FILE|-",
    default=None,
    help="Read a recording (any format `qaudio run` reads; '-' for standard input) "
    "instead of the microphone, sent as if it were being recorded now.",
)
@click.option(
    "--speed",
    type=Finite(0, 1000),
    default=1.0,
    show_default=True,
    help="Pace of --input: 1 real time, 0 as fast as possible, 2 twice real time.",
)
@click.option("--device", default=None, help="Microphone: its number or part of its name.")
@click.option("--list-devices", is_flag=True, help="List the microphones and exit.")
@click.option("--chat", is_flag=True, help="Talk with the model: each turn gets an answer.")
@click.option(
    "--system", "--instructions", "instructions", default=None, help="System message (--chat)."
)
@click.option("--language", default=None, help="The spoken language (transcription).")
@click.option("--prompt", default=None, help="A prompt for the transcription.")
@click.option(
    "--vad-threshold",
    type=Finite(0, 1),
    default=0.5,
    show_default=True,
    help="Speech probability that starts a turn.",
)
@click.option(
    "--silence-ms",
    type=click.IntRange(0, 10_000),
    default=500,
    show_default=True,
    help="Silence that ends a turn (the wait before its text comes).",
)
@click.option(
    "--prefix-ms",
    type=click.IntRange(0, 10_000),
    default=300,
    show_default=True,
    help="Audio kept before the speech found.",
)
@click.option(
    "--manual",
    is_flag=True,
    help="No voice detection: Enter ends each turn (at the microphone), the end of the "
    "input ends the one turn of --input.",
)
@click.option(
    "--rate",
    type=click.Choice(["16000", "24000"]),
    default="16000",
    show_default=True,
    help="PCM rate sent: 16000 is the model's own, 24000 OpenAI's.",
)
@click.option(
    "--chunk-ms",
    type=click.IntRange(20, 100),
    default=40,
    show_default=True,
    help="Milliseconds of audio per message.",
)
@click.option(
    "-o",
    "--output-format",
    "formats",
    multiple=True,
    help=f"Write the transcript when the session ends: {', '.join(FORMATS)} or all; "
    "repeat, or separate with commas (--chat: the answers, timed at the turns).",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where -o writes.",
)
@click.option(
    "--name",
    default=None,
    help="File name for -o, without extension (default: the input's name, or "
    "listen-DATE-TIME at the microphone).",
)
@click.option(
    "--server",
    metavar="URL",
    default=None,
    help="Use a running `qaudio serve` (e.g. http://HOST:8000) instead of loading the model "
    "(default: $QAUDIO_SERVER, or the first of $QAUDIO_SERVERS, as for transcribe).",
)
@click.option("--api-key", default=None, help="The key of --server (default $QAUDIO_API_KEY).")
@click.option(
    "--api-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Read the key of --server from this file.",
)
@model_options
@handle_errors
@click.pass_context
def listen(ctx: click.Context, **opts: Any) -> None:
    """Live captions from the microphone or a recording; --chat to talk with the model.

    Each turn (found by the server's voice detection, or ended with Enter in --manual
    mode) is shown while it is spoken, then printed with its time in the session:
    `[mm:ss.s -> mm:ss.s] text` (only those lines when stdout is not a terminal). Ctrl+C
    stops listening and finishes the turns under way (Ctrl+C again: at once); -o then
    writes what was finished, each file whole or not at all.

    Without --server the model is loaded here as for `qaudio run` (planned, pulled once,
    offline after) and served on 127.0.0.1 for this session only. The microphone needs
    `pip install 'qaudio-local[mic]'` and PortAudio (libportaudio2, brew portaudio).

    \b
    Examples:
      qaudio listen                                   # captions from the microphone
      qaudio listen --chat --system "Answer briefly."
      qaudio listen --input talk.flac -o srt,txt      # paced at real time
      qaudio listen --input talk.flac --speed 0 --server http://gpu-box:8000 --api-key-file k
      qaudio listen --list-devices
      qaudio listen --device 2 --manual --language English  # Enter ends each turn
    """
    from .listen_audio import import_sounddevice, input_devices

    if opts["list_devices"]:
        _print_devices(input_devices(import_sounddevice()))
        return
    formats = output_formats(opts["formats"])
    opts["server"] = opts["server"] or first_server()
    _check_usage(ctx, opts)
    config = _config(opts)
    if opts["server"]:
        url, key = _realtime_url(opts["server"], config.chat, opts["model_name"]), _api_key(opts)
    else:
        check_model_options(opts)
    source = _source(opts, config.rate)  # a bad file or no microphone: before the model loads
    stem = opts["output_dir"] / (opts["name"] or _default_name(opts["input_path"]))
    try:
        if opts["server"]:
            session(url, key, config, source, formats, stem, opts)
            return
        with local_server(opts) as (base, key, model_id):
            config = _config(opts, model=model_id)
            url = _realtime_url(base, config.chat, model_id)
            session(url, key, config, source, formats, stem, opts)
    finally:
        source.close()


def _check_usage(ctx: click.Context, opts: dict[str, Any]) -> None:
    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)

    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    if opts["server"]:
        local = [flag(n) for n in LOCAL_ONLY if given(n)]
        if local:
            raise click.UsageError(f"{', '.join(local)}: for the local model, not with --server")
    elif opts["api_key"] or opts["api_key_file"]:
        raise click.UsageError("--api-key is for --server (the local server makes its own key)")
    if opts["chat"] and (opts["prompt"] or opts["language"]):
        raise click.UsageError("--prompt and --language are for transcription; --chat: --system")
    if opts["instructions"] is not None and not opts["chat"]:
        raise click.UsageError("--system is for --chat")
    if opts["input_path"] is not None and opts["device"] is not None:
        raise click.UsageError("--device is for the microphone, not with --input")
    if opts["input_path"] is None and given("speed"):
        raise click.UsageError("--speed is for --input (the microphone is real time)")


def _config(opts: dict[str, Any], model: str | None = None) -> Any:
    from .realtime_client import SessionConfig, TurnDetection

    vad = TurnDetection(opts["vad_threshold"], opts["prefix_ms"], opts["silence_ms"])
    return SessionConfig(
        chat=opts["chat"],
        rate=int(opts["rate"]),
        turn_detection=None if opts["manual"] else vad,
        model=model or opts["model_name"],
        language=opts["language"],
        prompt=opts["prompt"],
        instructions=opts["instructions"],
    )


def _source(opts: dict[str, Any], rate: int) -> Any:
    from .listen_audio import FileSource, MicrophoneSource

    path = opts["input_path"]
    if path is None:
        device = opts["device"]
        device = int(device) if device is not None and device.strip().isdigit() else device
        return MicrophoneSource(rate=rate, chunk_ms=opts["chunk_ms"], device=device)
    if path == "-":
        from ..audio import read_stdin_audio

        data: Any = read_stdin_audio().getvalue()
        return FileSource(data, "stdin", rate=rate, chunk_ms=opts["chunk_ms"], speed=opts["speed"])
    return FileSource(
        Path(path).expanduser(), path, rate=rate, chunk_ms=opts["chunk_ms"], speed=opts["speed"]
    )


def _default_name(input_path: str | None) -> str:
    if input_path is None:
        return f"listen-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    return "stdin" if input_path == "-" else Path(input_path).stem


def _realtime_url(server: str, chat: bool, model: str | None) -> str:
    from .realtime_client import realtime_url

    try:
        return realtime_url(server, transcription=not chat, model=model)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--server") from exc


def _api_key(opts: dict[str, Any]) -> str | None:
    return api_key(opts)  # as transcribe, run and chat read it


def _print_devices(devices: list[Any]) -> None:
    if not devices:
        click.echo("no microphone found (no input device)", err=True)
        return
    for d in devices:
        mark = "*" if d.default else " "
        click.echo(f"{mark} {d.index:3d}  {d.name}  ({d.channels} ch, {d.rate} Hz)")
    click.echo("* the default; pick another with --device N (or part of its name)", err=True)


def session(
    url: str,
    key: str | None,
    config: Any,
    source: Any,
    formats: list[str],
    stem: Path,
    opts: dict[str, Any],
) -> None:
    """Connect, run the session with captions on the terminal, write the transcript."""
    from .captions import CaptionView, LiveTranscript
    from .listen_session import LiveSession
    from .realtime_client import RealtimeConnection

    view = CaptionView(sys.stdout, sys.stderr, tty=sys.stdout.isatty())
    transcript = LiveTranscript(config.chat, config.turn_detection is None, view)
    microphone = opts["input_path"] is None
    result = None
    try:
        with RealtimeConnection.open(url, key) as conn:
            commits: queue.Queue[object] = queue.Queue()
            manual = config.turn_detection is None
            hint = "Ctrl+C to stop" + (", Enter to end a turn" if manual and microphone else "")
            click.echo(f"listening to {source.description} ({hint})", err=True)
            if microphone and manual and sys.stdin.isatty():
                _enter_commits(commits)
            live = LiveSession(conn, source, config, transcript, commits=commits)
            try:
                result = live.run()
            finally:
                view.close()
    finally:
        if result is not None or transcript.segments():  # a failed session: what finished
            _write(transcript, formats, stem, config, opts, result)
    if result is not None and (result.aborted or (result.interrupted and not microphone)):
        sys.exit(130)


def _enter_commits(commits: queue.Queue[object]) -> None:
    """Each Enter on the terminal asks for a commit (manual turns at the microphone)."""

    def read() -> None:
        for _ in sys.stdin:
            commits.put(None)

    threading.Thread(target=read, name="qaudio-listen-enter", daemon=True).start()


def _write(
    transcript: Any, formats: list[str], stem: Path, config: Any, opts: dict[str, Any], result: Any
) -> None:
    from ..transcription import TranscriptionInfo, write_outputs

    segments = transcript.segments()
    sent_s = (result.sent_ms if result is not None else 0) / 1000
    left = f", {result.unfinished} left unfinished" if result and result.unfinished else ""
    summary = f"{len(segments)} turn(s) in {sent_s:.1f} s of audio{left}"
    if not formats:
        click.echo(summary, err=True)
        return
    info = TranscriptionInfo(
        source=opts["input_path"] or "microphone",
        task="chat" if config.chat else "transcribe",
        language=opts["language"] or "unknown",
        duration=sent_s,
        speech=sum(s.end - s.start for s in segments),
        segments=len(segments),
        vad="server" if config.turn_detection is not None else "manual",
    )
    paths = write_outputs(stem, formats, segments, info)
    click.echo(f"{summary}; wrote {', '.join(str(p) for p in paths)}", err=True)
