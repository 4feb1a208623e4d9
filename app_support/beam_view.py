"""The Beam search page: every hypothesis beam search keeps at each step, with its score, the
winner highlighted, and the final hypotheses as a table."""
from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from seq2seq import figures
from seq2seq.text import display_text
from seq2seq.translate import MAX_BEAM
from seq2seq.vocab import EOS_ID

from .common import (EXAMPLES, decode_for_page, init_state, model_entries, model_label, save_state, set_url,
                     sidebar_settings, text_with_examples)
from .compare_view import TASKS
from .inspector import PLOTLY_CONFIG, PREFERRED

DEFAULT_WIDTH = 3
HYPOTHESIS_COLUMNS = ("rank", "winner", "output", "tokens", "ended", "score (log P / length)", "log P")


def winner_slot(tree: list[dict]) -> int:
    """The final beam slot with the best score: the hypothesis beam search returns (ties: first slot)."""
    last = [s if math.isfinite(s) else -math.inf for s in tree[-1]["scores"]]
    return max(range(len(last)), key=lambda k: (last[k], -k))


def slot_history(tree: list[dict], slot: int) -> list[int]:
    """Token ids of the hypothesis in final `slot`, start to end (with <eos> if it ended).
    Steps where the beam was already finished hold a frozen <pad> copy and are skipped."""
    ids, j = [], slot
    for t in range(len(tree) - 1, -1, -1):
        if not tree[t]["finished"][j]:
            ids.append(tree[t]["tokens"][j])
        j = tree[t]["parents"][j]
    return ids[::-1]


def final_hypotheses(tree: list[dict] | None, itos: list[str], tokenizer: str, alpha: float = 1.0) -> pd.DataFrame:
    """The K hypotheses alive after the last step, best first: text, length, whether it ended
    with <eos>, the length-normalized score beam search ranks by, and log P = score · steps^alpha."""
    rows = []
    if tree:
        best = winner_slot(tree)
        for slot, score in enumerate(tree[-1]["scores"]):
            if not math.isfinite(score):
                continue  # an empty slot (fewer candidates than the width)
            ids = slot_history(tree, slot)
            ended = bool(ids) and ids[-1] == EOS_ID
            tokens = [itos[i] for i in (ids[:-1] if ended else ids)]
            rows.append({"slot": slot, "winner": slot == best, "output": display_text(tokens, tokenizer),
                         "tokens": len(tokens), "ended": ended, "score (log P / length)": score,
                         "log P": score * max(len(ids), 1) ** alpha})
    frame = pd.DataFrame(rows, columns=["slot", *HYPOTHESIS_COLUMNS[1:]])
    # stable sort: equal scores keep slot order, so the winner (first best slot) comes first
    frame = frame.sort_values("score (log P / length)", ascending=False, kind="stable").reset_index(drop=True)
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame.drop(columns="slot")


# ------------------------------------------------------------------ page
def _default_model(names: list[str]) -> str:
    for task in TASKS:
        for arch in PREFERRED:
            if f"{task}-{arch}" in names:
                return f"{task}-{arch}"
    return names[0]


def _controls(entries: list[dict]) -> tuple[dict, str, int]:
    by_name = {e["name"]: e for e in entries}
    names = list(by_name)
    init_state("beam.model", _default_model(names), query="model", valid=lambda v: v in by_name)
    init_state("beam.width", DEFAULT_WIDTH, query="width", cast=int,
               valid=lambda v: isinstance(v, int) and 1 <= v <= MAX_BEAM)
    left, right = st.columns([3, 2], gap="large")
    with right:
        model = st.selectbox("Model", names, format_func=lambda n: model_label(by_name[n]), key="beam.model",
                             on_change=save_state, args=("beam.model",))
        width = st.slider("Beam width (1 = greedy)", 1, MAX_BEAM, key="beam.width", on_change=save_state,
                          args=("beam.width",))
    task = by_name[model]["task"]
    # one text per task: a German sentence makes no sense to a reversal model, and back; the
    # URL's text belongs to the URL's model's task only
    text_key = f"beam.text.{task}"
    url_task = by_name.get(st.query_params.get("model"), {"task": task})["task"]
    init_state(text_key, EXAMPLES[task][0], query="text" if url_task == task else None)
    with left:
        text = text_with_examples(task, text_key, f"beam.example.{task}")
    set_url(text=text, model=model, width=width)
    return by_name[model], text, width


def render_beam_search() -> None:
    settings = sidebar_settings()
    entries = [{**entry, "task": task} for task in TASKS for entry in model_entries(task)]
    if not entries:
        st.error("No checkpoints were found in checkpoints/.")
        return
    entry, text, width = _controls(entries)
    decoded = decode_for_page(entry, text, width, settings["topk"], return_tree=True)
    if decoded is None:
        return
    translator, result = decoded

    st.caption("Winner" + (" (width 1: the greedy output)" if width == 1 else f" of {width} hypotheses"))
    st.code(result.text if result.output_tokens else "(the model wrote nothing)", language=None, wrap_lines=True)
    cols = st.columns(3)
    cols[0].metric("score (log P / length)", f"{result.score:.3f}")
    cols[1].metric("log-probability", f"{result.log_prob:.2f}")
    cols[2].metric("decoder steps", len(result.beam_tree or []))
    if not result.finished:
        st.warning(f"The winner did not end within {translator.cfg.max_out_len} tokens; it was cut there.")

    st.plotly_chart(figures.beam_tree_figure(result.beam_tree, translator.ckpt.tgt_vocab.itos,
                                             font_size=settings["font_size"]),
                    config=PLOTLY_CONFIG, key="beam.tree")
    st.caption("Each column is a decoder step, each row a beam slot; a line joins a hypothesis to the one it "
               "extends. Hover a node for its score: log-probability divided by length, what beam search ranks "
               "by. A hypothesis that ended (■ = <eos>) keeps its score and its slot until the search stops.")

    st.subheader("Final hypotheses")
    st.dataframe(final_hypotheses(result.beam_tree, translator.ckpt.tgt_vocab.itos, translator.tgt_tokenizer),
                 hide_index=True, key="beam.hypotheses",
                 column_config={"score (log P / length)": st.column_config.NumberColumn(format="%.3f"),
                                "log P": st.column_config.NumberColumn(format="%.2f")})
