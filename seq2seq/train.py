"""Train a model and write a checkpoint directory (the command line).

    python -m seq2seq.train --task {translate,reverse} --arch {lstm,gru,bahdanau,luong} \
        --out checkpoints/NAME [--data-dir ../shared/data/multi30k] [--tf constant --tf-ratio 0.5] ...

CUDA when present (bf16 mixed precision there), CPU otherwise. The state needed to
continue (weights, optimizer, step counter, random states, history) is saved after every
epoch in --state-dir; --resume continues from it, and with a larger --epochs, --patience
or --max-minutes extends it. Several GPUs or machines: start it with torchrun
(`torchrun --nproc_per_node 8 -m seq2seq.train ...`; --batch-size is per process).

The loop is trainer.py; training state train_state.py; torchrun helpers distributed.py;
the card train_card.py and card.py; the task's data task_data.py."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .cli import ArgumentParser, device_or_auto_arg, non_negative_int, positive_int, run_main
from .config import ARCHS, COIN_GRANULARITIES, TASKS, ModelConfig, TeacherForcingConfig, TrainConfig
from .distributed import broadcast_json, current_dist, setup_distributed, shard_batches, teardown_distributed
from .errors import Seq2SeqError
from .init_from import model_config_from
from .models import count_params
from .presets import DATA_DIR, MODEL_SIZES, default_layers
from .schedules import KINDS
from .task_data import SAMPLE_INPUT, TaskData, load_task_data
from .train_card import cpu_model_name, make_card
from .train_state import STATE_JSON, load_state, read_state, read_state_info, save_state
from .trainer import choose_device, extension_allows, metric_key, train, validate

# the names other modules and tests import from here
__all__ = ["SAMPLE_INPUT", "STATE_JSON", "TaskData", "build_parser", "choose_device", "configs_from_args",
           "cpu_model_name", "extension_allows", "load_state", "load_task_data", "main", "make_card", "metric_key",
           "read_state", "read_state_info", "save_state", "shard_batches", "train", "validate"]
DEFAULTS = TrainConfig()    # the command line's defaults are the config's (one place to change them)
EXTENDABLE = ("epochs", "patience", "max_minutes", "lr_decay")   # --resume with these given again extends the run


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m seq2seq.train", description=__doc__.split("\n")[0])
    p.add_argument("--task", choices=TASKS, required=True)
    p.add_argument("--arch", choices=ARCHS, required=True)
    p.add_argument("--out", help="checkpoint directory to write, e.g. checkpoints/reverse-bahdanau")
    p.add_argument("--name", help="name recorded in the card (default: the --out folder name)")
    p.add_argument("--data-dir", default=DATA_DIR, help="Multi30k release files")
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
    g.add_argument("--batch-size", type=positive_int, default=DEFAULTS.batch_size,
                   help="per process under torchrun")
    g.add_argument("--lr", type=float, default=DEFAULTS.lr)
    g.add_argument("--lr-decay", type=float, default=None,
                   help="multiply the learning rate by this after each epoch without validation improvement "
                        "(default 1: off); with --resume: set it for the rest of the run")
    g.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay)
    g.add_argument("--clip", type=float, default=DEFAULTS.clip)
    g.add_argument("--label-smoothing", type=float, default=DEFAULTS.label_smoothing)
    g.add_argument("--patience", type=non_negative_int, default=None,
                   help="early-stopping patience in epochs (default 3; 0: never); with --resume: extend")
    g.add_argument("--seed", type=int, default=DEFAULTS.seed)
    g.add_argument("--min-freq", type=positive_int, default=DEFAULTS.min_freq)
    g.add_argument("--src-bpe", type=non_negative_int, default=DEFAULTS.src_bpe, metavar="MERGES",
                   help="translation: split German source words into byte-pair pieces with this many merges, "
                        "learned on the training set (0: whole words, the default)")
    g.add_argument("--eval-beam", type=positive_int, default=5, help="beam width also tried for the final metrics")
    g.add_argument("--max-minutes", type=float, default=None, help="wall-time budget (0, the default: none); "
                   "with --resume: extend")
    g.add_argument("--init-from", default="", metavar="CKPT",
                   help="start from this checkpoint's weights (same sizes and vocabularies; a fresh optimizer and "
                        "schedule): a continuation, recorded in the card's provenance")
    g.add_argument("--snapshots", action="store_true",
                   help="keep the weights at points of training in OUT/snapshots/NN (see seq2seq.snapshots)")
    g.add_argument("--half", action="store_true", help="store weights as float16")
    g.add_argument("--plain-loop", action="store_true",
                   help="train with the plain step loop instead of the fast path (same values, slower)")
    g.add_argument("--no-amp", action="store_true", help="no bf16 mixed precision on CUDA")
    g.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="validate, keep and ship an exponential moving average of the weights, e.g. 0.999 "
                        "(seq2seq/averaging.py; default 0: off)")
    g.add_argument("--streams", type=non_negative_int, default=0, metavar="N",
                   help="CPU: split every batch across N threads, each part's forward and backward on its own "
                        "core (same loss and gradient; seq2seq/streams.py); default 0: one per intra-op thread")
    g.add_argument("--cpu-bf16", action="store_true",
                   help="CPU: the fast path's matmuls in bfloat16 (float32 accumulation, softmax and loss) where "
                        "the CPU multiplies bf16 natively (AVX512-BF16, AMX); float32 elsewhere, with a notice. "
                        "Validation and evaluation stay float32")
    g = p.add_argument_group("reversal task")
    g.add_argument("--min-len", type=positive_int, default=DEFAULTS.reverse_min_len)
    g.add_argument("--max-len", type=positive_int, default=DEFAULTS.reverse_max_len)
    g.add_argument("--train-size", type=positive_int, default=DEFAULTS.reverse_train_size,
                   help="fresh sequences per epoch")
    g.add_argument("--val-size", type=positive_int, default=DEFAULTS.reverse_val_size)
    g.add_argument("--eval-n", type=positive_int, default=DEFAULTS.reverse_eval_n,
                   help="fresh sequences per length for the card's exact match by length 1-60 (recorded as "
                        "n_per_length)")
    g = p.add_argument_group("teacher forcing (coin per time step and per sequence)")
    g.add_argument("--tf", choices=KINDS, default="constant")
    g.add_argument("--tf-ratio", type=float, default=1.0, help="constant ratio")
    g.add_argument("--tf-k", type=float, default=None, help="linear start / exponential base / inverse-sigmoid k")
    g.add_argument("--tf-c", type=float, default=0.0, help="linear: decrease per batch")
    g.add_argument("--tf-min", type=float, default=0.0, help="linear: floor")
    g.add_argument("--tf-coin", choices=COIN_GRANULARITIES, default="token",
                   help="token: a coin per sequence and step (default); step: one coin per step for the "
                        "whole batch (the PyTorch tutorials' rule)")
    return p


SIZE_OPTIONS = (("emb", "emb_dim"), ("hidden", "hidden_dim"), ("layers", "n_layers"), ("attn_dim", "attn_dim"))


def configs_from_args(args) -> tuple[ModelConfig, TrainConfig]:
    preset = dict(MODEL_SIZES[args.task], n_layers=default_layers(args.arch))
    for opt, key in (*SIZE_OPTIONS, ("dropout", "dropout")):
        if getattr(args, opt) is not None:
            preset[key] = getattr(args, opt)
    model_cfg = ModelConfig(arch=args.arch, tie_embeddings=args.tie_embeddings, **preset)
    default_k = {"linear": 1.0, "exponential": 0.999, "inverse_sigmoid": 100.0}.get(args.tf, 1.0)
    tf = TeacherForcingConfig(kind=args.tf, ratio=args.tf_ratio,
                              k=args.tf_k if args.tf_k is not None else default_k,
                              c=args.tf_c, eps_min=args.tf_min, coin=args.tf_coin)
    cfg = TrainConfig(task=args.task, epochs=args.epochs or DEFAULTS.epochs, batch_size=args.batch_size, lr=args.lr,
                      lr_decay=1.0 if args.lr_decay is None else args.lr_decay,
                      weight_decay=args.weight_decay, clip=args.clip, label_smoothing=args.label_smoothing,
                      patience=DEFAULTS.patience if args.patience is None else args.patience, seed=args.seed,
                      min_freq=args.min_freq,
                      src_bpe=args.src_bpe,
                      reverse_min_len=args.min_len, reverse_max_len=args.max_len,
                      reverse_train_size=args.train_size, reverse_val_size=args.val_size,
                      reverse_eval_n=args.eval_n,
                      max_minutes=args.max_minutes or 0.0, eval_beam=args.eval_beam, amp=not args.no_amp,
                      half_weights=args.half, fast_path=not args.plain_loop, cpu_bf16=args.cpu_bf16,
                      streams=args.streams,
                      ema_decay=args.ema, init_from=args.init_from, teacher_forcing=tf)
    if args.init_from:          # a continuation keeps its parent's sizes
        parent_cfg = model_config_from(args.init_from, args.dropout)
        given = {key: getattr(model_cfg, key) for opt, key in SIZE_OPTIONS if getattr(args, opt) is not None}
        differ = [f"{k} {v} (the checkpoint's {getattr(parent_cfg, k)})" for k, v in
                  {"arch": args.arch, **given}.items() if getattr(parent_cfg, k) != v]
        if differ:
            raise Seq2SeqError(f"--init-from {args.init_from}: {', '.join(differ)}")
        model_cfg = parent_cfg
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
            for option in EXTENDABLE:
                if getattr(args, option) is not None:
                    setattr(cfg, option, getattr(args, option))
        device = ddp_device or choose_device(args.device)
        if ddp.enabled:
            cfgs = broadcast_json([model_cfg.to_dict(), cfg.to_dict()], device)
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
