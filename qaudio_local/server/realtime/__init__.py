"""``GET /v1/realtime``: live voice over a WebSocket, in OpenAI's Realtime protocol.

The official ``openai`` SDK connects with ``client.realtime.connect(...)``: with
``extra_query={"intent": "transcription"}`` a session transcribes each spoken turn, without
it the model answers each turn in text (a conversation). The work is the library's
:class:`~qaudio_local.live.LiveSession`; this package is the protocol around it:

- :mod:`.endpoint`: the upgrade (its refusals), the session's life and limits.
- :mod:`.client_events`: client events read and checked, handed to the session.
- :mod:`.session_config`: the session object, ``session.update``, the configuration.
- :mod:`.server_events`: the session's events as OpenAI's server events.
"""

from __future__ import annotations

from .endpoint import realtime

__all__ = ["realtime"]
