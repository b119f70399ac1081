"""Long-form transcription, translation and annotation, with timestamps and subtitles.

:func:`transcribe` (in :mod:`.longform`) yields segments as they finish; the writers in
:mod:`.writers` turn them into txt, srt, vtt, json and verbose_json; :mod:`.journal`
keeps finished segments so that an interrupted run resumes. Built on :mod:`..engine`
and :mod:`..audio`.
"""

from __future__ import annotations

from .longform import (
    Segment,
    TranscribeOptions,
    Transcription,
    TranscriptionInfo,
    detect_language,
    transcribe,
)
from .writers import FORMATS, write_outputs

__all__ = [
    "FORMATS",
    "Segment",
    "TranscribeOptions",
    "Transcription",
    "TranscriptionInfo",
    "detect_language",
    "transcribe",
    "write_outputs",
]
