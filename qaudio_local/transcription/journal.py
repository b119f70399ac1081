"""The journal of a long transcription: one line per finished segment, so nothing is lost.

``<stem>.qaudio-journal.jsonl`` sits next to the outputs. Its first line says what is being
transcribed and how (the source file's size and modification time, the model files, the
options); each later line is a finished segment, flushed and synced as it is written. A
run stopped at any point (Ctrl+C, ``kill -9``, a power cut) leaves at worst a torn last
line, which is ignored; running the same command again reuses every segment already
done. A journal written for other options or another file is set aside, not reused.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

SUFFIX = ".qaudio-journal.jsonl"
VERSION = 1


class Journal:
    """Append-only record of finished segments for one recording.

    Args:
        path: The journal file.
        header: What must match for the journal to be reused.
    """

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.header = {"journal": VERSION, **header}
        self.done: dict[tuple[int, int], dict[str, Any]] = {}
        self._fh: Any = None
        self._load()

    def _load(self) -> None:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return
        try:
            first = json.loads(lines[0]) if lines else None
        except ValueError:
            first = None
        if first != self.header:
            with contextlib.suppress(OSError):
                self.path.replace(self.path.with_name(self.path.name + ".old"))
            return
        for line in lines[1:]:
            try:
                seg = json.loads(line)
                self.done[(int(seg["start_sample"]), int(seg["end_sample"]))] = seg
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a kill: that segment is simply done again

    def open(self) -> None:
        """Start writing (keeping what was done)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.done
        self._fh = self.path.open("w" if fresh else "a", encoding="utf-8")
        if fresh:
            self._write(self.header)
        else:  # a torn last line must not swallow the next record
            self._fh.write("\n")

    def add(self, record: dict[str, Any]) -> None:
        self.done[(record["start_sample"], record["end_sample"])] = record
        if self._fh is not None:
            self._write(record)

    def _write(self, obj: dict[str, Any]) -> None:
        self._fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def remove(self) -> None:
        """The outputs are written: the journal has done its job."""
        self.close()
        self.path.unlink(missing_ok=True)
        self.path.with_name(self.path.name + ".old").unlink(missing_ok=True)
