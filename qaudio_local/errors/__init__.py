"""The whole exception hierarchy of qaudio-local.

Every error derives from :class:`QAudioError` and also from the builtin that
matches its meaning, so callers can catch either. Each one carries the data
that describes the problem as attributes, and its message says what to do next.

Each class also decides its own outcome, as class attributes a subclass may override:
the ``qaudio`` command's exit code, the server's HTTP status and OpenAI's error
``type`` (and ``code``, where OpenAI has one). The command line and the server look
these up; neither keeps a table of its own. Every error pickles with its message and
attributes, so it can cross a process boundary.
The package imports nothing else of qaudio_local; its modules group the classes by
where they arise (:mod:`.audio`, :mod:`.runtime`, :mod:`.hub`, :mod:`.client`,
:mod:`.live`), all exported here.
"""

from __future__ import annotations

from .audio import (
    AudioDecodeError,
    AudioError,
    AudioFileNotFoundError,
    AudioTooLargeError,
    AudioTooLongError,
    EmptyAudioError,
    InvalidAudioError,
)
from .base import QAudioError
from .client import AudioDeviceError, RealtimeSessionError, ServerConnectionError
from .hub import (
    CatalogError,
    DiskFullError,
    HubUnreachableError,
    IntegrityError,
    OfflineModelMissingError,
    PlanError,
    RemoteFileNotFoundError,
    UnknownModelError,
)
from .live import LiveEventError
from .runtime import (
    CheckpointNotFoundError,
    ContextFullError,
    ContextOverflowError,
    ConversationFileError,
    ConversionError,
    CpuKernelError,
    DependencyMissingError,
    ModelFileError,
    ModelFileNotFoundError,
    OptionError,
    RuntimeBackendError,
)

__all__ = [
    "AudioDecodeError",
    "AudioDeviceError",
    "AudioError",
    "AudioFileNotFoundError",
    "AudioTooLargeError",
    "AudioTooLongError",
    "CatalogError",
    "CheckpointNotFoundError",
    "ContextFullError",
    "ContextOverflowError",
    "ConversationFileError",
    "ConversionError",
    "CpuKernelError",
    "DependencyMissingError",
    "DiskFullError",
    "EmptyAudioError",
    "HubUnreachableError",
    "IntegrityError",
    "InvalidAudioError",
    "LiveEventError",
    "ModelFileError",
    "ModelFileNotFoundError",
    "OfflineModelMissingError",
    "OptionError",
    "PlanError",
    "QAudioError",
    "RealtimeSessionError",
    "RemoteFileNotFoundError",
    "RuntimeBackendError",
    "ServerConnectionError",
    "UnknownModelError",
]
