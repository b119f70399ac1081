"""Transcripts as files: txt, srt, vtt, json and verbose_json (OpenAI's transcription shape).

Each writer takes the segments (anything with ``start``, ``end`` and ``text``; see
:class:`~.longform.Segment`) and returns the file's text; :func:`write_outputs` writes them
atomically (a file appears whole or not at all). Usable on their own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..paths import write_atomic

if TYPE_CHECKING:
    from .longform import Segment, TranscriptionInfo

FORMATS = ("txt", "srt", "vtt", "json", "verbose_json")
EXTENSIONS = {
    "txt": ".txt",
    "srt": ".srt",
    "vtt": ".vtt",
    "json": ".json",
    "verbose_json": ".verbose.json",
}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffd]")


def clean(text: str) -> str:
    """A segment's text for a subtitle: no control characters, no blank lines, no ``-->``."""
    text = _CONTROL.sub("", text).replace("-->", "->").strip()
    return re.sub(r"\n\s*\n+", "\n", text)


def timestamp(seconds: float, sep: str = ".", hours: bool = True) -> str:
    """``HH:MM:SS.mmm`` (``sep`` is ``,`` for SRT), from milliseconds rounded once."""
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    head = f"{h:02d}:" if hours or h else ""
    return f"{head}{m:02d}:{s:02d}{sep}{ms:03d}"


def full_text(segments: Sequence[Segment]) -> str:
    return " ".join(t for t in (clean(s.text) for s in segments) if t)


def to_txt(segments: Sequence[Segment], info: TranscriptionInfo | None = None) -> str:
    lines = [clean(s.text) for s in segments]
    return "".join(f"{line}\n" for line in lines if line)


def to_srt(segments: Sequence[Segment], info: TranscriptionInfo | None = None) -> str:
    out, n = [], 0
    for s in segments:
        text = clean(s.text)
        if not text:
            continue
        n += 1
        out.append(f"{n}\n{timestamp(s.start, ',')} --> {timestamp(s.end, ',')}\n{text}\n")
    return "\n".join(out)


def to_vtt(segments: Sequence[Segment], info: TranscriptionInfo | None = None) -> str:
    out = ["WEBVTT\n"]
    for s in segments:
        text = clean(s.text)
        if text:
            out.append(f"{timestamp(s.start)} --> {timestamp(s.end)}\n{text}\n")
    return "\n".join(out)


def to_json(segments: Sequence[Segment], info: TranscriptionInfo | None = None) -> str:
    return json.dumps({"text": full_text(segments)}, ensure_ascii=False) + "\n"


def verbose_dict(segments: Sequence[Segment], info: Any) -> dict[str, Any]:
    """OpenAI's ``verbose_json`` transcription object."""
    return {
        "task": getattr(info, "task", "transcribe"),
        "language": getattr(info, "language", "unknown"),
        "duration": round(float(getattr(info, "duration", 0.0)), 3),
        "text": full_text(segments),
        "segments": [
            {
                "id": i,
                "seek": int(s.start * 100),
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": clean(s.text),
                "tokens": list(s.tokens),
                "temperature": float(s.temperature),
                "avg_logprob": float(s.avg_logprob),
                "compression_ratio": float(s.compression_ratio),
                "no_speech_prob": float(s.no_speech_prob),
            }
            for i, s in enumerate(segments)
        ],
    }


def to_verbose_json(segments: Sequence[Segment], info: TranscriptionInfo | None = None) -> str:
    return json.dumps(verbose_dict(segments, info), ensure_ascii=False, indent=1) + "\n"


WRITERS: dict[str, Callable[[Sequence[Segment], TranscriptionInfo | None], str]] = {
    "txt": to_txt,
    "srt": to_srt,
    "vtt": to_vtt,
    "json": to_json,
    "verbose_json": to_verbose_json,
}


def output_path(stem_path: Path, fmt: str) -> Path:
    """``talk`` -> ``talk.srt`` (``talk.verbose.json`` for verbose_json)."""
    return stem_path.with_name(stem_path.name + EXTENSIONS[fmt])


def write_outputs(
    stem_path: Path, formats: Sequence[str], segments: Sequence[Segment], info: TranscriptionInfo
) -> list[Path]:
    """Write every format for one recording; return the paths written."""
    paths = []
    for fmt in formats:
        path = output_path(stem_path, fmt)
        write_atomic(path, WRITERS[fmt](segments, info))
        paths.append(path)
    return paths
