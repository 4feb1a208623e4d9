"""Teacher forcing vs scheduled sampling: train the same model under every policy and
write one compact results file per sweep.

    python -m seq2seq.sweep reverse [--device cuda] [--jobs N] [size options]
    python -m seq2seq.sweep translate --data-dir ../shared/data/multi30k --cache cache/multi30k-tokens.json.gz

reverse:   archs gru (2 layers) and bahdanau at the shipped reversal sizes, lengths 1-40;
           constant ratios 0, 0.25, 0.5, 0.75, 1, the linear, exponential and
           inverse-sigmoid decays, and the tutorials' rule (ratio 0.5, one coin per step
           for the whole batch); 3 seeds each.
translate: bahdanau at the shipped size; constant 0, 0.5, 0.75, 1, the linear and
           inverse-sigmoid decays and the tutorials' rule, 1 seed; then 2 more seeds for
           constant 1 and for the best scheduled policy (`best_scheduled`).

The decays are parameterized from the planned number of training batches so each goes
from ~1 at the first batch to ~0 (END_RATIO) at the last; their floor is 0. Early stopping
is off, so every run sees its whole schedule and the same number of updates; train()
returns the best epoch's weights by the free-running validation metric (a teacher-forced
loss would favour ratio 1 by construction) and those are evaluated.

Every run records its per-epoch history (teacher-forced validation loss, free-running
validation metric, the ratio in effect), its final test metric, the metric by source
length, and token accuracy by output position both teacher-forced and free-running (the
exposure-bias curve).

Every run goes through seq2seq.train.train(). Runs are spread over `--jobs` worker
processes (spawned, so CUDA works: on a GPU machine every worker trains on the one GPU).
The results file (default checkpoints/sweeps/<sweep>.json) is rewritten atomically after
every finished run, so an interrupted sweep leaves its finished runs readable; `--resume`
skips runs already in the file with the same configuration. Weights (float16) are kept for
the first seed of every reversal setting and for every translation run under
checkpoints/sweeps/<sweep>/<run-name>/."""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from .presets import DATA_DIR, EVAL_SEED, MODEL_SIZES, SWEEP_SIZES
from .config import ARCHS as ARCH_NAMES, ModelConfig, TeacherForcingConfig, TrainConfig
from .data import bucketed_batches
from .schedules import describe, teacher_forcing_ratio

FORMAT_VERSION = 2           # 2: the tutorials' rule, extra seeds, teacher-forced position accuracy
SWEEPS = ("reverse", "translate")
END_RATIO = 0.01             # every decay reaches this (or less) at the last planned batch
DECAY_SLUGS = {"linear": "linear", "exponential": "exponential", "inverse_sigmoid": "inverse-sigmoid"}
DECAY_LABELS = {"linear": "linear decay", "exponential": "exponential decay",
                "inverse_sigmoid": "inverse-sigmoid decay"}

FULL = SWEEP_SIZES   # the full sweeps (presets.py); the reduced CPU form changes only size options
SIZE_OPTIONS = ("archs", "seeds", "extra_seeds", "epochs", "train_size", "max_len", "emb", "hidden", "attn_dim",
                "layers", "dropout", "tie", "label_smoothing", "batch_size", "lr", "val_size", "eval_n")
TUTORIALS_RULE = "tutorials' rule 0.5"
BASELINE = "constant 1"        # teacher forcing throughout: what scheduled policies are measured against


# ---------------------------------------------------------------- the settings grid
@dataclass(frozen=True)
class Setting:
    label: str                      # what a person reads: "constant 0.25", "linear decay"
    slug: str                       # for run names and folders: "tf0.25", "linear"
    tf: TeacherForcingConfig

    @property
    def scheduled(self) -> bool:
        """Mixes gold and predicted inputs (0 < ratio < 1 at some point): constant 0 and
        constant 1 are not scheduled sampling."""
        return not (self.tf.kind == "constant" and self.tf.ratio in (0.0, 1.0))

    def to_dict(self) -> dict:
        return {"label": self.label, "slug": self.slug, "teacher_forcing": self.tf.to_dict(),
                "description": describe(self.tf), "coin": self.tf.coin, "scheduled": self.scheduled,
                "tutorials_rule": self.label == TUTORIALS_RULE,
                "floor": self.tf.eps_min if self.tf.kind == "linear" else (self.tf.ratio if self.tf.kind == "constant" else 0.0)}


def constant_setting(ratio: float) -> Setting:
    return Setting(f"constant {ratio:g}", f"tf{ratio:g}", TeacherForcingConfig("constant", ratio=float(ratio)))


def tutorials_rule_setting(ratio: float = 0.5) -> Setting:
    """The PyTorch tutorials' rule: ratio 0.5, but one coin per step for the whole batch."""
    return Setting(TUTORIALS_RULE, f"tutorial{ratio:g}", TeacherForcingConfig("constant", ratio=ratio, coin="step"))


def inverse_sigmoid_k(total_batches: int, end: float = END_RATIO) -> float:
    """k with k / (k + exp(total/k)) = end: the largest k (slowest decay, start nearest 1)
    that still reaches `end` by the last batch. The value at `total` grows with k, so
    bisect; k >= 1 keeps the start at 0.5 or more."""
    def at_end(k: float) -> float:
        return k / (k + math.exp(min(total_batches / k, 700.0)))

    lo, hi = 1.0, max(2.0, float(total_batches))
    if at_end(lo) > end:          # too few batches to get there: decay as fast as allowed
        return 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if at_end(mid) <= end else (lo, mid)
    return round(lo, 4)


def decay_setting(kind: str, total_batches: int, end: float = END_RATIO) -> Setting:
    """A decay from ~1 at batch 0 to <= `end` at batch `total_batches` (floor 0)."""
    n = max(1, int(total_batches))
    if kind == "linear":
        tf = TeacherForcingConfig("linear", k=1.0, c=1.0 / n, eps_min=0.0)        # 0 at batch n
    elif kind == "exponential":
        tf = TeacherForcingConfig("exponential", k=round(end ** (1.0 / n), 8))     # end at batch n
    elif kind == "inverse_sigmoid":
        tf = TeacherForcingConfig("inverse_sigmoid", k=inverse_sigmoid_k(n, end))
    else:
        raise ValueError(f"unknown decay {kind!r}; expected one of {tuple(DECAY_SLUGS)}")
    return Setting(DECAY_LABELS[kind], DECAY_SLUGS[kind], tf)


def sweep_settings(sweep: str, total_batches: int) -> list[Setting]:
    spec = FULL[sweep]
    return ([constant_setting(r) for r in spec["constants"]]
            + [decay_setting(kind, total_batches) for kind in spec["decays"]]
            + ([tutorials_rule_setting()] if spec.get("tutorials_rule") else []))


def run_metric(run: dict, sweep: str) -> float | None:
    """The free-running validation metric a run was kept by (BLEU or exact match)."""
    final = run.get("final") or {}
    return final.get("bleu_val" if sweep == "translate" else "val_exact_match")


def best_scheduled(runs: list[dict], settings: list[dict], sweep: str) -> str | None:
    """The scheduled policy (see Setting.scheduled) with the best mean free-running
    validation metric over its finished runs; None if none has finished."""
    scheduled = {s["label"] for s in settings if s.get("scheduled")}
    scores: dict[str, list[float]] = {}
    for r in runs:
        m = run_metric(r, sweep)
        if r.get("setting") in scheduled and "error" not in r and m is not None:
            scores.setdefault(r["setting"], []).append(m)
    if not scores:
        return None
    order = [s["label"] for s in settings]
    return max(scores, key=lambda k: (sum(scores[k]) / len(scores[k]), -order.index(k)))


def training_order(specs: list[RunSpec], settings: list[dict]) -> list[RunSpec]:
    """The order runs are trained in: seed by seed (every setting's first seed before any
    second), and within a seed constant 1 first, then the scheduled policies, then the rest
    (constant 0), the grid's order within each. A sweep cut short then still holds what its
    comparisons and the app's replay need first: every policy once, the baseline and the
    policies measured against it first. The results file keeps the grid's order whatever
    the training order."""
    scheduled = {s["label"] for s in settings if s.get("scheduled")}
    rank = {s.name: (s.seed, 0 if s.label == BASELINE else 1 if s.label in scheduled else 2, i)
            for i, s in enumerate(specs)}
    return sorted(specs, key=lambda s: rank[s.name])


def batches_per_epoch(n_examples: int, batch_size: int) -> int:
    """What train() will see: the same bucketing, so the count is exact."""
    return len(bucketed_batches([1] * n_examples, batch_size, shuffle=True))


def schedule_check(tf: TeacherForcingConfig, total_batches: int) -> dict:
    """The ratio at the first, middle and last planned batch (recorded with each setting)."""
    return {"start": round(teacher_forcing_ratio(tf, 0), 4),
            "middle": round(teacher_forcing_ratio(tf, total_batches // 2), 4),
            "end": round(teacher_forcing_ratio(tf, total_batches), 4)}


@dataclass
class RunSpec:
    """Everything one worker needs (picklable: plain data only)."""
    sweep: str
    name: str
    arch: str
    label: str
    seed: int
    model: dict                     # ModelConfig.to_dict()
    train: dict                     # TrainConfig.to_dict(), seed and teacher forcing set
    device: str
    threads: int                    # torch threads in the worker (0: leave torch's default)
    keep_dir: str | None            # absolute checkpoint directory, or None
    keep_rel: str | None            # the same, relative to the results file's folder
    eval_lengths: tuple[int, int] | None
    eval_n: int | None
    data_dir: str | None
    cache: str | None
    state_dir: str | None = None    # training state, saved after every epoch (an interrupted run resumes)


def plan(sweep: str, opts: dict, out_path: Path, device: str, threads: int,
         data_dir: str | None = None, cache: str | None = None, train_examples: int | None = None,
         only: list[str] | None = None, extra: dict[str, list[int]] | None = None,
         state_root: str | None = None) -> tuple[list[RunSpec], dict]:
    """The grid: archs x settings x seeds -> run specs, plus the sweep's shared configuration.

    `opts` holds the size options (SIZE_OPTIONS). `train_examples` is the translation
    training-set size (reversal draws `train_size` fresh sequences per epoch). `only`
    keeps the settings with these labels or slugs (for quick partial sweeps). `extra`
    (setting label -> seeds) adds runs beyond `opts["seeds"]`: the second pass. `state_root`:
    each run saves its training state after every epoch in STATE_ROOT/SWEEP/RUN-NAME."""
    if sweep not in SWEEPS:
        raise ValueError(f"unknown sweep {sweep!r}; expected one of {SWEEPS}")
    n_train = opts["train_size"] if sweep == "reverse" else train_examples
    if not n_train:
        raise ValueError("the number of training examples per epoch is needed to plan the decays")
    total_batches = batches_per_epoch(n_train, opts["batch_size"]) * opts["epochs"]
    settings = sweep_settings(sweep, total_batches)
    if only:
        settings = [s for s in settings if s.label in only or s.slug in only]
        if not settings:
            raise ValueError(f"--settings {only} matches none of the sweep's settings")
    task = "reverse" if sweep == "reverse" else "translate"
    layers = dict(opts.get("layers") or ())
    model_base = dict(MODEL_SIZES[task], emb_dim=opts["emb"], hidden_dim=opts["hidden"], attn_dim=opts["attn_dim"],
                      dropout=opts["dropout"], tie_embeddings=bool(opts["tie"]))
    train_base = dict(task=task, epochs=opts["epochs"], batch_size=opts["batch_size"], lr=opts["lr"],
                      label_smoothing=opts["label_smoothing"], patience=0, eval_beam=1, half_weights=True,
                      cpu_bf16=bool(opts.get("cpu_bf16")))
    if task == "reverse":
        train_base.update(reverse_min_len=1, reverse_max_len=opts["max_len"], reverse_train_size=opts["train_size"],
                          reverse_val_size=opts["val_size"])
    keep = opts.get("keep", FULL[sweep]["keep"])
    seeds = [1 + i for i in range(opts["seeds"])]
    ckpt_root = out_path.parent / sweep

    def spec(arch: str, setting: Setting, seed: int) -> RunSpec:
        name = f"{arch}-{setting.slug}-s{seed}"
        kept = keep == "all" or (keep == "first-seed" and seed == seeds[0])
        model_cfg = ModelConfig(arch=arch, n_layers=layers.get(arch, 1), **model_base)
        train_cfg = TrainConfig(**train_base, seed=seed, teacher_forcing=setting.tf)
        return RunSpec(sweep, name, arch, setting.label, seed, model_cfg.to_dict(), train_cfg.to_dict(), device,
                       threads, str((ckpt_root / name).resolve()) if kept else None,
                       f"{sweep}/{name}" if kept else None,
                       (1, opts["max_len"]) if task == "reverse" else None,
                       opts["eval_n"] if task == "reverse" else None, data_dir, cache,
                       str((Path(state_root) / sweep / name).resolve()) if state_root else None)

    specs = [spec(arch, setting, seed) for arch in opts["archs"] for setting in settings for seed in seeds]
    by_label = {s.label: s for s in settings}
    for label, more in (extra or {}).items():
        specs += [spec(arch, by_label[label], seed) for arch in opts["archs"] for seed in more]
    shared = {"total_batches": total_batches, "batches_per_epoch": total_batches // opts["epochs"],
              "settings": [dict(s.to_dict(), schedule=schedule_check(s.tf, total_batches)) for s in settings],
              "archs": list(opts["archs"]), "seeds": seeds,
              "model": {k: v for k, v in ModelConfig(arch=opts["archs"][0], **model_base).to_dict().items()
                        if k not in ("arch", "src_vocab_size", "tgt_vocab_size", "n_layers")},
              "layers": {arch: layers.get(arch, 1) for arch in opts["archs"]},
              "train": {k: v for k, v in TrainConfig(**train_base).to_dict().items()
                        if k not in ("seed", "teacher_forcing")},
              "eval": ({"lengths": [1, opts["max_len"]], "n_per_length": opts["eval_n"], "seed": EVAL_SEED,
                        "decoding": "greedy", "position_accuracy": POSITION_ACCURACY_DOC,
                        "by_length": "exact match by sequence length"} if task == "reverse" else
                       {"split": "test2016", "chosen_on": "val bleu (free-running, greedy)", "decoding": "greedy",
                        "position_accuracy": POSITION_ACCURACY_DOC + " (validation set)",
                        "by_length": "test BLEU by source length in tokens"})}
    return specs, shared


POSITION_ACCURACY_DOC = ("share of references whose token at output position p the model's argmax matches: "
                         "teacher-forced (fed the gold prefix) and free-running (fed its own greedy output; "
                         "positions past its end count as wrong)")


# ---------------------------------------------------------------- one run (in a worker)
def position_accuracy(outputs: list[list[int]], targets: list[list[int]]) -> dict[str, float]:
    """Share of references whose token at position p (1-based) the output matches exactly;
    positions past the end of the output count as wrong. Later positions average over
    fewer (longer) references."""
    hits: dict[int, int] = {}
    total: dict[int, int] = {}
    for out, ref in zip(outputs, targets):
        for p, tok in enumerate(ref):
            total[p] = total.get(p, 0) + 1
            hits[p] = hits.get(p, 0) + int(p < len(out) and out[p] == tok)
    return {str(p + 1): round(hits[p] / total[p], 4) for p in sorted(total)}


def same_config(recorded: dict, current: dict, cls) -> bool:
    """Whether a config dict written earlier (a results file, a run's state marker) describes
    the same configuration as `current`: a field added to `cls` since then counts as its
    default in the old dict, so a new option at its default (e.g. --src-bpe 0) does not
    throw away finished runs or saved states."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    missing = object()
    return all(recorded.get(k, defaults.get(k, missing)) == current.get(k, defaults.get(k, missing))
               for k in set(recorded) | set(current))


def _same_run(recorded: dict, key: dict) -> bool:
    return (isinstance(recorded, dict) and set(recorded) == set(key)
            and same_config(recorded["model"], key["model"], ModelConfig)
            and same_config(recorded["train"], key["train"], TrainConfig))


def _resumable_state(spec: RunSpec) -> int | None:
    """Prepares spec.state_dir: the number of epochs its saved state holds when that state is
    this run's (same model and training configuration), else None after clearing the folder
    (a fresh start, or no state_dir at all)."""
    from .errors import Seq2SeqError
    from .train_state import STATE_JSON, read_state_info

    if not spec.state_dir:
        return None
    folder, key = Path(spec.state_dir), {"model": spec.model, "train": spec.train}
    marker = folder / "run.json"
    try:
        if (folder / STATE_JSON).is_file() and _same_run(json.loads(marker.read_text(encoding="utf-8")), key):
            return int(read_state_info(folder)["epoch"])
    except (OSError, ValueError, KeyError, Seq2SeqError):
        pass
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    marker.write_text(json.dumps(key), encoding="utf-8")
    return None


def run_one(spec: RunSpec) -> dict:
    """Train one setting with one seed, evaluate it free-running, keep its weights if asked.
    Failures come back as a run with an "error" (the sweep goes on). With spec.state_dir the
    training state is saved after every epoch: a run interrupted (killed, or failed) resumes
    there the next time it is asked for, and its state is removed once it has finished."""
    import torch

    from .checkpoint import save_checkpoint
    from .data import generate_reversal
    from .evaluate import (bleu_by_source_length, decode_corpus, evaluate_reversal, mean_over,
                           teacher_forced_position_accuracy)
    from .text import REVERSE_ALPHABET
    from .train import choose_device, load_task_data, train

    if spec.threads:
        torch.set_num_threads(spec.threads)
    base = {"name": spec.name, "arch": spec.arch, "setting": spec.label, "seed": spec.seed,
            "teacher_forcing": spec.train["teacher_forcing"], "checkpoint": None}
    t0 = time.perf_counter()
    try:
        device = choose_device(spec.device)
        model_cfg, cfg = ModelConfig.from_dict(dict(spec.model)), TrainConfig.from_dict(dict(spec.train))
        data = load_task_data(cfg, spec.data_dir, spec.cache)
        final_eval = cfg.task == "translate"      # translation: val and test BLEU in the card
        resumed = _resumable_state(spec)
        model, card = train(model_cfg, cfg, None, data, device, state_dir=spec.state_dir,
                            resume=resumed is not None, name=spec.name, progress=False, final_eval=final_eval)
        history = card["history"]
        if cfg.task == "reverse":
            lo, hi = spec.eval_lengths
            rev = evaluate_reversal(model, data.src_vocab, range(lo, hi + 1), spec.eval_n, EVAL_SEED, device)
            em = rev["exact_match_by_length"]
            final = {"exact_match": mean_over(em, lo, hi),
                     "val_exact_match": max((h["val_exact_match"] for h in history), default=None)}
            card["metrics"] = {"val": {"exact_match": final["val_exact_match"],
                                       "ppl": min((h["val_ppl"] for h in history), default=None)},
                               "reversal": rev, f"exact_match_{lo}_{hi}": final["exact_match"]}
            # the same fresh sequences as evaluate_reversal, now fed the gold prefix
            sources = [data.src_vocab.encode(x) for n in range(lo, hi + 1)
                       for x in generate_reversal(spec.eval_n, n, n, EVAL_SEED + 7919 * n, REVERSE_ALPHABET)]
            forced = teacher_forced_position_accuracy(model, sources, [list(reversed(x)) for x in sources], device)
            extra = {"accuracy_by_position": rev["accuracy_by_position"],
                     "accuracy_by_position_teacher_forced": forced, "exact_match_by_length": em,
                     "edit_distance_by_length": rev["edit_distance_by_length"]}
        else:
            m = card["metrics"]
            final = {"bleu": m["test2016"]["bleu"], "sacrebleu": m["test2016"]["sacrebleu"],
                     "bleu_val": m["val"]["bleu"], "ppl": m["test2016"]["ppl"]}
            outs = decode_corpus(model, data.val.src, device, beam=1)
            test = data.val_text["test2016"]
            test_src = [data.src_vocab.encode_words(x, model.cfg.max_src_len) for x in test["de"]]
            test_hyps = [data.tgt_vocab.decode(o) for o in decode_corpus(model, test_src, device, beam=1)]
            extra = {"accuracy_by_position": position_accuracy(outs, data.val.tgt),
                     "accuracy_by_position_teacher_forced":
                         teacher_forced_position_accuracy(model, data.val.src, data.val.tgt, device),
                     "bleu_by_source_length": bleu_by_source_length(test_hyps, test["en"], test["en_raw"],
                                                                    [len(x) for x in test["de"]])}
        if spec.keep_dir:
            save_checkpoint(spec.keep_dir, model, data.src_vocab, data.tgt_vocab, card, half=True)
        prov = card["provenance"]
        run = {**base, "history": history, "final": final, **extra,
               "checkpoint": spec.keep_rel if spec.keep_dir else None,
               "provenance": {k: prov.get(k) for k in ("device", "device_name", "cpu_model", "cpu_isa",
                                                       "cpu_native_bf16", "cpu_threads", "torch_version",
                                                       "mixed_precision", "trained_at", "mean_tokens_per_s",
                                                       "wall_seconds")},
               "seconds": round(time.perf_counter() - t0, 1)}
        if resumed is not None:
            run["provenance"]["resumed_after_epoch"] = resumed
        if spec.state_dir:
            shutil.rmtree(spec.state_dir, ignore_errors=True)
        return run
    except Exception as e:  # noqa: BLE001 - one failed run must not lose the others
        return {**base, "error": f"{type(e).__name__}: {e}", "seconds": round(time.perf_counter() - t0, 1)}


# ---------------------------------------------------------------- results file
def dumps_results(results: dict) -> str:
    """Compact but diffable JSON: the header indented, then one line per run."""
    head = {k: v for k, v in results.items() if k != "runs"}
    lines = [json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in results.get("runs", [])]
    head_text = json.dumps(head, ensure_ascii=False, indent=1)
    runs_text = '"runs": [\n' + ",\n".join(lines) + "\n]" if lines else '"runs": []'
    if head:
        return head_text[:-2] + ",\n " + runs_text + "\n}\n"
    return "{" + runs_text + "}\n"


def write_results(path: str | os.PathLike, results: dict) -> None:
    """Atomic: written to a temporary file in the same folder, then renamed over `path`.
    A failure (unserializable value, full disk) leaves the previous file and no temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        text = dumps_results(results)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_results(path: str | os.PathLike) -> dict:
    """Read and check a results file; raises Seq2SeqError with a message for a person."""
    from .errors import Seq2SeqError

    path = Path(path)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise Seq2SeqError(f"{path}: no sweep results file") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Seq2SeqError(f"{path}: not a readable results file ({e})") from e
    if not isinstance(results, dict) or not isinstance(results.get("runs"), list):
        raise Seq2SeqError(f"{path}: not a sweep results file (no list of runs)")
    version = results.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise Seq2SeqError(f"{path}: format_version {version!r} is not one this code reads ({FORMAT_VERSION})")
    for i, run in enumerate(results["runs"]):
        missing = [k for k in ("arch", "setting", "seed") if k not in run]
        if missing:
            raise Seq2SeqError(f"{path}: run {i} lacks {missing}")
    return results


# What a complete results file holds, by format version (`check_schema`; the tests run it on
# every shipped file). Runs that failed carry "error" instead of the results.
HEADER_KEYS = ("format_version", "sweep", "task", "metric", "scale", "settings", "seeds", "total_batches",
               "options", "model", "train", "eval", "device", "complete", "runs")
SETTING_KEYS = {1: ("label", "slug", "teacher_forcing", "description", "schedule"),
                2: ("label", "slug", "teacher_forcing", "description", "schedule", "coin", "scheduled",
                    "tutorials_rule", "floor")}
RUN_KEYS = {1: ("name", "arch", "setting", "seed", "teacher_forcing", "history", "final", "accuracy_by_position",
                "provenance", "seconds"),
            2: ("name", "arch", "setting", "seed", "teacher_forcing", "history", "final", "accuracy_by_position",
                "accuracy_by_position_teacher_forced", "provenance", "seconds")}
RUN_KEYS_BY_TASK = {2: {"reverse": ("exact_match_by_length",), "translate": ("bleu_by_source_length",)}}
FINAL_KEYS = {"reverse": ("exact_match", "val_exact_match"), "translate": ("bleu", "sacrebleu", "bleu_val", "ppl")}
HISTORY_KEYS = {"reverse": ("epoch", "train_loss", "val_loss", "val_exact_match", "tf_ratio"),
                "translate": ("epoch", "train_loss", "val_loss", "val_bleu", "tf_ratio")}


def check_schema(results: dict) -> list[str]:
    """Everything a results file lacks against its format version's schema ([] when valid)."""
    problems = [f"header lacks {k!r}" for k in HEADER_KEYS if k not in results]
    version, task = results.get("format_version"), results.get("task")
    if task not in FINAL_KEYS:
        return problems + [f"unknown task {task!r}"]
    if results.get("scale") not in ("full", "reduced"):
        problems.append(f"scale {results.get('scale')!r} is neither 'full' nor 'reduced'")
    labels = set()
    for i, setting in enumerate(results.get("settings", [])):
        labels.add(setting.get("label"))
        problems += [f"setting {i} lacks {k!r}" for k in SETTING_KEYS.get(version, ()) if k not in setting]
    for i, run in enumerate(results.get("runs", [])):
        where = f"run {i} ({run.get('name')})"
        if run.get("setting") not in labels:
            problems.append(f"{where}: setting {run.get('setting')!r} is not in the file's settings")
        if "error" in run:
            continue
        wanted = RUN_KEYS.get(version, ()) + RUN_KEYS_BY_TASK.get(version, {}).get(task, ())
        problems += [f"{where} lacks {k!r}" for k in wanted if k not in run]
        problems += [f"{where}: final lacks {k!r}" for k in FINAL_KEYS[task] if k not in run.get("final", {})]
        for h in run.get("history", []):
            problems += [f"{where}: epoch {h.get('epoch')} lacks {k!r}" for k in HISTORY_KEYS[task] if k not in h]
        for key in ("accuracy_by_position", "accuracy_by_position_teacher_forced"):
            values = run.get(key, {})
            if not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in values.values()):
                problems.append(f"{where}: {key} holds values outside [0, 1]")
    return problems


# ---------------------------------------------------------------- shipping a sweep
def replay_runs(results: dict) -> list[str]:
    """The runs the app replays by default (the Teacher forcing page's translation replay):
    seed 1 of constant 1 and of the best scheduled policy (seq2seq.sweep.best_scheduled over
    the first pass, or the second pass's choice)."""
    policy = ((results.get("extra_seeds") or {}).get("best_scheduled")
              or best_scheduled([r for r in results["runs"] if r["seed"] in results["seeds"]],
                                results["settings"], results["sweep"]))
    first = results["seeds"][0] if results.get("seeds") else 1
    return [r["name"] for r in results["runs"]
            if r.get("checkpoint") and "error" not in r and r["seed"] == first and r["setting"] in (BASELINE, policy)]


def ship(results_path: Path, dest: Path, weights: str = "all") -> dict:
    """Copy a results file (made anywhere, e.g. runs/sweeps/) to `dest` (a .json path in
    checkpoints/sweeps/) with the kept weights of `weights`: "all" of them, or "replay"
    (`replay_runs`: what fits the checkpoints' size budget for translation). Runs whose
    weights stay behind get checkpoint None, and their folders under dest (shipped before,
    when another run was the best scheduled one) are removed. Existing weights under dest
    are replaced."""
    import shutil

    results = load_results(results_path)
    keep = ({r["name"] for r in results["runs"] if r.get("checkpoint")} if weights == "all"
            else set(replay_runs(results)))
    for run in results["runs"]:
        src = Path(results_path).parent / run["checkpoint"] if run.get("checkpoint") else None
        if src is None or run["name"] not in keep:
            stale = Path(dest).parent / results["sweep"] / run["name"]
            if src is None or stale.resolve() != src.resolve():
                shutil.rmtree(stale, ignore_errors=True)
            run["checkpoint"] = None
            continue
        target = Path(dest).parent / run["checkpoint"]
        if target.resolve() != src.resolve():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(src, target)
    results["weights_shipped"] = weights
    write_results(dest, results)
    return results


# ---------------------------------------------------------------- the command
def _options(sweep: str, args) -> dict:
    opts = dict(FULL[sweep])
    if getattr(args, "cpu_bf16", False):      # a training mode, not a size: the sweep stays "full"
        opts["cpu_bf16"] = True
    for key in SIZE_OPTIONS + ("keep",):
        value = getattr(args, key, None)
        if value is not None:
            if key == "archs":
                value = tuple(value.split(","))
            elif key == "layers":       # one count for every arch
                value = tuple((a, value) for a in ARCH_NAMES)
            opts[key] = value
    return opts


def _is_full(sweep: str, opts: dict) -> bool:
    return all(opts[k] == FULL[sweep][k] for k in SIZE_OPTIONS)


def full_command(sweep: str) -> str:
    extra = " --data-dir ../shared/data/multi30k --cache cache/multi30k-tokens.json.gz" if sweep == "translate" else ""
    return f"python -m seq2seq.sweep {sweep}{extra}"


def extra_seed_plan(results: dict, sweep: str, opts: dict) -> dict[str, list[int]]:
    """The second pass: `extra_seeds` more seeds for constant 1 and for the best scheduled
    policy of the first pass (by its free-running validation metric)."""
    n = int(opts.get("extra_seeds") or 0)
    labels = [s["label"] for s in results["settings"]]
    best = best_scheduled([r for r in results["runs"] if r["seed"] in results["seeds"]], results["settings"], sweep)
    chosen = [label for label in (BASELINE, best) if label in labels]
    if not n or not chosen:
        return {}
    more = [results["seeds"][-1] + 1 + i for i in range(n)]
    results["extra_seeds"] = {"settings": chosen, "seeds": more, "best_scheduled": best,
                              "chosen_on": "the best mean free-running validation "
                                           + ("BLEU" if sweep == "translate" else "exact match")
                                           + " of the first pass, among the policies that mix gold and "
                                             "predicted inputs"}
    return {label: more for label in dict.fromkeys(chosen)}


def run_sweep(sweep: str, opts: dict, out_path: Path, device: str = "auto", jobs: int | None = None,
              data_dir: str | None = None, cache: str | None = None, resume: bool = False,
              only: list[str] | None = None, command: str = "", threads: int | None = None, log=print,
              state_root: str | None = None) -> dict:
    """Plan, train every run (in parallel workers when jobs > 1), write the results file.
    `state_root`: where each run keeps its training state until it finishes (see run_one)."""
    import torch

    from .checkpoint import git_commit
    from .train import choose_device, load_task_data

    out_path = Path(out_path)
    cpus = os.cpu_count() or 1
    jobs = max(1, jobs or cpus)
    resolved = choose_device(device).type
    if threads is None:            # share the cores; jobs 1 keeps torch's own choice
        threads = 0 if jobs == 1 else max(1, cpus // jobs)
    train_examples = None
    if sweep == "translate":      # load once here: fails fast on missing data, and sizes the decays
        probe = TrainConfig(task="translate")
        train_examples = len(load_task_data(probe, data_dir, cache).train_fixed)
    specs, shared = plan(sweep, opts, out_path, resolved, threads, data_dir, cache, train_examples, only,
                         state_root=state_root)
    full = _is_full(sweep, opts) and not only
    results = {
        "format_version": FORMAT_VERSION, "sweep": sweep, "task": "reverse" if sweep == "reverse" else "translate",
        "metric": "exact_match" if sweep == "reverse" else "bleu",
        "scale": "full" if full else "reduced",
        "note": ("the full sweep" if full else
                 f"a reduced {resolved.upper()} sweep (smaller models, data or grid than the full one); "
                 f"the full sweep is: {full_command(sweep)}"),
        "full_command": full_command(sweep), "command": command,
        "options": json.loads(json.dumps(opts)),      # as the file holds it (tuples become lists)
        **shared,
        "device": resolved, "jobs": jobs, "threads_per_job": threads or torch.get_num_threads(), "git_commit": git_commit(), "torch_version": torch.__version__,
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "complete": False, "wall_seconds": None, "runs": [],
    }
    done: dict[str, dict] = {}
    if resume and out_path.is_file():
        old = load_results(out_path)
        same = (all(old.get(k) == results[k] for k in ("options", "settings", "eval"))
                and same_config(old.get("model") or {}, results["model"], ModelConfig)
                and same_config(old.get("train") or {}, results["train"], TrainConfig))
        if same:
            done = {r["name"]: r for r in old["runs"] if "error" not in r}
            log(f"resuming: {len(done)} finished runs kept from {out_path}")
        else:
            log(f"--resume: {out_path} was made with another configuration; starting over")
    order = {s.name: i for i, s in enumerate(specs)}
    todo = [s for s in specs if s.name not in done]
    log(f"{sweep} sweep: {len(specs)} runs ({len(todo)} to train) on {resolved}, {jobs} worker(s), "
        f"{shared['total_batches']} batches each")

    def in_grid_order(runs: dict[str, dict]) -> list[dict]:
        return sorted(runs.values(), key=lambda r: order.get(r["name"], len(order)))

    def record(run: dict) -> None:
        done[run["name"]] = run
        results["runs"] = in_grid_order(done)
        results["wall_seconds"] = round(time.perf_counter() - t0, 1)
        write_results(out_path, results)
        status = run.get("error") or json.dumps(run["final"])
        log(f"[{len(done)}/{len(specs)}] {run['name']} ({run['seconds']} s): {status}")

    def train_all(todo: list[RunSpec]) -> None:
        if jobs == 1:
            for spec in todo:
                record(run_one(spec))
            return
        ctx = multiprocessing.get_context("spawn")    # fork + torch threads (or CUDA) can hang
        with ProcessPoolExecutor(max_workers=min(jobs, max(1, len(todo))), mp_context=ctx) as pool:
            futures = [pool.submit(run_one, spec) for spec in todo]
            for fut in as_completed(futures):
                record(fut.result())

    t0 = time.perf_counter()
    train_all(training_order(todo, shared["settings"]))
    # every first-pass run, also those a --resume kept without training (record() never saw them)
    results["runs"] = in_grid_order(done)
    extra = extra_seed_plan(results, sweep, opts)      # second pass: more seeds where they matter
    if extra:
        more_specs, _ = plan(sweep, opts, out_path, resolved, threads, data_dir, cache, train_examples, only, extra,
                             state_root)
        more_specs = more_specs[len(specs):]
        order.update({s.name: len(order) + i for i, s in enumerate(more_specs)})
        specs += more_specs
        log(f"second pass: seeds {results['extra_seeds']['seeds']} for {results['extra_seeds']['settings']}")
        train_all([s for s in more_specs if s.name not in done])
    results["complete"] = True
    results["wall_seconds"] = round(time.perf_counter() - t0, 1)
    results["runs"] = in_grid_order(done)
    write_results(out_path, results)
    return results


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m seq2seq.sweep", description=__doc__.split("\n")[0])
    p.add_argument("sweep", choices=SWEEPS, nargs="?", default="reverse")
    p.add_argument("--out", help="results file (default checkpoints/sweeps/SWEEP.json); kept weights go "
                                 "next to it, in SWEEP/RUN-NAME/")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: number of CPUs)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per worker (default: CPUs / jobs; with --jobs 1 torch's default)")
    p.add_argument("--resume", action="store_true", help="skip runs already in --out with the same configuration")
    p.add_argument("--state-dir", default=str(Path("runs") / "sweep-state"),
                   help="each unfinished run's training state, saved after every epoch, in STATE_DIR/SWEEP/RUN-NAME "
                        "(default runs/sweep-state): a killed run continues from its last epoch when the sweep is "
                        "run again; removed when the run finishes")
    p.add_argument("--settings", default=None, help="comma-separated labels or slugs to run (default: all)")
    p.add_argument("--ship-from", default=None, metavar="RESULTS",
                   help="train nothing: copy this results file to --out with the kept weights of --ship-weights")
    p.add_argument("--ship-weights", choices=("all", "replay"), default="all",
                   help="with --ship-from: every kept checkpoint, or only the runs the app replays by default "
                        "(constant 1 and the best scheduled policy, seed 1)")
    p.add_argument("--cpu-bf16", action="store_true",
                   help="train every run with --cpu-bf16 (bf16 matmuls on CPUs with native bf16; recorded per epoch)")
    p.add_argument("--data-dir", default=DATA_DIR, help="translate: Multi30k release files")
    p.add_argument("--cache", default=None, help="translate: token cache JSON.gz (read if present, else written)")
    g = p.add_argument_group("sizes (defaults: the full sweep)")
    g.add_argument("--archs", help="comma-separated, e.g. gru,bahdanau")
    g.add_argument("--seeds", type=int, help="seeds per setting (1, 2, ...)")
    g.add_argument("--extra-seeds", type=int, help="more seeds for constant 1 and the best scheduled policy "
                                                   "(a second pass; translate: 2)")
    g.add_argument("--epochs", type=int)
    g.add_argument("--train-size", type=int, help="reverse: fresh sequences per epoch")
    g.add_argument("--max-len", type=int, help="reverse: longest training (and evaluation) sequence")
    g.add_argument("--val-size", type=int, help="reverse: validation sequences")
    g.add_argument("--eval-n", type=int, help="reverse: evaluation sequences per length")
    g.add_argument("--emb", type=int)
    g.add_argument("--hidden", type=int)
    g.add_argument("--attn-dim", type=int)
    g.add_argument("--layers", type=int, help="RNN layers for every arch (default: the shipped models')")
    g.add_argument("--dropout", type=float)
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--keep", choices=("first-seed", "all", "none"), help="which runs keep their weights")
    return p


def main(argv=None) -> int:
    from .errors import Seq2SeqError

    args = build_parser().parse_args(argv)
    opts = _options(args.sweep, args)
    from .config import ARCHS
    bad = [a for a in opts["archs"] if a not in ARCHS]
    if bad:
        print(f"error: unknown archs {bad}; expected some of {ARCHS}", file=sys.stderr)
        return 2
    out = Path(args.out or Path(__file__).resolve().parents[1] / "checkpoints" / "sweeps" / f"{args.sweep}.json")
    only = [s.strip() for s in args.settings.split(",") if s.strip()] if args.settings else None
    command = "python -m seq2seq.sweep " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.ship_from:
        try:
            shipped = ship(Path(args.ship_from), out, args.ship_weights)
        except (Seq2SeqError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        kept = [r["name"] for r in shipped["runs"] if r.get("checkpoint")]
        print(f"wrote {out}: {len(shipped['runs'])} runs, weights of {len(kept)}: {kept}")
        return 0
    try:
        results = run_sweep(args.sweep, opts, out, args.device, args.jobs, args.data_dir, args.cache,
                            args.resume, only, command, args.threads,
                            log=lambda m: print(m, file=sys.stderr, flush=True), state_root=args.state_dir)
    except (Seq2SeqError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = [r["name"] for r in results["runs"] if "error" in r]
    print(f"wrote {out}: {len(results['runs'])} runs in {results['wall_seconds']} s"
          + (f"; {len(failed)} failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
