"""The numbers the audio front end works to, each defined once.

The limits every input is held to (rates, channels, length, stream size, sample values,
array layout), and how audio is read and resampled (block size, soxr quality). The rest of
:mod:`qaudio_local.audio` (:mod:`.load`, :mod:`.stream` and their helpers) imports them from
here; ``qaudio_local.audio`` exports them.
"""

from __future__ import annotations

# soxr "HQ" (20-bit precision, stop band ~ -120 dB) is librosa's default resampler, which is
# how Hugging Face `datasets` brings audio to 16 kHz for Whisper / Qwen2-Audio. Its aliasing
# floor already sits 40 dB below the 80 dB range the log-mel features keep (clamp to max - 8
# in log10 power), so "VHQ" (28-bit, ~30 % slower here) would change nothing the model sees.
RESAMPLE_QUALITY = "HQ"

# Frames decoded per read: 2**18 is ~5.5 s at 48 kHz, 2 MiB of float32 stereo. Long files are
# downmixed and resampled block by block, so peak memory is the 16 kHz mono result, not the
# whole file as multichannel float32. Files with many channels read fewer frames per block,
# so that a block never exceeds BLOCK_BYTES whatever the header says.
BLOCK_FRAMES = 1 << 18
BLOCK_BYTES = BLOCK_FRAMES * 2 * 4

# Rates any recording (or requested output) can have, in Hz: telephone speech is 8 kHz,
# studio audio up to 384 kHz. Outside this range a header is damaged, and soxr would spend
# minutes (or gigabytes) on the ratio. audio.stream uses the same upper bound.
MIN_RATE = 1_000
MAX_RATE = 1_000_000
MAX_FILE_CHANNELS = 1024  # libsndfile's own limit (SF_MAX_CHANNELS)

# The default length limit of load_clip: twice what one prompt can hold (8192 tokens of
# context at 25 audio tokens/s is ~5.5 min), 38 MB of 16 kHz float32. Long-form callers,
# which stream and segment, pass a larger max_seconds.
MAX_SECONDS = 600.0

# The most bytes read from a stream that has no size (stdin, a FIFO, an unseekable file
# object): 10 min of 48 kHz stereo 24-bit PCM is 173 MB.
MAX_STREAM_BYTES = 256 << 20

# Samples larger than this are not audio on any scale (int32 PCM passed as floats peaks at
# 2**31); much larger values overflow float32 in resampling or in the log-mel power.
MAX_PEAK = 2.0**31

# A 2-D array whose first dimension is at most this (and smaller than the second) is taken as
# (channels, n_samples); otherwise as (n_samples, channels), soundfile's layout.
MAX_CHANNELS_FIRST = 8

# file name endings taken for audio when a folder is given (qaudio transcribe DIR) or a path
# is typed alone in qaudio chat: what libsndfile reads, MP3 included
AUDIO_SUFFIXES = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64"}
)
