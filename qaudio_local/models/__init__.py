"""The model manager: which model, which quantization, where its files are.

The registry's data model (:mod:`.catalog`) and its loading from ``models.toml`` files
(:mod:`.registry`), what this machine has (:mod:`.hardware`, :mod:`.hardware_probes`), the
plan that fits it (:mod:`.planner`, :mod:`.planner_memory`: pure functions, arithmetic
shown), verified downloads (:mod:`.hub`, the only importer of ``huggingface_hub``), the
local store and its manifest (:mod:`.store`, :mod:`.manifest`), and :func:`.resolve.resolve_model`
(plan, pull, return the files). Imports the root and only the public names of
:mod:`qaudio_local.engine` (to ask the llama.cpp build what it can do).
"""
