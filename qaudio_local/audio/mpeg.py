"""MPEG audio (MP3) without an ID3 tag, recognised by its frames and given a ``.mp3`` name.

libsndfile recognises MPEG audio that lacks an ID3 tag by the ``.mp3`` file name only. Every
source is first opened by its content (so paths, bytes and file objects decode alike); when
libsndfile refuses it, :func:`mp3_name` looks for three consecutive MPEG audio frames
(:func:`looks_like_mpeg`) and, if it finds them, gives the data a ``.mp3`` name: the path,
a temporary link to it, or a temporary copy of in-memory data.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from .limits import MAX_STREAM_BYTES
from .sources import read_capped

__all__ = ["looks_like_mpeg", "mp3_name"]

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


def mp3_name(
    fobj: Any, start: int, desc: str, by_name: str | None = None
) -> tuple[str, list[str]] | None:
    """A ``.mp3`` name for the data of ``fobj`` from ``start``, if it holds MPEG audio.

    libsndfile recognises MPEG audio without an ID3 tag by the ``.mp3`` file name only. For
    a file opened from a path (``by_name``), that is the path itself if it ends in ``.mp3``,
    else a temporary ``.mp3`` link to it; for other data (bytes, a pipe, a file object), a
    temporary copy (at most :data:`MAX_STREAM_BYTES`).

    Returns:
        The name to open and the temporary files to remove once it is open, or ``None``
        when the data is not MPEG audio.
    """
    try:
        fobj.seek(start)
        head = fobj.read(1 << 16)
        if not isinstance(head, bytes | bytearray) or not looks_like_mpeg(bytes(head)):
            return None
        fobj.seek(start)
    except (OSError, ValueError):
        return None
    if by_name is not None and start == 0:
        if by_name.lower().endswith(".mp3"):
            return by_name, []
        link = os.path.join(tempfile.mkdtemp(prefix="qaudio-"), "audio.mp3")
        try:
            os.symlink(os.path.abspath(by_name), link)
            return link, [link, os.path.dirname(link)]
        except OSError:  # no symlinks here (Windows without the privilege): copy it
            os.rmdir(os.path.dirname(link))
    try:
        data = read_capped(fobj, desc, MAX_STREAM_BYTES)
    except (OSError, ValueError):
        return None
    fd, name = tempfile.mkstemp(suffix=".mp3", prefix="qaudio-")
    with os.fdopen(fd, "wb") as out:
        out.write(data.getbuffer())
    return name, [name]


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
