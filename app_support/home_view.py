"""The Home page: what the app shows, the shipped models (from their cards), links to every page."""
from __future__ import annotations

import math
from types import MappingProxyType

import pandas as pd
import streamlit as st

from .common import ARCH_LABELS, TASK_LABELS, model_entries, sidebar_settings

# (page file as registered in app.py, link label, icon, what you see there)
PAGE_LINKS = (
    ("pages/translate.py", "Translate", "🌍",
     "German → English: the translation, where the decoder looked for every word, and the candidates it "
     "weighed at each step."),
    ("pages/reverse.py", "Reverse", "🔁",
     "The classic toy task: write the input backwards. Perfect attention is an anti-diagonal."),
    ("pages/compare.py", "Compare models", "⚖️",
     "One input through every model side by side, with the metrics beside the tutorial's reference numbers."),
    ("pages/teacher_forcing.py", "Teacher forcing", "🎓",
     "Feeding the decoder the right previous word in training, or its own guess: the schedules between the "
     "two, what a sweep over them found, and a small model to train yourself."),
    ("pages/beam_search.py", "Beam search", "🌳",
     "Every hypothesis beam search keeps at each step, with its score, and the one that wins."),
)

# Column order of the models table; metrics a task does not have stay empty (NaN).
MODEL_COLUMNS = ("model", "task", "architecture", "params", "size on disk (MiB)", "BLEU (tutorial form)",
                 "sacreBLEU", "test PPL", "exact match 1–20 (%)", "exact match 21–30 (%)", "trained on",
                 "training time (min)")
TASK_METRIC_COLUMNS = MappingProxyType({"translate": ("BLEU (tutorial form)", "sacreBLEU", "test PPL"),
                                        "reverse": ("exact match 1–20 (%)", "exact match 21–30 (%)")})


def number(value) -> float:
    """A card metric as a float; NaN when missing or not a number (tables show it as empty)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def trained_on(provenance: dict) -> str:
    """'GPU: NVIDIA H100 80GB HBM3' or 'CPU: x86_64 (2 threads)' from a card's provenance."""
    device, name = provenance.get("device", "?"), provenance.get("device_name", "?")
    if device == "cuda":
        return f"GPU: {name}"
    threads = provenance.get("cpu_threads")
    return f"{str(device).upper()}: {name}" + (f" ({threads} threads)" if threads else "")


def shipped_bytes(card: dict) -> int:
    """Bytes of the files a checkpoint ships, as its card records them (loading verifies them),
    so the table needs no disk access."""
    return sum(int(f.get("bytes", 0)) for f in card.get("files", {}).values() if isinstance(f, dict))


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
            "params": int(card["params"]),
            "size on disk (MiB)": shipped_bytes(card) / 2**20,
            "BLEU (tutorial form)": number(test.get("bleu")),
            "sacreBLEU": number(test.get("sacrebleu")),
            "test PPL": number(test.get("ppl")),
            "exact match 1–20 (%)": 100 * number(metrics.get("exact_match_1_20")),
            "exact match 21–30 (%)": 100 * number(metrics.get("exact_match_21_30")),
            "trained on": trained_on(provenance),
            "training time (min)": number(provenance.get("wall_seconds")) / 60,
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
    return {
        "params": st.column_config.NumberColumn(format="localized"),
        "size on disk (MiB)": st.column_config.NumberColumn(**one_decimal),
        "BLEU (tutorial form)": st.column_config.NumberColumn(
            **one_decimal, help="On lowercased spaCy tokens, as the PyTorch tutorial computes it"),
        "sacreBLEU": st.column_config.NumberColumn(**one_decimal, help="Detokenized text, standard sacreBLEU"),
        "test PPL": st.column_config.NumberColumn(**one_decimal),
        "exact match 1–20 (%)": st.column_config.NumberColumn(**one_decimal, help="Lengths seen in training"),
        "exact match 21–30 (%)": st.column_config.NumberColumn(**one_decimal,
                                                               help="Longer than any training sequence"),
        "training time (min)": st.column_config.NumberColumn(**one_decimal),
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
    for path, label, icon, what in PAGE_LINKS:
        st.page_link(path, label=label, icon=icon)
        st.caption(what)

    st.subheader("Shipped models")
    entries = model_entries("translate") + model_entries("reverse")
    frame = models_frame(entries)
    if frame.empty:
        st.info("No readable checkpoints found yet. Train one with `python -m seq2seq.train`; it appears here "
                "as soon as its card.json is written.")
    for task, note in (("translate", "BLEU and perplexity on Multi30k test 2016."),
                       ("reverse", "Exact match on 200 fresh sequences per length; trained on lengths 1–20.")):
        table = task_table(frame, task)
        if table.empty:
            continue
        st.markdown(f"**{TASK_LABELS[task]}**")
        st.dataframe(table, hide_index=True, column_config=model_column_config(), key=f"home.models.{task}")
        st.caption(f"From each checkpoint's card.json. {note}")
    for entry in entries:
        if entry["error"]:
            st.error(f"Checkpoint {entry['name']} cannot be read: {entry['error']}")
