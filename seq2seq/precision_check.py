"""Is bf16 training on the CPU as good as float32? Train the same model with both, over
several seeds, and compare the validation curves against the float32 seed spread.

    python -m seq2seq.precision_check --data-dir ../shared/data/multi30k \\
        --cache cache/multi30k-tokens.json.gz --epochs 8 --seeds 1,2 --out checkpoints/precision/bf16-check.json

The model and recipe are translate-bahdanau's shipped ones (presets.SHIPPED_SIZES, label
smoothing 0.1, lr 1e-3, batch 128), every run the same number of epochs (no early stop).
Per epoch it records the teacher-forced validation loss and the free-running validation
BLEU (greedy) of every run; both are measured in float32 whatever the run trained in.

The verdict (`verdict`): bf16 passes when, at every epoch, the gap between the bf16 and
float32 means is no larger than the float32 runs' own spread over seeds (max - min) plus
the bf16 runs' spread, for both curves: a difference the seeds alone could make. With one
seed per precision there is no spread to compare with, and the check says so.

Needs a CPU with native bf16 (AVX512-BF16 or AMX); elsewhere bf16 is not used for training
at all (trainer.training_precision), so there is nothing to check."""
from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

from .atomic import atomic_write_json
from .cli import positive_int, run_main
from .config import ModelConfig, TeacherForcingConfig, TrainConfig
from .presets import DATA_DIR, MODEL_SIZES, SHIPPED_SIZES

CURVES = ("val_loss", "val_bleu")
PRECISIONS = {"float32": False, "bf16": True}


def spread(values: list[float]) -> float:
    return max(values) - min(values) if len(values) > 1 else float("nan")


def verdict(runs: list[dict]) -> dict:
    """Compare the bf16 and float32 curves epoch by epoch (see the module doc)."""
    by = {p: [r for r in runs if r["precision"] == p] for p in PRECISIONS}
    epochs = min(len(r["history"]) for r in runs)
    rows, worst = [], {}
    for e in range(epochs):
        row = {"epoch": e + 1}
        for key in CURVES:
            vals = {p: [r["history"][e][key] for r in by[p]] for p in PRECISIONS}
            gap = statistics.mean(vals["bf16"]) - statistics.mean(vals["float32"])
            noise = spread(vals["float32"]) + (spread(vals["bf16"]) if len(vals["bf16"]) > 1 else 0.0)
            row[key] = {"float32_mean": round(statistics.mean(vals["float32"]), 4),
                        "bf16_mean": round(statistics.mean(vals["bf16"]), 4),
                        "gap": round(gap, 4), "seed_spread": round(noise, 4),
                        "within": bool(abs(gap) <= noise) if noise == noise else None}
            if noise == noise:
                worst[key] = max(worst.get(key, 0.0), abs(gap) - noise)
        rows.append(row)
    within = [row[k]["within"] for row in rows for k in CURVES]
    if any(w is None for w in within):
        passed, words = None, "one float32 seed only: no seed spread to compare the bf16 curve with"
    else:
        passed = all(within)
        last = rows[-1]
        words = (f"after {epochs} epochs: val BLEU {last['val_bleu']['bf16_mean']} (bf16) vs "
                 f"{last['val_bleu']['float32_mean']} (float32), val loss {last['val_loss']['bf16_mean']} vs "
                 f"{last['val_loss']['float32_mean']}; "
                 + ("every epoch's gap is within the seed spread" if passed else
                    "some epochs' gaps exceed the seed spread (by at most "
                    + ", ".join(f"{k} {round(v, 4)}" for k, v in worst.items()) + ")"))
    return {"passed": passed, "summary": words, "by_epoch": rows}


def run_check(data, epochs: int, seeds: list[int], log=print) -> dict:
    import torch

    from .errors import Seq2SeqError
    from .models.output import cpu_has_native_bf16
    from .train import train
    from .train_card import cpu_model_name

    if not cpu_has_native_bf16():
        raise Seq2SeqError("this CPU has no native bf16 (AVX512-BF16 or AMX): training never uses bf16 here")
    model_base = dict(MODEL_SIZES["translate"], **SHIPPED_SIZES["translate"])
    runs = []
    for seed in seeds:
        for precision, cpu_bf16 in PRECISIONS.items():
            cfg = TrainConfig(task="translate", epochs=epochs, patience=0, label_smoothing=0.1, seed=seed,
                              eval_beam=1, cpu_bf16=cpu_bf16, teacher_forcing=TeacherForcingConfig())
            t0 = time.perf_counter()
            _, card = train(ModelConfig(arch="bahdanau", **model_base), cfg, None, data, torch.device("cpu"),
                            name=f"bahdanau-{precision}-s{seed}", progress=False, final_eval=False)
            history = [{k: h.get(k) for k in ("epoch", "train_loss", "train_seconds", "tokens_per_s", "precision")
                        + CURVES} for h in card["history"]]
            runs.append({"precision": precision, "seed": seed, "history": history,
                         "seconds": round(time.perf_counter() - t0, 1)})
            log(f"{precision} seed {seed}: " + ", ".join(f"{h['val_bleu']}" for h in history))
    return {"check": "bf16 vs float32 training on the CPU", "model": "translate-bahdanau (shipped sizes and recipe)",
            "epochs": epochs, "seeds": seeds, "cpu": cpu_model_name(), "threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
            "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "runs": runs, "verdict": verdict(runs)}


def main(argv=None) -> int:
    from .train import load_task_data

    p = argparse.ArgumentParser(prog="python -m seq2seq.precision_check", description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=DATA_DIR)
    p.add_argument("--cache", default=None)
    p.add_argument("--epochs", type=positive_int, default=8)
    p.add_argument("--seeds", default="1,2", help="comma-separated training seeds")
    p.add_argument("--out", required=True, help="results JSON")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    data = load_task_data(TrainConfig(task="translate"), args.data_dir, args.cache)
    result = run_check(data, args.epochs, seeds, log=lambda m: print(m, file=sys.stderr, flush=True))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}: {result['verdict']['summary']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
