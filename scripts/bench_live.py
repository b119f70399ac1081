"""Latency of live sessions: recordings played into ``qaudio serve``'s ``/v1/realtime`` at
real time, per turn from the end of speech to ``speech_stopped``, to the final text and, in
conversation mode, to the first answer delta; the VAD's hangover reported beside them.
What it measures and how: :mod:`qaudio_dev.live_bench`.

    .venv/bin/python scripts/bench_live.py                      # tiny model, both modes
    .venv/bin/python scripts/bench_live.py --real-width         # real encoder size (slow)
    .venv/bin/python scripts/bench_live.py --audio talk.flac --mode transcription --repeats 3
    .venv/bin/python scripts/bench_live.py --server http://gpu-box:8000 --api-key KEY

Prints a Markdown report labelled with the machine; changes no file outside ``--work``.
"""

from __future__ import annotations

from qaudio_dev.live_bench import main

if __name__ == "__main__":
    main()
