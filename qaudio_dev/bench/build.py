"""The inputs: the synthetic model at the benchmark's sizes (built in a child, cached in
``--work``), its GGUF sizes, the clip every side hears, and llama.cpp's native tools."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import numpy as np

from qaudio_dev.bench.settings import (
    PREFILL_CLIP_S,
    PROMPT,
    SMOKE_AUDIO,
    Sizes,
    child_command,
)
from qaudio_dev.synthetic import build_synthetic
from qaudio_local.config import SAMPLE_RATE


@dataclass(frozen=True)
class Models:
    ckpt: Path
    gguf: dict[str, Path]
    mmproj: Path  # the real projector (F16)
    decode_mmproj: Path  # a small projector of the same output width, for the text-only runs
    prompt_positions: int  # the engine's prefill prompt: 750 audio tokens and the text around
    gguf_bytes: dict[str, dict[str, float]]


def make_clip(seconds: float, seed: int = 1) -> np.ndarray:
    """A tone with a slow tremolo and some noise (the content does not change the cost)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    rng = np.random.default_rng(seed)
    x = 0.4 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.5 * t))
    return (x + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


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
    from qaudio_local.engine.options import ModelOptions

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


def llama_tools(
    work: Path, given: Path | None, log: Callable[[str], None]
) -> tuple[Path | None, str]:
    """Return (folder holding llama-bench, how it was obtained) or (None, why not)."""
    if given is not None:
        if (given / "llama-bench").is_file():
            return given, f"given: {given}"
        return None, f"--llama-bin {given} has no llama-bench"
    return build_llama_cpp(work, ("llama-bench", "llama-batched-bench"), log)


def dev_cache() -> Path:
    """Where tooling builds that outlive a clone are kept (``QAUDIO_DEV_CACHE`` or
    ``~/.cache/qaudio-dev``): CI on a clean clone builds llama-server once, not per run."""
    given = os.environ.get("QAUDIO_DEV_CACHE")
    return Path(given) if given else Path.home() / ".cache" / "qaudio-dev"


def llama_server(log: Callable[[str], None]) -> tuple[Path | None, str]:
    """Return (path of llama.cpp's own llama-server, how) or (None, why not): built once
    from the sources vendored in the installed llama-cpp-python's sdist, cached."""
    folder, how = build_llama_cpp(dev_cache(), ("llama-server",), log)
    return (None if folder is None else folder / "llama-server"), how


def build_llama_cpp(
    work: Path, targets: tuple[str, ...], log: Callable[[str], None]
) -> tuple[Path | None, str]:
    """Build llama.cpp's native ``targets`` from the llama-cpp-python sdist of the installed
    version into ``work/llama.cpp-<version>`` (kept: a later call with the binaries present
    costs nothing). Return (the folder of the binaries, how) or (None, why not)."""
    import llama_cpp

    version = llama_cpp.__version__
    base = work / f"llama.cpp-{version}"
    bins = base / "build" / "bin"
    how = f"built from the llama-cpp-python {version} sdist, cached in {base}"
    if all((bins / t).is_file() for t in targets):
        return bins, how
    log(f"building {', '.join(targets)} from the llama-cpp-python {version} sdist into {base}")
    base.mkdir(parents=True, exist_ok=True)
    src = base / "src" / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    steps = [
        ["cmake", "-S", str(src), "-B", str(base / "build"), "-DCMAKE_BUILD_TYPE=Release"]
        + ["-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=ON"]
        # the server's web page is neither built (npm) nor downloaded: the API is enough
        + ["-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF"],
        ["cmake", "--build", str(base / "build"), "--target", *targets]
        + ["-j", str(os.cpu_count() or 1)],
    ]
    with (base / "build.log").open("w") as logfile:
        if not src.is_dir():
            why = _fetch_sdist(base, version, logfile)
            if why:
                return None, why
        for cmd in steps:
            try:
                rc = subprocess.run(cmd, stdout=logfile, stderr=subprocess.STDOUT).returncode
            except OSError as exc:
                return None, f"`{cmd[0]}` could not run: {exc}"
            if rc != 0:
                tail = (base / "build.log").read_text(errors="replace").strip().splitlines()[-3:]
                return None, f"`{shlex.join(cmd[:3])} ...` failed ({rc}): {' / '.join(tail)}"
    return bins, how


def _fetch_sdist(base: Path, version: str, logfile: IO[str]) -> str:
    """Download and unpack the sdist into ``base/src``; return why not, or ''."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    cmd += [f"llama-cpp-python=={version}", "-d", str(base / "sdist")]
    sdist = next((base / "sdist").glob("llama_cpp_python-*.tar.gz"), None)
    if sdist is None:
        rc = subprocess.run(cmd, stdout=logfile, stderr=subprocess.STDOUT).returncode
        sdist = next((base / "sdist").glob("llama_cpp_python-*.tar.gz"), None)
        if rc != 0 or sdist is None:
            return f"`pip download llama-cpp-python=={version}` left no sdist ({rc})"
    with tarfile.open(sdist) as tar:
        tar.extractall(base / "src", filter="data")
    return ""


def build_in_child(work: Path, sizes: Sizes, quants: tuple[str, ...]) -> Models:
    with tempfile.TemporaryDirectory(prefix="qaudio-bench-build-") as tmp:
        out = Path(tmp) / "models.json"
        spec = {**asdict(sizes), "work": str(work), "quants": list(quants), "out": str(out)}
        cmd = child_command("build")
        if subprocess.run([*cmd, json.dumps(spec)]).returncode != 0 or not out.is_file():
            raise SystemExit("building the models failed (see above)")
        d = json.loads(out.read_text())
    return Models(
        ckpt=Path(d["ckpt"]),
        gguf={q: Path(p) for q, p in d["gguf"].items()},
        mmproj=Path(d["mmproj"]),
        decode_mmproj=Path(d["decode_mmproj"]),
        prompt_positions=d["prompt_positions"],
        gguf_bytes=d["gguf_bytes"],
    )
