"""Conversations: the :class:`Conversation` object that ``qaudio chat`` (and the server's
multi-turn path) is a face over. Built on :mod:`qaudio_local.engine` and
:mod:`qaudio_local.audio`."""

from __future__ import annotations

from .conversation import Clip, Conversation, Turn

__all__ = ["Clip", "Conversation", "Turn"]
