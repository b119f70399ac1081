#!/usr/bin/env bash
# Set up (first run only) and run the whole check: lint, format, types, tests.
# This is the command README.md gives and .ci/run calls.
#   bash scripts/test.sh            # everything (benchmark scripts in their smoke mode)
#   bash scripts/test.sh -k audio   # extra arguments go to pytest
#   bash scripts/test.sh -m "not slow and not bench"   # a quick run: the costliest left out
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${QAUDIO_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
# The page's tests (tests/test_ui.py) drive the operating system's Chromium through
# Playwright; no browser is downloaded by Playwright.
if [ ! -x /usr/bin/chromium ] && [ -z "${QAUDIO_CHROMIUM:-}" ]; then
    echo "== installing chromium (the page's browser tests)"
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq chromium
    elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
        sudo apt-get update -qq && sudo apt-get install -y -qq chromium
    else
        echo "error: the browser tests need Chromium at /usr/bin/chromium (Debian: apt-get" \
            "install chromium), or QAUDIO_CHROMIUM=/path/to/chromium" >&2
        exit 1
    fi
fi
echo "== installing (llama-cpp-python compiles llama.cpp the first time: ~5 minutes)"
"$PY" -m pip install -q --upgrade pip
# Reference stack for the parity tests: a CPU build of torch, pinned so pip never
# pulls a multi-GB GPU build, then transformers.
"$PY" -m pip install -q "torch==2.13.0"
"$PY" -m pip install -q -e ".[test,parity,server,bench]"
echo "== llama-server (llama.cpp's own, a backend in tests/test_remote_llama_server.py;"
echo "   built once into ~/.cache/qaudio-dev, about 10 minutes on 2 cores the first time)"
"$PY" scripts/build_llama_server.py
echo "== ruff"
"$VENV/bin/ruff" check qaudio_local qaudio_dev tests scripts
"$VENV/bin/ruff" format --check qaudio_local qaudio_dev tests scripts
echo "== mypy"
"$VENV/bin/mypy" qaudio_local qaudio_dev
echo "== pytest"
"$PY" -m pytest -q "$@"
