"""Know, before loading, whether llama.cpp's fast CPU kernels for quantized weights run here.

llama.cpp's CPU backend puts quantized weights into "extra buffer types" (AMX tiles, or
layouts repacked for AVX2/AVX-512) when its build and the CPU's flags say they can run.
Some virtual machines advertise AMX and grant it to a process, yet ggml's AMX matmul dies
there with SIGILL and takes the interpreter with it. So once per build and CPU, a child
process loads tiny quantized text models (every registry level, made by llama.cpp's own
quantizer) with those buffer types on and decodes with each; a child killed by a signal
means "not on this machine". The verdict is cached in the user cache folder
(:func:`qaudio_local.paths.cache_dir`), keyed by the llama-cpp-python version, the CPU
features the build reports, the build's library files and the CPU's flags.

The child's side is :mod:`qaudio_local.selftest.kernel_probe` (started by module name, in
another process: it builds its models with :mod:`qaudio_local.convert`, a higher layer). It
also runs the project's audio encoder and libmtmd's on a q8_0 projector, each with the
text-model kernels it will really be used with (portable ones once a text step has
faulted). Neither places weights in extra buffer types (both allocate them in the
backend's default buffer, which runs the plain kernels), and the probe confirms it on each
machine; should one fault anyway, the runtime routes around it (see :func:`kernel_plan`).
The probe's steps run without the trial load of :mod:`.gguf.loadcheck` (which would turn a
crash into a clean error): the probe builds its own tiny models, so a crash there is always
the kernels'.

Test seam: with ``QAUDIO_TEST_FAST_KERNEL_FAULT=SIGSEGV`` (or ``SIGILL``) in the
environment, any process about to load a quantized text model with the fast kernels kills
itself with that signal (:func:`fast_kernel_seam`), exactly where and how llama.cpp's AMX
kernels fault on those VMs. It lets every machine run the whole fallback (verdict, trial
load, wording, selftest, benchmarks); only tests set it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..config import LOAD_CHECK_ENV
from .build_compiler import ggml_cpu_compiler, loses_amx_tile_config
from .options import CPU_KERNELS

PROBE_VERSION = 3  # 3: the verdict names the compiler
TEXT_STEPS = tuple(f"text:{q}" for q in ("Q4_K_M", "Q8_0", "Q5_K_M", "Q6_K", "Q3_K_M"))
ENCODER_STEP, MTMD_STEP = "encoder:q8_0", "mtmd:q8_0"
STEPS = (ENCODER_STEP, *TEXT_STEPS, MTMD_STEP)
PROBE_TIMEOUT_S = 180.0
# run by name, never imported: the child builds its models with convert/ (a higher layer);
# tests/test_layout.py sees this launch and allows exactly it (ALLOWED_LAUNCHES says why)
CHILD_MODULE = "qaudio_local.selftest.kernel_probe"
FAULT_ENV = "QAUDIO_PROBE_INJECT_FAULT"  # for tests: "STEP" or "STEP:SIGNAME" kills the child
SEAM_ENV = "QAUDIO_TEST_FAST_KERNEL_FAULT"  # for tests: fast kernels fault like AMX (see above)
_WINDOWS_CRASHES = {0xC000001D: "illegal instruction", 0xC0000005: "access violation"}


@dataclass(frozen=True)
class KernelVerdict:
    """What the probe found.

    Attributes:
        steps: ``(step, outcome)`` pairs; outcome ``"ok"``, a signal name such as
            ``"SIGILL"``, ``"timeout"`` or ``"error: ..."``.
        error: Why the probe could not run at all, else ``None``.
        amx: The build reports AMX kernels.
        probed_at: When the probe ran (UTC, ISO 8601).
        seconds: How long it took.
        cached: Read from the cache rather than probed now.
        cpu: The CPU's model name, as the system reports it.
        compiler: The compiler that built llama.cpp's CPU backend (``""`` if unknown; see
            :mod:`.build_compiler`).
    """

    steps: tuple[tuple[str, str], ...]
    error: str | None = None
    amx: bool = False
    probed_at: str = ""
    seconds: float = 0.0
    cached: bool = False
    cpu: str = ""
    compiler: str = ""

    def outcome(self, step: str) -> str:
        """The outcome of ``step`` (``"not run"`` if it never ran)."""
        return dict(self.steps).get(step, "not run")

    @property
    def text_fast_ok(self) -> bool:
        """Quantized text models may load with extra buffer types on."""
        return self.error is None and all(self.outcome(s) == "ok" for s in TEXT_STEPS)

    @property
    def matrix_units_ok(self) -> bool:
        """This build has AMX kernels and they ran (the text steps use the same AMX matmul
        the encoder's Q8_0 weights would)."""
        return self.amx and self.text_fast_ok

    @property
    def encoder_ok(self) -> bool:
        """The project's encoder runs a quantized projector's kernels here."""
        return self.error is None and self.outcome(ENCODER_STEP) == "ok"

    @property
    def mtmd_ok(self) -> bool:
        """libmtmd runs a quantized projector here."""
        return self.error is None and self.outcome(MTMD_STEP) == "ok"

    def faults(self) -> list[tuple[str, str]]:
        """The steps that did not pass."""
        return [(s, o) for s, o in self.steps if o != "ok"]

    def summary(self) -> str:
        """One short line for people (``qaudio hardware``, ``plan``, ``selftest``)."""
        if self.error is not None:
            return (
                f"CPU quantized kernels: not checked ({_short(self.error)}) - using the portable "
                "kernels to be safe"
            )
        text = [(s, o) for s, o in self.faults() if s in TEXT_STEPS]
        if text:
            step, how = text[0]
            what = "AMX kernels" if self.amx else "fast (repacked) kernels"
            line = (
                f"CPU quantized kernels: llama.cpp's {what} fault on this CPU "
                f"({self.cpu or 'unknown'}; {_short(how)} with a {step.split(':')[1]} model) - "
                "using the portable kernels (--cpu-kernels portable, chosen automatically)"
            )
        else:
            fast = "repacked and AMX" if self.amx else "repacked"
            line = f"CPU quantized kernels: the fast ({fast}) kernels run on this CPU"
        if self.outcome(ENCODER_STEP) != "ok":
            line += "; the audio encoder's quantized kernels fault (it uses F32 weights)"
        if self.outcome(MTMD_STEP) != "ok":
            line += "; libmtmd faults with a quantized projector (--audio-path mtmd refuses one)"
        return line

    def cause(self) -> str:
        """Why the AMX kernels fault, when the build explains it (else ``""``): one line."""
        text_fault = any(s in TEXT_STEPS for s, _ in self.faults())
        if not (self.amx and text_fault and loses_amx_tile_config(self.compiler)):
            return ""
        return (
            f"why: this llama.cpp was compiled by {self.compiler}, whose AMX intrinsic drops "
            "the tile configuration; built by clang, the AMX kernels run (README, "
            "Troubleshooting)"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        d = asdict(self)
        d["steps"] = dict(self.steps)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KernelVerdict:
        steps = d.get("steps") or {}
        return cls(
            steps=tuple((str(k), str(v)) for k, v in steps.items()),
            error=d.get("error"),
            amx=bool(d.get("amx")),
            probed_at=str(d.get("probed_at", "")),
            seconds=float(d.get("seconds", 0.0)),
            cpu=str(d.get("cpu", "")),
            compiler=str(d.get("compiler", "")),
        )


def _short(outcome: str, limit: int = 80) -> str:
    """An outcome cut to fit in one line (signal names are short already)."""
    return outcome if len(outcome) <= limit else outcome[: limit - 3].rstrip() + "..."


# --- the key and the cache -------------------------------------------------------------


def _cpu_flags() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[-1].strip()
    return f"{platform.machine()} {platform.processor()}"


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else what the platform says)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith(("model name", "Model", "Hardware")):
                name = line.split(":", 1)[-1].strip()
                if name:
                    return " ".join(name.split())
    return platform.processor() or platform.machine() or "unknown CPU"


def fast_kernel_seam(quantized: bool, extra_bufts: bool) -> None:
    """Test seam: fault as llama.cpp's AMX kernels do, where they would run.

    Called right before a text model is loaded. When ``QAUDIO_TEST_FAST_KERNEL_FAULT`` names
    a signal (``SIGSEGV``, ``SIGILL``; any other non-empty value means ``SIGILL``) and a
    quantized model is about to load with extra buffer types on, this process kills itself
    with that signal: a real signal in a real process, as on an Intel VM whose AMX matmul
    faults. Only tests set the variable.
    """
    spec = os.environ.get(SEAM_ENV, "").strip()
    if not spec or not (quantized and extra_bufts):
        return
    sig = getattr(signal, spec.upper(), signal.SIGILL)
    if not isinstance(sig, signal.Signals):
        sig = signal.SIGILL
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), sig)


def build_key() -> dict[str, str]:
    """What the verdict depends on; a change in any of it means probing again."""
    from .bindings.backend import llama_modules

    llama, _ = llama_modules()
    lib_dir = Path(llama.__file__).parent / "lib"
    files = []
    with contextlib.suppress(OSError):
        for f in sorted(lib_dir.iterdir()):
            if "ggml" in f.name or "llama" in f.name:
                st = f.stat()
                files.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    digest = hashlib.sha256
    return {
        "probe": str(PROBE_VERSION),
        "library_path": str(lib_dir.resolve()),
        "llama_cpp_python": str(llama.__version__),
        "system_info": llama.llama_print_system_info().decode("utf-8", "replace").strip(),
        "libraries": digest("\n".join(files).encode()).hexdigest()[:16],
        "cpu_flags": digest(_cpu_flags().encode()).hexdigest()[:16],
        "machine": platform.machine(),
        "seam": os.environ.get(SEAM_ENV, "").strip(),
    }


def cache_file(key: dict[str, str] | None = None) -> Path:
    """Where the verdict for ``key`` (default: this environment's) is cached.

    One file per environment (library folder, build and CPU), so that two virtual
    environments used in turn keep a verdict each instead of overwriting one file.
    """
    from ..paths import cache_dir

    key = key or build_key()
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"cpu-kernels-{name}.json"


def cached_verdict(key: dict[str, str] | None = None) -> KernelVerdict | None:
    """The cached verdict for this build and CPU, or ``None``."""
    key = key or build_key()
    try:
        data = json.loads(cache_file(key).read_text())
        if data.get("key") != key:
            return None
        verdict = KernelVerdict.from_dict(data["verdict"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return KernelVerdict(**{**verdict.__dict__, "cached": True})


def _store(key: dict[str, str], verdict: KernelVerdict) -> None:
    path = cache_file(key)
    with contextlib.suppress(OSError):  # a read-only cache only costs probing again
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".cpu-kernels.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump({"key": key, "verdict": verdict.to_dict()}, fh, indent=1)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def cpu_kernel_verdict(*, refresh: bool = False) -> KernelVerdict:
    """The verdict for this build and CPU: from the cache, or probed now (about a second)."""
    key = build_key()
    if not refresh:
        cached = cached_verdict(key)
        if cached is not None:
            return cached
    verdict = run_probe(amx="AMX" in key["system_info"])
    _store(key, verdict)
    return verdict


@dataclass(frozen=True)
class KernelPlan:
    """How a model is loaded so that no kernel known to fault here runs.

    Attributes:
        extra_bufts: Load the text model with extra buffer types (the fast kernels).
        widen_encoder: Give the project's encoder F32 copies of quantized projector weights.
        mtmd_fault: Why libmtmd cannot run this quantized projector here, else ``None``.
        notices: One line each for the user about what was turned off and why.
        encoder_extra_bufts: Let the project's encoder put Q8_0 projector weights in the
            AMX buffer type: only where the text models' fast kernels (the same AMX
            matmul) passed the probe, or ``--cpu-kernels fast`` asks for it.
    """

    extra_bufts: bool = True
    widen_encoder: bool = False
    mtmd_fault: str | None = None
    notices: tuple[str, ...] = ()
    encoder_extra_bufts: bool = False


def kernel_plan(choice: str, text_quantized: bool, projector_quantized: bool) -> KernelPlan:
    """Decide the kernels for one model pair, probing (once per build and CPU) if needed.

    Args:
        choice: ``"auto"`` (probe; the ``QAUDIO_CPU_KERNELS`` environment variable may
            override it), ``"fast"`` (extra buffer types on, no probe) or ``"portable"``
            (off, no probe).
        text_quantized: The text model holds quantized weights (only those use the fast
            kernels; F16/F32 models never need the probe).
        projector_quantized: The projector holds quantized weights.
    """
    if choice == "auto":
        env = os.environ.get("QAUDIO_CPU_KERNELS", "").strip().lower()
        choice = env if env in CPU_KERNELS else "auto"
    if choice != "auto" or not (text_quantized or projector_quantized):
        return KernelPlan(extra_bufts=choice != "portable", encoder_extra_bufts=choice == "fast")
    verdict = cpu_kernel_verdict()
    notices = []
    extra = verdict.text_fast_ok or not text_quantized
    if not extra:
        what = "AMX" if verdict.amx else "fast (repacked)"
        notices.append(
            f"llama.cpp's {what} kernels fault on this CPU; the quantized text model uses the "
            "portable kernels (`qaudio hardware` says more)"
        )
    widen = projector_quantized and not verdict.encoder_ok
    if widen:
        notices.append(
            "the audio encoder's quantized kernels fault on this CPU; it runs on F32 copies of "
            "the projector weights"
        )
    mtmd_fault = None
    if projector_quantized and not verdict.mtmd_ok:
        mtmd_fault = (
            f"llama.cpp's audio path (libmtmd) faults on this CPU with a quantized projector "
            f"({_short(verdict.outcome(MTMD_STEP))}); use --audio-path faithful or an f16 "
            "projector"
        )
    encoder_extra = projector_quantized and verdict.matrix_units_ok and not widen
    return KernelPlan(extra, widen, mtmd_fault, tuple(notices), encoder_extra)


# --- the parent side ----------------------------------------------------------------------


def _describe_exit(rc: int) -> str:
    if rc < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-rc).name
        return f"signal {-rc}"
    if rc & 0xFFFFFFFF in _WINDOWS_CRASHES:
        return _WINDOWS_CRASHES[rc & 0xFFFFFFFF]
    return f"exit code {rc}"


def _child_command(work: Path, steps: list[str], portable_text: bool) -> list[str]:
    cmd = [sys.executable, "-m", CHILD_MODULE, str(work), *steps]
    return [*cmd, "--portable-text"] if portable_text else cmd


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)  # the folder holding qaudio_local
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONFAULTHANDLER"] = ""  # a fault is an answer here, not a report
    env["GGML_NO_BACKTRACE"] = "1"  # no gdb attached to a fault
    env.pop("QAUDIO_CPU_KERNELS", None)
    # no trial load (it would turn a crash into a clean error): the probe's own tiny models
    # are sound, so a crash in a step is always the kernels'
    env[LOAD_CHECK_ENV] = "child"
    return env


def _run_child(cmd: list[str], timeout_s: float) -> tuple[dict[str, str], str | None, str]:
    """Run one child: (finished steps, the step it was in when it ended, how it ended)."""
    try:
        proc = subprocess.run(
            cmd,
            env=_child_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        out, ending = (
            proc.stdout,
            ("ok" if proc.returncode == 0 else _describe_exit(proc.returncode)),
        )
        tail = proc.stderr.strip().splitlines()[-1:] if proc.returncode else []
    except subprocess.TimeoutExpired as exc:
        raw = exc.stdout or b""
        out, ending, tail = raw.decode() if isinstance(raw, bytes) else raw, "timeout", []
    except OSError as exc:
        return {}, None, f"cannot start {cmd[0]}: {exc}"
    done: dict[str, str] = {}
    current: str | None = None
    for line in out.splitlines():
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            msg = json.loads(line)
            if "start" in msg:
                current = str(msg["start"])
            elif "done" in msg:
                done[str(msg["done"])] = str(msg.get("outcome", "ok"))
                current = None
    if tail and ending.startswith("exit code"):
        ending = f"{ending}: {tail[0][:200]}"
    return done, current, ending


def run_probe(
    amx: bool = False, timeout_s: float = PROBE_TIMEOUT_S, steps: tuple[str, ...] = STEPS
) -> KernelVerdict:
    """Probe now, in child processes (never cached; see :func:`cpu_kernel_verdict`).

    A child that dies in a step records that step's fault; a new child then goes on with
    the steps left, so one fault does not hide another.
    """
    t0 = time.monotonic()
    results: dict[str, str] = {}
    error = None
    with tempfile.TemporaryDirectory(prefix="qaudio-cpu-probe-") as tmp:
        while len(results) < len(steps):
            pending = [s for s in steps if s not in results]
            portable = any(results.get(s, "ok") != "ok" for s in TEXT_STEPS)
            done, current, ending = _run_child(
                _child_command(Path(tmp), pending, portable), timeout_s
            )
            results.update({s: o for s, o in done.items() if s in pending})
            if current in pending and current not in results:
                results[current] = ending
            elif ending != "ok" or not done:  # died outside any step: the probe itself failed
                error = ending
                break
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return KernelVerdict(
        steps=tuple((s, results[s]) for s in steps if s in results),
        error=error,
        amx=amx,
        probed_at=stamp,
        seconds=round(time.monotonic() - t0, 2),
        cpu=cpu_name(),
        compiler=ggml_cpu_compiler() if amx else "",
    )
