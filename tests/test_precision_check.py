"""seq2seq.precision_check: the bf16-vs-float32 verdict from the curves and the seed spread."""
import pytest

from seq2seq import precision_check
from seq2seq.precision_check import verdict


def run(precision, seed, bleu, loss):
    return {"precision": precision, "seed": seed,
            "history": [{"epoch": i + 1, "val_bleu": b, "val_loss": l} for i, (b, l) in enumerate(zip(bleu, loss))]}


def test_gaps_within_the_seed_spread_pass():
    runs = [run("float32", 1, [10.0, 20.0], [3.0, 2.5]), run("float32", 2, [11.0, 21.0], [2.9, 2.4]),
            run("bf16", 1, [10.2, 20.8], [2.95, 2.45]), run("bf16", 2, [10.6, 20.4], [2.97, 2.43])]
    v = verdict(runs)
    assert v["passed"] is True
    last = v["by_epoch"][-1]["val_bleu"]
    assert last["float32_mean"] == 20.5 and last["bf16_mean"] == 20.6
    assert last["gap"] == pytest.approx(0.1) and last["seed_spread"] == pytest.approx(1.4)
    assert "within the seed spread" in v["summary"]


def test_a_gap_beyond_the_spread_fails_and_says_by_how_much():
    runs = [run("float32", 1, [20.0], [2.5]), run("float32", 2, [20.5], [2.5]),
            run("bf16", 1, [17.0], [2.5]), run("bf16", 2, [17.2], [2.5])]
    v = verdict(runs)
    assert v["passed"] is False
    assert v["by_epoch"][0]["val_bleu"]["within"] is False
    assert v["by_epoch"][0]["val_loss"]["within"] is True
    assert "exceed" in v["summary"] and "val_bleu 2.45" in v["summary"]


def test_one_seed_has_no_spread_to_compare_with():
    v = verdict([run("float32", 1, [20.0], [2.5]), run("bf16", 1, [20.1], [2.5])])
    assert v["passed"] is None and "one float32 seed" in v["summary"]


def test_the_command_refuses_a_cpu_without_native_bf16(monkeypatch, capsys):
    import seq2seq.models.output as output
    monkeypatch.setattr(output, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr("seq2seq.train.load_task_data", lambda *a, **k: object())
    rc = precision_check.run_main(precision_check.main, ["--out", "/tmp/unused.json", "--epochs", "1"])
    assert rc != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no native bf16" in err[0]
