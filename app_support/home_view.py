"""The Home page: what the app shows, the shipped models (from their cards), links to every page."""
from __future__ import annotations

from types import MappingProxyType

import pandas as pd
import streamlit as st

from seq2seq.report import reversal_note
from seq2seq.subword import source_units

from .cards import number, shipped_bytes, trained_on
from .common import model_entries, sidebar_settings
from .constants import ARCH_LABELS, BLEU_FORMAT, PAGES, TASK_LABELS

# Column order of the models table; metrics a task does not have stay empty (NaN).
MODEL_COLUMNS = ("model", "task", "architecture", "source read as", "params", "size on disk (MiB)", "BLEU (tutorial form)",
                 "sacreBLEU", "test PPL", "exact match 1–20 (%)", "exact match 21–30 (%)", "trained on",
                 "training time (min)")
TASK_METRIC_COLUMNS = MappingProxyType({"translate": ("source read as", "BLEU (tutorial form)", "sacreBLEU", "test PPL"),
                                        "reverse": ("exact match 1–20 (%)", "exact match 21–30 (%)")})


def models_frame(entries: list[dict]) -> pd.DataFrame:
    """One row per readable checkpoint (entries as `model_entries` gives them), numbers as numbers.

    Unreadable checkpoints (card None) are left out; the page lists their errors apart."""
    rows = []
    for entry in entries:
        card = entry.get("card")
        if card is None:
            continue
        metrics = card.get("metrics", {})
        test = metrics.get("test2016", {})
        provenance = card.get("provenance", {})
        rows.append({
            "model": card.get("name", entry["name"]),
            "task": TASK_LABELS.get(card["task"], card["task"]),
            "architecture": ARCH_LABELS.get(card["arch"], card["arch"]),
            "source read as": source_units((card.get("tokenizers") or {}).get("src"), card.get("train_config")),
            "params": int(card["params"]),
            "size on disk (MiB)": shipped_bytes(card) / 2**20,
            "BLEU (tutorial form)": number(test.get("bleu")),
            "sacreBLEU": number(test.get("sacrebleu")),
            "test PPL": number(test.get("ppl")),
            "exact match 1–20 (%)": 100 * number(metrics.get("exact_match_1_20")),
            "exact match 21–30 (%)": 100 * number(metrics.get("exact_match_21_30")),
            "trained on": trained_on(provenance),
            # every run behind the weights: a continuation or a soup counts its first run too
            "training time (min)": number(provenance.get("wall_seconds_total", provenance.get("wall_seconds"))) / 60,
        })
    return pd.DataFrame(rows, columns=list(MODEL_COLUMNS))


def task_table(frame: pd.DataFrame, task: str) -> pd.DataFrame:
    """The rows of one task with only the metrics that task has (no empty columns on screen)."""
    other = {c for t, cols in TASK_METRIC_COLUMNS.items() if t != task for c in cols}
    rows = frame[frame["task"] == TASK_LABELS[task]]
    return rows[[c for c in frame.columns if c not in other and c != "task"]].reset_index(drop=True)


def model_column_config() -> dict:
    """How st.dataframe formats the models table."""
    one_decimal = {"format": "%.1f"}
    bleu = {"format": BLEU_FORMAT}
    return {
        "params": st.column_config.NumberColumn(format="localized"),
        "size on disk (MiB)": st.column_config.NumberColumn(**one_decimal),
        "BLEU (tutorial form)": st.column_config.NumberColumn(
            **bleu, help="On lowercased spaCy tokens, as the PyTorch tutorial computes it"),
        "sacreBLEU": st.column_config.NumberColumn(**bleu, help="Detokenized text, standard sacreBLEU"),
        "test PPL": st.column_config.NumberColumn(**one_decimal),
        "exact match 1–20 (%)": st.column_config.NumberColumn(**one_decimal, help="Lengths seen in training"),
        "exact match 21–30 (%)": st.column_config.NumberColumn(**one_decimal,
                                                               help="Longer than any training sequence"),
        "training time (min)": st.column_config.NumberColumn(
            **one_decimal, help="Wall time of every run behind the weights (a continuation or an average counts all)"),
    }


def render_home() -> None:
    sidebar_settings()
    st.markdown(
        "Sequence-to-sequence models, opened up. Type a sentence and see **what the model wrote**, "
        "**where the decoder looked** for every output word (attention, or gradient saliency for the "
        "models without attention), the **candidates** it weighed at each step, and how **beam search** "
        "and **teacher forcing** change the result. Two tasks: German → English translation (Multi30k) "
        "and writing a sequence of characters backwards.")

    st.subheader("Pages")
    for page in PAGES[1:]:                       # every page but Home itself
        st.page_link(page.path, label=page.title, icon=page.icon)
        st.caption(page.summary)

    st.subheader("Shipped models")
    entries = model_entries("translate") + model_entries("reverse")
    frame = models_frame(entries)
    if frame.empty:
        st.info("No readable checkpoints found yet. Train one with `python -m seq2seq.train`; it appears here "
                "as soon as its card.json is written.")
    reversal_cards = [e["card"] for e in entries if e["card"] is not None and e["card"].task == "reverse"]
    for task, note in (("translate", "BLEU and perplexity on Multi30k test 2016."),
                       ("reverse", reversal_note(reversal_cards))):
        table = task_table(frame, task)
        if table.empty:
            continue
        st.markdown(f"**{TASK_LABELS[task]}**")
        st.dataframe(table, hide_index=True, column_config=model_column_config(), key=f"home.models.{task}")
        st.caption(f"From each checkpoint's card.json. {note}")
    for entry in entries:
        if entry["error"]:
            st.error(f"Checkpoint {entry['name']} cannot be read: {entry['error']}")
