"""Remote servers as the engine: OpenAI-compatible chat completions with ``input_audio``.

:class:`~.model.RemoteModel` stands where an :class:`~qaudio_local.engine.model.AudioModel`
stands for the long-form pipeline, ``qaudio run`` and the conversation; its requests go to
a :class:`~.pool.ServerPool` of one or many servers (``qaudio serve``, llama-server, vLLM),
each given as much work as it says it can take.
"""

from .model import RemoteModel, open_remote
from .pool import ServerPool, ServerStats
from .servers import ServerSpec, parse_server

__all__ = ["RemoteModel", "ServerPool", "ServerSpec", "ServerStats", "open_remote", "parse_server"]
