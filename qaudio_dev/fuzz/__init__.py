"""The fuzzers: hostile audio, GGUF pairs and command lines (:mod:`.cases`), each run in a
child process with a time and memory limit and classified (:mod:`.harness`)."""
