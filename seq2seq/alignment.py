"""Numbers about an alignment matrix A [T outputs, S sources] (rows are distributions)."""
from __future__ import annotations

import numpy as np

from .subword import continues_word, join_pieces, word_index


def mirrored_positions(n_out: int, n_src: int) -> np.ndarray:
    """The source position output t copies from when reversing: S - 1 - t (or -1 past the start)."""
    return np.array([n_src - 1 - t if t < n_src else -1 for t in range(n_out)], dtype=int)


def diagonality(matrix: np.ndarray) -> float:
    """Reversal: mean share of each output row's mass on its mirrored source position.
    1.0 is the ideal anti-diagonal; rows past the source length count as 0."""
    A = np.asarray(matrix, dtype=float)
    if A.size == 0:
        return 0.0
    T, S = A.shape
    mirror = mirrored_positions(T, S)
    mass = [A[t, j] if j >= 0 else 0.0 for t, j in enumerate(mirror)]
    return float(np.mean(mass))


def row_entropy(matrix: np.ndarray) -> np.ndarray:
    """Entropy (nats) of every row: 0 when the decoder looks at one token, log S when it
    spreads evenly."""
    A = np.clip(np.asarray(matrix, dtype=float), 1e-12, 1.0)
    return -(A * np.log(A)).sum(axis=1) if A.size else np.zeros(len(A))


def word_columns(source_tokens: list[str], matrix, unknown: list[bool] | None = None):
    """A source read in byte-pair pieces, seen per word: the columns of each word's pieces
    summed ("kletter@@", "wand" -> "kletterwand"). Rows that summed to 1 still do, since
    the weights are only regrouped. Returns (words, matrix [T, words], unknown per word:
    True where any of its pieces was unknown). Whole-word sources come back unchanged."""
    A = np.asarray(matrix, dtype=float).reshape(-1, len(source_tokens)) if len(source_tokens) else \
        np.zeros((len(matrix), 0))
    word_of = word_index(source_tokens)
    n_words = word_of[-1] + 1 if word_of else 0
    summed = np.zeros((A.shape[0], n_words))
    np.add.at(summed.T, word_of, A.T)
    flags = None
    if unknown is not None:
        flags = [False] * n_words
        for j, u in zip(word_of, unknown):
            flags[j] = flags[j] or bool(u)
    return join_pieces(source_tokens), summed, flags


def reads_pieces(source_tokens: list[str]) -> bool:
    """True when some source token is the inner piece of a word (a byte-pair model's input)."""
    return any(map(continues_word, source_tokens))


def first_divergence(a: list, b: list) -> int | None:
    """Index of the first position where two token lists differ (None if equal)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-d array, ties sharing their average rank."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i: j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks
