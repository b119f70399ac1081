"""Audio in: decode files, bytes and arrays (:mod:`.decode`), Whisper-identical log-mel
(:mod:`.features`) and the <= 30 s windows the encoder sees (:mod:`.windows`).

Imports only the package root (``errors``, ``config``, ``paths``); everything above may use it.
"""
