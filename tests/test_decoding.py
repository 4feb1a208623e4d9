import numpy as np
import pytest
import torch

from seq2seq.decoding import beam_search, greedy_decode
from seq2seq.vocab import EOS_ID

from conftest import padded_batch, tiny_model


def _trained_like(arch, seed=0):
    """A random tiny model whose <eos> is likely enough that outputs end at varied lengths."""
    model = tiny_model(arch, seed=seed)
    with torch.no_grad():
        model.decoder.out.proj.bias[EOS_ID] += 1.5
    return model


def test_beam_width_one_equals_greedy(arch):
    model = _trained_like(arch)
    src, lens = padded_batch([5, 3, 7, 1, 4], seed=1)
    greedy = greedy_decode(model, src, lens, topk=3)
    beam = beam_search(model, src, lens, beam=1, topk=3)
    for g, b in zip(greedy, beam):
        assert g.tokens == b.tokens
        assert g.step_tokens == b.step_tokens
        assert g.finished == b.finished
        assert g.log_prob == pytest.approx(b.log_prob, abs=1e-5)
        assert np.allclose(g.step_probs, b.step_probs, atol=1e-6)
        assert g.topk_ids == b.topk_ids
        if g.attention is not None:
            assert np.allclose(g.attention, b.attention, atol=1e-6)


def test_greedy_batch_equals_one_at_a_time(arch):
    model = _trained_like(arch, seed=2)
    src, lens = padded_batch([6, 2, 5], seed=3)
    batched = greedy_decode(model, src, lens)
    for i, n in enumerate(lens.tolist()):
        alone = greedy_decode(model, src[i:i + 1, :n], lens[i:i + 1])[0]
        assert alone.tokens == batched[i].tokens
        assert alone.log_prob == pytest.approx(batched[i].log_prob, abs=1e-5)


def test_beam_results_do_not_depend_on_batch_composition(arch):
    model = _trained_like(arch, seed=4)
    src, lens = padded_batch([6, 2, 5, 7], seed=5)
    batched = beam_search(model, src, lens, beam=4)
    for i, n in enumerate(lens.tolist()):
        alone = beam_search(model, src[i:i + 1, :n], lens[i:i + 1], beam=4)[0]
        assert alone.tokens == batched[i].tokens
        assert alone.score == pytest.approx(batched[i].score, abs=1e-5)


def test_beam_hypothesis_is_consistent(arch):
    model = _trained_like(arch, seed=6)
    src, lens = padded_batch([5, 3], seed=7)
    for h in beam_search(model, src, lens, beam=5, topk=4, return_tree=True):
        n = len(h.step_tokens)
        # the recorded step probabilities add up to the hypothesis log-probability
        assert np.log(np.array(h.step_probs)).sum() == pytest.approx(h.log_prob, abs=1e-4)
        assert h.score == pytest.approx(h.log_prob / n, abs=1e-5)
        assert len(h.topk_ids) == n and all(len(t) == 4 for t in h.topk_ids)
        assert all(p1 >= p2 for row in h.topk_probs for p1, p2 in zip(row, row[1:]))
        if h.attention is not None:
            assert h.attention.shape[0] == n
            assert np.allclose(h.attention.sum(1), 1, atol=1e-5)
        assert h.beam_tree and all(len(s["tokens"]) == 5 for s in h.beam_tree)


def test_beam_finds_at_least_the_greedy_score():
    model = _trained_like("bahdanau", seed=8)
    src, lens = padded_batch([6, 4, 5, 3], seed=9)
    greedy = greedy_decode(model, src, lens)
    beam = beam_search(model, src, lens, beam=8)
    better_or_equal = sum(b.score >= g.score - 1e-6 for b, g in zip(beam, greedy))
    assert better_or_equal == len(greedy)


@pytest.mark.parametrize("width", [1, 3])
def test_forced_prefix(width):
    model = _trained_like("luong", seed=10)
    src, lens = padded_batch([5, 4], seed=11)
    prefix = [[7, 8], []]
    forced = beam_search(model, src, lens, beam=width, prefix=prefix) if width > 1 \
        else greedy_decode(model, src, lens, prefix=prefix)
    assert forced[0].step_tokens[:2] == [7, 8]
    free = greedy_decode(model, src[1:, :4], lens[1:])[0]
    if width == 1:
        assert forced[1].tokens == free.tokens  # the unforced row is untouched


def test_compacting_finished_rows_changes_nothing(arch):
    model = _trained_like(arch, seed=12)
    src, lens = padded_batch([6, 2, 5, 7, 1, 3, 4, 6], seed=13)
    never = greedy_decode(model, src, lens, compact_at=0.0)     # every row computed to the end
    always = greedy_decode(model, src, lens, compact_at=1.0)    # compacted whenever one ends
    for a, b in zip(never, always):
        assert a.tokens == b.tokens and a.topk_ids == b.topk_ids
        assert a.log_prob == pytest.approx(b.log_prob, abs=1e-5)
        if a.attention is not None:
            assert np.allclose(a.attention, b.attention, atol=1e-6)
