"""Faults during training and saving.

- A training run SIGKILLed in the middle of an epoch continues with --resume from the
  last saved state and ends with the history (and weights) of an uninterrupted run.
- No half-written checkpoint or training state is ever visible: saves that fail at any
  rename, and writers frozen (SIGSTOP) or killed at random moments, always leave
  something that loads, the previous or the new version (a checkpoint directory may
  also be absent for the microseconds between its two renames)."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from seq2seq import train as train_mod
from seq2seq.checkpoint import CARD, VOCAB, WEIGHTS, list_checkpoints, load_checkpoint, save_checkpoint
from seq2seq.config import ModelConfig
from seq2seq.errors import CheckpointError
from seq2seq.models import build_model
from seq2seq.train import STATE_JSON, read_state, save_state

from conftest import ROOT, tiny_model
from conftest import _card, _vocabs

# one thread: CPU results are then bit-for-bit repeatable across processes
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TRAIN = [sys.executable, "-m", "seq2seq.train", "--task", "reverse", "--arch", "bahdanau", "--device", "cpu",
         "--emb", "16", "--hidden", "32", "--attn-dim", "16", "--dropout", "0.1", "--tf-ratio", "0.5",
         "--train-size", "3000", "--val-size", "64", "--max-len", "8", "--batch-size", "32",
         "--patience", "0", "--seed", "11", "--epochs", "4", "--eval-n", "20"]
TIMINGS = ("train_seconds", "seconds", "tokens_per_s")


def _start(out, state, *extra):
    return subprocess.Popen([*TRAIN, "--out", str(out), "--state-dir", str(state), *extra], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _saved_epoch(state_dir) -> int:
    try:
        return json.loads((state_dir / STATE_JSON).read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def test_killed_mid_epoch_then_resumed_matches_an_uninterrupted_run(tmp_path):
    reference = _start(tmp_path / "ref", tmp_path / "ref-state")
    victim = _start(tmp_path / "run", tmp_path / "run-state")
    try:
        state = tmp_path / "run-state"
        deadline = time.monotonic() + 150
        while _saved_epoch(state) < 1:           # at least one epoch's state is on disk
            assert victim.poll() is None, victim.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "no epoch was saved in time"
            time.sleep(0.02)
        info = json.loads((state / STATE_JSON).read_text())
        saved = info["epoch"]
        time.sleep(0.4 * info["history"][-1]["train_seconds"])   # into the next epoch's batches
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL
    assert _saved_epoch(state) in (saved, saved + 1) and _saved_epoch(state) < 4, "the kill came too late"
    assert not (tmp_path / "run").exists()       # no checkpoint from the killed run

    resumed = subprocess.run([*TRAIN, "--out", str(tmp_path / "run"), "--state-dir", str(state), "--resume"],
                             cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _, ref_err = reference.communicate(timeout=300)
    assert reference.returncode == 0, ref_err[-2000:]

    full = json.loads((tmp_path / "ref" / CARD).read_text())["history"]
    again = json.loads((tmp_path / "run" / CARD).read_text())["history"]
    assert [r["epoch"] for r in again] == [1, 2, 3, 4]
    for a, b in zip(full, again):
        assert a.keys() == b.keys()
        for k in a.keys() - set(TIMINGS):
            expected = b[k] if isinstance(b[k], str) else pytest.approx(b[k], rel=1e-5, abs=1e-6)
            assert a[k] == expected, (a["epoch"], k, a[k], b[k])
    w_full = load_checkpoint(tmp_path / "ref").model.state_dict()
    w_again = load_checkpoint(tmp_path / "run").model.state_dict()
    for k in w_full:
        assert torch.allclose(w_full[k], w_again[k], atol=1e-6), k


# ------------------------------------------------------------------ checkpoints
def _assert_loads_as(path, expected: dict[str, torch.Tensor]) -> None:
    loaded = load_checkpoint(path).model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())


def _fail_nth_rename(monkeypatch, n):
    """Make the n-th os.replace from now on raise (every rename in these saves is one)."""
    real, calls = os.replace, []

    def replace(*args, **kwargs):
        calls.append(args)
        if len(calls) == n:
            raise OSError(f"injected failure at rename {n}")
        return real(*args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return calls


def test_a_save_failing_at_any_rename_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    ck = tmp_path / "ck"
    old, new = tiny_model("bahdanau", seed=0), tiny_model("bahdanau", seed=1)
    save_checkpoint(ck, old, *_vocabs(old), _card("ck"))
    (ck / "notes.md").write_text("kept across saves")
    n = 1
    while True:
        with monkeypatch.context() as m:
            calls = _fail_nth_rename(m, n)
            try:
                save_checkpoint(ck, new, *_vocabs(new), _card("ck"))
                failed = False
            except OSError:
                failed = True
        # nothing half-done: the old checkpoint, whole, and nothing else beside it
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"], list(tmp_path.iterdir())
        assert sorted(p.name for p in ck.iterdir()) == sorted([CARD, VOCAB, WEIGHTS, "notes.md"])
        if not failed:
            break
        _assert_loads_as(ck, old.state_dict())
        n += 1
    assert n == len(calls) + 1 > 3                 # every rename of a save was made to fail once
    _assert_loads_as(ck, new.state_dict())
    assert (ck / "notes.md").read_text() == "kept across saves"


_WRITER = """
import sys, torch
from seq2seq.checkpoint import save_checkpoint
sys.path.insert(0, "tests")
from conftest import tiny_model
from conftest import _card, _vocabs
models = [tiny_model("bahdanau", seed=s) for s in (0, 1)]
i = 0
while True:
    save_checkpoint(sys.argv[1], models[i % 2], *_vocabs(models[0]), _card(f"seed{i % 2}"))
    if i == 0:
        print("saved", flush=True)
    i += 1
"""


def freeze_then_kill(proc, check, rounds: int, max_pause: float, rng) -> None:
    """Freeze `proc` at `rounds` random moments and run `check` while it is frozen, then
    kill it at a random moment and check once more."""
    for _ in range(rounds):
        time.sleep(rng.uniform(0, max_pause))
        proc.send_signal(signal.SIGSTOP)
        try:
            check()
        finally:
            proc.send_signal(signal.SIGCONT)
    time.sleep(rng.uniform(0, max_pause))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    check()


def test_a_checkpoint_writer_frozen_or_killed_at_random_moments(tmp_path):
    """SIGSTOP freezes the writer wherever it is, mid-save included: what a reader (or a
    SIGKILL then) finds must load, or be absent for the instant between two renames."""
    ck = tmp_path / "ck"
    expected = {f"seed{s}": tiny_model("bahdanau", seed=s).state_dict() for s in (0, 1)}
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(ck)], cwd=ROOT, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rng = random.Random(7)
    seen = {"seed0": 0, "seed1": 0, "absent": 0}

    def check():
        try:
            loaded = load_checkpoint(ck)
        except CheckpointError as e:
            assert "not found" in str(e), e       # the only acceptable failure: not there
            seen["absent"] += 1
            return
        name = loaded.card["name"]
        assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in expected[name].items())
        seen[name] += 1
        assert sorted(p.name for p in ck.iterdir()) == sorted([CARD, VOCAB, WEIGHTS])
        assert list_checkpoints(tmp_path) == [ck]   # a save in progress is not listed

    try:
        assert writer.stdout.readline().strip() == "saved", writer.stderr.read()[-2000:]
        freeze_then_kill(writer, check, rounds=40, max_pause=0.02, rng=rng)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert seen["seed0"] + seen["seed1"] >= 30, seen
    # the next save puts things right: leftovers of the killed save are gone
    model = tiny_model("bahdanau", seed=1)
    save_checkpoint(ck, model, *_vocabs(model), _card("seed1"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    _assert_loads_as(ck, expected["seed1"])


# ------------------------------------------------------------------ training state
def test_a_state_save_failing_at_any_rename_leaves_the_previous_state(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="bahdanau", emb_dim=8, hidden_dim=8, attn_dim=8, dropout=0.0,
                                    src_vocab_size=47, tgt_vocab_size=47))
    opt = torch.optim.Adam(model.parameters())
    base = {"step": 0, "history": [], "best": None, "bad_epochs": 0, "wall_seconds": 0.0, "stopped": ""}
    best = {k: v.clone() for k, v in model.state_dict().items()}
    save_state(tmp_path, model, opt, {**base, "epoch": 1}, best_weights=best)
    epoch1 = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)                     # epoch 2's weights differ from epoch 1's
    n = 1
    while True:
        with monkeypatch.context() as m:
            _fail_nth_rename(m, n)
            try:
                save_state(tmp_path, model, opt, {**base, "epoch": 2}, best_weights=model.state_dict())
                failed = False
            except OSError:
                failed = True
        tensors, info = read_state(tmp_path)           # always a whole state: the sha matches
        if not failed:
            break
        assert info["epoch"] == 1, n
        assert all(torch.equal(tensors[f"model.{k}"], v) for k, v in epoch1.items())
        n += 1
    assert info["epoch"] == 2 and n > 3            # state, best and state.json renames each failed once
    # old and orphaned files are cleared once a save has committed
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([STATE_JSON, info["weights_file"], info["best_weights_file"]]), names


def test_a_training_run_frozen_or_killed_at_random_moments_leaves_a_whole_state(tmp_path):
    """Tiny epochs, so that much of the time is spent saving state: every freeze must find
    state.json naming complete files (or no state yet)."""
    state = tmp_path / "state"
    run = subprocess.Popen([sys.executable, "-m", "seq2seq.train", "--task", "reverse", "--arch", "gru",
                            "--device", "cpu", "--emb", "8", "--hidden", "8", "--train-size", "64", "--val-size", "4",
                            "--max-len", "4", "--batch-size", "32", "--patience", "0", "--epochs", "100000",
                            "--out", str(tmp_path / "out"), "--state-dir", str(state)],
                           cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rng = random.Random(3)
    epochs = []
    try:
        deadline = time.monotonic() + 120
        while _saved_epoch(state) < 1:
            assert run.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        def check():
            _, info = read_state(state)              # raises unless state.json names whole files
            assert len(info["history"]) == info["epoch"]
            epochs.append(info["epoch"])

        freeze_then_kill(run, check, rounds=30, max_pause=0.03, rng=rng)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert epochs == sorted(epochs) and epochs[-1] > epochs[0], epochs
    mc = ModelConfig.from_dict(json.loads((state / STATE_JSON).read_text())["model_config"])
    model = build_model(mc)
    train_mod.load_state(state, model, torch.optim.Adam(model.parameters()))


def test_a_state_saved_by_plain_adam_resumes_on_the_fused_kernel(tmp_path):
    """States written before the trainer used fused Adam resume with their moments and
    step, on the fused kernel (the saved param_groups do not switch it off)."""
    from seq2seq.train_state import load_state
    from seq2seq.trainer import build_optimizer

    model = tiny_model("gru", seed=1)
    plain = torch.optim.Adam(model.parameters(), lr=3e-3)
    sum(p.square().sum() for p in model.parameters()).backward()
    plain.step()
    save_state(tmp_path, model, plain, {"epoch": 1, "step": 1, "history": []})
    again = tiny_model("gru", seed=2)
    fused = build_optimizer(again, lr=1e-3)
    load_state(tmp_path, again, fused)
    assert fused.param_groups[0]["fused"] and fused.param_groups[0]["lr"] == 3e-3
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p, q)
        assert torch.equal(plain.state[p]["exp_avg"], fused.state[q]["exp_avg"])
        assert float(plain.state[p]["step"]) == float(fused.state[q]["step"]) == 1.0
