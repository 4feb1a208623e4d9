"""The reversal cards' normalized edit distance: the batched Levenshtein against the plain one."""
import random

from seq2seq.evaluate import edit_distance, edit_distances


def test_known_distances():
    assert edit_distance(list("kitten"), list("sitting")) == 3
    pairs = [("kitten", "sitting"), ("", "abc"), ("abc", ""), ("", ""), ("abc", "abc"), ("abc", "cba"),
             ("flaw", "lawn"), ("a", "b"), ("ab", "ba"), ("intention", "execution")]
    got = edit_distances([[ord(c) for c in a] for a, _ in pairs], [[ord(c) for c in b] for _, b in pairs])
    assert got.tolist() == [3, 3, 3, 0, 0, 2, 2, 1, 2, 5]


def test_batched_equals_the_plain_programme_on_random_pairs():
    rng = random.Random(7)
    hyps, refs = [], []
    for _ in range(400):                       # lengths 0-30 on both sides, a small alphabet so edits overlap
        hyps.append([rng.randrange(5) for _ in range(rng.randrange(31))])
        refs.append([rng.randrange(5) for _ in range(rng.randrange(31))])
    assert edit_distances(hyps, refs).tolist() == [edit_distance(h, r) for h, r in zip(hyps, refs)]
    assert edit_distances([], []).tolist() == []
