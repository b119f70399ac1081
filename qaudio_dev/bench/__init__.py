"""The whole path side by side: this project, llama.cpp's own tools and transformers.

One command builds (once, cached in ``--work``) a synthetic Qwen2-Audio with the real widths
and random weights (encoder d_model 1280 x 32 layers, 20 heads, ffn 5120; text model hidden
4096, 32 heads, 32 KV heads, ffn 11008, vocab 156032, ``--layers`` of its 32 layers),
converts it with the project's converter to F16, Q8_0 and Q4_K_M (llama.cpp's quantizer for
the K-quant), and measures, every side in its own child process (peak RSS from ``wait4``)
and every repeat interleaving the sides it compares:

- time to first token and end to end (first token + ``--answer`` tokens) for 5 s and 30 s
  clips: the faithful path, the mtmd path, transformers' ``Qwen2AudioForConditionalGeneration``
  on the same checkpoint in float32 and bfloat16;
- prefill tokens/s of a prompt holding 750 audio tokens and decode tokens/s on each GGUF:
  the project's engine, llama.cpp's native ``llama-bench`` (built from the sources vendored
  in the llama-cpp-python sdist, cached in ``--work``) and llama-cpp-python's ``Llama``;
- the memory copy bandwidth, and the decode rate as a fraction of it;
- aggregate decode tokens/s of 1, 2, 4 and 8 parallel sequences through the engine.

The Markdown table goes to stdout and between README.md's ``bench:start``/``bench:end``
markers (``--no-readme`` leaves README alone)::

    .venv/bin/python scripts/bench.py                 # full run (~40 min the first time)
    .venv/bin/python scripts/bench.py --quick         # one repeat, 5 s clip only
    .venv/bin/python scripts/bench.py --smoke --no-readme   # tiny sizes, seconds (the test)

Needs ~13 GB of RAM at 4 text layers (transformers in float32 holds it all) and ~25 GB of
disk in ``--work``.

The parts: :mod:`.settings` (constants, sizes, settings), :mod:`.build` (the models and
llama.cpp's tools), :mod:`.run` (the parent: rounds of child processes) and
:mod:`.children` (each measured side), :mod:`.rates` (the engine's decode rate, the
CPU-kernel verdict), :mod:`.view`, :mod:`.goals` and :mod:`.report` (the README block),
:mod:`.cli` (the command line).
"""
