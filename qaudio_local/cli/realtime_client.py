"""A small client of OpenAI's Realtime protocol, as ``qaudio serve`` speaks it at
``/v1/realtime``: the address, the key, the session's settings, and the events sent.

The connection is a :mod:`websockets` (sync) client, the library the ``openai[realtime]``
extra uses; this module does not need the openai package. It knows the protocol's shapes
(``types/realtime`` of the official SDK) for what ``qaudio listen`` sends:

- ``session.update`` with ``session.type`` ``"transcription"`` or ``"realtime"``,
  ``audio.input.format`` ``{"type": "audio/pcm", "rate": 16000 | 24000}``,
  ``audio.input.turn_detection`` (``server_vad`` with ``threshold``,
  ``prefix_padding_ms``, ``silence_duration_ms``; or ``null`` for manual commits),
  ``audio.input.transcription`` (``model``, ``language``, ``prompt``), and for a
  conversation ``instructions`` and ``output_modalities: ["text"]``;
- ``input_audio_buffer.append`` (``audio``: base64 of PCM16 little-endian mono),
  ``input_audio_buffer.commit``, ``response.create``, ``response.cancel``.

Every client event carries an ``event_id`` of its own, so that an ``error`` event that
names it can be matched to what caused it.
"""

from __future__ import annotations

import base64
import contextlib
import inspect
import ipaddress
import itertools
import json
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import DependencyMissingError, RealtimeSessionError, ServerConnectionError

REALTIME_PATH = "/realtime"  # after the API's base path, as the SDK appends it
SESSION_RATES = (16000, 24000)  # PCM rates a qaudio session accepts (OpenAI's is 24000)
OPEN_TIMEOUT = 30.0  # seconds for the TCP connection and the WebSocket upgrade
MAX_MESSAGE = 16 << 20  # the largest server event accepted (an answer's whole text)


def realtime_url(server: str, *, transcription: bool, model: str | None = None) -> str:
    """The WebSocket address of a server's Realtime endpoint, as the SDK builds it.

    ``server`` is the server's address as a person gives it: ``http://host:8000``,
    ``http://host:8000/v1`` (the OpenAI base URL), ``https://...``, ``ws(s)://...`` or a
    bare ``host:port``. http becomes ws and https wss; a path that does not end in ``/v1``
    (or already in ``/v1/realtime``) gets ``/v1``; then ``/realtime``. The query keeps what
    it had and adds ``model`` (when given) and ``intent=transcription`` (when asked).

    Raises:
        ValueError: Not an address (no host, another scheme, a bad port).
    """
    text = server.strip()
    if "://" not in text:
        text = f"http://{text}"
    parts = urlsplit(text)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"{server!r} is not an http(s) or ws(s) address")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port == -1:
        raise ValueError(f"{server!r} is not an address; write it like http://127.0.0.1:8000")
    path = parts.path.rstrip("/")
    if not path.endswith("/v1" + REALTIME_PATH):
        if not path.endswith("/v1"):
            path += "/v1"
        path += REALTIME_PATH
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("model", "intent")]
    if model:
        query.append(("model", model))
    if transcription:
        query.append(("intent", "transcription"))
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


def is_loopback(url: str) -> bool:
    """Whether ``url`` names this machine (no proxy is used for it)."""
    host = urlsplit(url).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def auth_headers(api_key: str | None) -> dict[str, str]:
    """``Authorization: Bearer KEY``, as the SDK sends it (nothing without a key)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


@dataclass(frozen=True)
class TurnDetection:
    """The server's voice activity detection (``server_vad``); OpenAI's defaults.

    Attributes:
        threshold: Speech probability that starts a turn (0-1; default 0.5).
        prefix_ms: Audio kept before the detected start (default 300).
        silence_ms: Silence that ends a turn: the VAD's hangover (default 500).
    """

    threshold: float = 0.5
    prefix_ms: int = 300
    silence_ms: int = 500

    def event_field(self) -> dict[str, Any]:
        return {
            "type": "server_vad",
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_ms,
            "silence_duration_ms": self.silence_ms,
        }


@dataclass(frozen=True)
class SessionConfig:
    """What a live session is asked to do.

    Attributes:
        chat: ``False``: transcription (``intent=transcription``); ``True``: a conversation
            whose answers come as text.
        rate: The PCM sample rate sent (16000, the model's own, or 24000, OpenAI's).
        turn_detection: The server's VAD; ``None``: the client commits each turn.
        model: The model's name on the server (``None``: the server's default).
        language: The spoken language, for transcription.
        prompt: A prompt for transcription.
        instructions: The conversation's system message.
    """

    chat: bool = False
    rate: int = 16000
    turn_detection: TurnDetection | None = TurnDetection()
    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    instructions: str | None = None

    def session(self) -> dict[str, Any]:
        """The ``session`` object of a ``session.update``."""
        vad = self.turn_detection.event_field() if self.turn_detection else None
        audio_in: dict[str, Any] = {
            "format": {"type": "audio/pcm", "rate": self.rate},
            "turn_detection": vad,
        }
        if not self.chat:
            transcription = {
                k: v
                for k, v in (
                    ("model", self.model),
                    ("language", self.language),
                    ("prompt", self.prompt),
                )
                if v
            }
            audio_in["transcription"] = transcription
            return {"type": "transcription", "audio": {"input": audio_in}}
        session: dict[str, Any] = {
            "type": "realtime",
            "output_modalities": ["text"],
            "audio": {"input": audio_in},
        }
        if self.model:
            session["model"] = self.model
        if self.instructions is not None:
            session["instructions"] = self.instructions
        return session


class RealtimeConnection:
    """One open Realtime session: send client events, receive server events as dicts.

    ``send`` may be called from several threads (a lock keeps messages whole); ``receive``
    from one. A context manager that closes the connection.
    """

    def __init__(self, ws: Any, url: str) -> None:
        self.ws = ws
        self.url = url
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    @classmethod
    def open(
        cls, url: str, api_key: str | None = None, *, timeout: float = OPEN_TIMEOUT
    ) -> RealtimeConnection:
        """Connect to ``url`` (from :func:`realtime_url`) with the key as a bearer token.

        Raises:
            DependencyMissingError: websockets is not installed.
            ServerConnectionError: The server cannot be reached or refuses the upgrade
                (the message names the address, the HTTP status and what to check).
        """
        try:
            from websockets.sync.client import connect
        except ImportError as exc:
            raise DependencyMissingError("websockets", "listen") from exc
        kwargs: dict[str, Any] = {}
        if "legacy" in inspect.signature(connect).parameters:  # websockets >= 17: no warning
            kwargs["legacy"] = True  # the connection itself, which close() ends
        if is_loopback(url):
            kwargs["proxy"] = None  # never send this machine's traffic through a proxy
        try:
            ws = connect(
                url,
                additional_headers=auth_headers(api_key),
                open_timeout=timeout,
                max_size=MAX_MESSAGE,
                compression=None,
                **kwargs,
            )
        except Exception as exc:
            raise connection_error(url, exc, timeout) from exc
        return cls(ws, url)

    def __enter__(self) -> RealtimeConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):  # already gone: nothing to close
            self.ws.close()

    def new_id(self, type_: str) -> str:
        """A fresh ``event_id`` for a client event of ``type_``."""
        return f"qaudio_{type_.replace('.', '_')}_{next(self._ids)}"

    def send(self, type_: str, event_id: str | None = None, **fields: Any) -> str:
        """Send the client event ``type_`` with ``fields``; return its ``event_id``.

        Raises:
            RealtimeSessionError: The connection is closed.
        """
        event_id = event_id or self.new_id(type_)
        message = json.dumps({"type": type_, "event_id": event_id, **fields})
        with self._lock:
            try:
                self.ws.send(message)
            except Exception as exc:
                raise closed_error(self.url, exc) from exc
        return event_id

    def update_session(self, config: SessionConfig) -> str:
        return self.send("session.update", session=config.session())

    def append(self, pcm: bytes) -> str:
        """``input_audio_buffer.append`` with PCM16 LE mono bytes."""
        return self.send("input_audio_buffer.append", audio=base64.b64encode(pcm).decode())

    def commit(self, event_id: str | None = None) -> str:
        return self.send("input_audio_buffer.commit", event_id)

    def create_response(self) -> str:
        return self.send("response.create")

    def cancel_response(self) -> str:
        return self.send("response.cancel")

    def receive(self, timeout: float) -> dict[str, Any] | None:
        """The next server event, or ``None`` if none came within ``timeout`` seconds.

        Raises:
            RealtimeSessionError: The connection closed, or a message is not an event.
        """
        try:
            message = self.ws.recv(timeout=timeout)
        except TimeoutError:
            return None
        except Exception as exc:
            raise closed_error(self.url, exc) from exc
        try:
            event = json.loads(message)
        except (TypeError, ValueError) as exc:
            raise RealtimeSessionError(
                f"the server sent something that is not a JSON event: {str(message)[:80]!r}"
            ) from exc
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise RealtimeSessionError(f"the server sent an event without a type: {event!r:.80}")
        return event


def connection_error(url: str, exc: BaseException, timeout: float) -> ServerConnectionError:
    """What failed when connecting to ``url``, and what to check, as one error."""
    from websockets.exceptions import InvalidHandshake, InvalidStatus

    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        detail = _error_detail(exc.response.body)
        advice = {
            401: "the server wants its API key: pass it with --api-key KEY or --api-key-file "
            "FILE (the key `qaudio serve` was started with)",
            403: "no Realtime endpoint there, or this client is not allowed: check the path "
            "of --server (the API's base, e.g. http://HOST:8000/v1) and the key; a server "
            "without /v1/realtime (an older `qaudio serve`) answers 403 to a WebSocket",
            404: "no Realtime endpoint there: check the path of --server (the API's base, "
            "e.g. http://HOST:8000/v1), or update the server (`qaudio serve` with "
            "/v1/realtime)",
        }.get(status, "the server refused the session; see its message and its log")
        if status in (429, 503):
            advice = "the server is busy or still loading its model; try again shortly"
        return ServerConnectionError(
            f"could not open a live session at {url}: HTTP {status}{detail}; {advice}",
            url=url,
            status=status,
        )
    if isinstance(exc, TimeoutError):
        why = f"no answer within {timeout:.0f} s"
    elif isinstance(exc, InvalidHandshake):
        why = f"not a WebSocket answer ({exc})"
    else:
        why = str(exc) or type(exc).__name__
    return ServerConnectionError(
        f"could not connect to {url}: {why}; check that `qaudio serve` runs there and that "
        "--server names its address and port (e.g. http://127.0.0.1:8000)",
        url=url,
    )


def closed_error(url: str, exc: BaseException) -> RealtimeSessionError:
    """The connection to ``url`` is gone, as one error naming why."""
    from websockets.exceptions import ConnectionClosed

    if isinstance(exc, ConnectionClosed):
        frame = exc.rcvd or exc.sent
        if frame is None:
            why = "without a close frame"
        else:
            why = f"code {frame.code}" + (f": {frame.reason}" if frame.reason else "")
        return RealtimeSessionError(f"the server at {url} closed the session ({why})")
    return RealtimeSessionError(f"the connection to {url} failed: {exc}")


def _error_detail(body: bytes | bytearray | None) -> str:
    """`` (message)`` from an OpenAI-shaped error body, else the body's start."""
    if not body:
        return ""
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", "replace").strip()[:200]
    return f" ({message})" if message else ""
