"""The training loop: epochs of batches, validation, best weights, early stopping,
state saved after every epoch, snapshots, and the checkpoint at the end.

Adam, gradient clipping, early stopping on the free-running validation metric (BLEU, or
exact match for reversal). The loss is `Seq2Seq.loss` (its fast path unless the config
asks for the plain step loop). Teacher forcing: the coin is flipped per time step and
per sequence in the batch. Inside a torchrun process group this trains one rank of a
DistributedDataParallel run (distributed.py); only rank 0 validates and writes."""
from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .averaging import WeightAverage
from .checkpoint import save_checkpoint
from .config import ModelConfig, TrainConfig
from .distributed import any_rank, broadcast_json, broadcast_tensors, current_dist, rank_seed, shard_batches
from .errors import Seq2SeqError
from .evaluate import bleu_scores, decode_corpus, ppl, teacher_forced_loss
from .models import Seq2Seq, TrainingLoss, build_model
from .models.output import cpu_has_native_bf16
from .schedules import teacher_forcing_ratio
from .snapshots import SNAPSHOT_EPOCHS, best_row, first_snapshot_batch, prune_snapshots
from .streams import TrainingStreams, training_streams
from .task_data import TaskData
from .train_card import make_card, snapshot_base_card
from .train_state import STATE_JSON, apply_state, load_best_weights, read_state, save_state

LOG_EVERY = 20      # batches between progress updates (one device sync each)


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with torch's fused kernel (one pass over each weight instead of a dozen
    elementwise ops: about 9% of a translate-gru step on the CPU). The fused kernel updates
    weights without bumping their version counters, which the inference caches key on
    (models/kernels.py weight_key): a post-step hook bumps them, or a validation after an
    update would decode with the weights of before it."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    optimizer.register_step_post_hook(lambda opt, args, kwargs: torch.autograd.graph.increment_version(params))
    return optimizer


def choose_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def metric_key(task: str) -> str:
    return "val_bleu" if task == "translate" else "val_exact_match"


def validate(model: Seq2Seq, data: TaskData, cfg: TrainConfig, device) -> dict:
    """Teacher-forced loss and the free-running metric on the validation set."""
    loss = teacher_forced_loss(model, data.val, device, amp=cfg.amp)
    out = {"val_loss": round(loss, 4), "val_ppl": round(ppl(loss), 2)}
    if cfg.task == "translate":
        outs = decode_corpus(model, data.val.src, device, beam=1)
        hyps = [data.tgt_vocab.decode(o) for o in outs]
        val = data.val_text["val"]
        out["val_bleu"] = bleu_scores(hyps, val["en"], val["en_raw"])["bleu"]
    else:
        outs = decode_corpus(model, data.val.src, device, beam=1, max_len=cfg.reverse_max_len * 2 + 5)
        out["val_exact_match"] = round(sum(o == t for o, t in zip(outs, data.val.tgt)) / len(outs), 4)
    return out


def extension_allows(stopped: str, cfg: TrainConfig, bad_epochs: int, wall_seconds: float) -> bool:
    """A resumed run whose settings were extended (--epochs, --patience, --max-minutes)
    goes on past the reason it stopped; with the same settings it stays stopped."""
    if stopped.startswith("early stop"):
        return cfg.patience == 0 or bad_epochs < cfg.patience
    if stopped.startswith("time budget"):
        return not cfg.max_minutes or wall_seconds < cfg.max_minutes * 60
    return False


@dataclass
class RunState:
    """What the epoch loop carries from one epoch to the next, and --resume restores."""
    history: list = field(default_factory=list)
    step: int = 0
    start_epoch: int = 0
    best: list | None = None             # (metric, -val_loss) of the best epoch
    bad_epochs: int = 0
    wall_before: float = 0.0             # seconds of earlier sessions of this run
    best_weights: dict | None = None
    best_file: str | None = None
    stopped: str = ""
    parent: dict | None = None           # --init-from: the checkpoint the run started from (init_from.py)


@dataclass
class TrainHooks:
    """Optional observers: `on_epoch` gets each history row; `on_batch` gets {epoch, batch,
    batches, step, loss, ratio} every LOG_EVERY batches; `progress` draws a tqdm bar."""
    progress: bool = True
    on_epoch: Callable[[dict], None] | None = None
    on_batch: Callable[[dict], None] | None = None


def averaged(average: WeightAverage | None):
    """The averaged weights swapped into the model (--ema), or nothing to do."""
    return average.swapped_in() if average is not None else contextlib.nullcontext()


def restore_run(state_path: Path | None, model, optimizer, cfg: TrainConfig, device,
                average: WeightAverage | None = None) -> RunState:
    """--resume: the saved run (rank 0 reads it; other ranks get it broadcast)."""
    ddp = current_dist()
    tensors, info, run = None, {}, RunState()
    if ddp.is_main:
        if not state_path or not (state_path / STATE_JSON).is_file():
            raise Seq2SeqError(f"--resume: no saved state in {state_path}")
        tensors, info = read_state(state_path)
        run.best_weights = load_best_weights(state_path, info)
        run.best_file = Path(info["best_weights_file"]).name if run.best_weights is not None else None
    if ddp.enabled:   # the other ranks may not see rank 0's disk
        info, tensors = broadcast_json(info, device), broadcast_tensors(tensors, device)
    apply_state(tensors, info, model, optimizer)
    if average is not None:
        average.load_state_tensors(tensors)
    run.history, run.step, run.start_epoch = info["history"], info["step"], info["epoch"]
    run.best, run.bad_epochs, run.wall_before = info["best"], info["bad_epochs"], info["wall_seconds"]
    run.stopped = info.get("stopped", "")
    run.parent = info.get("init_from")
    if run.stopped and extension_allows(run.stopped, cfg, run.bad_epochs, run.wall_before):
        run.stopped = ""          # extended: more epochs, more patience or more time than before
    return run


class Snapshots:
    """Writes the run's snapshots (snapshots.py) into OUT/snapshots/NN."""

    def __init__(self, out_dir, model, data: TaskData, cfg: TrainConfig, model_cfg: ModelConfig, device,
                 name: str, resume: bool):
        from . import snapshots
        self.write_snapshot, self.out_dir, self.model, self.data = snapshots.write_snapshot, out_dir, model, data
        self.key = metric_key(cfg.task)
        snapshots.clear_snapshots(out_dir, keep_final=resume)
        self.base = snapshot_base_card(model_cfg, cfg, data, device, name)

    def take(self, label: str, step: int, epoch: float, val_row: dict, wall: float) -> None:
        base = dict(self.base, provenance=dict(self.base["provenance"], wall_seconds=round(wall, 1)))
        self.write_snapshot(self.out_dir, self.model, self.data.src_vocab, self.data.tgt_vocab, base, label=label,
                            step=step, epoch=epoch, metric=self.key, value=val_row.get(self.key),
                            val_loss=val_row.get("val_loss"))


def training_precision(cfg: TrainConfig, device) -> tuple[str, str | None]:
    """The fast path's matmul precision for this run on this machine, and a notice when
    --cpu-bf16 was asked for but can't be given (a run resumed on another kind of CPU)."""
    if not cfg.cpu_bf16 or device.type != "cpu":
        return "float32", None
    if not cpu_has_native_bf16():
        return "float32", ("--cpu-bf16: this CPU has no native bf16 (AVX512-BF16 or AMX), where bf16 matmuls are "
                           "emulated and slower: training in float32")
    return "bf16", None


def train_epoch(net, model, optimizer, batches, cfg: TrainConfig, run: RunState, epoch: int, device,
                hooks: TrainHooks, clock: Callable[[], float], on_quarter: Callable[[], None] | None,
                precision: str = "float32", average: WeightAverage | None = None,
                streams: TrainingStreams | None = None) -> dict:
    """One epoch of updates; returns {loss_sum, tokens, ratios, seconds}. Sets run.stopped
    when the time budget runs out (all ranks leave at the same batch). streams: how each
    batch's forward and backward run (streams.py; None: one stream)."""
    streams = streams or TrainingStreams(model, 1)
    ddp = current_dist()
    loss_sum, tokens, ratios, t0 = torch.zeros((), device=device), 0, [], time.perf_counter()
    bar = None
    if hooks.progress and ddp.is_main:
        from tqdm import tqdm
        bar = tqdm(total=len(batches), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   dynamic_ncols=True, file=sys.stderr)
    for bi, batch in enumerate(batches):
        ratio = teacher_forcing_ratio(cfg.teacher_forcing, run.step)
        ratios.append(ratio)
        batch = batch.to(device)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda"):
            loss, n_tok = streams.loss_and_backward(net, batch, ratio, cfg.teacher_forcing.coin,
                                                    label_smoothing=cfg.label_smoothing, fast=cfg.fast_path,
                                                    precision=precision)
        if cfg.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        optimizer.step()
        if average is not None:
            average.update()
        run.step += 1
        loss_sum += loss.detach() * n_tok
        tokens += n_tok
        if bi % LOG_EVERY == 0 or bi == len(batches) - 1:
            live = float(loss_sum) / max(tokens, 1)     # one sync every LOG_EVERY batches (this rank's loss)
            if bar is not None:
                bar.set_postfix(loss=f"{live:.3f}", tf=f"{ratio:.2f}")
            if hooks.on_batch is not None and ddp.is_main:
                hooks.on_batch({"epoch": epoch + 1, "batch": bi + 1, "batches": len(batches), "step": run.step,
                                "loss": live, "ratio": ratio})
        if bar is not None:
            bar.update(1)
        if on_quarter is not None and epoch == 0 and bi == first_snapshot_batch(len(batches)) \
                and bi < len(batches) - 1:
            on_quarter()
        if cfg.max_minutes:
            over = clock() > cfg.max_minutes * 60
            if ddp.enabled:   # every rank must leave at the same batch: decide together, now and then
                over = bi % LOG_EVERY == 0 and any_rank(over, device)
            if over:
                run.stopped = f"time budget of {cfg.max_minutes} minutes reached in epoch {epoch + 1}"
                break
    if bar is not None:
        bar.close()
    return {"loss_sum": loss_sum, "tokens": tokens, "ratios": ratios, "t0": t0}


def epoch_row(stats: dict, epoch: int, run: RunState, device) -> dict:
    """The history row of an epoch's training part (summed over ranks under torchrun)."""
    loss_sum, tokens, ratios = stats["loss_sum"], stats["tokens"], stats["ratios"]
    if current_dist().enabled:
        import torch.distributed as dist

        totals = torch.stack([loss_sum.double(), torch.tensor(float(tokens), dtype=torch.float64, device=device)])
        dist.all_reduce(totals)
        loss_sum, tokens = totals[0], int(totals[1].item())
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - stats["t0"]
    return {"epoch": epoch + 1, "train_loss": round(float(loss_sum) / max(tokens, 1), 4),
            "tf_ratio": round(sum(ratios) / max(len(ratios), 1), 4),
            "tf_ratio_start": round(ratios[0], 4) if ratios else None,
            "tf_ratio_end": round(ratios[-1], 4) if ratios else None,
            "steps": run.step, "train_seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / max(seconds, 1e-9), 1)}


def close_epoch(row: dict, model, optimizer, data: TaskData, cfg: TrainConfig, model_cfg: ModelConfig,
                run: RunState, device, state_path: Path | None, hooks: TrainHooks, wall: float,
                average: WeightAverage | None = None) -> None:
    """Rank 0 after an epoch: validate, keep the best weights, decide on early stopping,
    save the state. Appends `row` to the history. With a weight average (--ema), the
    averaged weights are the ones validated and kept."""
    t_validate = time.perf_counter()
    with averaged(average):
        row.update(validate(model, data, cfg, device))
        weights_now = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    row["seconds"] = round(row["train_seconds"] + time.perf_counter() - t_validate, 2)
    run.history.append(row)
    value = (row[metric_key(cfg.task)], -row["val_loss"])
    new_best = run.best is None or value > tuple(run.best)
    if new_best:
        run.best, run.bad_epochs = list(value), 0
        run.best_weights = weights_now
        row["best"] = True
    else:
        run.bad_epochs += 1
        if cfg.lr_decay < 1.0:            # reduce on plateau
            for group in optimizer.param_groups:
                group["lr"] *= cfg.lr_decay
    row["lr"] = optimizer.param_groups[0]["lr"]
    if hooks.progress:
        print(json.dumps(row), file=sys.stderr, flush=True)
    if hooks.on_epoch is not None:
        hooks.on_epoch(row)
    if cfg.patience and run.bad_epochs >= cfg.patience:
        run.stopped = f"early stop: no validation improvement for {cfg.patience} epochs"
    if state_path is not None:
        write_best = run.best_weights is not None and (new_best or run.best_file is None)
        written = save_state(state_path, model, optimizer, {
            "epoch": row["epoch"], "step": run.step, "history": run.history, "best": run.best,
            "bad_epochs": run.bad_epochs, "wall_seconds": wall, "stopped": run.stopped,
            "best_weights_file": run.best_file, "init_from": run.parent, "model_config": model_cfg.to_dict(),
            "train_config": cfg.to_dict()},
            best_weights=run.best_weights if write_best else None,
            extra=average.state_tensors() if average is not None else None)
        run.best_file = written.get("best_weights_file")


def train(model_cfg: ModelConfig, cfg: TrainConfig, out_dir: str | None, data: TaskData,
          device: torch.device, state_dir: str | None = None, resume: bool = False, name: str | None = None,
          progress: bool = True, on_epoch: Callable[[dict], None] | None = None,
          on_batch: Callable[[dict], None] | None = None, final_eval: bool = True,
          snapshots: bool = False) -> tuple[Seq2Seq, dict]:
    """Train; returns the best model (by the validation metric) and its card.

    `out_dir` None: nothing is written (the app's live lab). `final_eval` False skips the
    final test metrics (the card's `metrics` is then empty). `snapshots`: keep the weights
    at points of training in OUT/snapshots/NN (snapshots.py). Under torchrun, ranks other
    than 0 return their model and an empty card."""
    ddp, hooks = current_dist(), TrainHooks(progress and current_dist().is_main, on_epoch, on_batch)
    set_seed(cfg.seed)
    model_cfg.src_vocab_size, model_cfg.tgt_vocab_size = len(data.src_vocab), len(data.tgt_vocab)
    model = build_model(model_cfg).to(device)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)
    state_path = Path(state_dir) if state_dir else None
    parent = None
    if cfg.init_from and not resume:    # before the average is made: it starts from the parent's weights
        from .init_from import load_initial_weights
        parent = load_initial_weights(model, model_cfg, data.src_vocab, data.tgt_vocab, cfg.init_from)
    average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None
    run = restore_run(state_path, model, optimizer, cfg, device, average) if resume else RunState(parent=parent)
    net = TrainingLoss(model)
    if ddp.enabled:
        from torch.nn.parallel import DistributedDataParallel

        # also makes every rank start from rank 0's weights
        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    name = name or (Path(out_dir).name if out_dir else "live")
    snaps = Snapshots(out_dir, model, data, cfg, model_cfg, device, name, resume) \
        if snapshots and out_dir is not None and ddp.is_main else None
    t_start = time.perf_counter()
    clock = lambda: run.wall_before + time.perf_counter() - t_start   # noqa: E731 - seconds of the whole run

    def quarter_snapshot():
        with averaged(average):
            snaps.take(f"{first_snapshot_batch(len(batches)) + 1}/{len(batches)} batches of epoch 1", run.step,
                       (first_snapshot_batch(len(batches)) + 1) / len(batches), validate(model, data, cfg, device),
                       clock())
        model.train()

    streams = TrainingStreams(model, training_streams(cfg, device))
    precision, notice = training_precision(cfg, device)
    if notice and ddp.is_main:
        print(f"note: {notice}", file=sys.stderr)
    try:
        for epoch in range(run.start_epoch, cfg.epochs):
            if run.stopped:
                break
            if ddp.enabled:
                torch.manual_seed(rank_seed(cfg.seed, epoch, ddp.rank))
            model.train()
            batches = shard_batches(list(data.train_for_epoch(cfg, epoch).batches(
                cfg.batch_size, shuffle=True, seed=cfg.seed * 7 + epoch)), ddp.rank, ddp.world_size)
            if not batches:
                raise Seq2SeqError(f"no training batch for each of the {ddp.world_size} processes: "
                                   f"use a smaller --batch-size or more training data")
            stats = train_epoch(net, model, optimizer, batches, cfg, run, epoch, device, hooks, clock,
                                quarter_snapshot if snaps is not None else None, precision, average, streams)
            row = dict(epoch_row(stats, epoch, run, device), precision=precision)
            if ddp.is_main:
                close_epoch(row, model, optimizer, data, cfg, model_cfg, run, device, state_path, hooks, clock(),
                            average)
                if snaps is not None and epoch + 1 in SNAPSHOT_EPOCHS:
                    with averaged(average):
                        snaps.take(f"after epoch {epoch + 1}", run.step, epoch + 1, row, clock())
            if ddp.enabled:   # rank 0 alone decided on early stopping
                run.stopped = broadcast_json(run.stopped, device)
    finally:
        streams.close()
    if not ddp.is_main:
        return model, {}
    return finish(model, model_cfg, cfg, data, device, run, clock(), name, out_dir, final_eval, snaps)


def finish(model, model_cfg: ModelConfig, cfg: TrainConfig, data: TaskData, device, run: RunState, wall: float,
           name: str, out_dir, final_eval: bool, snaps: Snapshots | None):
    """The best weights, measured as they will be stored, into the card and checkpoint."""
    if run.best_weights is not None:
        model.load_state_dict(run.best_weights)
    model.eval()
    if cfg.half_weights:
        # The checkpoint stores float16: measure (and record the sample of) exactly those
        # weights, so `seq2seq.evaluate` on the shipped file reproduces the card.
        with torch.no_grad():
            for t in model.state_dict().values():
                if t.is_floating_point():
                    t.copy_(t.half().float())
    ddp = current_dist()
    card = make_card(model, model_cfg, cfg, data, device, run.history, wall, name, run.stopped, final_eval,
                     world_size=ddp.world_size, backend=ddp.backend, parent=run.parent)
    if snaps is not None:
        best = best_row(run.history)
        snaps.take(f"final (best epoch {best.get('epoch')})", best.get("steps", run.step), best.get("epoch") or 0,
                   best, wall)
        prune_snapshots(out_dir, max_bytes=None)       # in step order: none after the final (best) one
    if out_dir is not None:
        card = save_checkpoint(out_dir, model, data.src_vocab, data.tgt_vocab, card, half=cfg.half_weights)
    return model, card
