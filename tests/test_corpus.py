"""seq2seq.corpus: the per-sentence statistics (checked against hand values and against an
independent recomputation through the Translator), the command's JSON file, the card entry,
and the verification the page relies on.

`build_corpus_lab` (tiny checkpoints + a fake Multi30k folder + corpus files) lives in
apptest_util.py, shared with test_page_test_set.py."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import torch
import pytest
import sacrebleu

from seq2seq import corpus
from seq2seq.checkpoint import CARD, load_checkpoint, read_card, sha256_file
from seq2seq.cli import run_main
from seq2seq.errors import CheckpointError

from apptest_util import GERMAN_TEST, _tiny, build_corpus_lab, make_corpus_file, recompute

@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return build_corpus_lab(tmp_path_factory.mktemp("corpus"))


# ------------------------------------------------------------------ pure statistics
def test_statistics_of_a_hand_matrix():
    A = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0]])
    h3 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert corpus.attention_entropy(A) == pytest.approx(h3 / 4)
    assert corpus.monotonicity(A) == 1.0
    assert corpus.coverage(A, 3).tolist() == pytest.approx([2.9, 0.1, 1.0])
    s = corpus.sentence_statistics(A, n_src=3, n_out=4)
    assert s == {"length_ratio": round(4 / 3, 4), "entropy": round(h3 / 4, 4), "monotonicity": 1.0,
                 "dropped": 1, "dropped_positions": [1], "repeated": 1, "repeated_positions": [0]}


def test_monotonicity_counts_steps_that_stay_or_move_forward():
    A = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.05, 0.05, 0.9]])  # argmax 0 1 0 2
    assert corpus.monotonicity(A) == pytest.approx(2 / 3)
    uniform = np.full((3, 4), 0.25)
    assert corpus.attention_entropy(uniform) == pytest.approx(math.log(4))
    assert corpus.monotonicity(uniform) == 1.0        # ties: first maximum, so the argmax stays


def test_statistics_edge_cases():
    empty = corpus.sentence_statistics(np.zeros((0, 3)), n_src=3, n_out=0)
    assert empty["entropy"] is None and empty["monotonicity"] is None and empty["length_ratio"] == 0.0
    assert empty["dropped"] == 3 and empty["dropped_positions"] == [0, 1, 2] and empty["repeated"] == 0
    one = corpus.sentence_statistics(np.array([[0.5, 0.5]]), n_src=2, n_out=1)
    assert one["monotonicity"] is None and one["entropy"] == round(math.log(2), 4)
    plain = corpus.sentence_statistics(None, n_src=4, n_out=2)
    assert plain["length_ratio"] == 0.5 and all(plain[k] is None for k in corpus.ATTENTION_COLUMNS)
    # the <eos> row (one row more than output tokens) is left out
    with_eos = corpus.sentence_statistics(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), n_src=2, n_out=2)
    assert with_eos["monotonicity"] == 1.0 and with_eos["dropped"] == 0


def test_correlation_pearson_and_spearman():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    c = corpus.correlation(x, [v ** 3 for v in x])
    assert c["spearman"] == pytest.approx(1.0) and c["n"] == 5
    assert c["pearson"] == pytest.approx(np.corrcoef(x, [v ** 3 for v in x])[0, 1])
    assert c["pearson"] < 1.0
    # ties get average ranks: x ranks 1.5 1.5 3 4, y ranks 1 2 3 4 -> Pearson of the ranks
    c = corpus.correlation([1, 1, 2, 3], [10, 20, 30, 40])
    assert c["spearman"] == pytest.approx(np.corrcoef([1.5, 1.5, 3, 4], [1, 2, 3, 4])[0, 1])
    # missing values are dropped pairwise; anti-correlation is negative
    c = corpus.correlation([1, None, 3, float("nan"), 5], [3, 0, 2, 9, 1])
    assert c["n"] == 3 and c["pearson"] == pytest.approx(-1.0) and c["spearman"] == pytest.approx(-1.0)
    assert corpus.correlation([1, 1, 1], [1, 2, 3]) == {"pearson": None, "spearman": None, "n": 3}
    assert corpus.correlation([1], [2])["pearson"] is None


def test_sorted_rows_and_frame():
    data = {"sentences": 3, "columns": {
        "source": ["a b c", "d e", "f"], "output": ["x", "y", "z"], "reference": ["x", "y", "z"],
        "bleu": [50.0, 10.0, 10.0], "length_ratio": [0.3333, 0.5, 1.0], "entropy": [0.1, 0.2, None],
        "monotonicity": [1.0, 0.5, None], "dropped": [2, 0, 1], "dropped_positions": [[0, 2], [], [0]],
        "repeated": [0, 1, 0], "repeated_positions": [[], [1], []]}}
    df = corpus.corpus_frame(data)
    assert df["dropped words"].tolist() == ["a · c", "", "f"] and df["repeated words"].tolist() == ["", "e", ""]
    assert corpus.sorted_rows(df, "worst BLEU")["sentence"].tolist() == [2, 3, 1]
    assert corpus.sorted_rows(df, "least monotone")["sentence"].tolist() == [2, 1, 3]      # NaN last
    assert corpus.sorted_rows(df, "most words possibly dropped")["sentence"].tolist() == [1, 3, 2]
    assert corpus.summary(df)["entropy"] == pytest.approx(0.15)
    tidy = corpus.long_frame({"m": df}, "entropy")
    assert tidy["value"].tolist() == [0.1, 0.2] and set(tidy["model"]) == {"m"}


# ------------------------------------------------------------------ the command and its file
def test_file_matches_an_independent_recomputation(lab):
    ckpt = lab["checkpoints"] / "translate-bahdanau"
    data = lab["files"]["translate-bahdanau"]
    assert data["format_version"] == corpus.FORMAT_VERSION and data["kind"] == corpus.KIND
    assert data["checkpoint"] == "translate-bahdanau" and data["split"] == "test2016" and data["attention"] is True
    assert data["decoding"] == {"beam": 2, "alpha": 1.0, "label": "beam 2"}
    assert data["weights_sha256"] == read_card(ckpt)["weights_sha256"]
    assert data["command"] == ("python -m seq2seq.corpus " + f"{ckpt} --data-dir {lab['data']} --split test2016 "
                               f"--out {ckpt / 'corpus-test2016.json'}")
    assert "tok:none" in data["sentence_bleu_signature"] and "eff:yes" in data["sentence_bleu_signature"]
    cols = data["columns"]
    assert data["sentences"] == len(GERMAN_TEST) and all(len(cols[k]) == len(GERMAN_TEST) for k in corpus.COLUMNS)
    expected = recompute(ckpt, beam=2)
    for i, e in enumerate(expected):
        assert cols["source"][i] == e["source"] and cols["output"][i] == e["output"]
        assert cols["reference"][i] == e["reference"]
        assert cols["bleu"][i] == pytest.approx(e["bleu"], abs=1e-4)
        assert cols["length_ratio"][i] == pytest.approx(e["length_ratio"], abs=1e-4)
        for k in ("entropy", "monotonicity"):
            assert (cols[k][i] is None) == (e[k] is None)
            if e[k] is not None:
                assert cols[k][i] == pytest.approx(e[k], abs=2e-4)
        assert cols["dropped_positions"][i] == e["dropped_positions"]
        assert cols["dropped"][i] == len(e["dropped_positions"])
        assert cols["repeated_positions"][i] == e["repeated_positions"]
        assert cols["repeated"][i] == len(e["repeated_positions"])
    # the corpus BLEU of the file's outputs, in the tutorial form
    tutorial = sacrebleu.corpus_bleu([e["output"] for e in expected], [[e["reference"] for e in expected]],
                                     tokenize="none", force=True).score
    assert data["corpus_bleu"] == round(tutorial, 2)


def test_model_without_attention_has_bleu_and_length_ratio_only(lab):
    data = lab["files"]["translate-lstm"]
    assert data["attention"] is False and data["decoding"]["label"] == "greedy"
    assert all(data["columns"][k] is None for k in corpus.ATTENTION_COLUMNS)
    expected = recompute(lab["checkpoints"] / "translate-lstm", beam=1)
    assert data["columns"]["output"] == [e["output"] for e in expected]
    assert data["columns"]["bleu"] == pytest.approx([e["bleu"] for e in expected], abs=1e-4)
    assert data["columns"]["length_ratio"] == pytest.approx([e["length_ratio"] for e in expected], abs=1e-4)
    df = corpus.corpus_frame(data)
    assert df["entropy"].isna().all() and df["dropped words"].eq("").all()


def test_card_records_the_file_and_the_same_command_remakes_it_exactly(lab, tmp_path):
    ckpt = tmp_path / "translate-bahdanau"
    shutil.copytree(lab["checkpoints"] / "translate-bahdanau", ckpt)
    before = (ckpt / "corpus-test2016.json").read_bytes()
    card = read_card(ckpt)
    entry = card["files"]["corpus-test2016.json"]
    assert entry == {"sha256": sha256_file(ckpt / "corpus-test2016.json"), "bytes": len(before)}
    assert set(card["files"]) == {"model.safetensors", "vocab.json", "corpus-test2016.json"}
    load_checkpoint(ckpt)                                # the card still loads and verifies
    make_corpus_file(ckpt, lab["data"])
    after = (ckpt / "corpus-test2016.json").read_bytes()
    # the same bytes, apart from the path in the command line (the copy lives elsewhere)
    assert after.replace(str(ckpt).encode(), b"CKPT") == before.replace(
        str(lab["checkpoints"] / "translate-bahdanau").encode(), b"CKPT")
    make_corpus_file(ckpt, lab["data"])
    assert (ckpt / "corpus-test2016.json").read_bytes() == after
    assert len(after) < corpus.MAX_BYTES
    assert not list(ckpt.glob(".*tmp*"))                 # no temporary files left behind


def test_out_elsewhere_leaves_the_card_alone(lab, tmp_path, capsys):
    ckpt = lab["checkpoints"] / "translate-lstm"
    card_before = (ckpt / CARD).read_bytes()
    out = tmp_path / "stats.json"
    assert run_main(corpus.main, [str(ckpt), "--data-dir", str(lab["data"]), "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text(encoding="utf-8"))
    assert printed["columns"]["output"] == lab["files"]["translate-lstm"]["columns"]["output"]
    assert (ckpt / CARD).read_bytes() == card_before


def test_missing_data_directory_is_one_line(lab, tmp_path, capsys):
    ckpt = lab["checkpoints"] / "translate-lstm"
    rc = run_main(corpus.main, [str(ckpt), "--data-dir", str(tmp_path / "nowhere"), "--split", "test2016",
                                "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith("error: Multi30k test2016 data not found") and "test_2016_flickr.de" in err
    assert not (tmp_path / "x.json").exists()


def test_a_reversal_checkpoint_is_refused_in_one_line(lab, tmp_path, capsys):
    _tiny(tmp_path / "reverse-gru", "gru", "reverse", 1, {})
    rc = run_main(corpus.main, [str(tmp_path / "reverse-gru"), "--data-dir", str(lab["data"])])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "translation checkpoints" in err


# ------------------------------------------------------------------ reading it back (the page)
def test_read_corpus_file_verifies_against_the_card(lab, tmp_path):
    data = corpus.read_corpus_file(lab["checkpoints"] / "translate-bahdanau")
    assert data == lab["files"]["translate-bahdanau"]
    with pytest.raises(corpus.CorpusFileMissing, match="python -m seq2seq.corpus .*translate-luong"):
        corpus.read_corpus_file(lab["checkpoints"] / "translate-luong")
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        corpus.read_corpus_file(lab["checkpoints"] / "translate-gru")   # tampered, same size

    ckpt = tmp_path / "translate-bahdanau"
    shutil.copytree(lab["checkpoints"] / "translate-bahdanau", ckpt)
    f = ckpt / "corpus-test2016.json"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="truncated"):
        corpus.read_corpus_file(ckpt)
    f.unlink()
    with pytest.raises(CheckpointError, match="missing, but the card records it"):
        corpus.read_corpus_file(ckpt)

    # a file the card does not record (e.g. made with --out elsewhere and copied in)
    plain = tmp_path / "translate-lstm"
    shutil.copytree(lab["checkpoints"] / "translate-lstm", plain)
    card = json.loads((plain / CARD).read_text())
    del card["files"]["corpus-test2016.json"]
    (plain / CARD).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="not recorded in the card"):
        corpus.read_corpus_file(plain)

    # recorded, but computed for other weights
    other = json.loads((lab["checkpoints"] / "translate-lstm" / "corpus-test2016.json").read_text())
    other["weights_sha256"] = "0" * 64
    (plain / "corpus-test2016.json").write_bytes(corpus.dumps_corpus(other))
    card["files"]["corpus-test2016.json"] = {"sha256": sha256_file(plain / "corpus-test2016.json"),
                                             "bytes": (plain / "corpus-test2016.json").stat().st_size}
    (plain / CARD).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="other weights"):
        corpus.read_corpus_file(plain)


def test_make_command_names_the_default_file():
    cmd = corpus.make_command("checkpoints/translate-gru")
    assert cmd == ("python -m seq2seq.corpus checkpoints/translate-gru --data-dir ../shared/data/multi30k "
                   "--split test2016 --out checkpoints/translate-gru/corpus-test2016.json")


def test_a_model_reading_pieces_lists_its_sources_as_words(tmp_path):
    from apptest_util import save_tiny_piece_reader

    save_tiny_piece_reader(tmp_path / "translate-bahdanau")
    ck = load_checkpoint(tmp_path / "translate-bahdanau")
    data = {"de": [["ein", "mann", "kletterwand", "."], ["zwei", "hunde"]], "en": [["a", "man", "."], ["two", "dogs"]]}
    stats = corpus.corpus_statistics(ck, data, "test2016", torch.device("cpu"), "python -m seq2seq.corpus x")
    cols = stats["columns"]
    # the text a person reads and the Translate page re-reads: words, not "kletter@@ wand"
    assert cols["source"] == ["ein mann kletterwand .", "zwei hunde"]
    assert ck.src_vocab.segment(data["de"][0]) == ["ein", "mann", "kletter@@", "wand", "."]
    # its attention statistics are per word: positions index the words of the source column
    for k in ("dropped_positions", "repeated_positions"):
        for positions, source in zip(cols[k], cols["source"]):
            assert all(0 <= j < len(source.split(" ")) for j in positions)
