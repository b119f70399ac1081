"""A model that is loaded while it is used and given back when idle: :class:`ResidentModel`.

A server that keeps 6 GB of VRAM for as long as it runs is one a gamer stops. Like
Ollama's ``keep_alive``, a resident model unloads after an idle time (its encoder and
prefix caches go with it) and loads again when next needed; the caller that needs it
waits for the load, and callers arriving meanwhile wait for the same load::

    from functools import partial

    import qaudio_local as qa

    resident = qa.ResidentModel(partial(qa.load_model, "qwen2-audio"), keep_alive="5m")
    with resident.use() as model:  # loads it now, or finds it loaded
        print(qa.transcribe(model, "talk.flac").text)
    resident.unload()  # at once (it would go after 5 idle minutes)
    resident.close()  # unloaded, the idle timer stopped

Durations are Ollama's: ``"5m"``, ``"90s"``, ``"1h30m"``, a number of seconds; ``0``
unloads as soon as the last user leaves; a negative one (``-1``) never unloads.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import TYPE_CHECKING

from ..errors import OptionError

if TYPE_CHECKING:
    from ..engine import AudioModel

DEFAULT_KEEP_ALIVE = 300.0  # Ollama's default: five minutes

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_keep_alive(value: str | float | int | None) -> float | None:
    """Seconds to keep an idle model loaded, from Ollama's syntax; ``None``: for ever.

    ``"5m"``, ``"1h30m"``, ``"2.5s"`` (Go's durations), a plain number of seconds
    (``"300"``, ``300``); ``0`` unloads when the last user leaves; a negative value
    (``"-1"``, ``"-1m"``) or ``None`` keeps the model loaded for ever.

    Raises:
        OptionError: The text is no duration (the message shows the forms accepted).
    """
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        seconds = _parse_text(str(value))
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN or infinite
        raise OptionError(f"--keep-alive {value}: not a duration", option="--keep-alive")
    return None if seconds < 0 else seconds


def _parse_text(text: str) -> float:
    raw = text.strip()
    sign = -1.0 if raw.startswith("-") else 1.0
    body = raw[1:] if raw[:1] in ("+", "-") else raw
    try:
        return sign * float(body)  # a plain number is seconds
    except ValueError:
        pass
    parts = _PART.findall(body)
    if not body or "".join(n + u for n, u in parts) != body:
        raise OptionError(
            f"--keep-alive {text!r} is not a duration: use e.g. 5m, 90s, 1h30m, 300 "
            "(seconds), 0 (unload after each request) or -1 (never unload)",
            option="--keep-alive",
        )
    return sign * sum(float(n) * _UNITS[u] for n, u in parts)


def format_keep_alive(seconds: float | None) -> str:
    """``"5m"``, ``"90s"``, ``"1h30m"``, ``"0s"``, ``"never"``: for messages."""
    if seconds is None:
        return "never"
    whole = int(seconds)
    if whole != seconds or whole < 60:
        return f"{seconds:g}s"
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s")) if v)


class ResidentModel:
    """Loads a model with ``load()`` when it is used, unloads it after ``keep_alive`` idle.

    Thread-safe. :meth:`use` (or :meth:`acquire` / :meth:`release`) marks the model in
    use: it is never unloaded under a user. The idle time counts from the moment the last
    user leaves. A load that fails raises its error to every caller waiting for it, and
    the next caller tries again.

    Attributes:
        keep_alive: Seconds an idle model stays loaded (``None``: for ever, ``0``: it
            unloads when the last user leaves).
        loads: How many times the model was loaded.
        last_error: The error of the last load that failed (``None`` after one works).
        context_length: The loaded (or last loaded) model's context window; ``None``
            before the first load.
    """

    def __init__(
        self,
        load: Callable[[], AudioModel],
        keep_alive: str | float | None = DEFAULT_KEEP_ALIVE,
        *,
        on_unload: Callable[[], None] | None = None,
    ) -> None:
        self._load = load
        self.keep_alive = parse_keep_alive(keep_alive)
        self._on_unload = on_unload
        self._cond = threading.Condition()
        self._model: AudioModel | None = None
        self._loading: Future[AudioModel] | None = None
        self._unloading = False
        self._users = 0
        self._claims = 0  # callers waiting for the load under way
        self._force = False  # unload() asked: unload when the last user leaves
        self._idle_since: float | None = None  # monotonic time the last user left
        self._closed = False
        self.loads = 0
        self.last_error: BaseException | None = None
        self.context_length: int | None = None
        self._timer = threading.Thread(target=self._reap, name="qaudio-keep-alive", daemon=True)
        self._timer.start()

    # --- state ----------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``"loaded"``, ``"loading"``, ``"unloading"`` or ``"unloaded"``."""
        with self._cond:
            if self._loading is not None:
                return "loading"
            if self._unloading:
                return "unloading"
            return "loaded" if self._model is not None else "unloaded"

    @property
    def current(self) -> AudioModel | None:
        """The model if it is loaded now (not marked in use: for a look at its facts and
        counts, which may end at any moment; ``None`` while unloaded or loading)."""
        with self._cond:
            return None if self._unloading else self._model

    @property
    def users(self) -> int:
        """Callers using the model now."""
        with self._cond:
            return self._users

    @property
    def expires_in(self) -> float | None:
        """Seconds until an idle, loaded model unloads; ``None`` while in use, unloaded,
        or kept for ever."""
        with self._cond:
            due = self._due()
            return None if due is None else max(0.0, due - time.monotonic())

    def _due(self) -> float | None:
        if self._model is None or self._users or self._idle_since is None:
            return None
        if self._force:
            return self._idle_since
        return None if self.keep_alive is None else self._idle_since + self.keep_alive

    # --- using it -------------------------------------------------------------------------

    @contextlib.contextmanager
    def use(self) -> Iterator[AudioModel]:
        """The model, loaded if it was not, kept loaded until the ``with`` block ends."""
        model = self.acquire()
        try:
            yield model
        finally:
            self.release()

    def acquire(self) -> AudioModel:
        """Mark the model in use and return it, loading it first if needed (waiting for a
        load under way, or an unload to finish). Pair with :meth:`release`.

        Raises:
            QAudioError: Whatever ``load()`` raised.
            RuntimeError: The resident model was closed.
        """
        with self._cond:
            while self._unloading:
                self._cond.wait()
            if self._closed:
                raise RuntimeError("the model was closed (the server is stopping)")
            if self._model is not None:
                self._users += 1
                return self._model
            pending = self._loading
            mine = pending is None
            if pending is None:
                pending = self._loading = Future()
            self._claims += 1  # a use, granted the moment the load ends
        if mine:
            self._run_load(pending)
        return pending.result()  # the load's error reaches every caller that waited for it

    def _run_load(self, pending: Future[AudioModel]) -> None:
        try:
            model = self._load()
        except BaseException as exc:
            with self._cond:
                self._loading = None
                self._claims = 0
                self.last_error = exc
                self._cond.notify_all()
            pending.set_exception(exc)
            return
        with self._cond:
            closed = self._closed
            if closed:  # closed while it loaded: it is not kept
                self._loading = None
                self._claims = 0
                self._cond.notify_all()
        if closed:
            model.close()
            stop = RuntimeError("the model was closed (the server is stopping)")
            pending.set_exception(stop)
            return
        with self._cond:
            self._loading = None
            self._model = model
            self._users += self._claims  # in use by all who waited: never unloaded between
            self._claims = 0
            self._force = False
            self.loads += 1
            self.last_error = None
            self.context_length = getattr(model, "n_ctx", None)
            self._cond.notify_all()
        pending.set_result(model)

    def release(self) -> None:
        """End one use (from :meth:`acquire`); the last one starts the idle time."""
        with self._cond:
            if self._users <= 0:
                raise RuntimeError("release() without acquire()")
            self._users -= 1
            if self._users == 0:
                self._idle_since = time.monotonic()
                self._cond.notify_all()  # the timer looks again

    def load(self) -> AudioModel:
        """Load the model now (if it is not), without keeping it in use: the idle time
        starts at once. Returns it (do not hold on to it; :meth:`use` does that)."""
        model = self.acquire()
        self.release()
        return model

    def unload(self) -> bool:
        """Unload now if nobody uses it, else as soon as the last user leaves.

        Returns:
            Whether the model was loaded (and is now, or will be, unloaded).
        """
        with self._cond:
            if self._model is None or self._unloading:
                return False
            self._force = True
            self._cond.notify_all()  # the timer unloads it once nobody uses it
        return True

    def close(self) -> None:
        """Unload (waiting for users to leave, up to 5 s) and stop the idle timer.
        Idempotent; :meth:`acquire` fails afterwards."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            deadline = time.monotonic() + 5.0
            while self._users and time.monotonic() < deadline:
                self._cond.wait(timeout=0.1)
        self._unload(even_in_use=True)
        self._timer.join(timeout=2.0)

    # --- unloading ------------------------------------------------------------------------

    def _reap(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                due = self._due()
                wait = None if due is None else due - time.monotonic()
                if wait is None or wait > 0:
                    self._cond.wait(timeout=wait)
                    continue
            self._unload(even_in_use=False)

    def _unload(self, *, even_in_use: bool) -> None:
        with self._cond:
            model = self._model
            if model is None or self._unloading or (self._users and not even_in_use):
                return
            if not even_in_use:
                due = self._due()
                if due is None or time.monotonic() < due:
                    return
            self._unloading = True
        try:
            model.close()  # the context, KV cache, encoder and prefix caches go with it
        finally:
            del model
            with self._cond:
                self._model = None
                self._unloading = False
                self._force = False
                self._idle_since = None
                self._cond.notify_all()
            if self._on_unload is not None:
                self._on_unload()
