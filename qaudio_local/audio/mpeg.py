"""MPEG audio (MP3) without an ID3 tag, recognised by its frames and given a ``.mp3`` name.

libsndfile recognises MPEG audio that lacks an ID3 tag by the ``.mp3`` file name only, so
such data decodes from a path but not from bytes, a file object or a pipe. When libsndfile
refuses in-memory data, :func:`spool_mpeg` looks for three consecutive MPEG audio frames
(:func:`looks_like_mpeg`) and, if it finds them, copies the data into a temporary ``.mp3``
file for the decoder to open by name.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from .limits import MAX_STREAM_BYTES
from .sources import read_capped

__all__ = ["looks_like_mpeg", "spool_mpeg"]

# MPEG audio frame headers: bit rates (kbit/s, index 1..14) by (MPEG-1?, layer), and sample
# rates by version (bits 19-20: 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5).
_BITRATES = {
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def spool_mpeg(fobj: Any, start: int, desc: str) -> str | None:
    """Copy ``fobj`` from ``start`` into a temporary ``.mp3`` file if it holds MPEG audio.

    libsndfile recognises MPEG audio without an ID3 tag by the ``.mp3`` file name only, so
    such data decodes from a path but not from memory unless it is given one.

    Returns:
        The temporary file's path, or ``None`` when the data is not MPEG audio.
    """
    try:
        fobj.seek(start)
        head = fobj.read(1 << 16)
        if not isinstance(head, bytes | bytearray) or not looks_like_mpeg(bytes(head)):
            return None
        fobj.seek(start)
        data = read_capped(fobj, desc, MAX_STREAM_BYTES)
    except (OSError, ValueError):
        return None
    fd, name = tempfile.mkstemp(suffix=".mp3", prefix="qaudio-")
    with os.fdopen(fd, "wb") as out:
        out.write(data.getbuffer())
    return name


def _mpeg_frame(data: bytes, i: int) -> tuple[int, int] | None:
    """The (length, kind) of the MPEG audio frame whose header starts at ``data[i]``."""
    if i + 4 > len(data):
        return None
    h = int.from_bytes(data[i : i + 4], "big")
    version, layer_bits = (h >> 19) & 3, (h >> 17) & 3
    bitrate_index, rate_index, padding = (h >> 12) & 15, (h >> 10) & 3, (h >> 9) & 1
    if h >> 21 != 0x7FF or version == 1 or layer_bits == 0:
        return None
    if bitrate_index in (0, 15) or rate_index == 3:
        return None
    layer, mpeg1 = 4 - layer_bits, version == 3
    bitrate = _BITRATES[(mpeg1, layer)][bitrate_index - 1] * 1000
    rate = _MPEG_RATES[version][rate_index]
    if layer == 1:
        length = (12 * bitrate // rate + padding) * 4
    else:
        length = (144 if mpeg1 or layer == 2 else 72) * bitrate // rate + padding
    return length, h & 0xFFFE0C00  # version, layer and rate must stay the same


def looks_like_mpeg(head: bytes) -> bool:
    """Whether three consecutive MPEG audio frames start somewhere in ``head``."""
    i = head.find(b"\xff")
    while 0 <= i < len(head) - 4:
        first = _mpeg_frame(head, i)
        if first is not None:
            j, ok = i + first[0], True
            for _ in range(2):
                nxt = _mpeg_frame(head, j)
                if nxt is None or nxt[1] != first[1]:
                    ok = False
                    break
                j += nxt[0]
            if ok:
                return True
        i = head.find(b"\xff", i + 1)
    return False
