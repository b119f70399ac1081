"""Helpers the test modules share; no test module imports another.

- :mod:`.audio`: a sine tone, and recordings assembled from the synthetic speech clips;
- :mod:`.files`: file modes and the umask;
- :mod:`.cli`: ``qaudio`` in process through click's ``CliRunner``;
- :mod:`.fakehub`: a stand-in for the Hugging Face Hub on 127.0.0.1, with its fixtures;
- :mod:`.tiny_registry`: the ``tiny`` registry entry the fake hub serves (``cli_hub``).

Fixtures every module may use live in ``tests/conftest.py``. The fake hub's fixtures are
imported by the modules that use them (``loopback_only`` is autouse for those modules only).
Tooling that scripts use as well (the transformers reference, fidelity comparisons, GGUF
edits, the fuzzers) is the ``qaudio_dev`` package at the repository root.
"""
