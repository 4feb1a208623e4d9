"""Snapshots: a model's weights at chosen points of its training, for the app's
"During training" view (how the alignment forms).

    checkpoints/NAME/snapshots/NN/     one checkpoint directory per point, NN = 00, 01, ...

Each is a checkpoint like any other (safetensors weights, card.json with the sha256 of
every file, verified on load), except that its vocabulary is the parent checkpoint's
vocab.json, whose sha256 its card records (files["vocab.json"]["in"] = "../.."), stored as int4 with a float16 scale per group of
16 values of a row (checkpoint.quantize_int4: half of int8's bytes, so that six or more
points of a translation model fit in MAX_SERIES_BYTES; series written before are int8,
which loads the same way); its card adds `snapshot`: {index, label, step, epoch, metric, value,
val_loss}. The points (`train --snapshots`): after a quarter of the first epoch, after
epochs 1, 2, 4, 8, 16, ... and the final (the best weights, as shipped)."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from .card import Card
from .atomic import atomic_write_bytes
from .card import VOCAB
from .checkpoint import CARD, CheckpointError, LoadedCheckpoint, load_checkpoint, save_checkpoint, vocab_file_bytes

SNAPSHOT_DIR = "snapshots"
SNAPSHOT_EPOCHS = (1, 2, 4, 8, 16, 32, 64, 128)
FIRST_EPOCH_FRACTION = 0.25
SNAPSHOT_DTYPE = "int4"
MAX_SERIES_BYTES = 15 * 2 ** 20      # a model's snapshots together


def first_snapshot_batch(n_batches: int) -> int:
    """The batch index (0-based) after which the first-epoch snapshot is taken."""
    return max(1, round(n_batches * FIRST_EPOCH_FRACTION)) - 1


def snapshot_root(ckpt_dir: str | os.PathLike) -> Path:
    return Path(ckpt_dir) / SNAPSHOT_DIR


def snapshot_dirs(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Snapshot directories of a checkpoint, in training order (empty when none)."""
    root = snapshot_root(ckpt_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit() and (p / CARD).is_file())


def snapshot_info(path: Path) -> dict:
    """A snapshot's `snapshot` card entry, read without loading weights."""
    info = Card.load(path).snapshot
    if not isinstance(info, dict):
        raise CheckpointError(f"{Path(path) / CARD}: not a snapshot card (no snapshot entry)")
    return info


def list_snapshots(ckpt_dir: str | os.PathLike) -> list[dict]:
    """[{index, label, step, epoch, metric, value, val_loss, path}] for every snapshot."""
    return [{**snapshot_info(p), "path": str(p)} for p in snapshot_dirs(ckpt_dir)]


def load_snapshot(ckpt_dir: str | os.PathLike, index: int, device="cpu") -> LoadedCheckpoint:
    """Verify and load snapshot `index` (as in NN) of a checkpoint."""
    path = snapshot_root(ckpt_dir) / f"{int(index):02d}"
    if not (path / CARD).is_file():
        have = ", ".join(p.name for p in snapshot_dirs(ckpt_dir)) or "none"
        raise CheckpointError(f"{path}: no such snapshot (this checkpoint has: {have}; "
                              f"`python -m seq2seq.train ... --snapshots` makes them)")
    return load_checkpoint(path, device)


def clear_snapshots(ckpt_dir: str | os.PathLike, keep_final: bool = True) -> None:
    """Remove a checkpoint's snapshots (a fresh run) or only its final one (a resumed run
    goes on past it)."""
    for p in snapshot_dirs(ckpt_dir):
        if not keep_final or snapshot_info(p).get("label", "").startswith("final"):
            shutil.rmtree(p, ignore_errors=True)
    if not keep_final:
        shutil.rmtree(snapshot_root(ckpt_dir), ignore_errors=True)


def write_snapshot(ckpt_dir: str | os.PathLike, model, src_vocab, tgt_vocab, base_card: dict, *,
                   label: str, step: int, epoch: float, metric: str, value, val_loss) -> Path:
    """Save the model's current weights as the next snapshot of `ckpt_dir`."""
    index = len(snapshot_dirs(ckpt_dir))
    path = snapshot_root(ckpt_dir) / f"{index:02d}"
    info = {"index": index, "label": label, "step": int(step), "epoch": round(float(epoch), 3),
            "metric": metric, "value": value, "val_loss": val_loss}
    card = dict(base_card, name=f"{base_card['name']}/snapshot {index:02d}", snapshot=info,
                metrics={"val": {metric: value, "loss": val_loss}}, history=[])
    # the vocabulary is the checkpoint's own, stored once beside the snapshots (written now
    # if the run has not saved it yet, so a series is loadable while training goes on)
    parent_vocab = Path(ckpt_dir) / VOCAB
    content = vocab_file_bytes(src_vocab, tgt_vocab)
    if not parent_vocab.is_file() or parent_vocab.read_bytes() != content:
        parent_vocab.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(parent_vocab, content)
    save_checkpoint(path, model, src_vocab, tgt_vocab, card, weights_dtype=SNAPSHOT_DTYPE, shared_vocab="../..")
    return path


def series_bytes(ckpt_dir) -> int:
    root = snapshot_root(ckpt_dir)
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) if root.is_dir() else 0


def drop_after_final(ckpt_dir) -> int:
    """Removes the snapshots taken at a later step than the final one: when training went on
    past its best epoch, the final snapshot (the best weights, as shipped) comes from before
    them, and the series should end with it, in step order. Returns how many it removed."""
    dirs = snapshot_dirs(ckpt_dir)
    final = snapshot_info(dirs[-1]) if dirs else {}
    if not str(final.get("label", "")).startswith("final"):
        return 0
    final_step = final["step"]
    later = [d for d in dirs[:-1] if snapshot_info(d)["step"] > final_step]
    for d in later:
        shutil.rmtree(d)
    return len(later)


def prune_snapshots(ckpt_dir, max_bytes: int | None = MAX_SERIES_BYTES) -> list[dict]:
    """Keep the series in step order (drop_after_final) and under `max_bytes` (None: no
    limit): the first and the final snapshot always, and of the others those that spread
    evenly over training; the kept ones are renumbered 00, 01, ... in order (their cards
    say so). Returns what is kept."""
    drop_after_final(ckpt_dir)
    dirs = snapshot_dirs(ckpt_dir)
    if not dirs:
        return []
    each = max(series_bytes(ckpt_dir) // len(dirs), 1)
    room = len(dirs) if max_bytes is None else max(2, int(max_bytes // each))
    if len(dirs) > room:
        # evenly spaced positions over the series, ends included
        keep = sorted({round(i * (len(dirs) - 1) / (room - 1)) for i in range(room)})
        for i, d in enumerate(dirs):
            if i not in keep:
                shutil.rmtree(d)
    for new_index, d in enumerate(snapshot_dirs(ckpt_dir)):
        target = d.parent / f"{new_index:02d}"
        if d != target:
            os.replace(d, target)
        card = Card.load(target)
        if card.snapshot.get("index") != new_index:
            base = card.name.rsplit("/snapshot", 1)[0]
            card.snapshot = dict(card.snapshot, index=new_index)
            card.name = f"{base}/snapshot {new_index:02d}"
            card.save(target)
    return list_snapshots(ckpt_dir)


def replace_final(ckpt_dir, label: str, step: int, epoch: float) -> dict:
    """Make the series end with the checkpoint's own weights: its final snapshot rewritten
    from them, at `step` and `epoch` of training, with the checkpoint's greedy validation
    BLEU and loss. For a model whose shipped weights came after the run that took the
    series (a continuation, `train --init-from`, or a soup, `seq2seq.soup`): the series
    is the first run's, and the final point is what ships. Returns the new final entry."""
    dirs = snapshot_dirs(ckpt_dir)
    if not dirs or not snapshot_info(dirs[-1]).get("label", "").startswith("final"):
        raise CheckpointError(f"{ckpt_dir}: no series ending in a final snapshot to replace")
    if not label.startswith("final"):
        raise CheckpointError(f"a final snapshot's label starts with 'final', got {label!r}")
    old, before = Card.load(dirs[-1]), snapshot_info(dirs[-2]) if len(dirs) > 1 else {"step": -1}
    if step <= before["step"]:
        raise CheckpointError(f"step {step} is not after the snapshot before the final one ({before['step']})")
    ck = load_checkpoint(ckpt_dir)
    greedy = ck.card.split_metrics("val").get("by_decoding", {}).get("beam1")
    if not greedy:
        raise CheckpointError(f"{ckpt_dir}: the card has no greedy validation BLEU (evaluate --choose-decoding "
                              f"with 1 among the decodings)")
    base = {k: v for k, v in old.to_dict().items() if k not in (
        "format_version", "arch", "config", "params", "weights_dtype", "files", "weights_sha256", "snapshot")}
    base["name"] = old.name.rsplit("/snapshot", 1)[0]
    shutil.rmtree(dirs[-1])
    write_snapshot(ckpt_dir, ck.model, ck.src_vocab, ck.tgt_vocab, base, label=label, step=step, epoch=epoch,
                   metric=old.snapshot["metric"], value=greedy["bleu"], val_loss=ck.card.split_metrics("val")["loss"])
    return list_snapshots(ckpt_dir)[-1]


def best_row(history: list[dict]) -> dict:
    """The epoch a run kept (its best validation metric; ties: the lower loss)."""
    key = next((k for k in ("val_bleu", "val_exact_match") if history and k in history[0]), None)
    return max(history, key=lambda h: (h.get(key) or 0, -h.get("val_loss", 0))) if key else {}


def weights_position(ckpt_dir) -> tuple[int, float]:
    """(step, epoch) in the whole training behind a checkpoint at which its own weights
    stand: its series' final point where it has one (a continuation's or a soup's series
    already counts every run before it), else its best epoch."""
    dirs = snapshot_dirs(ckpt_dir)
    if dirs:
        final = snapshot_info(dirs[-1])
        if final.get("label", "").startswith("final"):
            return final["step"], final["epoch"]
    row = best_row(Card.load(ckpt_dir).history)
    return row.get("steps", 0), row.get("epoch", 0)


def continued_position(start: tuple[int, float], own_history: list[dict]) -> tuple[int, float]:
    """(step, epoch) of a continuation's kept weights in the whole training: where its start
    stood (weights_position), then the continuation's own best epoch."""
    own = best_row(own_history)
    return start[0] + own.get("steps", 0), start[1] + own.get("epoch", 0)


def end_series(ckpt_dir, series_from, label: str, step: int, epoch: float) -> dict:
    """Copy `series_from`'s snapshot series into `ckpt_dir` and end it with ckpt_dir's own
    weights (replace_final): a model whose shipped weights came after the run that took it."""
    src, dst = snapshot_root(series_from), snapshot_root(ckpt_dir)
    if not src.is_dir():
        raise CheckpointError(f"{series_from}: no snapshots to continue")
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    return replace_final(ckpt_dir, label, step, epoch)


def continue_series(ckpt_dir, parent_dir) -> dict:
    """A continuation (`train --init-from PARENT`) takes its parent's snapshot series and
    ends it with its own weights, at the parent's best step and epoch plus its own."""
    ck_card, parent_card = Card.load(ckpt_dir), Card.load(parent_dir)
    start = ck_card.provenance.get("init_from") or {}
    if start.get("weights_sha256") != parent_card.weights_sha256:
        raise CheckpointError(f"{ckpt_dir} did not continue {parent_dir} (its card's init_from names other weights)")
    start = weights_position(parent_dir)
    step, epoch = continued_position(start, ck_card.history)
    started, own = start[1], best_row(ck_card.history).get("epoch")
    return end_series(ckpt_dir, parent_dir, f"final (continued from epoch {started:g}: best epoch {own} of the "
                      f"continuation)", step, epoch)


def share_vocabulary(ckpt_dir) -> int:
    """Series written before snapshots shared their checkpoint's vocabulary: drop each
    snapshot's own vocab.json where it is byte for byte the checkpoint's, and record the
    shared one in its card instead. Returns how many snapshots changed."""
    parent = Path(ckpt_dir) / VOCAB
    if not parent.is_file():
        raise CheckpointError(f"{parent}: missing; the snapshots' vocabulary can't be shared with it")
    content, changed = parent.read_bytes(), 0
    for d in snapshot_dirs(ckpt_dir):
        own = d / VOCAB
        if not own.is_file():
            continue
        if own.read_bytes() != content:
            raise CheckpointError(f"{own}: differs from {parent}; not shared")
        card = Card.load(d)
        card.files = dict(card.files, **{VOCAB: dict(card.files[VOCAB], **{"in": "../.."})})
        card.save(d)
        own.unlink()
        load_checkpoint(d)                      # still verifies, now against the shared file
        changed += 1
    return changed


def main(argv=None) -> int:
    """python -m seq2seq.snapshots CHECKPOINT [--max-mib 15] [--share-vocab]: list (and prune) a series."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m seq2seq.snapshots", description=main.__doc__)
    p.add_argument("checkpoint")
    p.add_argument("--max-mib", type=float, default=None, help="prune the series to at most this size")
    p.add_argument("--share-vocab", action="store_true",
                   help="drop each snapshot's own copy of the checkpoint's vocab.json (series written before "
                        "snapshots shared it)")
    p.add_argument("--final", metavar="LABEL", help="rewrite the final snapshot from the checkpoint's own weights "
                   "(a continuation or soup: the series is the first run's), with this label and --step, --epoch")
    p.add_argument("--continue-series", metavar="PARENT",
                   help="a continuation (train --init-from PARENT): copy PARENT's series, ending it with these weights")
    p.add_argument("--step", type=int, help="with --final: the training step of the shipped weights")
    p.add_argument("--epoch", type=float, help="with --final: the epoch of the shipped weights")
    args = p.parse_args(argv)
    if args.continue_series:
        print(json.dumps(continue_series(args.checkpoint, args.continue_series)), file=sys.stderr)
    if args.final:
        if args.step is None or args.epoch is None:
            p.error("--final needs --step and --epoch")
        print(json.dumps(replace_final(args.checkpoint, args.final, args.step, args.epoch)), file=sys.stderr)
    if args.share_vocab:
        print(f"{share_vocabulary(args.checkpoint)} snapshots now share {Path(args.checkpoint) / VOCAB}",
              file=sys.stderr)
    snaps = (prune_snapshots(args.checkpoint, int(args.max_mib * 2 ** 20)) if args.max_mib
             else list_snapshots(args.checkpoint))
    for s in snaps:
        print(json.dumps({k: s[k] for k in ("index", "label", "step", "epoch", "metric", "value")}))
    print(f"{len(snaps)} snapshots, {series_bytes(args.checkpoint) / 2 ** 20:.1f} MiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from .cli import run_main
    sys.exit(run_main(main))
