"""Byte-pair encoding of words into subword pieces (Sennrich et al., 2016).

Used for the German source side only: a third of the test sentences hold a source word
the word vocabulary has never seen often enough (a compound, a rare inflection), and a
word-level model reads each of them as one <unk>. Split into known pieces, such a word
still tells the model something. The English side stays whole words, so what the app
shows and what BLEU scores stay words.

A piece that is not the end of its word carries the suffix "@@" ("kletter@@ wand"), the
convention of subword-nmt, so the heatmap's source axis stays readable and the words
can be put back together (`join_pieces`)."""
from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from typing import Iterable

CONTINUES = "@@"      # suffix of a piece whose word goes on in the next piece
_END = "</w>"         # end-of-word symbol while merging: a word's last piece differs from its inner ones


def learn_merges(sentences: Iterable[list[str]], n_merges: int, min_count: int = 2) -> list[tuple[str, str]]:
    """The first `n_merges` merges of byte-pair encoding over the words of `sentences`,
    most frequent pair first (ties: the smaller pair in string order, so the result is
    deterministic). Stops early when no pair occurs `min_count` times.

    Pair counts are kept up to date incrementally (only the words holding the merged pair
    are recounted) with a lazily cleaned heap, so 10k merges take seconds, not hours."""
    word_counts = Counter(w for s in sentences for w in s if w and " " not in w)   # merges are stored "a b"
    words = [list(w[:-1]) + [w[-1] + _END] for w in word_counts]
    freqs = list(word_counts.values())
    stats: dict[tuple[str, str], int] = defaultdict(int)
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, (w, f) in enumerate(zip(words, freqs)):
        for pair in zip(w, w[1:]):
            stats[pair] += f
            where[pair].add(i)
    heap = [(-c, pair) for pair, c in stats.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    while heap and len(merges) < n_merges:
        neg, pair = heapq.heappop(heap)
        if stats.get(pair, 0) != -neg:        # stale entry: the pair's count changed since
            continue
        if -neg < min_count:
            break
        merges.append(pair)
        a, b = pair
        changed = set()
        for i in where.pop(pair):
            w, f = words[i], freqs[i]
            for p in zip(w, w[1:]):
                stats[p] -= f
                changed.add(p)
            merged, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
                    merged.append(a + b)
                    j += 2
                else:
                    merged.append(w[j])
                    j += 1
            for p in zip(merged, merged[1:]):
                stats[p] += f
                where[p].add(i)
                changed.add(p)
            words[i] = merged
        stats.pop(pair, None)
        for p in changed:
            if stats.get(p, 0) > 0:
                heapq.heappush(heap, (-stats[p], p))
            elif p in stats:
                del stats[p]
    return merges


class BytePairEncoder:
    """Applies learned merges: a word's characters are merged pairwise, the earliest
    learned merge first, until none applies (the same procedure as learning)."""

    def __init__(self, merges: Iterable[tuple[str, str]] | Iterable[list[str]]):
        self.merges = [tuple(m) for m in merges]
        if any(len(m) != 2 or not all(isinstance(x, str) and x for x in m) for m in self.merges):
            raise ValueError("merges must be pairs of non-empty strings")
        self.ranks = {m: i for i, m in enumerate(self.merges)}
        self._cache: dict[str, tuple[str, ...]] = {}

    def word_pieces(self, word: str) -> tuple[str, ...]:
        """"kletterwand" -> ("kletter@@", "wand") (pieces depend on the merges)."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        symbols = list(word[:-1]) + [word[-1] + _END] if word else []
        while len(symbols) > 1:
            ranked = [(self.ranks.get(p, len(self.ranks)), i) for i, p in enumerate(zip(symbols, symbols[1:]))]
            rank, i = min(ranked)
            if rank == len(self.ranks):
                break
            symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
        pieces = tuple(s[: -len(_END)] if s.endswith(_END) else s + CONTINUES for s in symbols)
        if len(self._cache) < 200_000:       # typed text is unbounded: keep the cache bounded
            self._cache[word] = pieces
        return pieces

    def segment(self, words: list[str]) -> list[str]:
        return [p for w in words for p in self.word_pieces(w)]


def continues_word(piece: str) -> bool:
    """True for a piece whose word goes on in the next piece ("kletter@@")."""
    return piece.endswith(CONTINUES) and len(piece) > len(CONTINUES)


def word_index(pieces: list[str]) -> list[int]:
    """The word each piece belongs to: ["ein", "kletter@@", "wand"] -> [0, 1, 1]."""
    out, w = [], 0
    for p in pieces:
        out.append(w)
        w += not continues_word(p)
    return out


def join_pieces(pieces: list[str]) -> list[str]:
    """Pieces back into words: ["kletter@@", "wand", "."] -> ["kletterwand", "."] (a word
    cut off after an inner piece keeps what it has)."""
    words: list[str] = []
    for p, w in zip(pieces, word_index(pieces)):
        text = p[: -len(CONTINUES)] if continues_word(p) else p
        if w < len(words):
            words[w] += text
        else:
            words.append(text)
    return words


def source_units(src_tokenizer: str | None, train_config: dict | None) -> str:
    """What a model's input tokens are, from its card: characters, whole words, or
    byte-pair pieces (with the number of merges)."""
    if src_tokenizer == "chars":
        return "characters"
    merges = (train_config or {}).get("src_bpe") or 0
    return f"byte-pair pieces ({merges} merges)" if merges else "words"
