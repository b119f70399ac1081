"""The base model's task prompts (Qwen2-Audio-7B, not -Instruct) and its language tags.

The base model takes no chat template: after the audio comes a task prompt, and for speech
recognition a language tag, as its model card and the evaluation prompts of the Qwen2-Audio
repository use ("Detect the language and recognize the speech: <|en|>"). Asked without a
tag, it answers with one first ("<|en|>Hello ..."), which :func:`split_language_tag` reads
and removes.
"""

from __future__ import annotations

import re

ASR = "Detect the language and recognize the speech: "
TRANSLATE = "Translate the speech into English: <|en|>"

# language names as users type them (and Whisper-style codes) -> the model's tag
LANGUAGE_TAGS = {
    "english": "en", "chinese": "zh", "mandarin": "zh", "cantonese": "yue", "german": "de",
    "french": "fr", "spanish": "es", "italian": "it", "japanese": "ja", "korean": "ko",
    "portuguese": "pt", "russian": "ru", "dutch": "nl", "arabic": "ar", "polish": "pl",
    "turkish": "tr", "swedish": "sv", "indonesian": "id", "vietnamese": "vi", "thai": "th",
}  # fmt: skip
NAMES = {tag: name for name, tag in reversed(LANGUAGE_TAGS.items())}
_TAG = re.compile(r"^\s*<\|([a-z]{2,3})\|>\s*")


def language_tag(language: str | None) -> str:
    """``"<|en|>"`` for ``"english"`` or ``"en"``; ``""`` when unknown or not given."""
    if not language or language == "unknown":
        return ""
    key = language.strip().lower()
    tag = LANGUAGE_TAGS.get(key, key if key in NAMES else "")
    return f"<|{tag}|>" if tag else ""


def base_instruction(task: str, prompt: str | None, language: str | None) -> str:
    """The base model's prompt for one segment: the user's own task prompt as given, else
    speech recognition (with the language's tag when known) or translation into English."""
    if prompt:
        return prompt
    if task == "translate":
        return TRANSLATE
    return ASR + language_tag(language)


def split_language_tag(text: str) -> tuple[str | None, str]:
    """(the language named by a leading ``<|xx|>`` tag, the text without it)."""
    m = _TAG.match(text)
    if m is None:
        return None, text
    return NAMES.get(m.group(1), m.group(1)), text[m.end() :]
