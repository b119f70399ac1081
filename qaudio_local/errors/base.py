"""The root of the hierarchy: :class:`QAudioError`, its outcome attributes and pickling."""

from __future__ import annotations

from typing import Any, ClassVar

# the attributes of an OSError that live in slots, not in the instance's __dict__
_OSERROR_SLOTS = ("errno", "strerror", "filename", "filename2")


class QAudioError(Exception):
    """Root of every error raised by qaudio-local.

    Attributes:
        exit_code: The ``qaudio`` command's exit status: 2 when what the user passed is
            wrong (a path, a name, an option: fix the command), 1 when something failed
            (the network, the disk, llama.cpp).
        http_status: The server's status when a request ends in this error: 400 for input
            the client can fix, 404 for a name that does not exist, 500 for what only the
            server's operator can fix (its model files, registry, disk or network; the
            client passed none of those, whatever the exit code says).
        openai_type: The ``type`` of OpenAI's error object: ``"invalid_request_error"``
            with a 4xx status, ``"server_error"`` with a 5xx.
        openai_code: The ``code`` of OpenAI's error object (``None`` for most errors).
    """

    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500
    openai_type: ClassVar[str] = "server_error"
    openai_code: ClassVar[str | None] = None

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as the class, ``args`` (the message) and the attributes.

        Unpickling does not call the subclass's ``__init__`` (whose arguments are not
        ``args``: most take keywords, some compose the message); :func:`_rebuild` makes the
        instance from ``args`` as the builtin base does, then the attributes are restored.
        """
        state = dict(self.__dict__)
        if isinstance(self, OSError):
            state.update(
                (name, getattr(self, name))
                for name in _OSERROR_SLOTS
                if getattr(self, name) is not None
            )
        return _rebuild, (type(self), self.args), state


def _rebuild(cls: type[QAudioError], args: tuple[Any, ...]) -> QAudioError:
    """An instance of ``cls`` with ``args``, made by the builtin base class (for unpickling)."""
    error = cls.__new__(cls, *args)
    super(QAudioError, error).__init__(*args)
    return error
