"""The exception hierarchy (qaudio_local.errors): every class pickles, inherits a builtin and
decides its own outcome, and the CLI and the server take that outcome from the error.

The classes are found by introspection, and instances are built from each constructor's
signature, so a new class is covered the day it is added.
"""

from __future__ import annotations

import asyncio
import copy
import errno
import inspect
import json
import pickle
from typing import Any

import pytest
from click.testing import CliRunner

from qaudio_local import errors
from qaudio_local.cli.main import exit_code, handle_errors, main
from qaudio_local.errors import QAudioError, UnknownModelError

CLASSES = sorted(
    (c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, QAudioError)),
    key=lambda c: c.__name__,
)
# the builtins the style guide names (and ImportError, for a missing optional dependency)
BUILTINS = (ValueError, LookupError, RuntimeError, OSError, ImportError)
OSERROR_SLOTS = ("errno", "strerror", "filename", "filename2")

# the exit codes cli/main.py's EXIT_CODES table gave before the errors carried them
EXIT_1 = {
    "QAudioError",
    "RuntimeBackendError",
    "CpuKernelError",
    "DependencyMissingError",
    "RemoteFileNotFoundError",
    "HubUnreachableError",
    "OfflineModelMissingError",
    "IntegrityError",
    "DiskFullError",
    "ServerConnectionError",
    "RealtimeSessionError",
    "AudioDeviceError",
}  # every other class: 2
# what a client can fix is a 4xx; the rest (model files, registry, hub, disk) is a 500
HTTP_400 = {
    "AudioError",
    "AudioDecodeError",
    "EmptyAudioError",
    "InvalidAudioError",
    "AudioTooLongError",
    "AudioTooLargeError",
    "AudioFileNotFoundError",
    "ContextOverflowError",
    "ContextFullError",
    "ConversationFileError",
    "OptionError",
    "LiveEventError",
}
HTTP_404 = {"UnknownModelError"}


def _value(annotation: str, index: int) -> Any:
    """A distinct value of the annotated type (``from __future__`` makes it a string)."""
    kinds: dict[str, Any] = {
        "str": f"value-{index}",
        "str | None": f"optional-{index}",
        "int": 1000 + index,
        "int | None": 2000 + index,
        "float": 1.5 + index,
        "tuple[str, ...]": (f"a{index}", f"b{index}"),
    }
    if annotation not in kinds:
        pytest.fail(f"test_errors: add a sample value for the annotation {annotation!r}")
    return kinds[annotation]


def sample(cls: type[QAudioError]) -> QAudioError:
    """An instance of ``cls`` with every constructor argument given (defaults too)."""
    inits = [
        k.__init__ for k in cls.__mro__ if issubclass(k, QAudioError) and "__init__" in vars(k)
    ]
    if not inits:  # Exception's constructor: a message
        return cls(f"the {cls.__name__} message")
    params = list(inspect.signature(inits[0]).parameters.values())[1:]  # not self
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for i, p in enumerate(params):
        if p.kind is p.KEYWORD_ONLY:
            kwargs[p.name] = _value(str(p.annotation), i)
        else:
            args.append(_value(str(p.annotation), i))
    return cls(*args, **kwargs)


def _state(err: BaseException) -> dict[str, Any]:
    state = dict(vars(err))
    if isinstance(err, OSError):
        state.update((name, getattr(err, name)) for name in OSERROR_SLOTS)
    return state


def test_the_hierarchy_is_all_found() -> None:
    assert len(CLASSES) >= 27 and QAudioError in CLASSES and UnknownModelError in CLASSES


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_error_pickles_with_its_message_and_attributes(cls: type[QAudioError]) -> None:
    err = sample(cls)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(err, protocol=protocol))
        assert type(back) is cls
        assert str(back) == str(err) and back.args == err.args
        assert _state(back) == _state(err)
    assert str(copy.copy(err)) == str(err) and _state(copy.deepcopy(err)) == _state(err)


def test_a_disk_full_error_keeps_its_errno_through_pickle() -> None:
    err = errors.DiskFullError("/data", needed=10, free=1)
    back = pickle.loads(pickle.dumps(err))
    assert back.errno == err.errno == errno.ENOSPC and str(back) == str(err)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_error_inherits_the_matching_builtin(cls: type[QAudioError]) -> None:
    if cls is QAudioError:
        assert cls.__bases__ == (Exception,)
        return
    assert issubclass(cls, BUILTINS), f"{cls.__name__} inherits none of {BUILTINS}"


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_error_carries_its_outcome(cls: type[QAudioError]) -> None:
    name = cls.__name__
    assert cls.exit_code == (1 if name in EXIT_1 else 2), name
    status = 400 if name in HTTP_400 else 404 if name in HTTP_404 else 500
    assert cls.http_status == status, name
    expected_type = "invalid_request_error" if status < 500 else "server_error"
    assert cls.openai_type == expected_type, name
    assert cls.openai_code is None or isinstance(cls.openai_code, str)


def test_the_root_defaults_and_an_unknown_model() -> None:
    assert (QAudioError.exit_code, QAudioError.http_status) == (1, 500)
    assert QAudioError.openai_type == "server_error" and QAudioError.openai_code is None
    assert (UnknownModelError.exit_code, UnknownModelError.http_status) == (2, 404)
    assert UnknownModelError.openai_code == "model_not_found"


# --- the CLI ----------------------------------------------------------------------------


def _exit_of(exc: BaseException) -> int:
    @handle_errors
    def command() -> None:
        raise exc

    with pytest.raises(SystemExit) as info:
        command()
    return int(info.value.code)  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_the_cli_exits_with_the_errors_own_code(
    cls: type[QAudioError], capsys: pytest.CaptureFixture[str]
) -> None:
    err = sample(cls)
    assert _exit_of(err) == exit_code(err) == cls.exit_code
    assert capsys.readouterr().err == f"error: {err}\n"


def test_the_cli_keeps_its_fallbacks_for_builtin_errors() -> None:
    assert _exit_of(ValueError("bad")) == 2
    assert _exit_of(FileNotFoundError("gone")) == 1
    assert _exit_of(KeyError("k")) == 1


def test_the_cli_takes_the_exit_code_from_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["plan", "whisper"])
    assert result.exit_code == 2 and "unknown model 'whisper'" in result.output
    monkeypatch.setattr(UnknownModelError, "exit_code", 7)
    result = runner.invoke(main, ["plan", "whisper"])
    assert result.exit_code == 7 and "unknown model 'whisper'" in result.output


# --- the server -------------------------------------------------------------------------


def _failing(error: BaseException) -> Any:
    """A model loader that fails with ``error``: the request that needs the model ends in it."""

    def load() -> Any:
        raise error

    return load


def _post(app: Any, path: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """One POST of JSON through the whole ASGI stack, in process."""
    sent: list[dict[str, Any]] = []
    data = json.dumps(payload).encode()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": data, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body)


def _answer(error: BaseException) -> tuple[int, dict[str, Any]]:
    pytest.importorskip("fastapi")
    from qaudio_local.models.resident import ResidentModel
    from qaudio_local.server.app import create_app
    from qaudio_local.server.common import ServerState

    state = ServerState(model_id="tiny", resident=ResidentModel(_failing(error), keep_alive=None))
    try:
        chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
        return _post(create_app(state), "/v1/chat/completions", chat)
    finally:
        assert state.resident is not None
        state.resident.close()


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_the_server_answers_with_the_errors_own_status(cls: type[QAudioError]) -> None:
    err = sample(cls)
    status, body = _answer(err)
    assert status == cls.http_status
    assert body == {
        "error": {
            "message": str(err),
            "type": cls.openai_type,
            "param": None,
            "code": cls.openai_code,
        }
    }


def test_an_unknown_model_is_a_404_not_a_500(monkeypatch: pytest.MonkeyPatch) -> None:
    err = UnknownModelError("gpt-4o", kind="model", valid=("qwen2-audio-7b-instruct",))
    status, body = _answer(err)
    assert status == 404 and body["error"]["code"] == "model_not_found"
    assert body["error"]["type"] == "invalid_request_error" and "gpt-4o" in body["error"]["message"]
    monkeypatch.setattr(UnknownModelError, "http_status", 410)  # the error decides, not a table
    assert _answer(err)[0] == 410
