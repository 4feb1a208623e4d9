"""The translation path end to end on a tiny synthetic Multi30k-shaped corpus: training,
validation BLEU, the card's metrics, and the evaluate command reproducing them."""
import gzip
import itertools
import json
import subprocess
import sys

import pytest

from conftest import ROOT

NOUNS = [("hund", "dog"), ("mann", "man"), ("frau", "woman"), ("junge", "boy"), ("katze", "cat")]
VERBS = [("läuft", "runs"), ("schläft", "sleeps"), ("lacht", "laughs"), ("springt", "jumps")]
PLACES = [("im park", "in the park"), ("auf der straße", "on the street"), ("", "")]


def write_corpus(d):
    pairs = [(f"Ein {n} {v} {p}.".replace(" .", "."), f"A {e} {w} {q}.".replace(" .", "."))
             for (n, e), (v, w), (p, q) in itertools.product(NOUNS, VERBS, PLACES)]
    splits = {"train": pairs * 10, "val": pairs[::5], "test_2016_flickr": pairs[1::6]}
    for stem, rows in splits.items():
        with gzip.open(d / f"{stem}.de.gz", "wt", encoding="utf-8") as f:
            f.write("\n".join(r[0] for r in rows) + "\n")
        (d / f"{stem}.en").write_text("\n".join(r[1] for r in rows) + "\n", encoding="utf-8")  # plain works too


def train_on_toy_corpus(tmp_path_factory, name: str, *options: str):
    """Train NAME with seq2seq.train on a fresh toy corpus: (corpus folder, checkpoint folder)."""
    d = tmp_path_factory.mktemp(name)
    write_corpus(d)
    out = d / name
    proc = subprocess.run(
        [sys.executable, "-m", "seq2seq.train", "--task", "translate", "--out", str(out), "--data-dir", str(d),
         "--cache", str(d / "cache.json.gz"), "--state-dir", str(d / "state"), "--lr", "5e-3", "--batch-size", "32", "--min-freq", "1",
         "--dropout", "0.0", "--device", "cpu", *options],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return d, out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_on_toy_corpus(tmp_path_factory, "translate-luong", "--arch", "luong",
                               "--emb", "32", "--hidden", "64", "--epochs", "6", "--eval-beam", "3",
                               "--tie-embeddings", "--half")


def test_card_metrics_and_history(trained):
    d, out = trained
    card = json.loads((out / "card.json").read_text())
    for split in ("val", "test2016"):
        m = card["metrics"][split]
        for key in ("bleu", "sacrebleu", "ppl", "decoding", "by_decoding"):
            assert key in m, (split, key)
        assert set(m["by_decoding"]) == {"beam1", "beam3"}
    assert card["metrics"]["test2016"]["bleu"] > 30  # a toy corpus it can learn
    assert all("val_bleu" in row for row in card["history"])
    assert card["tokenizers"] == {"src": "spacy:de", "tgt": "spacy:en"}
    assert card["weights_dtype"] == "float16"
    assert card["sample"]["output"]


def test_evaluate_reproduces_the_card(trained):
    d, out = trained
    card = json.loads((out / "card.json").read_text())["metrics"]["test2016"]
    proc = subprocess.run([sys.executable, "-m", "seq2seq.evaluate", str(out), "--data-dir", str(d),
                           "--split", "test2016", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["bleu"] == card["bleu"] and res["sacrebleu"] == card["sacrebleu"]
    assert res["ppl"] == pytest.approx(card["ppl"], abs=0.01)


def test_translate_cli_with_spacy_tokens(trained):
    d, out = trained
    proc = subprocess.run([sys.executable, "-m", "seq2seq.translate", str(out), "Ein Hund läuft im Park.", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["source_tokens"] == ["ein", "hund", "läuft", "im", "park", "."]
    assert res["text"][0].isupper()
    assert len(res["alignment"]) == len(res["output_tokens"])


@pytest.fixture(scope="module")
def trained_on_pieces(tmp_path_factory):
    return train_on_toy_corpus(tmp_path_factory, "translate-bahdanau-bpe", "--arch", "bahdanau", "--src-bpe", "25",
                               "--emb", "16", "--hidden", "32", "--epochs", "2")


def test_a_source_in_byte_pair_pieces_trains_evaluates_and_translates(trained_on_pieces, capsys):
    from seq2seq import evaluate, translate
    from seq2seq.subword import join_pieces

    d, out = trained_on_pieces
    card = json.loads((out / "card.json").read_text())
    assert card["train_config"]["src_bpe"] == 25 and "byte-pair pieces (25 merges" in card["provenance"]["data"]
    merges = json.loads((out / "vocab.json").read_text())["src_merges"]
    assert len(merges) == 25 and all(len(m.split(" ")) == 2 for m in merges)
    # the evaluate command reads the test set through the same pieces: the card's numbers come back
    assert evaluate.main([str(out), "--data-dir", str(d), "--split", "test2016", "--json"]) == 0
    res, want = json.loads(capsys.readouterr().out), card["metrics"]["test2016"]
    assert (res["bleu"], res["sacrebleu"]) == (want["bleu"], want["sacrebleu"])
    # a word never seen whole is read in pieces, shown with their "@@" marks
    assert translate.main([str(out), "Ein Hundkatze läuft im Park.", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert join_pieces(res["source_tokens"]) == ["ein", "hundkatze", "läuft", "im", "park", "."]
    assert res["source_tokens"][:2] == ["ein", "h@@"] and res["source_tokens"][-3:] == ["im", "park", "."]
    assert len(res["alignment"][0]) == len(res["source_tokens"])


def test_evaluate_chooses_the_decoding_on_val_and_writes_the_card_like_training(trained, tmp_path, capsys):
    import shutil

    from seq2seq import evaluate

    d, out = trained
    ck = tmp_path / "ck"
    shutil.copytree(out, ck)
    argv = [str(ck), "--data-dir", str(d), "--choose-decoding", "1,2:0.5,3,3:1:cov0.3", "--json"]
    assert evaluate.main(argv + ["--update-card"]) == 0
    printed = json.loads(capsys.readouterr().out)
    card = json.loads((ck / "card.json").read_text())["metrics"]
    for split in ("val", "test2016"):
        m = card[split]
        assert set(m["by_decoding"]) == {"beam1", "beam2-alpha0.5", "beam3", "beam3-cov0.3"} and m["chosen_on"] == "val bleu"
        assert m["bleu"] == printed[split]["bleu"]
    val = card["val"]["by_decoding"]
    best = max(val, key=lambda k: val[k]["bleu"])
    assert val[best]["bleu"] == card["val"]["bleu"]                       # chosen on val ...
    assert card["test2016"]["decoding"] == card["val"]["decoding"]        # ... and reported on test with it
    # the plain command with that decoding gives the card's test numbers back
    dec = card["test2016"]["decoding"]
    assert evaluate.main([str(ck), "--data-dir", str(d), "--split", "test2016", "--json", "--beam", str(dec["beam"]),
                          "--alpha", str(dec["alpha"] or 1.0), "--coverage", str(dec.get("coverage", 0.0))]) == 0
    res = json.loads(capsys.readouterr().out)
    assert (res["bleu"], res["loss"]) == (card["test2016"]["bleu"], card["test2016"]["loss"])   # the loss once a split
