"""Vocabulary: token <-> id, with the four special tokens first. A source vocabulary may
also split words into subword pieces (subword.py): its `segment` turns words into the
tokens it holds; without merges it is the identity."""
from __future__ import annotations

from collections import Counter
from typing import Iterable

from .subword import BytePairEncoder

PAD, UNK, SOS, EOS = "<pad>", "<unk>", "<sos>", "<eos>"
SPECIALS = (PAD, UNK, SOS, EOS)
PAD_ID, UNK_ID, SOS_ID, EOS_ID = 0, 1, 2, 3


class Vocab:
    def __init__(self, tokens: Iterable[str], merges: Iterable | None = None):
        self.itos: list[str] = list(tokens)
        self.bpe = BytePairEncoder(merges) if merges else None
        if tuple(self.itos[:4]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}")
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("duplicate tokens in vocabulary")

    @classmethod
    def build(cls, sentences: Iterable[list[str]], min_freq: int = 1,
              max_size: int | None = None) -> "Vocab":
        """Tokens seen at least `min_freq` times, most frequent first (ties: alphabetical)."""
        counts = Counter(t for s in sentences for t in s)
        kept = sorted((t for t, c in counts.items() if c >= min_freq and t not in SPECIALS),
                      key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[: max(0, max_size - len(SPECIALS))]
        return cls([*SPECIALS, *kept])

    @classmethod
    def from_alphabet(cls, alphabet: str) -> "Vocab":
        return cls([*SPECIALS, *alphabet])

    @property
    def merges(self) -> list[tuple[str, str]]:
        return self.bpe.merges if self.bpe else []

    def segment(self, words: list[str]) -> list[str]:
        """Words -> the tokens this vocabulary holds: subword pieces where it has merges,
        the words themselves otherwise. Every source text passes through here before
        `encode`, so a checkpoint's pieces are the ones it was trained on."""
        return self.bpe.segment(words) if self.bpe else list(words)

    def encode_words(self, words: list[str], max_len: int | None = None) -> list[int]:
        """Words -> ids of their tokens (`segment`), the first max_len of them."""
        return self.encode(self.segment(words)[:max_len])

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def encode(self, tokens: list[str], add_sos: bool = False, add_eos: bool = False) -> list[int]:
        ids = [self.stoi.get(t, UNK_ID) for t in tokens]
        return ([SOS_ID] if add_sos else []) + ids + ([EOS_ID] if add_eos else [])

    def decode(self, ids: Iterable[int], strip_specials: bool = True) -> list[str]:
        """Ids -> tokens, stopping at the first <eos> when `strip_specials`."""
        out = []
        for i in ids:
            i = int(i)
            if strip_specials:
                if i == EOS_ID:
                    break
                if i in (PAD_ID, SOS_ID):
                    continue
            out.append(self.itos[i])
        return out

    def to_list(self) -> list[str]:
        return list(self.itos)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos and self.merges == other.merges
