"""The ``tiny`` registry entry served by the fake hub, on a fixed CPU-only machine.

``$QAUDIO_HOME/models.toml`` gets a ``tiny`` model whose files are the tiny model's real GGUF
pair (and a ``Q8_0`` quant with the same bytes), served by :mod:`tests.support.fakehub`; one
quant is listed but missing upstream. Import ``cli_hub_fixture`` (with the fake hub's
fixtures) into a test module to use the ``cli_hub`` fixture.
"""

from __future__ import annotations

import pytest

from qaudio_local import paths
from qaudio_local.models import hardware
from tests.support.fakehub import MMPROJ, REPO, TEXT, FakeHub

Q8 = "Tiny-Qwen2-Audio.Q8_0.gguf"  # served with the same bytes as TEXT
GONE = "Tiny-Qwen2-Audio.Q4_K_M.gguf"  # listed in the registry, missing upstream


def registry(fake: FakeHub) -> str:
    size = {name: len(f.data) for name, f in fake.repos[REPO].items()}
    return f"""
[models.tiny]
description = "the tiny test model"
repo = "{REPO}"

[models.tiny.dims]
n_layers = 2
hidden_size = 64
n_heads = 4
n_kv_heads = 4
max_context = 2048
vocab_size = 1000

[[models.tiny.quants]]
name = "Q4_K_M"
filename = "{GONE}"
size = 1000
bits_per_weight = 4.9

[[models.tiny.quants]]
name = "Q8_0"
filename = "{Q8}"
size = {size[Q8]}
bits_per_weight = 8.5

[[models.tiny.quants]]
name = "F32"
filename = "{TEXT}"
size = {size[TEXT]}
bits_per_weight = 32

[[models.tiny.projectors]]
name = "f32"
filename = "{MMPROJ}"
size = {size[MMPROJ]}
"""


@pytest.fixture(name="cli_hub")
def cli_hub_fixture(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """The fake hub, the ``tiny`` registry entry, and a fixed CPU-only 16 GiB machine."""
    fake_hub.add(REPO, Q8, fake_hub.repos[REPO][TEXT].data)
    home = paths.qaudio_home()
    home.mkdir(parents=True, exist_ok=True)
    (home / "models.toml").write_text(registry(fake_hub), encoding="utf-8")
    machine = hardware.Hardware(
        gpus=(),
        cpu_cores=4,
        physical_cores=4,
        ram_total=16 * hardware.GIB,
        ram_available=16 * hardware.GIB,
        llama_gpu_offload=False,
    )

    def detect(vram_gb: float | None = None, ram_gb: float | None = None) -> hardware.Hardware:
        return hardware.with_overrides(machine, vram_gb, ram_gb)

    monkeypatch.setattr(hardware, "detect", detect)
    return fake_hub
