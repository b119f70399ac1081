"""The measured sides, each in its own process: ``python -m qaudio_dev.bench.children KIND
SPEC_JSON`` runs one and writes its figures to the JSON file ``SPEC["out"]``."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from qaudio_dev.bench.build import build_models, make_clip
from qaudio_dev.bench.run import own_peak_bytes
from qaudio_dev.bench.settings import (
    AUDIO_MARKER,
    N_BATCH,
    PARALLEL,
    PREFILL_CLIP_S,
    PROMPT,
    Sizes,
    rotated,
)
from qaudio_local.config import SAMPLE_RATE
from qaudio_local.engine.prompt import render, user


def child_ttft(spec: dict[str, Any]) -> dict[str, Any]:
    """This project, one audio path: first token and end to end for each clip."""
    from qaudio_local.engine.model import AudioModel
    from qaudio_local.engine.options import ModelOptions, SamplingOptions

    opts = ModelOptions(
        n_ctx=2048, n_threads=spec["threads"], audio_path=spec["path"], flash_attn="on"
    )
    sampling = SamplingOptions(max_tokens=spec["answer"], stop_at_end_of_turn=False)
    clips = []
    with AudioModel(spec["model"], spec["mmproj"], opts) as model:
        model.generate("Say hello.", sampling=SamplingOptions(max_tokens=2))  # warm-up, no audio
        for seconds in spec["clips"]:
            model.clear_cache()
            clip = make_clip(seconds)
            t0 = time.perf_counter()
            gen = model.stream(PROMPT, [clip], sampling=sampling)
            chunks = iter(gen)
            next(chunks)
            first = time.perf_counter() - t0
            for _ in chunks:
                pass
            total = time.perf_counter() - t0
            r = gen.result
            assert r is not None
            clips.append(
                {
                    "seconds": seconds,
                    "first_s": first,
                    "total_s": total,
                    "audio_tokens": r.usage.audio_tokens,
                    "completion_tokens": r.usage.completion_tokens,
                    "encode_s": r.timings.encode_ms / 1e3,
                    "prefill_s": r.timings.prefill_ms / 1e3,
                }
            )
    return {"clips": clips}


class _Stamps:
    """A transformers streamer that notes when each generated token arrives."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if self._prompt_seen:
            self.times.append(time.perf_counter())
        self._prompt_seen = True

    def end(self) -> None:
        pass


def child_hf(spec: dict[str, Any]) -> dict[str, Any]:
    """transformers on the same checkpoint: the official processor, then ``generate``."""
    import torch
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    torch.set_num_threads(spec["threads"])
    dtype = getattr(torch, spec["dtype"])
    model = Qwen2AudioForConditionalGeneration.from_pretrained(spec["ckpt"], dtype=dtype).eval()
    processor = AutoProcessor.from_pretrained(spec["ckpt"])
    audio_id = processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    marks: list[float] = []
    tower = model.model.audio_tower
    tower.register_forward_pre_hook(lambda *_: marks.append(time.perf_counter()))
    tower.register_forward_hook(lambda *_: marks.append(time.perf_counter()))
    n = spec["answer"]
    clips = []
    with torch.inference_mode():
        warm = processor.tokenizer(
            render([user("Say hello.")], AUDIO_MARKER).text, return_tensors="pt"
        )
        model.generate(**warm, max_new_tokens=2, do_sample=False)
        for seconds in spec["clips"]:
            marks.clear()
            stamps = _Stamps()
            clip = make_clip(seconds)
            t0 = time.perf_counter()
            text = render([user(clip, PROMPT)], AUDIO_MARKER).text
            inputs = processor(
                text=text, audio=[clip], sampling_rate=SAMPLE_RATE, return_tensors="pt"
            )
            inputs["input_features"] = inputs["input_features"].to(dtype)
            t_proc = time.perf_counter() - t0
            model.generate(
                **inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, streamer=stamps
            )
            clips.append(
                {
                    "seconds": seconds,
                    "first_s": stamps.times[0] - t0,
                    "total_s": stamps.times[-1] - t0,
                    "audio_tokens": int((inputs["input_ids"] == audio_id).sum()),
                    "completion_tokens": len(stamps.times),
                    "features_s": t_proc,
                    "encode_s": marks[1] - marks[0] if len(marks) >= 2 else None,
                }
            )
    return {"clips": clips}


def child_engine(spec: dict[str, Any]) -> dict[str, Any]:
    """This project's engine on one GGUF: prefill of a 750-audio-token prompt, then decode."""
    from qaudio_dev.bench.rates import engine_rate
    from qaudio_local.engine.options import SamplingOptions

    with _engine(spec) as model:
        engine_rate(model, 1, 4)  # warm-up
        model.clear_cache()
        clip = make_clip(PREFILL_CLIP_S)
        r = model.generate(PROMPT, [clip], sampling=SamplingOptions(max_tokens=1))
        model.clear_cache()
        rate = engine_rate(model, 1, spec["tokens"])
    return {
        "positions": r.usage.prompt_tokens,
        "audio_tokens": r.usage.audio_tokens,
        "prefill_tps": r.usage.prompt_tokens / (r.timings.prefill_ms / 1e3),
        "decode_tps": rate,
    }


def _engine(spec: dict[str, Any]) -> Any:
    """This project's ``AudioModel`` with the settings every side uses."""
    from qaudio_local.engine.model import AudioModel
    from qaudio_local.engine.options import ModelOptions

    opts = ModelOptions(
        n_ctx=spec["n_ctx"], n_threads=spec["threads"], n_batch=N_BATCH, flash_attn="on"
    )
    return AudioModel(spec["model"], spec["mmproj"], opts)


@contextlib.contextmanager
def _extra_bufts(on: bool) -> Iterator[None]:
    """``Llama`` takes no ``use_extra_bufts``: set it in the defaults it starts from."""
    import llama_cpp.llama_cpp as lib

    default = lib.llama_model_default_params

    def params() -> Any:
        p = default()
        p.use_extra_bufts = on
        return p

    lib.llama_model_default_params = params
    try:
        yield
    finally:
        lib.llama_model_default_params = default


def _llama(spec: dict[str, Any]) -> Any:
    """llama-cpp-python's high-level ``Llama`` with the settings every side uses, on the
    CPU kernels the verdict allows."""
    from llama_cpp import Llama

    from qaudio_dev.bench.rates import fast_kernels
    from qaudio_local.engine.cpu_probe import fast_kernel_seam
    from qaudio_local.engine.gguf import check_text_model

    fast = fast_kernels(spec["model"])
    fast_kernel_seam(check_text_model(spec["model"]).quantized, fast)
    t = spec["threads"]
    with _extra_bufts(fast):
        return Llama(
            model_path=spec["model"],
            n_ctx=spec["n_ctx"],
            n_batch=N_BATCH,
            n_ubatch=N_BATCH,
            n_threads=t,
            n_threads_batch=t,
            flash_attn=True,
            verbose=False,
        )


def _llama_rate(llm: Any, start: list[int], n: int) -> float:
    """Greedy decode tokens/s of ``Llama.generate`` from ``start``, over ``n`` tokens."""
    llm.reset()
    stamps = []
    for _tok in llm.generate(start, temp=0.0):
        stamps.append(time.perf_counter())
        if len(stamps) == n:
            break
    return (n - 1) / (stamps[-1] - stamps[0])


def _text_prompt(n: int) -> list[int]:
    return np.random.default_rng(3).integers(0, 500, size=n).tolist()


def child_llama_py(spec: dict[str, Any]) -> dict[str, Any]:
    """llama-cpp-python's high-level ``Llama`` on the same GGUF and the same settings."""
    llm = _llama(spec)
    prompt = _text_prompt(spec["positions"])
    _llama_rate(llm, prompt[:8], 4)  # warm-up
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    prefill = len(prompt) / (time.perf_counter() - t0)
    rate = _llama_rate(llm, prompt[8:32], spec["tokens"])
    llm.close()
    return {"prefill_tps": prefill, "decode_tps": rate}


def child_pair(spec: dict[str, Any]) -> dict[str, Any]:
    """The engine and ``Llama`` in one process on one GGUF, taking turns (which goes first
    alternates): the loops' own cost, free of the drift between processes on a shared host."""
    from qaudio_dev.bench.rates import engine_rate

    start = _text_prompt(32)[8:32]
    pairs = []
    with _engine(spec) as model:
        llm = _llama(spec)
        sides = {
            "engine": lambda: engine_rate(model, 1, spec["tokens"]),
            "llama": lambda: _llama_rate(llm, start, spec["tokens"]),
        }
        try:
            engine_rate(model, 1, 4)  # warm-up, both
            _llama_rate(llm, start, 4)
            for i in range(spec["alternations"]):
                model.clear_cache()
                rates = {side: sides[side]() for side in rotated(list(sides), i)}
                pairs.append((rates["engine"], rates["llama"]))
        finally:
            llm.close()
    return {"pairs": pairs, "tokens": spec["tokens"]}


def child_parallel(spec: dict[str, Any]) -> dict[str, Any]:
    """Aggregate decode tokens/s of n sequences started in the same step, for each n."""
    from qaudio_dev.bench.rates import engine_rate
    from qaudio_local.engine.model import AudioModel
    from qaudio_local.engine.options import ModelOptions

    opts = ModelOptions(
        n_ctx=4096,
        n_threads=spec["threads"],
        n_parallel=max(PARALLEL),
        prefix_cache=0,
        flash_attn="on",
    )
    rates = {}
    with AudioModel(spec["model"], spec["mmproj"], opts) as model:
        engine_rate(model, 1, 4)  # warm-up
        for n in PARALLEL:
            model.clear_cache()
            rates[str(n)] = engine_rate(model, n, spec["tokens"])
    return {"rates": rates}


def child_copy(spec: dict[str, Any]) -> dict[str, Any]:
    """Memory copy bandwidth with numpy: bytes read + written per second, best of a few."""
    src = np.ones(spec["mib"] << 20, np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = {}
    for threads in sorted({1, spec["threads"]}):
        bounds = [i * src.size // threads for i in range(threads + 1)]
        parts = [(dst[a:b], src[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        times = []
        for _ in range(4):
            workers = [threading.Thread(target=np.copyto, args=p) for p in parts]
            t0 = time.perf_counter()
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            times.append(time.perf_counter() - t0)
        best[str(threads)] = 2 * src.size / min(times)
    return {"copy_bps": max(best.values()), "by_threads": best}


CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "ttft": child_ttft,
    "hf": child_hf,
    "engine": child_engine,
    "llama_py": child_llama_py,
    "pair": child_pair,
    "parallel": child_parallel,
    "copy": child_copy,
}


def child_build(spec: dict[str, Any]) -> dict[str, Any]:
    """Build the models here, so that the parent, whose memory every child inherits as its
    starting peak RSS, stays small."""

    def log(msg: str) -> None:
        print(f"[bench] {msg}", file=sys.stderr, flush=True)

    sizes = Sizes(spec["audio"], spec["text"], spec["vocab"])
    m = build_models(Path(spec["work"]), sizes, tuple(spec["quants"]), log)
    return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(m).items()} | {
        "gguf": {q: str(p) for q, p in m.gguf.items()}
    }


def child_main(kind: str, spec_json: str) -> None:
    spec = json.loads(spec_json)
    result = {"build": child_build, **CHILDREN}[kind](spec)
    if (peak := own_peak_bytes()) is not None:  # a cross-check of the parent's wait4 figure
        result["vmhwm"] = peak
    Path(spec["out"]).write_text(json.dumps(result))


if __name__ == "__main__":
    child_main(sys.argv[1], sys.argv[2])
