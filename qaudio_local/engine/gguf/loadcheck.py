"""A trial load in a child process: llama.cpp's remaining aborts become a one-line error.

The schema in :mod:`.schema` covers every key and tensor llama.cpp reads, but not
every way weights or kernels can fail inside it (an assert deep in a backend, a build
with a bug). So before a pair of files is loaded in this process, it is loaded once in a
child process (``python -m qaudio_local.engine.gguf.loadchild``) with the same options,
and decoded once:

1. the text model alone: load, create a small context, tokenize a chat prompt (special
   tokens included) and decode it; a crash here is the text model's;
2. then the whole pair through :class:`~qaudio_local.engine.model.AudioModel`, with a
   half-second tone answered with two tokens; a crash here is the projector's (or the
   audio path's).

A child killed by a signal (SIGABRT from ``GGML_ASSERT``, SIGSEGV) becomes a
:class:`~qaudio_local.errors.ModelFileError` naming the file and llama.cpp's last words,
unless it died in the text model with the fast CPU kernels and a second child runs the
same file with the portable ones: that is a
:class:`~qaudio_local.errors.CpuKernelError` naming the CPU and ``--cpu-kernels portable``.
The verdict is cached in :func:`qaudio_local.paths.cache_dir` under ``load-checks/``, keyed
by each file's size, modification time and header digest, the options that change which
code runs, and the llama-cpp-python version, so the check runs once per pair. A child that
ends with a clean error is not cached: this process then meets the same clean error
itself.

``QAUDIO_LOAD_CHECK=0`` turns the check off (the child runs with ``QAUDIO_LOAD_CHECK=child``,
which skips it there); ``QAUDIO_LOAD_CHECK_TIMEOUT`` (seconds) bounds the child.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...config import LOAD_CHECK_ENV
from ...errors import CpuKernelError, ModelFileError, RuntimeBackendError
from ...paths import cache_dir
from ..cpu_probe import SEAM_ENV, cpu_name
from .info import ProjectorInfo, TextModelInfo

if TYPE_CHECKING:
    from ..options import ModelOptions

ENV = LOAD_CHECK_ENV
ENV_TIMEOUT = "QAUDIO_LOAD_CHECK_TIMEOUT"
CHILD = "qaudio_local.engine.gguf.loadchild"  # run by module name: never imported here
CLEAN_EXIT = 10  # the child met a clean (QAudioError) failure: no verdict about crashes
NOT_FINITE_EXIT = 11  # the stage it was in computed NaN or infinite logits
_STAGES = {"text": "model file", "pair": "projector file"}


def check_loads(model: TextModelInfo, projector: ProjectorInfo, options: ModelOptions) -> None:
    """Prove (once per pair, cached) that llama.cpp survives loading and decoding the pair.

    Raises:
        ModelFileError: llama.cpp crashed on one of the files in the trial (named).
        CpuKernelError: The fast CPU kernels crashed on the text model, which runs with the
            portable ones (the CPU's fault, not the file's).
        RuntimeBackendError: The trial did not finish in time.
    """
    if os.environ.get(ENV, "").strip().lower() in ("0", "false", "no", "off", "child"):
        return
    key = _cache_key(model, projector, options)
    entry = cache_dir() / "load-checks" / f"{key}.json"
    verdict = _read_json(entry)
    if verdict is None:
        verdict = _trial(model, projector, options)
        if verdict is None:
            return  # a clean failure, not cached: this process meets it too
        _write_json(entry, verdict)
    if verdict.get("ok"):
        return
    message, path = str(verdict.get("message")), str(verdict.get("path"))
    if verdict.get("kind") == "kernels":
        raise CpuKernelError(message, str(verdict.get("cpu")), str(verdict.get("how")), path)
    raise ModelFileError(message, path=path)


def _cache_key(model: TextModelInfo, projector: ProjectorInfo, options: ModelOptions) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        llama_version = version("llama-cpp-python")
    except PackageNotFoundError:  # pragma: no cover - a source checkout
        llama_version = "?"
    files = []
    for info in (model, projector):
        st = info.path.stat()
        files.append([str(info.path.resolve()), st.st_size, st.st_mtime_ns, info.header_digest])
    opts = dataclasses.asdict(options)
    code = {k: opts[k] for k in ("audio_path", "cpu_kernels", "mmproj_on_gpu", "kv_type")}
    code["gpu"] = opts["n_gpu_layers"] != 0
    code["seam"] = os.environ.get(SEAM_ENV, "")  # a test's simulated fault is not this CPU's
    raw = json.dumps([files, code, llama_version], sort_keys=True).encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def _timeout(model: TextModelInfo, projector: ProjectorInfo) -> float:
    override = os.environ.get(ENV_TIMEOUT, "").strip()
    if override:
        try:
            return max(1.0, float(override))
        except ValueError:
            pass
    size = model.path.stat().st_size + projector.path.stat().st_size
    return 120.0 + size / 50e6  # reading and repacking ~50 MB/s at worst, plus one encode


def _trial(
    model: TextModelInfo, projector: ProjectorInfo, options: ModelOptions
) -> dict[str, Any] | None:
    """Run the child; return the verdict to cache (``None``: a clean failure, not cached).

    A crash in the text stage with the fast CPU kernels on is tried again with the
    portable ones: if the file then loads and decodes, the kernels are to blame, not it.

    Raises:
        RuntimeBackendError: The child did not finish in time.
    """
    opts = dataclasses.asdict(options)
    job = {
        "model": str(model.path),
        "mmproj": str(projector.path),
        "n_layer": model.n_layer,
        "quantized": model.quantized,
        "alignment": model.alignment,
        "options": opts,
    }
    proc = _run_child(job, model, projector)
    out = proc.stdout.decode("utf-8", "replace")
    if proc.returncode == 0 and "ok\n" in out:
        return {"ok": True}
    if proc.returncode == CLEAN_EXIT:
        return None
    if proc.returncode == NOT_FINITE_EXIT:
        stages = re.findall(r"^stage (\w+)$", out, re.M)
        info = model if (stages or ["text"])[-1] == "text" else projector
        what = _STAGES.get((stages or ["text"])[-1], "projector file")
        message = (
            f"llama.cpp computes NaN or infinite values with {what} {info.path}: its weights "
            "hold NaN or infinity, or it was written wrong, so it would answer garbage; convert "
            "it again (`qaudio convert`) or download it again"
        )
        return {"ok": False, "message": message, "path": str(info.path)}
    stages = re.findall(r"^stage (\w+)$", out, re.M)
    stage = stages[-1] if stages else "text"
    info = model if stage == "text" else projector
    reason = _last_words(proc.stderr.decode("utf-8", "replace"), proc.returncode)
    if stage == "text" and re.search(r"^kernels fast$", out, re.M):
        portable = {**job, "text_only": True}
        portable["options"] = {**opts, "cpu_kernels": "portable"}
        again = _run_child(portable, model, projector)
        if again.returncode == 0 and "ok\n" in again.stdout.decode("utf-8", "replace"):
            return _kernel_verdict(model, options, proc.returncode, reason)
    message = (
        f"llama.cpp crashes on {_STAGES.get(stage, 'projector file')} {info.path} ({reason}) "
        "when it loads and runs it, so it is not loaded here; the file is damaged or was not "
        "made for Qwen2-Audio: convert it again (`qaudio convert`) or download it again"
    )
    return {"ok": False, "message": message, "path": str(info.path)}


def _run_child(
    job: dict[str, Any], model: TextModelInfo, projector: ProjectorInfo
) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-m", CHILD, json.dumps(job)]
    env = {**os.environ, ENV: "child", "GGML_NO_BACKTRACE": "1"}  # no gdb run on an abort
    timeout = _timeout(model, projector)
    try:
        return subprocess.run(cmd, capture_output=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeBackendError(
            f"a trial load of {model.path.name} with {projector.path.name} did not finish in "
            f"{timeout:.0f} s; if the machine is busy, retry (or set {ENV_TIMEOUT} higher), "
            f"or set {ENV}=0 to skip the trial"
        ) from exc


def _kernel_verdict(
    model: TextModelInfo, options: ModelOptions, returncode: int, reason: str
) -> dict[str, Any]:
    """The verdict when the fast kernels crash and the portable ones run the same file."""
    cpu = cpu_name()
    how = reason.split(":", 1)[0]
    asked = (
        "you asked for them with --cpu-kernels fast"
        if options.cpu_kernels == "fast"
        else "the automatic check did not catch this"
    )
    message = (
        f"llama.cpp's fast CPU kernels for quantized weights crash on this CPU ({cpu}; {how}) "
        f"when they run {model.path.name}, which runs fine with the portable kernels ({asked}); "
        "use --cpu-kernels portable (or QAUDIO_CPU_KERNELS=portable)"
    )
    return {
        "ok": False,
        "kind": "kernels",
        "message": message,
        "path": str(model.path),
        "cpu": cpu,
        "how": how,
    }


def _last_words(stderr: str, returncode: int) -> str:
    """The most telling line of a crashed child's stderr, and how it ended."""
    if returncode < 0:
        import signal

        try:
            how = signal.Signals(-returncode).name
        except ValueError:
            how = f"signal {-returncode}"
    else:
        how = f"exit code {returncode}"
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    line = ""
    for pattern in (r"GGML_ASSERT|GGML_ABORT|unsupported", r"terminate|what\(\)", r"error|fault"):
        found = [ln for ln in lines if re.search(pattern, ln, re.I)]
        if found:
            line = found[0]
            break
    line = line or (lines[-1] if lines else "")
    line = re.sub(r"^.*?/(ggml|src|tools)/", r"\1/", line)  # drop the build machine's paths
    return f"{how}: {line[:200]}" if line else how


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:  # an unwritable cache only costs a repeated trial
        pass
