from seq2seq.text import REVERSE_ALPHABET, detokenize, tokenize
from seq2seq.vocab import EOS_ID, SPECIALS, UNK_ID, Vocab


def test_spacy_german_tokens_lowercased():
    assert tokenize("Zwei junge Männer, im Freien.", "spacy:de") == ["zwei", "junge", "männer", ",", "im", "freien", "."]


def test_spacy_english_splits_contractions_and_drops_spaces():
    assert tokenize("A dog's  toy   isn't red!", "spacy:en") == ["a", "dog", "'s", "toy", "is", "n't", "red", "!"]


def test_chars_collapse_whitespace_and_lowercase():
    assert tokenize("  Ab  C\t1 ", "chars") == ["a", "b", " ", "c", " ", "1"]


def test_control_characters_and_lone_surrogates_do_not_break_tokenizers():
    text = "a\x00b\ud800c\u202e"
    for kind in ("chars", "spacy:de", "spacy:en"):
        toks = tokenize(text, kind)
        assert all(isinstance(t, str) for t in toks)
        "".join(toks).encode("utf-8")  # encodable


def test_detokenize_english():
    toks = ["a", "man", "in", "a", "t", "-", "shirt", "is", "n't", "here", ",", "he", "'s", "there", "."]
    assert detokenize(toks, "spacy:en") == "a man in a t-shirt isn't here, he's there."
    assert detokenize(["o", "l", "l", "e", "h"], "chars") == "olleh"


def test_vocab_specials_min_freq_and_round_trip():
    v = Vocab.build([["b", "a", "a"], ["c", "a", "b"]], min_freq=2)
    assert v.itos[:4] == list(SPECIALS)
    assert v.itos[4:] == ["a", "b"]  # by frequency; c (once) is cut
    ids = v.encode(["a", "c", "b"], add_eos=True)
    assert ids == [4, UNK_ID, 5, EOS_ID]
    assert v.decode(ids) == ["a", "<unk>", "b"]
    assert Vocab(v.to_list()) == v


def test_alphabet_vocab_covers_demo_characters():
    v = Vocab.from_alphabet(REVERSE_ALPHABET)
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789 ":
        assert ch in v
