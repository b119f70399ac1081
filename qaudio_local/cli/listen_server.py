"""The local server of ``qaudio listen`` without ``--server``: ``qaudio serve`` for one
session, on 127.0.0.1, a free port and a random key, in a thread of this process.

The model is planned, pulled and loaded exactly as ``qaudio serve`` (and ``qaudio run``)
would (:func:`~.options.load_model`), and served by :func:`qaudio_local.server.run.run`,
so that the session is a client of the same ``/v1/realtime`` endpoint a remote one uses.
"""

from __future__ import annotations

import contextlib
import functools
import secrets
import socket
import threading
from collections.abc import Iterator
from typing import Any

from ..errors import ServerConnectionError
from .options import load_model

LOCAL_PARALLEL = 2  # sequences of the local server: a turn is decoded while the next one ends


@contextlib.contextmanager
def local_server(opts: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """``qaudio serve`` for this session: 127.0.0.1, a free port, a random key, in a thread.

    Yields the API's base URL, the key and the model's id once the model is loaded;
    stops the server (and closes the model) on the way out.

    Raises:
        QAudioError: The model could not be loaded (the loader's own error).
        ServerConnectionError: The server could not start.
    """
    from ..server.run import ServerSettings, model_names, run

    model_id, family = model_names(opts["model_name"], opts["model_file"])
    key = secrets.token_urlsafe(24)
    settings = ServerSettings(
        port=_free_port(),
        api_key=key,
        model_id=model_id,
        aliases=family,
        parallel=LOCAL_PARALLEL,
        log_level="warning",
    )
    ready, stop = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    def serve() -> None:
        try:
            run(
                settings,
                functools.partial(load_model, opts, parallel=settings.parallel),
                on_ready=lambda model: ready.set(),
                stop=stop,
            )
        except BaseException as exc:  # uvicorn exits (SystemExit) when it cannot listen
            failed.append(exc)

    thread = threading.Thread(target=serve, name="qaudio-listen-server", daemon=True)
    thread.start()
    try:
        while not ready.wait(0.1):
            if not thread.is_alive():
                if failed and not isinstance(failed[0], SystemExit):
                    raise failed[0]
                raise ServerConnectionError(
                    f"the local server could not listen on {settings.url}", url=settings.url
                )
        yield settings.url, key, model_id
    finally:
        stop.set()
        thread.join(timeout=15)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
