"""The Translate and Reverse pages: type, decode, and watch the decoder look at the source."""
from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from seq2seq import figures
from seq2seq.alignment import diagonality, reads_pieces, row_entropy, word_columns
from seq2seq.config import Decoding
from seq2seq.translate import MAX_ALPHA

from .common import (decode_for_page, decoding_query, init_state, init_tab, kept_tabs, model_entries, model_label,
                     save_state, set_url, sidebar_settings, text_with_examples)
from .constants import EXAMPLES, default_model
from .step_view import init_step, render_attribution_tab, render_step_tab
from .training_view import render_training_tab

if TYPE_CHECKING:
    import pandas as pd

SOURCE_AXES = ["pieces the model reads", "whole words (their pieces' weights summed)"]


def exact_match_frame(entries: list[dict]) -> pd.DataFrame:
    import pandas as pd  # only the Reverse page needs it: kept off the Translate page's first load

    rows = []
    for e in entries:
        rev = (e["card"] or {}).get("metrics", {}).get("reversal", {})
        for length, em in rev.get("exact_match_by_length", {}).items():
            rows.append({"model": e["name"], "length": int(length), "exact match": em})
    return pd.DataFrame(rows, columns=["model", "length", "exact match"])


def tab_names(task: str) -> list[str]:
    return (["Alignment heatmap", "Step by step", "Inside one step", "Attention vs attribution", "During training"]
            + (["Where models break"] if task == "reverse" else []))


def controls(task: str, entries: list[dict]):
    names = [e["name"] for e in entries]
    k = task  # widget keys are per page, so both pages keep their own input
    init_state(f"{k}.text", EXAMPLES[task][0], query="text")
    init_state(f"{k}.model", default_model(names, (task,)), query="model", valid=lambda v: v in names)
    init_state(f"{k}.beam", 1, query="beam", cast=int, valid=lambda v: isinstance(v, int) and 1 <= v <= 10)
    init_state(f"{k}.alpha", 1.0, query="alpha", cast=float,
               valid=lambda v: isinstance(v, float) and 0 <= v <= MAX_ALPHA)
    init_state(f"{k}.no_unk", False, query="no_unk", cast=lambda v: v in ("1", "true", True),
               valid=lambda v: isinstance(v, bool))
    init_state(f"{k}.prefix", "", query="prefix")
    tabs = tab_names(task)
    tab = init_tab(f"{k}.tab", tabs, query="tab")
    left, right = st.columns([3, 2], gap="large")
    with left:
        text = text_with_examples(task, f"{k}.text", f"{k}.example")
    with right:
        by_name = {e["name"]: e for e in entries}
        model = st.selectbox("Model", names, format_func=lambda n: model_label(by_name[n]), key=f"{k}.model",
                             on_change=save_state, args=(f"{k}.model",))
        beam = st.slider("Beam width (1 = greedy)", 1, 10, key=f"{k}.beam", on_change=save_state, args=(f"{k}.beam",))
        c1, c2 = st.columns(2)
        alpha = c1.number_input("Length exponent α", 0.0, MAX_ALPHA, step=0.1, format="%.1f", key=f"{k}.alpha",
                                on_change=save_state, args=(f"{k}.alpha",), disabled=beam == 1,
                                help="Beam search ranks log P(output) / length^α: 0 favours short outputs, "
                                     "1 is the per-word average. Greedy decoding has no use for it.")
        no_unk = c2.toggle("No <unk>", key=f"{k}.no_unk", on_change=save_state, args=(f"{k}.no_unk",),
                           help="Never write the unknown-word token <unk>: the model's best real word is written "
                                "instead. "
                                "The test-set BLEU of a model whose card says \"no <unk>\" is measured this way.")
        prefix = st.text_input("Force the output to start with (optional)", key=f"{k}.prefix",
                               on_change=save_state, args=(f"{k}.prefix",),
                               help="Type the first output words; the model continues from there.")
    decoding = Decoding(beam, float(alpha), bool(no_unk))          # greedy: alpha back to 1
    set_url(text=text, model=model, **decoding_query(decoding), prefix=prefix,
            tab=tab if tab != tabs[0] else None)     # a shared link opens on the same tab
    return text, by_name[model], decoding, prefix


def render_inspector(task: str) -> None:
    settings = sidebar_settings()
    entries = model_entries(task)
    if not entries:
        st.error("No checkpoints for this task were found in checkpoints/.")
        return
    text, entry, decoding, prefix = controls(task, entries)
    beam = decoding.beam
    decoded = decode_for_page(entry, text, beam, settings["topk"], prefix=prefix, alpha=decoding.alpha,
                              no_unk=decoding.no_unk)
    if decoded is None:
        return
    translator, result = decoded
    forced = len(translator.prefix_ids(prefix))

    st.caption("Output" + (" (the first words forced)" if forced else ""))
    st.code(result.text if result.output_tokens else "(the model wrote nothing)", language=None, wrap_lines=True)
    cols = st.columns([1.4, 1.4, 4.4, 1.6])   # the decoding's label is the longest ("beam 5, α 0.8, no <unk>")
    cols[0].metric("output tokens", len(result.output_tokens))
    cols[1].metric("log-probability", f"{result.log_prob:.2f}")
    cols[2].metric("decoding", decoding.label, help=decoding.label)
    cols[3].metric("alignment", result.alignment_kind)
    if not result.finished:
        st.warning(f"The model did not end its output within {translator.cfg.max_out_len} tokens; it was cut there.")
    if result.alignment_kind == "saliency":
        st.info("This architecture has no attention. The heatmap shows gradient saliency instead: how much each "
                "source token moved the score of each output token. It is not attention.")

    step = init_step(task, len(result.steps))
    renderers = [lambda: render_heatmap_tab(task, entry, result, forced, settings),
                 lambda: render_steps_tab(task, result, forced, step, settings),
                 lambda: render_step_tab(task, translator, result, settings),
                 lambda: render_attribution_tab(task, entry, translator, result, text, settings),
                 lambda: render_training_tab(task, entry, text, beam, settings),
                 lambda: render_length_tab(entries, settings)]          # in the order of tab_names
    for tab, render in zip(kept_tabs(f"{task}.tab", tab_names(task)), renderers):
        with tab:
            if tab.open:            # only the open tab is computed
                render()


def render_heatmap_tab(task: str, entry: dict, result, forced: int, settings: dict) -> None:
    config, scale = settings["plotly_config"], figures.palette_scale(settings["palette"])
    source, matrix, unknown = result.source.tokens, result.alignment, result.source.unknown
    if reads_pieces(source):
        axis_key = f"{task}.source_axis"
        init_state(axis_key, SOURCE_AXES[0], valid=lambda v: v in SOURCE_AXES)
        per_word = st.radio("Source axis", SOURCE_AXES, horizontal=True, key=axis_key,
                            on_change=save_state, args=(axis_key,),
                            help="This model reads German in byte-pair pieces: \"@@\" marks a piece whose word "
                                 "goes on in the next one.") != SOURCE_AXES[0]
        if per_word:
            source, matrix, unknown = word_columns(source, matrix, unknown)
    fig = figures.alignment_heatmap(source, result.output_tokens, matrix,
                                    kind=result.alignment_kind, source_unknown=unknown,
                                    forced_rows=forced, ideal_antidiagonal=(task == "reverse"),
                                    font_size=settings["font_size"], colorscale=scale)
    st.plotly_chart(fig, config=config, key=f"{task}.heatmap")
    st.download_button("Download the alignment matrix (CSV)",
                       figures.alignment_csv(source, result.output_tokens, matrix),
                       file_name=f"{entry['name']}-alignment.csv", mime="text/csv", key=f"{task}.csv")
    if task == "reverse" and len(result.output_tokens):
        c1, c2 = st.columns([1, 3])
        c1.metric("diagonality", f"{diagonality(result.alignment):.2f}",
                  help="Mean share of each output row's weight on the mirrored source position (1 = ideal).")
        import pandas as pd

        ent = pd.DataFrame({"step": range(1, len(result.output_tokens) + 1),
                            "entropy (nats)": row_entropy(result.alignment), "curve": result.alignment_kind})
        c2.altair_chart(figures.line_chart(ent, "step", "entropy (nats)", "curve",
                                           "How spread out the decoder's focus is at each step (0 = one token)",
                                           font_size=settings["font_size"]), key=f"{task}.entropy")


def render_steps_tab(task: str, result, forced: int, step: int, settings: dict) -> None:
    st.caption("Press ▶ play, or drag the slider: the partial output, the weights over the source at that "
               "step, and the candidates the model considered next.")
    step_fig = figures.step_figure(result.source.tokens, result.steps, result.step_alignment,
                                   kind=result.alignment_kind, source_unknown=result.source.unknown,
                                   forced_rows=forced, font_size=settings["font_size"])
    figures.step_figure_at(step_fig, step - 1)     # opens on the step chosen in "Inside one step"
    st.plotly_chart(step_fig, config=settings["plotly_config"], key=f"{task}.steps")


def render_length_tab(entries: list[dict], settings: dict) -> None:
    df = exact_match_frame(entries)
    if df.empty:
        st.info("No exact-match-by-length results in the model cards yet.")
        return
    max_len = max(((e["card"] or {}).get("train_config") or {}).get("reverse_max_len", 20) for e in entries)
    st.altair_chart(figures.line_chart(df, "length", "exact match", "model",
                                       "Exact match by sequence length (fresh sequences)",
                                       y_domain=(0, 1), rule_x=max_len + 0.5,
                                       rule_label=f"trained on lengths up to {max_len}",
                                       font_size=settings["font_size"]), key="reverse.em")
    st.caption(f"Models were trained on lengths 1–{max_len}; right of the dashed line they have never "
               "seen a sequence that long.")
