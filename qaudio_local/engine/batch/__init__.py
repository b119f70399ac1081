"""Many sequences in one llama.cpp context, decoded together one batch per step.

:mod:`.scheduler` runs them on one background thread (prompts fed in bounded runs, one
token per decoding sequence per step, computed prefixes reused); :mod:`.request` is one
generation as it runs there; :mod:`.kv` keeps count of which sequence holds which cells of
the unified KV cache; :mod:`.sampling` chooses each sequence's tokens and watches its stop
strings. :class:`~qaudio_local.engine.model.AudioModel` is the only user.
"""
