"""Train a model and write a checkpoint directory.

    python -m seq2seq.train --task {translate,reverse} --arch {lstm,gru,bahdanau,luong} \
        --out checkpoints/NAME [--data-dir ../shared/data/multi30k] [--tf constant --tf-ratio 0.5] ...

CUDA when present (bf16 mixed precision there), CPU otherwise. Adam, gradient clipping,
early stopping on the free-running validation metric (BLEU, or exact match for reversal),
seeds. The state needed to continue (weights, optimizer, step counter, random states,
history) is saved after every epoch in --state-dir; --resume continues from it.

Several GPUs or machines: start it with torchrun (DistributedDataParallel; --batch-size is
per process), e.g. `torchrun --nproc_per_node 8 -m seq2seq.train ...`; see
setup_distributed below.

Teacher forcing: the coin is flipped per time step and per sequence in the batch."""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .cli import ArgumentParser, device_or_auto_arg, non_negative_int, positive_int, run_main
from .checkpoint import atomic_write_json, device_provenance, git_commit, save_checkpoint, sha256_file
from .config import ARCHS, TASKS, ModelConfig, TeacherForcingConfig, TrainConfig
from .data import MULTI30K_SPLITS, PairDataset, generate_reversal, tokenized_multi30k
from .errors import Seq2SeqError
from .evaluate import (decode_corpus, evaluate_reversal, evaluate_translation, mean_over, ppl,
                       teacher_forced_loss, bleu_scores)
from .models import Seq2Seq, build_model, count_params
from .schedules import COIN_DOC, KINDS, describe, teacher_forcing_ratio
from .snapshots import SNAPSHOT_EPOCHS, first_snapshot_batch
from .text import REVERSE_ALPHABET
from .vocab import PAD_ID, Vocab

SAMPLE_INPUT = {"translate": "Ein Mann fährt mit dem Fahrrad die Straße entlang.",
                "reverse": "hello world 2026"}

# Sizes used when an option is not given on the command line.
PRESETS = {
    "translate": dict(emb_dim=256, hidden_dim=512, dropout=0.3, attn_dim=256, max_src_len=100, max_out_len=100),
    "reverse": dict(emb_dim=32, hidden_dim=128, dropout=0.0, attn_dim=64, max_src_len=60, max_out_len=80),
}


@dataclass
class TaskData:
    src_vocab: Vocab
    tgt_vocab: Vocab
    tokenizers: dict
    val: PairDataset
    val_text: dict | None          # translation: tokens and raw references for BLEU
    train_fixed: PairDataset | None  # translation: the fixed training set
    data_note: str

    def train_for_epoch(self, cfg: TrainConfig, epoch: int) -> PairDataset:
        if self.train_fixed is not None:
            return self.train_fixed
        # reversal: fresh sequences every epoch, seeded by (seed, epoch)
        seqs = generate_reversal(cfg.reverse_train_size, cfg.reverse_min_len, cfg.reverse_max_len,
                                 cfg.seed * 1000 + epoch, REVERSE_ALPHABET)
        ids = [self.src_vocab.encode(s) for s in seqs]
        return PairDataset(ids, [list(reversed(s)) for s in ids])


def load_task_data(cfg: TrainConfig, data_dir: str | None, cache: str | None) -> TaskData:
    if cfg.task == "reverse":
        vocab = Vocab.from_alphabet(REVERSE_ALPHABET)
        seqs = generate_reversal(cfg.reverse_val_size, cfg.reverse_min_len, cfg.reverse_max_len,
                                 cfg.seed + 555_555, REVERSE_ALPHABET)
        ids = [vocab.encode(s) for s in seqs]
        note = (f"generated reversal sequences over {REVERSE_ALPHABET!r}, lengths "
                f"{cfg.reverse_min_len}-{cfg.reverse_max_len}, {cfg.reverse_train_size} fresh per epoch")
        return TaskData(vocab, vocab, {"src": "chars", "tgt": "chars"},
                        PairDataset(ids, [list(reversed(s)) for s in ids]), None, None, note)
    data = tokenized_multi30k(data_dir, cache, splits=tuple(MULTI30K_SPLITS))
    src_vocab = Vocab.build(data["train"]["de"], cfg.min_freq)
    tgt_vocab = Vocab.build(data["train"]["en"], cfg.min_freq)

    def encode(split):
        return PairDataset([src_vocab.encode(s) for s in data[split]["de"]],
                           [tgt_vocab.encode(t) for t in data[split]["en"]])

    note = (f"Multi30k task 1 de->en (train 29000 / val 1014 / test2016 1000), lowercased spaCy "
            f"blank tokenizers, vocab min_freq {cfg.min_freq}")
    return TaskData(src_vocab, tgt_vocab, {"src": "spacy:de", "tgt": "spacy:en"}, encode("val"),
                    data, encode("train"), note)


def choose_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# ---------------------------------------------------------------- resumable state
# The state dir holds state.json and the tensor files it names. Tensor files are named by
# their content (state-<sha256>.safetensors, best-<sha256>.safetensors) and written before
# state.json is renamed into place: that one rename is the commit, so a run killed at any
# moment leaves the previous complete state or the new one, never a mix. Files no longer
# named by state.json are removed after the commit (or by the next save after a kill).
STATE_JSON = "state.json"
STATE_WEIGHTS = "state.safetensors"   # the fixed name states written before this scheme used
_STATE_FILE = re.compile(r"(state|best)(-[0-9a-f]{16})?\.safetensors|\.(state|best)\S*\.tmp\d+")


def _state_tensors(model, optimizer) -> dict[str, torch.Tensor]:
    """Weights, optimizer state and random states as one flat dict of CPU tensors."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone()   # clone: tied weights get separate copies
               for k, v in model.state_dict().items()}
    for pid, pstate in optimizer.state_dict()["state"].items():
        for key, val in pstate.items():
            tensors[f"optim.{pid}.{key}"] = (val if torch.is_tensor(val) else torch.tensor(val)).detach().cpu().clone()
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    return tensors


def _apply_state(tensors: dict[str, torch.Tensor], info: dict, model, optimizer) -> None:
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, key = k.split(".", 2)
            opt_state.setdefault(int(pid), {})[key] = v
    optimizer.load_state_dict({"state": opt_state, "param_groups": info["param_groups"]})
    torch.set_rng_state(tensors["rng.cpu"])
    if torch.cuda.is_available():
        cuda_states = [tensors[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count()) if f"rng.cuda.{i}" in tensors]
        if cuda_states:
            torch.cuda.set_rng_state_all(cuda_states)


def _write_named_by_content(state_dir: Path, stem: str, tensors: dict[str, torch.Tensor]) -> tuple[str, str]:
    """Write `tensors` to STEM-<sha256 prefix>.safetensors; returns (file name, sha256)."""
    from safetensors.torch import save_file

    tmp = state_dir / f".{stem}.tmp{os.getpid()}"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    with open(tmp, "rb") as f:      # on disk before state.json names it (power cuts)
        os.fsync(f.fileno())
    digest = sha256_file(tmp)
    name = f"{stem}-{digest[:16]}.safetensors"
    os.replace(tmp, state_dir / name)
    return name, digest


def save_state(state_dir: Path, model, optimizer, info: dict,
               best_weights: dict[str, torch.Tensor] | None = None) -> dict:
    """Everything --resume needs, committed atomically (see above). `best_weights`, when
    given, are stored too and named in info["best_weights_file"]; without them the best
    file `info` already names is kept. Returns the info written."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    weights_file, digest = _write_named_by_content(state_dir, "state", _state_tensors(model, optimizer))
    info = dict(info, param_groups=optimizer.state_dict()["param_groups"], weights_file=weights_file,
                weights_sha256=digest)
    if best_weights is not None:
        info["best_weights_file"] = _write_named_by_content(state_dir, "best", best_weights)[0]
    atomic_write_json(state_dir / STATE_JSON, info)          # the commit
    keep = {weights_file, Path(info.get("best_weights_file") or ".").name}
    for p in state_dir.iterdir():
        if p.name not in keep and _STATE_FILE.fullmatch(p.name):
            p.unlink(missing_ok=True)
    return info


def read_state_info(state_dir: Path) -> dict:
    path = Path(state_dir) / STATE_JSON
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Seq2SeqError(f"--resume: no saved state in {state_dir} ({STATE_JSON} missing)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Seq2SeqError(f"{path}: not valid JSON ({e}); cannot resume") from e
    if not isinstance(info, dict) or not {"epoch", "step", "history", "param_groups"} <= set(info):
        raise Seq2SeqError(f"{path}: not a training state written by seq2seq.train; cannot resume")
    return info


def read_state(state_dir: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The saved tensors and info, checked against each other."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    info = read_state_info(state_dir)
    weights = Path(state_dir) / Path(info.get("weights_file", STATE_WEIGHTS)).name
    if not weights.is_file() or sha256_file(weights) != info.get("weights_sha256"):
        raise Seq2SeqError(f"{weights}: missing or does not match {STATE_JSON}; cannot resume")
    try:
        return load_file(str(weights)), info
    except (SafetensorError, OSError, ValueError) as e:
        raise Seq2SeqError(f"{weights}: not a readable safetensors file ({e}); cannot resume") from e


def load_state(state_dir: Path, model, optimizer) -> dict:
    """Restore model, optimizer and random states from `state_dir`; returns the info."""
    tensors, info = read_state(state_dir)
    _apply_state(tensors, info, model, optimizer)
    return info


def load_best_weights(state_dir: Path, info: dict) -> dict[str, torch.Tensor] | None:
    from safetensors.torch import load_file

    name = info.get("best_weights_file")
    path = Path(state_dir) / Path(name).name if name else None   # older states stored a path
    if path is None or not path.is_file():
        return None
    named = re.fullmatch(r"best-([0-9a-f]{16})\.safetensors", path.name)
    if named and not sha256_file(path).startswith(named.group(1)):
        raise Seq2SeqError(f"{path}: does not match its name (corrupt); cannot resume")
    return load_file(str(path))


# ---------------------------------------------------------------- several processes (torchrun)
# `torchrun --nproc_per_node N -m seq2seq.train ...` starts N copies of this program with
# WORLD_SIZE, RANK and LOCAL_RANK set. They join one process group (NCCL on GPUs, gloo on
# CPU); the model is wrapped in DistributedDataParallel, every rank trains on a disjoint
# share of the same seeded batch order, and rank 0 alone validates, prints and writes.

@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current_dist() -> DistInfo:
    """The process group this process belongs to; a lone process otherwise."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return DistInfo(dist.get_rank(), dist.get_world_size(), dist.get_backend())
    return DistInfo()


def setup_distributed(device_name: str = "auto") -> torch.device | None:
    """Under torchrun (WORLD_SIZE > 1): join the process group and return this process's
    device, cuda:LOCAL_RANK with NCCL when CUDA is there and wanted, else CPU with gloo.
    None when this is a lone process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch.distributed as dist

    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    # generous timeout: the other ranks wait while rank 0 validates and writes
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=dt.timedelta(minutes=60))
    return device


def teardown_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_batches(batches: list, rank: int, world_size: int) -> list:
    """This rank's share of an epoch's batches (a distributed sampler over batches): every
    world_size-th batch starting at `rank`, after dropping the last len % world_size, so
    the shares are disjoint and equal in number (each step's gradient all-reduce needs
    every rank)."""
    if world_size == 1:
        return batches
    usable = len(batches) - len(batches) % world_size
    return batches[rank:usable:world_size]


def _broadcast_json(obj, device: torch.device):
    """Rank 0's `obj` (anything JSON holds) on every rank, sent as bytes (no pickle)."""
    import torch.distributed as dist

    if dist.get_rank() == 0:
        data = torch.frombuffer(bytearray(json.dumps(obj).encode()), dtype=torch.uint8).to(device)
        size = torch.tensor([data.numel()], dtype=torch.long, device=device)
    else:
        size = torch.zeros(1, dtype=torch.long, device=device)
    dist.broadcast(size, 0)
    if dist.get_rank() != 0:
        data = torch.empty(int(size), dtype=torch.uint8, device=device)
    dist.broadcast(data, 0)
    return json.loads(bytes(data.cpu().tolist()).decode())


def _broadcast_tensors(tensors: dict[str, torch.Tensor] | None, device: torch.device) -> dict[str, torch.Tensor]:
    """Rank 0's named CPU tensors on every rank (the others may not see rank 0's disk)."""
    import torch.distributed as dist

    meta = _broadcast_json([[k, str(v.dtype).removeprefix("torch."), list(v.shape)] for k, v in tensors.items()]
                           if dist.get_rank() == 0 else None, device)
    out = {}
    for name, dtype, shape in meta:
        buf = (tensors[name].to(device) if dist.get_rank() == 0
               else torch.empty(shape, dtype=getattr(torch, dtype), device=device))
        dist.broadcast(buf, 0)
        out[name] = buf.cpu()
    return out


def _any_rank(flag: bool, device: torch.device) -> bool:
    import torch.distributed as dist

    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _rank_seed(seed: int, epoch: int, rank: int) -> int:
    """Distributed runs: a seed per (epoch, rank), so ranks draw different teacher-forcing
    coins and dropout masks, and a resumed run draws what the uninterrupted one drew."""
    return (seed * 1_000_003 + epoch) * 1_009 + rank


# ---------------------------------------------------------------- training
def validate(model: Seq2Seq, data: TaskData, cfg: TrainConfig, device) -> dict:
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


def metric_key(task: str) -> str:
    return "val_bleu" if task == "translate" else "val_exact_match"


def extension_allows(stopped: str, cfg: TrainConfig, bad_epochs: int, wall_seconds: float) -> bool:
    """A resumed run whose settings were extended (--epochs, --patience, --max-minutes)
    goes on past the reason it stopped; with the same settings it stays stopped."""
    if stopped.startswith("early stop"):
        return cfg.patience == 0 or bad_epochs < cfg.patience
    if stopped.startswith("time budget"):
        return not cfg.max_minutes or wall_seconds < cfg.max_minutes * 60
    return False


def cpu_model_name() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() is often just x86_64)."""
    import platform
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def training_provenance(device: torch.device, cfg: TrainConfig, wall: float, data: TaskData) -> dict:
    from .models.output import cpu_has_native_bf16
    prov = {**device_provenance(device), "torch_version": torch.__version__, "git_commit": git_commit(),
            "trained_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "wall_seconds": round(wall, 1), "seed": cfg.seed, "data": data.data_note}
    if device.type == "cpu":
        prov.update(cpu_model=cpu_model_name(), cpu_native_bf16=cpu_has_native_bf16(),
                    cpu_threads=torch.get_num_threads())
    return prov


def snapshot_base_card(model_cfg: ModelConfig, cfg: TrainConfig, data: TaskData, device, name: str) -> dict:
    """The card fields every snapshot of this run shares."""
    return {"name": name, "task": cfg.task, "description": f"{model_cfg.arch} snapshot during training",
            "train_config": cfg.to_dict(), "tokenizers": data.tokenizers,
            "teacher_forcing": {**cfg.teacher_forcing.to_dict(), "description": describe(cfg.teacher_forcing),
                                "coin": COIN_DOC},
            "provenance": training_provenance(device, cfg, 0.0, data)}


def train(model_cfg: ModelConfig, cfg: TrainConfig, out_dir: str | None, data: TaskData,
          device: torch.device, state_dir: str | None = None, resume: bool = False, name: str | None = None,
          progress: bool = True, on_epoch: Callable[[dict], None] | None = None,
          on_batch: Callable[[dict], None] | None = None, final_eval: bool = True,
          snapshots: bool = False) -> tuple[Seq2Seq, dict]:
    """Train; returns the best model (by the validation metric) and its card.

    `out_dir` None: nothing is written (the app's live lab). `on_epoch` receives each
    history row; `on_batch` receives {epoch, batch, batches, step, loss, ratio} every 20
    batches. `final_eval` False skips the final test metrics (the card's `metrics` is
    then empty): for quick runs that only need the history.

    Inside an initialized process group (torchrun, see setup_distributed) this trains one
    rank of a DistributedDataParallel run; only rank 0 validates, reports, writes the
    state and the checkpoint and returns the card (the other ranks return their model,
    last weights, and an empty card)."""
    ddp = current_dist()
    main_rank = ddp.is_main
    progress = progress and main_rank
    set_seed(cfg.seed)
    model_cfg.src_vocab_size, model_cfg.tgt_vocab_size = len(data.src_vocab), len(data.tgt_vocab)
    model = build_model(model_cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    amp = cfg.amp and device.type == "cuda"
    state_path = Path(state_dir) if state_dir else None
    history, step, start_epoch, best, bad_epochs, wall_before = [], 0, 0, None, 0, 0.0
    best_weights, best_file, info = None, None, {}
    if resume:
        tensors = None
        if main_rank:
            if not state_path or not (state_path / STATE_JSON).is_file():
                raise Seq2SeqError(f"--resume: no saved state in {state_path}")
            tensors, info = read_state(state_path)
            best_weights = load_best_weights(state_path, info)
            best_file = Path(info["best_weights_file"]).name if best_weights is not None else None
        if ddp.enabled:   # the other ranks may not see rank 0's disk
            info, tensors = _broadcast_json(info, device), _broadcast_tensors(tensors, device)
        _apply_state(tensors, info, model, optimizer)
        history, step, start_epoch = info["history"], info["step"], info["epoch"]
        best, bad_epochs, wall_before = info["best"], info["bad_epochs"], info["wall_seconds"]
    net = model
    if ddp.enabled:
        from torch.nn.parallel import DistributedDataParallel

        # also makes every rank start from rank 0's weights
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    key = metric_key(cfg.task)
    t_start = time.perf_counter()
    stopped = info.get("stopped", "") if resume else ""
    if resume and stopped and extension_allows(stopped, cfg, bad_epochs, wall_before):
        stopped = ""          # extended: more epochs, more patience or more time than before
    snap = None
    if snapshots and out_dir is not None and main_rank:
        from . import snapshots as snaps
        snaps.clear_snapshots(out_dir, keep_final=resume)
        snap_card = snapshot_base_card(model_cfg, cfg, data, device, name or Path(out_dir).name)

        def snap(label, epoch_value, val_row):
            snaps.write_snapshot(out_dir, model, data.src_vocab, data.tgt_vocab,
                                 dict(snap_card, provenance=dict(snap_card["provenance"],
                                      wall_seconds=round(wall_before + time.perf_counter() - t_start, 1))),
                                 label=label, step=step, epoch=epoch_value, metric=key,
                                 value=val_row[key], val_loss=val_row["val_loss"])

    for epoch in range(start_epoch, cfg.epochs):
        if stopped:
            break
        if ddp.enabled:
            torch.manual_seed(_rank_seed(cfg.seed, epoch, ddp.rank))
        model.train()
        train_ds = data.train_for_epoch(cfg, epoch)
        batches = list(train_ds.batches(cfg.batch_size, shuffle=True, seed=cfg.seed * 7 + epoch))
        batches = shard_batches(batches, ddp.rank, ddp.world_size)
        if not batches:
            raise Seq2SeqError(f"no training batch for each of the {ddp.world_size} processes: "
                               f"use a smaller --batch-size or more training data")
        loss_sum = torch.zeros((), device=device)
        tokens, ratios, t0 = 0, [], time.perf_counter()
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(batches), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                       dynamic_ncols=True, file=sys.stderr)
        for bi, batch in enumerate(batches):
            ratio = teacher_forcing_ratio(cfg.teacher_forcing, step)
            ratios.append(ratio)
            n_tok = batch.n_target_tokens
            batch = batch.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = net(batch.src, batch.src_lens, batch.tgt, teacher_forcing=ratio)  # [B, T-1, V]
            gold = batch.tgt[:, 1:]
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), gold.reshape(-1),
                                   ignore_index=PAD_ID, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            optimizer.step()
            step += 1
            loss_sum += loss.detach() * n_tok
            tokens += n_tok
            if bi % 20 == 0 or bi == len(batches) - 1:
                live = float(loss_sum) / max(tokens, 1)     # one sync every 20 batches (this rank's loss)
                if bar is not None:
                    bar.set_postfix(loss=f"{live:.3f}", tf=f"{ratio:.2f}")
                if on_batch is not None and main_rank:
                    on_batch({"epoch": epoch + 1, "batch": bi + 1, "batches": len(batches), "step": step,
                              "loss": live, "ratio": ratio})
            if bar is not None:
                bar.update(1)
            if snap is not None and epoch == 0 and bi == first_snapshot_batch(len(batches)) \
                    and bi < len(batches) - 1:
                snap(f"{(bi + 1) / len(batches):.0%} of epoch 1", (bi + 1) / len(batches),
                     validate(model, data, cfg, device))
                model.train()
            if cfg.max_minutes:
                over = (wall_before + time.perf_counter() - t_start) > cfg.max_minutes * 60
                if ddp.enabled:   # every rank must leave at the same batch: decide together, now and then
                    over = bi % 20 == 0 and _any_rank(over, device)
                if over:
                    stopped = f"time budget of {cfg.max_minutes} minutes reached in epoch {epoch + 1}"
                    break
        if bar is not None:
            bar.close()
        if ddp.enabled:   # the history is the global one: sum loss and tokens over the ranks
            import torch.distributed as dist

            totals = torch.stack([loss_sum.double(), torch.tensor(float(tokens), dtype=torch.float64, device=device)])
            dist.all_reduce(totals)
            loss_sum, tokens = totals[0], int(totals[1].item())
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_seconds = time.perf_counter() - t0
        row = {"epoch": epoch + 1, "train_loss": round(float(loss_sum) / max(tokens, 1), 4),
               "tf_ratio": round(sum(ratios) / max(len(ratios), 1), 4),
               "tf_ratio_start": round(ratios[0], 4) if ratios else None,
               "tf_ratio_end": round(ratios[-1], 4) if ratios else None,
               "steps": step, "train_seconds": round(train_seconds, 2),
               "tokens_per_s": round(tokens / max(train_seconds, 1e-9), 1)}
        if main_rank:
            row.update(validate(model, data, cfg, device))
            row["seconds"] = round(time.perf_counter() - t0, 2)
            history.append(row)
            value = (row[key], -row["val_loss"])
            new_best = best is None or value > tuple(best)
            if new_best:
                best, bad_epochs = list(value), 0
                best_weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                row["best"] = True
            else:
                bad_epochs += 1
            if progress:
                print(json.dumps(row), file=sys.stderr, flush=True)
            if snap is not None and epoch + 1 in SNAPSHOT_EPOCHS:
                snap(f"after epoch {epoch + 1}", epoch + 1, row)
            if on_epoch is not None:
                on_epoch(row)
            if cfg.patience and bad_epochs >= cfg.patience:
                stopped = f"early stop: no validation improvement for {cfg.patience} epochs"
            if state_path is not None:
                write_best = best_weights is not None and (new_best or best_file is None)
                written = save_state(state_path, model, optimizer, {
                    "epoch": epoch + 1, "step": step, "history": history, "best": best, "bad_epochs": bad_epochs,
                    "wall_seconds": wall_before + time.perf_counter() - t_start, "stopped": stopped,
                    "best_weights_file": best_file, "model_config": model_cfg.to_dict(),
                    "train_config": cfg.to_dict()},
                    best_weights=best_weights if write_best else None)
                best_file = written.get("best_weights_file")
        if ddp.enabled:   # rank 0 alone decided on early stopping
            stopped = _broadcast_json(stopped, device)

    wall = wall_before + time.perf_counter() - t_start
    if not main_rank:
        return model, {}
    if best_weights is not None:
        model.load_state_dict(best_weights)
    model.eval()
    if cfg.half_weights:
        # The checkpoint stores float16: measure (and record the sample of) exactly those
        # weights, so `seq2seq.evaluate` on the shipped file reproduces the card.
        with torch.no_grad():
            for t in model.state_dict().values():
                if t.is_floating_point():
                    t.copy_(t.half().float())
    card = make_card(model, model_cfg, cfg, data, device, history, wall, name or (Path(out_dir).name if out_dir else "live"),
                     stopped, final_eval, world_size=ddp.world_size, backend=ddp.backend)
    if snap is not None:
        best_row = max(history, key=lambda h: (h[key], -h["val_loss"])) if history else {key: None, "val_loss": None}
        snap(f"final (best epoch {best_row.get('epoch')})", best_row.get("epoch") or 0, best_row)
    if out_dir is not None:
        card = save_checkpoint(out_dir, model, data.src_vocab, data.tgt_vocab, card, half=cfg.half_weights)
    return model, card


def make_card(model, model_cfg, cfg: TrainConfig, data: TaskData, device, history, wall, name, stopped,
              final_eval: bool = True, world_size: int = 1, backend: str | None = None) -> dict:
    """Final metrics with the best weights, and everything the card records."""
    if not final_eval:
        metrics = {}
    elif cfg.task == "translate":
        metrics = {}
        for split in ("val", "test2016"):
            t = data.val_text[split]
            runs = {}
            for beam in sorted({1, cfg.eval_beam}):
                runs[beam] = evaluate_translation(model, data.src_vocab, data.tgt_vocab, t["de"], t["en"],
                                                  t["en_raw"], device, beam=beam)
            metrics[split] = runs
        # decoding chosen on validation BLEU, then reported on both splits
        chosen = max(metrics["val"], key=lambda b: metrics["val"][b]["bleu"])
        metrics = {split: {**runs[chosen], "chosen_on": "val bleu",
                           "by_decoding": {f"beam{b}": {k: r[k] for k in ("bleu", "sacrebleu", "decode_seconds")}
                                           for b, r in runs.items()}}
                   for split, runs in metrics.items()}
    else:
        rev = evaluate_reversal(model, data.src_vocab, range(1, 31), 200, 987654, device, beam=1)
        em = rev["exact_match_by_length"]
        metrics = {"val": {"exact_match": max((h["val_exact_match"] for h in history), default=None),
                           "ppl": min((h["val_ppl"] for h in history), default=None)},
                   "reversal": rev,
                   "exact_match_1_10": mean_over(em, 1, 10), "exact_match_1_20": mean_over(em, 1, 20),
                   "exact_match_21_30": mean_over(em, 21, 30)}
    from .translate import Translator
    from .checkpoint import LoadedCheckpoint
    sample_in = SAMPLE_INPUT[cfg.task]
    tr = Translator(LoadedCheckpoint(Path("."), {"tokenizers": data.tokenizers, "name": name, "task": cfg.task},
                                     model, data.src_vocab, data.tgt_vocab))
    sample = tr.translate(sample_in, beam=1)
    tokens_per_s = [h["tokens_per_s"] for h in history]
    return {
        "name": name, "task": cfg.task,
        "description": f"{model_cfg.arch} encoder-decoder, {cfg.task} task",
        "train_config": cfg.to_dict(),
        "teacher_forcing": {**cfg.teacher_forcing.to_dict(), "description": describe(cfg.teacher_forcing),
                            "coin": COIN_DOC},
        "tokenizers": data.tokenizers,
        "metrics": metrics,
        "history": history,
        "stopped": stopped or "completed all epochs",
        "sample": {"input": sample_in, "beam": 1, "output": sample.text, "output_tokens": sample.output_tokens},
        "provenance": {**training_provenance(device, cfg, wall, data),
                       "epochs_run": len(history), "stopped": stopped or "completed all epochs",
                       "mixed_precision": "bf16" if (cfg.amp and device.type == "cuda") else "none",
                       "mean_tokens_per_s": round(sum(tokens_per_s) / len(tokens_per_s), 1) if tokens_per_s else None,
                       # processes that trained it (torchrun); tokens_per_s counts them all
                       "world_size": world_size,
                       **({"distributed_backend": backend, "batch_size_per_process": cfg.batch_size}
                          if world_size > 1 else {})},
    }


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m seq2seq.train", description=__doc__.split("\n")[0])
    p.add_argument("--task", choices=TASKS, required=True)
    p.add_argument("--arch", choices=ARCHS, required=True)
    p.add_argument("--out", help="checkpoint directory to write, e.g. checkpoints/reverse-bahdanau")
    p.add_argument("--name", help="name recorded in the card (default: the --out folder name)")
    p.add_argument("--data-dir", default="../shared/data/multi30k", help="Multi30k release files")
    p.add_argument("--cache", default=None, help="token cache JSON.gz: read if present, else written")
    p.add_argument("--state-dir", default=None, help="where resumable state goes (default runs/NAME)")
    p.add_argument("--resume", action="store_true", help="continue from --state-dir")
    p.add_argument("--device", default="auto", type=device_or_auto_arg,
                   help="auto | cpu | cuda (under torchrun: CUDA means cuda:LOCAL_RANK)")
    g = p.add_argument_group("model (defaults depend on the task)")
    g.add_argument("--emb", type=positive_int)
    g.add_argument("--hidden", type=positive_int)
    g.add_argument("--layers", type=positive_int)
    g.add_argument("--dropout", type=float)
    g.add_argument("--attn-dim", type=positive_int)
    g.add_argument("--tie-embeddings", action="store_true")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=positive_int, default=None, help="default 10; with --resume: extend to this many")
    g.add_argument("--batch-size", type=positive_int, default=128,
                   help="per process under torchrun")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--clip", type=float, default=1.0)
    g.add_argument("--label-smoothing", type=float, default=0.0)
    g.add_argument("--patience", type=non_negative_int, default=None,
                   help="early-stopping patience in epochs (default 3; 0: never); with --resume: extend")
    g.add_argument("--seed", type=int, default=1234)
    g.add_argument("--min-freq", type=positive_int, default=2)
    g.add_argument("--eval-beam", type=positive_int, default=5, help="beam width also tried for the final metrics")
    g.add_argument("--max-minutes", type=float, default=None, help="wall-time budget (0, the default: none); "
                   "with --resume: extend")
    g.add_argument("--snapshots", action="store_true",
                   help="keep the weights at points of training in OUT/snapshots/NN (see seq2seq.snapshots)")
    g.add_argument("--half", action="store_true", help="store weights as float16")
    g.add_argument("--no-amp", action="store_true", help="no bf16 mixed precision on CUDA")
    g = p.add_argument_group("reversal task")
    g.add_argument("--min-len", type=positive_int, default=1)
    g.add_argument("--max-len", type=positive_int, default=20)
    g.add_argument("--train-size", type=positive_int, default=20000, help="fresh sequences per epoch")
    g.add_argument("--val-size", type=positive_int, default=1000)
    g = p.add_argument_group("teacher forcing (coin per time step and per sequence)")
    g.add_argument("--tf", choices=KINDS, default="constant")
    g.add_argument("--tf-ratio", type=float, default=1.0, help="constant ratio")
    g.add_argument("--tf-k", type=float, default=None, help="linear start / exponential base / inverse-sigmoid k")
    g.add_argument("--tf-c", type=float, default=0.0, help="linear: decrease per batch")
    g.add_argument("--tf-min", type=float, default=0.0, help="linear: floor")
    return p


def configs_from_args(args) -> tuple[ModelConfig, TrainConfig]:
    preset = dict(PRESETS[args.task])
    if args.arch == "lstm":
        preset["n_layers"] = 2
    for opt, key in (("emb", "emb_dim"), ("hidden", "hidden_dim"), ("layers", "n_layers"),
                     ("dropout", "dropout"), ("attn_dim", "attn_dim")):
        if getattr(args, opt) is not None:
            preset[key] = getattr(args, opt)
    model_cfg = ModelConfig(arch=args.arch, tie_embeddings=args.tie_embeddings, **preset)
    default_k = {"linear": 1.0, "exponential": 0.999, "inverse_sigmoid": 100.0}.get(args.tf, 1.0)
    tf = TeacherForcingConfig(kind=args.tf, ratio=args.tf_ratio,
                              k=args.tf_k if args.tf_k is not None else default_k,
                              c=args.tf_c, eps_min=args.tf_min)
    cfg = TrainConfig(task=args.task, epochs=args.epochs or 10, batch_size=args.batch_size, lr=args.lr,
                      weight_decay=args.weight_decay, clip=args.clip, label_smoothing=args.label_smoothing,
                      patience=3 if args.patience is None else args.patience, seed=args.seed, min_freq=args.min_freq,
                      reverse_min_len=args.min_len, reverse_max_len=args.max_len,
                      reverse_train_size=args.train_size, reverse_val_size=args.val_size,
                      max_minutes=args.max_minutes or 0.0, eval_beam=args.eval_beam, amp=not args.no_amp,
                      half_weights=args.half, teacher_forcing=tf)
    return model_cfg, cfg


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if not args.out:
        p.error("--out is required (the checkpoint directory to write)")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        p.error(f"--out {args.out}: exists and is not a directory")
    if args.min_len > args.max_len:
        p.error(f"--min-len {args.min_len} is larger than --max-len {args.max_len}")
    name = args.name or Path(args.out).name
    state_dir = args.state_dir or str(Path("runs") / name)
    ddp_device = setup_distributed(args.device)      # None unless started by torchrun
    try:
        model_cfg, cfg = configs_from_args(args)
        ddp = current_dist()
        if args.resume and ddp.is_main and (Path(state_dir) / STATE_JSON).is_file():
            info = read_state_info(Path(state_dir))   # the saved run's settings win
            model_cfg, cfg = ModelConfig.from_dict(info["model_config"]), TrainConfig.from_dict(info["train_config"])
            # the saved run's settings win, except the limits given again to extend it
            for opt, field_name in (("epochs", "epochs"), ("patience", "patience"), ("max_minutes", "max_minutes")):
                if getattr(args, opt) is not None:
                    setattr(cfg, field_name, getattr(args, opt))
        device = ddp_device or choose_device(args.device)
        if ddp.enabled:
            cfgs = _broadcast_json([model_cfg.to_dict(), cfg.to_dict()], device)
            model_cfg, cfg = ModelConfig.from_dict(cfgs[0]), TrainConfig.from_dict(cfgs[1])
        data = load_task_data(cfg, args.data_dir, args.cache)
        model, card = train(model_cfg, cfg, args.out, data, device, state_dir=state_dir, resume=args.resume,
                            name=name, snapshots=args.snapshots)
    except ValueError as e:    # bad settings (e.g. a negative --lr) that torch refuses
        raise Seq2SeqError(str(e)) from e
    finally:
        teardown_distributed()
    if not card:               # a rank other than 0: rank 0 reports
        return 0
    m = card["metrics"]
    summary = ({k: m["test2016"][k] for k in ("bleu", "sacrebleu", "ppl", "decoding")} if cfg.task == "translate"
               else {k: m[k] for k in ("exact_match_1_10", "exact_match_1_20", "exact_match_21_30")})
    print(f"wrote {args.out}: {count_params(model):,} params, {json.dumps(summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
