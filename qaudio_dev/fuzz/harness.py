"""Run fuzz cases each in a child process with a time and memory limit, and classify them.

A *case* is a small JSON-able dict (``kind``, ``family``, ``seed`` and what its builder in
:mod:`qaudio_dev.fuzz.cases` needs). Audio and GGUF cases go to a fork server
(``python -m qaudio_dev.fuzz.harness``), which has imported numpy, soundfile and gguf once and
forks one child per case: the child sets ``RLIMIT_AS`` and ``RLIMIT_CPU``, sends what it
prints on fds 1 and 2 to a file, builds its input, calls the library and reports one JSON
line. CLI cases run ``python -m qaudio_local`` directly, with the same limits.

Every case ends as one of:

- ``accepted``: the call returned a sane result (finite samples; a generated answer; exit 0);
- ``clean``: a :class:`~qaudio_local.errors.QAudioError` (one line), or on the CLI exit code
  1 or 2 with an ``error:`` line (or click's usage error) and no traceback;
- ``foreign``: any other exception, or a traceback on the CLI;
- ``signal``: the process was killed by a signal (SIGABRT from ``GGML_ASSERT``, SIGSEGV);
- ``hang``: it ran past its time limit (or GGUF validation alone took over a second);
- ``wrong``: it returned, but the result is not sane, or the library printed something.

POSIX only (fork, resource limits).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
OUTCOMES = ("accepted", "clean", "foreign", "signal", "hang", "wrong")
LIMITS = {  # kind: (wall seconds, address-space MiB)
    "audio": (30.0, 2048),
    "gguf": (120.0, 4096),
    "cli": (120.0, 4096),
    "probe": (3.0, 1024),
}


@dataclass
class Outcome:
    """What became of one case."""

    case: dict[str, Any]
    outcome: str
    detail: str = ""
    seconds: float = 0.0
    printed: str = ""

    @property
    def row(self) -> str:
        """The table row the case counts in."""
        return row_of(self.case)


def row_of(case: dict[str, Any]) -> str:
    kind = case["kind"]
    if kind == "gguf":
        return f"gguf-{case['audio_path']}"
    return str(kind)


ROW_TITLES = {
    "audio": "audio (files, bytes, file objects, arrays, stdin, pipes)",
    "gguf-faithful": "GGUF pairs, default audio path",
    "gguf-mtmd": "GGUF pairs, `--audio-path mtmd`",
    "cli": "CLI arguments",
}


def table(outcomes: Sequence[Outcome]) -> str:
    """The totals as a Markdown table (one row per input family)."""
    head = (
        "| input family | tried | accepted | clean error | foreign exception | crash (signal) "
        "| hang | wrong output |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for row, title in ROW_TITLES.items():
        counts = Counter(o.outcome for o in outcomes if o.row == row)
        if not counts:
            continue
        cells = [str(counts.get(k, 0)) for k in OUTCOMES]
        lines.append(f"| {title} | {sum(counts.values())} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- the driver --------------------------------------------------------------------------


class ForkServer:
    """One ``python -m qaudio_dev.fuzz.harness`` process, fed cases one at a time."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qaudio_dev.fuzz.harness"],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )

    def run(self, case: dict[str, Any]) -> Outcome:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the fuzz fork server died")
        data = json.loads(line)
        return Outcome(case, data["outcome"], data.get("detail", ""), data.get("seconds", 0.0),
                       data.get("printed", ""))  # fmt: skip

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def fuzz_env(workdir: Path) -> dict[str, str]:
    """The environment every case runs in: user state, caches and temp files in ``workdir``."""
    env = dict(os.environ)
    env.update(
        QAUDIO_HOME=str(workdir / "home"),
        QAUDIO_CACHE_DIR=str(workdir / "cache"),
        HF_HOME=str(workdir / "hf"),
        HF_HUB_OFFLINE="1",
        TMPDIR=str(workdir / "tmp"),
        QAUDIO_LOAD_CHECK_TIMEOUT="40",
        OPENBLAS_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(REPO),
    )
    env.pop("QAUDIO_DEBUG", None)
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    return env


def run_cases(
    cases: Iterable[dict[str, Any]],
    workdir: Path,
    *,
    workers: int = 1,
    progress: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Run ``cases`` (in ``workers`` parallel lanes) and return their outcomes, in order."""
    todo = list(cases)
    env = fuzz_env(workdir)
    results: list[Outcome | None] = [None] * len(todo)
    lock = threading.Lock()
    nxt = iter(range(len(todo)))

    def lane() -> None:
        server: ForkServer | None = None
        try:
            while True:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                case = todo[i]
                if case["kind"] == "cli":
                    out = run_cli_case(case, env)
                else:
                    if server is None:
                        server = ForkServer(env)
                    out = server.run(case)
                results[i] = out
                if progress is not None:
                    with lock:
                        progress(out)
        finally:
            if server is not None:
                server.close()

    threads = [threading.Thread(target=lane) for _ in range(max(1, workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r for r in results if r is not None]


def _limits(kind: str) -> Callable[[], None]:
    wall, mem_mb = LIMITS[kind]

    def apply() -> None:
        import resource

        os.setpgid(0, 0)
        mem = mem_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        cpu = int(wall * 2) + 5  # threads: CPU time can outrun the wall clock
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))

    return apply


def run_cli_case(case: dict[str, Any], env: dict[str, str]) -> Outcome:
    """Run one ``qaudio`` command line and classify how it ended."""
    from qaudio_dev.fuzz.cases import cli_command

    args, stdin_path = cli_command(case)
    wall, _ = LIMITS["cli"]
    t0 = time.perf_counter()
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qaudio_local", *args],
            cwd=REPO,
            env=env,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_limits("cli"),  # noqa: PLW1509 - the limits are the point
        )
        try:
            out, err = proc.communicate(timeout=wall)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return Outcome(case, "hang", f"over {wall:.0f} s", time.perf_counter() - t0)
    finally:
        if stdin_path:
            stdin.close()  # type: ignore[union-attr]
    seconds = time.perf_counter() - t0
    return Outcome(case, *classify_cli(proc.returncode, err.decode("utf-8", "replace")), seconds)


def classify_cli(code: int, stderr: str) -> tuple[str, str]:
    """(outcome, detail) for a finished ``qaudio`` process."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    if code < 0:
        return "signal", f"signal {-code}: {last[:200]}"
    if "Traceback (most recent call last)" in stderr or "unexpected " in stderr:
        return "foreign", last[:300]
    if code == 0:
        return "accepted", ""
    errors = [ln for ln in lines if ln.startswith("error: ")]
    if code in (1, 2) and len(errors) == 1:
        noise = [ln for ln in lines if not ln.startswith(("error: ", "using ", "note: "))]
        if not noise:
            return "clean", errors[0][:300]
        return "wrong", f"extra output: {noise[0][:200]}"
    return "wrong", f"exit {code}: {last[:200]}"


# --- the fork server (runs in its own process) --------------------------------------------


def serve() -> None:
    """Read cases from stdin, run each in a forked child, write one JSON line per case."""
    import numpy  # noqa: F401 - imported once, before forking
    import soundfile  # noqa: F401

    import qaudio_dev.fuzz.cases  # noqa: F401
    import qaudio_local.audio.load  # noqa: F401
    import qaudio_local.engine.gguf  # noqa: F401

    for line in sys.stdin:
        if not line.strip():
            continue
        case = json.loads(line)
        result = run_forked(case)
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


def run_forked(case: dict[str, Any]) -> dict[str, Any]:
    """Run one case in a forked child under the limits of its kind."""
    wall, _ = LIMITS[case["kind"]]
    r, w = os.pipe()
    sink = tempfile.TemporaryFile()  # noqa: SIM115 - shared with the forked child
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            os.close(r)
            _limits(case["kind"])()
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            from qaudio_dev.fuzz.cases import execute

            result = execute(case)
        except BaseException as exc:  # the harness itself failed: report, do not hide
            result = {"outcome": "foreign", "detail": f"harness: {type(exc).__name__}: {exc}"}
            code = 1
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            os.write(w, json.dumps(result, default=str)[:60000].encode())
        finally:
            os._exit(code)
    os.close(w)
    status = None
    while status is None:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
        elif time.perf_counter() - t0 > wall:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            _reap_group(pid)
            os.close(r)
            return {"outcome": "hang", "detail": f"over {wall:.0f} s", "seconds": wall}
        else:
            time.sleep(0.005)
    _reap_group(pid)
    seconds = time.perf_counter() - t0
    raw = b""
    while chunk := os.read(r, 65536):
        raw += chunk
    os.close(r)
    sink.seek(0)
    printed = sink.read().decode("utf-8", "replace").strip()
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        tail = printed.splitlines()[-1][:200] if printed else ""
        return {"outcome": "signal", "detail": f"signal {sig}: {tail}", "seconds": seconds}
    try:
        result = json.loads(raw.decode())
    except ValueError:
        tail = printed.splitlines()[-1][:200] if printed else ""
        return {"outcome": "foreign", "detail": f"no result: {tail}", "seconds": seconds}
    result["seconds"] = seconds
    if printed:
        result["printed"] = printed[:500]
        if result["outcome"] in ("accepted", "clean") and case.get("quiet", True):
            result["detail"] = f"printed: {printed.splitlines()[0][:200]}"
            result["outcome"] = "wrong"
    return result


def _reap_group(pgid: int) -> None:
    """Kill whatever the child left running in its process group (a trial load, a FIFO)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


if __name__ == "__main__":
    serve()
