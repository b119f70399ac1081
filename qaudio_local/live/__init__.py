"""Live voice: audio streamed in as it is spoken, turns and their words or answers out.

The library side of ``qaudio serve``'s Realtime endpoint, with no web framework in it:

- :mod:`.options`: :class:`LiveConfig` (what a session is set to), :class:`TurnDetection`
  (server VAD, mapped onto the long-form path's ``VadOptions``), :class:`LiveLimits`.
- :mod:`.turns`: PCM16 at the client's rate -> 16 kHz samples with exact indices; turns
  found by the long-form path's segmenter, run incrementally, or committed by the client.
- :mod:`.work`: each turn's transcription (``qaudio transcribe``'s instruction and
  sampling) or the model's answer in a :class:`~qaudio_local.chat.Conversation`.
- :mod:`.session`: :class:`LiveSession`, its two threads and its bounds.
- :mod:`.events`: what a session emits, as dataclasses.

Built on :mod:`qaudio_local.transcription`, :mod:`qaudio_local.chat`, the engine and audio.
"""

from __future__ import annotations

from .events import LiveEvent, SessionError
from .options import LiveConfig, LiveLimits, TurnDetection
from .session import LiveSession

__all__ = ["LiveConfig", "LiveEvent", "LiveLimits", "LiveSession", "SessionError", "TurnDetection"]
