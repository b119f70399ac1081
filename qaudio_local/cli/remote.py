"""``--server URL`` (repeatable), ``--api-key``, ``--api-key-file`` and ``--server-timeout``
for ``qaudio transcribe``, ``run`` and ``chat``: the model is then remote (one or many
OpenAI-compatible servers) and nothing is planned, pulled or loaded here."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

# model options that only mean something for a model loaded here
LOCAL_ONLY = (
    "model_name",
    "quant",
    "model_file",
    "mmproj_file",
    "n_ctx",
    "n_gpu_layers",
    "kv_type",
    "force",
    "threads",
    "no_mmproj_gpu",
    "cpu_kernels",
    "audio_path",
    "allow_long_context",
    "vram",
    "ram",
)

_OPTIONS = [
    click.option(
        "--server",
        "servers",
        metavar="URL[@N]",
        multiple=True,
        help="Use this OpenAI-compatible server (qaudio serve, llama-server, vLLM) instead "
        "of a local model; repeat for several. @N: requests it takes at once (default: "
        "what qaudio serve advertises, else 1). Default: $QAUDIO_SERVERS (comma-separated) "
        "or $QAUDIO_SERVER.",
    ),
    click.option("--api-key", default=None, help="The key of --server (default $QAUDIO_API_KEY)."),
    click.option(
        "--api-key-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help="Read the key of --server from this file.",
    ),
    click.option(
        "--server-timeout",
        type=click.FloatRange(0.1, 86400),
        default=600.0,
        show_default=True,
        help="Seconds a server may take over a request's answer (and may stay silent) "
        "before the request goes elsewhere.",
    ),
]


def server_options(func: F) -> F:
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


def servers_given(opts: dict[str, Any]) -> list[str]:
    """The --server values, else those of $QAUDIO_SERVERS / $QAUDIO_SERVER."""
    if opts.get("servers"):
        return list(opts["servers"])
    env = os.environ.get("QAUDIO_SERVERS") or os.environ.get("QAUDIO_SERVER") or ""
    return [s for s in re.split(r"[,\s]+", env) if s]


def first_server() -> str | None:
    """For ``qaudio listen`` (a live session is one connection): the first server that
    $QAUDIO_SERVERS / $QAUDIO_SERVER name, without its ``@N``."""
    given = servers_given({})
    if not given:
        return None
    head, at, tail = given[0].rpartition("@")
    return head if at and tail.isdigit() else given[0]


def check_remote_usage(ctx: click.Context, opts: dict[str, Any]) -> bool:
    """Whether the model is remote; usage errors for options that do not go with that."""

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)

    servers = servers_given(opts)
    if servers:
        local = ["--" + n.replace("_", "-") for n in LOCAL_ONLY if n in opts and given(n)]
        if local:
            raise click.UsageError(f"{', '.join(local)}: for a local model, not with --server")
    elif opts["api_key"] or opts["api_key_file"]:
        raise click.UsageError("--api-key is for --server")
    return bool(servers)


def api_key(opts: dict[str, Any]) -> str | None:
    if opts["api_key_file"] is None:
        return opts["api_key"] or os.environ.get("QAUDIO_API_KEY") or None
    key = Path(opts["api_key_file"]).read_text().strip()
    if not key:
        raise click.BadParameter("the file is empty", param_hint="--api-key-file")
    return key


def open_servers(opts: dict[str, Any], on_change: Callable[[], None] | None = None) -> Any:
    """A :class:`~qaudio_local.remote.RemoteModel` over the servers the options name; says
    on stderr which servers take how much."""
    from ..remote import open_remote, parse_server

    try:
        specs = [parse_server(s) for s in servers_given(opts)]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--server") from exc
    model = open_remote(specs, api_key(opts), timeout=opts["server_timeout"], on_change=on_change)
    parts = []
    for s in model.pool.stats():
        state = f"down for now ({s.last_error})" if s.set_aside else f"{s.capacity} at once"
        parts.append(f"{s.name} {state}")
    click.echo(f"using {model.model_id} on {', '.join(parts)}", err=True)
    return model


def shares(model: Any) -> str:
    """Each server's share so far, for the progress line: ``host:port 12 (40%)``."""
    stats = model.pool.stats()
    total = sum(s.done for s in stats) or 1
    out = []
    for s in stats:
        mark = " down" if s.set_aside else ""
        out.append(f"{s.name} {s.done} ({100 * s.done / total:.0f}%){mark}")
    return "; ".join(out)


def report(model: Any) -> None:
    """One line per server: its share, the audio it heard and its speed, its failures."""
    stats = model.pool.stats()
    total = sum(s.done for s in stats) or 1
    for s in stats:
        speed = s.audio_seconds / s.busy_seconds if s.busy_seconds else 0.0
        failed = f", {s.failures} failed (sent elsewhere)" if s.failures else ""
        click.echo(
            f"server {s.name}: {s.done} requests ({100 * s.done / total:.0f}%), "
            f"{s.audio_seconds:.0f} s of audio, {speed:.1f} s of audio per busy second"
            f"{failed}",
            err=True,
        )
