"""The Beam search page: every hypothesis beam search keeps at each step, with its score, the
winner highlighted; the knobs of the ranking (length exponent alpha, coverage penalty beta);
the final n-best, each with its attention heatmap; and where the winner differs from greedy.

The search, its tree and every hypothesis' log-probability come from seq2seq/decoding.py
(via Translation.n_best); this module only formats them."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from seq2seq import figures
from seq2seq.decoding import token_diff
from seq2seq.report import coverage_measured
from seq2seq.translate import MAX_ALPHA, MAX_BEAM, MAX_COVERAGE

from .common import (EXAMPLES, get_translator, guarded, init_state, model_entries, model_label, save_state, set_url,
                     show_source_notes, sidebar_settings, text_with_examples, translate_cached, translator_for_page)
from .constants import TASKS, default_model

DEFAULT_WIDTH = 3
DEFAULT_ALPHA, DEFAULT_COVERAGE = 1.0, 0.0
ALPHA_STEP, COVERAGE_STEP = 0.1, 0.05
ATTENTION_ARCHS = ("bahdanau", "luong")
HYPOTHESIS_COLUMNS = ("rank", "winner", "output", "tokens", "ended", "score", "log P")


def final_hypotheses(n_best) -> pd.DataFrame:
    """The final hypotheses (Translation.n_best, best first) as a table: text, length, whether it
    ended with <eos>, the score beam search ranks by and its log-probability."""
    rows = [{"rank": h.rank, "winner": h.rank == 1, "output": h.text, "tokens": len(h.output_tokens),
             "ended": h.finished, "score": h.score, "log P": h.log_prob} for h in (n_best or [])]
    return pd.DataFrame(rows, columns=list(HYPOTHESIS_COLUMNS))


def score_formula(alpha: float, coverage: float) -> str:
    """What the score column is, in words and symbols (plain text: no user input in it)."""
    text = "score = log P / length^α" + f" (α = {alpha:g})"
    if coverage:
        text += (f"; the final ranking adds β · Σ_i log min(attention received by source token i, 1) "
                 f"(β = {coverage:g}, GNMT's coverage penalty: it reorders the hypotheses the search kept, "
                 "the steps' scores are without it)")
    return text


def differing_positions(diff: list[dict]) -> int:
    return sum(max(len(d["reference"]), len(d["other"])) for d in diff if d["op"] != "equal")


# ------------------------------------------------------------------ decoding, cached
@st.cache_data(max_entries=128, show_spinner=False)
def _cached_beam(_translator, path: str, card_mtime: float, text: str, width: int, topk: int, alpha: float,
                 coverage: float):
    # `_translator` is not hashed (leading underscore): path + card mtime identify the model
    return _translator.translate(text, beam=width, topk=topk, return_tree=True, alpha=alpha, coverage=coverage)


def beam_cached(path: str, text: str, width: int, topk: int, alpha: float, coverage: float):
    translator = get_translator(path)
    card = Path(path) / "card.json"
    mtime = card.stat().st_mtime if card.exists() else 0.0
    return _cached_beam(translator, str(path), mtime, text, int(width), int(topk), float(alpha), float(coverage))


# ------------------------------------------------------------------ page
def _default_model(names: list[str]) -> str:
    return default_model(names, TASKS)


def _has_attention(entry: dict) -> bool:
    card = entry.get("card") or {}
    return (card.get("arch") or (card.get("config") or {}).get("arch")) in ATTENTION_ARCHS


def _controls(entries: list[dict]) -> tuple[dict, str, int, float, float]:
    by_name = {e["name"]: e for e in entries}
    names = list(by_name)
    init_state("beam.model", _default_model(names), query="model", valid=lambda v: v in by_name)
    init_state("beam.width", DEFAULT_WIDTH, query="width", cast=int,
               valid=lambda v: isinstance(v, int) and 1 <= v <= MAX_BEAM)
    init_state("beam.alpha", DEFAULT_ALPHA, query="alpha", cast=float,
               valid=lambda v: isinstance(v, float) and 0.0 <= v <= MAX_ALPHA)
    init_state("beam.coverage", DEFAULT_COVERAGE, query="coverage", cast=float,
               valid=lambda v: isinstance(v, float) and 0.0 <= v <= MAX_COVERAGE)
    left, right = st.columns([3, 2], gap="large")
    with right:
        model = st.selectbox("Model", names, format_func=lambda n: model_label(by_name[n]), key="beam.model",
                             on_change=save_state, args=("beam.model",))
        width = st.slider("Beam width (1 = greedy)", 1, MAX_BEAM, key="beam.width", on_change=save_state,
                          args=("beam.width",))
        alpha = st.slider("Length exponent α (score = log P / length^α)", 0.0, MAX_ALPHA, step=ALPHA_STEP,
                          key="beam.alpha", on_change=save_state, args=("beam.alpha",),
                          help="0 ranks by log P alone (favours short outputs); 1 by log P per token; "
                               "above 1 favours longer outputs.")
        attention = _has_attention(by_name[model])
        coverage = st.slider("Coverage penalty β (GNMT)", 0.0, MAX_COVERAGE, step=COVERAGE_STEP,
                             key="beam.coverage", on_change=save_state, args=("beam.coverage",),
                             disabled=not attention,
                             help="Adds β · Σ log min(attention a source token received, 1): hypotheses that "
                                  "leave source tokens unread rank lower. Needs attention.")
        if not attention:
            st.caption("This model has no attention, so there is no coverage to penalize: β is not used.")
            coverage = 0.0
        elif measured := coverage_measured((by_name[model].get("card") or {}).get("metrics")):
            st.caption(measured)
    task = by_name[model]["task"]
    # one text per task: a German sentence makes no sense to a reversal model, and back; the
    # URL's text belongs to the URL's model's task only
    text_key = f"beam.text.{task}"
    url_task = by_name.get(st.query_params.get("model"), {"task": task})["task"]
    init_state(text_key, EXAMPLES[task][0], query="text" if url_task == task else None)
    with left:
        text = text_with_examples(task, text_key, f"beam.example.{task}")
    alpha, coverage = round(float(alpha), 2), round(float(coverage), 2)
    # the knobs go into the URL only when moved from their defaults
    set_url(text=text, model=model, width=width, alpha=None if alpha == DEFAULT_ALPHA else alpha,
            coverage=None if coverage == DEFAULT_COVERAGE else coverage)
    return by_name[model], text, width, alpha, coverage


def _decode(entry: dict, text: str, width: int, topk: int, alpha: float, coverage: float):
    """(translator, beam result, greedy result) or None, with what is in the way shown."""
    translator = translator_for_page(entry, text)
    if translator is None:
        return None
    result = guarded(beam_cached, entry["path"], text, width, topk, alpha, coverage)
    if result is None:
        return None
    show_source_notes(result.source)
    greedy = result if width == 1 else guarded(translate_cached, entry["path"], text, 1, topk)
    if greedy is None:
        return None
    return translator, result, greedy


def _greedy_comparison(result, greedy, width: int, settings: dict) -> None:
    st.subheader("Beam against greedy")
    if width == 1:
        st.caption("Width 1 is greedy decoding: there is nothing to compare.")
        return
    diff = token_diff(greedy.output_tokens, result.output_tokens)
    # categorical colours (changed / only in one), not a scale: the palette does not apply
    st.plotly_chart(figures.token_diff_figure(diff, "greedy", f"beam {width}", font_size=settings["font_size"]),
                    config=settings["plotly_config"], key="beam.diff")
    n = differing_positions(diff)
    if n:
        st.caption(f"{n} position(s) differ (highlighted). Greedy's log P {greedy.log_prob:.2f}, "
                   f"the beam winner's {result.log_prob:.2f}.")
    else:
        st.caption("Beam search and greedy decoding wrote the same tokens.")


def _n_best(result, translator, settings: dict) -> None:
    st.subheader("Final hypotheses")
    st.dataframe(final_hypotheses(result.n_best), hide_index=True, key="beam.hypotheses",
                 column_config={"score": st.column_config.NumberColumn(format="%.3f"),
                                "log P": st.column_config.NumberColumn(format="%.2f")})
    st.caption(score_formula(result.alpha, result.coverage) + ". Length counts <eos> when the hypothesis ended.")
    if not result.n_best:
        return
    if result.n_best[0].attention is None:
        st.info("This architecture has no attention: the hypotheses have no attention heatmaps.")
        return
    tabs = st.tabs([f"#{h.rank}" + (" (winner)" if h.rank == 1 else "") for h in result.n_best])
    for tab, h in zip(tabs, result.n_best):
        with tab:
            st.text(h.text if h.output_tokens else "(empty output)")
            st.plotly_chart(figures.alignment_heatmap(result.source.tokens, h.output_tokens, h.attention,
                                                      source_unknown=result.source.unknown,
                                                      font_size=settings["font_size"],
                                                      title=f"Hypothesis {h.rank}: attention",
                                                      colorscale=figures.palette_scale(settings["palette"])),
                            config=settings["plotly_config"], key=f"beam.heatmap.{h.rank}")


def render_beam_search() -> None:
    settings = sidebar_settings()
    entries = [{**entry, "task": task} for task in TASKS for entry in model_entries(task)]
    if not entries:
        st.error("No checkpoints were found in checkpoints/.")
        return
    entry, text, width, alpha, coverage = _controls(entries)
    decoded = _decode(entry, text, width, settings["topk"], alpha, coverage)
    if decoded is None:
        return
    translator, result, greedy = decoded

    st.caption("Winner" + (" (width 1: the greedy output)" if width == 1 else f" of {width} hypotheses"))
    st.code(result.text if result.output_tokens else "(the model wrote nothing)", language=None, wrap_lines=True)
    cols = st.columns(3)
    cols[0].metric("score", f"{result.score:.3f}")
    cols[1].metric("log-probability", f"{result.log_prob:.2f}")
    cols[2].metric("decoder steps", len(result.beam_tree or []))
    if not result.finished:
        st.warning(f"The winner did not end within {translator.cfg.max_out_len} tokens; it was cut there.")

    st.plotly_chart(figures.beam_tree_figure(result.beam_tree, translator.ckpt.tgt_vocab.itos,
                                             font_size=settings["font_size"]),
                    config=settings["plotly_config"], key="beam.tree")
    st.caption("Each column is a decoder step, each row a beam slot; a line joins a hypothesis to the one it "
               "extends. Hover a node for its score, what beam search ranks by. A hypothesis that ended "
               "(■ = <eos>) keeps its score and its slot until the search stops.")
    _greedy_comparison(result, greedy, width, settings)
    _n_best(result, translator, settings)
