"""The ASGI app: OpenAI's chat completions (with audio), transcriptions and translations,
and live voice sessions (``GET /v1/realtime``, a WebSocket: :mod:`.realtime`).

Requests are served by the engine's parallel sequences; beyond ``parallel + max_queue``
requests in flight a request is answered 429 with ``Retry-After``. Generation runs in a
thread per request and streams back to the event loop; a client that goes away cancels
its generation within one step. Every error has OpenAI's shape, and no request can show a
traceback or stop the server.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from ..errors import QAudioError
from ..models.resident import ResidentModel
from .access import AccessLog
from .common import Busy, ServerState, check_model, ready, residency
from .http import LimitBody, RequireKey, error_response, param_of
from .inputs import InputError

logger = logging.getLogger("qaudio_local.server")
logger.addHandler(logging.NullHandler())


# --- the app ------------------------------------------------------------------------------


def create_app(
    state: ServerState,
    api_key: str | None = None,
    *,
    ui: bool = True,
    cors_origins: tuple[str, ...] = (),
) -> Any:
    """The ASGI application, wrapped in the body limit and the key check, and outermost in
    the access log (so that a 401 or a 413 is logged too).

    ``ui``: serve the page at ``/`` (:mod:`.ui`; open, like ``/health``). ``cors_origins``:
    the other origins whose pages may call the API (none by default: CORS stays closed).
    """
    from .ui import OPEN_PATHS, OPEN_PREFIXES, mount_ui

    app = FastAPI(title="qaudio-local", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.qaudio = state
    _handlers(app)
    _routes(app, state)
    if ui:
        mount_ui(app)
        keyed = RequireKey(app, api_key, OPEN_PATHS, OPEN_PREFIXES)
    else:
        keyed = RequireKey(app, api_key)
    inner: Any = LimitBody(keyed, state.max_body)
    if cors_origins:  # outside the key check: a preflight carries no key
        from starlette.middleware.cors import CORSMiddleware

        inner = CORSMiddleware(
            inner,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Retry-After"],
        )
    return AccessLog(inner)


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        param = param_of(first.get("loc"))
        msg = first.get("msg", "invalid request")
        return error_response(400, f"{param + ': ' if param else ''}{msg}", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(exc.status_code, str(exc.detail), code=code)

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError) -> JSONResponse:
        return error_response(exc.status, str(exc), param=exc.param)

    @app.exception_handler(Busy)
    async def busy(request: Request, exc: Busy) -> JSONResponse:
        return error_response(
            429,
            "the server is busy: every sequence and queue place is taken; retry shortly",
            "rate_limit_error",
            code="server_busy",
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(QAudioError)
    async def qaudio_error(request: Request, exc: QAudioError) -> JSONResponse:
        # the error decides: 400 for input the client can fix, 404 for an unknown name, ...
        return error_response(exc.http_status, str(exc), exc.openai_type, code=exc.openai_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, RecursionError | ValueError | UnicodeError):
            return error_response(400, f"the request could not be read: {type(exc).__name__}")
        logger.exception("unexpected error")
        return error_response(500, f"internal error ({type(exc).__name__})", "server_error")


def _routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/health")
    async def health() -> Response:
        resident = state.resident
        if resident is None:
            status = "error" if state.load_error else "loading"
            return JSONResponse({"status": status, "detail": state.load_error}, 503)
        return JSONResponse({"status": "ok", "model": state.model_id, **residency(resident)})

    @app.get("/v1/models")
    async def models() -> Response:
        resident = ready(state)
        return JSONResponse({"object": "list", "data": [_model_card(state, resident)]})

    @app.get("/v1/models/{name}")
    async def model_card(name: str) -> Response:
        resident = ready(state)
        check_model(state, name)
        return JSONResponse(_model_card(state, resident))

    @app.post("/unload")
    async def unload() -> Response:
        """Give the model's memory back now (or when the requests using it end); the next
        request loads it again."""
        resident = ready(state)
        resident.unload()
        return JSONResponse({"model": state.model_id, **residency(resident)})

    from .chat import chat_completions
    from .realtime import realtime
    from .status import status_route
    from .transcriptions import audio_endpoint

    app.get("/v1/status")(status_route(state))

    app.websocket("/v1/realtime")(realtime)
    app.post("/v1/chat/completions")(chat_completions(state))
    app.post("/v1/audio/transcriptions")(audio_endpoint(state, "transcribe"))
    app.post("/v1/audio/translations")(audio_endpoint(state, "translate"))


def _model_card(state: ServerState, resident: ResidentModel) -> dict[str, Any]:
    n_ctx = resident.context_length or 0
    return {
        "id": state.model_id,
        "object": "model",
        "created": state.created,
        "owned_by": "qaudio-local",
        "input_modalities": ["text", "audio"],
        "output_modalities": ["text"],
        "context_length": n_ctx,
        "max_audio_seconds_per_request": max(0, (n_ctx - 64) // 25),
        "parallel": state.parallel,
        "state": resident.state,
    }
