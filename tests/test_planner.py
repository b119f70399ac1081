"""The planner across a table of machines: budgets, monotonicity, arithmetic, forced quants.

Machines are plain ``Hardware`` values (the planner is a pure function of them); memory is
given in GiB as ``--vram`` / ``--ram`` would give it.
"""

from __future__ import annotations

import json

import pytest

from qaudio_local.errors import PlanError, UnknownModelError
from qaudio_local.models.catalog import ModelEntry, find_quant
from qaudio_local.models.hardware import GIB, Gpu, Hardware
from qaudio_local.models.planner import plan
from qaudio_local.models.planner_memory import (
    ENCODER_COMPUTE_BYTES,
    GPU_CONTEXT_BYTES,
    MIB,
    Plan,
    compute_buffer_bytes,
    kv_cache_bytes,
    margin_bytes,
)
from qaudio_local.models.registry import load_catalog

QUANTS = ("Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")


@pytest.fixture(scope="module")
def entry() -> ModelEntry:
    return load_catalog(user_files=False).get("qwen2-audio-7b-instruct")


def nvidia(vram: float, ram: float = 16, offload: bool = True) -> Hardware:
    gpu = Gpu(0, f"NVIDIA {vram:g} GB", "nvidia", int(vram * GIB), int(vram * GIB), "8.9")
    return Hardware((gpu,), 16, 8, int(ram * GIB), int(ram * GIB), offload)


def cpu_only(ram: float) -> Hardware:
    return Hardware((), 16, 8, int(ram * GIB), int(ram * GIB), False)


def apple(ram: float, vram: float | None = None) -> Hardware:
    gpu = Gpu(0, "Apple M3", "apple", int(ram * GIB), int(ram * GIB), unified=True)
    override = int(vram * GIB) if vram is not None else None
    return Hardware((gpu,), 12, 12, int(ram * GIB), int(ram * GIB), True, vram_override=override)


# machine -> (quant, where, projector on GPU) at 4096 tokens, f16 KV cache
TABLE = {
    "gpu 8 GB": (nvidia(8), ("Q4_K_M", "gpu", False)),
    "gpu 10 GB": (nvidia(10), ("Q6_K", "gpu", True)),
    "gpu 12 GB": (nvidia(12), ("Q8_0", "gpu", True)),
    "gpu 16 GB": (nvidia(16), ("Q8_0", "gpu", True)),
    "gpu 24 GB": (nvidia(24), ("Q8_0", "gpu", True)),
    "cpu 8 GB": (cpu_only(8), ("Q3_K_M", "cpu", False)),
    "cpu 16 GB": (cpu_only(16), ("Q8_0", "cpu", False)),
    "cpu 32 GB": (cpu_only(32), ("Q8_0", "cpu", False)),
    "apple 16 GB": (apple(16), ("Q6_K", "gpu", True)),
}


def assert_within_budget(p: Plan) -> None:
    """Every device's lines add up to its need, which is within its budget, margin included."""
    assert p.fits
    for d in p.devices:
        assert d.needed == sum(line.bytes for line in d.lines) <= d.available
        assert d.lines[-1].label == "safety margin"
        assert d.lines[-1].bytes == max(d.available * 5 // 100, 300 * MIB)


def qi(p: Plan) -> int:
    return QUANTS.index(p.quant)


@pytest.mark.parametrize("machine", TABLE)
def test_table_of_machines(entry: ModelEntry, machine: str) -> None:
    hw, expected = TABLE[machine]
    p = plan(entry, hw)
    assert_within_budget(p)
    assert (p.quant, p.where, p.mmproj_on_gpu) == expected
    assert p.n_gpu_layers == (33 if p.where == "gpu" else 0)
    assert p.n_ctx == 4096 and p.kv_type == "f16" and p.reasons
    assert json.loads(json.dumps(p.to_dict()))["quant"] == p.quant
    text = "\n".join(p.explain())
    assert p.quant in text and "KV cache f16" in text and "safety margin" in text


def test_more_gpu_memory_never_gives_a_worse_quant(entry: ModelEntry) -> None:
    for ram in (8, 16, 32):
        for n_ctx, kv in ((4096, "f16"), (8192, "f16"), (8192, "q8_0"), (2048, "q8_0")):
            previous = -1
            for quarter in range(4 * 6, 4 * 40 + 1):  # 6 .. 40 GiB in 0.25 GiB steps
                p = plan(entry, nvidia(quarter / 4, ram), n_ctx=n_ctx, kv_type=kv)
                assert_within_budget(p)
                assert qi(p) >= previous, (quarter / 4, ram, n_ctx, kv, p.quant)
                previous = qi(p)
    gpu_rows = [plan(entry, TABLE[m][0]) for m in TABLE if m.startswith("gpu")]
    assert [qi(p) for p in gpu_rows] == sorted(qi(p) for p in gpu_rows)


def test_more_ram_never_gives_a_worse_quant(entry: ModelEntry) -> None:
    for make in (cpu_only, lambda r: nvidia(8, r), lambda r: nvidia(5, r), apple):
        previous = -1
        for ram in range(8, 65):
            try:
                p = plan(entry, make(ram))
            except PlanError:
                assert previous == -1  # only the smallest machines may have no plan
                continue
            assert_within_budget(p)
            assert qi(p) >= previous, (ram, p.quant)
            previous = qi(p)


def test_kv_cache_arithmetic(entry: ModelEntry) -> None:
    dims = entry.dims
    assert kv_cache_bytes(dims, 1, "f16") == 512 * 1024  # 0.5 MiB per token, no GQA
    assert kv_cache_bytes(dims, 8192, "f16") == 4 * GIB
    assert kv_cache_bytes(dims, 4096, "q8_0") == 2 * GIB * 34 // 64  # 34 bytes per 32 values
    assert kv_cache_bytes(dims, 4096, "f16", layers=10) == 2 * 10 * 4096 * 32 * 128 * 2


def _gpu_need(entry: ModelEntry, quant: str, layers: int, n_ctx: int, kv: str, budget: int) -> int:
    """The GPU sum worked out by hand for ``layers`` of 32 layers, projector on the CPU."""
    size = find_quant(entry, quant).file.size
    weights = size if layers > 32 else size * layers // 32
    return (
        weights
        + kv_cache_bytes(entry.dims, n_ctx, kv, min(layers, 32))
        + compute_buffer_bytes(entry.dims, n_ctx)
        + GPU_CONTEXT_BYTES
        + margin_bytes(budget)
    )


def test_context_and_kv_type_change_the_plan_as_the_arithmetic_says(entry: ModelEntry) -> None:
    hw, budget = nvidia(8), 8 * GIB
    short = plan(entry, hw, n_ctx=4096)
    long = plan(entry, hw, n_ctx=8192)
    long_q8 = plan(entry, hw, n_ctx=8192, kv_type="q8_0")
    # 4096 tokens: Q4_K_M fits whole, Q5_K_M does not
    assert (short.quant, short.where) == ("Q4_K_M", "gpu")
    assert short.expected_bytes["gpu"] == _gpu_need(entry, "Q4_K_M", 33, 4096, "f16", budget)
    assert _gpu_need(entry, "Q5_K_M", 33, 4096, "f16", budget) > budget
    # 8192 tokens in f16: the KV cache grows by 2 GiB and Q4_K_M no longer fits whole; the
    # planner keeps exactly as many layers as the arithmetic allows
    assert _gpu_need(entry, "Q4_K_M", 33, 8192, "f16", budget) > budget
    assert (long.quant, long.where) == ("Q4_K_M", "partial")
    n = long.n_gpu_layers
    assert _gpu_need(entry, "Q4_K_M", n, 8192, "f16", budget) == long.expected_bytes["gpu"]
    assert (
        long.expected_bytes["gpu"]
        <= budget
        < _gpu_need(entry, "Q4_K_M", n + 1, 8192, "f16", budget)
    )
    # q8_0 halves (34/64) the KV cache, and the whole model fits again
    assert (long_q8.quant, long_q8.where) == ("Q4_K_M", "gpu")
    # with placement held fixed, the difference is exactly the KV (and compute) terms
    big = nvidia(24)
    a, b = plan(entry, big, n_ctx=4096), plan(entry, big, n_ctx=8192, kv_type="q8_0")
    c = plan(entry, big, n_ctx=8192)
    assert (a.quant, b.quant, c.quant) == ("Q8_0",) * 3
    assert c.expected_bytes["gpu"] - a.expected_bytes["gpu"] == 2 * GIB + (
        compute_buffer_bytes(entry.dims, 8192) - compute_buffer_bytes(entry.dims, 4096)
    )
    assert c.expected_bytes["gpu"] - b.expected_bytes["gpu"] == 4 * GIB - 4 * GIB * 34 // 64


def test_partial_offload_moves_the_projector_to_the_cpu_and_uses_ram(entry: ModelEntry) -> None:
    p = plan(entry, nvidia(6, 16))
    assert_within_budget(p)
    assert (p.quant, p.where, p.mmproj_on_gpu) == ("Q4_K_M", "partial", False)
    assert 16 <= p.n_gpu_layers < 32
    ram = {line.label: line.bytes for line in p.devices[1].lines}
    size = find_quant(entry, "Q4_K_M").file.size
    assert ram["weights Q4_K_M"] == size - size * p.n_gpu_layers // 32
    assert ram["KV cache f16"] == kv_cache_bytes(entry.dims, 4096, "f16", 32 - p.n_gpu_layers)
    assert "projector f16" in ram and "audio encoder compute" in ram
    assert any("not offloaded partly" in r for r in p.reasons)


def test_partial_offload_never_picks_a_big_quant(entry: ModelEntry) -> None:
    """Above the partial ceiling (Q4_K_M) a quant must fit whole, however much RAM there is."""
    for vram in (5, 6, 7, 8):
        p = plan(entry, nvidia(vram, 64), n_ctx=8192)
        if p.where == "partial" and p.n_gpu_layers >= 16:
            assert qi(p) <= QUANTS.index("Q4_K_M")


def test_gpu_too_small_falls_back_to_a_ram_sized_plan(entry: ModelEntry) -> None:
    p = plan(entry, nvidia(3, 32))
    assert_within_budget(p)
    assert p.quant == "Q8_0" and p.where == "partial" and 0 < p.n_gpu_layers < 16
    assert any("fewer than half" in r for r in p.reasons)


def test_cpu_only_build_gives_a_cpu_plan_and_the_reinstall_command(entry: ModelEntry) -> None:
    p = plan(entry, nvidia(24, 32, offload=False))
    assert_within_budget(p)
    assert (p.where, p.n_gpu_layers, p.mmproj_on_gpu) == ("cpu", 0, False)
    assert [d.kind for d in p.devices] == ["ram"]
    assert any("cannot offload" in r for r in p.reasons)
    assert any('CMAKE_ARGS="-DGGML_CUDA=on" pip install' in w for w in p.warnings)


def test_forced_quant_that_does_not_fit_is_refused_with_numbers(entry: ModelEntry) -> None:
    with pytest.raises(PlanError) as info:
        plan(entry, cpu_only(8), quant="q8_0")
    err = info.value
    assert isinstance(err, ValueError)
    assert err.quant == "Q8_0" and err.needed is not None and err.available == 8 * GIB
    assert err.needed > err.available and err.alternative == "Q3_K_M on the CPU"
    msg = str(err)
    assert f"{err.needed / GIB:.2f} GiB" in msg and "8.00 GiB" in msg and "--force" in msg
    forced = plan(entry, cpu_only(8), quant="Q8_0", force=True)
    assert not forced.fits and forced.quant == "Q8_0" and forced.warnings
    assert forced.devices[0].needed == err.needed


def test_forced_quant_that_fits_partly_is_planned(entry: ModelEntry) -> None:
    p = plan(entry, nvidia(8, 32), quant="Q8_0")
    assert_within_budget(p)
    assert p.quant == "Q8_0" and p.where == "partial" and p.n_gpu_layers > 16
    assert plan(entry, nvidia(24), quant="Q3_K_M").where == "gpu"


def test_forced_projector(entry: ModelEntry) -> None:
    p = plan(entry, nvidia(24), projector="q8_0")
    assert p.projector == "q8_0" and p.mmproj_on_gpu
    with pytest.raises(UnknownModelError):
        plan(entry, nvidia(24), projector="bf16")
    with pytest.raises(UnknownModelError):
        plan(entry, nvidia(24), quant="Q2_K")


def test_nothing_fits_suggests_a_setting_or_force(entry: ModelEntry) -> None:
    with pytest.raises(PlanError, match="try --kv-type q8_0") as info:
        plan(entry, cpu_only(8), n_ctx=8192)
    assert info.value.quant == "Q3_K_M"
    with pytest.raises(PlanError, match="nothing fits"):
        plan(entry, cpu_only(2))
    p = plan(entry, cpu_only(2), force=True)
    assert not p.fits and p.quant == "Q3_K_M" and "forced" in p.warnings[-1]


def test_bad_context_and_kv_type(entry: ModelEntry) -> None:
    with pytest.raises(PlanError, match="outside 1..8192"):
        plan(entry, nvidia(24), n_ctx=16384)
    with pytest.raises(PlanError, match="valid: f16, q8_0"):
        plan(entry, nvidia(24), kv_type="q4_0")


def test_apple_unified_memory(entry: ModelEntry) -> None:
    p = plan(entry, apple(16))
    assert [d.kind for d in p.devices] == ["unified"]
    assert p.devices[0].available == int(16 * GIB * 0.7)
    assert p.n_gpu_layers == 33 and p.mmproj_on_gpu
    small = plan(entry, apple(16, vram=8))  # --vram replaces the 70% share
    assert small.devices[0].available == 8 * GIB and qi(small) < qi(p)
    assert plan(entry, apple(64)).quant == "Q8_0"


def test_several_gpus_plan_for_the_one_with_most_free_memory(entry: ModelEntry) -> None:
    small = Gpu(0, "small", "nvidia", 8 * GIB, 8 * GIB)
    big = Gpu(1, "big", "nvidia", 24 * GIB, 24 * GIB)
    p = plan(entry, Hardware((small, big), 16, 8, 32 * GIB, 32 * GIB, True))
    assert p.devices[0].name == "big" and p.quant == "Q8_0"
    assert any("2 GPUs" in r for r in p.reasons)


def test_encoder_compute_constant_matches_whisper_large_shapes() -> None:
    assert ENCODER_COMPUTE_BYTES == 4 * (20 * 1500 * 1500 + 1500 * (8 * 1280 + 5120))


# --- the projector for a CPU-only machine: q8_0 where the matrix units run it ----------------


@pytest.mark.parametrize(
    ("hw", "matrix_units", "expected"),
    [
        (cpu_only(16), True, "q8_0"),  # AMX kernels run: the encoder's weights go there
        (cpu_only(16), False, "f16"),  # plain kernels: q8_0 is no faster and less exact
        (nvidia(8, offload=False), True, "q8_0"),  # a GPU this build cannot use: CPU again
        (nvidia(24), True, "f16"),  # the encoder runs on the GPU
        (apple(32), True, "f16"),
    ],
)
def test_a_cpu_only_machine_with_matrix_units_takes_the_q8_0_projector(
    entry: ModelEntry, hw: Hardware, matrix_units: bool, expected: str
) -> None:
    from dataclasses import replace

    p = plan(entry, replace(hw, cpu_matrix_units=matrix_units))
    assert p.projector == expected
    why = [r for r in p.reasons if "matrix units" in r]
    plain = [r for r in p.reasons if "plain CPU kernels" in r]
    if expected == "q8_0":
        assert len(why) == 1 and "7.2 s" in why[0] and "14.1 s" in why[0] and "cosine" in why[0]
        assert "projector q8_0" in " ".join(ln.label for d in p.devices for ln in d.lines)
        assert plain == []
    else:
        assert why == []
        # the encoder on a CPU without usable matrix units: the plan says why f16 is kept
        on_cpu = not p.mmproj_on_gpu
        assert len(plain) == on_cpu
        if on_cpu:
            assert "22.1 s" in plain[0] and "20.3 s" in plain[0] and "cosine" in plain[0]
    forced = plan(entry, replace(hw, cpu_matrix_units=matrix_units), projector="f16")
    assert forced.projector == "f16"  # an explicit choice is kept
    assert not [r for r in forced.reasons if "plain CPU kernels" in r]  # nothing to explain
    quant = plan(entry, replace(hw, cpu_matrix_units=matrix_units), quant="Q4_K_M")
    assert [r for r in quant.reasons if "plain CPU kernels" in r] == plain  # a forced quant too
