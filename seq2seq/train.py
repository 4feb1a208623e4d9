"""Train a model and write a checkpoint directory.

    python -m seq2seq.train --task {translate,reverse} --arch {lstm,gru,bahdanau,luong} \
        --out checkpoints/NAME [--data-dir ../shared/data/multi30k] [--tf constant --tf-ratio 0.5] ...

CUDA when present (bf16 mixed precision there), CPU otherwise. Adam, gradient clipping,
early stopping on the free-running validation metric (BLEU, or exact match for reversal),
seeds. The state needed to continue (weights, optimizer, step counter, random states,
history) is saved after every epoch in --state-dir; --resume continues from it.

Teacher forcing: the coin is flipped per time step and per sequence in the batch."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .checkpoint import atomic_write_json, device_provenance, git_commit, save_checkpoint, sha256_file
from .config import ARCHS, TASKS, ModelConfig, TeacherForcingConfig, TrainConfig
from .data import MULTI30K_SPLITS, PairDataset, generate_reversal, tokenized_multi30k
from .errors import Seq2SeqError
from .evaluate import (decode_corpus, evaluate_reversal, evaluate_translation, mean_over, ppl,
                       teacher_forced_loss, bleu_scores)
from .models import Seq2Seq, build_model, count_params
from .schedules import COIN_DOC, KINDS, describe, teacher_forcing_ratio
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
STATE_WEIGHTS, STATE_JSON = "state.safetensors", "state.json"


def save_state(state_dir: Path, model, optimizer, info: dict) -> None:
    """Everything --resume needs, written atomically (tensors first, then the JSON that
    names their sha256)."""
    from safetensors.torch import save_file

    state_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors = {k: v.clone() for k, v in tensors.items()}  # tied weights: separate copies
    opt = optimizer.state_dict()
    for pid, pstate in opt["state"].items():
        for key, val in pstate.items():
            tensors[f"optim.{pid}.{key}"] = (val if torch.is_tensor(val) else torch.tensor(val)).detach().cpu().clone()
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    tmp = state_dir / f".{STATE_WEIGHTS}.tmp{os.getpid()}"
    save_file(tensors, str(tmp))
    os.replace(tmp, state_dir / STATE_WEIGHTS)
    info = dict(info, param_groups=opt["param_groups"],
                weights_sha256=sha256_file(state_dir / STATE_WEIGHTS))
    atomic_write_json(state_dir / STATE_JSON, info)


def load_state(state_dir: Path, model, optimizer) -> dict:
    from safetensors.torch import load_file

    info = json.loads((state_dir / STATE_JSON).read_text())
    if sha256_file(state_dir / STATE_WEIGHTS) != info["weights_sha256"]:
        raise Seq2SeqError(f"{state_dir / STATE_WEIGHTS}: does not match {STATE_JSON}; cannot resume")
    tensors = load_file(str(state_dir / STATE_WEIGHTS))
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
    return info


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


def train(model_cfg: ModelConfig, cfg: TrainConfig, out_dir: str | None, data: TaskData,
          device: torch.device, state_dir: str | None = None, resume: bool = False, name: str | None = None,
          progress: bool = True, on_epoch: Callable[[dict], None] | None = None,
          on_batch: Callable[[dict], None] | None = None, final_eval: bool = True) -> tuple[Seq2Seq, dict]:
    """Train; returns the best model (by the validation metric) and its card.

    `out_dir` None: nothing is written (the app's live lab). `on_epoch` receives each
    history row; `on_batch` receives {epoch, batch, batches, step, loss, ratio} every 20
    batches. `final_eval` False skips the final test metrics (the card's `metrics` is
    then empty): for quick runs that only need the history."""
    set_seed(cfg.seed)
    model_cfg.src_vocab_size, model_cfg.tgt_vocab_size = len(data.src_vocab), len(data.tgt_vocab)
    model = build_model(model_cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    amp = cfg.amp and device.type == "cuda"
    state_path = Path(state_dir) if state_dir else None
    history, step, start_epoch, best, bad_epochs, wall_before = [], 0, 0, None, 0, 0.0
    best_weights = None
    if resume:
        if not state_path or not (state_path / STATE_JSON).is_file():
            raise Seq2SeqError(f"--resume: no saved state in {state_path}")
        info = load_state(state_path, model, optimizer)
        history, step, start_epoch = info["history"], info["step"], info["epoch"]
        best, bad_epochs, wall_before = info["best"], info["bad_epochs"], info["wall_seconds"]
        if info.get("best_weights_file") and Path(info["best_weights_file"]).is_file():
            from safetensors.torch import load_file
            best_weights = load_file(info["best_weights_file"])
    key = metric_key(cfg.task)
    t_start = time.perf_counter()
    stopped = info.get("stopped", "") if resume else ""

    for epoch in range(start_epoch, cfg.epochs):
        if stopped:
            break
        model.train()
        train_ds = data.train_for_epoch(cfg, epoch)
        batches = list(train_ds.batches(cfg.batch_size, shuffle=True, seed=cfg.seed * 7 + epoch))
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
                logits = model(batch.src, batch.src_lens, batch.tgt, teacher_forcing=ratio)  # [B, T-1, V]
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
                live = float(loss_sum) / max(tokens, 1)     # one sync every 20 batches
                if bar is not None:
                    bar.set_postfix(loss=f"{live:.3f}", tf=f"{ratio:.2f}")
                if on_batch is not None:
                    on_batch({"epoch": epoch + 1, "batch": bi + 1, "batches": len(batches), "step": step,
                              "loss": live, "ratio": ratio})
            if bar is not None:
                bar.update(1)
            if cfg.max_minutes and (wall_before + time.perf_counter() - t_start) > cfg.max_minutes * 60:
                stopped = f"time budget of {cfg.max_minutes} minutes reached in epoch {epoch + 1}"
                break
        if bar is not None:
            bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_seconds = time.perf_counter() - t0
        row = {"epoch": epoch + 1, "train_loss": round(float(loss_sum) / max(tokens, 1), 4),
               "tf_ratio": round(sum(ratios) / max(len(ratios), 1), 4),
               "tf_ratio_start": round(ratios[0], 4) if ratios else None,
               "tf_ratio_end": round(ratios[-1], 4) if ratios else None,
               "steps": step, "train_seconds": round(train_seconds, 2),
               "tokens_per_s": round(tokens / max(train_seconds, 1e-9), 1)}
        row.update(validate(model, data, cfg, device))
        row["seconds"] = round(time.perf_counter() - t0, 2)
        history.append(row)
        value = (row[key], -row["val_loss"])
        if best is None or value > tuple(best):
            best, bad_epochs = list(value), 0
            best_weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            row["best"] = True
        else:
            bad_epochs += 1
        if progress:
            print(json.dumps(row), file=sys.stderr, flush=True)
        if on_epoch is not None:
            on_epoch(row)
        if cfg.patience and bad_epochs >= cfg.patience:
            stopped = f"early stop: no validation improvement for {cfg.patience} epochs"
        if state_path is not None:
            best_file = None
            if best_weights is not None:
                from safetensors.torch import save_file
                best_file = str(state_path / "best.safetensors")
                state_path.mkdir(parents=True, exist_ok=True)
                tmp = state_path / f".best.tmp{os.getpid()}"
                save_file({k: v.contiguous() for k, v in best_weights.items()}, str(tmp))
                os.replace(tmp, best_file)
            save_state(state_path, model, optimizer, {
                "epoch": epoch + 1, "step": step, "history": history, "best": best, "bad_epochs": bad_epochs,
                "wall_seconds": wall_before + time.perf_counter() - t_start, "stopped": stopped,
                "best_weights_file": best_file, "model_config": model_cfg.to_dict(),
                "train_config": cfg.to_dict()})

    wall = wall_before + time.perf_counter() - t_start
    if best_weights is not None:
        model.load_state_dict(best_weights)
    model.eval()
    card = make_card(model, model_cfg, cfg, data, device, history, wall, name or (Path(out_dir).name if out_dir else "live"),
                     stopped, final_eval)
    if out_dir is not None:
        card = save_checkpoint(out_dir, model, data.src_vocab, data.tgt_vocab, card, half=cfg.half_weights)
    return model, card


def make_card(model, model_cfg, cfg: TrainConfig, data: TaskData, device, history, wall, name, stopped,
              final_eval: bool = True) -> dict:
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
        last = history[-1] if history else {}
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
        "provenance": {**device_provenance(device), "torch_version": torch.__version__,
                       "git_commit": git_commit(), "trained_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                       "wall_seconds": round(wall, 1), "seed": cfg.seed, "data": data.data_note,
                       "mixed_precision": "bf16" if (cfg.amp and device.type == "cuda") else "none",
                       "mean_tokens_per_s": round(sum(tokens_per_s) / len(tokens_per_s), 1) if tokens_per_s else None},
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m seq2seq.train", description=__doc__.split("\n")[0])
    p.add_argument("--task", choices=TASKS, required=True)
    p.add_argument("--arch", choices=ARCHS, required=True)
    p.add_argument("--out", help="checkpoint directory to write, e.g. checkpoints/reverse-bahdanau")
    p.add_argument("--name", help="name recorded in the card (default: the --out folder name)")
    p.add_argument("--data-dir", default="../shared/data/multi30k", help="Multi30k release files")
    p.add_argument("--cache", default=None, help="token cache JSON.gz: read if present, else written")
    p.add_argument("--state-dir", default=None, help="where resumable state goes (default runs/NAME)")
    p.add_argument("--resume", action="store_true", help="continue from --state-dir")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    g = p.add_argument_group("model (defaults depend on the task)")
    g.add_argument("--emb", type=int)
    g.add_argument("--hidden", type=int)
    g.add_argument("--layers", type=int)
    g.add_argument("--dropout", type=float)
    g.add_argument("--attn-dim", type=int)
    g.add_argument("--tie-embeddings", action="store_true")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("--batch-size", type=int, default=128)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--clip", type=float, default=1.0)
    g.add_argument("--label-smoothing", type=float, default=0.0)
    g.add_argument("--patience", type=int, default=3)
    g.add_argument("--seed", type=int, default=1234)
    g.add_argument("--min-freq", type=int, default=2)
    g.add_argument("--eval-beam", type=int, default=5, help="beam width also tried for the final metrics")
    g.add_argument("--max-minutes", type=float, default=0.0, help="wall-time budget (0: none)")
    g.add_argument("--half", action="store_true", help="store weights as float16")
    g.add_argument("--no-amp", action="store_true", help="no bf16 mixed precision on CUDA")
    g = p.add_argument_group("reversal task")
    g.add_argument("--min-len", type=int, default=1)
    g.add_argument("--max-len", type=int, default=20)
    g.add_argument("--train-size", type=int, default=20000, help="fresh sequences per epoch")
    g.add_argument("--val-size", type=int, default=1000)
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
    cfg = TrainConfig(task=args.task, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      weight_decay=args.weight_decay, clip=args.clip, label_smoothing=args.label_smoothing,
                      patience=args.patience, seed=args.seed, min_freq=args.min_freq,
                      reverse_min_len=args.min_len, reverse_max_len=args.max_len,
                      reverse_train_size=args.train_size, reverse_val_size=args.val_size,
                      max_minutes=args.max_minutes, eval_beam=args.eval_beam, amp=not args.no_amp,
                      half_weights=args.half, teacher_forcing=tf)
    return model_cfg, cfg


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not args.out:
        print("error: --out is required (the checkpoint directory to write)", file=sys.stderr)
        return 2
    name = args.name or Path(args.out).name
    state_dir = args.state_dir or str(Path("runs") / name)
    try:
        model_cfg, cfg = configs_from_args(args)
        if args.resume and (Path(state_dir) / STATE_JSON).is_file():
            info = json.loads((Path(state_dir) / STATE_JSON).read_text())
            model_cfg, cfg = ModelConfig.from_dict(info["model_config"]), TrainConfig.from_dict(info["train_config"])
        device = choose_device(args.device)
        data = load_task_data(cfg, args.data_dir, args.cache)
        model, card = train(model_cfg, cfg, args.out, data, device, state_dir=state_dir, resume=args.resume,
                            name=name)
    except (Seq2SeqError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    m = card["metrics"]
    summary = ({k: m["test2016"][k] for k in ("bleu", "sacrebleu", "ppl", "decoding")} if cfg.task == "translate"
               else {k: m[k] for k in ("exact_match_1_10", "exact_match_1_20", "exact_match_21_30")})
    print(f"wrote {args.out}: {count_params(model):,} params, {json.dumps(summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
