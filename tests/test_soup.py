"""Continuations (`train --init-from`) and soups (`seq2seq.soup`) on the toy corpus: a
continuation starts from its parent's exact weights and says so in its card; a soup is
the average of its ingredients' weights, measured like a trained model, and refuses
models without a common start."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from test_translate_task import train_on_toy_corpus

SIZES = ("--arch", "bahdanau", "--emb", "16", "--hidden", "32", "--attn-dim", "16", "--half")


def run(*args, ok=True):
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert (proc.returncode == 0) == ok, proc.stderr[-3000:]
    return proc


def train(d, out, *options):
    run("-m", "seq2seq.train", "--task", "translate", "--out", str(out), "--data-dir", str(d),
        "--cache", str(d / "cache.json.gz"), "--state-dir", str(out) + "-state", "--batch-size", "32",
        "--min-freq", "1", "--dropout", "0.0", "--device", "cpu", *options)
    return json.loads((out / "card.json").read_text())


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A parent, a continuation that did not move (lr 0), one that did, and an unrelated model."""
    d, parent = train_on_toy_corpus(tmp_path_factory, "translate-bahdanau", *SIZES, "--epochs", "2", "--snapshots")
    still = train(d, d / "still", "--arch", "bahdanau", "--init-from", str(parent), "--lr", "0", "--epochs", "1",
                  "--half", "--seed", "7")
    moved = train(d, d / "moved", "--arch", "bahdanau", "--init-from", str(parent), "--lr", "3e-3", "--epochs", "2",
                  "--half", "--seed", "8", "--ema", "0.9")
    other = train(d, d / "other", *SIZES, "--epochs", "1", "--seed", "9")
    return d, parent, still, moved, other


def test_a_continuation_starts_from_its_parents_weights_and_records_it(family):
    d, parent, still, moved, _ = family
    parent_card = json.loads((parent / "card.json").read_text())
    # lr 0: the continuation is its parent, bit for bit (the same float16 file)
    assert still["weights_sha256"] == parent_card["weights_sha256"]
    assert still["config"] == parent_card["config"]           # the sizes came from the checkpoint
    for card in (still, moved):
        start = card["provenance"]["init_from"]
        assert start["name"] == "translate-bahdanau" and start["weights_sha256"] == parent_card["weights_sha256"]
        assert start["epochs_run"] == 2 and start["best_epoch"] in (1, 2)
        assert card["provenance"]["wall_seconds_total"] == pytest.approx(
            card["provenance"]["wall_seconds"] + parent_card["provenance"]["wall_seconds"], abs=0.11)
        assert card["train_config"]["init_from"] == str(parent)
    assert moved["weights_sha256"] != parent_card["weights_sha256"]
    # it went on from the parent's loss, not from a random model's
    assert moved["history"][0]["val_loss"] < parent_card["history"][0]["val_loss"]


def test_a_continuation_refuses_other_sizes(family):
    d, parent, *_ = family
    proc = run("-m", "seq2seq.train", "--task", "translate", "--arch", "bahdanau", "--out", str(d / "x"),
               "--data-dir", str(d), "--cache", str(d / "cache.json.gz"), "--min-freq", "1", "--hidden", "48",
               "--init-from", str(parent), "--epochs", "1", ok=False)
    assert "hidden_dim 48" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("-m", "seq2seq.train", "--task", "translate", "--arch", "luong", "--out", str(d / "x"),
               "--data-dir", str(d), "--cache", str(d / "cache.json.gz"), "--min-freq", "1",
               "--init-from", str(parent), "--epochs", "1", ok=False)
    assert "arch luong" in proc.stderr
    proc = run("-m", "seq2seq.train", "--task", "translate", "--arch", "bahdanau", "--out", str(d / "x"),
               "--data-dir", str(d), "--cache", str(d / "cache.json.gz"), "--min-freq", "1", "--src-bpe", "20",
               "--init-from", str(parent), "--epochs", "1", ok=False)
    assert "src_vocab_size" in proc.stderr and "Traceback" not in proc.stderr


def test_a_soup_is_the_average_of_its_ingredients(family):
    from seq2seq.checkpoint import load_checkpoint

    d, parent, _, moved, _ = family
    out = d / "soup"
    proc = run("-m", "seq2seq.soup", str(out), str(parent), str(d / "moved"), "--data-dir", str(d),
               "--cache", str(d / "cache.json.gz"), "--decodings", "1,3", "--name", "translate-bahdanau")
    assert "test 2016 BLEU" in proc.stdout
    a, b, soup = (load_checkpoint(p).model.state_dict() for p in (parent, d / "moved", out))
    for k in soup:
        assert torch.equal(soup[k], ((a[k] + b[k]) / 2).half().float()), k
    card = json.loads((out / "card.json").read_text())
    parent_card = json.loads((parent / "card.json").read_text())
    assert card["name"] == "translate-bahdanau" and card["weights_dtype"] == "float16"
    assert [i["name"] for i in card["soup"]["ingredients"]] == ["translate-bahdanau", "moved"]
    assert card["history"] == parent_card["history"]
    # the parent's run counted once, though the continuation's record names it too
    assert card["provenance"]["wall_seconds_total"] == pytest.approx(
        parent_card["provenance"]["wall_seconds"] + moved["provenance"]["wall_seconds"], abs=0.11)
    m = card["metrics"]
    assert set(m["val"]["by_decoding"]) == {"beam1", "beam3"} and m["val"]["chosen_on"] == "val bleu"
    # the README's table says what the weights cost: both runs, and that they were averaged
    from seq2seq.card import Card
    from seq2seq.report import translation_table
    row = translation_table([{"card": Card.load(out), "bytes": 1, "dir": out}]).splitlines()[2]
    assert "min (2 epochs) + " in row and "min continued (" in row and "weights averaged" in row
    assert f"| {card['metrics']['test2016']['bleu']:.2f} |" in row        # two decimals, as the card records
    # the card's numbers and sample are these weights': evaluate reproduces them
    ev = run("-m", "seq2seq.evaluate", str(out), "--data-dir", str(d), "--cache", str(d / "cache.json.gz"),
             "--json")
    assert json.loads(ev.stdout)["bleu"] == m["test2016"]["bleu"]
    from seq2seq.translate import Translator
    ck = load_checkpoint(out)
    assert Translator(ck).translate(card["sample"]["input"], beam=1).text == card["sample"]["output"]


def test_a_soup_refuses_models_without_a_common_start(family):
    d, parent, *_ = family
    proc = run("-m", "seq2seq.soup", str(d / "bad"), str(parent), str(d / "other"), "--data-dir", str(d),
               "--cache", str(d / "cache.json.gz"), ok=False)
    assert "share no start" in proc.stderr and "Traceback" not in proc.stderr
    assert not (d / "bad").exists()


def test_the_snapshot_series_ends_with_the_soups_weights(family):
    """A soup keeps its first run's series; its final point becomes the shipped weights."""
    import shutil

    from seq2seq.checkpoint import load_checkpoint
    from seq2seq.snapshots import list_snapshots, load_snapshot

    d, parent, *_ = family
    out = d / "soup-series"
    run("-m", "seq2seq.soup", str(out), str(parent), str(d / "moved"), "--data-dir", str(d),
        "--cache", str(d / "cache.json.gz"), "--decodings", "1", "--series-from", str(parent))
    before, after = list_snapshots(parent), list_snapshots(out)
    assert len(after) == len(before) and [s["label"] for s in after[:-1]] == [s["label"] for s in before[:-1]]
    final = after[-1]
    card, moved = (json.loads((p / "card.json").read_text()) for p in (out, d / "moved"))
    parent_best = max(json.loads((parent / "card.json").read_text())["history"],
                      key=lambda h: (h["val_bleu"], -h["val_loss"]))
    moved_best = max(moved["history"], key=lambda h: (h["val_bleu"], -h["val_loss"]))
    # placed where the continuation's best epoch is, counting its parent's epochs before it
    assert final["step"] == parent_best["steps"] + moved_best["steps"]
    assert final["epoch"] == parent_best["epoch"] + moved_best["epoch"]
    assert final["label"].startswith("final (the average of 2 runs")
    assert final["value"] == card["metrics"]["val"]["by_decoding"]["beam1"]["bleu"]
    snap, soup, old = (m.state_dict() for m in (load_snapshot(out, final["index"]).model,
                                                load_checkpoint(out).model, load_checkpoint(parent).model))
    to_soup = sum(float((snap[k] - soup[k]).norm()) for k in soup)
    to_parent = sum(float((snap[k] - old[k]).norm()) for k in soup)
    assert to_soup < to_parent
    # the command that does the same by hand, for a series copied some other way
    shutil.rmtree(out / "snapshots")
    shutil.copytree(parent / "snapshots", out / "snapshots")
    run("-m", "seq2seq.snapshots", str(out), "--final", "final (continued and averaged)",
        "--step", str(before[-1]["step"] + 10), "--epoch", "4")
    assert list_snapshots(out)[-1]["label"] == "final (continued and averaged)"
    # a final that would not come after the point before it is refused
    bad = run("-m", "seq2seq.snapshots", str(out), "--final", "final", "--step", "0", "--epoch", "0", ok=False)
    assert "not after" in bad.stderr and "Traceback" not in bad.stderr


def test_a_continuation_continues_its_parents_series(family):
    """snapshots --continue-series: the parent's points, then the continuation's weights after them."""
    import shutil

    from seq2seq.snapshots import list_snapshots

    d, parent, *_ = family
    cont = d / "moved-series"
    shutil.copytree(d / "moved", cont)
    run("-m", "seq2seq.snapshots", str(cont), "--continue-series", str(parent))
    before, after = list_snapshots(parent), list_snapshots(cont)
    moved = json.loads((cont / "card.json").read_text())
    parent_best = max(json.loads((parent / "card.json").read_text())["history"],
                      key=lambda h: (h["val_bleu"], -h["val_loss"]))
    own_best = max(moved["history"], key=lambda h: (h["val_bleu"], -h["val_loss"]))
    assert [s["label"] for s in after[:-1]] == [s["label"] for s in before[:-1]]
    assert after[-1]["step"] == parent_best["steps"] + own_best["steps"]
    assert after[-1]["label"] == (f"final (continued from epoch {parent_best['epoch']}: best epoch "
                                  f"{own_best['epoch']} of the continuation)")
    # only from the checkpoint it continued
    bad = run("-m", "seq2seq.snapshots", str(cont), "--continue-series", str(d / "other"), ok=False)
    assert "did not continue" in bad.stderr


def test_a_continuation_of_a_continuation_counts_every_run_before_it(family):
    """A second continuation (the shipped translate-luong's case) stands after the first run's
    best epoch and the first continuation's: the series' final point of its parent, then its own."""
    import shutil

    from seq2seq.snapshots import list_snapshots

    d, parent, *_ = family
    first = d / "chain1"
    shutil.copytree(d / "moved", first)
    run("-m", "seq2seq.snapshots", str(first), "--continue-series", str(parent))
    first_final = list_snapshots(first)[-1]
    second = d / "chain2"
    card = train(d, second, "--arch", "bahdanau", "--init-from", str(first), "--lr", "3e-3", "--epochs", "1",
                 "--half", "--seed", "10")
    own = max(card["history"], key=lambda h: (h["val_bleu"], -h["val_loss"]))
    assert first_final["step"] > own["steps"] > 0
    run("-m", "seq2seq.snapshots", str(second), "--continue-series", str(first))
    final = list_snapshots(second)[-1]
    assert (final["step"], final["epoch"]) == (first_final["step"] + own["steps"], first_final["epoch"] + own["epoch"])
    assert final["label"].startswith(f"final (continued from epoch {first_final['epoch']:g}")
    # the soup of both, its series from the first: placed where the second stands
    out = d / "chain-soup"
    run("-m", "seq2seq.soup", str(out), str(first), str(second), "--data-dir", str(d),
        "--cache", str(d / "cache.json.gz"), "--decodings", "1", "--series-from", str(first))
    soup_final = list_snapshots(out)[-1]
    assert (soup_final["step"], soup_final["epoch"]) == (final["step"], final["epoch"])
    # its training, as the README and the Home page count it: the first run, then both continuations, each once
    from seq2seq.checkpoint import read_card
    from seq2seq.report import training_runs

    cards = [read_card(p) for p in (parent, first, second)]
    runs = training_runs(read_card(out))
    assert [r["weights_sha256"] for r in runs] == [c.weights_sha256 for c in cards]
    assert [r["continued"] for r in runs] == [False, True, True]
    assert read_card(out).provenance["wall_seconds_total"] == pytest.approx(
        sum(c.provenance["wall_seconds"] for c in cards), abs=0.1)
    assert read_card(out).provenance["epochs_run_total"] == sum(c.provenance["epochs_run"] for c in cards)
