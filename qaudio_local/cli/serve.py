"""``qaudio serve``: the OpenAI-compatible server."""

from __future__ import annotations

import ipaddress
import threading
from pathlib import Path
from typing import Any

import click

from .main import handle_errors, main
from .options import check_model_options, load_model, model_options

CTX_PER_SEQUENCE = 2048


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--api-key", default=None, help="Require this key (Authorization: Bearer KEY).")
@click.option(
    "--api-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Read the key from this file (keeps it out of the process list).",
)
@click.option(
    "--parallel",
    default=4,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Requests decoded at once; more wait in a queue.",
)
@click.option(
    "--max-queue",
    default=16,
    show_default=True,
    type=click.IntRange(0, 10_000),
    help="Requests that may wait beyond --parallel; more get 429 with Retry-After.",
)
@click.option(
    "--max-body-mb",
    default=100,
    show_default=True,
    type=click.IntRange(1, 4096),
    help="Largest request body (uploads); larger ones get 413 before they are read.",
)
@click.option(
    "--allow-remote-audio",
    is_flag=True,
    help="Fetch audio_url parts from http(s) URLs (off: only data: URIs and input_audio).",
)
@click.option(
    "--alias",
    "aliases",
    multiple=True,
    help="Another name clients may use for the model (e.g. whisper-1); repeatable.",
)
@model_options
@handle_errors
@click.pass_context
def serve(ctx: click.Context, **opts: Any) -> None:
    """Serve the model over an OpenAI-compatible HTTP API.

    Endpoints: POST /v1/chat/completions (text and input_audio parts, streaming, usage),
    POST /v1/audio/transcriptions and /v1/audio/translations (json, text, srt, vtt,
    verbose_json; streaming), GET /v1/models, GET /health (503 while the model loads).
    The model is planned, pulled once and loaded as for `qaudio run`.

    \b
    Examples:
      qaudio serve
      qaudio serve --port 8080 --parallel 8 --api-key-file ~/.qaudio-key
      qaudio serve --model-file m.gguf --mmproj-file mm.gguf --alias whisper-1
    """
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401
        import uvicorn
    except ImportError as exc:
        from ..errors import DependencyMissingError

        raise DependencyMissingError(exc.name or "fastapi", "server") from exc
    from ..server.app import create_app
    from ..server.common import ServerState
    from ..server.http import HTTP_READ_LIMIT

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
    parallel = opts["parallel"]
    if ctx.get_parameter_source("n_ctx") is click.core.ParameterSource.DEFAULT:
        opts["n_ctx"] = max(opts["n_ctx"], parallel * CTX_PER_SEQUENCE // 2)
    if opts["model_file"] is not None:
        name = Path(opts["model_file"]).name.removesuffix(".gguf")
    else:
        name = opts["model_name"] or _default_model()
    state = ServerState(
        model_id=name,
        aliases=tuple(opts["aliases"]),
        parallel=parallel,
        max_queue=opts["max_queue"],
        max_body=opts["max_body_mb"] * 2**20,
        allow_remote_audio=opts["allow_remote_audio"],
    )
    loaded: list[Any] = []

    def load() -> None:
        try:
            model = load_model(opts, n_parallel=parallel)
        except Exception as exc:  # /health says it; the server keeps answering
            state.load_error = f"the model could not be loaded: {exc}"
            click.echo(f"error: {state.load_error}", err=True)
            return
        loaded.append(model)
        state.model = model
        click.echo(f"ready: {name} ({parallel} in parallel, context {model.n_ctx})", err=True)

    config = uvicorn.Config(
        create_app(state, key),
        host=opts["host"],
        port=opts["port"],
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
        h11_max_incomplete_event_size=HTTP_READ_LIMIT,  # big headers get 431, not a reset
    )
    server = uvicorn.Server(config)
    click.echo(f"serving {name} on http://{opts['host']}:{opts['port']}/v1 ...", err=True)
    threading.Thread(target=load, name="qaudio-load", daemon=True).start()
    try:
        server.run()
    finally:
        for model in loaded:
            model.close()


def _default_model() -> str:
    from ..models.registry import load_catalog

    entry, _ = load_catalog().resolve(None)
    return str(entry.name)
