"""``POST /v1/audio/transcriptions`` and ``/v1/audio/translations``: audio of any length.

The upload goes through the long-form path (:mod:`qaudio_local.transcription`), so the
segments and timestamps are those of ``qaudio transcribe``. Every response format OpenAI
documents: ``json``, ``text``, ``srt``, ``vtt`` and ``verbose_json``; ``stream=true`` sends a
``transcript.text.delta`` event per segment, then ``transcript.text.done`` with the text
and the token usage. Beyond OpenAI's fields (clients ignore the others), each delta carries
its ``segment`` (``id``, ``start``, ``end`` in seconds, ``text``) and the recording's
``duration`` as its header declares it (0 when unknown): enough for a progress bar and a
transcript with timestamps while it is written.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import File, Form, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from ..engine.options import SamplingOptions
from .common import ServerState, Slot, check_model, finish_or_hang_up, in_thread, ready, sse
from .http import error_body
from .inputs import InputError
from .schemas import RESPONSE_FORMATS

if TYPE_CHECKING:
    from ..transcription import Segment, Transcription, TranscriptionInfo

# ISO 639-1 codes OpenAI clients send -> the name the model is told
LANGUAGES = {
    "en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian",
    "pt": "Portuguese", "nl": "Dutch", "ru": "Russian", "zh": "Chinese", "ja": "Japanese",
    "ko": "Korean", "ar": "Arabic", "hi": "Hindi", "tr": "Turkish", "pl": "Polish",
    "sv": "Swedish", "uk": "Ukrainian", "cs": "Czech", "el": "Greek", "fi": "Finnish",
    "da": "Danish", "no": "Norwegian", "he": "Hebrew", "id": "Indonesian", "vi": "Vietnamese",
    "th": "Thai", "yue": "Cantonese",
}  # fmt: skip
TEXT_TYPES = {"text": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}


def language_name(code: str | None) -> str | None:
    """The language the model is told, for an ISO 639-1 code (another name as given)."""
    if not code:
        return None
    return LANGUAGES.get(code.strip().lower(), code.strip())


def audio_endpoint(state: ServerState, task: str) -> Callable[..., Coroutine[Any, Any, Response]]:
    """The transcription (or translation) route, bound to ``state``."""

    async def route(
        request: Request,
        file: Annotated[UploadFile, File()],
        model: Annotated[str, Form()],
        language: Annotated[str | None, Form()] = None,
        prompt: Annotated[str | None, Form()] = None,
        response_format: Annotated[str, Form()] = "json",
        temperature: Annotated[float, Form(ge=0, le=2)] = 0.0,
        stream: Annotated[bool, Form()] = False,
        granularities: Annotated[list[str] | None, Form(alias="timestamp_granularities[]")] = None,
    ) -> Response:
        ready(state)  # 503 before the server's first load
        check_model(state, model)
        if response_format not in RESPONSE_FORMATS:
            raise InputError(
                f"response_format must be one of {', '.join(RESPONSE_FORMATS)}",
                "response_format",
            )
        if "word" in (granularities or []):
            raise InputError(
                "timestamp_granularities: word timestamps are not produced, only segment",
                "timestamp_granularities",
            )
        from ..transcription import TranscribeOptions, transcribe

        options = TranscribeOptions(
            task=task,
            language=language_name(language),
            hint=prompt or None,
            sampling=SamplingOptions(
                max_tokens=300, temperature=temperature, logprobs=True, stop_loops=True
            ),
            parallel=state.parallel,
        )
        slot = Slot(state)
        try:
            data = await file.read()
            if not data:
                raise InputError("file: the upload is empty (0 bytes)", "file")
            engine = await slot.model()
            tr = await asyncio.to_thread(transcribe, engine, data, options)
        except BaseException:
            slot.release()
            raise
        segments = in_thread(lambda: iter(tr))
        if stream:
            return StreamingResponse(
                _stream(segments, tr, slot),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        try:
            done = await _all(request, segments)
        finally:
            slot.release()
        return _respond(response_format, done, tr.info)

    return route


async def _all(request: Request, segments: AsyncIterator[Segment]) -> list[Segment]:
    out: list[Segment] = []

    async def collect() -> None:
        async for seg in segments:
            out.append(seg)

    task = asyncio.ensure_future(collect())
    await finish_or_hang_up(task, request, task.cancel)  # a hang-up stops the transcription
    return out


def _respond(fmt: str, segments: list[Segment], info: TranscriptionInfo) -> Response:
    from ..transcription.writers import WRITERS, full_text, verbose_dict

    if fmt in TEXT_TYPES:
        body = full_text(segments) + "\n" if fmt == "text" else WRITERS[fmt](segments, info)
        return PlainTextResponse(body, media_type=TEXT_TYPES[fmt])
    usage = {"type": "duration", "seconds": math.ceil(info.duration)}
    if fmt == "verbose_json":
        return JSONResponse({**verbose_dict(segments, info), "usage": usage})
    return JSONResponse({"text": full_text(segments), "usage": usage})


async def _stream(
    segments: AsyncIterator[Segment], tr: Transcription, slot: Slot
) -> AsyncIterator[bytes]:
    from ..transcription.writers import clean

    texts: list[str] = []
    n_in = n_out = 0
    try:
        async for seg in segments:
            text = clean(seg.text)
            n_in += seg.prompt_tokens
            n_out += len(seg.tokens)
            if text:
                yield sse(
                    {
                        "type": "transcript.text.delta",
                        "delta": (" " if texts else "") + text,
                        "segment": {
                            "id": seg.id,
                            "start": round(seg.start, 3),
                            "end": round(seg.end, 3),
                            "text": text,
                        },
                        "duration": round(tr.declared_duration, 3),
                    }
                )
                texts.append(text)
        audio = min(round(tr.info.speech * 25), n_in)  # 25 audio tokens per second
        yield sse(
            {
                "type": "transcript.text.done",
                "text": " ".join(texts),
                "usage": {
                    "type": "tokens",
                    "input_tokens": n_in,
                    "output_tokens": n_out,
                    "total_tokens": n_in + n_out,
                    "input_token_details": {"audio_tokens": audio, "text_tokens": n_in - audio},
                },
            }
        )
    except Exception as exc:
        yield sse(error_body(f"the transcription failed: {exc}", "server_error"))
    finally:
        slot.release()
