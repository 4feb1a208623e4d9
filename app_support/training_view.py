"""The "During training" tab of the Translate and Reverse pages: the visitor's input decoded
by each snapshot a training run kept (seq2seq/snapshots.py), as an animation and one
snapshot at a time."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from seq2seq import figures
from seq2seq.alignment import diagonality
from seq2seq.snapshots import list_snapshots

from .common import guarded, init_state, save_state, snapshot_translate_cached


def snapshot_command(task: str, entry: dict) -> str:
    arch = (entry.get("card") or {}).get("arch", "bahdanau")
    return f"python -m seq2seq.train --task {task} --arch {arch} --out checkpoints/{entry['name']} --snapshots"


def snapshot_number(snap: dict) -> int:
    """The NN of a snapshot's folder (what `translate --snapshot NN` takes)."""
    return int(Path(snap["path"]).name)


def decode_snapshots(entry: dict, text: str, beam: int, topk: int) -> list[dict] | None:
    """Every snapshot's decode of `text`: [{**card entry, number, result}] (None: a message was shown)."""
    snaps = guarded(list_snapshots, entry["path"])
    if snaps is None:
        return None
    out = []
    for s in snaps:
        n = snapshot_number(s)
        result = guarded(snapshot_translate_cached, entry["path"], n, text, beam, topk)
        if result is None:
            st.caption(f"Snapshot {n:02d} is left out (see the message above).")
            continue
        out.append({**s, "number": n, "result": result})
    return out


def render_training_tab(task: str, entry: dict, text: str, beam: int, settings: dict) -> None:
    snaps = decode_snapshots(entry, text, beam, settings["topk"])
    if snaps is None:
        return
    if not snaps:
        st.info("This model kept no snapshots of its training, so there is nothing to replay. Training with "
                "--snapshots keeps its weights after a quarter of the first epoch, after epochs 1, 2, 4, 8, … "
                "and at the end:")
        st.code(snapshot_command(task, entry), language="bash")
        return
    decoding = "greedy" if beam == 1 else f"beam {beam}"
    st.caption(f"Your input decoded ({decoding}, no forced words) by the model as it was at {len(snaps)} points of "
               "its training. Press ▶ play to watch the alignment form"
               + (" (the red dashed anti-diagonal is perfect reversal)" if task == "reverse" else "")
               + ", or pick one snapshot below.")
    first = snaps[0]["result"]
    scale = figures.palette_scale(settings["palette"])
    anim = figures.snapshot_animation(
        first.source.tokens,
        [{**{k: s.get(k) for k in ("label", "step", "epoch", "metric", "value")}, "index": s["number"],
          "output_tokens": s["result"].output_tokens, "alignment": s["result"].alignment,
          "kind": s["result"].alignment_kind} for s in snaps],
        source_unknown=first.source.unknown, ideal_antidiagonal=(task == "reverse"),
        font_size=settings["font_size"], colorscale=scale)
    st.plotly_chart(anim, config=settings["plotly_config"], key=f"{task}.training.anim")

    numbers = [s["number"] for s in snaps]
    key = f"{task}.snapshot"
    init_state(key, numbers[-1], cast=int, valid=lambda v: v in numbers)
    by_number = {s["number"]: s for s in snaps}
    chosen = st.select_slider("Snapshot", numbers, key=key, on_change=save_state, args=(key,),
                              format_func=lambda n: f"{n:02d} · {by_number[n].get('label', '')}")
    snap = by_number[chosen]
    result = snap["result"]
    st.caption(f"Output of snapshot {chosen:02d}")
    st.code(result.text if result.output_tokens else "(the model wrote nothing)", language=None, wrap_lines=True)
    cols = st.columns(4)
    cols[0].metric("training step", snap.get("step"))
    cols[1].metric("epoch", snap.get("epoch"))
    value = snap.get("value")
    cols[2].metric(f"validation {snap.get('metric', 'metric')}",
                   f"{value:.3g}" if isinstance(value, (int, float)) else str(value))
    val_loss = snap.get("val_loss")
    cols[3].metric("validation loss", f"{val_loss:.3f}" if isinstance(val_loss, (int, float)) else str(val_loss))
    fig = figures.alignment_heatmap(result.source.tokens, result.output_tokens, result.alignment,
                                    kind=result.alignment_kind, source_unknown=result.source.unknown,
                                    ideal_antidiagonal=(task == "reverse"), font_size=settings["font_size"],
                                    title=f"Snapshot {chosen:02d}: where the decoder looked", colorscale=scale)
    st.plotly_chart(fig, config=settings["plotly_config"], key=f"{task}.training.heatmap")

    import pandas as pd

    rows = []
    for s in snaps:
        r = s["result"]
        row = {"snapshot": f"{s['number']:02d}", "when": s.get("label"), "step": s.get("step"),
               "epoch": s.get("epoch"), f"validation {s.get('metric', 'metric')}": s.get("value"),
               "output": r.text}
        if task == "reverse" and r.alignment_kind == "attention" and len(r.output_tokens):
            row["diagonality"] = round(diagonality(r.alignment), 3)
        rows.append(row)
    st.dataframe(pd.DataFrame(rows), hide_index=True, key=f"{task}.training.table")
