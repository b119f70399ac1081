"""The whole path side by side: this project, llama.cpp's own tools and transformers.

One command builds (once, cached in ``--work``) a synthetic Qwen2-Audio with the real widths
and random weights (encoder d_model 1280 x 32 layers, 20 heads, ffn 5120; text model hidden
4096, 32 heads, 32 KV heads, ffn 11008, vocab 156032, ``--layers`` of its 32 layers),
converts it with the project's converter to F16, Q8_0 and Q4_K_M (llama.cpp's quantizer for
the K-quant), and measures, every side in its own child process (peak RSS from ``wait4``)
and every repeat interleaving the sides it compares:

- time to first token and end to end (first token + ``--answer`` tokens) for 5 s and 30 s
  clips: the faithful path, the mtmd path, transformers' ``Qwen2AudioForConditionalGeneration``
  on the same checkpoint in float32 and bfloat16;
- prefill tokens/s of a prompt holding 750 audio tokens and decode tokens/s on each GGUF:
  the project's engine, llama.cpp's native ``llama-bench`` (built from the sources vendored
  in the llama-cpp-python sdist, cached in ``--work``) and llama-cpp-python's ``Llama``;
- the memory copy bandwidth, and the decode rate as a fraction of it;
- aggregate decode tokens/s of 1, 2, 4 and 8 parallel sequences through the engine.

The Markdown table goes to stdout and between README.md's ``bench:start``/``bench:end``
markers (``--no-readme`` leaves README alone)::

    .venv/bin/python scripts/bench.py                 # full run (~40 min the first time)
    .venv/bin/python scripts/bench.py --quick         # one repeat, 5 s clip only
    .venv/bin/python scripts/bench.py --smoke --no-readme   # tiny sizes, seconds (the test)

Needs ~13 GB of RAM at 4 text layers (transformers in float32 holds it all) and ~25 GB of
disk in ``--work``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "scripts"))

from qaudio_dev.synthetic import (  # noqa: E402
    REAL_AUDIO,
    REAL_TEXT,
    REAL_VOCAB,
    SMALL_AUDIO,
    build_synthetic,
)
from qaudio_local.config import SAMPLE_RATE  # noqa: E402
from qaudio_local.engine.prompt import render, user  # noqa: E402

SMOKE_AUDIO = SMALL_AUDIO
SMOKE_TEXT = {"hidden": 256, "heads": 4, "kv_heads": 4, "ffn": 512}
FULL_LAYERS = 32
QUANTS = ("F16", "Q8_0", "Q4_K_M")
PARALLEL = (1, 2, 4, 8)
ALTERNATIONS = 4  # turns of the engine and Llama in one process, per decode round
PROMPT = "Describe the audio."
AUDIO_MARKER = "<|audio_bos|><|AUDIO|><|audio_eos|>"  # what Qwen2AudioProcessor expands
N_BATCH = 512
PREFILL_CLIP_S = 30.0  # 750 audio tokens on the faithful path
BEGIN, END = "<!-- bench:start", "<!-- bench:end -->"
GIB = float(1 << 30)


# --- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """The synthetic model's dimensions; ``vocab=None`` keeps the tiny tokenizer's own."""

    audio: dict[str, int]
    text: dict[str, int]
    vocab: int | None

    @property
    def name(self) -> str:
        a, t = self.audio, self.text
        return f"a{a['d_model']}x{a['layers']}-t{t['hidden']}x{t['layers']}-v{self.vocab or 0}"


@dataclass(frozen=True)
class Models:
    ckpt: Path
    gguf: dict[str, Path]
    mmproj: Path  # the real projector (F16)
    decode_mmproj: Path  # a small projector of the same output width, for the text-only runs
    prompt_positions: int  # the engine's prefill prompt: 750 audio tokens and the text around
    gguf_bytes: dict[str, dict[str, float]]


def build_models(
    work: Path, sizes: Sizes, quants: tuple[str, ...], log: Callable[[str], None]
) -> Models:
    """Build, convert and cache the model (and a small stand-in projector); reuse them later."""
    t0 = time.perf_counter()
    synth = build_synthetic(
        work / sizes.name, sizes.audio, sizes.text, vocab=sizes.vocab, quants=quants
    )
    decode_mmproj = synth.mmproj
    if sizes.audio["d_model"] > SMOKE_AUDIO["d_model"]:
        decode_mmproj = _standin_projector(work, sizes)
    if time.perf_counter() - t0 > 5:
        log(f"built the models in {time.perf_counter() - t0:.0f} s")
    sizes_of = {q: gguf_bytes(p) for q, p in synth.gguf.items()}
    positions = _positions(synth.gguf[quants[-1]], decode_mmproj)
    return Models(synth.ckpt, synth.gguf, synth.mmproj, decode_mmproj, positions, sizes_of)


def _positions(model: Path, mmproj: Path) -> int:
    """Context positions of the prefill prompt: a 30 s clip's audio tokens and the text."""
    from qaudio_local.engine.model import AudioModel
    from qaudio_local.engine.results import ModelOptions

    with AudioModel(model, mmproj, ModelOptions(n_ctx=1024, n_threads=1)) as engine:
        return engine.prompt_tokens(PROMPT, [make_clip(PREFILL_CLIP_S)])


def _standin_projector(work: Path, sizes: Sizes) -> Path:
    """A 64-wide encoder projecting to the text width: the decode and prefill runs need a
    projector to load the engine, and 750 audio tokens from it cost the text model the same
    as from the real encoder (the values do not matter to the time), without its 15-50 s."""
    t = sizes.text
    text = {"hidden": t["hidden"], "heads": t["heads"], "kv_heads": t["kv_heads"], "ffn": 64}
    folder = work / f"standin-projector-{t['hidden']}"
    return build_synthetic(folder, SMOKE_AUDIO, {**text, "layers": 1}).mmproj


def gguf_bytes(path: Path) -> dict[str, float]:
    """Bytes of a text GGUF: all weights, those one decoded token reads, and one layer's."""
    from gguf import GGUFReader

    tensors = GGUFReader(str(path)).tensors
    total = sum(int(t.n_bytes) for t in tensors)
    embd = sum(int(t.n_bytes) for t in tensors if t.name == "token_embd.weight")
    layer = sum(int(t.n_bytes) for t in tensors if t.name.startswith("blk.0."))
    # one token reads every matrix but the embedding table (one row of it); the KV cache it
    # also reads is under 1 MiB at these short contexts and is left out
    return {"total": total, "per_token": total - embd, "per_layer": layer}


# --- llama.cpp's native tools ------------------------------------------------------------------


def llama_tools(
    work: Path, given: Path | None, log: Callable[[str], None]
) -> tuple[Path | None, str]:
    """Return (folder holding llama-bench, how it was obtained) or (None, why not)."""
    if given is not None:
        if (given / "llama-bench").is_file():
            return given, f"given: {given}"
        return None, f"--llama-bin {given} has no llama-bench"
    import llama_cpp

    version = llama_cpp.__version__
    base = work / f"llama.cpp-{version}"
    binary = base / "build" / "bin" / "llama-bench"
    if binary.is_file():
        return binary.parent, f"built from the llama-cpp-python {version} sdist, cached in {base}"
    log(f"building llama-bench from the llama-cpp-python {version} sdist into {base} (minutes)")
    base.mkdir(parents=True, exist_ok=True)
    src = base / "src" / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    steps = [
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        + [f"llama-cpp-python=={version}", "-d", str(base / "sdist")],
        ["cmake", "-S", str(src), "-B", str(base / "build"), "-DCMAKE_BUILD_TYPE=Release"]
        + ["-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF"],
        ["cmake", "--build", str(base / "build"), "--target", "llama-bench"]
        + ["llama-batched-bench", "-j", str(os.cpu_count() or 1)],
    ]
    with (base / "build.log").open("w") as logfile:
        for i, cmd in enumerate(steps):
            if i == 1:
                sdist = next((base / "sdist").glob("llama_cpp_python-*.tar.gz"), None)
                if sdist is None:
                    return None, "pip download left no llama_cpp_python-*.tar.gz"
                with tarfile.open(sdist) as tar:
                    tar.extractall(base / "src", filter="data")
            try:
                rc = subprocess.run(cmd, stdout=logfile, stderr=subprocess.STDOUT).returncode
            except OSError as exc:
                return None, f"`{cmd[0]}` could not run: {exc}"
            if rc != 0:
                tail = (base / "build.log").read_text(errors="replace").strip().splitlines()[-3:]
                return None, f"`{shlex.join(cmd[:3])} ...` failed ({rc}): {' / '.join(tail)}"
    return binary.parent, f"built from the llama-cpp-python {version} sdist, cached in {base}"


# --- the children: each side in its own process -------------------------------------------------


def make_clip(seconds: float, seed: int = 1) -> np.ndarray:
    """A tone with a slow tremolo and some noise (the content does not change the cost)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    rng = np.random.default_rng(seed)
    x = 0.4 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.5 * t))
    return (x + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def child_ttft(spec: dict[str, Any]) -> dict[str, Any]:
    """This project, one audio path: first token and end to end for each clip."""
    from qaudio_local.engine.model import AudioModel
    from qaudio_local.engine.results import ModelOptions, SamplingOptions

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
    from bench_engine import engine_rate

    from qaudio_local.engine.results import SamplingOptions

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
    from qaudio_local.engine.results import ModelOptions

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
    from bench_engine import fast_kernels
    from llama_cpp import Llama

    from qaudio_local.engine.cpu_probe import fast_kernel_seam
    from qaudio_local.engine.gguf_check import check_text_model

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
    from bench_engine import engine_rate

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
    from bench_engine import engine_rate

    from qaudio_local.engine.model import AudioModel
    from qaudio_local.engine.results import ModelOptions

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
    status = Path("/proc/self/status")
    if status.is_file():  # this process's own peak, a cross-check of the parent's wait4 figure
        found = re.search(r"VmHWM:\s+(\d+) kB", status.read_text())
        result["vmhwm"] = int(found.group(1)) * 1024 if found else None
    Path(spec["out"]).write_text(json.dumps(result))


def build_in_child(work: Path, sizes: Sizes, quants: tuple[str, ...]) -> Models:
    with tempfile.TemporaryDirectory(prefix="qaudio-bench-build-") as tmp:
        out = Path(tmp) / "models.json"
        spec = {**asdict(sizes), "work": str(work), "quants": list(quants), "out": str(out)}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "build"]
        if subprocess.run([*cmd, json.dumps(spec)]).returncode != 0 or not out.is_file():
            raise SystemExit("building the models failed (see above)")
        d = json.loads(out.read_text())
    d.pop("vmhwm", None)
    paths = {k: Path(d.pop(k)) for k in ("ckpt", "mmproj", "decode_mmproj")}
    return Models(gguf={q: Path(p) for q, p in d.pop("gguf").items()}, **paths, **d)


# --- the parent: run children, read their peak memory ------------------------------------------


def _wait(cmd: list[str], stdout: Path, stderr: Path, env: dict[str, str]) -> tuple[int, int]:
    """Run ``cmd``; return (exit code, peak RSS in bytes) from ``wait4``."""
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss * 1024  # Linux reports KiB


@dataclass
class Runner:
    tmp: Path
    strict: bool
    log: Callable[[str], None]
    records: list[dict[str, Any]] = field(default_factory=list)
    _n: int = 0

    def _failed(self, what: str, rc: int, err: Path) -> str:
        tail = err.read_text(errors="replace").strip().splitlines()[-4:]
        msg = f"{what} failed (exit {rc}): {' / '.join(tail) or 'no output'}"
        self.log(msg)
        if self.strict:
            raise SystemExit(msg)
        return msg

    def child(self, kind: str, spec: dict[str, Any], **tags: Any) -> dict[str, Any] | None:
        self._n += 1
        out = self.tmp / f"{self._n}-{kind}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
        t0 = time.perf_counter()
        rc, rss = _wait(
            [*cmd, json.dumps({**spec, "out": str(out)})],
            self.tmp / f"{self._n}.out",
            self.tmp / f"{self._n}.err",
            env,
        )
        record = {"kind": kind, **tags, "rss": rss, "wall_s": time.perf_counter() - t0}
        if rc != 0 or not out.is_file():
            record["error"] = self._failed(f"{kind} {tags}", rc, self.tmp / f"{self._n}.err")
        else:
            record.update(json.loads(out.read_text()))
        self.records.append(record)
        return None if "error" in record else record

    def llama_bench(
        self, binary: Path, model: Path, threads: int, positions: int, tokens: int, **tags: Any
    ) -> None:
        from bench_engine import fast_kernels

        self._n += 1
        cmd = [str(binary), "-m", str(model), "-p", str(positions), "-n", str(tokens), "-r", "1"]
        cmd += ["-t", str(threads), "-b", str(N_BATCH), "-ub", str(N_BATCH), "-fa", "on"]
        cmd += ["-ngl", "0", "--repack", "1" if fast_kernels(model) else "0", "-o", "json"]
        out, err = self.tmp / f"{self._n}.out", self.tmp / f"{self._n}.err"
        rc, rss = _wait(cmd, out, err, dict(os.environ))
        record: dict[str, Any] = {"kind": "llama_bench", **tags, "rss": rss}
        if rc != 0:
            record["error"] = self._failed(f"llama-bench {tags}", rc, err)
        else:
            for test in json.loads(out.read_text()):
                key = "prefill_tps" if test["n_gen"] == 0 else "decode_tps"
                record[key] = float(test["avg_ts"])
        self.records.append(record)


@dataclass(frozen=True)
class Settings:
    work: Path
    layers: int
    threads: int
    repeats: int
    decode_repeats: int
    tokens: int
    answer: int
    clips: tuple[float, ...]
    quants: tuple[str, ...]
    e2e_quant: str
    parallel_quant: str
    hf: bool
    smoke: bool
    copy_mib: int


def rotated(items: list[Any], r: int) -> list[Any]:
    """The sides in another order each repeat, so that none always runs first."""
    k = r % len(items)
    return items[k:] + items[:k]


def measure(s: Settings, models: Models, bench_dir: Path | None, run: Runner) -> None:
    """Every measurement; each round interleaves the sides it compares, in a rotating order.

    Time to first token runs ``s.repeats`` rounds, decode and prefill ``s.decode_repeats``
    (cheaper, and noisier on a shared machine), the parallel runs once per decode round.
    """
    common = {"threads": s.threads}
    for r in range(max(s.repeats, s.decode_repeats)):
        run.log(f"round {r + 1} of {max(s.repeats, s.decode_repeats)}")
        run.child("copy", {**common, "mib": s.copy_mib}, repeat=r)
        if r < s.repeats:
            _ttft_round(s, models, run, r)
        if r < s.decode_repeats:
            _decode_round(s, models, bench_dir, run, r)
            spec = {**common, "model": str(models.gguf[s.parallel_quant]), "tokens": s.tokens}
            run.child("parallel", {**spec, "mmproj": str(models.decode_mmproj)}, repeat=r)
    if not s.smoke:
        run.child("copy", {**common, "mib": s.copy_mib}, repeat=-1)


def _ttft_round(s: Settings, models: Models, run: Runner, r: int) -> None:
    sides = ["faithful", "mtmd"]
    if s.hf:
        sides += ["transformers float32", "transformers bfloat16"]
    for side in rotated(sides, r):
        spec = {"threads": s.threads, "clips": list(s.clips), "answer": s.answer}
        if side.startswith("transformers"):
            spec |= {"ckpt": str(models.ckpt), "dtype": side.split()[1]}
            run.child("hf", spec, side=side, repeat=r)
        else:
            spec |= {"model": str(models.gguf[s.e2e_quant]), "mmproj": str(models.mmproj)}
            run.child("ttft", {**spec, "path": side}, side=side, repeat=r)


def _decode_round(s: Settings, models: Models, bench_dir: Path | None, run: Runner, r: int) -> None:
    n_ctx = max(1024, 1 << math.ceil(math.log2(800 + s.tokens + 64)))
    runners = ["engine", "llama_bench", "llama_py"] if bench_dir else ["engine", "llama_py"]
    for quant in rotated(list(s.quants), r):
        model = str(models.gguf[quant])
        spec = {"threads": s.threads, "model": model, "tokens": s.tokens, "n_ctx": n_ctx}
        positions = models.prompt_positions
        for kind in rotated(runners, r):
            if kind == "engine":
                spec_e = {**spec, "mmproj": str(models.decode_mmproj)}
                run.child("engine", spec_e, quant=quant, repeat=r)
            elif kind == "llama_bench" and bench_dir is not None:
                binary = bench_dir / "llama-bench"
                run.llama_bench(binary, Path(model), s.threads, positions, s.tokens, quant=quant)
            else:
                run.child("llama_py", {**spec, "positions": positions}, quant=quant, repeat=r)
        pair = {**spec, "mmproj": str(models.decode_mmproj), "tokens": max(8, s.tokens // 2)}
        run.child("pair", {**pair, "alternations": ALTERNATIONS}, quant=quant, repeat=r)


# --- the report -----------------------------------------------------------------------------------


def _median(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _f(x: float | None, fmt: str = ".2f", suffix: str = "") -> str:
    return "n/a" if x is None else f"{x:{fmt}}{suffix}"


def _span(values: list[float], fmt: str = ".2f") -> str:
    """The median, and the range when there is more than one value: ``7.2 (6.9-7.5)``."""
    if not values:
        return "n/a"
    mid = f"{statistics.median(values):{fmt}}"
    return mid if len(values) < 2 else f"{mid} ({min(values):{fmt}}-{max(values):{fmt}})"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


@dataclass
class View:
    """Medians out of the raw records of one run."""

    doc: dict[str, Any]

    @property
    def records(self) -> list[dict[str, Any]]:
        return [r for r in self.doc["records"] if "error" not in r]

    @property
    def quants(self) -> list[str]:
        return list(self.doc["meta"]["gguf"])

    def errors(self) -> list[str]:
        return [r["error"] for r in self.doc["records"] if "error" in r]

    def pick(self, kind: str, **tags: Any) -> list[dict[str, Any]]:
        return [
            r
            for r in self.records
            if r["kind"] == kind and all(r.get(k) == v for k, v in tags.items())
        ]

    def clips(self, side: str, seconds: float, key: str) -> list[float]:
        kind = "hf" if side.startswith("transformers") else "ttft"
        rows = [c for r in self.pick(kind, side=side) for c in r["clips"]]
        return [c[key] for c in rows if c["seconds"] == seconds and c.get(key) is not None]

    def clip(self, side: str, seconds: float, key: str) -> float | None:
        return _median(self.clips(side, seconds, key))

    def values(self, kind: str, key: str, **tags: Any) -> list[float]:
        return [r[key] for r in self.pick(kind, **tags) if r.get(key) is not None]

    def rss(self, kind: str, **tags: Any) -> float | None:
        rows = self.pick(kind, **tags)
        return max(r["rss"] for r in rows) / GIB if rows else None

    def value(self, kind: str, key: str, **tags: Any) -> float | None:
        return _median(r.get(key) for r in self.pick(kind, **tags))

    def paired(self, quant: str) -> list[float]:
        """engine / Llama of every turn taken in one process (all rounds)."""
        return [a / b for r in self.pick("pair", quant=quant) for a, b in r["pairs"] if b]

    def copy_bps(self) -> float | None:
        rows = self.pick("copy")
        return max(r["copy_bps"] for r in rows) if rows else None


RUNNERS = (("engine", "qaudio engine"), ("llama_bench", "llama-bench (native)"))
RUNNERS += (("llama_py", "llama_cpp.Llama"),)


def ttft_table(v: View, m: dict[str, Any]) -> list[str]:
    sides = ["faithful", "mtmd", "transformers float32", "transformers bfloat16"]
    lines = [
        "| clip | path | audio tokens | first token s | end to end s | peak RSS GiB "
        "| first token / faithful | end to end / faithful | RSS / faithful |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for seconds in m["clips"]:
        base = {k: v.clip("faithful", seconds, k) for k in ("first_s", "total_s")}
        base_rss = v.rss("ttft", side="faithful")
        for side in sides:
            kind = "hf" if side.startswith("transformers") else "ttft"
            if not v.pick(kind, side=side):
                continue
            first, total = v.clip(side, seconds, "first_s"), v.clip(side, seconds, "total_s")
            tokens, rss = v.clip(side, seconds, "audio_tokens"), v.rss(kind, side=side)
            lines.append(
                f"| {seconds:g} s | {side} | {_f(tokens, '.0f')} "
                f"| {_span(v.clips(side, seconds, 'first_s'))} "
                f"| {_span(v.clips(side, seconds, 'total_s'))} "
                f"| {_f(rss)} | {_f(_ratio(first, base['first_s']), '.2f', 'x')} "
                f"| {_f(_ratio(total, base['total_s']), '.2f', 'x')} "
                f"| {_f(_ratio(rss, base_rss), '.2f', 'x')} |"
            )
    return lines


def decode_table(v: View, m: dict[str, Any]) -> list[str]:
    bw = v.copy_bps()
    lines = [
        "| GGUF | read per token GiB | runner | prefill tok/s | decode tok/s "
        "| decode / llama-bench | decode x bytes / copy bandwidth | peak RSS GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for quant in v.quants:
        per_token = m["gguf"][quant]["per_token"]
        native = v.value("llama_bench", "decode_tps", quant=quant)
        for kind, label in RUNNERS:
            if not v.pick(kind, quant=quant):
                continue
            dec = v.value(kind, "decode_tps", quant=quant)
            frac = None if dec is None or not bw else dec * per_token / bw
            lines.append(
                f"| {quant} | {per_token / GIB:.2f} | {label} "
                f"| {_span(v.values(kind, 'prefill_tps', quant=quant), '.1f')} "
                f"| {_span(v.values(kind, 'decode_tps', quant=quant))} "
                f"| {_f(_ratio(dec, native), '.3f')} | {_f(frac, '.0%')} "
                f"| {_f(v.rss(kind, quant=quant))} |"
            )
    return lines


def same_process(v: View) -> list[str]:
    """The engine against ``Llama`` in one process, a paragraph (none if not measured)."""
    found = {q: v.paired(q) for q in v.quants}
    if not any(found.values()):
        return []
    rows = v.pick("pair")
    return [
        f"**Same process, taking turns**: the engine and llama_cpp.Llama loaded side by side "
        f"on one GGUF, {rows[0]['tokens']} tokens each turn, {len(rows[0]['pairs'])} turns per "
        "round (who goes first alternates), so the host's drift hits both alike; engine / "
        "Llama, median (range) of every turn: "
        + ", ".join(f"{q} {_span(x, '.3f')}" for q, x in found.items() if x)
        + ".",
        "",
    ]


def parallel_table(v: View) -> list[str]:
    rows = v.pick("parallel")
    lines = ["| sequences | aggregate decode tok/s | vs 1 sequence |", "|---|---|---|"]
    one = _median(r["rates"]["1"] for r in rows)
    for n in PARALLEL:
        rates = [r["rates"][str(n)] for r in rows]
        rate = _median(rates)
        lines.append(f"| {n} | {_span(rates, '.1f')} | {_f(_ratio(rate, one), '.2f', 'x')} |")
    return lines


def _row(goal: str, measured: str, ok: bool | None, miss: str) -> str:
    verdict = "n/a (not measured)" if ok is None else "met" if ok else f"**missed**: {miss}"
    return f"| {goal} | {measured} | {verdict} |"


def _listed(values: dict[Any, float | None], fmt: str, suffix: str = "") -> str:
    return ", ".join(f"{k} {_f(x, fmt, suffix)}" for k, x in values.items())


def _worst(values: Iterable[float | None]) -> float | None:
    return min((x for x in values if x is not None), default=None)


def goals(v: View, m: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The issue's goals against the figures: a table, and a note for each miss."""
    lines = ["| goal (issue 14) | measured | verdict |", "|---|---|---|"]
    notes: list[str] = []
    lines += _decode_goal(v, notes)
    lines += _first_token_goals(v, m, notes)
    for side in ("transformers float32", "transformers bfloat16"):
        if v.pick("hf", side=side):
            lines += _transformers_goals(v, m, side, notes)
    lines += _bandwidth_goal(v, m, notes)
    return lines, notes


def _vs_native(v: View, kind: str) -> dict[str, float | None]:
    native = {q: v.value("llama_bench", "decode_tps", quant=q) for q in v.quants}
    return {q: _ratio(v.value(kind, "decode_tps", quant=q), native[q]) for q in v.quants}


def _decode_goal(v: View, notes: list[str]) -> list[str]:
    ours, py = _vs_native(v, "engine"), _vs_native(v, "llama_py")
    worst = _worst(ours.values())
    ok = None if worst is None else worst >= 0.97
    miss = f"{(0.97 - (worst or 0)) * 100:.1f} points short of 0.97 at worst"
    if ok is False:
        notes.append(_decode_why(v, py))
    measured = f"engine / llama-bench: {_listed(ours, '.3f')}"
    return [_row("decode within 3% of native llama-bench, same GGUF", measured, ok, miss)]


def _decode_why(v: View, py: dict[str, float | None]) -> str:
    """Why decode missed llama-bench: the engine's own loop, or what lies outside it."""
    paired = {q: _median(v.paired(q)) for q in v.quants}
    spread = {
        q: _ratio(max(x), min(x)) if (x := v.values("llama_bench", "decode_tps", quant=q)) else None
        for q in v.quants
    }
    head = (
        f"Decode vs llama-bench: across processes llama_cpp.Llama, which runs the same shared "
        f"libraries as the engine, is at {_listed(py, '.3f')} of llama-bench, and llama-bench's "
        f"own rounds differ by up to {_listed(spread, '.2f', 'x')} (fastest / slowest) on this "
        "shared host. "
    )
    low = _worst(paired.values())
    if low is None:
        return head + "The same-process comparison was not run, so the engine's share is unknown."
    if low >= 0.97:
        return head + (
            f"In one process, taking turns, the engine decodes at {_listed(paired, '.3f')} of "
            "llama_cpp.Llama: its loop costs nothing measurable. What is left is llama-bench's "
            "own C++ loop against any loop over llama-cpp-python's build, and the drift "
            "between processes measured one after the other."
        )
    return head + (
        f"In one process, taking turns, the engine decodes at {_listed(paired, '.3f')} of "
        f"llama_cpp.Llama: about {(1 - low) * 100:.0f}% of a token's time at worst is the "
        "engine's own loop (its Python work between llama_decode calls)."
    )


def _five(m: dict[str, Any]) -> float:
    return 5.0 if 5.0 in m["clips"] else float(m["clips"][0])


def _first_token_goals(v: View, m: dict[str, Any], notes: list[str]) -> list[str]:
    five = _five(m)
    ours = v.clip("faithful", five, "first_s")
    mt = _ratio(v.clip("mtmd", five, "first_s"), ours)
    ok = None if mt is None else mt >= 4
    goal = f"first token, {five:g} s clip, >= 4x better than the mtmd path"
    lines = [_row(goal, _f(mt, ".1f", "x"), ok, f"{_f(mt, '.1f', 'x')} instead of 4x")]
    if ok is False:
        enc_ours, enc_mt = v.clip("faithful", five, "encode_s"), v.clip("mtmd", five, "encode_s")
        notes.append(
            f"First token vs mtmd: the faithful path spends {_f(enc_ours)} s encoding the "
            f"{five:g} s clip, libmtmd {_f(enc_mt)} s on its padded 30 s window."
        )
    for side in ("transformers float32", "transformers bfloat16"):
        r = _ratio(v.clip(side, five, "first_s"), ours)
        if r is not None:
            goal = f"first token, {five:g} s clip, better than {side}"
            lines.append(_row(goal, f"{r:.1f}x", r > 1, f"{r:.2f}x"))
    return lines


def _transformers_goals(v: View, m: dict[str, Any], side: str, notes: list[str]) -> list[str]:
    clips = m["clips"]
    e2e = {
        f"{c:g} s": _ratio(v.clip(side, c, "total_s"), v.clip("faithful", c, "total_s"))
        for c in clips
    }
    worst = _worst(e2e.values())
    ok = None if worst is None else worst >= 5
    lines = [
        _row(
            f"end to end >= 5x faster than {side}",
            _listed(e2e, ".1f", "x"),
            ok,
            f"{_f(worst, '.1f', 'x')} at worst",
        )
    ]
    if ok is False:
        notes.append(_e2e_note(v, m, side))
    mem = _ratio(v.rss("hf", side=side), v.rss("ttft", side="faithful"))
    ok = None if mem is None else mem >= 3
    lines.append(_row(f"peak memory >= 3x less than {side}", f"{_f(mem, '.2f', 'x')} less", ok, ""))
    if ok is False:
        lines[-1] = lines[-1].replace("**missed**: ", f"**missed**: {_f(mem, '.2f', 'x')}")
        notes.append(_memory_note(v, m, side))
    return lines


def _bandwidth_goal(v: View, m: dict[str, Any], notes: list[str]) -> list[str]:
    bw = v.copy_bps()
    fr: dict[str, float | None] = {}
    for q in v.quants:
        dec = v.value("engine", "decode_tps", quant=q)
        fr[q] = None if dec is None or not bw else dec * m["gguf"][q]["per_token"] / bw
    worst = _worst(fr.values())
    ok = None if worst is None else worst >= 0.7
    if ok is False:
        notes.append(
            "Bandwidth: each decode step also pays costs that do not shrink with the weights "
            "(graph build, thread barriers, the 156k-entry logits and sampling); they weigh "
            "most on the smallest files; at 32 layers the weights dominate (see the "
            "extrapolation)."
        )
    goal = "decode >= 70% of the measured copy bandwidth"
    return [_row(goal, _listed(fr, ".0%"), ok, f"{_f(worst, '.0%')} at worst")]


def _e2e_note(v: View, m: dict[str, Any], side: str) -> str:
    parts = []
    for c in m["clips"]:
        parts.append(
            f"{c:g} s: ours {_f(v.clip('faithful', c, 'total_s'))} s "
            f"(encoder {_f(v.clip('faithful', c, 'encode_s'))} s), {side} "
            f"{_f(v.clip(side, c, 'total_s'))} s (encoder {_f(v.clip(side, c, 'encode_s'))} s)"
        )
    return (
        f"End to end vs {side}: " + "; ".join(parts) + ". The encoder, the same 32 layers on "
        "both sides, is most of the time; transformers' encoder always runs the padded 30 s "
        "window, so the 30 s clip is where the two do the same work."
    )


def _memory_note(v: View, m: dict[str, Any], side: str) -> str:
    q = m["e2e_quant"]
    text, proj = m["gguf"][q]["total"] / GIB, m["mmproj_bytes"] / GIB
    return (
        f"Memory vs {side}: ours maps {text:.2f} GiB of {q} text weights and a {proj:.2f} GiB "
        f"F16 projector; with {m['layers']} of 32 text layers the encoder and the 156k-row "
        "embedding and output matrices are most of both sides' memory, and the projector is "
        "F16 in both. The extrapolation to 32 layers below shows the ratio for the full model."
    )


def extrapolation(v: View, m: dict[str, Any]) -> list[str]:
    """Figures scaled to 32 text layers from the measured ones (labelled, never mixed)."""
    L, q = m["layers"], m["e2e_quant"]
    lines = [
        f"| quantity | measured ({L} layers) | extrapolated to 32 layers | basis |",
        "|---|---|---|---|",
    ]
    for quant in v.quants:
        g = m["gguf"][quant]
        rate = v.value("engine", "decode_tps", quant=quant)
        full = g["per_token"] + (FULL_LAYERS - L) * g["per_layer"]
        scaled = None if rate is None else rate * g["per_token"] / full
        lines.append(
            f"| engine decode tok/s, {quant} | {_f(rate)} | {_f(scaled)} "
            f"| time per token x {full / g['per_token']:.2f} (bytes read per token) |"
        )
    five = 5.0 if 5.0 in m["clips"] else m["clips"][0]
    scale = FULL_LAYERS / L
    for side in ("faithful", "mtmd", "transformers float32", "transformers bfloat16"):
        first = v.clip(side, five, "first_s")
        if first is None:
            continue
        fixed = (v.clip(side, five, "encode_s") or 0) + (v.clip(side, five, "features_s") or 0)
        if side in ("faithful", "mtmd"):
            fixed = first - (v.clip(side, five, "prefill_s") or 0)
        full = fixed + (first - fixed) * scale
        lines.append(
            f"| first token s, {five:g} s clip, {side} | {first:.2f} | {full:.2f} "
            f"| text-model part x {scale:.0f}, encoder as measured |"
        )
    per_layer = {"faithful": m["gguf"][q]["per_layer"]}
    h, ffn = m["text"]["hidden"], m["text"]["ffn"]
    params = 4 * h * h + 3 * h * ffn + 5 * h
    per_layer |= {"transformers float32": 4 * params, "transformers bfloat16": 2 * params}
    for side, extra in per_layer.items():
        kind = "hf" if side.startswith("transformers") else "ttft"
        rss = v.rss(kind, side=side)
        if rss is None:
            continue
        full = rss + (FULL_LAYERS - L) * extra / GIB
        lines.append(
            f"| peak RSS GiB, {side} | {rss:.2f} | {full:.2f} "
            f"| + {FULL_LAYERS - L} layers x {extra / GIB:.3f} GiB |"
        )
    return lines


def render_report(doc: dict[str, Any]) -> str:
    v, m = View(doc), doc["meta"]
    bw = v.copy_bps()
    g = m["gguf"]
    lines = [
        BEGIN + " (written by scripts/bench.py; do not edit by hand) -->",
        f"**Measured** {m['date']} on {m['machine']}; Python {m['versions']['python']}, "
        + ", ".join(f"{k} {val}" for k, val in m["versions"].items() if k != "python")
        + f". `{m['command']}` took {m['wall_min']:.0f} min (models cached in `{m['work']}`).",
        "",
        f"Model: {m['model']}. {m['threads']} threads. Figures are medians (with the range "
        f"in brackets) of {m['repeats']} rounds for the first token and "
        f"{m['decode_repeats']} for prefill, decode and parallel sequences; each round "
        "interleaves the sides it compares in a rotating order, each side runs in its own "
        "process (peak RSS from `wait4`, the most of any round), caches are cleared before "
        "every timed request. The machine is shared, so single figures move; read the ratios.",
        "",
        f"**Time to first token and end to end** (first token + {m['answer']} tokens; this "
        f"project: {m['e2e_quant']} text GGUF ({g[m['e2e_quant']]['total'] / GIB:.2f} GiB) + "
        f"F16 projector ({m['mmproj_bytes'] / GIB:.2f} GiB); transformers: the same checkpoint, "
        "CPU, `AutoProcessor` + `generate`, greedy; a text-only warm-up in every process):",
        "",
        *ttft_table(v, m),
        "",
        f"**Prefill and decode on the same GGUF** (prefill: {m['positions']} positions, for the "
        f"engine a prompt of 750 audio tokens{m['standin']} and its text, for the other two as "
        f"many text tokens; decode: {m['tokens']} tokens after a short prompt; batch "
        f"{N_BATCH}, flash attention on, f16 KV cache). Memory copy bandwidth measured in the "
        "same run: "
        f"{_f(None if bw is None else bw / 1e9, '.1f')} GB/s (numpy copy of {m['copy_mib']} MiB, "
        "bytes read + written, best of 1 and all threads):",
        "",
        *decode_table(v, m),
        "",
        *same_process(v),
        f"**Parallel sequences through the engine** ({m['parallel_quant']}, {m['tokens']} "
        "tokens each, all started in the same step):",
        "",
        *parallel_table(v),
        "",
        "**Goals**:",
        "",
    ]
    goal_lines, notes = goals(v, m)
    lines += goal_lines
    lines += ["", *[f"- {n}" for n in notes], *[f"- Notes: {n}" for n in m["notes"]]]
    if v.errors():
        lines += [f"- A measurement failed: {e}" for e in v.errors()]
    lines += [
        "",
        f"**Extrapolated, not measured**: the full model's 32 text layers from the {m['layers']} "
        "measured (decode time per token scaled by the weights it reads, which the GGUF tensor "
        "sizes give; the text model's share of the first token by the layer count; peak memory "
        "by the added layers' weights).",
        "",
        *extrapolation(v, m),
        "",
        "No GPU was lent to this run: there are no GPU figures.",
        END,
    ]
    return "\n".join(lines) + "\n"


def write_readme(readme: Path, block: str) -> None:
    """Replace what lies between the bench markers, and nothing else."""
    text = readme.read_text(encoding="utf-8")
    start = text.find(BEGIN)
    end = text.find(END, start)
    if start < 0 or end < 0:
        raise SystemExit(f"{readme} has no {BEGIN} ... {END} markers")
    readme.write_text(text[:start] + block.rstrip("\n") + text[end + len(END) :], encoding="utf-8")


# --- facts about the run --------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {os.cpu_count()} cores, {ram:.0f} GiB RAM, {system}"


def versions(bench_dir: Path | None, hf: bool) -> dict[str, str]:
    import llama_cpp

    out = {"python": platform.python_version(), "llama-cpp-python": llama_cpp.__version__}
    out["numpy"] = np.__version__
    if bench_dir is not None:
        proc = subprocess.run(
            [str(bench_dir / "llama-bench"), "--version"], capture_output=True, text=True
        )
        found = re.search(r"version: (\S+ \(\S+\))", proc.stdout + proc.stderr)
        out["llama-bench"] = found.group(1) if found else "unknown version"
    if hf:
        import torch
        import transformers

        out |= {"torch": torch.__version__, "transformers": transformers.__version__}
    return out


def describe_model(sizes: Sizes) -> str:
    a, t = sizes.audio, sizes.text
    return (
        f"synthetic Qwen2-Audio with random weights, encoder d_model {a['d_model']} x "
        f"{a['layers']} layers ({a['heads']} heads, ffn {a['ffn']}), text model hidden "
        f"{t['hidden']} x **{t['layers']} of 32 layers** ({t['heads']} heads, {t['kv_heads']} KV "
        f"heads, ffn {t['ffn']}, vocab {sizes.vocab or 'of the tiny tokenizer'})"
    )


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one repeat, the 5 s clip, fewer tokens")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, no transformers/llama-bench")
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "qaudio-bench")
    ap.add_argument("--layers", type=int, default=4, help="text layers of the model (of 32)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=None, help="first-token rounds (default 2)")
    ap.add_argument("--decode-repeats", type=int, default=None, help="decode rounds (default 4)")
    ap.add_argument("--tokens", type=int, default=None, help="decode tokens (default 64)")
    ap.add_argument("--answer", type=int, default=None, help="end-to-end tokens (default 32)")
    ap.add_argument("--e2e-quant", default="Q4_K_M", choices=QUANTS)
    ap.add_argument("--parallel-quant", default="Q4_K_M", choices=QUANTS)
    ap.add_argument("--llama-bin", type=Path, default=None, help="a folder with llama-bench")
    ap.add_argument("--no-llama-bench", action="store_true", help="skip llama-bench")
    ap.add_argument("--no-transformers", action="store_true", help="skip transformers")
    ap.add_argument("--no-readme", action="store_true", help="print the table only")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--render", type=Path, default=None, help="re-render a saved run's JSON")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def settings_from(args: argparse.Namespace) -> tuple[Settings, Sizes]:
    small = args.smoke or args.quick
    if args.smoke:
        sizes = Sizes(SMOKE_AUDIO, {**SMOKE_TEXT, "layers": 2}, None)
    else:
        sizes = Sizes(REAL_AUDIO, {**REAL_TEXT, "layers": args.layers}, REAL_VOCAB)
    s = Settings(
        work=args.work.expanduser().resolve(),
        layers=sizes.text["layers"],
        threads=args.threads,
        repeats=args.repeats or (1 if small else 2),
        decode_repeats=args.decode_repeats or (1 if small else 4),
        tokens=args.tokens or (16 if args.smoke else 32 if args.quick else 64),
        answer=args.answer or (8 if args.smoke else 16 if args.quick else 32),
        clips=(5.0,) if args.quick else (5.0, 30.0),
        quants=("F16", "Q4_K_M") if args.smoke else QUANTS,
        e2e_quant=args.e2e_quant,
        parallel_quant=args.parallel_quant,
        hf=not (args.smoke or args.no_transformers),
        smoke=args.smoke,
        copy_mib=64 if args.smoke else 1024,
    )
    return s, sizes


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child_main(*args.child)
        return
    if args.render:
        block = render_report(json.loads(args.render.read_text()))
        print(block, end="")
        if not args.no_readme:
            write_readme(args.readme, block)
        return

    def log(msg: str) -> None:
        print(f"[bench] {msg}", file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    s, sizes = settings_from(args)
    s.work.mkdir(parents=True, exist_ok=True)
    log(f"work folder (cached models and tools): {s.work}")
    models = build_in_child(s.work, sizes, s.quants)
    notes = []
    bench_dir = None
    if not (args.smoke or args.no_llama_bench):
        bench_dir, how = llama_tools(s.work, args.llama_bin, log)
        if bench_dir is None:
            log(f"no llama-bench: {how}")
        notes.append(f"llama-bench: {how}." if bench_dir else f"no llama-bench figures: {how}.")
    with tempfile.TemporaryDirectory(prefix="qaudio-bench-") as tmp:
        run = Runner(Path(tmp), strict=args.smoke, log=log)
        measure(s, models, bench_dir, run)
    cmd = "scripts/bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    doc = {
        "meta": {
            "date": datetime.date.today().isoformat(),
            "machine": machine(),
            "versions": versions(bench_dir, s.hf),
            "command": f".venv/bin/python {cmd.strip()}",
            "work": str(s.work).replace(str(Path.home()), "~"),
            "wall_min": (time.perf_counter() - t_start) / 60,
            "model": describe_model(sizes),
            "layers": s.layers,
            "text": sizes.text,
            "threads": s.threads,
            "repeats": s.repeats,
            "decode_repeats": s.decode_repeats,
            "tokens": s.tokens,
            "answer": s.answer,
            "clips": list(s.clips),
            "e2e_quant": s.e2e_quant,
            "parallel_quant": s.parallel_quant,
            "copy_mib": s.copy_mib,
            "gguf": models.gguf_bytes,
            "mmproj_bytes": models.mmproj.stat().st_size,
            "positions": models.prompt_positions,
            "standin": (
                " (from a 64-wide stand-in encoder: the text model's cost does not depend on "
                "the values)"
                if models.decode_mmproj != models.mmproj
                else ""
            ),
            "notes": notes,
        },
        "records": run.records,
    }
    saved = s.work / f"run-{sizes.name}.json"
    saved.write_text(json.dumps(doc, indent=1))
    log(f"raw figures: {saved}")
    block = render_report(doc)
    print(block, end="")
    if not args.no_readme:
        write_readme(args.readme, block)
        log(f"wrote the table into {args.readme}")


if __name__ == "__main__":
    main()
