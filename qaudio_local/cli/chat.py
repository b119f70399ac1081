"""``qaudio chat``: an interactive voice-and-text conversation in the terminal.

A thin face over :class:`qaudio_local.chat.Conversation`: each turn costs only what is
new, because the engine keeps the earlier turns' KV cells. The answer goes to stdout;
everything else (notices, stats, prompts) to stderr.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from ..audio.limits import AUDIO_SUFFIXES
from ..config import DEFAULT_SYSTEM_PROMPT
from ..errors import QAudioError
from .main import handle_errors, main
from .options import check_model_options, load_model, model_options, sampling_from, sampling_options
from .remote import check_remote_usage, open_servers, server_options

SETTABLE = {"temperature": float, "top_p": float, "top_k": int, "max_tokens": int, "seed": int}
WARN_AT = 0.75  # of the context used
HELP = """commands:
  /audio PATH...     attach audio to your next message (a path alone on a line does it too)
  /clear             forget the conversation
  /system TEXT       set the system prompt
  /set NAME VALUE    temperature, top_p, top_k, max_tokens or seed
  /save FILE         save the conversation (JSON; audio by path and sha256)
  /load FILE         load a saved conversation (refuses clips that changed)
  /retry             answer the last message again
  /stats             tokens, timings, context used and left
  /help              this list
  /bye               leave (or Ctrl+D)
An audio file's path typed (or dropped) alone on a line is attached, not sent: then ask
about it, or press Enter to send it alone (a voice turn). \"\"\" starts and ends a message of
several lines; Ctrl+C stops an answer and keeps the conversation."""


def _use_color() -> bool:
    return sys.stderr.isatty() and not os.environ.get("NO_COLOR")


def note(text: str, color: str = "yellow") -> None:
    """A line for the user that is not the answer: on stderr, coloured on a terminal."""
    click.echo(click.style(text, fg=color) if _use_color() else text, err=True)


@contextlib.contextmanager
def _history() -> Iterator[None]:
    """Line editing and a history kept in the user data folder (QAUDIO_NO_HISTORY=1: off)."""
    try:
        import readline
    except ImportError:  # Windows without pyreadline3: plain input()
        yield
        return
    if os.environ.get("QAUDIO_NO_HISTORY", "").strip().lower() in {"1", "true", "yes", "on"}:
        yield
        return
    from ..paths import qaudio_home

    path = qaudio_home() / "chat_history"
    with contextlib.suppress(OSError):
        readline.read_history_file(path)
    readline.set_history_length(1000)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(path)


def _as_path(line: str) -> Path | None:
    """A line that is only a path to an audio file (as typed, quoted, escaped or dropped)."""
    try:
        words = shlex.split(line)
    except ValueError:  # e.g. an apostrophe in a file name
        words = []
    for candidate in ([words[0]] if len(words) == 1 else []) + [line]:
        try:
            p = Path(candidate).expanduser()
            if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file():
                return p
        except (OSError, RuntimeError):  # a name too long for a path; ~user unknown
            continue
    return None


class ChatSession:
    """The loop: read a line, run a command or a turn, show the answer.

    Args:
        conv: The conversation.
        read: Reads one line (``input`` with a prompt); raises EOFError at the end.
    """

    def __init__(self, conv: Any, read: Callable[[str], str] = input) -> None:
        self.conv, self.read = conv, read
        self.attached: list[Path] = []
        self.running = True

    def loop(self) -> None:
        while self.running:
            try:
                line = self._read_message()
            except EOFError:
                click.echo(err=True)
                return
            except KeyboardInterrupt:
                note("\n(Ctrl+D or /bye to leave)")
                continue
            if line is None:
                continue
            try:
                self.handle(line)
            except QAudioError as exc:
                note(f"error: {exc}", "red")
            except ValueError as exc:
                note(f"error: {exc}", "red")

    def _read_message(self) -> str | None:
        line = self.read(">>> ")
        if not line.strip().startswith('"""'):
            return line
        lines, first = [], line.strip()[3:]
        if first.endswith('"""') and first:
            return first[:-3]
        if first:
            lines.append(first)
        while True:
            more = self.read("... ")
            if more.rstrip().endswith('"""'):
                lines.append(more.rstrip()[:-3])
                return "\n".join(lines)
            lines.append(more)

    def handle(self, line: str) -> None:
        text = line.strip()
        path = _as_path(text) if text else None  # before commands: "/home/me/a.wav" is a path
        if text.startswith("/") and path is None:
            name, _, rest = text[1:].partition(" ")
            command = getattr(self, f"cmd_{name.lower()}", None)
            if command is None and Path(text).suffix.lower() in AUDIO_SUFFIXES:
                note(f"error: no such file: {text}", "red")  # a mistyped absolute path
                return
            if command is None:
                note(f"unknown command /{name}; /help lists them", "red")
                return
            command(rest.strip())
            return
        if path is not None:  # attached at once: the next line is the question about it
            self.attach([path])
            return
        if not text and not self.attached:
            return
        self._turn(line if "\n" in line else text)

    # -- turns -------------------------------------------------------------------------------

    def attach(self, paths: list[Path]) -> None:
        """Attach the files that exist; say which were attached (nothing if none was)."""
        new = []
        for p in paths:
            try:
                found = p.is_file()
            except OSError:  # e.g. a name too long for a path
                found = False
            if not found:
                note(f"error: no such file: {p}", "red")
                continue
            new.append(p)
        if not new:
            return
        self.attached += new
        n = len(self.attached)
        names = ", ".join(p.name for p in new)
        hint = (
            "ask about it, or press Enter to send it alone"
            if n == 1
            else f"{n} clips in all; ask about them, or press Enter to send them alone"
        )
        note(f"attached: {names} ({hint})", "cyan")

    def _turn(self, text: str) -> None:
        dropped = self.conv.dropped
        try:
            self.conv.add(text, list(self.attached))
        finally:
            self.attached = []
        self._answer(self.conv.reply)
        if self.conv.dropped > dropped:
            n = self.conv.dropped - dropped
            note(f"note: dropped the {n} oldest exchange(s) to make room in the context")

    def _answer(self, start: Callable[[], Any]) -> None:
        gen = start()
        try:
            for chunk in gen:
                click.echo(chunk.text, nl=False)
                sys.stdout.flush()
            click.echo()
        except KeyboardInterrupt:
            click.echo()
            note("[stopped]")
            return
        self._context_warning()

    def _context_warning(self) -> None:
        used, n_ctx = self.conv.tokens_used(), self.conv.n_ctx
        if used > WARN_AT * n_ctx:
            note(
                f"note: the context is {100 * used // n_ctx}% full ({used} of {n_ctx} tokens); "
                "the oldest turns will be dropped when it fills up, or /clear to start over"
            )

    # -- commands ----------------------------------------------------------------------------

    def cmd_audio(self, rest: str) -> None:
        try:
            paths = [Path(w).expanduser() for w in shlex.split(rest)]
        except (ValueError, RuntimeError) as exc:  # unbalanced quotes; ~user unknown
            note(f"error: {exc}", "red")
            return
        if not paths:
            note("usage: /audio PATH...", "red")
            return
        self.attach(paths)

    def cmd_clear(self, rest: str) -> None:
        self.conv.clear()
        self.attached = []
        note("the conversation is cleared", "cyan")

    def cmd_system(self, rest: str) -> None:
        if not rest:
            note(f"system prompt: {self.conv.system}", "cyan")
            return
        self.conv.system = rest
        note("system prompt set", "cyan")

    def cmd_set(self, rest: str) -> None:
        name, _, value = rest.partition(" ")
        if name not in SETTABLE or not value.strip():
            note(f"usage: /set {'|'.join(SETTABLE)} VALUE", "red")
            return
        try:
            new = dataclasses.replace(self.conv.sampling, **{name: SETTABLE[name](value)})
        except ValueError as exc:
            note(f"error: {exc}", "red")
            return
        self.conv.sampling = new
        note(f"{name} = {getattr(new, name)}", "cyan")

    def cmd_save(self, rest: str) -> None:
        if not rest:
            note("usage: /save FILE", "red")
            return
        note(f"saved to {self.conv.save(rest)}", "cyan")

    def cmd_load(self, rest: str) -> None:
        from ..chat import Conversation

        if not rest:
            note("usage: /load FILE", "red")
            return
        loaded = Conversation.load(rest, self.conv.model, sampling=self.conv.sampling)
        self.conv = loaded
        turns = sum(t.role == "user" for t in loaded.turns)
        note(f"loaded {turns} turn(s) from {rest}", "cyan")
        for t in loaded.turns[-2:]:
            who = "you" if t.role == "user" else "model"
            clips = f" [{', '.join(Path(c.path or '?').name for c in t.clips)}]" if t.clips else ""
            note(f"  {who}:{clips} {t.text[:200]}", "cyan")

    def cmd_retry(self, rest: str) -> None:
        self._answer(self.conv.retry)

    def cmd_stats(self, rest: str) -> None:
        r = self.conv.last
        if r is not None:
            u, t = r.usage, r.timings
            note(
                f"last answer: {u.completion_tokens} tokens ({r.finish_reason}), "
                f"{t.decode_tokens_per_s:.1f} tokens/s; prompt {u.prompt_tokens} tokens, "
                f"{u.cached_tokens} reused, {u.prompt_tokens - u.cached_tokens} computed "
                f"({u.audio_tokens} audio); encode {t.encode_ms:.0f} ms, prefill "
                f"{t.prefill_ms:.0f} ms",
                "cyan",
            )
        used, n_ctx = self.conv.tokens_used(), self.conv.n_ctx
        note(f"context: {used} of {n_ctx} tokens used, {n_ctx - used} left", "cyan")

    def cmd_help(self, rest: str) -> None:
        note(HELP, "cyan")

    def cmd_bye(self, rest: str) -> None:
        self.running = False


@main.command()
@click.argument("audio", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--system",
    "system_prompt",
    default=DEFAULT_SYSTEM_PROMPT,
    show_default=True,
    help="System prompt (/system changes it in the chat).",
)
@sampling_options
@model_options
@server_options
@handle_errors
def chat(audio: tuple[Path, ...], system_prompt: str, **opts: Any) -> None:
    """Talk with the model about audio and text, in the terminal.

    AUDIO files given here are attached to your first message. In the chat, /help lists
    the commands (/audio, /retry, /save, /load, /stats, ...). Earlier turns stay in the
    model's cache, so each turn costs only what is new.

    \b
    Examples:
      qaudio chat
      qaudio chat meeting.wav --system "You are a concise note taker."
      qaudio chat -m qwen2-audio:Q5_K_M --temperature 0.7
      qaudio chat --server http://gpu-box:8000 --api-key-file key.txt
    """
    from ..chat import Conversation

    remote = check_remote_usage(click.get_current_context(), opts)
    if not remote:
        check_model_options(opts)
    for p in audio:
        if not p.is_file():
            raise click.BadParameter(f"no such file: {p}", param_hint="AUDIO")
    with open_servers(opts) if remote else load_model(opts) as model:
        conv = Conversation(model, system=system_prompt, sampling=sampling_from(opts))
        session = ChatSession(conv)
        note(
            f"qaudio chat: context {model.n_ctx} tokens; /help for commands, Ctrl+D to leave",
            "cyan",
        )
        session.attach(list(audio))
        with _history():
            session.loop()
