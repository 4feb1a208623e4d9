"""Decoding with <unk> forbidden (`no_unk`): the searches never write it, take the model's
best other word there, and a card's decoding round-trips through evaluate, corpus and the
Test set page's link."""
import argparse
from urllib.parse import parse_qs, urlparse

import pytest
import torch

from seq2seq.config import Decoding
from seq2seq.data import collate
from seq2seq.decoding import banned_ids, beam_search, greedy_decode
from seq2seq.evaluate import decodings_arg, decode_corpus
from seq2seq.vocab import EOS_ID, PAD_ID, SOS_ID, UNK_ID

from conftest import padded_batch, tiny_model


def _unk_loving(arch, seed=0):
    """A tiny model that prefers <unk> at every step, with <eos> likely enough to end."""
    model = tiny_model(arch, seed=seed)
    with torch.no_grad():
        model.decoder.out.proj.bias[UNK_ID] += 8.0
        model.decoder.out.proj.bias[EOS_ID] += 1.0
    return model


def test_banned_ids():
    assert banned_ids() == (PAD_ID, SOS_ID)
    assert banned_ids(no_unk=True) == (PAD_ID, SOS_ID, UNK_ID)


def test_greedy_never_writes_unk_and_takes_the_next_best(arch):
    model = _unk_loving(arch)
    src, lens = padded_batch([5, 3, 7], seed=1)
    plain = greedy_decode(model, src, lens)
    assert all(h.step_tokens[0] == UNK_ID for h in plain)       # the bias works: <unk> first everywhere
    for details in (True, False):
        banned = greedy_decode(model, src, lens, no_unk=True, details=details)
        for h in banned:
            assert UNK_ID not in h.step_tokens
    # step 0 of the banned search is the argmax of the first logits over every id but pad, sos, unk
    banned = greedy_decode(model, src, lens, no_unk=True)
    memory, state = model.encode(src, lens)
    with torch.no_grad():
        logits, _, _ = model.decode_step(torch.full((3,), SOS_ID), state, memory)
    logits[:, [PAD_ID, SOS_ID, UNK_ID]] = float("-inf")
    assert [h.step_tokens[0] for h in banned] == logits.argmax(-1).tolist()


def test_beam_never_writes_unk_and_width_one_is_greedy(arch):
    model = _unk_loving(arch, seed=2)
    src, lens = padded_batch([6, 2, 5], seed=3)
    for h in beam_search(model, src, lens, beam=4, no_unk=True, return_tree=True):
        for hyp in h.n_best:
            assert UNK_ID not in hyp.step_tokens
    greedy = greedy_decode(model, src, lens, no_unk=True)
    beam1 = beam_search(model, src, lens, beam=1, no_unk=True)
    assert [g.tokens for g in greedy] == [b.tokens for b in beam1]
    assert any(UNK_ID in h.step_tokens for h in beam_search(model, src, lens, beam=4))


def test_corpus_decoding_passes_no_unk_on(arch):
    model = _unk_loving(arch, seed=4)
    sources = [[5, 6, 7, EOS_ID], [8, 9, EOS_ID], [10, 11, 12, 13, EOS_ID]]
    for beam in (1, 3):
        ids = decode_corpus(model, sources, "cpu", beam=beam, no_unk=True, workers=1)
        assert all(UNK_ID not in out for out in ids)
    assert any(UNK_ID in out for out in decode_corpus(model, sources, "cpu", beam=1, workers=1))


def test_decoding_names_labels_and_card_entries():
    d = Decoding(10, 0.8, no_unk=True)
    assert d.key == "beam10-alpha0.8-nounk" and d.label == "beam 10, α 0.8, no <unk>"
    assert d.card_entry() == {"beam": 10, "alpha": 0.8, "no_unk": True}
    assert Decoding.from_card(d.card_entry()) == d
    # older cards: no no_unk key; greedy's alpha is null
    assert Decoding.from_card({"beam": 5, "alpha": 1.0}) == Decoding(5)
    assert Decoding.from_card({"beam": 1, "alpha": None}).key == "beam1"
    assert Decoding(1, 0.5).key == "beam1" and Decoding(1, 0.5).label == "greedy"   # width 1 ignores alpha
    assert Decoding(5).card_entry() == {"beam": 5, "alpha": 1.0}


def test_a_coverage_penalty_is_part_of_the_decoding():
    d = Decoding(6, 0.9, no_unk=True, coverage=0.2)
    assert d.key == "beam6-alpha0.9-cov0.2-nounk" and d.label == "beam 6, α 0.9, coverage 0.2, no <unk>"
    assert d.card_entry() == {"beam": 6, "alpha": 0.9, "coverage": 0.2, "no_unk": True}
    assert Decoding.from_card(d.card_entry()) == d
    assert Decoding(1, coverage=0.3) == Decoding(1)            # greedy has no penalty to weigh
    assert "coverage" not in Decoding(5).card_entry()          # cards without one read as before
    with pytest.raises(ValueError):
        Decoding(5, coverage=-0.1)
    for dec in (d, Decoding(1), Decoding(10, 0.8), Decoding(5, coverage=0.1), Decoding(15, no_unk=True)):
        assert Decoding.from_key(dec.key) == dec                 # by_decoding's names read back
    for bad in ("beam", "beam5-cov", "greedy", "beam5-nounk-cov0.1"):
        with pytest.raises(ValueError):
            Decoding.from_key(bad)


def test_what_the_coverage_penalty_did_is_read_from_the_card():
    from seq2seq.report import coverage_measured

    metrics = {"val": {"sentences": 1014, "by_decoding": {
        "beam5": {"bleu": 41.95}, "beam5-cov0.1": {"bleu": 39.96}, "beam10-nounk": {"bleu": 41.6},
        "beam10-cov0.2-nounk": {"bleu": 40.0}, "beam6-cov0.3": {"bleu": 38.0}}}}   # beam 6 alone: no twin
    assert coverage_measured(metrics) == (
        "Measured on the 1,014 validation sentences: beam 5: BLEU 41.95 without the penalty, 39.96 with β = 0.1; "
        "beam 10, no <unk>: BLEU 41.60 without the penalty, 40.00 with β = 0.2.")
    assert coverage_measured({"val": {"by_decoding": {"beam5": {"bleu": 40.0}}}}) == ""
    assert coverage_measured({}) == coverage_measured(None) == ""


def test_corpus_decoding_passes_the_coverage_penalty_on():
    """decode_corpus gives beam search's own outputs with and without the penalty, and a
    weight that changes the ranking changes some output (so it was not dropped on the way)."""
    model = tiny_model("bahdanau", seed=3)
    g = torch.Generator().manual_seed(3)
    sources = [torch.randint(4, 20, (n,), generator=g).tolist() + [EOS_ID] for n in (3, 5, 6, 8, 9, 11, 12, 14)]
    batch = collate(sources, [[] for _ in sources], list(range(len(sources))))    # ascending: decode_corpus' order
    for cov in (0.0, 0.5):
        searched = [h.tokens for h in beam_search(model, batch.src, batch.src_lens, beam=4, coverage=cov, topk=1)]
        assert decode_corpus(model, sources, "cpu", beam=4, coverage=cov, batch_size=4 * len(sources),
                             workers=1) == searched
    assert (decode_corpus(model, sources, "cpu", beam=4, coverage=1.0, workers=1)
            != decode_corpus(model, sources, "cpu", beam=4, workers=1))


def test_decoding_lists_parse():
    assert decodings_arg("1,5,10:0.8,10:0.8:no-unk,1:no-unk,5:1:cov0.2,6:0.9:cov0.1:no-unk") == [
        Decoding(1), Decoding(5), Decoding(10, 0.8), Decoding(10, 0.8, True), Decoding(1, no_unk=True),
        Decoding(5, coverage=0.2), Decoding(6, 0.9, True, 0.1)]
    for bad in ("0", "5:-1", "5:x", "5:0.8:nounk", "", "5:1:2", "5:cov", "5:1:cov-1", "5:1:no-unk:cov0.2",
                "cov0.2"):
        with pytest.raises(argparse.ArgumentTypeError):
            decodings_arg(bad)


def test_test_set_link_carries_the_whole_decoding():
    from app_support.test_set_view import translate_url

    url = translate_url("ein hund", "translate-bahdanau", {"beam": 10, "alpha": 0.8, "no_unk": True})
    q = parse_qs(urlparse(url).query)
    assert q == {"text": ["ein hund"], "model": ["translate-bahdanau"], "beam": ["10"], "alpha": ["0.8"],
                 "no_unk": ["1"]}
    q = parse_qs(urlparse(translate_url("x", "m", {"beam": 1, "alpha": None})).query)
    assert q == {"text": ["x"], "model": ["m"]}
