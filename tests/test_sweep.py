"""The teacher-forcing sweep: its grid, its decays, a tiny end-to-end run, the results file."""
import json
import os
from pathlib import Path

import pytest

from seq2seq.checkpoint import load_checkpoint
from seq2seq.errors import Seq2SeqError
from seq2seq.schedules import teacher_forcing_ratio as ratio
from seq2seq.sweep import (FULL, batches_per_epoch, best_scheduled, check_schema, decay_setting, load_results, main, plan,
                           position_accuracy, write_results)

REVERSE_LABELS = ["constant 0", "constant 0.25", "constant 0.5", "constant 0.75", "constant 1",
                  "linear decay", "exponential decay", "inverse-sigmoid decay", "tutorials' rule 0.5"]
TRANSLATE_LABELS = ["constant 0", "constant 0.5", "constant 0.75", "constant 1", "linear decay",
                    "inverse-sigmoid decay", "tutorials' rule 0.5"]


def test_reverse_grid_is_9_settings_x_2_archs_x_3_seeds_at_the_shipped_sizes(tmp_path):
    specs, shared = plan("reverse", dict(FULL["reverse"]), tmp_path / "reverse.json", "cpu", 0)
    assert len(specs) == 9 * 2 * 3 == len({s.name for s in specs})
    assert [s["label"] for s in shared["settings"]] == REVERSE_LABELS
    assert {(s.arch, s.label, s.seed) for s in specs} == {
        (a, label, seed) for a in ("gru", "bahdanau") for label in REVERSE_LABELS for seed in (1, 2, 3)}
    for s in specs:
        tf = s.train["teacher_forcing"]
        assert s.train["patience"] == 0 and s.train["seed"] == s.seed and s.model["arch"] == s.arch
        assert s.train["epochs"] == 10 and s.train["reverse_min_len"] == 1 and s.train["reverse_max_len"] == 40
        # the shipped reversal models' sizes: 2-layer gru, 1-layer bahdanau
        assert (s.model["emb_dim"], s.model["hidden_dim"]) == (32, 128)
        assert s.model["n_layers"] == {"gru": 2, "bahdanau": 1}[s.arch]
        assert tf["coin"] == ("step" if s.label == "tutorials' rule 0.5" else "token")
        if s.label.startswith("constant") or s.label.startswith("tutorials"):
            assert tf["kind"] == "constant" and tf["ratio"] == float(s.label.split()[-1])
        else:
            assert tf["kind"] == {"linear decay": "linear", "exponential decay": "exponential",
                                  "inverse-sigmoid decay": "inverse_sigmoid"}[s.label]
    # weights kept for the first seed of every setting only, under <results folder>/reverse/<run>
    kept = [s for s in specs if s.keep_dir]
    assert len(kept) == 18 and {s.seed for s in kept} == {1}
    assert all(s.keep_rel == f"reverse/{s.name}" and s.keep_dir.endswith(s.keep_rel) for s in kept)
    # the full reversal sweep: 10 epochs of 40000 sequences in batches of 128
    assert shared["total_batches"] == 10 * 313
    assert shared["layers"] == {"gru": 2, "bahdanau": 1}
    by = {x["label"]: x for x in shared["settings"]}
    assert by["tutorials' rule 0.5"]["tutorials_rule"] and by["tutorials' rule 0.5"]["scheduled"]
    assert not by["constant 1"]["scheduled"] and not by["constant 0"]["scheduled"] and by["constant 0.5"]["scheduled"]
    assert all(by[d]["floor"] == 0.0 for d in ("linear decay", "exponential decay", "inverse-sigmoid decay"))
    assert "one coin per step" in by["tutorials' rule 0.5"]["description"]


def test_translate_grid_is_7_settings_one_seed_all_kept_at_the_shipped_size(tmp_path):
    specs, shared = plan("translate", dict(FULL["translate"]), tmp_path / "translate.json", "cuda", 0,
                         train_examples=29000)
    assert [s.label for s in specs] == TRANSLATE_LABELS
    assert {s.arch for s in specs} == {"bahdanau"} and {s.seed for s in specs} == {1}
    assert all(s.keep_dir for s in specs)
    m, t = specs[0].model, specs[0].train
    assert t["task"] == "translate" and (m["emb_dim"], m["hidden_dim"], m["attn_dim"]) == (128, 256, 128)
    assert m["tie_embeddings"] and m["dropout"] == 0.3 and t["label_smoothing"] == 0.1
    assert shared["total_batches"] == 20 * batches_per_epoch(29000, 128)
    # the second pass: two more seeds for constant 1 and the best scheduled policy
    more, _ = plan("translate", dict(FULL["translate"]), tmp_path / "translate.json", "cpu", 0,
                   train_examples=29000, extra={"constant 1": [2, 3], "linear decay": [2, 3]})
    assert [(s.label, s.seed) for s in more[len(specs):]] == [("constant 1", 2), ("constant 1", 3),
                                                               ("linear decay", 2), ("linear decay", 3)]
    assert not t["cpu_bf16"]


def test_cpu_bf16_reaches_every_run_and_keeps_the_sweep_full():
    from seq2seq.sweep import _is_full, _options, build_parser
    opts = _options("translate", build_parser().parse_args(["translate", "--cpu-bf16"]))
    assert opts["cpu_bf16"] is True and _is_full("translate", opts)
    specs, shared = plan("translate", opts, Path("/tmp/t.json"), "cpu", 0, train_examples=29000)
    assert all(s.train["cpu_bf16"] for s in specs) and shared["train"]["cpu_bf16"] is True


def test_best_scheduled_is_the_best_mixed_policy_by_free_running_validation():
    settings = [{"label": "constant 1", "scheduled": False}, {"label": "constant 0", "scheduled": False},
                {"label": "constant 0.5", "scheduled": True}, {"label": "linear decay", "scheduled": True},
                {"label": "tutorials' rule 0.5", "scheduled": True}]
    runs = [{"setting": "constant 1", "seed": 1, "final": {"bleu_val": 40.0}},       # not scheduled
            {"setting": "constant 0", "seed": 1, "final": {"bleu_val": 45.0}},       # not scheduled
            {"setting": "constant 0.5", "seed": 1, "final": {"bleu_val": 30.0}},
            {"setting": "linear decay", "seed": 1, "final": {"bleu_val": 36.0}},
            {"setting": "tutorials' rule 0.5", "seed": 1, "final": {"bleu_val": 37.0}, "error": "x"}]
    assert best_scheduled(runs, settings, "translate") == "linear decay"
    assert best_scheduled([], settings, "translate") is None
    rev = [{"setting": "constant 0.5", "seed": 1, "final": {"val_exact_match": 0.9}},
           {"setting": "constant 0.5", "seed": 2, "final": {"val_exact_match": 0.5}},
           {"setting": "linear decay", "seed": 1, "final": {"val_exact_match": 0.8}}]
    assert best_scheduled(rev, settings, "reverse") == "linear decay"   # the mean, not the best seed


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
            "--hidden", "16", "--val-size", "32", "--eval-n", "10", "--extra-seeds", "1",
            "--settings", "tf0,tf1,inverse-sigmoid,tutorial0.5"]
    assert main(args) == 0
    res = load_results(out)
    assert res["complete"] and res["scale"] == "reduced" and "python -m seq2seq.sweep reverse" in res["note"]
    assert res["total_batches"] == 2 * 3
    # the second pass adds seed 3 for constant 1 and for the better of the two scheduled policies
    first = {r["setting"]: [] for r in res["runs"]}
    for r in res["runs"]:
        if r["seed"] <= 2:
            first[r["setting"]].append(r["final"]["val_exact_match"])
    best = max(("inverse-sigmoid decay", "tutorials' rule 0.5"), key=lambda k: (sum(first[k]) / 2,
               k == "inverse-sigmoid decay"))
    assert res["extra_seeds"]["settings"] == ["constant 1", best] and res["extra_seeds"]["seeds"] == [3]
    slug = {"inverse-sigmoid decay": "inverse-sigmoid", "tutorials' rule 0.5": "tutorial0.5"}[best]
    assert [r["name"] for r in res["runs"]] == ["gru-tf0-s1", "gru-tf0-s2", "gru-tf1-s1", "gru-tf1-s2",
                                                "gru-inverse-sigmoid-s1", "gru-inverse-sigmoid-s2",
                                                "gru-tutorial0.5-s1", "gru-tutorial0.5-s2",
                                                "gru-tf1-s3", f"gru-{slug}-s3"]
    tutorial = next(s for s in res["settings"] if s["slug"] == "tutorial0.5")
    assert tutorial["tutorials_rule"] and tutorial["teacher_forcing"]["coin"] == "step"
    for run in res["runs"]:
        assert "error" not in run
        assert [h["epoch"] for h in run["history"]] == [1, 2]
        assert run["history"][-1]["steps"] == res["total_batches"]     # the planned batch count is exact
        for key in ("train_loss", "val_loss", "val_exact_match", "tf_ratio"):
            assert key in run["history"][0]
        for key in ("accuracy_by_position", "accuracy_by_position_teacher_forced"):
            assert sorted(map(int, run[key])) == [1, 2, 3, 4, 5]
            assert all(0 <= a <= 1 for a in run[key].values())
        assert sorted(map(int, run["exact_match_by_length"])) == [1, 2, 3, 4, 5]
        assert 0 <= run["final"]["exact_match"] <= 1
        assert run["provenance"]["device"] == "cpu"
        # runs of one sweep come from machines 3-7x apart: each says which CPU trained it
        assert run["provenance"]["cpu_model"] and run["provenance"]["cpu_isa"]
        assert isinstance(run["provenance"]["cpu_native_bf16"], bool)
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
    # --resume with the same configuration trains nothing, also when the file predates a
    # training option that is at its default (written before --src-bpe existed)
    older = load_results(out)
    assert older["train"].pop("src_bpe") == 0
    out.write_text(json.dumps(older))
    assert main(args + ["--resume"]) == 0
    assert "0 to train" in capsys.readouterr().err
    resumed = load_results(out)
    assert [r["final"] for r in resumed["runs"]] == [r["final"] for r in res["runs"]]
    assert resumed["extra_seeds"] == res["extra_seeds"]      # the second pass chose from the kept runs
    # shipping with the replayed runs' weights only: constant 1 and the best scheduled policy, seed 1
    dest = tmp_path / "shipped" / "reverse.json"
    assert main(["reverse", "--out", str(dest), "--ship-from", str(out), "--ship-weights", "replay"]) == 0
    shipped = load_results(dest)
    assert check_schema(shipped) == [] and shipped["weights_shipped"] == "replay"
    assert {r["name"] for r in shipped["runs"] if r["checkpoint"]} == {"gru-tf1-s1", f"gru-{slug}-s1"}
    for run in shipped["runs"]:
        if run["checkpoint"]:
            assert load_checkpoint(dest.parent / run["checkpoint"]).card["name"] == run["name"]
    assert sorted(p.name for p in (dest.parent / "reverse").iterdir()) == sorted(["gru-tf1-s1", f"gru-{slug}-s1"])
    # shipped again after the best scheduled policy changed: the old one's weights go
    (dest.parent / "reverse" / "gru-tf0-s1").mkdir()
    assert main(["reverse", "--out", str(dest), "--ship-from", str(out), "--ship-weights", "replay"]) == 0
    assert sorted(p.name for p in (dest.parent / "reverse").iterdir()) == sorted(["gru-tf1-s1", f"gru-{slug}-s1"])
    assert [r["final"] for r in shipped["runs"]] == [r["final"] for r in res["runs"]]


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


def test_teacher_forced_position_accuracy_matches_the_one_sentence_replay():
    """The batched count against exposure.teacher_forced_steps, one sentence at a time."""
    import random

    import torch

    from seq2seq.evaluate import teacher_forced_position_accuracy
    from seq2seq.exposure import teacher_forced_steps
    from seq2seq.models import build_model

    from conftest import tiny_config

    torch.manual_seed(0)
    model = build_model(tiny_config("bahdanau")).eval()
    rng = random.Random(1)
    sources = [[rng.randrange(4, 19) for _ in range(rng.randrange(1, 8))] for _ in range(40)]
    targets = [list(reversed(s))[: rng.randrange(1, len(s) + 1)] for s in sources]
    acc = teacher_forced_position_accuracy(model, sources, targets, torch.device("cpu"), batch_size=16)
    hits, total = {}, {}
    for s, t in zip(sources, targets):
        for p, (best, _, _) in enumerate(teacher_forced_steps(model, s, t)[: len(t)]):   # not the <eos> step
            total[p] = total.get(p, 0) + 1
            hits[p] = hits.get(p, 0) + (best == t[p])
    assert acc == {str(p + 1): round(hits[p] / total[p], 4) for p in sorted(total)}
    assert len(acc) == max(len(t) for t in targets)


def test_bleu_by_source_length_scores_each_bucket_alone():
    from seq2seq.evaluate import bleu_by_source_length

    refs = [["a", "man", "is", "riding", "a", "red", "bike", "."], ["two", "dogs", "play", "in", "the", "snow", "."],
            ["a", "woman", "sings", "on", "a", "big", "stage", "."]]
    hyps = [refs[0], ["cats", "sleep", "."], refs[2]]
    out = bleu_by_source_length(hyps, refs, [" ".join(r) for r in refs], [5, 10, 30])
    assert list(out) == ["1-8", "9-12", "21+"]                    # empty buckets left out
    assert out["1-8"]["bleu"] == 100.0 and out["21+"]["bleu"] == 100.0 and out["9-12"]["bleu"] < 10
    assert [b["sentences"] for b in out.values()] == [1, 1, 1]


def test_the_schema_check_names_what_a_results_file_lacks(tmp_path):

    out = tmp_path / "reverse.json"
    assert main(["reverse", "--out", str(out), "--jobs", "1", "--threads", "1", "--archs", "gru", "--seeds", "1",
                 "--epochs", "1", "--train-size", "64", "--batch-size", "32", "--max-len", "4", "--emb", "8",
                 "--hidden", "16", "--val-size", "16", "--eval-n", "4", "--settings", "tf1"]) == 0
    res = load_results(out)
    assert check_schema(res) == []
    del res["runs"][0]["accuracy_by_position_teacher_forced"]
    res["runs"][0]["history"][0].pop("val_loss")
    res["runs"][0]["accuracy_by_position"]["1"] = 1.5
    res["scale"] = "big"
    problems = check_schema(res)
    assert any("accuracy_by_position_teacher_forced" in p for p in problems)
    assert any("epoch 1 lacks 'val_loss'" in p for p in problems)
    assert any("outside [0, 1]" in p for p in problems) and any("scale" in p for p in problems)


def test_an_interrupted_run_resumes_from_its_last_epoch_and_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    import seq2seq.trainer as trainer
    from seq2seq.sweep import SIZE_OPTIONS, run_one

    opts = dict(FULL["reverse"], archs=("gru",), seeds=1, epochs=3, train_size=128, batch_size=64, max_len=5,
                emb=8, hidden=16, val_size=32, eval_n=5, keep="none", extra_seeds=0)
    assert set(opts) >= set(SIZE_OPTIONS) - {"cpu_bf16"}
    (plain,), _ = plan("reverse", opts, tmp_path / "a.json", "cpu", 1, only=["inverse-sigmoid"])
    (spec,), _ = plan("reverse", opts, tmp_path / "b.json", "cpu", 1, only=["inverse-sigmoid"],
                      state_root=str(tmp_path / "state"))
    assert plain.state_dir is None and spec.state_dir == str((tmp_path / "state" / "reverse" / spec.name).resolve())
    whole = run_one(plain)
    assert "error" not in whole and len(whole["history"]) == 3

    real_epoch, calls = trainer.train_epoch, []

    def dies_in_epoch_3(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real_epoch(*args, **kw)

    monkeypatch.setattr(trainer, "train_epoch", dies_in_epoch_3)
    failed = run_one(spec)
    assert failed["error"] == "RuntimeError: killed"
    assert (Path(spec.state_dir) / "state.json").is_file()          # epochs 1 and 2 kept
    monkeypatch.setattr(trainer, "train_epoch", real_epoch)
    marker = Path(spec.state_dir) / "run.json"                     # a marker written before --src-bpe existed
    older = json.loads(marker.read_text())
    assert older["train"].pop("src_bpe") == 0
    marker.write_text(json.dumps(older))
    resumed = run_one(spec)
    assert "error" not in resumed and resumed["provenance"]["resumed_after_epoch"] == 2
    assert not Path(spec.state_dir).exists()                        # removed once finished
    strip = ("seconds", "train_seconds", "tokens_per_s")
    assert [{k: v for k, v in h.items() if k not in strip} for h in resumed["history"]] == \
        [{k: v for k, v in h.items() if k not in strip} for h in whole["history"]]
    assert resumed["final"] == whole["final"]
    # a state saved for another configuration is not resumed: the run starts over
    Path(spec.state_dir).mkdir(parents=True)
    (Path(spec.state_dir) / "state.json").write_text("{}")
    assert "resumed_after_epoch" not in run_one(spec)["provenance"]


def test_runs_train_seed_by_seed_constant_1_first_then_the_scheduled_policies_then_constant_0(tmp_path):
    from seq2seq.sweep import training_order

    specs, shared = plan("translate", dict(FULL["translate"]), tmp_path / "translate.json", "cpu", 0,
                         train_examples=29000)
    assert [s.label for s in training_order(specs, shared["settings"])] == [
        "constant 1", "constant 0.5", "constant 0.75", "linear decay", "inverse-sigmoid decay",
        "tutorials' rule 0.5", "constant 0"]
    assert [s.label for s in specs] == TRANSLATE_LABELS                # the grid (and the file) keep theirs
    # several seeds: every setting's first seed before any second one
    specs, shared = plan("reverse", dict(FULL["reverse"]), tmp_path / "reverse.json", "cpu", 0)
    order = training_order(specs, shared["settings"])
    assert [s.seed for s in order] == [1] * 18 + [2] * 18 + [3] * 18
    assert {(s.arch, s.label) for s in order[:18]} == {(s.arch, s.label) for s in specs}
    assert [s.label for s in order[:2]] == ["constant 1", "constant 1"] and order[-1].label == "constant 0"
