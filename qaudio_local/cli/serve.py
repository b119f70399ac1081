"""``qaudio serve``: the OpenAI-compatible server."""

from __future__ import annotations

import ipaddress
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..server.run import LOG_LEVELS
from .main import debug_requested, handle_errors, main
from .options import check_model_options, load_model, model_options

if TYPE_CHECKING:
    from ..engine.model import AudioModel

SERVER_LOGGER = "qaudio_local.server"  # the app's logger; the access log is its child
ACCESS_LOGGER = "qaudio_local.server.access"
F = TypeVar("F", bound=Callable[..., Any])


def _keep_alive(value: str) -> float | None:
    from ..errors import OptionError
    from ..models.resident import parse_keep_alive

    try:
        return parse_keep_alive(value)
    except OptionError as exc:
        msg = str(exc).removeprefix("--keep-alive ")
        raise click.BadParameter(msg, param_hint="--keep-alive") from None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


_SERVER_OPTIONS = [
    click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on."),
    click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535)),
    click.option("--api-key", default=None, help="Require this key (Authorization: Bearer KEY)."),
    click.option(
        "--api-key-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="Read the key from this file (keeps it out of the process list).",
    ),
    click.option(
        "--parallel",
        default=4,
        show_default=True,
        type=click.IntRange(1, 64),
        help="Requests decoded at once; more wait in a queue.",
    ),
    click.option(
        "--max-queue",
        default=16,
        show_default=True,
        type=click.IntRange(0, 10_000),
        help="Requests that may wait beyond --parallel; more get 429 with Retry-After.",
    ),
    click.option(
        "--max-body-mb",
        default=100,
        show_default=True,
        type=click.IntRange(1, 4096),
        help="Largest request body (uploads); larger ones get 413 before they are read.",
    ),
    click.option(
        "--allow-remote-audio",
        is_flag=True,
        help="Fetch audio_url parts from http(s) URLs (off: only data: URIs and input_audio).",
    ),
    click.option(
        "--max-sessions",
        default=8,
        show_default=True,
        type=click.IntRange(1, 1000),
        help="Live voice sessions (GET /v1/realtime, WebSocket) at once; more are refused (429).",
    ),
    click.option(
        "--max-session-seconds",
        default=3600.0,
        show_default=True,
        type=click.FloatRange(1, 7 * 86400),
        help="A live session is closed after this long.",
    ),
    click.option(
        "--session-idle-seconds",
        default=300.0,
        show_default=True,
        type=click.FloatRange(0.1, 86400),
        help="A live session that sends nothing for this long is closed.",
    ),
    click.option(
        "--deterministic",
        is_flag=True,
        help="One sequence, flash attention off, each live transcription turn alone from an "
        "empty cache: turn texts equal `qaudio transcribe --deterministic` (implies --parallel 1).",
    ),
    click.option(
        "--keep-alive",
        default="5m",
        show_default=True,
        callback=lambda ctx, param, value: _keep_alive(value),
        help="Unload the model after it has served nothing for this long (its memory, GPU "
        "memory too, goes back); the next request loads it again and waits. Ollama's syntax: "
        "5m, 90s, 1h30m, 300; 0 after each request; -1 never. POST /unload unloads at once.",
    ),
    click.option(
        "--alias",
        "aliases",
        multiple=True,
        help="Another name clients may use for the model (e.g. whisper-1); repeatable. The "
        "registry's names of the model's family (qwen2-audio-7b-instruct, qwen2-audio, ...) are "
        "always accepted.",
    ),
    click.option(
        "--log-level",
        type=click.Choice(LOG_LEVELS, case_sensitive=False),
        default="info",
        show_default=True,
        help="What the server logs on stderr: info adds a line per request (method, path, "
        "status, seconds; never keys, query strings or bodies), debug adds uvicorn's detail, "
        "warning and error only problems.",
    ),
    click.option("--quiet", is_flag=True, help="No line per request (the access log)."),
    click.option(
        "--no-ui",
        is_flag=True,
        help="Do not serve the page at / (the API only).",
    ),
    click.option(
        "--cors-origin",
        "cors_origins",
        multiple=True,
        metavar="ORIGIN",
        help="Let pages from this origin (e.g. http://localhost:3000) call the API from a "
        "browser; repeatable. Off by default: only the server's own page can.",
    ),
]


def server_options(func: F) -> F:
    """The options of `qaudio serve` (and `qaudio ui`): address, key, limits, the model."""
    for option in reversed(_SERVER_OPTIONS):
        func = option(func)
    return model_options(func)


@main.command()
@server_options
@handle_errors
@click.pass_context
def serve(ctx: click.Context, **opts: Any) -> None:
    """Serve the model over an OpenAI-compatible HTTP API.

    Endpoints: POST /v1/chat/completions (text and input_audio parts, streaming, usage),
    POST /v1/audio/transcriptions and /v1/audio/translations (json, text, srt, vtt,
    verbose_json; streaming), GET /v1/realtime (live voice over a WebSocket, OpenAI's
    Realtime protocol: ?intent=transcription for live captions, else a spoken
    conversation), GET /v1/models, GET /health (503 while the model loads; then the
    model's state), POST /unload (give the model's memory back now).
    The model is planned, pulled once and loaded as for `qaudio run`; the server listens
    at once and says "serving ..." when the model is ready. If the model cannot be
    loaded, the server stops with the error (exit code 1 or 2); Ctrl+C or SIGTERM stops
    it normally (exit code 0). One line per request on stderr (--quiet: none).
    After --keep-alive (5m) with no request the model is unloaded, and the next request
    loads it again (it waits; the rest of the server stays up).

    \b
    Examples:
      qaudio serve
      qaudio serve --port 8080 --parallel 8 --api-key-file ~/.qaudio-key
      qaudio serve --model-file m.gguf --mmproj-file mm.gguf --alias whisper-1
      qaudio serve --keep-alive 30m       # qaudio serve --keep-alive -1: never unload

    The page at http://127.0.0.1:8000/ (--no-ui: none) talks, transcribes and captions
    through this API; `qaudio ui` also opens it in the browser.
    """
    serve_with(ctx, opts)


def serve_with(
    ctx: click.Context, opts: dict[str, Any], then: Callable[[str], None] | None = None
) -> None:
    """Serve as the options say; ``then(page_url)`` once the model is loaded."""
    import functools

    from ..live.options import LiveLimits
    from ..server.run import ServerSettings, model_names, run

    check_model_options(opts)
    key = opts["api_key"]
    if opts["api_key_file"] is not None:
        key = opts["api_key_file"].read_text().strip()
        if not key:
            raise click.BadParameter("the file is empty", param_hint="--api-key-file")
    if not _is_loopback(opts["host"]) and key is None:
        click.echo(
            f"note: listening on {opts['host']} without --api-key: anyone who can reach this "
            "machine can use the model",
            err=True,
        )
    model_id, family = model_names(opts["model_name"], opts["model_file"])
    settings = ServerSettings(
        host=opts["host"],
        port=opts["port"],
        api_key=key,
        model_id=model_id,
        aliases=(*opts["aliases"], *family),
        parallel=1 if opts["deterministic"] else opts["parallel"],
        max_queue=opts["max_queue"],
        max_body=opts["max_body_mb"] * 2**20,
        allow_remote_audio=opts["allow_remote_audio"],
        max_sessions=opts["max_sessions"],
        live=LiveLimits(
            max_session_seconds=opts["max_session_seconds"],
            idle_seconds=opts["session_idle_seconds"],
        ),
        deterministic=opts["deterministic"],
        keep_alive=opts["keep_alive"],
        log_level=opts["log_level"].lower(),
        ui=not opts["no_ui"],
        cors_origins=tuple(opts["cors_origins"]),
    )
    _log_to_stderr(settings.log_level, quiet=opts["quiet"], tracebacks=debug_requested(ctx))

    def ready(model: AudioModel) -> None:
        click.echo(
            f"serving {model_id} on {settings.url} ({settings.parallel} in parallel, context "
            f"{model.n_ctx})",
            err=True,
        )
        if settings.ui:
            click.echo(f"page: {settings.page_url}", err=True)
        if then is not None:
            then(settings.page_url)

    plans: list[Any] = []  # the plan of the last load (none for --model-file)
    run(
        settings,
        functools.partial(
            load_model,
            opts,
            parallel=settings.parallel,
            deterministic=settings.deterministic,
            on_plan=plans.append,
        ),
        on_loading=lambda name: click.echo(f"loading {name} ...", err=True),
        on_ready=ready,
        planned=lambda: plans[-1] if plans else None,
    )


class _StderrLines(logging.Formatter):
    """Access lines as they are; other records as ``warning: ...``, with the traceback of
    an exception only with --debug."""

    def __init__(self, tracebacks: bool) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            tb = self.formatException(record.exc_info) if self.tracebacks else ""  # type: ignore[arg-type]
            msg += f"\n{tb}" if tb else f": {type(exc).__name__}: {exc}"
        if record.name == ACCESS_LOGGER:
            return msg
        return f"{record.levelname.lower()}: {msg}"


def _log_to_stderr(level: str, *, quiet: bool, tracebacks: bool) -> None:
    """The server's log (the access log at INFO, its errors) on stderr at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name("qaudio serve")
    handler.setFormatter(_StderrLines(tracebacks))
    log = logging.getLogger(SERVER_LOGGER)
    for old in [h for h in log.handlers if h.get_name() == "qaudio serve"]:  # a second run
        log.removeHandler(old)
    log.addHandler(handler)
    log.setLevel(level.upper())
    log.propagate = False  # not twice when --debug has set up the root logger
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.WARNING if quiet else logging.NOTSET)
