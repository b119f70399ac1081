"""whisper.cpp's encoder through ctypes, from the libwhisper that the pywhispercpp wheel bundles.

Only the C library is used (never the package's Python bindings): ``libwhisper.so`` sits at
the top of site-packages beside ``_pywhispercpp*.so`` and finds its own ggml in
``pywhispercpp.libs/``. The declarations below follow ``whisper.h`` of whisper.cpp 1.8.5,
the release pyproject.toml pins.

:class:`WhisperCpp` loads a model file (:mod:`qaudio_dev.bench.whisper_ggml` writes one) on
the CPU with whisper.cpp's default context parameters otherwise (flash attention on), takes
a log-mel with ``whisper_set_mel`` and runs ``whisper_encode``. Through this API whisper.cpp
always encodes a full 30 s window (3000 mel frames, 1500 positions), whatever the audio's
length, one window per call (there is no batch); ``whisper_encode`` also computes the
decoder's cross-attention keys and values from the encoder output (one decoder layer in the
benchmark's model). The encoder output itself is not exported: :meth:`WhisperCpp.logits`
reads it back through the decoder (``whisper_decode``, ``whisper_get_logits``).

whisper.cpp may abort the process on an error it does not return (ggml asserts): run it in a
child process where that matters.
"""

from __future__ import annotations

import ctypes
import importlib.util
from pathlib import Path

import numpy as np

DEFAULT_DTW_N_TOP = -1  # whisper_context_default_params()'s values: a layout check
DEFAULT_DTW_MEM_SIZE = 128 * 1024 * 1024


class _Aheads(ctypes.Structure):
    _fields_ = [("n_heads", ctypes.c_size_t), ("heads", ctypes.c_void_p)]


class _ContextParams(ctypes.Structure):
    """``struct whisper_context_params`` of whisper.h 1.8.5, field for field."""

    _fields_ = [
        ("use_gpu", ctypes.c_bool),
        ("flash_attn", ctypes.c_bool),
        ("gpu_device", ctypes.c_int),
        ("dtw_token_timestamps", ctypes.c_bool),
        ("dtw_aheads_preset", ctypes.c_int),  # enum whisper_alignment_heads_preset
        ("dtw_n_top", ctypes.c_int),
        ("dtw_aheads", _Aheads),
        ("dtw_mem_size", ctypes.c_size_t),
    ]


def library_path() -> Path:
    """The bundled libwhisper of the installed pywhispercpp.

    Raises:
        ImportError: pywhispercpp is not installed, or holds no libwhisper.
    """
    spec = importlib.util.find_spec("pywhispercpp")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("pywhispercpp is not installed")
    site = Path(next(iter(spec.submodule_search_locations))).parent
    for candidate in ("libwhisper.so", "libwhisper.so.1", "libwhisper.dylib"):
        if (site / candidate).is_file():
            return site / candidate
    repaired = sorted((site / "pywhispercpp.libs").glob("libwhisper*.so*"))
    if repaired:
        return repaired[0]
    raise ImportError(f"pywhispercpp in {site} bundles no libwhisper")


_LIB: ctypes.CDLL | None = None


def library() -> ctypes.CDLL:
    """libwhisper, loaded once, its functions declared."""
    global _LIB
    if _LIB is None:
        lib = ctypes.CDLL(str(library_path()))
        ctx, f32p, i32p = (
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_float),
            ctypes.POINTER(ctypes.c_int32),
        )
        c_int, params_p = ctypes.c_int, ctypes.POINTER(_ContextParams)
        for name, res, args in (
            ("whisper_version", ctypes.c_char_p, []),
            ("whisper_print_system_info", ctypes.c_char_p, []),
            ("whisper_context_default_params_by_ref", params_p, []),
            ("whisper_free_context_params", None, [params_p]),
            ("whisper_init_from_file_with_params", ctx, [ctypes.c_char_p, _ContextParams]),
            ("whisper_free", None, [ctx]),
            ("whisper_set_mel", c_int, [ctx, f32p, c_int, c_int]),
            ("whisper_encode", c_int, [ctx, c_int, c_int]),
            ("whisper_decode", c_int, [ctx, i32p, c_int, c_int, c_int]),
            ("whisper_get_logits", f32p, [ctx]),
            ("whisper_n_vocab", c_int, [ctx]),
            ("whisper_model_n_mels", c_int, [ctx]),
            ("whisper_model_n_audio_ctx", c_int, [ctx]),
            ("whisper_model_ftype", c_int, [ctx]),
        ):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        _LIB = lib
    return _LIB


def system_info() -> str:
    """whisper.cpp's version and the CPU features its ggml was built with."""
    lib = library()
    return f"whisper.cpp {lib.whisper_version().decode()}: " + (
        lib.whisper_print_system_info().decode().strip()
    )


def cpu_params(flash_attn: bool | None = None) -> _ContextParams:
    """whisper.cpp's default context parameters, on the CPU; ``flash_attn`` (default: on)
    as given, if given."""
    lib = library()
    ref = lib.whisper_context_default_params_by_ref()
    params = _ContextParams.from_buffer_copy(ref.contents)
    lib.whisper_free_context_params(ref)
    if params.dtw_n_top != DEFAULT_DTW_N_TOP or params.dtw_mem_size != DEFAULT_DTW_MEM_SIZE:
        raise RuntimeError("whisper_context_params does not match whisper.h 1.8.5's layout")
    params.use_gpu = False
    if flash_attn is not None:
        params.flash_attn = flash_attn
    return params


class WhisperCpp:
    """One whisper.cpp context on the CPU: a model, its state, ``n_threads`` threads;
    ``flash_attn`` None keeps whisper.cpp's default (on: F16 keys and values)."""

    def __init__(self, model: Path, n_threads: int, flash_attn: bool | None = None) -> None:
        self._lib = library()
        self.n_threads = n_threads
        self._ctx = self._lib.whisper_init_from_file_with_params(
            str(model).encode(), cpu_params(flash_attn)
        )
        if not self._ctx:
            raise RuntimeError(f"whisper.cpp refused {model} (its log is on stderr)")
        self.n_mels = int(self._lib.whisper_model_n_mels(self._ctx))
        self.n_frames = 2 * int(self._lib.whisper_model_n_audio_ctx(self._ctx))
        self.n_vocab = int(self._lib.whisper_n_vocab(self._ctx))

    def encode(self, mel: np.ndarray) -> None:
        """Encode one window's log-mel, shape (n_mels, frames), frames at most a full
        window (3000); shorter is zero-padded by whisper.cpp to the full window."""
        if mel.ndim != 2 or mel.shape[0] != self.n_mels or mel.shape[1] > self.n_frames:
            raise ValueError(
                f"mel of shape {mel.shape}: expected ({self.n_mels}, <= {self.n_frames})"
            )
        data = np.ascontiguousarray(mel, dtype=np.float32)
        f32p = ctypes.POINTER(ctypes.c_float)
        if self._lib.whisper_set_mel(
            self._ctx, data.ctypes.data_as(f32p), data.shape[1], data.shape[0]
        ):
            raise RuntimeError("whisper_set_mel failed")
        if self._lib.whisper_encode(self._ctx, 0, self.n_threads):
            raise RuntimeError("whisper_encode failed")

    def logits(self, tokens: list[int]) -> np.ndarray:
        """The decoder's logits after each of ``tokens`` (fed one at a time from position 0),
        attending to the last encoded window: shape (len(tokens), n_vocab)."""
        out = np.empty((len(tokens), self.n_vocab), dtype=np.float32)
        for i, token in enumerate(tokens):
            one = (ctypes.c_int32 * 1)(token)
            if self._lib.whisper_decode(self._ctx, one, 1, i, self.n_threads):
                raise RuntimeError("whisper_decode failed")
            row = self._lib.whisper_get_logits(self._ctx)
            out[i] = np.ctypeslib.as_array(row, shape=(self.n_vocab,))
        return out

    def close(self) -> None:
        """Free the context (the object is unusable afterwards)."""
        if self._ctx:
            self._lib.whisper_free(self._ctx)
            self._ctx = None

    def __enter__(self) -> WhisperCpp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
