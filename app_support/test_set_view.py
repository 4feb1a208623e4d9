"""The Test set page: per-sentence BLEU and attention statistics of every translation model
over test 2016, read from the verified `corpus-test2016.json` beside each checkpoint (made by
`python -m seq2seq.corpus`); no data directory needed. Widgets and layout only: the numbers
come from seq2seq.corpus, the charts from seq2seq.figures. Corpus text is shown only in
dataframes (never Markdown)."""
from __future__ import annotations

from urllib.parse import quote, urlencode

import pandas as pd
import streamlit as st

from seq2seq import figures
from seq2seq.config import Decoding
from seq2seq.corpus import (ATTENTION_COLUMNS, DEFINITIONS, ORDERS, STATISTICS, CorpusFileMissing, corpus_frame,
                            correlation, long_frame, read_corpus_file, sorted_rows, summary)
from seq2seq.errors import Seq2SeqError

from .common import (ARCH_LABELS, decoding_query, file_slug, guarded, init_state, model_entries, save_state,
                     show_altair, sidebar_settings)

SPLIT = "test2016"
TRANSLATE_PAGE = "translate"          # the Translate page's URL path (pages/translate.py)
ATTENTION_STATS = ("entropy", "monotonicity", "dropped", "repeated")
SCATTER_STATS = (*ATTENTION_STATS, "length_ratio")
TABLE_COLUMNS = ["sentence", "bleu", "entropy", "monotonicity", "dropped", "dropped words", "repeated",
                 "repeated words", "length_ratio", "source", "output", "reference", "open"]


def translate_url(source: str, model: str, decoding: dict | None) -> str:
    """A link (relative to the app's base URL) that opens the Translate page on a sentence,
    with the model and the decoding the statistics were made with (beam width, length
    exponent, <unk> forbidden or not), so the page shows the same output."""
    params = {"text": source, "model": model,
              **{k: v for k, v in decoding_query(Decoding.from_card(decoding)).items() if v is not None}}
    return f"{TRANSLATE_PAGE}?{urlencode(params, quote_via=quote)}"


def _load(entry: dict) -> dict:
    """{name, entry, data, frame, missing, error} for one checkpoint."""
    out = {"name": entry["name"], "entry": entry, "data": None, "frame": None, "missing": None, "error": None}
    if entry["error"]:
        out["error"] = entry["error"]
        return out
    try:
        out["data"] = read_corpus_file(entry["path"], SPLIT)
        out["frame"] = corpus_frame(out["data"])
    except CorpusFileMissing as e:
        out["missing"] = str(e)
    except Seq2SeqError as e:
        out["error"] = str(e)
    return out


def overview_frame(loaded: list[dict]) -> pd.DataFrame:
    rows = []
    for m in loaded:
        card = m["entry"]["card"] or {}
        row = {"model": m["name"], "architecture": ARCH_LABELS.get(card.get("arch"), card.get("arch") or "?")}
        if m["data"] is None:
            row["status"] = "no statistics file" if m["missing"] else "statistics file refused"
        else:
            d = m["data"]
            means = summary(m["frame"])
            row.update({"status": "ok", "decoding": d["decoding"]["label"], "sentences": d["sentences"],
                        "corpus BLEU": d.get("corpus_bleu"), "card BLEU": d.get("card_bleu"),
                        **{f"mean {STATISTICS[k]}": means[k] for k in STATISTICS}})
        rows.append(row)
    cols = ["model", "architecture", "status", "decoding", "sentences", "corpus BLEU", "card BLEU",
            *[f"mean {STATISTICS[k]}" for k in STATISTICS]]
    return pd.DataFrame(rows).reindex(columns=cols)


def _select(label: str, options: list, key: str, format_func=str):
    init_state(key, options[0], valid=lambda v: v in options)
    return st.selectbox(label, options, key=key, format_func=format_func, on_change=save_state, args=(key,))


def _notices(loaded: list[dict]) -> None:
    for m in loaded:
        if m["missing"]:
            st.info(f"{m['name']}: no test-set statistics yet. Make them (from the project folder) with:")
            st.code(m["missing"].split("make them with: ", 1)[-1], language="bash")
        elif m["error"]:
            st.error(f"{m['name']}: its statistics file cannot be used.")
            st.text(m["error"])
    plain = [m["name"] for m in loaded if m["data"] is not None and not m["data"]["attention"]]
    if plain:
        st.caption(f"{', '.join(plain)}: no attention (the decoder reads one fixed summary of the source), so "
                   "only sentence BLEU and the length ratio apply; entropy, monotonicity and coverage do not.")


def _distributions(ready: list[dict], font_size: int) -> None:
    stat = _select("Statistic", list(STATISTICS), "test_set.dist_stat", STATISTICS.get)
    frames = {m["name"]: m["frame"] for m in ready if stat not in ATTENTION_COLUMNS or m["data"]["attention"]}
    if not frames:
        st.info("No model with attention has a statistics file, so this statistic has nothing to show.")
        return
    tidy = long_frame(frames, stat)
    show_altair(figures.statistic_histograms(tidy, f"{STATISTICS[stat]} per sentence, {SPLIT}",
                                             STATISTICS[stat], font_size=font_size), "test_set.hist",
                file_slug(SPLIT, stat, "histograms"))
    if stat in ATTENTION_COLUMNS and len(frames) < len(ready):
        st.caption("Models without attention are left out of this statistic.")


def _scatter(ready: list[dict], font_size: int) -> None:
    attn = [m for m in ready if m["data"]["attention"]]
    if not attn:
        st.info("No model with attention has a statistics file: there is no attention statistic to plot.")
        return
    by_name = {m["name"]: m for m in attn}
    left, right = st.columns(2)
    with left:
        name = _select("Model", list(by_name), "test_set.scatter_model")
    with right:
        stat = _select("Statistic (x axis)", list(SCATTER_STATS), "test_set.scatter_stat", STATISTICS.get)
    df = by_name[name]["frame"]
    corr = correlation(df[stat].tolist(), df["bleu"].tolist())
    cols = st.columns(3)
    cols[0].metric("Pearson r", "n/a" if corr["pearson"] is None else f"{corr['pearson']:.3f}")
    cols[1].metric("Spearman ρ", "n/a" if corr["spearman"] is None else f"{corr['spearman']:.3f}")
    cols[2].metric("sentences", corr["n"])
    show_altair(figures.statistic_scatter(df, stat, "bleu", STATISTICS[stat], STATISTICS["bleu"],
                                          f"{name}: {STATISTICS[stat]} against sentence BLEU",
                                          font_size=font_size), "test_set.scatter",
                file_slug(SPLIT, name, stat, "against-bleu"), width="stretch")


def _table(ready: list[dict]) -> None:
    by_name = {m["name"]: m for m in ready}
    left, right = st.columns(2)
    with left:
        name = _select("Model", list(by_name), "test_set.table_model")
    m = by_name[name]
    orders = list(ORDERS) if m["data"]["attention"] else [o for o in ORDERS if ORDERS[o][0] not in ATTENTION_COLUMNS]
    with right:
        order = _select("Order", orders, "test_set.order")
    df = sorted_rows(m["frame"], order).copy()
    df["open"] = [translate_url(s, name, m["data"]["decoding"]) for s in df["source"]]
    if not m["data"]["attention"]:
        df = df.drop(columns=[c for c in ("entropy", "monotonicity", "dropped", "dropped words", "repeated",
                                          "repeated words") if c in df])
    st.caption(f"{len(df)} sentences, decoded with {m['data']['decoding']['label']}; click a column header to "
               "sort by it; \"open\" shows the sentence on the Translate page (in a new tab).")
    config = {
        "sentence": st.column_config.NumberColumn("#", format="%d"),
        "bleu": st.column_config.NumberColumn("BLEU", format="%.2f"),
        "entropy": st.column_config.NumberColumn("entropy", format="%.3f"),
        "monotonicity": st.column_config.NumberColumn("monotonicity", format="%.3f"),
        "dropped": st.column_config.NumberColumn("possibly dropped", format="%d"),
        "repeated": st.column_config.NumberColumn("attended repeatedly", format="%d"),
        "length_ratio": st.column_config.NumberColumn("length ratio", format="%.3f"),
        "open": st.column_config.LinkColumn("open", display_text="Translate ↗"),
    }
    st.dataframe(df[[c for c in TABLE_COLUMNS if c in df]], column_config=config, hide_index=True, key="test_set.table")


def render_test_set() -> None:
    settings = sidebar_settings()
    entries = model_entries("translate")
    if not entries:
        st.error("No translation checkpoints were found in checkpoints/.")
        return
    loaded = [_load(e) for e in entries]
    st.dataframe(overview_frame(loaded), hide_index=True, key="test_set.overview")
    _notices(loaded)
    ready = [m for m in loaded if m["data"] is not None]
    with st.expander("What the statistics mean"):
        for k, text in DEFINITIONS.items():
            st.text(f"{k}: {text}")
        st.text("Each model is decoded the way its card's test metrics were (the decoding column); "
                "corpus BLEU recomputed from the file's outputs sits beside the card's.")
    if not ready:
        return
    tabs = st.tabs(["Distributions", "Attention against BLEU", "Sentences"])
    with tabs[0]:
        guarded(_distributions, ready, settings["font_size"])
    with tabs[1]:
        guarded(_scatter, ready, settings["font_size"])
    with tabs[2]:
        guarded(_table, ready)
