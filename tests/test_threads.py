"""The default thread count: one per physical core among the CPUs this process may use."""

from __future__ import annotations

from qaudio_local.engine.threads import default_threads, physical_cores_in, threads_for


def _cpuinfo(pairs: list[tuple[int, int]]) -> str:
    """Linux cpuinfo text, one block per processor: (package, core) each."""
    return "\n\n".join(
        f"processor\t: {i}\nmodel name\t: x\nphysical id\t: {p}\ncore id\t\t: {c}\n"
        for i, (p, c) in enumerate(pairs)
    )


# 2 packages x 2 cores x 2 hyper-threads; processors 0-3 on package 0, siblings adjacent
SMT = _cpuinfo([(0, 0), (0, 0), (0, 1), (0, 1), (1, 0), (1, 0), (1, 1), (1, 1)])


def test_hyper_threads_count_once() -> None:
    assert physical_cores_in(SMT) == 4
    assert threads_for(SMT, set(range(8)), 8) == 4


def test_only_the_cpus_this_process_may_use_count() -> None:
    assert threads_for(SMT, {0, 1}, 8) == 1  # two siblings of one core
    assert threads_for(SMT, {0, 2, 4}, 8) == 3
    # a container: the host's cpuinfo, a share of it in the affinity mask
    host = _cpuinfo([(0, c) for c in range(64)])
    assert threads_for(host, {5, 9}, 64) == 2


def test_without_core_ids_every_usable_cpu_counts() -> None:
    vm = "processor\t: 0\nmodel name\t: x\n\nprocessor\t: 1\nmodel name\t: x\n"
    assert physical_cores_in(vm) is None
    assert threads_for(vm, {0, 1}, 2) == 2
    assert threads_for(None, None, 6) == 6
    assert threads_for(None, None, None) == 1


def test_this_machine_gets_at_least_one_and_no_more_than_it_may_use() -> None:
    import os

    assert 1 <= default_threads() <= len(os.sched_getaffinity(0))
