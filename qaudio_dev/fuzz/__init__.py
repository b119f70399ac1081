"""The fuzzers: hostile audio (:mod:`.audio`), GGUF pairs (:mod:`.gguf`) and command lines,
as seeded cases (:mod:`.cases`), each run in a child process with a time and memory limit
and classified (:mod:`.harness`)."""
