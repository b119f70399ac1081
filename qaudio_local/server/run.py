"""The server's lifecycle: :func:`run` listens at once, loads the model in the background,
serves until stopped, and closes the model.

``qaudio serve`` is a thin command over this; a program can serve a model the same way::

    from qaudio_local.models.load import load_model
    from qaudio_local.server.run import ServerSettings, run

    run(ServerSettings(port=8080, parallel=4), lambda: load_model(parallel=4))

While the model loads, ``GET /health`` answers 503 ``{"status": "loading"}`` and the API
routes 503 with OpenAI's error shape. A model that cannot be loaded stops the server and
its error is raised from :func:`run`, so a service manager sees the process fail. Once
loaded, the model is a :class:`~qaudio_local.models.resident.ResidentModel`: idle for
``keep_alive`` it is unloaded (``POST /unload`` does it at once), and the next request
loads it again, waiting for it (``/health`` says which state it is in). Ctrl+C
or SIGTERM is a normal stop: :func:`run` returns. New routes (the realtime endpoint, the
page) plug into :func:`~.app.create_app`.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DependencyMissingError, QAudioError
from ..live.options import LiveLimits
from ..models.resident import DEFAULT_KEEP_ALIVE, ResidentModel, format_keep_alive

if TYPE_CHECKING:
    from ..engine.model import AudioModel

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class ServerSettings:
    """How the server listens and what it accepts.

    Attributes:
        host: Address to listen on (default loopback only).
        port: TCP port.
        api_key: Require ``Authorization: Bearer <key>`` (``None``: open).
        model_id: The name clients use; ``None``: :func:`model_names` decides.
        aliases: More names clients may use for the model.
        parallel: Requests decoded at once (the model must be loaded with as many
            sequences).
        max_queue: Requests that may wait beyond those; more get 429.
        max_body: Largest request body in bytes; larger get 413 before they are read.
        allow_remote_audio: Fetch ``audio_url`` parts from http(s).
        max_sessions: Live sessions (``GET /v1/realtime``, WebSocket) at once; more
            upgrades are refused with 429.
        live: What one live session may hold (audio, event size) and how long it may
            last (in all, and idle).
        deterministic: Load the model with one sequence and flash attention off, and
            transcribe each live turn alone from an empty cache: its text is then exactly
            ``qaudio transcribe --deterministic``'s (``parallel`` is 1).
        keep_alive: Seconds the model stays loaded when no request uses it (then it is
            unloaded, and loaded again by the next request); ``0``: after each request,
            ``None``: for ever. Ollama's default, five minutes.
        log_level: uvicorn's own messages: ``"debug"``, ``"info"``, ``"warning"`` or
            ``"error"`` (the access log is the ``qaudio_local.server.access`` logger's).
        ui: Serve the page at ``/`` (:mod:`.ui`).
        cors_origins: Origins of other pages allowed to call the API (CORS); none: closed.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    model_id: str | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)
    parallel: int = 4
    max_queue: int = 16
    max_body: int = 100 * 2**20
    allow_remote_audio: bool = False
    max_sessions: int = 8
    live: LiveLimits = field(default_factory=LiveLimits)
    deterministic: bool = False
    keep_alive: float | None = DEFAULT_KEEP_ALIVE
    log_level: str = "info"
    ui: bool = True
    cors_origins: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        """The API's base URL (``http://host:port/v1``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    @property
    def page_url(self) -> str:
        """The page's URL (``http://host:port/``); a wildcard address as loopback."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"


def model_names(
    model: str | None = None, model_file: str | Path | None = None
) -> tuple[str, tuple[str, ...]]:
    """The id a served model goes by, and the other names clients may use for it.

    The id is the file's stem for ``model_file``, else the registry name asked for (or
    the default model's). The registry's name and aliases of the model's family are always
    accepted: a registry model's own entry; for a file, the entry one of whose files it is
    by name, else the default model's (this project serves one family, Qwen2-Audio, and
    `qaudio convert` names its files after the checkpoint).
    """
    from ..models.registry import load_catalog

    try:
        catalog = load_catalog()
        if model_file is not None:
            entry = catalog.find_file(model_file) or catalog.get()
        else:
            entry, _ = catalog.resolve(model)
    except QAudioError:  # a broken user registry or an unknown name: loading will say it
        entry = None
    if model_file is not None:
        model_id = Path(model_file).name.removesuffix(".gguf")
    else:
        model_id = model or (str(entry.name) if entry is not None else "qwen2-audio")
    return model_id, ((str(entry.name), *entry.aliases) if entry is not None else ())


def run(
    settings: ServerSettings,
    load: Callable[[], AudioModel],
    *,
    on_loading: Callable[[str], None] | None = None,
    on_ready: Callable[[AudioModel], None] | None = None,
    stop: threading.Event | None = None,
    planned: Callable[[], Any] | None = None,
) -> None:
    """Serve until stopped: listen now, load the model with ``load()`` in a thread.

    Stopped by Ctrl+C or SIGTERM when :func:`run` runs on the main thread, or by ``stop``
    (a program that serves from a thread of its own, like ``qaudio listen``).

    Args:
        settings: Address, key, limits and names.
        load: Loads the model (e.g. a ``functools.partial`` of ``load_model``); runs in a
            background thread while ``/health`` says "loading".
        on_loading: Called with the model id before loading starts.
        on_ready: Called once the model is loaded and the server listens.
        stop: Set it to stop the server (as Ctrl+C would).
        planned: Returns the plan ``load()`` followed (``GET /v1/status`` shows it).

    Raises:
        DependencyMissingError: The server extra is not installed.
        QAudioError: Whatever ``load()`` raised (after the server has stopped).
    """
    import importlib.util

    found = importlib.util.find_spec
    for package, modules in (
        ("fastapi", ("fastapi",)),
        ("uvicorn", ("uvicorn",)),
        ("python-multipart", ("python_multipart", "multipart")),  # its new name, its old
        ("websockets", ("websockets",)),  # uvicorn's WebSocket protocol (live sessions)
    ):
        if not any(found(m) for m in modules):
            raise DependencyMissingError(package, "server")
    import uvicorn

    from .app import create_app
    from .common import ServerState
    from .http import HTTP_READ_LIMIT

    model_id = settings.model_id or model_names()[0]
    state = ServerState(
        model_id=model_id,
        aliases=settings.aliases,
        parallel=settings.parallel,
        max_queue=settings.max_queue,
        max_body=settings.max_body,
        allow_remote_audio=settings.allow_remote_audio,
        max_sessions=settings.max_sessions,
        live=settings.live,
        deterministic=settings.deterministic,
        planned=planned,
    )
    level = settings.log_level.lower()
    config = uvicorn.Config(
        create_app(state, settings.api_key, ui=settings.ui, cors_origins=settings.cors_origins),
        host=settings.host,
        port=settings.port,
        http=h11_protocol(),  # pure Python, and its 400s in OpenAI's error shape
        log_level="debug" if level == "debug" else "error" if level == "error" else "warning",
        access_log=False,  # ours (access.py) has the duration and never the query
        timeout_graceful_shutdown=5,
        h11_max_incomplete_event_size=HTTP_READ_LIMIT,  # big headers get 431, not a reset
        # a live session's event over its limit gets an error event (the session goes on);
        # the transport closes the connection (1009) only at twice that
        ws_max_size=2 * settings.live.max_event_bytes,
        ws_per_message_deflate=False,  # no inflating of what clients send
    )
    server = uvicorn.Server(config)
    logger = logging.getLogger("qaudio_local.server")

    def load_again() -> AudioModel:  # the first load is said by on_loading
        if resident.loads:
            logger.info("loading %s again (a request needs it)", model_id)
        return load()

    def unloaded() -> None:
        logger.info(
            "unloaded %s: its memory is free again; the next request loads it (--keep-alive %s)",
            model_id,
            format_keep_alive(settings.keep_alive),
        )

    resident = ResidentModel(load_again, settings.keep_alive, on_unload=unloaded)
    failed: list[BaseException] = []

    def background() -> None:
        try:
            model = resident.acquire()  # the first load; held while on_ready looks at it
        except Exception as exc:
            state.load_error = f"the model could not be loaded: {exc}"  # /health, meanwhile
            failed.append(exc)
            server.should_exit = True  # uvicorn looks at it every 0.1 s
            return
        try:
            state.resident = resident
            while not server.started and not server.should_exit:  # listening, not just loaded
                time.sleep(0.02)
            if server.started and not server.should_exit and on_ready is not None:
                on_ready(model)
        finally:
            resident.release()  # the idle time starts

    if on_loading is not None:
        on_loading(model_id)
    threading.Thread(target=background, name="qaudio-load", daemon=True).start()
    if stop is not None:
        threading.Thread(target=_stop_when, args=(stop, server), daemon=True).start()
    try:
        with _sigterm_stops():
            server.run()
    except KeyboardInterrupt:  # uvicorn stopped first, then passed the signal on
        pass
    finally:
        resident.close()
    if failed:
        raise failed[0]


def _stop_when(stop: threading.Event, server: Any) -> None:
    stop.wait()
    server.should_exit = True  # uvicorn looks at it every 0.1 s


def h11_protocol() -> type:
    """uvicorn's h11 protocol, answering a request it cannot parse (a malformed
    ``Content-Length``, a broken chunk) with OpenAI's error shape instead of plain text."""
    import json

    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from .http import error_body

    class OpenAIShaped400(H11Protocol):
        def send_400_response(self, msg: str) -> None:
            body = json.dumps(
                error_body(
                    "the HTTP request could not be read (malformed headers, Content-Length or "
                    "chunked body)",
                    "invalid_request_error",
                    None,
                    "bad_request",
                )
            ).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ]
            event = h11.Response(status_code=400, headers=headers, reason=b"Bad Request")
            for ev in (event, h11.Data(data=body), h11.EndOfMessage()):
                self.transport.write(self.conn.send(ev))
            self.transport.close()

    return OpenAIShaped400


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[None]:
    """SIGTERM as Ctrl+C: uvicorn stops gracefully on either, then sends the signal again
    to the handler it found, which would otherwise end the process by SIGTERM."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
