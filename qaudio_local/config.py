"""Constants and environment switches. Standard library only."""

from __future__ import annotations

import os

# --- audio front end (Whisper / Qwen2-Audio) ----------------------------------
SAMPLE_RATE = 16_000  # Hz, what the encoder expects
N_FFT = 400  # 25 ms window at 16 kHz
HOP_LENGTH = 160  # 10 ms hop -> 100 mel frames per second
N_MELS = 128  # Qwen2-Audio / Whisper-large-v3 mel bins
CHUNK_SECONDS = 30  # the encoder's receptive field
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE  # 480_000 samples per window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames per window
AUDIO_TOKENS_PER_SECOND = 25  # 100 frames/s, conv stride 2, pool stride 2

# --- chat format ----------------------------------------------------------------
# Qwen2-Audio's special tokens (in the order the tokenizer adds them after the BPE vocab)
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
)
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
DEFAULT_PROMPT = "What does the person say?"
# the base model (Qwen2-Audio-7B) takes a task prompt after the audio, not a question
BASE_DEFAULT_PROMPT = "Detect the language and recognize the speech: "

# "0" skips the trial load of a model pair in a child process (engine.gguf.loadcheck);
# "child" marks the processes that are themselves the trial (or the CPU-kernel probe)
LOAD_CHECK_ENV = "QAUDIO_LOAD_CHECK"


def debug_enabled() -> bool:
    """Return True when ``QAUDIO_DEBUG`` asks for tracebacks and llama.cpp logs."""
    return os.environ.get("QAUDIO_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}
