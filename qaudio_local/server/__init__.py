"""``qaudio serve``: an OpenAI-compatible HTTP server over the engine.

:func:`~.app.create_app` builds the ASGI app (FastAPI): chat completions with audio,
transcriptions and translations through the long-form path, the model list and health.
Built on :mod:`qaudio_local.engine`, :mod:`qaudio_local.transcription` and
:mod:`qaudio_local.audio`.
"""
