"""A guard on scripts/bench_encoder.py: its smoke mode runs every side end to end.

Only the structure is checked, never a timing: tiny dimensions, every side the machine can
run (the ggml encoder in each weight type, transformers in float32 and bfloat16,
CTranslate2 in each compute type this CPU has, whisper.cpp's encoder in F16 and Q8_0),
each in its own child process, and the machine's matmul peak.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench
ROOT = Path(__file__).resolve().parent.parent
INPUTS = ("5s", "30s", "4x30s")


def test_the_encoder_benchmark_times_every_side_and_prints_the_table(tmp_path: Path) -> None:
    import ctranslate2

    out = tmp_path / "encoder.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_encoder.py"), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    data = json.loads(out.read_text())
    ct2 = set(ctranslate2.get_supported_compute_types("cpu"))
    expected = {f"ggml:{t}" for t in ("F32", "F16", "BF16", "Q8_0")}
    expected |= {"torch:float32", "torch:bfloat16"}
    expected |= {f"ct2:{t}" for t in ("int8", "int8_float32", "float32", "bfloat16") if t in ct2}
    expected |= {"wcpp:F16", "wcpp:Q8_0"}  # the bench extra installs pywhispercpp
    assert set(data["sides"]) == expected
    for side, times in data["sides"].items():
        assert set(times) == set(INPUTS), side
        assert all(math.isfinite(t) and t > 0 for t in times.values()), (side, times)
    for kind in ("float32", "bfloat16", "int8"):
        assert data["peak_measured"][kind] > 0
        assert data["peak"][kind] in data["peak_measured"].values()
    assert data["peak"]["int8"] >= data["peak"]["bfloat16"] >= data["peak"]["float32"]
    assert data["dims"]["d_model"] == 64 and data["threads"] >= 1
    cells = [ln.split("|")[1].strip() for ln in run.stdout.splitlines() if ln.startswith("| ")]
    assert sorted(c for c in cells if ":" in c) == sorted(expected)
    assert "A 30 s window is" in run.stdout and "% of peak" in run.stdout
    assert "full 30 s window (1500 positions)" in run.stdout


def test_a_type_without_a_fast_product_is_measured_against_a_wider_ones_peak() -> None:
    from qaudio_dev.bench.encoder_flops import effective_peak, emulated, peak_source

    # an AVX2-only CPU: torch's bfloat16 and int8 products are emulated
    avx2 = {"float32": 173.0, "bfloat16": 0.06, "int8": 2.0}
    assert peak_source(avx2) == {"float32": "float32", "bfloat16": "float32", "int8": "float32"}
    assert effective_peak(avx2) == {"float32": 173.0, "bfloat16": 173.0, "int8": 173.0}
    assert emulated(avx2) == {"bfloat16", "int8"}  # the benchmark leaves torch's out
    # AMX: each type has its own, faster product
    amx = {"float32": 352.0, "bfloat16": 2369.0, "int8": 3034.0}
    assert effective_peak(amx) == amx
    assert emulated(amx) == set()
    # bfloat16 fast, int8 not: int8 arithmetic is held to the bfloat16 peak
    mixed = {"float32": 300.0, "bfloat16": 1200.0, "int8": 40.0}
    assert effective_peak(mixed)["int8"] == 1200.0
    assert emulated(mixed) == {"int8"}
    # a type a little slower than a wider one (noise, or a slow kernel) is not emulated
    assert emulated({"float32": 300.0, "bfloat16": 250.0, "int8": 700.0}) == set()


def test_a_side_that_runs_too_long_is_stopped_and_reported(tmp_path: Path) -> None:
    # an emulated type at real size would run for hours: every side has a time limit
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench_encoder.py"),
            "--smoke",
            "--sides",
            "torch:float32",
            "--inputs",
            "5s",
            "--side-timeout",
            "0.2",  # less than the child needs to import torch
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    assert "| torch:float32 | failed: stopped after 0.2 s (--side-timeout) |" in run.stdout
