"""The engine's plumbing over the native libraries that llama-cpp-python ships.

:mod:`.backend` loads ``llama_cpp`` (and ``llama_cpp.mtmd_cpp``) on first use, routes
llama.cpp's log to the ``qaudio_local.llama`` logger, keeps its last error lines and
reports the backend's capabilities; :mod:`.ggml_api` declares, with ctypes, the part of
libggml the audio encoder builds its graph with. Nothing here knows about Qwen2-Audio.
"""
