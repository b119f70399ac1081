"""Where a server is and how much it takes: ``URL`` or ``URL@N`` (N requests at once),
its API base, and what its ``GET /v1/models`` says (the model's id, ``qaudio serve``'s
``parallel`` and context length)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MAX_CAPACITY = 64


@dataclass(frozen=True)
class ServerSpec:
    """One server as given on the command line.

    Attributes:
        base: The API's base URL, ending in ``/v1`` (``http://host:8000/v1``).
        capacity: Requests sent to it at once (``URL@N``); ``None``: what the server
            advertises (``qaudio serve``'s ``parallel``), else 1.
    """

    base: str
    capacity: int | None = None

    @property
    def name(self) -> str:
        """``host:port`` (for progress and messages)."""
        return urlsplit(self.base).netloc


def parse_server(text: str) -> ServerSpec:
    """``http://host:8000``, ``host:8000``, ``https://host/v1``, each with an optional
    ``@N`` (its capacity, 1..64) as a :class:`ServerSpec`.

    Raises:
        ValueError: Not an http(s) address, or a bad ``@N``.
    """
    given = text.strip()
    capacity: int | None = None
    head, at, tail = given.rpartition("@")
    if at and tail.isdigit() and "/" not in tail:
        given, capacity = head, int(tail)
        if not 1 <= capacity <= MAX_CAPACITY:
            raise ValueError(f"{text!r}: @N must be 1..{MAX_CAPACITY}")
    if "://" not in given:
        given = f"http://{given}"
    parts = urlsplit(given)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"{text!r} is not an http(s) address")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port == -1 or parts.username or parts.password:
        raise ValueError(f"{text!r} is not a server address; write it like http://HOST:8000")
    path = parts.path.rstrip("/")
    if not path.endswith("/v1"):
        path += "/v1"
    return ServerSpec(urlunsplit((parts.scheme.lower(), parts.netloc, path, "", "")), capacity)


@dataclass(frozen=True)
class ServerCard:
    """What ``GET /v1/models`` told about a server's model.

    Attributes:
        model: The model's id (sent as ``model`` in every request).
        parallel: Requests it decodes at once (``qaudio serve``), if it says.
        context_length: Its context in tokens, if it says.
    """

    model: str
    parallel: int | None = None
    context_length: int | None = None


def read_card(body: Any) -> ServerCard:
    """The first model of a ``/v1/models`` answer.

    Raises:
        ValueError: The answer is not a model list.
    """
    try:
        card = body["data"][0]
        model = card["id"]
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError("its /v1/models lists no model") from exc
    if not isinstance(model, str) or not model:
        raise ValueError("its /v1/models lists a model without an id")
    parallel = card.get("parallel")
    ctx = card.get("context_length") or card.get("max_model_len")
    if not (isinstance(parallel, int) and 1 <= parallel <= MAX_CAPACITY):
        parallel = None
    meta = card.get("meta") if isinstance(card.get("meta"), dict) else {}
    ctx = ctx or meta.get("n_ctx") or meta.get("n_ctx_train")  # llama-server (per slot)
    return ServerCard(model, parallel, ctx if isinstance(ctx, int) and ctx > 0 else None)
