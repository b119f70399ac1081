"""The package's public surface: every name resolves, and importing stays light."""

from __future__ import annotations

import subprocess
import sys

import qaudio_local


def test_every_public_name_resolves() -> None:
    for name in qaudio_local.__all__:
        assert getattr(qaudio_local, name) is not None, name


def test_import_does_not_load_llama_cpp_or_torch() -> None:
    code = (
        "import sys, qaudio_local as q\n"
        "[getattr(q, n) for n in q.__all__]\n"
        "print(sorted(m for m in ('llama_cpp', 'torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
