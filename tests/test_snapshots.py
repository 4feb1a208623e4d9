"""Training's --snapshots, --resume extending a run, int8 weights, and pruning a series."""
import json
import subprocess
import sys

import pytest
import torch

from seq2seq.checkpoint import (INT4_GROUP, dequantize_int4, dequantize_int8, load_checkpoint, quantize_int4,
                                quantize_int8)
from seq2seq.errors import CheckpointError
from seq2seq.snapshots import list_snapshots, load_snapshot, prune_snapshots, series_bytes

from conftest import ROOT

TINY = ["--task", "reverse", "--arch", "bahdanau", "--train-size", "600", "--val-size", "50", "--max-len", "6",
        "--hidden", "16", "--emb", "8", "--attn-dim", "8", "--device", "cpu", "--snapshots", "--eval-n", "20"]


def run_train(out, state, *extra):
    proc = subprocess.run([sys.executable, "-m", "seq2seq.train", "--out", str(out), "--state-dir", str(state),
                           *TINY, *extra], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((out / "card.json").read_text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("snap")
    first = run_train(d / "ck", d / "st", "--epochs", "2")
    return d, first


def test_snapshots_are_taken_at_the_documented_points(trained):
    d, card = trained
    snaps = list_snapshots(d / "ck")
    # 600 sequences in batches of 128: 5 batches, the first snapshot after round(5 / 4) = 1
    assert [s["label"].split(" ")[0] for s in snaps] == ["1/5", "after", "after", "final"]
    assert [s["epoch"] for s in snaps[1:3]] == [1.0, 2.0]
    assert snaps[0]["epoch"] == pytest.approx(1 / 5, abs=1e-3) and snaps[0]["step"] == 1
    history = {h["epoch"]: h for h in card["history"]}
    assert snaps[1]["value"] == history[1]["val_exact_match"] and snaps[1]["val_loss"] == history[1]["val_loss"]
    final = load_snapshot(d / "ck", 3)
    shipped = load_checkpoint(d / "ck")
    assert final.card.weights_dtype == "int4"
    # the final snapshot is the shipped weights, int4-rounded: within half a step (its group's scale / 2)
    for name, t in shipped.model.state_dict().items():
        q = final.model.state_dict()[name]
        if t.dim() > 1:
            rows = t.reshape(t.size(0), -1)
            rows = torch.nn.functional.pad(rows, (0, -rows.size(1) % INT4_GROUP)).reshape(t.size(0), -1, INT4_GROUP)
            step = (rows.abs().amax(-1, keepdim=True) / 7).expand_as(rows).reshape(t.size(0), -1)
            step = step[:, :t[0].numel()].reshape(t.shape)
        else:
            step = 2e-3 * t.abs().max()
        assert ((q - t).abs() <= step / 2 + 1e-3 * t.abs() + 1e-6).all(), name


def test_resume_extends_a_finished_run_and_keeps_its_history(trained, tmp_path):
    d, first = trained
    import shutil
    shutil.copytree(d / "ck", tmp_path / "ck")
    shutil.copytree(d / "st", tmp_path / "st")
    same = run_train(tmp_path / "ck", tmp_path / "st", "--resume")
    assert len(same["history"]) == 2                        # same settings: nothing more to do
    longer = run_train(tmp_path / "ck", tmp_path / "st", "--resume", "--epochs", "3")
    assert [h["epoch"] for h in longer["history"]] == [1, 2, 3]
    assert longer["history"][:2] == first["history"][:2]
    assert longer["provenance"]["epochs_run"] == 3 and longer["stopped"] == "completed all epochs"
    # --eval-n: the card's exact match by length 1-60 on 20 sequences a length, kept by the resumed run
    rev = longer["metrics"]["reversal"]
    assert rev["n_per_length"] == 20 and longer["train_config"]["reverse_eval_n"] == 20
    assert sorted(map(int, rev["exact_match_by_length"])) == list(range(1, 61))
    labels = [s["label"] for s in list_snapshots(tmp_path / "ck")]
    assert sum(lab.startswith("final") for lab in labels) == 1 and labels[-1].startswith("final")


def test_prune_keeps_the_ends_and_renumbers(trained, tmp_path):
    import shutil
    d, _ = trained
    shutil.copytree(d / "ck", tmp_path / "ck")
    before = list_snapshots(tmp_path / "ck")
    each = series_bytes(tmp_path / "ck") / len(before)
    kept = prune_snapshots(tmp_path / "ck", int(each * 2.5))
    assert [s["index"] for s in kept] == [0, 1]
    assert kept[0]["label"] == before[0]["label"] and kept[-1]["label"] == before[-1]["label"]
    load_snapshot(tmp_path / "ck", 1)                       # still verifies after renumbering
    with pytest.raises(CheckpointError, match="--snapshots"):
        load_snapshot(tmp_path / "ck", 7)


def test_int8_round_trip_is_within_half_a_step():
    torch.manual_seed(0)
    w = {"a": torch.randn(30, 12), "b": torch.randn(7)}
    back = dequantize_int8(quantize_int8(w))
    step = w["a"].abs().amax(1, keepdim=True) / 127
    assert ((back["a"] - w["a"]).abs() <= step / 2 + 1e-7).all()
    assert torch.allclose(back["b"], w["b"], atol=1e-3)


@pytest.mark.parametrize("shape", [(5, 16), (7, 33), (3, 2, 9), (1, 1)])
def test_int4_round_trip_is_within_half_a_step_and_packs_two_values_a_byte(shape):
    torch.manual_seed(0)
    w = {"m": torch.randn(*shape) * 3, "v": torch.randn(4), "ids": torch.arange(3)}
    w["m"].view(-1)[0] = 0.0
    q = quantize_int4(w)
    cols = w["m"][0].numel()
    padded = cols + (-cols % INT4_GROUP)
    assert q["m"].dtype == torch.uint8 and tuple(q["m"].shape) == (shape[0], padded // 2)
    assert tuple(q["m.int4_scale"].shape) == (shape[0], padded // INT4_GROUP)
    back = dequantize_int4(q, {"m": shape})
    assert back["m"].shape == w["m"].shape and back["m"].dtype == torch.float32
    scale = q["m.int4_scale"].float().repeat_interleave(INT4_GROUP, 1)[:, :cols].reshape(shape)
    assert ((back["m"] - w["m"]).abs() <= scale / 2 + 1e-6).all()
    assert back["m"].view(-1)[0] == 0.0                        # zero stays exactly zero
    assert torch.allclose(back["v"], w["v"], atol=2e-3) and torch.equal(back["ids"], w["ids"])


def test_an_all_zero_matrix_survives_int4():
    back = dequantize_int4(quantize_int4({"m": torch.zeros(3, 20)}), {"m": (3, 20)})
    assert torch.equal(back["m"], torch.zeros(3, 20))


def test_snapshots_share_the_checkpoints_vocabulary_and_verify_it(trained, tmp_path):
    import shutil
    d, _ = trained
    snaps = list_snapshots(d / "ck")
    assert snaps and not any((d / "ck" / "snapshots" / f"{s['index']:02d}" / "vocab.json").exists() for s in snaps)
    card = json.loads((d / "ck" / "snapshots" / "00" / "card.json").read_text())
    assert card["files"]["vocab.json"]["in"] == "../.."
    # the shared file is verified against the snapshot's own record of it
    shutil.copytree(d / "ck", tmp_path / "ck")
    vocab = json.loads((tmp_path / "ck" / "vocab.json").read_text())
    vocab["tgt"][5], vocab["tgt"][6] = vocab["tgt"][6], vocab["tgt"][5]
    (tmp_path / "ck" / "vocab.json").write_text(json.dumps(vocab, indent=1) + "\n")
    with pytest.raises(CheckpointError, match="vocab.json"):
        load_snapshot(tmp_path / "ck", 0)
    # only parent folders may be named
    card["files"]["vocab.json"]["in"] = "../../../elsewhere"
    (tmp_path / "ck" / "snapshots" / "00" / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="parent folder"):
        load_snapshot(tmp_path / "ck", 0)


def test_an_older_series_gives_up_its_own_vocabulary_copies(trained, tmp_path):
    import shutil
    from seq2seq.snapshots import share_vocabulary
    d, _ = trained
    shutil.copytree(d / "ck", tmp_path / "ck")
    snap = tmp_path / "ck" / "snapshots" / "01"
    # as series were written before: the snapshot holds its own vocab.json
    shutil.copy(tmp_path / "ck" / "vocab.json", snap / "vocab.json")
    card = json.loads((snap / "card.json").read_text())
    del card["files"]["vocab.json"]["in"]
    (snap / "card.json").write_text(json.dumps(card))
    before = load_snapshot(tmp_path / "ck", 1).model.state_dict()
    assert share_vocabulary(tmp_path / "ck") == 1
    assert not (snap / "vocab.json").exists()
    after = load_snapshot(tmp_path / "ck", 1).model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert share_vocabulary(tmp_path / "ck") == 0


def test_snapshots_after_the_final_ones_step_are_dropped(trained, tmp_path):
    # training that goes on past its best epoch: the final snapshot (the best weights) has an
    # earlier step than the last periodic one, which then goes, so the series ends with the final
    import shutil

    from seq2seq.card import Card
    d, _ = trained
    shutil.copytree(d / "ck", tmp_path / "ck")
    before = list_snapshots(tmp_path / "ck")
    late = Card.load(before[2]["path"])
    late.snapshot = dict(late.snapshot, step=before[-1]["step"] + 5)
    late.save(before[2]["path"])
    kept = prune_snapshots(tmp_path / "ck", max_bytes=None)
    assert [s["label"] for s in kept] == [before[0]["label"], before[1]["label"], before[3]["label"]]
    assert [s["index"] for s in kept] == [0, 1, 2] and [s["step"] for s in kept] == sorted(s["step"] for s in kept)
    assert load_snapshot(tmp_path / "ck", 2).card.snapshot["label"].startswith("final")
    assert prune_snapshots(tmp_path / "ck", max_bytes=None) == kept          # nothing more to drop
