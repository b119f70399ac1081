"""The child process of the trial load (see :mod:`.loadcheck`).

Run as ``python -m qaudio_local.engine.gguf.loadchild JOB_JSON``; it prints a ``stage``
line before each stage and ``ok`` at the end, so that the parent can tell which file a
crash belongs to.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

from ...errors import QAudioError, RuntimeBackendError
from ..threads import default_threads
from .info import MMAP_ALIGNMENT
from .loadcheck import CLEAN_EXIT, NOT_FINITE_EXIT


class _NotFinite(Exception):
    """The stage's logits hold NaN or infinity: the file's weights do, or it is damaged."""


def _stage(name: str) -> None:
    sys.stdout.write(f"stage {name}\n")
    sys.stdout.flush()


def _text_alone(
    model_path: str, n_layer: int, quantized: bool, options: Any, alignment: int
) -> None:
    """Load the text model, tokenize and decode a chat prompt (the text model's stage).

    The parent validated the file; this goes straight to llama.cpp.
    """
    import ctypes

    import numpy as np

    from ..bindings.backend import llama_modules
    from ..cpu_probe import fast_kernel_seam, kernel_plan

    llama, _ = llama_modules()
    kernels = kernel_plan(options.cpu_kernels, quantized, False)
    sys.stdout.write(f"kernels {'fast' if kernels.extra_bufts else 'portable'}\n")
    sys.stdout.flush()
    fast_kernel_seam(quantized, kernels.extra_bufts)
    mparams = llama.llama_model_default_params()
    mparams.use_extra_bufts = kernels.extra_bufts
    if alignment % MMAP_ALIGNMENT:
        mparams.load_mode = llama.LLAMA_LOAD_MODE_NONE
    layers = options.n_gpu_layers
    mparams.n_gpu_layers = n_layer + 1 if layers < 0 else layers
    lm = llama.llama_model_load_from_file(model_path.encode(), mparams)
    if not lm:
        raise RuntimeBackendError("llama.cpp could not load the text model")
    try:
        cparams = llama.llama_context_default_params()
        cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = 256
        cparams.n_threads = cparams.n_threads_batch = options.n_threads or default_threads()
        ctx = llama.llama_init_from_model(lm, cparams)
        if not ctx:
            raise RuntimeBackendError("llama.cpp could not create a context")
        try:
            vocab = llama.llama_model_get_vocab(lm)
            text = b"<|im_start|>user\nAudio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nhi<|im_end|>\n"
            buf = (llama.llama_token * 128)()
            n = llama.llama_tokenize(vocab, text, len(text), buf, 128, False, True)
            if n <= 0:
                raise RuntimeBackendError("llama.cpp could not tokenize a prompt")
            if llama.llama_decode(ctx, llama.llama_batch_get_one(buf, n)) != 0:
                raise RuntimeBackendError("llama.cpp could not decode a prompt")
            n_vocab = llama.llama_vocab_n_tokens(vocab)
            logits = llama.llama_get_logits_ith(ctx, -1)
            if not logits or not np.isfinite(np.ctypeslib.as_array(logits, (n_vocab,))).all():
                raise _NotFinite
            piece = ctypes.create_string_buffer(64)
            llama.llama_token_to_piece(vocab, buf[0], piece, 64, 0, True)
        finally:
            llama.llama_free(ctx)
    finally:
        llama.llama_model_free(lm)


def _pair(model_path: str, mmproj_path: str, options: Any) -> None:
    """Load the pair as the parent will and answer a short tone (the projector's stage)."""
    import numpy as np

    from ...config import SAMPLE_RATE
    from ..model import AudioModel
    from ..options import SamplingOptions

    ctx = 2048 if options.audio_path == "mtmd" else 512
    opts = dataclasses.replace(
        options, n_ctx=ctx, n_parallel=1, prefix_cache=0, allow_long_context=True
    )
    t = np.arange(SAMPLE_RATE // 2) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    with AudioModel(model_path, mmproj_path, opts) as m:
        if not np.isfinite(m.prompt_logits("What is this?", [tone])).all():
            raise _NotFinite
        m.generate("What is this?", [tone], sampling=SamplingOptions(max_tokens=2))


def main(argv: list[str] | None = None) -> int:
    """The child: one JSON argument (the files and options); prints ``stage`` lines (and
    which text-model kernels it used), then ``ok``; a stage whose logits are not finite
    ends it with :data:`NOT_FINITE_EXIT`. With ``"text_only"`` in the job it stops
    after the text model. ``QAUDIO_LOAD_CHECK_INJECT_FAULT=text|pair`` aborts at that
    stage, ``hang`` never ends (for tests)."""
    from ..options import ModelOptions

    job = json.loads((argv if argv is not None else sys.argv[1:])[0])
    options = ModelOptions(**job["options"])
    fault = os.environ.get("QAUDIO_LOAD_CHECK_INJECT_FAULT", "")
    if fault == "hang":
        import time

        time.sleep(3600)
    try:
        _stage("text")
        if fault == "text":
            os.abort()
        _text_alone(
            job["model"], int(job["n_layer"]), bool(job["quantized"]), options, job["alignment"]
        )
        if job.get("text_only"):
            sys.stdout.write("ok\n")
            return 0
        _stage("pair")
        if fault == "pair":
            os.abort()
        _pair(job["model"], job["mmproj"], options)
    except QAudioError as exc:
        sys.stdout.write(f"error {type(exc).__name__}: {exc}\n")
        return CLEAN_EXIT
    except _NotFinite:
        return NOT_FINITE_EXIT
    sys.stdout.write("ok\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
