"""The teacher-forcing sweep: its grid, its decays, a tiny end-to-end run, the results file."""
import json
import os

import pytest

from seq2seq.checkpoint import load_checkpoint
from seq2seq.errors import Seq2SeqError
from seq2seq.schedules import teacher_forcing_ratio as ratio
from seq2seq.sweep import (FULL, batches_per_epoch, decay_setting, load_results, main, plan, position_accuracy,
                           write_results)

REVERSE_LABELS = ["constant 0", "constant 0.25", "constant 0.5", "constant 0.75", "constant 1",
                  "linear decay", "exponential decay", "inverse-sigmoid decay"]


def test_reverse_grid_is_8_settings_x_2_archs_x_3_seeds(tmp_path):
    specs, shared = plan("reverse", dict(FULL["reverse"]), tmp_path / "reverse.json", "cpu", 0)
    assert len(specs) == 8 * 2 * 3 == len({s.name for s in specs})
    assert [s["label"] for s in shared["settings"]] == REVERSE_LABELS
    assert {(s.arch, s.label, s.seed) for s in specs} == {
        (a, label, seed) for a in ("gru", "bahdanau") for label in REVERSE_LABELS for seed in (1, 2, 3)}
    for s in specs:
        tf = s.train["teacher_forcing"]
        assert s.train["patience"] == 0 and s.train["seed"] == s.seed and s.model["arch"] == s.arch
        if s.label.startswith("constant"):
            assert tf["kind"] == "constant" and tf["ratio"] == float(s.label.split()[1])
        else:
            assert tf["kind"] == {"linear decay": "linear", "exponential decay": "exponential",
                                  "inverse-sigmoid decay": "inverse_sigmoid"}[s.label]
    # weights kept for the first seed of every setting only, under <results folder>/reverse/<run>
    kept = [s for s in specs if s.keep_dir]
    assert len(kept) == 16 and {s.seed for s in kept} == {1}
    assert all(s.keep_rel == f"reverse/{s.name}" and s.keep_dir.endswith(s.keep_rel) for s in kept)
    # the full reversal sweep: 10 epochs of 20000 sequences in batches of 128
    assert shared["total_batches"] == 10 * 157


def test_translate_grid_is_4_settings_one_seed_all_kept(tmp_path):
    specs, shared = plan("translate", dict(FULL["translate"]), tmp_path / "translate.json", "cuda", 0,
                         train_examples=29000)
    assert [s.label for s in specs] == ["constant 0", "constant 0.5", "constant 1", "inverse-sigmoid decay"]
    assert {s.arch for s in specs} == {"bahdanau"} and {s.seed for s in specs} == {1}
    assert all(s.keep_dir for s in specs)
    assert specs[0].train["task"] == "translate" and specs[0].model["hidden_dim"] == 512
    assert shared["total_batches"] == 10 * batches_per_epoch(29000, 128)


@pytest.mark.parametrize("total", [500, 1570, 2270, 20000])
@pytest.mark.parametrize("kind", ["linear", "exponential", "inverse_sigmoid"])
def test_decays_go_from_about_one_to_about_zero_over_the_planned_batches(kind, total):
    tf = decay_setting(kind, total).tf
    values = [ratio(tf, i) for i in range(0, total + 1, max(1, total // 50))]
    assert values[0] >= 0.95, values[0]
    assert ratio(tf, total) <= 0.0101
    assert all(a >= b for a, b in zip(values, values[1:]))          # never goes back up
    middle = ratio(tf, total // 2)
    assert {"linear": 0.5, "exponential": 0.1}.get(kind, middle) == pytest.approx(middle, abs=0.01)
    assert 0.05 < middle < 0.95                                       # a real decay, not a step


def test_position_accuracy():
    acc = position_accuracy([[5, 6, 7], [5, 9], []], [[5, 6, 7], [5, 6, 7], [5]])
    assert acc == {"1": 0.6667, "2": 0.5, "3": 0.5}     # rounded to 4 places


def test_tiny_sweep_end_to_end(tmp_path, capsys):
    out = tmp_path / "sweeps" / "reverse.json"
    args = ["reverse", "--out", str(out), "--jobs", "2", "--threads", "1", "--archs", "gru", "--seeds", "2",
            "--epochs", "2", "--train-size", "192", "--batch-size", "64", "--max-len", "5", "--emb", "8",
            "--hidden", "16", "--val-size", "32", "--eval-n", "10", "--settings", "tf0,tf1,inverse-sigmoid"]
    assert main(args) == 0
    res = load_results(out)
    assert res["complete"] and res["scale"] == "reduced" and "python -m seq2seq.sweep reverse" in res["note"]
    assert res["total_batches"] == 2 * 3
    assert [r["name"] for r in res["runs"]] == ["gru-tf0-s1", "gru-tf0-s2", "gru-tf1-s1", "gru-tf1-s2",
                                                "gru-inverse-sigmoid-s1", "gru-inverse-sigmoid-s2"]
    for run in res["runs"]:
        assert "error" not in run
        assert [h["epoch"] for h in run["history"]] == [1, 2]
        assert run["history"][-1]["steps"] == res["total_batches"]     # the planned batch count is exact
        for key in ("train_loss", "val_loss", "val_exact_match", "tf_ratio"):
            assert key in run["history"][0]
        assert sorted(map(int, run["accuracy_by_position"])) == [1, 2, 3, 4, 5]
        assert all(0 <= a <= 1 for a in run["accuracy_by_position"].values())
        assert 0 <= run["final"]["exact_match"] <= 1
        assert run["provenance"]["device"] == "cpu"
    by = {r["name"]: r for r in res["runs"]}
    assert all(h["tf_ratio"] == 0.0 for h in by["gru-tf0-s1"]["history"])
    assert all(h["tf_ratio"] == 1.0 for h in by["gru-tf1-s1"]["history"])
    decay = by["gru-inverse-sigmoid-s1"]["history"]
    assert decay[0]["tf_ratio_start"] > decay[-1]["tf_ratio_end"]
    # weights for the first seed only, loadable, float16, small
    for run in res["runs"]:
        if run["seed"] == 1:
            ck = load_checkpoint(out.parent / run["checkpoint"])
            assert ck.card["weights_dtype"] == "float16" and ck.card["name"] == run["name"]
            assert (out.parent / run["checkpoint"] / "model.safetensors").stat().st_size < 100_000
        else:
            assert run["checkpoint"] is None
    # --resume with the same configuration trains nothing
    assert main(args + ["--resume"]) == 0
    assert "0 to train" in capsys.readouterr().err
    assert [r["final"] for r in load_results(out)["runs"]] == [r["final"] for r in res["runs"]]


def test_results_are_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "reverse.json"
    write_results(path, {"format_version": 1, "runs": [{"arch": "gru", "setting": "constant 1", "seed": 1}]})
    before = path.read_text()
    with pytest.raises(TypeError):                       # cannot be serialized: nothing changes
        write_results(path, {"format_version": 1, "runs": [{"x": object()}]})
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):                          # the rename fails: the old file stays
        write_results(path, {"format_version": 1, "runs": []})
    assert path.read_text() == before and os.listdir(tmp_path) == ["reverse.json"]
    assert load_results(path)["runs"][0]["arch"] == "gru"


@pytest.mark.parametrize("text,fragment", [("{not json", "not a readable"), ('{"runs": 3}', "no list of runs"),
                                           ('{"format_version": 99, "runs": []}', "format_version")])
def test_bad_results_files_raise_clear_errors(tmp_path, text, fragment):
    path = tmp_path / "reverse.json"
    path.write_text(text)
    with pytest.raises(Seq2SeqError, match=fragment):
        load_results(path)


def test_unknown_arch_is_refused(tmp_path, capsys):
    assert main(["reverse", "--archs", "transformer", "--out", str(tmp_path / "r.json")]) == 2
    assert "unknown archs" in capsys.readouterr().err
    assert json.dumps(os.listdir(tmp_path)) == "[]"
