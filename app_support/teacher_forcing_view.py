"""The Teacher forcing page: the schedules, what the sweeps found (reversal and translation,
whichever results files exist), an exposure-bias replay (one reversal model on typed text, or
two translation models side by side on a test-2016 sentence from the corpus files beside the
shipped checkpoints, or a typed one: by default the translation sweep's constant 1 run and its
best scheduled policy), and a live lab that trains a small reversal model in the page.

The functions named *_frame are pure (data in, DataFrame out) so they can be tested
without a browser; the per-policy statistics and the findings in words are
seq2seq.sweep_findings (the README's results use them too), the charts are built from the
frames by seq2seq.figures (each shown with a PNG and an SVG download, common.show_altair),
the live lab's training is seq2seq.lab and the replay seq2seq.exposure; the render_*
functions draw."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import streamlit as st

from seq2seq.config import TeacherForcingConfig
from seq2seq.corpus import corpus_filename, read_corpus_file
from seq2seq.errors import Seq2SeqError
from seq2seq.exposure import Replay, replay_rows, replay_text, replay_tokens, visible
from seq2seq.figures import (GOLD_PROB_MODES, by_length_chart, curves_charts, final_chart, gold_prob_chart, lab_chart,
                             position_chart, schedule_chart)
from seq2seq.lab import lab_configs, run_lab
from seq2seq.schedules import describe, teacher_forcing_ratio
from seq2seq.sweep import (BASELINE, best_scheduled, constant_setting, decay_setting, full_command, load_results,
                           tutorials_rule_setting)
from seq2seq.sweep_findings import (COIN_CAPTION, COIN_LABELS, findings, metric_key, metric_label, planned_runs,
                                    policy_order, policy_summary, run_value, setting_info, sweep_files)

from .common import (checkpoint_root, file_slug, get_translator, guarded, init_state, model_entries, save_state,
                     set_state, set_url, show_altair, show_source_notes, sidebar_settings)
from .constants import ARCH_LABELS, EXAMPLES

SWEEPS_ENV = "ATTENTION_LAB_SWEEPS"        # a folder holding <sweep>.json (default: checkpoints/sweeps)
CONSTANTS = (0.0, 0.25, 0.5, 0.75, 1.0)
DECAYS = ("linear", "exponential", "inverse_sigmoid")
DEFAULT_BATCHES = 1000
MAX_CHARS = 500
SWEEP_LABELS = {"reverse": "reversal", "translate": "translation"}
SPLIT = "test2016"                          # the test sentences the translation replay offers
REPLAY_EXAMPLES = ["attention is all you need", "hello world", "the quick brown fox", "abc 123"]
LAB_KINDS = {"constant": "constant ratio", "linear": "linear decay", "exponential": "exponential decay",
             "inverse_sigmoid": "inverse-sigmoid decay"}
LAB_SIZES = [256, 500, 1000, 2000, 3000, 4000]
# The live lab's form: widget key -> (default, valid value?)
LAB_SETTINGS = {
    "tf.lab.arch": ("bahdanau", lambda v: v in ("bahdanau", "gru")),
    "tf.lab.kind": ("constant", lambda v: v in LAB_KINDS),
    "tf.lab.ratio": (1.0, lambda v: isinstance(v, float) and 0.0 <= v <= 1.0),
    "tf.lab.epochs": (3, lambda v: isinstance(v, int) and 1 <= v <= 5),
    "tf.lab.size": (2000, lambda v: v in LAB_SIZES),
    "tf.lab.max_len": (6, lambda v: isinstance(v, int) and 3 <= v <= 8),
    "tf.lab.seed": (1, lambda v: isinstance(v, int) and 0 <= v <= 10_000),
}


def sweeps_dir() -> Path:
    return Path(os.environ.get(SWEEPS_ENV) or checkpoint_root() / "sweeps")


def available_sweeps(folder: Path) -> dict[str, Path]:
    """sweep name -> results file, reversal first, then translation."""
    return sweep_files(folder)


@st.cache_data(show_spinner=False, max_entries=16)
def _sweep_scale(path: str, mtime_ns: int) -> str | None:
    """A results file's scale ("full" or "reduced"); None if it cannot be read (the page
    says why when that sweep is chosen). mtime_ns keys the cache to the file's version."""
    try:
        return load_results(Path(path)).get("scale")
    except (Seq2SeqError, OSError, ValueError):
        return None


def default_sweep(sweeps: dict[str, Path]) -> str:
    """The sweep the page opens on: the first at full scale (a reduced sweep's small models
    say less about the policies), else the first."""
    for name, path in sweeps.items():
        try:
            version = path.stat().st_mtime_ns
        except OSError:
            continue
        if _sweep_scale(str(path), version) == "full":
            return name
    return next(iter(sweeps))


# ------------------------------------------------------------------ pure: schedules
def schedule_configs(linear_c: float, exp_k: float, inv_k: float,
                     constants=CONSTANTS) -> dict[str, TeacherForcingConfig]:
    """strategy label -> policy: the constant ratios, the three decays and the tutorials'
    rule (constant 0.5 with one coin per step for the whole batch)."""
    out = {constant_setting(r).label: constant_setting(r).tf for r in constants}
    out["linear decay"] = TeacherForcingConfig("linear", k=1.0, c=float(linear_c), eps_min=0.0)
    out["exponential decay"] = TeacherForcingConfig("exponential", k=float(exp_k))
    out["inverse-sigmoid decay"] = TeacherForcingConfig("inverse_sigmoid", k=float(inv_k))
    rule = tutorials_rule_setting()
    out[rule.label] = rule.tf
    return out


def _schedule_kind(cfg: TeacherForcingConfig) -> str:
    if cfg.kind != "constant":
        return "decay"
    return "constant" if cfg.coin == "token" else "constant, one coin per step"


def schedule_frame(configs: dict[str, TeacherForcingConfig], total_steps: int, points: int = 101) -> pd.DataFrame:
    """The ratio at `points` evenly spaced training steps from 0 to `total_steps` (both
    included), one row per (strategy, step); kind: decay, constant, or constant with one
    coin per step (the tutorials' rule)."""
    total_steps = max(1, int(total_steps))
    steps = sorted({round(total_steps * i / (points - 1)) for i in range(points)})
    rows = [{"step": s, "ratio": teacher_forcing_ratio(cfg, s), "strategy": label, "kind": _schedule_kind(cfg)}
            for label, cfg in configs.items() for s in steps]
    return pd.DataFrame(rows, columns=["step", "ratio", "strategy", "kind"])


# ------------------------------------------------------------------ pure: sweep results
def strategy_order(results: dict) -> list[str]:
    """The policies in the settings' order, then any run's policy not listed."""
    return policy_order(results)


def coin_of(results: dict) -> dict[str, str]:
    """policy label -> its coin in words (COIN_LABELS): one per token, or one per step (the tutorials' rule)."""
    return {label: COIN_LABELS.get(meta["coin"], meta["coin"]) for label, meta in setting_info(results).items()}


def runs_frame(results: dict) -> pd.DataFrame:
    """One row per run: its final free-running test metric (None for a failed run) and its coin."""
    coins = coin_of(results)
    rows = [{"arch": r["arch"], "strategy": r["setting"], "seed": r["seed"], "name": r.get("name", ""),
             "value": run_value(results, r), "error": r.get("error"), "coin": coins.get(r["setting"])}
            for r in results["runs"]]
    return pd.DataFrame(rows, columns=["arch", "strategy", "seed", "name", "value", "error", "coin"])


SUMMARY_COLUMNS = ["arch", "strategy", "coin", "seeds", "mean", "std", "min", "max", "seed list"]


def summary_frame(results: dict) -> pd.DataFrame:
    """Per arch and policy (seq2seq.sweep_findings.policy_summary): the final free-running
    test metric's mean, sample std (empty with one seed), min and max over its seeds, the
    number of seeds and which; the tutorials' rule's coin reads "one per step for the batch"."""
    rows = [{"arch": r["arch"], "strategy": r["strategy"], "coin": COIN_LABELS.get(r["coin"], r["coin"]),
             "seeds": r["seeds"], "mean": r["mean"], "std": r["std"], "min": r["min"], "max": r["max"],
             "seed list": ", ".join(map(str, r["seed_list"]))} for r in policy_summary(results)]
    df = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    for col in ("mean", "std", "min", "max"):
        df[col] = pd.to_numeric(df[col]).round(4)
    return df


def history_frame(results: dict) -> pd.DataFrame:
    """Per run and epoch: teacher-forced validation loss and the free-running metric."""
    key = "val_bleu" if metric_key(results) == "bleu" else "val_exact_match"
    coins = coin_of(results)
    rows = []
    for r in results["runs"]:
        for h in r.get("history") or []:
            rows.append({"arch": r["arch"], "strategy": r["setting"], "coin": coins.get(r["setting"]),
                         "seed": r["seed"], "epoch": h["epoch"], "val_loss": h.get("val_loss"), "metric": h.get(key),
                         "train_loss": h.get("train_loss"), "tf_ratio": h.get("tf_ratio")})
    return pd.DataFrame(rows, columns=["arch", "strategy", "coin", "seed", "epoch", "val_loss", "metric", "train_loss",
                                       "tf_ratio"])


def mean_curves(history: pd.DataFrame) -> pd.DataFrame:
    """history_frame averaged over seeds."""
    if history.empty:
        return history.drop(columns="seed")
    return (history.groupby(["arch", "strategy", "coin", "epoch"], as_index=False, dropna=False)
            [["val_loss", "metric", "train_loss", "tf_ratio"]].mean())


POSITION_FIELDS = {"teacher-forced": "accuracy_by_position_teacher_forced", "free-running": "accuracy_by_position"}


def position_frame(results: dict) -> pd.DataFrame:
    """Accuracy by output position, mean (and range) over seeds, per arch, strategy and mode:
    "free-running" (fed its own output) and, where the file has it, "teacher-forced" (fed
    the gold prefix). Failed runs are left out."""
    coins = coin_of(results)
    rows = [{"arch": r["arch"], "strategy": r["setting"], "coin": coins.get(r["setting"]), "mode": mode,
             "seed": r["seed"], "position": int(p), "accuracy": a}
            for r in results["runs"] if not r.get("error") for mode, field in POSITION_FIELDS.items()
            for p, a in (r.get(field) or {}).items()]
    cols = ["arch", "strategy", "coin", "mode", "position", "accuracy", "min", "max"]
    df = pd.DataFrame(rows, columns=["arch", "strategy", "coin", "mode", "seed", "position", "accuracy"])
    if df.empty:
        return pd.DataFrame(columns=cols)
    g = df.groupby(["arch", "strategy", "coin", "mode", "position"], dropna=False)["accuracy"]
    return pd.DataFrame({"accuracy": g.mean(), "min": g.min(), "max": g.max()}).reset_index()[cols]


def _rank(label: str) -> int:
    """A length ("12") or a bucket ("9-12", "21+") -> where it goes on the axis."""
    digits = re.match(r"\d+", str(label))
    return int(digits.group()) if digits else 10**6


def by_length_frame(results: dict) -> pd.DataFrame:
    """The final metric by source length, mean and range over seeds, per arch and strategy:
    reversal exact match by sequence length, translation BLEU by source-length bucket (with
    the bucket's sentence count). Empty when the file has neither."""
    coins = coin_of(results)
    rows = []
    for r in results["runs"]:
        if r.get("error"):
            continue
        base = {"arch": r["arch"], "strategy": r["setting"], "coin": coins.get(r["setting"]), "seed": r["seed"]}
        for length, v in (r.get("exact_match_by_length") or {}).items():
            rows.append({**base, "length": str(length), "value": v, "sentences": None})
        for bucket, v in (r.get("bleu_by_source_length") or {}).items():
            rows.append({**base, "length": str(bucket), "value": (v or {}).get("bleu"),
                         "sentences": (v or {}).get("sentences")})
    cols = ["arch", "strategy", "coin", "length", "rank", "value", "min", "max", "seeds", "sentences"]
    df = pd.DataFrame(rows, columns=["arch", "strategy", "coin", "seed", "length", "value", "sentences"])
    df = df.dropna(subset=["value"])
    if df.empty:
        return pd.DataFrame(columns=cols)
    g = df.groupby(["arch", "strategy", "coin", "length"], dropna=False)
    out = pd.DataFrame({"value": g["value"].mean(), "min": g["value"].min(), "max": g["value"].max(),
                        "seeds": g["value"].count(), "sentences": g["sentences"].max()}).reset_index()
    out["rank"] = out["length"].map(_rank)
    if out["sentences"].isna().all():
        out = out.drop(columns="sentences")
        cols.remove("sentences")
    return out.sort_values(["arch", "strategy", "rank"]).reset_index(drop=True)[cols]


# ------------------------------------------------------------------ page sections
def render_schedules(results: dict | None, font_size: int) -> None:
    st.markdown("At training batch *i* the decoder is fed the gold previous token with probability "
                "ε(i), else its own argmax. The coin is flipped per sequence and per time step (the tutorials' "
                "rule flips one per step for the whole batch). Scheduled sampling (Bengio et al., 2015) starts "
                "near 1 and decays toward 0.")
    planned = int((results or {}).get("total_batches") or DEFAULT_BATCHES)
    fitted = {kind: decay_setting(kind, planned).tf for kind in DECAYS}
    swept = {s["teacher_forcing"]["kind"]: s["teacher_forcing"] for s in (results or {}).get("settings", [])}
    defaults = {"linear": swept.get("linear", {}).get("c", fitted["linear"].c),
                "exponential": swept.get("exponential", {}).get("k", fitted["exponential"].k),
                "inverse_sigmoid": swept.get("inverse_sigmoid", {}).get("k", fitted["inverse_sigmoid"].k)}
    init_state("tf.steps", planned, cast=int, valid=lambda v: isinstance(v, int) and 10 <= v <= 1_000_000)
    init_state("tf.lin_c", float(defaults["linear"]), cast=float, valid=lambda v: 0 <= v <= 1)
    init_state("tf.exp_k", float(defaults["exponential"]), cast=float, valid=lambda v: 0.5 <= v <= 1)
    init_state("tf.inv_k", float(defaults["inverse_sigmoid"]), cast=float, valid=lambda v: 1 <= v <= 1e6)

    def refit():
        n = st.session_state["tf.steps"]
        set_state("tf.lin_c", decay_setting("linear", n).tf.c)
        set_state("tf.exp_k", decay_setting("exponential", n).tf.k)
        set_state("tf.inv_k", decay_setting("inverse_sigmoid", n).tf.k)

    c = st.columns(4)
    steps = c[0].number_input("Training batches shown", 10, 1_000_000, step=100, key="tf.steps",
                              on_change=save_state, args=("tf.steps",),
                              help="The sweep's runs: " + (f"{planned} batches each" if results else "no sweep loaded"))
    lin_c = c[1].number_input("linear: decrease c per batch", 0.0, 1.0, step=0.0001, format="%.6f", key="tf.lin_c",
                              on_change=save_state, args=("tf.lin_c",), help="ε(i) = max(0, 1 − c·i)")
    exp_k = c[2].number_input("exponential: base k", 0.5, 1.0, step=0.0001, format="%.6f", key="tf.exp_k",
                              on_change=save_state, args=("tf.exp_k",), help="ε(i) = kⁱ")
    inv_k = c[3].number_input("inverse sigmoid: k", 1.0, 1e6, step=1.0, format="%.2f", key="tf.inv_k",
                              on_change=save_state, args=("tf.inv_k",), help="ε(i) = k / (k + exp(i/k))")
    st.button(f"Fit the decays to {steps} batches (~1 at the start, ~0 at the end)", on_click=refit, key="tf.refit")
    configs = schedule_configs(lin_c, exp_k, inv_k)
    show_altair(schedule_chart(schedule_frame(configs, steps), font_size), "tf.schedules",
                file_slug("teacher-forcing", "schedules"))
    st.caption(COIN_CAPTION + " Its ratio line is the same as constant 0.5's (drawn dashed over it).")
    st.dataframe(pd.DataFrame([{"strategy": label, "formula": describe(cfg), "coin": COIN_LABELS[cfg.coin],
                                "ratio at start": round(teacher_forcing_ratio(cfg, 0), 3),
                                "at the middle": round(teacher_forcing_ratio(cfg, steps // 2), 3),
                                "at the end": round(teacher_forcing_ratio(cfg, steps), 3)}
                               for label, cfg in configs.items()]), hide_index=True, key="tf.schedule_table")


def _seeds_caption(results: dict) -> str:
    seeds = ", ".join(map(str, results.get("seeds") or []))
    extra = results.get("extra_seeds") or {}
    if not extra.get("seeds"):
        return f"seeds {seeds}"
    return (f"seeds {seeds}, plus {', '.join(map(str, extra['seeds']))} for {' and '.join(extra['settings'])} "
            f"(a second pass, chosen on {extra.get('chosen_on', 'the first pass')})")


def curves_arch(sweep: str, archs: list[str]) -> str:
    """The architecture whose curves are drawn: a choice kept per sweep (each sweep has its own
    architectures), or, when the sweep has one, just its name."""
    if len(archs) == 1:
        st.caption(f"Architecture: {ARCH_LABELS.get(archs[0], archs[0])}")
        return archs[0]
    key = f"tf.arch.{sweep}"
    init_state(key, archs[0], valid=lambda v: v in archs)
    return st.radio("Architecture for the curves", archs, horizontal=True, key=key, on_change=save_state,
                    args=(key,), format_func=lambda a: ARCH_LABELS.get(a, a))


def render_sweep(results: dict | None, where: str, font_size: int, sweep: str = "reverse") -> None:
    if results is None:
        st.info(f"No sweep results found in {where}. Run `python -m seq2seq.sweep reverse` (it writes "
                "checkpoints/sweeps/reverse.json) or `python -m seq2seq.sweep translate` (translate.json), "
                "then reload this page.")
        return
    label = metric_label(results)
    if results.get("scale") != "full":
        st.warning("These are results of a reduced sweep: " + str(results.get("note", "")))
    if not results.get("complete", True):
        planned = planned_runs(results)
        st.info(f"The sweep is not finished yet: {len(results['runs'])} "
                + (f"of its {planned} runs" if planned else "runs") + " so far. Runs train seed by seed, so "
                "every policy gets its first seed before any gets a second; the seeds column says how many "
                "each policy has.")
    runs = runs_frame(results)
    failed = runs[runs["error"].notna()]
    if len(failed):
        st.warning(f"{len(failed)} runs failed and are left out: " + ", ".join(failed["name"]))
    if runs["value"].notna().sum() == 0:
        st.info("The results file holds no finished runs yet.")
        return
    order = strategy_order(results)
    archs = list(dict.fromkeys(runs["arch"]))
    st.caption(f"{len(runs)} runs · archs {', '.join(archs)} · {_seeds_caption(results)} · "
               f"{results.get('total_batches')} training batches each · device {results.get('device')}")
    slug = lambda *parts: file_slug("teacher-forcing", sweep, *parts)  # noqa: E731

    st.subheader(f"Final free-running {label} by strategy")
    show_altair(final_chart(runs, order, label, font_size), "tf.final", slug("final"))
    st.caption(COIN_CAPTION)
    st.dataframe(summary_frame(results), hide_index=True, key="tf.summary",
                 column_config={"std": st.column_config.NumberColumn("std", help="sample standard deviation over "
                                                                     "seeds (n - 1); empty with one seed")})
    st.markdown("**What the numbers say** (worked out from the file):\n\n"
                + "\n".join(f"- {line}" for line in findings(results)))

    arch = curves_arch(sweep, archs)
    st.subheader("Training curves: teacher-forced loss vs free-running quality")
    st.caption("Validation loss is measured teacher-forced (gold prefixes); the metric is measured free-running "
               "(the model's own prefixes). A lower loss does not always mean better free-running output. "
               "Mean over seeds; the tutorials' rule is dashed.")
    curves = mean_curves(history_frame(results))
    against, loss, metric = curves_charts(curves[curves["arch"] == arch], order, label, font_size)
    show_altair(against, "tf.curves", slug(arch, "curves"))
    left, right = st.columns(2)
    with left:
        show_altair(loss, "tf.loss_by_epoch", slug(arch, "loss-by-epoch"))
    with right:
        show_altair(metric, "tf.metric_by_epoch", slug(arch, "metric-by-epoch"))

    st.subheader("Accuracy by output position")
    positions = position_frame(results)
    positions = positions[positions["arch"] == arch]
    if (positions["mode"] == "teacher-forced").any():
        st.caption("Share of references whose token at each output position the model gets right, fed the gold "
                   "prefix (teacher-forced, as in training at ratio 1) and fed its own output (free-running, as "
                   "when it is used). The gap between the two curves is exposure bias: an early mistake feeds the "
                   "decoder a prefix it never saw in training. Mean over seeds.")
    else:
        st.caption("Share of outputs whose token at each position is right, free-running (this file has no "
                   "teacher-forced counts). Under exposure bias, an early mistake feeds the decoder a prefix it "
                   "never saw in training, so accuracy falls with position.")
    show_altair(position_chart(positions, order, font_size), "tf.positions", slug(arch, "positions"))

    lengths = by_length_frame(results)
    lengths = lengths[lengths["arch"] == arch]
    translate = metric_key(results) == "bleu"
    st.subheader(f"Final free-running {label} by source length")
    if lengths.empty:
        st.info("This results file has no scores by source length.")
        return
    x_title = "source length (tokens)" if translate else "sequence length"
    st.caption("Test BLEU of the sentences whose German source has that many tokens (corpus BLEU per bucket), "
               "mean over seeds." if translate else
               "Exact match on fresh sequences of each length, mean over seeds.")
    show_altair(by_length_chart(lengths, order, label, x_title, font_size, share=not translate), "tf.by_length",
                slug(arch, "by-length"))


def replay_models(results: dict | None, results_path: Path | None) -> dict[str, dict]:
    """name -> {label, path, task}: the sweep's kept checkpoints, then the app's models."""
    out = {}
    for run in (results or {}).get("runs", []):
        if run.get("checkpoint") and not run.get("error") and results_path is not None:
            path = results_path.parent / run["checkpoint"]
            if (path / "card.json").is_file():
                out[run["name"]] = {"label": f"sweep · {run['arch']} · {run['setting']} (seed {run['seed']})",
                                    "path": str(path), "task": results.get("task", "reverse")}
    for task in ("reverse", "translate"):
        for e in model_entries(task):
            if e["card"] is not None:
                out[e["name"]] = {"label": f"{e['name']} · {ARCH_LABELS.get(e['card']['arch'], e['card']['arch'])}",
                                  "path": e["path"], "task": task}
    return out


def _default_replay_model(models: dict[str, dict]) -> str:
    """Teacher forcing throughout and no attention first: the model whose free-running output
    leaves the gold one on the first example (the attention models reverse it perfectly, so
    they show no exposure bias there)."""
    for name in ("gru-tf1-s1", "reverse-gru", "bahdanau-tf1-s1", "reverse-bahdanau"):
        if name in models:
            return name
    return next(iter(models))


# ------------------------------------------------------------------ pure: the translation replay
REPLAY_MODES = {"reverse": "Reversal (one model)", "translate": "Translation (two models side by side)"}
FALLBACK_PAIR = ("translate-bahdanau", "translate-luong")
INPUT_KINDS = {"test": "a test-2016 sentence", "own": "type your own"}
MAX_MATCHES = 200


def sweep_defaults(results: dict | None, models: dict[str, dict]) -> dict:
    """The translation sweep's two models to compare by default: {"baseline": the run name of
    constant 1, "scheduled": the run name of the best scheduled policy, "policy": that
    policy's label}, each None when the file lacks it. The policy is the file's
    extra_seeds.best_scheduled (the one the second pass was run for), else
    seq2seq.sweep.best_scheduled over its runs. Only runs whose kept checkpoint is in
    `models` count; seed 1 first (else the lowest seed), both runs of one arch if possible."""
    out = {"baseline": None, "scheduled": None, "policy": None}
    if not results:
        return out
    policy = ((results.get("extra_seeds") or {}).get("best_scheduled")
              or best_scheduled(results.get("runs") or [], results.get("settings") or [], "translate"))
    out["policy"] = policy
    kept = [r for r in results.get("runs") or []
            if r.get("checkpoint") and not r.get("error") and r.get("name") in models]

    def pick(label, arch=None):
        found = [r for r in kept if r["setting"] == label and (arch is None or r["arch"] == arch)]
        return min(found, key=lambda r: (r["seed"] != 1, r["seed"]))["name"] if found else None

    for arch in dict.fromkeys([*(results.get("archs") or []), *(r["arch"] for r in kept)]):
        baseline, scheduled = pick(BASELINE, arch), pick(policy, arch) if policy else None
        if baseline and scheduled:
            return dict(out, baseline=baseline, scheduled=scheduled)
    return dict(out, baseline=pick(BASELINE), scheduled=pick(policy) if policy else None)


def fallback_pair(models: dict[str, dict]) -> tuple[str, str]:
    """Two translation models to compare when the sweep's are not there: translate-bahdanau and
    translate-luong when present, else the first two listed (one model twice if it is alone)."""
    names = list(models)
    first = [n for n in FALLBACK_PAIR if n in models] + [n for n in names if n not in FALLBACK_PAIR]
    return first[0], first[1] if len(first) > 1 else first[0]


def sentence_matches(sentences: dict, query: str, limit: int = MAX_MATCHES) -> list[int]:
    """1-based numbers of the sentences whose German source or English reference contains
    `query` (case-insensitive; the corpus file's text is lowercased), at most `limit`."""
    q = query.strip().lower()
    if not q:
        return []
    return [i + 1 for i, (de, en) in enumerate(zip(sentences["source"], sentences["reference"]))
            if q in de.lower() or q in en.lower()][:limit]


def gold_prob_frame(r: Replay) -> pd.DataFrame:
    """The probability of each reference token (then <eos>) at each step, one row per step and
    mode: teacher-forced (fed the gold prefix: Replay.forced_gold_prob) and free-running (fed
    its own output: Replay.free_gold_prob, as long as it ran); `divergence` marks the rows of
    the first step where free-running decoding leaves the reference, with its label."""
    rows = []
    forced_mode, free_mode = GOLD_PROB_MODES
    for mode, probs, fed in ((forced_mode, r.forced_gold_prob, ["<sos>", *r.gold]),
                             (free_mode, r.free_gold_prob, ["<sos>", *r.free])):
        for t, p in enumerate(probs[: len(r.gold)]):
            diverges = r.divergence is not None and t == r.divergence
            rows.append({"step": t + 1, "position": f"{t + 1} {visible(r.gold[t])}", "gold": visible(r.gold[t]),
                         "mode": mode, "prob": float(p), "fed": visible(fed[t]), "divergence": diverges,
                         "divergence_label": f"first divergence (step {t + 1})" if diverges else ""})
    return pd.DataFrame(rows, columns=["step", "position", "gold", "mode", "prob", "fed", "divergence",
                                       "divergence_label"])


# ------------------------------------------------------------------ the replay section
def _highlight(df: pd.DataFrame, divergence: int | None):
    def row_style(row):
        if divergence is not None and row.name == divergence:
            return ["background-color: #ffd6d6; font-weight: bold"] * len(row)
        return [""] * len(row)

    def cell_style(ok):
        return "color: #c00000" if ok is False else ""

    probs = [c for c in ("p(gold | gold prefix)", "p(free token)", "p(gold | own prefix)") if c in df.columns]
    return (df.style.apply(row_style, axis=1).map(cell_style, subset=["forced ok", "free ok"])
            .format({c: "{:.3f}" for c in probs}, na_rep=""))


def _results_for(sweeps: dict[str, Path], name: str, results: dict | None,
                 results_path: Path | None) -> tuple[dict | None, Path | None]:
    """The `name` sweep's results: the ones the page loaded when that sweep is the chosen one,
    else read here (a message, not an exception, when the file cannot be read)."""
    path = sweeps.get(name)
    if path is None:
        return None, None
    if results_path is not None and Path(results_path) == Path(path):
        return results, path
    return guarded(load_results, path), path


def render_replay(results: dict | None, results_path: Path | None, sweeps: dict[str, Path] | None = None,
                  font_size: int = 14) -> None:
    st.caption("One input decoded two ways. Teacher-forced: at every step the model is fed the gold prefix and "
               "we show its best guess. Free-running: it is fed its own previous output, as when it is used. "
               "The first step where free-running leaves the gold sequence is highlighted.")
    sweeps = sweeps if sweeps is not None else ({results_path.stem: results_path} if results_path else {})
    legacy = st.query_params.get("model", "")                 # an older link to a translation model
    chosen_sweep = results_path.stem if results_path is not None and results_path.stem in REPLAY_MODES else "reverse"
    init_state("tf.replay_mode", "translate" if str(legacy).startswith("translate-") else chosen_sweep,
               query="replay", valid=lambda v: v in REPLAY_MODES)
    mode = st.radio("Replay", list(REPLAY_MODES), format_func=REPLAY_MODES.get, horizontal=True,
                    key="tf.replay_mode", on_change=save_state, args=("tf.replay_mode",),
                    help="Reversal: one model on a sequence you type. Translation: two translation models on "
                         "one German sentence and its English reference, side by side.")
    if mode == "translate":
        guarded(render_translation_replay, sweeps, results, results_path, font_size)
    else:
        render_reversal_replay(*_results_for(sweeps, "reverse", results, results_path))


def render_reversal_replay(results: dict | None, results_path: Path | None) -> None:
    models = {k: v for k, v in replay_models(results, results_path).items() if v["task"] == "reverse"}
    if not models:
        st.error("No reversal checkpoints found to replay with.")
        return
    names = list(models)
    init_state("tf.model", _default_replay_model(models), query="model", valid=lambda v: v in names)
    init_state("tf.text", REPLAY_EXAMPLES[0], query="text", valid=lambda v: isinstance(v, str) and len(v) <= MAX_CHARS)
    left, right = st.columns([3, 2])
    name = right.selectbox("Model", names, format_func=lambda n: models[n]["label"], key="tf.model",
                           on_change=save_state, args=("tf.model",))
    text = left.text_input("Sequence to reverse (the gold output is its reverse)", key="tf.text",
                           on_change=save_state, args=("tf.text",), max_chars=MAX_CHARS)
    st.caption("Examples: " + " · ".join(dict.fromkeys(REPLAY_EXAMPLES + EXAMPLES["reverse"])))
    set_url(text=text, model=name)
    if not text.strip():
        st.info("Type something to replay.")
        return
    translator = guarded(get_translator, models[name]["path"])
    if translator is None:
        return
    out = guarded(replay_text, translator, text, None)
    if out is None:
        return
    source, r = out
    show_source_notes(source)
    trained_max = (translator.ckpt.card.get("train_config") or {}).get("reverse_max_len")
    if trained_max and len(source.tokens) > trained_max:
        st.info(f"This model was trained on sequences of up to {trained_max} characters; this one has "
                f"{len(source.tokens)}, so the replay also tests length generalization, not only exposure bias.")
    cols = st.columns(3)
    cols[0].metric("first divergence (free-running)",
                   "none" if r.divergence is None else f"step {r.divergence + 1}",
                   help="The first step where the free-running output differs from the gold sequence.")
    cols[1].metric("teacher-forced mistakes", f"{len(r.forced_errors)} of {len(r.gold)}",
                   help="Steps where the argmax is wrong even with the gold prefix.")
    free_right = sum(f == g for f, g in zip(r.free, r.gold))
    cols[2].metric("free-running tokens right", f"{free_right} of {len(r.gold)}")
    if r.divergence is None:
        st.success("Free-running decoding reproduces the gold output: no exposure to its own mistakes here.")
    else:
        st.warning(f"Free-running decoding leaves the gold sequence at step {r.divergence + 1}; from there on it "
                   "reads its own output, which teacher forcing never showed it in training.")
    st.caption("Outputs as text (the last token is <eos> when the model ended):")
    st.code("gold            " + " ".join(t if t != " " else "␣" for t in r.gold) + "\n"
            "teacher-forced  " + " ".join(t if t != " " else "␣" for t in r.forced) + "\n"
            "free-running    " + " ".join(t if t != " " else "␣" for t in r.free), language=None)
    df = pd.DataFrame(replay_rows(r))
    st.dataframe(_highlight(df, r.divergence), hide_index=True, key="tf.replay_table",
                 height=min(600, 35 * (len(df) + 1) + 3))


@st.cache_data(max_entries=8, show_spinner=False)
def _corpus_sentences(path: str, mtime: float) -> dict:
    data = read_corpus_file(path, SPLIT)
    return {"checkpoint": data["checkpoint"], "source": list(data["columns"]["source"]),
            "reference": list(data["columns"]["reference"])}


def corpus_sentences() -> dict | None:
    """The test-2016 sentences ({checkpoint, source, reference}: lists of space-joined
    lowercased tokens, as the models read them) from the first translation checkpoint whose
    corpus file is there and verifies (they all hold the same sentences); None without one."""
    for e in model_entries("translate"):
        f = Path(e["path"]) / corpus_filename(SPLIT)
        if e["card"] is None or not f.is_file():
            continue
        try:
            return _corpus_sentences(e["path"], f.stat().st_mtime)
        except Seq2SeqError:
            continue
    return None


@st.cache_data(max_entries=64, show_spinner=False)
def _cached_replay(_translator, path: str, card_mtime: float, tokens: tuple | None, text: str, reference: str):
    # `_translator` is not hashed (leading underscore): path + card mtime identify the model
    if tokens is not None:
        return replay_tokens(_translator, list(tokens[0]), list(tokens[1]))
    return replay_text(_translator, text, reference)


def replay_cached(path: str, tokens: tuple | None, text: str = "", reference: str = ""):
    """(source, Replay) of one model, remembered per (checkpoint, input): a rerun for anything
    else on the page must not decode both models again. `tokens` (source tokens, reference
    tokens): a test sentence as the corpus file holds it, else `text` and `reference` typed."""
    translator = get_translator(path)
    card = Path(path) / "card.json"
    mtime = card.stat().st_mtime if card.exists() else 0.0
    return _cached_replay(translator, str(path), mtime, tokens, text, reference)


def _pick_match() -> None:
    chosen = st.session_state.get("tf.tr.match")
    if chosen is not None:
        set_state("tf.tr.n", int(chosen))


def _sentence_input(sentences: dict | None) -> dict:
    """The sentence picker: {kind, n, tokens, text, reference}."""
    kinds = list(INPUT_KINDS) if sentences else ["own"]
    init_state("tf.tr.input", kinds[0], query="input", valid=lambda v: v in kinds)
    kind = st.radio("Sentence", kinds, format_func=INPUT_KINDS.get, horizontal=True, key="tf.tr.input",
                    on_change=save_state, args=("tf.tr.input",))
    if not sentences:
        st.caption(f"No test-2016 sentences to offer: none of the translation checkpoints has a verified "
                   f"{corpus_filename(SPLIT)} beside it. Type a German sentence and its English reference.")
    if kind == "test":
        n_max = len(sentences["source"])
        init_state("tf.tr.n", 1, query="sent", cast=int, valid=lambda v: isinstance(v, int) and 1 <= v <= n_max)
        left, right = st.columns([1, 3])
        n = int(left.number_input(f"Test sentence (1–{n_max})", 1, n_max, step=1, key="tf.tr.n",
                                  on_change=save_state, args=("tf.tr.n",)))
        query = right.text_input("Find a sentence (German or English words)", key="tf.tr.search",
                                 max_chars=100, placeholder="e.g. hund, bicycle")
        if query.strip():
            found = sentence_matches(sentences, query)
            right.selectbox(f"{len(found)} matching sentence{'s' if len(found) != 1 else ''}"
                            + (f" (the first {MAX_MATCHES})" if len(found) == MAX_MATCHES else ""),
                            found, index=None, placeholder="pick one…", key="tf.tr.match", on_change=_pick_match,
                            format_func=lambda i: f"{i} · {sentences['source'][i - 1]}")
        source, reference = sentences["source"][n - 1], sentences["reference"][n - 1]
        st.caption(f"Test 2016, sentence {n}, tokenized as the models read it (from "
                   f"{sentences['checkpoint']}'s {corpus_filename(SPLIT)}). German:")
        st.text(source)
        st.caption("English reference (the gold output):")
        st.text(reference)
        return {"kind": kind, "n": n, "tokens": (tuple(source.split(" ")), tuple(reference.split(" "))),
                "text": source, "reference": reference}
    init_state("tf.tr.text", "", query="de", valid=lambda v: isinstance(v, str) and len(v) <= MAX_CHARS)
    init_state("tf.tr.ref", "", query="en", valid=lambda v: isinstance(v, str) and len(v) <= MAX_CHARS)
    text = st.text_input("German sentence", key="tf.tr.text", on_change=save_state, args=("tf.tr.text",),
                         max_chars=MAX_CHARS)
    reference = st.text_input("Reference English translation (the gold output)", key="tf.tr.ref",
                              on_change=save_state, args=("tf.tr.ref",), max_chars=MAX_CHARS)
    return {"kind": kind, "n": None, "tokens": None, "text": text, "reference": reference}


def render_translation_replay(sweeps: dict[str, Path], results: dict | None, results_path: Path | None,
                              font_size: int = 14) -> None:
    t_results, t_path = _results_for(sweeps, "translate", results, results_path)
    models = {k: v for k, v in replay_models(t_results, t_path).items() if v["task"] == "translate"}
    if not models:
        st.error("No translation checkpoints found to replay with.")
        return
    names = list(models)
    defaults = sweep_defaults(t_results, models)
    from_sweep = bool(defaults["baseline"] and defaults["scheduled"])
    if from_sweep:
        default_a, default_b = defaults["baseline"], defaults["scheduled"]
        models[default_a] = dict(models[default_a], label=models[default_a]["label"] + " · baseline")
        models[default_b] = dict(models[default_b], label=models[default_b]["label"] + " · best scheduled")
    else:
        default_a, default_b = fallback_pair(models)
        why = (f"there is no translation sweep results file in `{sweeps_dir()}`" if t_path is None else
               f"`{t_path.name}` has no kept checkpoints for constant 1 and its best scheduled policy"
               if t_results is not None else f"`{t_path.name}` could not be read")
        st.info(f"The translation sweep's models are not trained yet ({why}), so pick any two translation "
                f"checkpoints to compare. The sweep that trains them (many CPU hours) is: "
                f"`{full_command('translate')}`")
    init_state("tf.tr.a", default_a, query="a", valid=lambda v: v in names)
    init_state("tf.tr.b", default_b, query="b", valid=lambda v: v in names)
    sentence = _sentence_input(guarded(corpus_sentences))
    pick = st.columns(2)
    a = pick[0].selectbox("Left model", names, format_func=lambda n: models[n]["label"], key="tf.tr.a",
                          on_change=save_state, args=("tf.tr.a",))
    b = pick[1].selectbox("Right model", names, format_func=lambda n: models[n]["label"], key="tf.tr.b",
                          on_change=save_state, args=("tf.tr.b",))
    if from_sweep:
        trained = len({r["setting"] for r in t_results.get("runs") or [] if not r.get("error")})
        policies = len(t_results.get("settings") or [])
        so_far = ("" if t_results.get("complete", True) else
                  f"; the sweep is not finished ({trained} of its {policies} policies trained so far), so this is "
                  "the best so far" if trained < policies else
                  "; every policy has its first seed, the extra seeds are still to train")
        st.caption(f"By default: the translation sweep's constant 1 run (teacher forcing throughout) and its best "
                   f"scheduled policy ({defaults['policy']}, by mean free-running validation BLEU{so_far}), seed 1 "
                   "where it was kept.")
    own = sentence["kind"] == "own"
    set_url(replay="translate", input=sentence["kind"], sent=sentence["n"], de=sentence["text"] if own else None,
            en=sentence["reference"] if own else None, a=a, b=b)
    if own and not sentence["text"].strip():
        st.info("Type a German sentence and its English reference to replay.")
        return
    if own and not sentence["reference"].strip():
        st.warning("Type the reference English translation too: the replay compares both decodings with it.")
        return
    st.caption("p(gold | gold prefix): the probability the model gives the reference token when fed the "
               "reference so far (teacher-forced). p(gold | own prefix): the same token's probability when fed "
               "its own output so far (free-running); the two agree until the first divergence.")
    columns = st.columns(2)
    for side, name, col in (("a", a, columns[0]), ("b", b, columns[1])):
        with col:
            guarded(_render_one_translation, name, models[name], sentence, side, font_size)


def _render_one_translation(name: str, entry: dict, sentence: dict, side: str, font_size: int) -> None:
    out = guarded(replay_cached, entry["path"], sentence["tokens"], sentence["text"], sentence["reference"])
    if out is None:
        return
    source, r = out
    show_source_notes(source)
    st.metric("first divergence (free-running)", "none" if r.divergence is None else f"step {r.divergence + 1}",
              help="The first step where the free-running output differs from the reference.")
    free_right = sum(f == g for f, g in zip(r.free, r.gold))
    st.caption(f"Teacher-forced mistakes: {len(r.forced_errors)} of {len(r.gold)} · free-running tokens right: "
               f"{free_right} of {len(r.gold)} (the reference has {len(r.gold) - 1} tokens, then <eos>).")
    st.caption("Free-running output:")
    st.text(" ".join(visible(t) for t in r.free))
    show_altair(gold_prob_chart(gold_prob_frame(r), font_size), f"tf.tr.chart.{side}",
                file_slug("teacher-forcing", "exposure", name))
    df = pd.DataFrame(replay_rows(r))
    st.dataframe(_highlight(df, r.divergence), hide_index=True, key=f"tf.tr.table.{side}",
                 height=min(600, 35 * (len(df) + 1) + 3))


def _keep_lab_settings() -> None:
    for key in LAB_SETTINGS:
        save_state(key)


def render_lab(font_size: int) -> None:
    st.caption("Train a small reversal model here, with the policy you choose. Nothing is written to disk; "
               "the model is gone when you leave. Short sequences and a tiny model keep it under a minute.")
    for key, (default, valid) in LAB_SETTINGS.items():    # kept across page switches, like every other widget
        init_state(key, default, valid=valid)
    with st.form("tf.lab.form"):
        c = st.columns(3)
        arch = c[0].selectbox("Architecture", ["bahdanau", "gru"], format_func=lambda a: ARCH_LABELS[a],
                              key="tf.lab.arch")
        kind = c[1].selectbox("Teacher forcing", list(LAB_KINDS), format_func=LAB_KINDS.get, key="tf.lab.kind")
        ratio = c[2].slider("Constant ratio (for 'constant ratio')", 0.0, 1.0, step=0.05, key="tf.lab.ratio")
        c = st.columns(4)
        epochs = c[0].slider("Epochs", 1, 5, key="tf.lab.epochs")
        train_size = c[1].select_slider("Sequences per epoch", LAB_SIZES, key="tf.lab.size")
        max_len = c[2].slider("Longest sequence", 3, 8, key="tf.lab.max_len")
        seed = c[3].number_input("Seed", 0, 10_000, key="tf.lab.seed")
        # A form's widgets take no callbacks; the button's runs before the page, like theirs would.
        submitted = st.form_submit_button("Train", key="tf.lab.train", type="primary", on_click=_keep_lab_settings)
    if submitted:
        model_cfg, cfg = lab_configs(arch, kind, ratio, epochs, train_size, max_len, int(seed))
        st.caption(f"Training {ARCH_LABELS[arch]} with {describe(cfg.teacher_forcing)} "
                   f"on lengths 1–{max_len}, {epochs} × {train_size} sequences.")
        bar = st.progress(0.0, text="starting…")
        chart_slot = st.empty()
        points: list[dict] = []

        def on_batch(info: dict) -> None:
            total = info["batches"] * cfg.epochs
            done = (info["epoch"] - 1) * info["batches"] + info["batch"]
            bar.progress(min(1.0, done / total), text=f"epoch {info['epoch']}/{cfg.epochs}, batch {info['batch']}"
                                                     f"/{info['batches']}, loss {info['loss']:.3f}")
            points.append({"step": info["step"], "value": info["loss"], "series": "training loss (mean so far this epoch)"})
            points.append({"step": info["step"], "value": info["ratio"], "series": "teacher-forcing ratio"})
            chart_slot.altair_chart(lab_chart(pd.DataFrame(points), font_size))

        def on_epoch(row: dict) -> None:
            points.append({"step": row["steps"], "value": row["val_exact_match"],
                           "series": "validation exact match (free-running)"})
            chart_slot.altair_chart(lab_chart(pd.DataFrame(points), font_size))

        result = guarded(run_lab, model_cfg, cfg, on_batch, on_epoch)
        bar.empty()
        chart_slot.empty()
        if result is None:
            return
        result["points"] = points
        st.session_state["tf.lab.result"] = result
    result = st.session_state.get("tf.lab.result")
    if result is None:
        return
    c = st.columns(3)
    c[0].metric(f"exact match (lengths 1–{result['max_len']})", f"{result['exact_match']:.3f}",
                help=f"Free-running greedy decoding of {result['eval_n']} fresh sequences of every length.")
    best = max((h["val_exact_match"] for h in result["history"]), default=0.0)
    c[1].metric("best validation exact match", f"{best:.3f}")
    c[2].metric("training time", f"{result['seconds']:.0f} s")
    st.caption(f"{ARCH_LABELS.get(result['arch'], result['arch'])}, {result['policy']}.")
    show_altair(lab_chart(pd.DataFrame(result["points"]), font_size), "tf.lab.chart",
                file_slug("teacher-forcing", "live-lab", result["arch"]))


def _sweep_chosen() -> None:
    """A sweep picked: the replay follows it (the translation sweep's models replay translations)."""
    save_state("tf.sweep")
    if st.session_state["tf.sweep"] in REPLAY_MODES:
        set_state("tf.replay_mode", st.session_state["tf.sweep"])


def render_page() -> None:
    settings = sidebar_settings()
    font_size = settings["font_size"]
    folder = sweeps_dir()
    sweeps = available_sweeps(folder)
    results, results_path = None, None
    if sweeps:
        init_state("tf.sweep", default_sweep(sweeps), valid=lambda v: v in sweeps)
        if len(sweeps) > 1:
            st.radio("Sweep", list(sweeps), horizontal=True, key="tf.sweep", on_change=_sweep_chosen,
                     format_func=lambda n: SWEEP_LABELS.get(n, n),
                     help="Which sweep's results, schedules and kept models the page shows.")
        results_path = sweeps[st.session_state["tf.sweep"]]
        results = guarded(load_results, results_path)
    tabs = st.tabs(["Schedules", "Sweep results", "Exposure-bias replay", "Live lab"])
    with tabs[0]:
        render_schedules(results, font_size)
    with tabs[1]:
        if sweeps and results is None:
            st.info("The sweep results could not be read (see the message above).")
        else:
            guarded(render_sweep, results, str(folder), font_size, results_path.stem if results_path else "reverse")
    with tabs[2]:
        render_replay(results, results_path, sweeps, font_size)
    with tabs[3]:
        render_lab(font_size)
