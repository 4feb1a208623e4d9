"""The Compare page: one input through every model of a task, side by side, and the metrics
of ours beside the PyTorch tutorial's reference numbers."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from seq2seq import figures
from seq2seq.config import Decoding
from seq2seq.report import TUTORIAL_REFERENCE, reversal_note

from .cards import number, trained_on
from .common import (guarded, init_state, model_entries, save_state, set_url, show_source_notes, sidebar_settings,
                     text_with_examples, translate_cached)
from .constants import ARCH_LABELS, BLEU_FORMAT, EXAMPLES, TASK_LABELS, TASKS

GRID_COLUMNS = 2
REFERENCE_SOURCE = "tutorial (reference)"


# ------------------------------------------------------------------ pure tables and figures
def metrics_frame(entries: list[dict], task: str) -> pd.DataFrame:
    """Our models' test metrics from their cards; for translation the tutorial's reference rows
    follow, marked in the `source` column. Numbers stay numbers (NaN where a card lacks one)."""
    rows = []
    for entry in entries:
        card = entry.get("card")
        if card is None:
            continue
        metrics = card.get("metrics", {})
        row = {"model": card.get("name", entry["name"]), "source": "ours",
               "architecture": ARCH_LABELS.get(card["arch"], card["arch"]), "params (M)": card["params"] / 1e6}
        if task == "translate":
            test = metrics.get("test2016", {})
            row.update({"test PPL": number(test.get("ppl")), "BLEU (tutorial form)": number(test.get("bleu")),
                        "sacreBLEU": number(test.get("sacrebleu")),
                        "decoding": Decoding.from_card(test.get("decoding")).label})
        else:
            row.update({f"exact match {span} (%)": 100 * number(metrics.get(f"exact_match_{key}"))
                        for span, key in (("1–10", "1_10"), ("1–20", "1_20"), ("21–30", "21_30"))})
        row["trained on"] = trained_on(card.get("provenance", {}))
        rows.append(row)
    if task == "translate":
        for ref in TUTORIAL_REFERENCE:
            rows.append({"model": ref["name"], "source": REFERENCE_SOURCE,
                         "architecture": ARCH_LABELS.get(ref["arch"], ref["arch"]), "params (M)": ref["params"] / 1e6,
                         "test PPL": ref["ppl"], "BLEU (tutorial form)": ref["bleu"], "sacreBLEU": float("nan"),
                         "decoding": "greedy", "trained on": "GPU (tutorial)"})
    columns = ["model", "source", "params (M)"]
    columns += (["test PPL", "BLEU (tutorial form)", "sacreBLEU", "decoding"] if task == "translate"
                else ["exact match 1–10 (%)", "exact match 1–20 (%)", "exact match 21–30 (%)"])
    return pd.DataFrame(rows, columns=columns + ["architecture", "trained on"])


def heatmap_title(model_name: str, kind: str) -> str:
    """Names the model and says plainly when the picture is saliency, not attention."""
    return f"{model_name}: " + ("attention" if kind == "attention" else "saliency, not attention")


def compare_heatmap(model_name: str, result, task: str, font_size: int, palette: str | None = None):
    """One model's alignment heatmap; `palette` (a sidebar choice: default, viridis, cividis)
    recolours it, "default"/None keeps attention blue and saliency orange."""
    fig = figures.alignment_heatmap(result.source.tokens, result.output_tokens, result.alignment,
                                    kind=result.alignment_kind, source_unknown=result.source.unknown,
                                    ideal_antidiagonal=(task == "reverse"), font_size=font_size,
                                    title=heatmap_title(model_name, result.alignment_kind),
                                    colorscale=figures.palette_scale(palette))
    return fig


def grid_rows(items: list, width: int = GRID_COLUMNS) -> list[list]:
    """[a, b, c] -> [[a, b], [c]]: the rows of the side-by-side grid."""
    return [items[i: i + width] for i in range(0, len(items), width)]


# ------------------------------------------------------------------ page
def _controls(entries_by_task: dict[str, list[dict]]) -> tuple[str, str]:
    default_task = next((t for t in TASKS if entries_by_task[t]), TASKS[0])
    init_state("compare.task", default_task, query="task", valid=lambda v: v in TASKS)
    task = st.radio("Task", TASKS, format_func=lambda t: TASK_LABELS[t], horizontal=True, key="compare.task",
                    on_change=save_state, args=("compare.task",))
    # one text per task, so switching the task shows that task's input; the URL's text belongs
    # to the URL's task only
    text_key = f"compare.text.{task}"
    url_task = st.query_params.get("task", default_task)
    init_state(text_key, EXAMPLES[task][0], query="text" if url_task == task else None)
    text = text_with_examples(task, text_key, f"compare.example.{task}", height=80)
    set_url(task=task, text=text)
    return task, text


def _model_cell(entry: dict, text: str, task: str, settings: dict) -> None:
    """One model's output and heatmap; a model that fails shows its error here, the others go on."""
    with st.container(border=True):
        st.subheader(entry["name"])
        card = entry["card"]
        st.caption(ARCH_LABELS.get(card["arch"], card["arch"]) if card else "unreadable checkpoint")
        if entry["error"]:
            st.error(f"This model cannot be used: {entry['error']}")
            return
        with st.spinner("Decoding…"):
            result = guarded(translate_cached, entry["path"], text, 1, settings["topk"])
        if result is None:
            return
        show_source_notes(result.source)
        st.code(result.text if result.output_tokens else "(the model wrote nothing)", language=None,
                wrap_lines=True)
        st.caption(f"{len(result.output_tokens)} output tokens · log-probability {result.log_prob:.2f} · "
                   f"alignment: {result.alignment_kind}")
        if not result.finished:
            st.warning("The model did not end its output; it was cut at its maximum length.")
        if result.alignment_kind == "saliency":
            st.info("No attention in this architecture: the heatmap is gradient saliency (how much each source "
                    "token moved each output score), not attention.")
        st.plotly_chart(compare_heatmap(entry["name"], result, task, settings["font_size"], settings["palette"]),
                        config=settings["plotly_config"], key=f"compare.heatmap.{entry['name']}")


def render_compare() -> None:
    settings = sidebar_settings()
    entries_by_task = {task: model_entries(task) for task in TASKS}
    task, text = _controls(entries_by_task)
    entries = entries_by_task[task]
    if not entries:
        st.info(f"No checkpoints for “{TASK_LABELS[task]}” were found yet.")
        return
    st.caption("Greedy decoding. Heatmaps: output tokens down, source tokens across.")
    if not text.strip():
        st.info("Type something above, or pick an example.")
    else:
        for row in grid_rows(entries):
            for column, entry in zip(st.columns(GRID_COLUMNS), row):
                with column:
                    _model_cell(entry, text, task, settings)

    st.subheader("Metrics")
    frame = metrics_frame(entries, task)
    st.dataframe(frame, hide_index=True, key=f"compare.metrics.{task}",
                 column_config={c: st.column_config.NumberColumn(format=BLEU_FORMAT if "BLEU" in c else
                                                                 "%.2f" if c == "params (M)" else "%.1f")
                                for c in frame.columns if frame[c].dtype.kind == "f"})
    if task == "translate":
        st.caption("Rows marked “tutorial (reference)” are the numbers the PyTorch seq2seq tutorials "
                   "(bentrevett/pytorch-seq2seq) report: Multi30k test 2016, BLEU on lowercased spaCy tokens, "
                   "which is how our “BLEU (tutorial form)” is computed too. sacreBLEU is the standard score "
                   "on detokenized text (the tutorials report none). “decoding” is how our test BLEU was decoded.")
    else:
        st.caption(reversal_note([e["card"] for e in entries if e.get("card") is not None]))
