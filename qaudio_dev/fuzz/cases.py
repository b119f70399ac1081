"""Fuzz cases: audio inputs, GGUF pairs and command lines as a hostile user writes them.

Each case is a small dict; its input is rebuilt from ``seed`` inside the child that runs it
(:mod:`qaudio_dev.fuzz.harness`), so a failing case is reproduced with
``python scripts/fuzz.py --only KIND:FAMILY:SEED``. The generators are this project's own
(seeded numpy), not a fuzzing library: they know where the dangerous numbers are (declared
rates, counts, lengths, hyper-parameters) and aim there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from qaudio_dev.fuzz.audio import run_audio
from qaudio_dev.fuzz.common import classify_exception
from qaudio_dev.fuzz.gguf import run_gguf

AUDIO_FAMILIES = ("encoded", "header", "array", "form", "stdin")
GGUF_FAMILIES = ("valid", "truncate", "flip", "metadata", "tensor", "count", "token")
CLI_FAMILIES = ("numbers",)


def cases(kind: str, n: int, *, seed0: int = 0, **extra: Any) -> Iterator[dict[str, Any]]:
    """``n`` cases of ``kind``, cycling through its families (``extra`` goes into each)."""
    families = {"audio": AUDIO_FAMILIES, "gguf": GGUF_FAMILIES[1:], "cli": CLI_FAMILIES}[kind]
    for i in range(n):
        family = families[i % len(families)]
        if kind == "gguf" and i % 100 == 0:
            family = "valid"  # the unmutated pair, now and then: it must keep working
        yield {"kind": kind, "family": family, "seed": seed0 + i, **extra}


def execute(case: dict[str, Any]) -> dict[str, Any]:
    """Run one audio or GGUF case here (in the child) and classify it."""
    if case["kind"] == "audio":
        return run_audio(case)
    if case["kind"] == "probe":
        return _run_probe(case)
    return run_gguf(case)


def _run_probe(case: dict[str, Any]) -> dict[str, Any]:
    """Misbehaviour on purpose, to show the harness classifies it (tests/test_fuzz_quick.py)."""
    family = case["family"]
    if family == "abort":
        os.abort()
    if family == "hang":
        time.sleep(3600)
    if family == "memory":
        block = bytearray(1 << 36)  # 64 GiB: past the limit, refused before any page is touched
        return {"outcome": "accepted", "detail": str(len(block))}
    if family == "print":
        print("a library must not print this")
        return {"outcome": "accepted"}
    try:
        raise KeyError("not ours")
    except KeyError as exc:
        return classify_exception(exc)


_CLI_VALUES = {  # hostile values, and the valid edges next to them
    "--n-ctx": ["0", "255", "256", "4294967552", "-1", "9223372036854775808", "abc", "1e3",
                "8192", "8193", "1048577", "2048"],
    "--threads": ["0", "1", "1000", "2147483648", "-1", "nan", "2", "8"],
    "--temperature": ["nan", "inf", "-inf", "-0.1", "1e308", "100.1", "0x10", "0", "100", "1e-9"],
    "--top-p": ["0", "nan", "1.5", "-1", "1", "1e-9"],
    "--top-k": ["-1", "2147483648", "1e9", "0", "1", "1048576"],
    "--repetition-penalty": ["nan", "0", "inf", "-1", "1", "100", "1e-9"],
    "--seed": ["-1", "4294967296", "18446744073709551616", "0", "4294967295"],
    "--max-tokens": ["0", "2147483648", "-5", "1", "7"],
    "--n-gpu-layers": ["-2", "2147483648", "4097", "-1", "0", "4096"],
    "--kv-type": ["x", "Q8_0", "", "q8_0", "f32"],
    "--audio-path": ["x", "", "mtmd", "faithful"],
    "--cpu-kernels": ["fast", "portable", "x"],
    "--vram": ["nan", "-1", "1e400", "8XB", "0", "8G"],
}  # fmt: skip


def cli_command(case: dict[str, Any]) -> tuple[list[str], str | None]:
    """The ``qaudio`` arguments of a CLI case (and a file to feed on stdin, if any)."""
    rng = np.random.default_rng(case["seed"])
    opts = list(_CLI_VALUES)
    args: list[str] = []
    for _ in range(1 if rng.random() < 0.7 else 2):
        opt = opts[int(rng.integers(len(opts)))]
        vals = _CLI_VALUES[opt]
        args += [opt, vals[int(rng.integers(len(vals)))]]
    if "--n-ctx" in args and rng.random() < 0.3:
        args.append("--allow-long-context")
    audio = case["clip"]
    stdin = None
    if rng.random() < 0.15:
        audio, stdin = "-", case["clip"] if rng.random() < 0.6 else "/dev/zero"
    files = ["--model-file", case["text"], "--mmproj-file", case["mmproj"]]
    if "--vram" in args:
        files = []  # the registry path: planning refuses before any download (offline)
    return ["run", audio, *files, "--max-tokens", "2", *args], stdin
