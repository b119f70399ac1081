"""A quick slice of the fuzz suite (scripts/fuzz.py runs the full one).

Every case runs in its own child process with a time and memory limit; none may end as a
foreign exception, a signal, a hang or a wrong output. The slice uses fixed seeds, so a
failure here is reproduced with ``scripts/fuzz.py --only KIND:FAMILY:SEED``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qaudio_dev.fuzz.cases import cases
from qaudio_dev.fuzz.harness import Outcome, run_cases, table
from qaudio_local.engine.cpu_probe import SEAM_ENV

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork and resource limits")
Pair = tuple[Path, Path]
BAD = ("foreign", "signal", "hang", "wrong")


def explain(outcomes: list[Outcome]) -> str:
    lines = [table(outcomes)]
    for o in outcomes:
        if o.outcome in BAD:
            c = o.case
            lines.append(f"{o.outcome}: {c['kind']}:{c['family']}:{c['seed']} {o.detail}")
    return "\n".join(lines)


def test_the_harness_sees_every_kind_of_failure(tmp_path: Path) -> None:
    probes = [{"kind": "probe", "family": f, "seed": 0} for f in
              ("abort", "hang", "memory", "print", "foreign")]  # fmt: skip
    got = {o.case["family"]: o.outcome for o in run_cases(probes, tmp_path)}
    assert got == {
        "abort": "signal",
        "hang": "hang",
        "memory": "foreign",  # MemoryError under the address-space limit
        "print": "wrong",
        "foreign": "foreign",
    }


@pytest.mark.slow
def test_a_slice_of_the_fuzz_suite(
    tiny_gguf: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as on an Intel VM whose AMX kernels fault, on any machine: a case that loads a
    # quantized text model with the fast kernels dies (the harness obeys the verdict)
    monkeypatch.setenv(SEAM_ENV, "SIGSEGV")
    clip = tmp_path / "clip.wav"
    t = np.arange(8000) / 16000
    sf.write(clip, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    files = {"text": str(tiny_gguf[0]), "mmproj": str(tiny_gguf[1])}
    todo = list(cases("audio", 300, seed0=100_000))
    for path in ("faithful", "mtmd"):
        todo += cases("gguf", 14, seed0=100_000, audio_path=path, **files)
    todo += cases("cli", 8, seed0=100_000, clip=str(clip), **files)
    outcomes = run_cases(todo, tmp_path / "run", workers=2)
    assert len(outcomes) == len(todo)
    assert not [o for o in outcomes if o.outcome in BAD], explain(outcomes)
    accepted = {o.row for o in outcomes if o.outcome == "accepted"}
    assert {"audio", "gguf-faithful", "gguf-mtmd"} <= accepted  # valid input still works
