"""The card of a training run: final metrics with the best weights, the recorded sample,
and honest provenance (device, CPU model and threads, wall seconds, epochs run, why it
stopped). `make_card` returns the descriptive fields; checkpoint.save_checkpoint adds the
rest and writes the typed Card (card.py)."""
from __future__ import annotations

import datetime as dt
import platform
from pathlib import Path

import torch

from .checkpoint import device_provenance, git_commit
from .init_from import chain
from .config import Decoding, ModelConfig, TrainConfig
from .evaluate import choose_decoding, evaluate_reversal, mean_over
from .presets import EVAL_SEED
from .schedules import COIN_RULES, describe
from .task_data import SAMPLE_INPUT, TaskData

REVERSAL_CARD_LENGTHS = range(1, 61)    # every reversal card records exact match by length 1-60


def cpu_model_name() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() is often just x86_64)."""
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
        from .streams import training_streams
        prov.update(cpu_model=cpu_model_name(), cpu_isa=torch.backends.cpu.get_cpu_capability(),
                    cpu_native_bf16=cpu_has_native_bf16(),
                    cpu_threads=torch.get_num_threads(),
                    streams=training_streams(cfg, device))
    return prov


def teacher_forcing_entry(cfg: TrainConfig) -> dict:
    return {**cfg.teacher_forcing.to_dict(), "description": describe(cfg.teacher_forcing),
            "coin_rule": COIN_RULES[cfg.teacher_forcing.coin]}


def snapshot_base_card(model_cfg: ModelConfig, cfg: TrainConfig, data: TaskData, device, name: str) -> dict:
    """The card fields every snapshot of this run shares."""
    return {"name": name, "task": cfg.task, "description": f"{model_cfg.arch} snapshot during training",
            "train_config": cfg.to_dict(), "tokenizers": data.tokenizers, "teacher_forcing": teacher_forcing_entry(cfg),
            "provenance": training_provenance(device, cfg, 0.0, data)}


def translation_metrics(model, cfg: TrainConfig, data: TaskData, device) -> dict:
    """BLEU, sacreBLEU and PPL on val and test 2016, greedy and beam cfg.eval_beam; the
    decoding is chosen on validation BLEU, then reported on both splits."""
    return choose_decoding(model, data.src_vocab, data.tgt_vocab, data.val_text, device,
                           [Decoding(beam) for beam in sorted({1, cfg.eval_beam})])


def reversal_metrics(model, cfg: TrainConfig, data: TaskData, history: list, device) -> dict:
    rev = evaluate_reversal(model, data.src_vocab, REVERSAL_CARD_LENGTHS, cfg.reverse_eval_n, EVAL_SEED, device,
                            beam=1)
    em = rev["exact_match_by_length"]
    return {"val": {"exact_match": max((h["val_exact_match"] for h in history), default=None),
                    "ppl": min((h["val_ppl"] for h in history), default=None)},
            "reversal": rev, "exact_match_1_10": mean_over(em, 1, 10), "exact_match_1_20": mean_over(em, 1, 20),
            "exact_match_21_30": mean_over(em, 21, 30), "exact_match_1_40": mean_over(em, 1, 40),
            "exact_match_41_60": mean_over(em, 41, 60)}


def make_card(model, model_cfg: ModelConfig, cfg: TrainConfig, data: TaskData, device, history, wall, name, stopped,
              final_eval: bool = True, world_size: int = 1, backend: str | None = None,
              parent: dict | None = None) -> dict:
    """Final metrics with the best weights, and everything the card records."""
    if not final_eval:
        metrics = {}
    elif cfg.task == "translate":
        metrics = translation_metrics(model, cfg, data, device)
    else:
        metrics = reversal_metrics(model, cfg, data, history, device)
    from .checkpoint import LoadedCheckpoint
    from .translate import Translator
    sample_in = SAMPLE_INPUT[cfg.task]
    tr = Translator(LoadedCheckpoint(Path("."), {"tokenizers": data.tokenizers, "name": name, "task": cfg.task},
                                     model, data.src_vocab, data.tgt_vocab))
    sample = tr.translate(sample_in, beam=1)
    tokens_per_s = [h["tokens_per_s"] for h in history]
    stopped = stopped or "completed all epochs"
    return {
        "name": name, "task": cfg.task,
        "description": f"{model_cfg.arch} encoder-decoder, {cfg.task} task",
        "train_config": cfg.to_dict(),
        "teacher_forcing": teacher_forcing_entry(cfg),
        "tokenizers": data.tokenizers,
        "metrics": metrics,
        "history": history,
        "stopped": stopped,
        "sample": {"input": sample_in, "beam": 1, "output": sample.text, "output_tokens": sample.output_tokens},
        "provenance": {**training_provenance(device, cfg, wall, data), "epochs_run": len(history), "stopped": stopped,
                       "mixed_precision": mixed_precision(cfg, device, history),
                       "mean_tokens_per_s": round(sum(tokens_per_s) / len(tokens_per_s), 1) if tokens_per_s else None,
                       # processes that trained it (torchrun); tokens_per_s counts them all
                       "world_size": world_size,
                       **({"distributed_backend": backend, "batch_size_per_process": cfg.batch_size}
                          if world_size > 1 else {}),
                       # a continuation (--init-from): where it started, and the cost of the whole model
                       **({"init_from": parent,
                           "wall_seconds_total": round(wall + sum(r.get("wall_seconds", 0.0) for r in chain(parent)),
                                                       1)}
                          if parent else {})},
    }


def mixed_precision(cfg: TrainConfig, device, history: list[dict]) -> str:
    """What the training matmuls ran in: "bf16" (CUDA autocast, or --cpu-bf16 on a CPU with
    native bf16, every epoch), "none" (float32), or "bf16 for epochs ..." when a resumed run
    changed machines."""
    if device.type == "cuda":
        return "bf16" if cfg.amp else "none"
    bf16 = [h["epoch"] for h in history if h.get("precision") == "bf16"]
    if not bf16:
        return "none"
    if len(bf16) == len(history):
        return "bf16"
    return f"bf16 for epochs {bf16}, float32 for the others"
