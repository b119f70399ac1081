"""A guard on scripts/profile_encoder.py: its smoke mode times every op kind of every
weight type and the window estimate is their sum (structure only, never a timing)."""

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


def test_the_profile_times_each_op_kind_and_sums_them(tmp_path: Path) -> None:
    out = tmp_path / "ops.json"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "profile_encoder.py"),
            "--smoke",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        },
    )
    assert run.returncode == 0, run.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["positions"] == 100 and data["dims"]["d_model"] == 64
    for wtype in ("F32", "F16", "BF16", "Q8_0"):
        rows = data[wtype]["rows"]
        assert [r["op"].split(" ")[0] for r in rows] == [
            "q/k/v/out",
            "ffn",
            "ffn",
            "attention",
            "GELU",
            "layer",
            "convolution",
        ]
        assert all(math.isfinite(r["ms"]) and r["ms"] > 0 for r in rows), rows
        assert math.isclose(data[wtype]["window_s"], sum(r["window_s"] for r in rows))
        assert all(r["gflops"] > 0 for r in rows if r["op"] != "GELU" and "norm" not in r["op"])
        assert f"{wtype}" in run.stdout
    assert "| attention (flash, F32) |" in run.stdout
    # torch's rates beside ggml's (torch is in the test environment): the products and
    # the attention, each a positive rate
    rates = data["torch_gflops"]
    assert {"float32", "attention float32"} <= set(rates), rates
    assert all(v > 0 for v in rates.values()), rates
