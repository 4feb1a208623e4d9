"""Scale-out: `torchrun ... -m seq2seq.train` with DistributedDataParallel, here two
processes on CPU with gloo (the same code path runs NCCL on GPUs)."""
import json
import os
import subprocess
import sys

import pytest

from seq2seq.checkpoint import load_checkpoint
from seq2seq.config import TrainConfig
from seq2seq.train import load_task_data, shard_batches

from conftest import ROOT


@pytest.mark.parametrize("n,world", [(10, 1), (10, 2), (11, 2), (7, 3), (2, 4)])
def test_shards_are_disjoint_equal_and_in_the_seeded_order(n, world):
    batches = [f"b{i}" for i in range(n)]
    shards = [shard_batches(batches, r, world) for r in range(world)]
    if world == 1:
        assert shards[0] is batches                     # a lone process: exactly as before
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == n // world
    flat = [b for s in shards for b in s]
    assert len(set(flat)) == len(flat) == n - n % world
    for s in shards:
        assert s == sorted(s, key=batches.index)         # each rank keeps the shared order


def test_torchrun_two_cpu_processes_train_one_checkpoint(tmp_path):
    out, epochs, train_size, batch = tmp_path / "reverse-ddp", 3, 1500, 32
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "seq2seq.train", "--task", "reverse", "--arch", "bahdanau", "--device", "cpu",
         "--emb", "16", "--hidden", "32", "--attn-dim", "16", "--dropout", "0.1", "--lr", "3e-3",
         "--train-size", str(train_size), "--val-size", "64", "--max-len", "8", "--batch-size", str(batch),
         "--patience", "0", "--epochs", str(epochs), "--seed", "3", "--eval-n", "20",
         "--out", str(out), "--state-dir", str(tmp_path / "state")],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    ck = load_checkpoint(out)
    card = ck.card
    assert card["provenance"]["world_size"] == 2
    assert card["provenance"]["distributed_backend"] == "gloo"
    assert card["provenance"]["batch_size_per_process"] == batch
    history = card["history"]
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))
    losses = [h["train_loss"] for h in history]
    assert losses[-1] < losses[0], losses

    # each rank ran an equal share of every epoch's seeded batches: steps count per rank
    cfg = TrainConfig(task="reverse", batch_size=batch, seed=3, reverse_max_len=8, reverse_train_size=train_size,
                      reverse_val_size=64)
    data = load_task_data(cfg, None, None)
    steps = 0
    for h in history:
        n = len(list(data.train_for_epoch(cfg, h["epoch"] - 1).batches(batch, shuffle=True,
                                                                         seed=cfg.seed * 7 + h["epoch"] - 1)))
        steps += n // 2
        assert h["steps"] == steps

    # rank 0 alone reported and wrote
    rows = [line for line in proc.stderr.replace("\r", "\n").splitlines() if line.startswith('{"epoch"')]
    assert len(rows) == epochs, proc.stderr[-3000:]
    assert proc.stdout.count(f"wrote {out}") == 1
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert state["epoch"] == epochs
    assert ck.model.cfg.arch == "bahdanau"
