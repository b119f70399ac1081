"""What a live session is configured with, and the limits that keep it bounded.

:class:`LiveConfig` is the session's configuration (what OpenAI's ``session.update`` sets);
:class:`TurnDetection` maps the server VAD's knobs onto the long-form path's
:class:`~qaudio_local.audio.vad.VadOptions`, whose defaults it shares, so that a live
transcription cuts speech where ``qaudio transcribe`` does; :class:`LiveLimits` is what a
server allows one session (buffered audio, its length, idle time, the size of an event).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..config import DEFAULT_SYSTEM_PROMPT, SAMPLE_RATE

if TYPE_CHECKING:
    from ..audio.vad import VadOptions
    from ..transcription import TranscribeOptions

MODES = ("transcription", "conversation")
INPUT_RATES = (24_000, SAMPLE_RATE)  # OpenAI's rate, and the model's own
MIN_COMMIT_MS = 100  # a manual commit of less audio is refused (as OpenAI does)


@dataclass(frozen=True)
class TurnDetection:
    """Server-side voice activity detection: where a turn starts and ends.

    The defaults are those of ``qaudio transcribe`` (:class:`VadOptions`), not OpenAI's
    (300 ms padding, 500 ms of silence), so that a live turn is the segment the long-form
    path would make of the same audio.

    Attributes:
        threshold: Speech starts at a 32 ms frame whose Silero probability is at least this
            (0.5); it continues while frames stay above ``threshold - 0.15``.
        prefix_padding_ms: Audio kept before the first speech frame and after the last
            (400 ms).
        silence_duration_ms: The turn ends after this much silence (2000 ms).
        create_response: Conversation: answer when a turn ends (True).
        interrupt_response: Conversation: a new turn stops the answer being given (True).
    """

    threshold: float = 0.5
    prefix_padding_ms: int = 400
    silence_duration_ms: int = 2000
    create_response: bool = True
    interrupt_response: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ValueError("threshold must be between 0 and 1 (exclusive)")
        if not 0 <= self.prefix_padding_ms <= 10_000:
            raise ValueError("prefix_padding_ms must be 0..10000")
        if not 32 <= self.silence_duration_ms <= 30_000:
            raise ValueError("silence_duration_ms must be 32..30000")

    def vad_options(self) -> VadOptions:
        """The segmentation these settings mean (the defaults give ``VadOptions()``)."""
        from ..audio.vad import VadOptions

        return VadOptions(
            threshold=self.threshold,
            neg_threshold=min(self.threshold, max(round(self.threshold - 0.15, 6), 0.01)),
            pad_s=self.prefix_padding_ms / 1000,
            min_silence_s=self.silence_duration_ms / 1000,
        )


@dataclass(frozen=True)
class LiveConfig:
    """A live session's configuration.

    Attributes:
        mode: ``"transcription"`` (each turn's words) or ``"conversation"`` (the model
            answers each turn, in the context of the earlier ones).
        rate: Sample rate of the PCM16 input: 24000 (OpenAI's) or 16000.
        turn_detection: Server VAD settings, or ``None``: the client commits each turn.
        language: Transcription: the spoken language as the model is told it (e.g.
            ``"English"``); ``None``: the model is asked on the first turn, as
            ``qaudio transcribe`` does.
        prompt: Transcription: words or text to guide it (``qaudio transcribe``'s hint).
        instructions: Conversation: the system message.
        max_output_tokens: Conversation: the longest answer; ``None``: up to the context.
    """

    mode: str = "transcription"
    rate: int = 24_000
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)
    language: str | None = None
    prompt: str | None = None
    instructions: str = DEFAULT_SYSTEM_PROMPT
    max_output_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if self.rate not in INPUT_RATES:
            raise ValueError(f"rate must be one of {', '.join(map(str, INPUT_RATES))}")
        if self.max_output_tokens is not None and not 1 <= self.max_output_tokens <= 1 << 24:
            raise ValueError("max_output_tokens must be 1..16777216")

    def transcribe_options(self) -> TranscribeOptions:
        """The long-form options whose instruction and sampling each turn is given."""
        from ..transcription import TranscribeOptions

        vad = self.turn_detection.vad_options() if self.turn_detection else None
        return TranscribeOptions(language=self.language, hint=self.prompt, vad_options=vad)


@dataclass(frozen=True)
class LiveLimits:
    """What one session may hold and how long it may last.

    Attributes:
        max_buffer_seconds: Audio held for the session at once: received but not yet
            segmented, uncommitted (manual turns), or waiting for the model (120 s). An
            append beyond it is refused with an error and dropped.
        max_session_seconds: The longest session (3600 s), then it is closed.
        idle_seconds: A session that sends nothing for this long is closed (300 s).
        max_event_bytes: The largest client event (2 MiB; 24 kHz audio: ~30 s per append).
        max_queued_events: Events waiting to be handled or sent before the session is
            refused more (1000).
    """

    max_buffer_seconds: float = 120.0
    max_session_seconds: float = 3600.0
    idle_seconds: float = 300.0
    max_event_bytes: int = 2 * 2**20
    max_queued_events: int = 1000

    def __post_init__(self) -> None:
        for name in ("max_buffer_seconds", "max_session_seconds", "idle_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds")
        if not 1024 <= self.max_event_bytes <= 1 << 30:
            raise ValueError("max_event_bytes must be 1 KiB..1 GiB")
        if self.max_queued_events < 10:
            raise ValueError("max_queued_events must be at least 10")

    @property
    def max_buffer_samples(self) -> int:
        return int(self.max_buffer_seconds * SAMPLE_RATE)
