"""Tokenizers. spaCy is imported here and only here, lazily, so training from cached
token lists (on a GPU machine without spaCy) needs nothing but torch."""
from __future__ import annotations

import functools
import re
import unicodedata

from .errors import InputError

# The reversal task's alphabet: what a person types in a demo, lowercased.
REVERSE_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 .,!?'-"

TOKENIZERS = ("spacy:de", "spacy:en", "chars")

# spaCy strips prefixes and suffixes one at a time, copying the rest of the word each
# time: quadratic in the length of a run without spaces ("(((…" of 9,000 characters took
# 12 s). Runs longer than this are cut into pieces of this length before spaCy sees them.
# No real word comes near it (Multi30k's longest is 36 characters), so ordinary text
# tokenizes exactly as before.
MAX_WORD_CHARS = 100
_LONG_RUN = re.compile(rf"\S{{{MAX_WORD_CHARS}}}(?=\S)")


@functools.lru_cache(maxsize=None)
def _spacy_tokenizer(lang: str):
    import spacy  # heavy import, kept local on purpose

    return spacy.blank(lang).tokenizer


def _clean(text: str) -> str:
    # Lone surrogates cannot be encoded and break downstream code; control characters
    # carry no meaning for these models. Replace both with spaces.
    text = text.encode("utf-8", "replace").decode("utf-8")
    return "".join(" " if unicodedata.category(ch) in ("Cc", "Cs") else ch for ch in text)


def tokenize(text: str, kind: str) -> list[str]:
    """Lowercased tokens of `text` for tokenizer `kind` (one of TOKENIZERS)."""
    if not isinstance(text, str):
        raise InputError(f"expected text, got {type(text).__name__}")
    text = _clean(text)
    if kind == "chars":
        # Runs of whitespace collapse to one space, as a person means them.
        return list(re.sub(r"\s+", " ", text.strip().lower()))
    if kind.startswith("spacy:"):
        tok = _spacy_tokenizer(kind.split(":", 1)[1])
        text = _LONG_RUN.sub(lambda m: m.group(0) + " ", text)
        return [t.text.lower() for t in tok(text) if not t.is_space and t.text.strip()]
    raise ValueError(f"unknown tokenizer {kind!r}; expected one of {TOKENIZERS}")


_NO_SPACE_BEFORE = {".", ",", "!", "?", ";", ":", ")", "]", "}", "%", "'s", "n't", "'re",
                    "'ve", "'m", "'ll", "'d", "'"}
_NO_SPACE_AFTER = {"(", "[", "{", "$"}


def detokenize(tokens: list[str], kind: str) -> str:
    """Turn model output tokens back into text a person reads."""
    if kind == "chars":
        return "".join(tokens)
    out = ""
    for i, tok in enumerate(tokens):
        if i > 0 and tok not in _NO_SPACE_BEFORE and tokens[i - 1] not in _NO_SPACE_AFTER \
                and not (tok == "-" or tokens[i - 1] == "-"):
            out += " "
        out += tok
    return out


def truecase_first(text: str) -> str:
    """Capitalize the first letter (the models produce lowercased text)."""
    return text[:1].upper() + text[1:]


def display_text(tokens: list[str], kind: str) -> str:
    """Output tokens as a person reads them: detokenized, sentences starting with a capital."""
    text = detokenize(tokens, kind)
    return text if kind == "chars" else truecase_first(text)
