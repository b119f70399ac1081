"""A conversation with the model: user turns of text and audio, streamed replies, saved to JSON.

The model's answers are kept as the exact token ids it generated (not re-tokenized), so the
next turn's prompt starts with what the engine's KV cache already holds: a turn costs only
its own text and audio (see :mod:`qaudio_local.engine.batch`). When the context would
overflow, the oldest exchanges are dropped (or :class:`ContextFullError` is raised, as
``on_full`` says), and :attr:`Conversation.dropped` tells how many were.

Saved conversations refer to their audio by path and sha256; loading one refuses a clip
that has changed or gone. Audio that came as arrays is written next to the JSON file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import DEFAULT_SYSTEM_PROMPT, SAMPLE_RATE
from ..engine.options import SamplingOptions
from ..engine.prompt import Message, TokenIds
from ..engine.results import Chunk, Generation, Result
from ..errors import ContextFullError, ConversationFileError, OptionError
from ..paths import write_atomic

if TYPE_CHECKING:
    from ..engine.model import AudioModel

FORMAT = "qaudio-conversation"
VERSION = 1


@dataclass(frozen=True)
class Clip:
    """One audio attachment.

    Attributes:
        samples: Mono float32 at 16 kHz.
        sha256: Of the file's bytes (a path) or of the float32 samples (an array).
        path: The file it was read from, or ``None``.
    """

    samples: np.ndarray = field(repr=False)
    sha256: str
    path: str | None = None

    @property
    def seconds(self) -> float:
        return self.samples.size / SAMPLE_RATE

    @classmethod
    def from_path(cls, path: str | Path) -> Clip:
        """Decode ``path`` (any format the front end reads) and hash its bytes.

        Raises:
            AudioError: It cannot be read or decoded.
        """
        from ..audio import load_audio

        p = Path(path).expanduser()
        samples = load_audio(p)
        return cls(samples, _file_sha256(p), str(p.resolve()))

    @classmethod
    def from_array(cls, samples: np.ndarray) -> Clip:
        arr = np.ascontiguousarray(samples, dtype=np.float32)
        return cls(arr, hashlib.sha256(arr.tobytes()).hexdigest())


@dataclass(frozen=True)
class Turn:
    """One turn: the user's text and clips, or the model's answer (with its token ids)."""

    role: str
    text: str = ""
    clips: tuple[Clip, ...] = ()
    tokens: tuple[int, ...] = ()
    interrupted: bool = False

    def message(self) -> Message:
        if self.role == "assistant":
            part: str | TokenIds = TokenIds(self.tokens, self.text) if self.tokens else self.text
            return Message("assistant", (part,))
        parts: list[str | np.ndarray] = [c.samples for c in self.clips]
        if self.text:
            parts.append(self.text)
        return Message("user", tuple(parts))


AudioLike = str | Path | np.ndarray | Clip


class Conversation:
    """A multi-turn conversation with an :class:`~qaudio_local.engine.model.AudioModel`.

    Args:
        model: The loaded model.
        system: The system prompt.
        sampling: How answers are generated (``/set`` in the chat changes it).
        on_full: ``"drop"`` (default) drops the oldest exchanges when the next turn would
            not fit the context; ``"error"`` raises :class:`ContextFullError` instead.
    """

    def __init__(
        self,
        model: AudioModel,
        *,
        system: str = DEFAULT_SYSTEM_PROMPT,
        sampling: SamplingOptions | None = None,
        on_full: str = "drop",
    ) -> None:
        if on_full not in ("drop", "error"):
            raise ValueError("on_full must be 'drop' or 'error'")
        if getattr(model, "prompt_format", "chat") == "base":
            raise OptionError(
                "this is the base model (Qwen2-Audio-7B): it transcribes and describes one "
                "recording with a task prompt (`qaudio transcribe`, `qaudio run`), it does not "
                "chat; use qwen2-audio-7b-instruct for a conversation",
                option="--model",
            )
        self.model = model
        self.system = system
        self.sampling = sampling or SamplingOptions()
        self.on_full = on_full
        self.turns: list[Turn] = []
        self.dropped = 0  # exchanges dropped to make room, so far
        self.last: Result | None = None

    # -- building the conversation -------------------------------------------------------------

    def add(self, text: str = "", audio: Sequence[AudioLike] = ()) -> Turn:
        """Add a user turn (text, audio, or both; audio alone is a voice-chat turn).

        Raises:
            ValueError: Neither text nor audio, or the last turn is already the user's.
            AudioError: A clip cannot be read.
        """
        clips = tuple(_clip(a) for a in audio)
        if not text and not clips:
            raise ValueError("a turn needs text or audio")
        if self.turns and self.turns[-1].role == "user":
            raise ValueError("the model has not answered the last turn yet; call reply()")
        turn = Turn("user", text, clips)
        self.turns.append(turn)
        return turn

    def clear(self) -> None:
        """Forget every turn (the system prompt stays)."""
        self.turns.clear()
        self.last = None

    def messages(self) -> list[Message]:
        """The conversation as the model sees it."""
        return [Message("system", (self.system,)), *(t.message() for t in self.turns)]

    # -- context ---------------------------------------------------------------------------------

    def tokens_used(self) -> int:
        """Context positions the conversation takes now (text and audio)."""
        if not any(t.role == "user" for t in self.turns):
            return 0
        return int(self.model.prompt_tokens(messages=self.messages()))

    @property
    def n_ctx(self) -> int:
        return int(self.model.n_ctx)

    def _fit(self) -> None:
        """Drop the oldest exchanges until the prompt and an answer fit the context."""
        budget = self.n_ctx - min(self.sampling.max_tokens, self.n_ctx // 4)
        used = self.tokens_used()
        while used > budget:
            if self.on_full == "error" or len(self.turns) <= 1:
                raise ContextFullError(used, self.n_ctx, self.sampling.max_tokens)
            del self.turns[0]
            while self.turns and self.turns[0].role == "assistant":
                del self.turns[0]
            self.dropped += 1
            used = self.tokens_used()

    # -- answers ---------------------------------------------------------------------------------

    def reply(self) -> Generation:
        """Stream the model's answer to the last user turn; it joins the conversation when
        it ends (also when it is stopped early: the part the user saw is kept).

        Raises:
            ValueError: The last turn is not a user turn.
            ContextFullError: ``on_full="error"`` and the turn does not fit.
        """
        if not self.turns or self.turns[-1].role != "user":
            raise ValueError("add a user turn first")
        self._fit()
        gen = self.model.stream(messages=self.messages(), sampling=self.sampling)
        return Generation(self._recording(gen), cancel=gen.cancel)

    def ask(
        self, text: str = "", audio: Sequence[str | Path | np.ndarray | Clip] = ()
    ) -> Generation:
        """:meth:`add` then :meth:`reply`."""
        self.add(text, audio)
        return self.reply()

    def retry(self) -> Generation:
        """Answer the last user turn again (a new seed when sampling is random).

        Raises:
            ValueError: There is no answer to replace.
        """
        if not self.turns or self.turns[-1].role != "assistant":
            raise ValueError("there is no answer to retry")
        self.turns.pop()
        if self.sampling.temperature > 0:
            self.sampling = replace(self.sampling, seed=(self.sampling.seed + 1) % 2**32)
        return self.reply()

    def _recording(self, gen: Generation) -> Iterator[Chunk | Result]:
        tokens: list[int] = []
        texts: list[str] = []
        try:
            for chunk in gen:
                if chunk.token >= 0:
                    tokens.append(chunk.token)
                texts.append(chunk.text)
                yield chunk
        finally:
            result = gen.result
            if result is not None:
                tokens, texts = list(result.tokens), [result.text]
            if tokens or texts:
                stopped = result is None or result.finish_reason == "cancelled"
                self.turns.append(Turn("assistant", "".join(texts), (), tuple(tokens), stopped))
            self.last = result
        if result is not None:
            yield result

    # -- saving ----------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the conversation as JSON (atomically); clips that came as arrays are
        written as WAV files in ``<path>.audio/``.

        Raises:
            ConversationFileError: It cannot be written.
        """
        p = Path(path).expanduser()
        try:
            turns = [self._turn_json(t, p) for t in self.turns]
            data = {
                "format": FORMAT,
                "version": VERSION,
                "system": self.system,
                "sampling": {k: v for k, v in self.sampling.__dict__.items() if k not in ("stop",)},
                "turns": turns,
            }
            write_atomic(p, json.dumps(data, indent=1, ensure_ascii=False))
        except OSError as exc:
            raise ConversationFileError(
                f"cannot save the conversation to {p}: {exc}", path=str(p)
            ) from exc
        return p

    def _turn_json(self, t: Turn, p: Path) -> dict[str, Any]:
        clips = []
        for c in t.clips:
            path = c.path
            if path is None:  # an array: keep it next to the JSON, by its digest
                import soundfile as sf

                folder = p.with_name(p.name + ".audio")
                folder.mkdir(parents=True, exist_ok=True)
                target = folder / f"{c.sha256[:16]}.wav"
                if not target.exists():
                    sf.write(target, c.samples, SAMPLE_RATE, subtype="FLOAT")
                path, sha = str(target), _file_sha256(target)
            else:
                sha = c.sha256
            clips.append({"path": path, "sha256": sha, "seconds": round(c.seconds, 3)})
        out: dict[str, Any] = {"role": t.role, "text": t.text, "audio": clips}
        if t.tokens:
            out["tokens"] = list(t.tokens)
        if t.interrupted:
            out["interrupted"] = True
        return out

    @classmethod
    def load(cls, path: str | Path, model: AudioModel, **kwargs: Any) -> Conversation:
        """Read a conversation saved by :meth:`save`.

        Raises:
            ConversationFileError: Missing, not a conversation, or a clip that changed or
                is gone (the message names it).
        """
        p = Path(path).expanduser()
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConversationFileError(f"no conversation file {p}", path=str(p)) from exc
        except (OSError, ValueError) as exc:
            raise ConversationFileError(
                f"{p} is not a readable conversation: {exc}", path=str(p)
            ) from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConversationFileError(f"{p} is not a qaudio conversation file", path=str(p))
        if data.get("version") != VERSION:
            raise ConversationFileError(
                f"{p} is version {data.get('version')!r}; this qaudio reads version {VERSION}",
                path=str(p),
            )
        conv = cls(model, system=str(data.get("system", DEFAULT_SYSTEM_PROMPT)), **kwargs)
        try:
            if isinstance(data.get("sampling"), dict) and "sampling" not in kwargs:
                conv.sampling = SamplingOptions(**data["sampling"])
            conv.turns = [_turn_from_json(t, p) for t in data.get("turns", [])]
        except (TypeError, ValueError, KeyError) as exc:
            if isinstance(exc, ConversationFileError):
                raise
            raise ConversationFileError(f"{p} is damaged: {exc}", path=str(p)) from exc
        return conv


def _clip(a: AudioLike) -> Clip:
    if isinstance(a, Clip):
        return a
    if isinstance(a, np.ndarray):
        return Clip.from_array(a)
    return Clip.from_path(a)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _turn_from_json(t: dict[str, Any], conv_path: Path) -> Turn:
    role = t["role"]
    if role not in ("user", "assistant"):
        raise ValueError(f"unknown role {role!r}")
    clips = []
    for c in t.get("audio", []):
        path = Path(c["path"])
        if not path.is_file():
            raise ConversationFileError(
                f"{conv_path} refers to {path}, which is gone; put the clip back or start a "
                "new conversation",
                path=str(path),
            )
        if _file_sha256(path) != c["sha256"]:
            raise ConversationFileError(
                f"{path} has changed since {conv_path} was saved (sha256 differs); the "
                "conversation is about the old clip, so it is not loaded",
                path=str(path),
            )
        clip = Clip.from_path(path)
        clips.append(clip)
    tokens = tuple(int(x) for x in t.get("tokens", []))
    return Turn(role, str(t.get("text", "")), tuple(clips), tokens, bool(t.get("interrupted")))
