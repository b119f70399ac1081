"""The parent: every measurement as child processes, each round interleaving the sides it
compares in a rotating order; peak RSS of each child from ``wait4``."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qaudio_dev.bench.build import Models
from qaudio_dev.bench.settings import ALTERNATIONS, N_BATCH, Settings, child_command, rotated


def own_peak_bytes() -> int | None:
    """This process's own peak RSS (VmHWM), where Linux says it; a child reports it because
    ``wait4``'s figure starts a child at its parent's peak (Linux keeps it across the fork)."""
    try:
        found = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(found.group(1)) * 1024 if found else None


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
        cmd = child_command(kind)
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
        from qaudio_dev.bench.rates import fast_kernels

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
