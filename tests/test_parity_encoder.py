"""scripts/parity_encoder.py, the held-out parity run of each encoder mode against
transformers: in its smoke mode (tiny dims) every mode is compared on every clip and is
within its bound; and the bounds tell a mode's error from a larger one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qaudio_dev.bench.encoder_parity import BOUNDS, compare, speech, within

pytestmark = [pytest.mark.bench, pytest.mark.parity]
ROOT = Path(__file__).resolve().parent.parent


def test_every_mode_is_compared_on_every_clip_and_within_its_bound(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the [parity] extra and torch are installed by CI")
    out = tmp_path / "parity.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "parity_encoder.py"), "--smoke", "--check"]
        + ["--seconds", "5,45", "--json", str(out), "--threads", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        },
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["failed"] == [] and set(data["modes"]) == set(BOUNDS)
    for wtype, mode in data["modes"].items():
        assert set(mode["clips"]) == {"5 s", "45 s"}
        assert [r["tokens"] for r in mode["clips"].values()] == [125, 1125]  # 25 a second
        for r in mode["clips"].values():
            assert r["max_abs"] > 0 and within(wtype, r), (wtype, r)
    assert "| Q8_0" in run.stdout and "out of bounds: none" in run.stdout


def test_the_bounds_tell_each_mode_from_a_coarser_one() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((200, 256)).astype(np.float32)
    scale = float(np.abs(ref).max())
    for wtype, (rel, cosine) in BOUNDS.items():
        for factor, ok in ((0.5, True), (4.0, False)):  # one value off by a multiple of the bound
            off = ref.copy()
            off[7, 3] += factor * rel * scale
            got = compare(off, ref)
            assert got["rel"] == pytest.approx(factor * rel, rel=1e-3)
            assert within(wtype, got) is ok, (wtype, factor, got)
        # every token turned a little: the cosine falls below the bound
        angle = np.arccos(cosine) * 2
        ortho = rng.standard_normal(ref.shape)
        ortho -= (ortho * ref).sum(1, keepdims=True) / (ref * ref).sum(1, keepdims=True) * ref
        ortho *= np.linalg.norm(ref, axis=1, keepdims=True) / np.linalg.norm(
            ortho, axis=1, keepdims=True
        )
        turned = np.cos(angle) * ref + np.sin(angle) * ortho
        got = compare(turned.astype(np.float32), ref)
        assert got["min_cosine"] == pytest.approx(np.cos(angle), abs=1e-6)
        assert not within(wtype, got), wtype
    assert "error" in compare(ref[:10], ref)  # a wrong token count is an error, not a pass
    assert not within("F16", compare(ref[:10], ref))
    assert speech(2.5).shape == (40_000,)
