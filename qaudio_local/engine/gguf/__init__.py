"""The checks that keep a bad GGUF away from llama.cpp (which aborts the process on some).

:func:`check_text_model` and :func:`check_projector` read a file's header with every count
bounded by its size (:mod:`.scan`), hold every key and tensor llama.cpp reads against a
closed schema (:mod:`.schema`, written with :mod:`.meta`) and return what the runtime needs
to know (:mod:`.info`); :func:`check_pair` checks that two files belong together and, given
the load options, has a child process load and decode them once (:mod:`.loadcheck`,
:mod:`.loadchild`), so that whatever llama.cpp still aborts on becomes a one-line error
naming the file. These names are the sub-package's public face; :mod:`.check` explains the
steps.
"""

from __future__ import annotations

from .check import check_pair, check_projector, check_text_model
from .info import ProjectorInfo, TextModelInfo

__all__ = ["ProjectorInfo", "TextModelInfo", "check_pair", "check_projector", "check_text_model"]
