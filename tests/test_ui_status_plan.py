"""``GET /v1/status`` (the page's "What runs here") of a registry model: the plan the server
made at start, with its memory arithmetic as ``qaudio plan`` prints it.

The ``tiny`` registry entry is pulled from the fake hub in process, then a real ``qaudio
serve -m tiny:F32`` plans and loads it offline (on this machine's real hardware).
"""

from __future__ import annotations

import os
import subprocess
import sys

import httpx2 as httpx
import pytest

from tests.support.cli import invoke
from tests.support.fakehub import FakeHub, fake_hub_fixture, loopback_only_fixture  # noqa: F401
from tests.support.realtime import free_port
from tests.support.served import wait_ready
from tests.support.tiny_registry import cli_hub_fixture  # noqa: F401  (fixture)


@pytest.mark.slow
def test_status_shows_the_plan_made_at_start(cli_hub: FakeHub) -> None:
    pulled = invoke("pull", "tiny:F32")
    assert pulled.exit_code == 0, pulled.stderr
    port = free_port()
    args = [sys.executable, "-m", "qaudio_local", "serve", "-m", "tiny:F32", "--port", str(port)]
    args += ["--threads", "2", "--parallel", "1", "--n-ctx", "1024"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc)
        s = httpx.get(f"{url}/v1/status").json()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()
    plan = s["plan"]
    assert plan is not None and plan["model"] == "tiny" and plan["quant"] == "F32"
    assert s["quantization"] == "F32" and s["projector"] == "f32"
    assert plan["lines"][0].startswith("model tiny: quant F32, projector f32 on the CPU")
    assert any(ln.startswith("ram (") and "fits" in ln for ln in plan["lines"])  # arithmetic
    assert plan["n_ctx"] == s["n_ctx"] == 1024
