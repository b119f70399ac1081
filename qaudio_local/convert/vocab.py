"""Read a Qwen2 byte-level BPE tokenizer from a checkpoint folder, for GGUF.

Accepts ``tokenizer.json`` (preferred) or ``vocab.json`` + ``merges.txt``, plus
``tokenizer_config.json`` for special tokens and the chat template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import SPECIAL_TOKENS
from ..errors import CheckpointNotFoundError, ConversionError

# llama.cpp token types (gguf.TokenType)
TOKEN_NORMAL = 1
TOKEN_CONTROL = 3
TOKEN_USER_DEFINED = 4
TOKEN_UNUSED = 5

REQUIRED_SPECIALS = SPECIAL_TOKENS


@dataclass(frozen=True)
class Vocab:
    """Everything the GGUF tokenizer section needs."""

    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int
    eos_id: int
    pad_id: int
    chat_template: str | None

    def id_of(self, text: str) -> int:
        """Id of a token given its text."""
        return self.tokens.index(text)


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(
            f"cannot read {path}: {exc}; re-download the tokenizer files", path=str(path)
        ) from exc


def _merge_text(merge: Any) -> str:
    if isinstance(merge, str):
        return merge
    if isinstance(merge, list | tuple) and len(merge) == 2:
        return f"{merge[0]} {merge[1]}"
    raise ValueError(f"unexpected merge entry {merge!r}")


_Parsed = tuple[dict[str, int], list[str], dict[str, tuple[int, bool]]]


def _from_tokenizer_json(path: Path) -> _Parsed:
    data = _load(path)
    model = data.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise ConversionError(
            f"{path} is not a BPE tokenizer (model type "
            f"{model.get('type')!r}); Qwen2-Audio uses byte-level BPE",
            path=str(path),
        )
    try:
        merges = [_merge_text(m) for m in model.get("merges") or []]
    except ValueError as exc:
        raise ConversionError(f"{path}: {exc}", path=str(path)) from exc
    added = {
        t["content"]: (int(t["id"]), bool(t.get("special", False)))
        for t in data.get("added_tokens") or []
    }
    return {str(k): int(v) for k, v in model["vocab"].items()}, merges, added


def _from_vocab_merges(directory: Path, config: dict[str, Any]) -> _Parsed:
    vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
    vocab = _load(vocab_path)
    try:
        lines = merges_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConversionError(f"cannot read {merges_path}: {exc}", path=str(merges_path)) from exc
    merges = [ln for ln in lines if ln and not ln.startswith("#version")]
    added: dict[str, tuple[int, bool]] = {}
    for tid, entry in (config.get("added_tokens_decoder") or {}).items():
        added[entry["content"]] = (int(tid), bool(entry.get("special", False)))
    return {str(k): int(v) for k, v in vocab.items()}, merges, added


def _special_text(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def load_vocab(directory: str | Path, vocab_size: int, model_config: dict[str, Any]) -> Vocab:
    """Read the tokenizer of a Qwen2-Audio checkpoint.

    Args:
        directory: The checkpoint folder.
        vocab_size: Rows of the embedding matrix; the token list is padded to it.
        model_config: The parsed config.json (fallback for bos/eos ids).

    Returns:
        The vocabulary, with padding rows typed UNUSED and added tokens typed CONTROL
        (special) or USER_DEFINED.

    Raises:
        CheckpointNotFoundError: No tokenizer files.
        ConversionError: Malformed files, missing Qwen special tokens, or ids beyond vocab_size.
    """
    directory = Path(directory)
    tok_cfg_path = directory / "tokenizer_config.json"
    tok_cfg: dict[str, Any] = _load(tok_cfg_path) if tok_cfg_path.is_file() else {}
    if (directory / "tokenizer.json").is_file():
        vocab, merges, added = _from_tokenizer_json(directory / "tokenizer.json")
    elif (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        vocab, merges, added = _from_vocab_merges(directory, tok_cfg)
    else:
        raise CheckpointNotFoundError(
            f"{directory} has no tokenizer: expected tokenizer.json, or vocab.json and merges.txt",
            path=str(directory),
        )

    by_id: dict[int, tuple[str, int]] = {i: (t, TOKEN_NORMAL) for t, i in vocab.items()}
    for text, (tid, special) in added.items():
        by_id[tid] = (text, TOKEN_CONTROL if special else TOKEN_USER_DEFINED)
    missing = [s for s in REQUIRED_SPECIALS if s not in added and s not in vocab]
    if missing:
        raise ConversionError(
            f"the tokenizer lacks Qwen2-Audio special token(s) "
            f"{', '.join(missing)}; is this the Qwen2-Audio tokenizer?",
            path=str(directory),
        )
    top = max(by_id)
    if top >= vocab_size:
        raise ConversionError(
            f"token id {top} does not fit the model's vocab_size {vocab_size}", path=str(directory)
        )
    tokens, types = [], []
    for i in range(vocab_size):
        text, ttype = by_id.get(i, (f"[PAD{i}]", TOKEN_UNUSED))
        tokens.append(text)
        types.append(ttype)

    def special_id(key: str, fallback: int) -> int:
        text = _special_text(tok_cfg.get(key))
        if text is not None and text in tokens:
            return tokens.index(text)
        return fallback

    endoftext = tokens.index("<|endoftext|>")
    text_cfg = model_config.get("text_config") or {}
    bos = special_id("bos_token", int(text_cfg.get("bos_token_id") or endoftext))
    eos = special_id("eos_token", tokens.index("<|im_end|>"))
    pad = special_id("pad_token", endoftext)
    template = tok_cfg.get("chat_template")
    if not isinstance(template, str):
        template = None
        jinja = directory / "chat_template.jinja"
        if jinja.is_file():
            template = jinja.read_text(encoding="utf-8")
        elif (directory / "chat_template.json").is_file():
            template = _load(directory / "chat_template.json").get("chat_template")
    return Vocab(
        tokens=tokens,
        token_types=types,
        merges=merges,
        bos_id=bos,
        eos_id=eos,
        pad_id=pad,
        chat_template=template,
    )
