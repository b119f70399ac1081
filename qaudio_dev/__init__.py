"""Development tooling that both ``tests/`` and ``scripts/`` import; not part of ``qaudio_local``.

- :mod:`.reference`: transformers' Qwen2-Audio as the reference the parity tests compare with
  (needs the ``[parity]`` extra and torch);
- :mod:`.fidelity`: clips and comparisons against that reference (parity tests,
  ``scripts/fidelity_report.py``);
- :mod:`.gguf_edit`: damaged or edited copies of GGUF files (GGUF tests, fuzzers);
- :mod:`.fuzz`: the fuzz cases and the harness that runs each in a limited child process
  (``tests/test_fuzz_quick.py``, ``scripts/fuzz.py``);
- :mod:`.synthetic`: the one builder of synthetic models up to the real width (every
  benchmark script);
- :mod:`.bench`: ``scripts/bench.py``'s benchmark (build, run, report) and the engine's
  decode rate that ``scripts/bench_engine.py`` shares.

The editable install (``pip install -e .``, which ``scripts/test.sh`` runs) makes it
importable, so no script edits ``sys.path``. Nothing in ``qaudio_local`` imports it.
"""
