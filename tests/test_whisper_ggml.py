"""whisper.cpp runs the weights that qaudio_dev.bench.whisper_ggml writes, as transformers does.

A tiny random Whisper (the smoke dims: d_model 64, 3 encoder layers, one decoder layer, the
large-v3 vocabulary) is saved by transformers in F16 and written in whisper.cpp's format
(F16 and Q8_0); libwhisper (from the pywhispercpp wheel) encodes one padded window of a
test clip. libwhisper exports no way to read the encoder's output, so it is read through
the decoder: the logits after each of eight tokens, compared with transformers'
WhisperForConditionalGeneration (float32, on the same F16 weights and the same mel).

The random weights are drawn with init_std 0.05 rather than Whisper's 0.02: at 0.02 a
random encoder's output is mostly its sinusoidal positions and the decoder's logits barely
depend on the audio; at 0.05 they do, and a 5% change to one encoder matrix moves the
reference's logits by several times the bound below. libwhisper runs in a child process
(ggml asserts abort the whole process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.parity
ROOT = Path(__file__).resolve().parent.parent
TOKENS = [50258, 50259, 50360, 50364, 400, 1000, 2000, 3000]  # sot, en, transcribe, ...
# max abs logit differences to transformers, measured 0.0010 / 0.034 / 0.049 (reference
# logits up to ~1.9); flash attention (whisper.cpp's default) keeps keys, values and its
# running sums in F16, hence the larger bound; Q8_0 adds the weights' rounding
BOUND_EXACT = 0.002  # F16 file, flash attention off
BOUND_DEFAULT = 0.07  # F16 file, default parameters (as the benchmark runs it)
BOUND_Q8_0 = 0.1  # Q8_0 file, default parameters

CHILD = """
import json, sys
from pathlib import Path
import numpy as np
from qaudio_dev.bench.whisper_cpp import WhisperCpp, system_info

folder = Path(sys.argv[1])
tokens = json.loads(sys.argv[2])
mel = np.load(folder / "mel.npy")
out = {"info": system_info()}
for key, name, flash in (("exact", "F16", False), ("default", "F16", None), ("q8_0", "Q8_0", None)):
    with WhisperCpp(folder / f"{name}.bin", n_threads=2, flash_attn=flash) as model:
        model.encode(mel)
        np.save(folder / f"{key}.npy", model.logits(tokens))
try:
    WhisperCpp(folder / "truncated.bin", n_threads=2)
    out["truncated"] = "loaded"
except RuntimeError as e:
    out["truncated"] = str(e)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from qaudio_dev.bench.whisper_ggml import write_model

    folder = tmp_path_factory.mktemp("whisper-tiny")
    torch.manual_seed(0)
    cfg = WhisperConfig(
        vocab_size=51866,
        num_mel_bins=128,
        d_model=64,
        encoder_layers=3,
        encoder_attention_heads=4,
        encoder_ffn_dim=256,
        decoder_layers=1,
        decoder_attention_heads=4,
        decoder_ffn_dim=256,
        init_std=0.05,
    )
    WhisperForConditionalGeneration(cfg).half().save_pretrained(folder / "hf")
    for wtype in ("F16", "Q8_0"):
        write_model(folder / "hf", folder / f"{wtype}.bin", wtype)
    data = (folder / "F16.bin").read_bytes()
    (folder / "truncated.bin").write_bytes(data[: len(data) // 2])
    return folder


def _mel() -> np.ndarray:
    from qaudio_dev.bench.encoder_sides import WINDOW, clip
    from qaudio_local.audio.features import log_mel

    x = clip(7.0)
    return log_mel(np.pad(x, (0, WINDOW - x.size))).mel


def _reference(hf: Path, mel: np.ndarray, scale_last_fc2: float = 1.0) -> np.ndarray:
    import torch
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(hf, dtype=torch.float32).eval()
    with torch.inference_mode():
        model.model.encoder.layers[-1].fc2.weight.mul_(scale_last_fc2)
        out = model(
            input_features=torch.from_numpy(mel)[None],
            decoder_input_ids=torch.tensor([TOKENS]),
        )
    return out.logits[0].numpy()


def test_whisper_cpp_runs_the_written_weights_as_transformers_does(tiny: Path) -> None:
    mel = _mel()
    np.save(tiny / "mel.npy", mel)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(tiny), json.dumps(TOKENS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    info = json.loads(run.stdout.strip().splitlines()[-1])
    assert info["info"].startswith("whisper.cpp 1.8.5")
    assert "refused" in info["truncated"]  # a cut file: an error, not a crash or a load

    ref = _reference(tiny / "hf", mel)
    moved = np.abs(_reference(tiny / "hf", mel, scale_last_fc2=1.05) - ref).max()
    assert moved > 4 * BOUND_EXACT  # the check sees a small change to the encoder
    for key, bound in (("exact", BOUND_EXACT), ("default", BOUND_DEFAULT), ("q8_0", BOUND_Q8_0)):
        got = np.load(tiny / f"{key}.npy")
        assert got.shape == ref.shape and np.isfinite(got).all(), key
        assert np.abs(got - ref).max() <= bound, (key, float(np.abs(got - ref).max()))


def test_the_whisper_cpp_side_is_left_out_with_a_reason_without_pywhispercpp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from qaudio_dev.bench.encoder_inputs import whisper_for_cpp

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pywhispercpp" else real(name, *a),
    )
    files, why = whisper_for_cpp(tmp_path, {"d_model": 64, "layers": 1, "heads": 4, "ffn": 128})
    assert files == {} and why == "whisper.cpp: pywhispercpp is not installed"
    assert list(tmp_path.iterdir()) == []  # nothing built for a side that cannot run
