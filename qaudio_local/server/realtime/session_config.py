"""The session object of OpenAI's Realtime protocol: what ``session.created`` and
``session.updated`` show, what ``session.update`` may change, and the
:class:`~qaudio_local.live.LiveConfig` it means.

:class:`SessionView` holds the session as the client sees it (JSON). An update is merged
into a copy field by field (a field absent from the update keeps its value; ``null``
clears it, as OpenAI documents), checked, and only then kept, so a refused update changes
nothing. What this server cannot do is refused by name (audio output, tools, semantic
VAD, noise reduction, G.711); fields that change nothing here (a voice, tracing) are
accepted and ignored.
"""

from __future__ import annotations

import copy
from typing import Any

from ...config import DEFAULT_SYSTEM_PROMPT
from ...errors import LiveEventError
from ...live.options import INPUT_RATES, LiveConfig, TurnDetection
from ..common import ServerState, check_model
from ..inputs import InputError
from ..transcriptions import language_name

TYPES = {"transcription": "transcription", "conversation": "realtime"}  # mode -> session.type
VAD_FIELDS = ("threshold", "prefix_padding_ms", "silence_duration_ms")
RESPONSE_FIELDS = ("create_response", "interrupt_response")
IGNORED = (
    "id",
    "object",
    "tracing",
    "truncation",
    "reasoning",
    "parallel_tool_calls",
    "expires_at",
)


def _refuse(param: str, message: str, code: str = "invalid_value") -> LiveEventError:
    return LiveEventError(f"{param}: {message}", code=code, param=param)


def _turn_detection_json(td: TurnDetection | None, mode: str) -> dict[str, Any] | None:
    if td is None:
        return None
    out: dict[str, Any] = {"type": "server_vad", **{k: getattr(td, k) for k in VAD_FIELDS}}
    if mode == "conversation":
        out.update({k: getattr(td, k) for k in RESPONSE_FIELDS}, idle_timeout_ms=None)
    return out


class SessionView:
    """A live session's configuration as OpenAI's session object.

    Args:
        mode: ``"transcription"`` or ``"conversation"``.
        state: The server's state (the model's names).
        session_id: The session's id.
    """

    def __init__(self, mode: str, state: ServerState, session_id: str) -> None:
        self.mode, self.state = mode, state
        self.language_code: str | None = None
        td = _turn_detection_json(TurnDetection(), mode)
        audio_in: dict[str, Any] = {
            "format": {"type": "audio/pcm", "rate": 24_000},
            "noise_reduction": None,
            "transcription": None,
            "turn_detection": td,
        }
        if mode == "transcription":
            audio_in["transcription"] = {"model": state.model_id, "language": None, "prompt": ""}
            self.data: dict[str, Any] = {
                "type": "transcription",
                "object": "realtime.transcription_session",
                "id": session_id,
                "audio": {"input": audio_in},
                "include": None,
            }
        else:
            self.data = {
                "type": "realtime",
                "object": "realtime.session",
                "id": session_id,
                "model": state.model_id,
                "output_modalities": ["text"],
                "instructions": DEFAULT_SYSTEM_PROMPT,
                "max_output_tokens": "inf",
                "audio": {"input": audio_in},
                "tools": [],
                "tool_choice": "auto",
                "tracing": None,
                "truncation": "auto",
                "include": None,
            }

    def update(self, patch: Any) -> LiveConfig:
        """Merge ``patch`` (a ``session.update``'s ``session``) and keep it if it is valid.

        Raises:
            LiveEventError: A field this server cannot do, or a bad value (nothing kept).
        """
        if not isinstance(patch, dict):
            raise _refuse("session", "must be an object", "invalid_type")
        data = copy.deepcopy(self.data)
        for key, value in patch.items():
            self._field(data, key, value)
        config = self._config(data)
        self.data = data
        return config

    def config(self) -> LiveConfig:
        return self._config(self.data)

    # -- the fields ------------------------------------------------------------------------

    def _field(self, data: dict[str, Any], key: str, value: Any) -> None:
        talk = self.mode == "conversation"
        param = f"session.{key}"
        if key == "type":
            if value != data["type"]:
                raise _refuse(
                    param,
                    f"this is a {data['type']!r} session and its type cannot change; open a "
                    + ("session with intent=transcription" if talk else "conversation session"),
                )
        elif key == "model":
            if value is not None:
                _check_model(self.state, value, param)
        elif key == "audio":
            self._audio(data, value)
        elif key == "include":
            if value:
                raise _refuse(param, "log probabilities are not sent (use null)", "unsupported")
        elif key in IGNORED:
            pass
        elif not talk:
            raise _refuse(param, "not a field of a transcription session", "unknown_parameter")
        elif key == "instructions":
            data[key] = _text(value, param, DEFAULT_SYSTEM_PROMPT)
        elif key == "output_modalities":
            if value not in (["text"], None):
                raise _refuse(
                    param, 'the model answers in text only: use ["text"] (no audio output)'
                )
        elif key == "max_output_tokens":
            if value != "inf" and (not _is_int(value) or not 1 <= value <= 1 << 24):
                raise _refuse(param, 'must be a whole number of tokens from 1, or "inf"')
            data[key] = value
        elif key == "tools":
            if value not in ([], None):
                raise _refuse(param, "function calling is not available here", "unsupported")
        elif key == "tool_choice":
            if value not in ("auto", "none", None):
                raise _refuse(param, "function calling is not available here", "unsupported")
        elif key == "prompt":
            if value is not None:
                raise _refuse(param, "stored prompts are not available here", "unsupported")
        else:
            raise _refuse(param, "unknown parameter", "unknown_parameter")

    def _audio(self, data: dict[str, Any], value: Any) -> None:
        if not isinstance(value, dict):
            raise _refuse("session.audio", "must be an object", "invalid_type")
        for key, part in value.items():
            if key == "output" and self.mode == "conversation":
                continue  # a voice, a format: nothing here speaks
            if key != "input":
                raise _refuse(f"session.audio.{key}", "unknown parameter", "unknown_parameter")
            if not isinstance(part, dict):
                raise _refuse("session.audio.input", "must be an object", "invalid_type")
            for field, v in part.items():
                self._audio_input(data["audio"]["input"], field, v)

    def _audio_input(self, inp: dict[str, Any], key: str, value: Any) -> None:
        param = f"session.audio.input.{key}"
        if key == "format":
            inp[key] = _format(value, param)
        elif key == "noise_reduction":
            if value is not None:
                raise _refuse(param, "noise reduction is not available (use null)", "unsupported")
        elif key == "turn_detection":
            inp[key] = self._turn_detection(inp[key], value, param)
        elif key == "transcription":
            inp[key] = self._transcription(inp[key], value, param)
        else:
            raise _refuse(param, "unknown parameter", "unknown_parameter")

    def _turn_detection(self, old: Any, value: Any, param: str) -> Any:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise _refuse(param, "must be an object or null", "invalid_type")
        if value.get("type", "server_vad") != "server_vad":
            raise _refuse(
                f"{param}.type",
                "only server_vad is available (Silero VAD, as qaudio transcribe uses); "
                "semantic_vad is not",
                "unsupported",
            )
        new: dict[str, Any] = dict(old or _turn_detection_json(TurnDetection(), self.mode) or {})
        allowed = {"type", *VAD_FIELDS}
        if self.mode == "conversation":
            allowed |= {*RESPONSE_FIELDS, "idle_timeout_ms"}
        for key, v in value.items():
            if key not in allowed:
                raise _refuse(f"{param}.{key}", "unknown parameter", "unknown_parameter")
            if key == "idle_timeout_ms":
                if v is not None:
                    raise _refuse(f"{param}.{key}", "not available (use null)", "unsupported")
            elif key in RESPONSE_FIELDS:
                if not isinstance(v, bool):
                    raise _refuse(f"{param}.{key}", "must be true or false", "invalid_type")
            elif key in VAD_FIELDS:
                number = isinstance(v, int | float) and not isinstance(v, bool)
                if not number or (key != "threshold" and v != int(v)):
                    kind = "a number" if key == "threshold" else "a whole number of ms"
                    raise _refuse(f"{param}.{key}", f"must be {kind}", "invalid_type")
                v = float(v) if key == "threshold" else int(v)
            new[key] = v
        return new

    def _transcription(self, old: Any, value: Any, param: str) -> Any:
        if self.mode == "conversation":
            if value is not None:
                raise _refuse(
                    param,
                    "conversation sessions do not transcribe the user's turns here (use null); "
                    "open a session with intent=transcription for the words",
                    "unsupported",
                )
            return None
        if not isinstance(value, dict):
            raise _refuse(param, "must be an object (a transcription session transcribes)")
        new = dict(old)
        for key, v in value.items():
            if key == "model":
                if v is not None:
                    _check_model(self.state, v, f"{param}.model")
            elif key == "language":
                if v is not None and (not isinstance(v, str) or not 0 < len(v) <= 64):
                    raise _refuse(f"{param}.language", "must be a language code such as 'en'")
                new[key] = v or None
            elif key == "prompt":
                new[key] = _text(value=v, param=f"{param}.prompt", default="", limit=2000)
            else:
                raise _refuse(
                    f"{param}.{key}", "not available here (model, language, prompt)", "unsupported"
                )
        return new

    # -- the configuration it means --------------------------------------------------------

    def _config(self, data: dict[str, Any]) -> LiveConfig:
        inp = data["audio"]["input"]
        td = inp["turn_detection"]
        try:
            detection = (
                None
                if td is None
                else TurnDetection(**{k: td[k] for k in (*VAD_FIELDS, *RESPONSE_FIELDS) if k in td})
            )
        except ValueError as exc:
            raise _refuse("session.audio.input.turn_detection", str(exc)) from exc
        tr = inp["transcription"] or {}
        limit = data.get("max_output_tokens", "inf")
        return LiveConfig(
            mode=self.mode,
            rate=inp["format"]["rate"],
            turn_detection=detection,
            language=language_name(tr.get("language")),
            prompt=tr.get("prompt") or None,
            instructions=data.get("instructions", DEFAULT_SYSTEM_PROMPT),
            max_output_tokens=None if limit == "inf" else limit,
        )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _text(value: Any, param: str, default: str, limit: int = 100_000) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or len(value) > limit:
        raise _refuse(param, f"must be text of at most {limit} characters", "invalid_type")
    return value


def _format(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _refuse(param, "must be an object such as {type: 'audio/pcm', rate: 24000}")
    kind, rate = value.get("type", "audio/pcm"), value.get("rate", 24_000)
    if kind != "audio/pcm":
        raise _refuse(
            f"{param}.type", f"{kind!r} is not taken: send 'audio/pcm' (PCM16 little-endian)"
        )
    if not _is_int(rate) or rate not in INPUT_RATES:
        raise _refuse(
            f"{param}.rate",
            f"{rate!r} Hz is not taken: PCM16 at 24000 Hz (OpenAI's rate) or 16000 Hz",
        )
    unknown = set(value) - {"type", "rate"}
    if unknown:
        raise _refuse(f"{param}.{sorted(unknown)[0]}", "unknown parameter", "unknown_parameter")
    return {"type": "audio/pcm", "rate": rate}


def _check_model(state: ServerState, name: Any, param: str) -> None:
    if not isinstance(name, str):
        raise _refuse(param, "must be the model's name", "invalid_type")
    try:
        check_model(state, name, param)
    except InputError as exc:
        raise LiveEventError(str(exc), code="model_not_found", param=param) from exc
