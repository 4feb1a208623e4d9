"""The Teacher forcing page: the schedules, what the sweep found, an exposure-bias replay,
and a live lab that trains a small reversal model in the page.

The functions named *_frame are pure (data in, DataFrame out) so they can be tested
without a browser; the charts are built from those frames by seq2seq.figures, the live
lab's training is seq2seq.lab and the replay seq2seq.exposure; the render_* functions draw."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from seq2seq.config import TeacherForcingConfig
from seq2seq.exposure import replay_rows, replay_text
from seq2seq.figures import curves_charts, final_chart, lab_chart, position_chart, schedule_chart
from seq2seq.lab import lab_configs, run_lab
from seq2seq.schedules import describe, teacher_forcing_ratio
from seq2seq.sweep import constant_setting, decay_setting, load_results

from .common import (checkpoint_root, get_translator, guarded, init_state, model_entries, save_state, set_state,
                     set_url, show_source_notes, sidebar_settings)
from .constants import ARCH_LABELS, EXAMPLES

SWEEPS_ENV = "ATTENTION_LAB_SWEEPS"        # a folder holding <sweep>.json (default: checkpoints/sweeps)
CONSTANTS = (0.0, 0.25, 0.5, 0.75, 1.0)
DECAYS = ("linear", "exponential", "inverse_sigmoid")
DEFAULT_BATCHES = 1000
MAX_CHARS = 500
METRIC_LABELS = {"exact_match": "exact match", "bleu": "BLEU"}
REPLAY_EXAMPLES = ["attention is all you need", "hello world", "the quick brown fox", "abc 123"]
LAB_KINDS = {"constant": "constant ratio", "linear": "linear decay", "exponential": "exponential decay",
             "inverse_sigmoid": "inverse-sigmoid decay"}


def sweeps_dir() -> Path:
    return Path(os.environ.get(SWEEPS_ENV) or checkpoint_root() / "sweeps")


def available_sweeps(folder: Path) -> dict[str, Path]:
    """sweep name -> results file, reversal first."""
    if not folder.is_dir():
        return {}
    found = {p.stem: p for p in sorted(folder.glob("*.json")) if not p.name.startswith(".")}
    return dict(sorted(found.items(), key=lambda kv: (kv[0] != "reverse", kv[0])))


# ------------------------------------------------------------------ pure: schedules
def schedule_configs(linear_c: float, exp_k: float, inv_k: float,
                     constants=CONSTANTS) -> dict[str, TeacherForcingConfig]:
    """strategy label -> policy: the constant ratios and the three decays."""
    out = {constant_setting(r).label: constant_setting(r).tf for r in constants}
    out["linear decay"] = TeacherForcingConfig("linear", k=1.0, c=float(linear_c), eps_min=0.0)
    out["exponential decay"] = TeacherForcingConfig("exponential", k=float(exp_k))
    out["inverse-sigmoid decay"] = TeacherForcingConfig("inverse_sigmoid", k=float(inv_k))
    return out


def schedule_frame(configs: dict[str, TeacherForcingConfig], total_steps: int, points: int = 101) -> pd.DataFrame:
    """The ratio at `points` evenly spaced training steps from 0 to `total_steps` (both
    included), one row per (strategy, step)."""
    total_steps = max(1, int(total_steps))
    steps = sorted({round(total_steps * i / (points - 1)) for i in range(points)})
    rows = [{"step": s, "ratio": teacher_forcing_ratio(cfg, s), "strategy": label,
             "kind": "constant" if cfg.kind == "constant" else "decay"}
            for label, cfg in configs.items() for s in steps]
    return pd.DataFrame(rows, columns=["step", "ratio", "strategy", "kind"])


# ------------------------------------------------------------------ pure: sweep results
def strategy_order(results: dict) -> list[str]:
    order = [s["label"] for s in results.get("settings", [])]
    for run in results["runs"]:
        if run["setting"] not in order:
            order.append(run["setting"])
    return order


def runs_frame(results: dict) -> pd.DataFrame:
    """One row per run: its final free-running metric (None for a failed run)."""
    metric = results.get("metric", "exact_match")
    rows = [{"arch": r["arch"], "strategy": r["setting"], "seed": r["seed"], "name": r.get("name", ""),
             "value": (r.get("final") or {}).get(metric), "error": r.get("error")} for r in results["runs"]]
    return pd.DataFrame(rows, columns=["arch", "strategy", "seed", "name", "value", "error"])


def summary_frame(runs: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Per arch and strategy: mean, std, min and max of the final metric over seeds."""
    ok = runs.dropna(subset=["value"])
    cols = ["arch", "strategy", "seeds", "mean", "std", "min", "max"]
    if ok.empty:
        return pd.DataFrame(columns=cols)
    g = ok.groupby(["arch", "strategy"])["value"]
    out = pd.DataFrame({"seeds": g.count(), "mean": g.mean(), "std": g.std(ddof=0), "min": g.min(),
                        "max": g.max()}).reset_index()
    out["rank"] = out["strategy"].map({s: i for i, s in enumerate(order)})
    out = out.sort_values(["arch", "rank"]).drop(columns="rank").reset_index(drop=True)
    return out[cols].round(4)


def history_frame(results: dict) -> pd.DataFrame:
    """Per run and epoch: teacher-forced validation loss and the free-running metric."""
    key = "val_bleu" if results.get("metric") == "bleu" else "val_exact_match"
    rows = []
    for r in results["runs"]:
        for h in r.get("history") or []:
            rows.append({"arch": r["arch"], "strategy": r["setting"], "seed": r["seed"], "epoch": h["epoch"],
                         "val_loss": h.get("val_loss"), "metric": h.get(key), "train_loss": h.get("train_loss"),
                         "tf_ratio": h.get("tf_ratio")})
    return pd.DataFrame(rows, columns=["arch", "strategy", "seed", "epoch", "val_loss", "metric", "train_loss",
                                       "tf_ratio"])


def mean_curves(history: pd.DataFrame) -> pd.DataFrame:
    """history_frame averaged over seeds."""
    if history.empty:
        return history.drop(columns="seed")
    return (history.groupby(["arch", "strategy", "epoch"], as_index=False)
            [["val_loss", "metric", "train_loss", "tf_ratio"]].mean())


def position_frame(results: dict) -> pd.DataFrame:
    """Accuracy by output position, mean (and range) over seeds, per arch and strategy."""
    rows = [{"arch": r["arch"], "strategy": r["setting"], "seed": r["seed"], "position": int(p), "accuracy": a}
            for r in results["runs"] for p, a in (r.get("accuracy_by_position") or {}).items()]
    df = pd.DataFrame(rows, columns=["arch", "strategy", "seed", "position", "accuracy"])
    if df.empty:
        return pd.DataFrame(columns=["arch", "strategy", "position", "accuracy", "min", "max"])
    g = df.groupby(["arch", "strategy", "position"])["accuracy"]
    return pd.DataFrame({"accuracy": g.mean(), "min": g.min(), "max": g.max()}).reset_index()


# ------------------------------------------------------------------ page sections
def render_schedules(results: dict | None, font_size: int) -> None:
    st.markdown("At training batch *i* the decoder is fed the gold previous token with probability "
                "ε(i), else its own argmax. The coin is flipped per sequence and per time step. "
                "Scheduled sampling (Bengio et al., 2015) starts near 1 and decays toward 0.")
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
    st.altair_chart(schedule_chart(schedule_frame(configs, steps), font_size), key="tf.schedules")
    st.dataframe(pd.DataFrame([{"strategy": label, "formula": describe(cfg),
                                "ratio at start": round(teacher_forcing_ratio(cfg, 0), 3),
                                "at the middle": round(teacher_forcing_ratio(cfg, steps // 2), 3),
                                "at the end": round(teacher_forcing_ratio(cfg, steps), 3)}
                               for label, cfg in configs.items()]), hide_index=True, key="tf.schedule_table")


def render_sweep(results: dict | None, where: str, font_size: int) -> None:
    if results is None:
        st.info(f"No sweep results found in {where}. Run `python -m seq2seq.sweep reverse` "
                "(it writes checkpoints/sweeps/reverse.json), then reload this page.")
        return
    metric_label = METRIC_LABELS.get(results.get("metric"), "score")
    if results.get("scale") != "full":
        st.warning("These are results of a reduced sweep: " + str(results.get("note", "")))
    if not results.get("complete", True):
        st.info(f"The sweep is not finished yet: {len(results['runs'])} runs so far.")
    runs = runs_frame(results)
    failed = runs[runs["error"].notna()]
    if len(failed):
        st.warning(f"{len(failed)} runs failed and are left out: " + ", ".join(failed["name"]))
    if runs["value"].notna().sum() == 0:
        st.info("The results file holds no finished runs yet.")
        return
    order = strategy_order(results)
    archs = list(dict.fromkeys(runs["arch"]))
    st.caption(f"{len(runs)} runs · archs {', '.join(archs)} · seeds {results.get('seeds')} · "
               f"{results.get('total_batches')} training batches each · device {results.get('device')}")

    st.subheader(f"Final free-running {metric_label} by strategy")
    summary = summary_frame(runs, order)
    st.altair_chart(final_chart(runs, order, metric_label, font_size), key="tf.final")
    st.dataframe(summary, hide_index=True, key="tf.summary")

    if st.session_state.get("tf.arch") not in archs:      # another sweep was chosen
        st.session_state.pop("tf.arch", None)
    arch = st.radio("Architecture for the curves", archs, horizontal=True, key="tf.arch",
                    format_func=lambda a: ARCH_LABELS.get(a, a))
    st.subheader("Training curves: teacher-forced loss vs free-running quality")
    st.caption("Validation loss is measured teacher-forced (gold prefixes); the metric is measured free-running "
               "(the model's own prefixes). A lower loss does not always mean better free-running output. "
               "Mean over seeds.")
    curves = mean_curves(history_frame(results))
    against, loss, metric = curves_charts(curves[curves["arch"] == arch], order, metric_label, font_size)
    st.altair_chart(against, key="tf.curves")
    left, right = st.columns(2)
    left.altair_chart(loss, key="tf.loss_by_epoch")
    right.altair_chart(metric, key="tf.metric_by_epoch")

    st.subheader("Accuracy by output position")
    positions = position_frame(results)
    st.caption("Share of outputs whose token at each position is right. Under exposure bias, an early mistake "
               "feeds the decoder a prefix it never saw in training, so accuracy falls with position.")
    st.altair_chart(position_chart(positions[positions["arch"] == arch], order, font_size), key="tf.positions")


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
    for name in ("bahdanau-tf1-s1", "reverse-bahdanau"):
        if name in models:
            return name
    return next(iter(models))


def _highlight(df: pd.DataFrame, divergence: int | None):
    def row_style(row):
        if divergence is not None and row.name == divergence:
            return ["background-color: #ffd6d6; font-weight: bold"] * len(row)
        return [""] * len(row)

    def cell_style(ok):
        return "color: #c00000" if ok is False else ""

    return (df.style.apply(row_style, axis=1).map(cell_style, subset=["forced ok", "free ok"])
            .format({"p(gold | gold prefix)": "{:.3f}", "p(free token)": "{:.3f}"}, na_rep=""))


def render_replay(results: dict | None, results_path: Path | None) -> None:
    st.caption("One input decoded two ways. Teacher-forced: at every step the model is fed the gold prefix and "
               "we show its best guess. Free-running: it is fed its own previous output, as when it is used. "
               "The first step where free-running leaves the gold sequence is highlighted.")
    models = replay_models(results, results_path)
    if not models:
        st.error("No checkpoints found to replay with.")
        return
    names = list(models)
    init_state("tf.model", _default_replay_model(models), query="model", valid=lambda v: v in names)
    init_state("tf.text", REPLAY_EXAMPLES[0], query="text", valid=lambda v: isinstance(v, str) and len(v) <= MAX_CHARS)
    init_state("tf.reference", "", query="ref", valid=lambda v: isinstance(v, str) and len(v) <= MAX_CHARS)
    left, right = st.columns([3, 2])
    name = right.selectbox("Model", names, format_func=lambda n: models[n]["label"], key="tf.model",
                           on_change=save_state, args=("tf.model",))
    task = models[name]["task"]
    label = ("Sequence to reverse (the gold output is its reverse)" if task == "reverse"
             else "German sentence")
    text = left.text_input(label, key="tf.text", on_change=save_state, args=("tf.text",), max_chars=MAX_CHARS)
    reference = None
    if task == "translate":
        reference = left.text_input("Reference English translation (the gold output)", key="tf.reference",
                                    on_change=save_state, args=("tf.reference",), max_chars=MAX_CHARS)
    else:
        st.caption("Examples: " + " · ".join(dict.fromkeys(REPLAY_EXAMPLES + EXAMPLES["reverse"])))
    set_url(text=text, model=name, ref=reference if task == "translate" else None)
    if not text.strip():
        st.info("Type something to replay.")
        return
    translator = guarded(get_translator, models[name]["path"])
    if translator is None:
        return
    out = guarded(replay_text, translator, text, reference)
    if out is None:
        return
    source, r = out
    show_source_notes(source)
    trained_max = (translator.ckpt.card.get("train_config") or {}).get("reverse_max_len")
    if task == "reverse" and trained_max and len(source.tokens) > trained_max:
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


def render_lab(font_size: int) -> None:
    st.caption("Train a small reversal model here, with the policy you choose. Nothing is written to disk; "
               "the model is gone when you leave. Short sequences and a tiny model keep it under a minute.")
    with st.form("tf.lab.form"):
        c = st.columns(3)
        arch = c[0].selectbox("Architecture", ["bahdanau", "gru"], format_func=lambda a: ARCH_LABELS[a],
                              key="tf.lab.arch")
        kind = c[1].selectbox("Teacher forcing", list(LAB_KINDS), format_func=LAB_KINDS.get, key="tf.lab.kind")
        ratio = c[2].slider("Constant ratio (for 'constant ratio')", 0.0, 1.0, 1.0, 0.05, key="tf.lab.ratio")
        c = st.columns(4)
        epochs = c[0].slider("Epochs", 1, 5, 3, key="tf.lab.epochs")
        train_size = c[1].select_slider("Sequences per epoch", [256, 500, 1000, 2000, 3000, 4000], 2000,
                                        key="tf.lab.size")
        max_len = c[2].slider("Longest sequence", 3, 8, 6, key="tf.lab.max_len")
        seed = c[3].number_input("Seed", 0, 10_000, 1, key="tf.lab.seed")
        submitted = st.form_submit_button("Train", key="tf.lab.train", type="primary")
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
    st.altair_chart(lab_chart(pd.DataFrame(result["points"]), font_size), key="tf.lab.chart")


def render_page() -> None:
    settings = sidebar_settings()
    font_size = settings["font_size"]
    folder = sweeps_dir()
    sweeps = available_sweeps(folder)
    results, results_path = None, None
    if sweeps:
        init_state("tf.sweep", next(iter(sweeps)), valid=lambda v: v in sweeps)
        if len(sweeps) > 1:
            st.radio("Sweep", list(sweeps), horizontal=True, key="tf.sweep", on_change=save_state, args=("tf.sweep",))
        results_path = sweeps[st.session_state["tf.sweep"]]
        results = guarded(load_results, results_path)
    tabs = st.tabs(["Schedules", "Sweep results", "Exposure-bias replay", "Live lab"])
    with tabs[0]:
        render_schedules(results, font_size)
    with tabs[1]:
        if sweeps and results is None:
            st.info("The sweep results could not be read (see the message above).")
        else:
            render_sweep(results, str(folder), font_size)
    with tabs[2]:
        render_replay(results, results_path)
    with tabs[3]:
        render_lab(font_size)
