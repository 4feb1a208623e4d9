"""The "Inside one step" and "Attention vs attribution" tabs of the Translate and Reverse
pages, and the classroom's "Guess first" game. Widgets only: the arithmetic is
seq2seq/step_detail.py and seq2seq/attribution.py, the figures seq2seq/figures.py and
seq2seq/figures.py."""
from __future__ import annotations

import hashlib
import string

import numpy as np
import streamlit as st

from seq2seq import figures
from seq2seq.attribution import METHOD_LABELS, ablate_attention, attribution_report, MAX_ATTRIBUTION_TOKENS
from seq2seq.step_detail import explain_step

from .common import guarded, init_state, save_state, set_state, translate_cached

SECOND_METHODS = ("occlusion", "integrated_gradients")


def step_key(task: str) -> str:
    return f"{task}.step"


def init_step(task: str, n_steps: int) -> int:
    """The chosen output step (1-based), shared by "Step by step" and "Inside one step"."""
    key = step_key(task)
    init_state(key, 1, cast=int, valid=lambda v: isinstance(v, int) and 1 <= v <= max(1, n_steps))
    return int(st.session_state[key])


def md_literal(text: str) -> str:
    """A token as a widget label, shown literally: Streamlit renders Markdown in labels, so
    every ASCII punctuation character is backslash-escaped."""
    text = "␣" if text == " " else str(text)
    return "".join("\\" + c if c in string.punctuation else c for c in text)


# ------------------------------------------------------------------ Inside one step
def render_step_tab(task: str, translator, result, settings: dict) -> None:
    n = len(result.steps)
    if n == 0:
        st.info("The decoder took no steps on this input.")
        return
    key = step_key(task)
    init_step(task, n)
    if n > 1:
        st.slider("Output step", 1, n, key=key, on_change=save_state, args=(key,),
                  help="The same step opens in the Step by step tab.")
    step = int(st.session_state[key]) if n > 1 else 1
    detail = guarded(explain_step, translator.model, result.source.ids, result.step_tokens, step,
                     topk=settings["topk"])
    if detail is None:
        return
    itos = translator.ckpt.tgt_vocab.itos
    st.caption(f"Step {step} of {n}: the decoder was fed")
    st.text(itos[detail.input_id])
    st.caption("and wrote")
    st.text(itos[detail.chosen_id])
    guess_key = f"{task}.guess_mode"
    init_state(guess_key, False, valid=lambda v: isinstance(v, bool))   # kept while another tab is open
    guess_on = st.toggle("Guess first", key=guess_key, on_change=save_state, args=(guess_key,),
                         help="Hide this step's attention until you click the source token you think the decoder "
                              "will look at most.")
    font = settings["font_size"]
    src, unk = result.source.tokens, result.source.unknown
    if detail.weights is not None:
        revealed = True
        if guess_on:
            revealed = render_guess(task, result, step)
        if revealed:
            render_attention_arithmetic(task, detail, src, unk, result, step, settings)
    else:
        if guess_on:
            st.info("Guess first needs attention: this model has none (lstm / gru).")
        st.markdown(f"**No attention in this model.** {detail.context_label.capitalize()}: the same vector at "
                    f"every step. Beside it, the decoder's input (the embedded token fed) and its state after "
                    f"this step:")
        c = st.columns(3)
        c[0].metric("|context|", f"{detail.context_norm:.3f}")
        c[1].metric("|decoder input|", f"{detail.input_norm:.3f}")
        c[2].metric("|decoder state|", f"{detail.state_norm:.3f}")
        fig = figures.fixed_context_figure(detail.context, detail.input_norm, detail.state_norm, step=step,
                                                font_size=font)
        st.plotly_chart(figures.with_palette(fig, settings["palette"]), config=settings["plotly_config"],
                        key=f"{task}.inside.context")
        st.caption(f"The output layer reads {detail.output_reads_label} ({len(detail.output_reads)} numbers).")
    st.plotly_chart(figures.topk_figure([itos[i] for i in detail.topk_ids], detail.topk_probs,
                                             chosen=itos[detail.chosen_id], font_size=font),
                    config=settings["plotly_config"], key=f"{task}.inside.topk")


def render_attention_arithmetic(task, detail, src, unk, result, step, settings) -> None:
    import pandas as pd

    font = settings["font_size"]
    formula = ("e_i = vᵀ tanh(W s + U h_i + b), with the query s the previous decoder state"
               if detail.arch == "bahdanau" else "e_i = h_tᵀ W h_i (Luong's general score), with the query h_t "
               "the decoder state after this step's GRU update")
    st.caption("Recomputed from the model's weights:")
    st.code(f"{formula}\na = softmax(e) over the real source tokens (padding excluded: weight 0)\n"
            f"c = Σ a_i h_i\nthe output layer reads {detail.output_reads_label}", language=None)
    fig = figures.step_energy_figure(src, detail.energies, detail.weights, detail.included, step=step,
                                          source_unknown=unk, font_size=font)
    guess = guesses_for(task, result).get(step)
    if guess is not None:
        figures.mark_guess(fig, guess, guess == int(np.argmax(detail.weights)), row=2, col=1)
    st.plotly_chart(fig, config=settings["plotly_config"], key=f"{task}.inside.energies")
    table = pd.DataFrame({"#": range(len(src)), "source token": src, "energy e_i": detail.energies,
                          "weight a_i": detail.weights, "in the softmax": detail.included,
                          "share of |c|": detail.contributions})
    st.dataframe(table, hide_index=True, key=f"{task}.inside.table")
    if all(detail.included):
        st.caption("One sentence has no padding: every source token is in the softmax. In a padded batch the "
                   "padding positions get weight 0 (shown gray in the figure).")
    st.plotly_chart(figures.context_contribution_figure(src, detail.contributions, detail.contribution_norms,
                                                             detail.context_norm, source_unknown=unk,
                                                             font_size=font),
                    config=settings["plotly_config"], key=f"{task}.inside.context")
    c = st.columns(3)
    c[0].metric("|query|", f"{detail.query_norm:.3f}", help=detail.query_label)
    c[1].metric("|context c|", f"{detail.context_norm:.3f}")
    c[2].metric("|what the output layer reads|", f"{float(np.linalg.norm(detail.output_reads)):.3f}",
                help=detail.output_reads_label)


# ------------------------------------------------------------------ Guess first
def sentence_id(task: str, result) -> str:
    """What identifies a decoded sentence for the guessing score: its source and output tokens."""
    raw = "\x1f".join(result.source.tokens) + "\x1e" + "\x1f".join(s["token"] for s in result.steps)
    return hashlib.sha1(raw.encode("utf-8")).hexdigest()


def guesses_for(task: str, result) -> dict[int, int]:
    """{step: guessed source position} for the current sentence (a new sentence starts afresh)."""
    store = st.session_state.setdefault(f"{task}.guesses", {})
    sid = sentence_id(task, result)
    if store.get("sentence") != sid:
        store.clear()
        store.update(sentence=sid, guesses={}, right={})
    return store["guesses"]


def guess_score(task: str) -> tuple[int, int]:
    store = st.session_state.get(f"{task}.guesses", {})
    right = store.get("right", {})
    return sum(right.values()), len(right)


def _record_guess(task: str, step: int, pills_key: str, answer: int) -> None:
    position = st.session_state.get(pills_key)
    if position is None:
        return
    store = st.session_state[f"{task}.guesses"]
    store["guesses"][step] = int(position)
    store["right"][step] = int(position) == answer


def _next_step(task: str, step: int) -> None:
    set_state(step_key(task), step + 1)


def render_guess(task: str, result, step: int) -> bool:
    """The guessing game for `step`; True once this step's attention may be shown."""
    guesses = guesses_for(task, result)
    row = np.asarray(result.step_alignment[step - 1], dtype=float)
    answer = int(np.argmax(row))
    src = result.source.tokens
    if step not in guesses:
        pills_key = f"{task}.guess.{sentence_id(task, result)[:8]}.{step}"
        st.pills("Which source token will the decoder look at most for this step? Click it to reveal.",
                 list(range(len(src))), format_func=lambda i: f"{i + 1}: {md_literal(src[i])}", key=pills_key,
                 on_change=_record_guess, args=(task, step, pills_key, answer))
        right, tried = guess_score(task)
        st.caption(f"Score for this sentence: {right} of {tried} right." if tried else "No guesses yet.")
        return False
    guess = guesses[step]
    ok = guess == answer
    (st.success if ok else st.error)(
        f"{'Right' if ok else 'Not quite'}: you guessed source token #{guess + 1}; the decoder looked most at "
        f"#{answer + 1} (weight {row[answer]:.2f}).")
    right, tried = guess_score(task)
    c1, c2 = st.columns([3, 1])
    c1.metric("Right guesses for this sentence", f"{right} of {tried}")
    if step < len(result.steps):
        c2.button("Next step →", key=f"{task}.guess.next", on_click=_next_step, args=(task, step))
    return True


# ------------------------------------------------------------------ Attention vs attribution
@st.cache_data(max_entries=64, show_spinner="Computing attributions…")
def _cached_report(_model, path: str, src_ids: tuple, out_ids: tuple, method: str, attention: tuple | None):
    att = None if attention is None else np.asarray(attention, dtype=float)
    return attribution_report(_model, list(src_ids), list(out_ids), method, attention=att)


@st.cache_data(max_entries=64, show_spinner="Decoding with attention ablated…")
def _cached_ablation(_model, path: str, src_ids: tuple, mode: str, attention: tuple):
    return ablate_attention(_model, list(src_ids), mode, attention=np.asarray(attention, dtype=float))


def _as_key(matrix) -> tuple:
    return tuple(tuple(float(x) for x in row) for row in np.asarray(matrix, dtype=float))


def _roomy_panels(fig, source_tokens: list[str], font_size: int):
    """Panels side by side are narrow: slant the source ticks and lift the panel titles above
    them, so neither runs into the other (seen in projector mode)."""
    longest = max((len(figures.esc(t)) for t in source_tokens), default=1)
    lift = int(0.71 * 0.6 * font_size * min(longest, 30) + 1.5 * font_size) if len(source_tokens) > 2 else \
        int(1.6 * font_size)
    fig.update_xaxes(tickangle=-45 if len(source_tokens) > 2 else 0)
    fig.update_annotations(yshift=lift)
    fig.update_layout(margin_t=(fig.layout.margin.t or 60) + lift, height=(fig.layout.height or 400) + lift)
    return fig


def render_attribution_tab(task: str, entry: dict, translator, result, text: str, settings: dict) -> None:
    import pandas as pd

    T = len(result.output_tokens)
    if T == 0:
        st.info("The model wrote nothing, so there is nothing to attribute.")
        return
    attention = result.alignment_kind == "attention"
    method_key = f"{task}.attr.method"
    init_state(method_key, SECOND_METHODS[0], valid=lambda v: v in SECOND_METHODS)
    second = st.radio("Second attribution", SECOND_METHODS, format_func=METHOD_LABELS.get, horizontal=True,
                      key=method_key, on_change=save_state, args=(method_key,),
                      help="Occlusion: the drop in the output token's log-probability when one source token is "
                           "replaced by <unk>. Integrated gradients: gradients along the path from a zero "
                           "embedding to the real one (slower).")
    src_ids, out_ids = tuple(result.source.ids), tuple(result.step_tokens[:T])
    att_key = _as_key(result.alignment) if attention else None
    path = str(entry["path"])
    reports = {}
    for method in ("grad_input", second):
        rep = guarded(_cached_report, translator.model, path, src_ids, out_ids, method, att_key)
        if rep is None:
            return
        reports[method] = rep
    base = reports["grad_input"]
    rows, cols = base.matrix.shape
    if base.note:
        st.info(base.note + f" (at most {MAX_ATTRIBUTION_TOKENS} of each).")
    src, outs = result.source.tokens[:cols], result.output_tokens[:rows]
    panels = ([("attention", np.asarray(result.alignment)[:rows, :cols])] if attention else []) + \
             [(METHOD_LABELS[m], r.matrix) for m, r in reports.items()]
    rho = {METHOD_LABELS[m]: r.spearman_with_attention for m, r in reports.items() if r.spearman_with_attention}
    fig = figures.attribution_comparison_figure(src, outs, panels, spearman=rho or None,
                                                     source_unknown=result.source.unknown[:cols],
                                                     font_size=settings["font_size"])
    fig = _roomy_panels(fig, src, settings["font_size"])
    st.plotly_chart(figures.with_palette(fig, settings["palette"]), config=settings["plotly_config"],
                    key=f"{task}.attr.fig")
    if not attention:
        st.info("This model has no attention (lstm / gru): the attributions alone. The Alignment heatmap tab shows "
                "gradient saliency, a third attribution.")
        return
    st.subheader("Does attention agree with the attributions?")
    for r in reports.values():
        st.markdown(r.summary["text"])
    table = pd.DataFrame({"#": range(1, rows + 1), "output token": outs})
    for m, r in reports.items():
        table[f"Spearman: attention vs {METHOD_LABELS[m]}"] = [None if not np.isfinite(x) else round(x, 3)
                                                               for x in r.spearman_with_attention]
        table[f"same argmax ({METHOD_LABELS[m]})"] = r.argmax_agrees
    st.dataframe(table, hide_index=True, key=f"{task}.attr.table")

    st.subheader("Ablate attention")
    ablation_key = f"{task}.attr.ablation"
    init_state(ablation_key, "uniform", valid=lambda v: v in ("uniform", "mask_top"))
    mode = st.radio("Decode again with", ("uniform", "mask_top"), horizontal=True, key=ablation_key,
                    on_change=save_state, args=(ablation_key,),
                    format_func={"uniform": "uniform attention weights",
                                 "mask_top": "the most-attended source token masked"}.get)
    reference = result
    if result.beam != 1 or len(translator.prefix_ids(st.session_state.get(f"{task}.prefix", ""))):
        reference = guarded(translate_cached, path, text, 1, settings["topk"])
        if reference is None:
            return
        st.caption("The ablated decoding is greedy with no forced words, so it is compared with the normal greedy "
                   "output (not the beam / forced one above).")
    if mode == "mask_top" and len(reference.source.ids) < 2:
        st.info("Masking needs at least two source tokens.")
        return
    ab = guarded(_cached_ablation, translator.model, path, tuple(reference.source.ids), mode,
                 _as_key(reference.alignment if len(reference.output_tokens) else result.alignment))
    if ab is None:
        return
    st.caption(ab.description + ":")
    if ab.masked_position is not None:
        st.text(f"masked: #{ab.masked_position + 1} {reference.source.tokens[ab.masked_position]}")
    itos = translator.ckpt.tgt_vocab.itos
    normal_ids = reference.step_tokens[:len(reference.output_tokens)]
    ablated = [itos[i] for i in ab.output_ids]
    st.caption("Output with attention ablated")
    st.code(translator.display_text(ablated) if ablated else "(the model wrote nothing)", language=None,
            wrap_lines=True)
    st.plotly_chart(figures.token_diff_figure(ab.diff(normal_ids, itos), reference_label="normal",
                                                   other_label="ablated", font_size=settings["font_size"]),
                    config=settings["plotly_config"], key=f"{task}.attr.diff")
    st.caption("The output did not change." if not ab.changed(normal_ids) else
               "Highlighted: where the ablated output differs from the normal one.")
