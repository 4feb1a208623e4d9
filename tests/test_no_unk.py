"""Decoding with <unk> forbidden (`no_unk`): the searches never write it, take the model's
best other word there, and a card's decoding round-trips through evaluate, corpus and the
Test set page's link."""
import argparse
from urllib.parse import parse_qs, urlparse

import pytest
import torch

from seq2seq.config import Decoding
from seq2seq.decoding import banned_ids, beam_search, greedy_decode
from seq2seq.evaluate import _parse_decodings, decode_corpus
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


def test_decoding_lists_parse():
    assert _parse_decodings("1,5,10:0.8,10:0.8:no-unk,1:no-unk") == [
        Decoding(1), Decoding(5), Decoding(10, 0.8), Decoding(10, 0.8, True), Decoding(1, no_unk=True)]
    for bad in ("0", "5:-1", "5:x", "5:0.8:nounk", "", "5:1:2"):
        with pytest.raises(argparse.ArgumentTypeError):
            _parse_decodings(bad)


def test_test_set_link_carries_the_whole_decoding():
    from app_support.test_set_view import translate_url

    url = translate_url("ein hund", "translate-bahdanau", {"beam": 10, "alpha": 0.8, "no_unk": True})
    q = parse_qs(urlparse(url).query)
    assert q == {"text": ["ein hund"], "model": ["translate-bahdanau"], "beam": ["10"], "alpha": ["0.8"],
                 "no_unk": ["1"]}
    q = parse_qs(urlparse(translate_url("x", "m", {"beam": 1, "alpha": None})).query)
    assert q == {"text": ["x"], "model": ["m"]}
