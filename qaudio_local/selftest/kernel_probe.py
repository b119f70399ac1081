"""The child side of the CPU-kernel probe (see :mod:`qaudio_local.engine.cpu_probe`).

Run as ``python -m qaudio_local.selftest.kernel_probe WORK STEP... [--portable-text]``: it
builds the tiny model at every probed level in WORK (once; later children reuse it), then
runs each step, printing ``{"start": STEP}`` before and ``{"done": STEP, "outcome": ...}``
after it, so that the parent knows which step a signal interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

from ..engine.cpu_probe import ENCODER_STEP, FAULT_ENV, MTMD_STEP, TEXT_STEPS


def _build(work: Path) -> dict[str, Path]:
    """The tiny model at every probed level, with a q8_0 projector (reused across children)."""
    from ..convert import convert_checkpoint
    from ..convert.tiny import make_tiny_checkpoint

    done = work / "built.json"
    if done.exists():
        return {k: Path(v) for k, v in json.loads(done.read_text()).items()}
    ckpt = make_tiny_checkpoint(work / "tiny")
    paths: dict[str, Path] = {}
    for step in TEXT_STEPS:
        level = step.split(":")[1]
        res = convert_checkpoint(ckpt, work / "gguf", outtype=level, mmproj_outtype="q8_0")
        paths[level], paths["mmproj"] = res.model_path, res.mmproj_path
    done.write_text(json.dumps({k: str(v) for k, v in paths.items()}))
    return paths


def _run_step(step: str, paths: dict[str, Path], portable_text: bool) -> None:
    import numpy as np

    from ..config import SAMPLE_RATE
    from ..engine.options import ModelOptions, SamplingOptions

    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    clip = (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    threads = min(2, os.cpu_count() or 1)
    if step == ENCODER_STEP:
        from ..audio.features import log_mel
        from ..engine.encoder import AudioEncoder

        feats = log_mel(clip)
        with AudioEncoder(paths["mmproj"], use_gpu=False, n_threads=threads) as enc:
            enc.encode(feats.mel, feats.n_valid_frames)
        return
    from ..engine.model import AudioModel

    level = "Q8_0" if step == MTMD_STEP else step.split(":")[1]
    opts = ModelOptions(
        n_ctx=1024 if step == MTMD_STEP else 256,
        n_threads=threads,
        mmproj_on_gpu=False,
        audio_path="mtmd" if step == MTMD_STEP else "faithful",
        cpu_kernels="portable" if portable_text and step == MTMD_STEP else "fast",
    )
    sampling = SamplingOptions(max_tokens=2, stop_at_end_of_turn=False)
    with AudioModel(paths[level], paths["mmproj"], opts) as model:
        model.generate(
            "Hi there, what is this?", [clip] if step == MTMD_STEP else [], sampling=sampling
        )


def _inject_fault(step: str) -> None:
    spec = os.environ.get(FAULT_ENV, "")
    name, _, sig = spec.rpartition(":")
    if not sig.startswith("SIG"):
        name, sig = spec, ""
    if name == step:
        os.kill(os.getpid(), getattr(signal, sig or "SIGILL", signal.SIGILL))


def main(argv: list[str]) -> int:
    """The child: ``python -m qaudio_local.selftest.kernel_probe WORK STEP...``, with
    ``--portable-text`` once a text step has faulted."""
    portable_text = "--portable-text" in argv
    args = [a for a in argv if a != "--portable-text"]
    work, steps = Path(args[0]), args[1:]
    paths = _build(work)
    for step in steps:
        print(json.dumps({"start": step}), flush=True)
        _inject_fault(step)
        try:
            _run_step(step, paths, portable_text)
            outcome = "ok"
        except Exception as exc:  # a clean failure is an outcome; only signals kill
            outcome = f"error: {type(exc).__name__}: {exc}"[:300]
        print(json.dumps({"done": step, "outcome": outcome}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
