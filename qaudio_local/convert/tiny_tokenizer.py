"""The tiny model's tokenizer: a real byte-level BPE, trained here, in Qwen2's format.

GPT-2 byte alphabet, merges learned from a short embedded English corpus with Qwen2's
pre-tokenizer, then Qwen's special tokens; written as ``tokenizer.json`` (the format
``Qwen2TokenizerFast`` builds) and as ``vocab.json`` + ``merges.txt``, with a chat
template that renders the Qwen2-Audio format. Standard library only.
"""

from __future__ import annotations

import functools
import heapq
import re
from collections import Counter, defaultdict

from ..config import SPECIAL_TOKENS

__all__ = ["CHAT_TEMPLATE", "QWEN2_PRETOKENIZE_REGEX", "special_token_ids", "tiny_vocab_size"]

# Qwen2's pre-tokenizer, verbatim (needs the `regex` module or Rust's regex: \p{L}, \p{N}).
QWEN2_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# The same with stdlib `re`, for training only: \p{L} ~ [^\W\d_], \p{N} ~ \d (exact on ASCII).
_TRAIN_SPLIT = re.compile(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|(?:[^\w\r\n]|_)?[^\W\d_]+|\d"
    r"| ?(?:[^\s\w]|_)+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
N_MERGES = 500  # 256 bytes + ~500 merged tokens + 6 specials -> 762 ids -> 768 embedding rows

CHAT_TEMPLATE = (
    "{%- set audio_count = namespace(value=0) -%}"
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if 'audio' in item or 'audio_url' in item or item['type'] == 'audio' -%}"
    "{%- set audio_count.value = audio_count.value + 1 -%}"
    "{{- 'Audio ' + audio_count.value|string + ': <|audio_bos|><|AUDIO|><|audio_eos|>\\n' -}}"
    "{%- elif 'text' in item -%}"
    "{{- item['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)

_CORPUS = """\
You are a helpful assistant. The user sends an audio clip and asks a question; the
assistant listens and answers. What does the person say? Transcribe the speech in this
audio. Translate the speech into German. What is the emotion of the speaker? Describe the
sounds you hear. Audio 1, Audio 2 and Audio 3 are three recordings of the same meeting.

Speech is a sound wave: the air pressure rises and falls many times each second. A
microphone turns the pressure into a voltage, and a converter samples it 16000 times per
second, so one second of audio holds 16000 numbers. The model does not read the raw
samples. It first computes a log mel spectrogram: short windows of 400 samples, a hop of
160 samples, and 128 mel filters between 0 and 8000 hertz. That gives 100 frames per
second and 3000 frames for thirty seconds of sound.

The audio encoder is a transformer like the one in Whisper. Two convolutions shrink the
frames by two, positions are added, and 32 layers of attention mix the frames together.
Then the frames are pooled again, so each second becomes 25 audio tokens. A projector maps
them into the space of the language model, which reads them next to the text of the
prompt and writes the answer one token at a time.

People speak fast or slow, loud or quiet, with noise, music and other voices around them.
A good system should still understand what was said, who said it, and how they felt. It
should also know when nothing was said at all, and answer that the audio is silent.

The user said: "Please transcribe this recording of the lecture." The assistant wrote the
words down, one sentence per line, with the time of each sentence: 00:01, 00:15, 00:42,
01:07 and 02:30. Numbers like 1, 2, 3, 4, 5, 6, 7, 8, 9 and 10 were written as digits.

Birds sing in the morning, a dog barks, a door closes, rain falls on the roof, and a car
passes in the street. Can you hear the piano? Which instrument plays the melody? Is the
speaker a man or a woman? How many people are talking? What language do they speak?
I'm sure it's fine; we'll see, they've said, you'd think so, and it'll work.
"""


@functools.lru_cache(maxsize=1)
def _byte_to_unicode() -> dict[int, str]:
    """Map every byte to a printable character, as GPT-2's byte-level BPE does."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    order, chars = list(printable), list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            order.append(b)
            chars.append(256 + extra)
            extra += 1
    return {
        b: chr(c) for b, c in zip(order, chars, strict=True)
    }  # insertion order = GPT-2 id order


def _merge_word(word: list[str], pair: tuple[str, str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def _train_bpe(text: str, n_merges: int) -> list[tuple[str, str]]:
    """Learn up to ``n_merges`` BPE merges; ties go to the lexicographically first pair."""
    table = _byte_to_unicode()
    pieces = Counter(
        "".join(table[b] for b in piece.encode("utf-8")) for piece in _TRAIN_SPLIT.findall(text)
    )
    words = [list(w) for w in sorted(pieces)]
    freq = [pieces[w] for w in sorted(pieces)]
    counts: Counter[tuple[str, str]] = Counter()
    where: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
    for i, word in enumerate(words):
        for pair in zip(word, word[1:], strict=False):
            counts[pair] += freq[i]
            where[pair].add(i)
    heap = [(-c, p) for p, c in counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    while heap and len(merges) < n_merges:
        neg, pair = heapq.heappop(heap)
        if counts.get(pair, 0) != -neg:
            continue  # stale entry; the current count was pushed again
        merges.append(pair)
        touched: set[tuple[str, str]] = set()
        for i in sorted(where.pop(pair)):
            old, words[i] = words[i], _merge_word(words[i], pair)
            for p in zip(old, old[1:], strict=False):
                counts[p] -= freq[i]
                touched.add(p)
            for p in zip(words[i], words[i][1:], strict=False):
                counts[p] += freq[i]
                where[p].add(i)
                touched.add(p)
        for p in sorted(touched):
            if counts[p] > 0:
                heapq.heappush(heap, (-counts[p], p))
            else:
                del counts[p]
    return merges


@functools.lru_cache(maxsize=1)
def _tokenizer() -> tuple[dict[str, int], tuple[str, ...]]:
    """Return (BPE vocabulary token -> id, merges as "a b" strings), specials excluded."""
    vocab = {ch: i for i, ch in enumerate(_byte_to_unicode().values())}
    merges = _train_bpe(_CORPUS, N_MERGES)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return vocab, tuple(f"{a} {b}" for a, b in merges)


def special_token_ids() -> dict[str, int]:
    """Return the tiny tokenizer's id for each special token (they follow the BPE vocab)."""
    base = len(_tokenizer()[0])
    return {tok: base + i for i, tok in enumerate(SPECIAL_TOKENS)}


def tiny_vocab_size() -> int:
    """Return the embedding rows: tokenizer size rounded up to a multiple of 64."""
    n = len(_tokenizer()[0]) + len(SPECIAL_TOKENS)
    return -(-n // 64) * 64


def _added_token(content: str) -> dict[str, object]:
    return {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": True,
    }


def _tokenizer_files(base: bool = False) -> dict[str, object]:
    """Return file name -> JSON object or text for the tokenizer files (``base``: as the
    base model Qwen2-Audio-7B has them: no chat template, ``<|endoftext|>`` ends a text)."""
    vocab, merges = _tokenizer()
    specials = special_token_ids()
    byte_level = {"add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    tokenizer_json = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, **_added_token(t)} for t, i in specials.items()],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": QWEN2_PRETOKENIZE_REGEX},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {"type": "ByteLevel", **byte_level},
            ],
        },
        "post_processor": {"type": "ByteLevel", **byte_level},
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": list(merges),
        },
    }
    token_config = {
        "add_prefix_space": False,
        "added_tokens_decoder": {str(i): _added_token(t) for t, i in specials.items()},
        "additional_special_tokens": list(SPECIAL_TOKENS[1:]),
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    special_map = {
        "additional_special_tokens": list(SPECIAL_TOKENS[1:]),
        "eos_token": {k: v for k, v in _added_token("<|im_end|>").items() if k != "special"},
        "pad_token": {k: v for k, v in _added_token("<|endoftext|>").items() if k != "special"},
    }
    files: dict[str, object] = {
        "tokenizer.json": tokenizer_json,
        "vocab.json": vocab,
        "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
        "tokenizer_config.json": token_config,
        "special_tokens_map.json": special_map,
        "chat_template.json": {"chat_template": CHAT_TEMPLATE},
    }
    if base:
        del token_config["chat_template"], files["chat_template.json"]
        token_config["eos_token"] = "<|endoftext|>"
        special_map["eos_token"] = special_map["pad_token"]
    return files
