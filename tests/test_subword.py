"""Byte-pair pieces for the source side: learning pins exact merges, applying them
round-trips to the words, and a vocabulary with merges survives a checkpoint."""
import json

import pytest

from seq2seq.checkpoint import load_checkpoint, save_checkpoint, vocab_file_bytes
from seq2seq.subword import BytePairEncoder, join_pieces, learn_merges
from seq2seq.translate import Translator
from seq2seq.vocab import UNK_ID, Vocab

from conftest import _card, tiny_model

# Sennrich et al.'s toy corpus: low ×5, lower ×2, newest ×6, widest ×3
TOY = [["low"] * 5, ["lower"] * 2, ["newest"] * 6, ["widest"] * 3]


def test_learned_merges_are_the_most_frequent_pairs_in_order():
    assert learn_merges(TOY, 10) == [
        ("e", "s"), ("es", "t</w>"), ("l", "o"), ("e", "w"), ("ew", "est</w>"), ("n", "ewest</w>"),
        ("lo", "w</w>"), ("d", "est</w>"), ("i", "dest</w>"), ("w", "idest</w>")]


def test_learning_stops_where_no_pair_repeats():
    # after these merges every word is one symbol or its pairs occur once
    assert len(learn_merges([["ab", "cd"]], 100)) == 0           # every pair seen once
    assert learn_merges([["ab", "ab"]], 100) == [("a", "b</w>")]


def test_pieces_mark_inner_pieces_and_join_back_to_the_words():
    bpe = BytePairEncoder(learn_merges(TOY, 10))
    words = ["lowest", "newer", "wider", "low", "x", "newest"]
    pieces = bpe.segment(words)
    assert pieces == ["lo@@", "w@@", "est", "n@@", "ew@@", "e@@", "r", "w@@", "i@@", "d@@", "e@@", "r",
                      "low", "x", "newest"]
    assert join_pieces(pieces) == words
    assert bpe.segment([]) == []


def test_merges_are_validated():
    with pytest.raises(ValueError):
        BytePairEncoder([("a",)])
    with pytest.raises(ValueError):
        BytePairEncoder([("a", "")])


def test_a_word_vocabulary_segments_nothing_and_writes_the_same_file():
    words = Vocab(["<pad>", "<unk>", "<sos>", "<eos>", "ein", "hund"])
    assert words.segment(["ein", "kletterwand"]) == ["ein", "kletterwand"]
    assert "src_merges" not in json.loads(vocab_file_bytes(words, words))


def test_a_source_vocabulary_of_pieces_reads_unseen_words_as_known_pieces(tmp_path):
    merges = learn_merges(TOY, 10)
    bpe = BytePairEncoder(merges)
    built = Vocab.build([bpe.segment(s) for s in TOY], 1)
    src = Vocab(built.itos, merges)
    assert src != Vocab(built.itos) and src == Vocab(built.itos, merges)
    assert src.segment(["lower"]) == ["lo@@", "w@@", "e@@", "r"]
    ids = src.encode(src.segment(["lowlow"]))                   # never seen as a word
    assert UNK_ID not in ids and src.decode(ids) == ["lo@@", "w@@", "low"]
    content = json.loads(vocab_file_bytes(src, src))
    assert content["src_merges"][:2] == ["e s", "es t</w>"]

    # a checkpoint keeps the merges, and its translator reads text through them
    model = tiny_model("bahdanau", src_vocab=len(src), tgt_vocab=len(src))
    tgt = Vocab(built.itos)
    card = dict(_card("ck"), task="translate", tokenizers={"src": "spacy:de", "tgt": "spacy:en"})
    save_checkpoint(tmp_path / "ck", model, src, tgt, card)
    ck = load_checkpoint(tmp_path / "ck")
    assert ck.src_vocab == src and ck.src_vocab.merges == merges and ck.tgt_vocab.merges == []
    prepared = Translator(ck).prepare("Lowlow widest")
    assert prepared.tokens == ["lo@@", "w@@", "low", "widest"] and not any(prepared.unknown)
    assert prepared.ids == src.encode(prepared.tokens)


def test_word_columns_regroup_a_pieces_alignment_by_word():
    import numpy as np

    from seq2seq.alignment import reads_pieces, word_columns

    tokens = ["ein", "kletter@@", "wand", "."]
    A = np.array([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
    words, W, unknown = word_columns(tokens, A, [False, True, False, False])
    assert words == ["ein", "kletterwand", "."] and unknown == [False, True, False]
    assert np.allclose(W, [[0.1, 0.5, 0.4], [0.25, 0.5, 0.25]]) and np.allclose(W.sum(1), 1)
    assert reads_pieces(tokens) and not reads_pieces(["ein", "@@", "."])
    same, W2, none = word_columns(["ein", "."], A[:, :2])
    assert same == ["ein", "."] and np.array_equal(W2, A[:, :2]) and none is None
    trailing, W3, _ = word_columns(["a@@", "b@@"], np.array([[0.5, 0.5]]))     # cut off mid-word
    assert trailing == ["ab"] and np.allclose(W3, [[1.0]])


def test_the_results_table_says_how_each_model_reads_german():
    import dataclasses

    from seq2seq import report
    from seq2seq.checkpoint import read_card

    from conftest import ROOT

    shipped = read_card(ROOT / "checkpoints" / "translate-bahdanau")
    words = dataclasses.replace(shipped, name="translate-words", train_config=dict(shipped.train_config, src_bpe=0))
    pieces = dataclasses.replace(shipped, name="translate-pieces", train_config=dict(shipped.train_config, src_bpe=8000))
    table = report.translation_table([{"card": words, "bytes": 1}, {"card": pieces, "bytes": 1}]).splitlines()
    assert "| German read as |" in table[0]
    row_words = next(r for r in table if r.startswith("| `translate-words`"))
    row_pieces = next(r for r in table if r.startswith("| `translate-pieces`"))
    assert row_words.split(" | ")[3] == "words"
    assert row_pieces.split(" | ")[3] == "byte-pair pieces (8000 merges)"
