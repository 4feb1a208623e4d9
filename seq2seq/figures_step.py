"""Pure figure builders for "Inside one step", "Attention vs attribution" and output diffs:
plain data (seq2seq/step_detail.py, seq2seq/attribution.py, decoding.token_diff) in, a
Plotly figure out. No Streamlit.

As in figures.py: every user token is escaped (`esc`: html.escape(t, quote=False)), axes use
positions as values and tokens only as tick text (repeated tokens stay distinct), and the
arrays go in as plain lists."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .figures import apply_fonts, esc, tick_labels

EXCLUDED_COLOR = "lightgray"
DIFF_COLORS = {"equal": "#ffffff", "replace": "#f4a261", "delete": "#e76f51", "insert": "#2a9d8f"}
DIFF_LABELS = {"replace": "changed", "delete": "only in", "insert": "only in"}


def _finite(values) -> list[float | None]:
    return [float(v) if v is not None and np.isfinite(v) else None for v in values]


def step_energy_figure(source_tokens: list[str], energies, weights, included=None, step: int = 1,
                       source_unknown: list[bool] | None = None, font_size: int = 14) -> go.Figure:
    """Energies (top) and the softmax weights they become (bottom), one bar per source token;
    positions not included (padding) drawn gray, labeled excluded, with weight 0."""
    S = len(source_tokens)
    included = [True] * S if included is None else [bool(x) for x in included]
    labels = tick_labels(source_tokens, source_unknown)
    labels = [lab if inc else f"{lab} (excluded)" for lab, inc in zip(labels, included)]
    e = _finite(energies)
    w = [float(x) if inc else 0.0 for x, inc in zip(weights, included)]
    colors_e = ["slategray" if inc else EXCLUDED_COLOR for inc in included]
    colors_w = ["steelblue" if inc else EXCLUDED_COLOR for inc in included]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=("energy e_i (before the softmax)", "weight a_i = softmax(e)_i"))
    fig.add_trace(go.Bar(x=list(range(S)), y=e, marker_color=colors_e, customdata=labels, name="energy",
                         hovertemplate="%{customdata}: energy %{y:.4f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(x=list(range(S)), y=w, marker_color=colors_w, customdata=labels, name="weight",
                         text=[f"{x:.2f}" for x in w], textposition="outside",
                         hovertemplate="%{customdata}: weight %{y:.4f}<extra></extra>"), row=2, col=1)
    fig.update_xaxes(tickmode="array", tickvals=list(range(S)), ticktext=labels, row=2, col=1,
                     tickangle=-45 if S > 8 else 0)
    fig.update_yaxes(title=dict(text="energy"), row=1, col=1)
    fig.update_yaxes(title=dict(text="weight"), range=[0, 1.1], row=2, col=1)
    fig.update_layout(title=dict(text=f"Step {int(step)}: energies and the weights they become"),
                      showlegend=False, height=520, plot_bgcolor="white")
    return apply_fonts(fig, font_size, top=int(font_size * 5))


def context_contribution_figure(source_tokens: list[str], contributions, contribution_norms, context_norm: float,
                                source_unknown: list[bool] | None = None, font_size: int = 14) -> go.Figure:
    """Each source token's part of the context vector c = sum_i a_i h_i: a_i h_i along c's
    direction (the bars add up to |c|), with |a_i h_i| in the hover."""
    S = len(source_tokens)
    labels = tick_labels(source_tokens, source_unknown)
    hover = [f"{lab}: along c {c:.4f}, |a_i h_i| {n:.4f}" for lab, c, n in
             zip(labels, contributions, contribution_norms)]
    fig = go.Figure(go.Bar(x=list(range(S)), y=_finite(contributions), marker_color="teal", customdata=hover,
                           hovertemplate="%{customdata}<extra></extra>"))
    fig.update_layout(
        title=dict(text=f"The context vector as a weighted sum: each token's share of |c| = {context_norm:.3f}"),
        xaxis=dict(tickmode="array", tickvals=list(range(S)), ticktext=labels, tickangle=-45 if S > 8 else 0),
        yaxis=dict(title=dict(text="a_i h_i · c / |c|")), height=380, plot_bgcolor="white")
    return apply_fonts(fig, font_size)


def topk_figure(tokens: list[str], probs: list[float], chosen: str | None = None, font_size: int = 14) -> go.Figure:
    """The top-k next tokens with their probabilities, the chosen one in red."""
    labels = [esc(t) for t in tokens]
    colors = ["crimson" if t == chosen else "steelblue" for t in tokens]
    fig = go.Figure(go.Bar(x=[float(p) for p in probs], y=list(range(len(tokens))), orientation="h",
                           marker_color=colors, text=[f"{p:.3f}" for p in probs], textposition="auto",
                           customdata=labels, hovertemplate="%{customdata}: p = %{x:.4f}<extra></extra>"))
    fig.update_layout(title=dict(text="Top candidates for the next token"),
                      xaxis=dict(range=[0, 1.05], title=dict(text="probability")),
                      yaxis=dict(tickmode="array", tickvals=list(range(len(tokens))), ticktext=labels,
                                 autorange="reversed"),
                      height=max(260, 40 * len(tokens) + 120), plot_bgcolor="white")
    return apply_fonts(fig, font_size)


def fixed_context_figure(context, decoder_input_norm: float, state_norm: float, step: int = 1,
                         font_size: int = 14) -> go.Figure:
    """lstm / gru: the context vector (the encoder's final state) as a strip of values: the same
    strip at every step. The title gives the sizes of the decoder's input and state beside it."""
    c = np.asarray(context, dtype=float)
    fig = go.Figure(go.Heatmap(z=[c.tolist()], x=list(range(len(c))), y=[0], colorscale="RdBu", zmid=0,
                               hovertemplate="unit %{x}: %{z:.4f}<extra></extra>",
                               colorbar=dict(title=dict(text="value"))))
    fig.update_layout(
        title=dict(text=(f"Step {int(step)}: the context is the encoder's final state, the same at every step "
                         f"(|c| = {np.linalg.norm(c):.3f}; decoder input |x| = {decoder_input_norm:.3f}, "
                         f"state |h| = {state_norm:.3f})")),
        xaxis=dict(title=dict(text="hidden unit")), yaxis=dict(showticklabels=False), height=240)
    return apply_fonts(fig, font_size, top=int(font_size * 5))


def attribution_comparison_figure(source_tokens: list[str], output_tokens: list[str], panels: list[tuple[str, object]],
                                  spearman: dict[str, list] | None = None, source_unknown: list[bool] | None = None,
                                  note: str | None = None, font_size: int = 14) -> go.Figure:
    """Heatmaps side by side for the same output tokens (rows) and source tokens (columns):
    panels = [(title, matrix [T, S]), ...], e.g. attention then the attributions. Each
    attribution panel is shown by size (|value|, each row scaled to its largest), its
    Spearman correlation with attention per row, when given, in the hover."""
    T, S = len(output_tokens), len(source_tokens)
    src_labels = tick_labels(source_tokens, source_unknown)
    out_labels = tick_labels(output_tokens)
    fig = make_subplots(rows=1, cols=len(panels), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[esc(title) for title, _ in panels])
    for col, (title, matrix) in enumerate(panels, 1):
        A = np.asarray(matrix, dtype=float).reshape(T, S)
        raw = A
        if col > 1 or "attention" not in title.lower():
            A = np.abs(A)
            A = A / np.maximum(A.max(1, keepdims=True), 1e-12)
        rho = (spearman or {}).get(title)
        custom = [[[out_labels[t], src_labels[s], float(raw[t, s]),
                    "" if rho is None or rho[t] is None or not np.isfinite(rho[t]) else f"{rho[t]:.2f}"]
                   for s in range(S)] for t in range(T)]
        fig.add_trace(go.Heatmap(
            z=A.tolist(), x=list(range(S)), y=list(range(T)), zmin=0, zmax=1, showscale=False,
            colorscale="Blues" if col == 1 else "Oranges", customdata=custom, xgap=1, ygap=1,
            hovertemplate=("output #%{y} <b>%{customdata[0]}</b><br>source #%{x} <b>%{customdata[1]}</b><br>"
                           "value %{customdata[2]:.4f}<br>Spearman with attention (row): %{customdata[3]}"
                           "<extra></extra>")), row=1, col=col)
        fig.update_xaxes(tickmode="array", tickvals=list(range(S)), ticktext=src_labels, side="top",
                         tickangle=-45 if S > 8 else 0, row=1, col=col)
    fig.update_yaxes(tickmode="array", tickvals=list(range(T)), ticktext=out_labels, autorange="reversed", row=1, col=1)
    for col in range(2, len(panels) + 1):
        fig.update_yaxes(autorange="reversed", row=1, col=col)
    title = "Attention beside attributions (attributions by size, each row scaled to its largest)"
    if note:
        title += "<br>" + esc(note)
    fig.update_layout(title=dict(text=title), height=max(360, int(1.9 * font_size) * T + 220), plot_bgcolor="white")
    return apply_fonts(fig, font_size, top=int(font_size * 9))


def aligned_diff(diff: list[dict]) -> list[tuple[str, str | None, str | None]]:
    """token_diff ops -> aligned columns (op, reference token or None, other token or None)."""
    columns = []
    for part in diff:
        ref, other = part["reference"], part["other"]
        for i in range(max(len(ref), len(other))):
            columns.append((part["op"], ref[i] if i < len(ref) else None, other[i] if i < len(other) else None))
    return columns


def token_diff_figure(diff: list[dict], reference_label: str = "greedy", other_label: str = "beam",
                      font_size: int = 14) -> go.Figure:
    """Two outputs one above the other, aligned, the tokens where they differ highlighted
    (changed, only in one of them); equal tokens left white."""
    cols = aligned_diff(diff)
    n = len(cols)
    codes = {"equal": 0, "replace": 1, "delete": 2, "insert": 3}
    z = [[codes[op] for op, _, _ in cols], [codes[op] for op, _, _ in cols]]
    text = [["" if r is None else esc(r) for _, r, _ in cols], ["" if o is None else esc(o) for _, _, o in cols]]
    what = {"equal": "same", "replace": "changed", "delete": f"only in {reference_label}",
            "insert": f"only in {other_label}"}
    hover = [[what[op] for op, _, _ in cols]] * 2
    scale = [[0.0, DIFF_COLORS["equal"]], [0.25, DIFF_COLORS["equal"]], [0.25, DIFF_COLORS["replace"]],
             [0.5, DIFF_COLORS["replace"]], [0.5, DIFF_COLORS["delete"]], [0.75, DIFF_COLORS["delete"]],
             [0.75, DIFF_COLORS["insert"]], [1.0, DIFF_COLORS["insert"]]]
    fig = go.Figure(go.Heatmap(z=z, x=list(range(n)), y=[0, 1], zmin=-0.5, zmax=3.5, colorscale=scale, showscale=False,
                               text=text, texttemplate="%{text}", customdata=hover, xgap=2, ygap=2,
                               hovertemplate="%{text}: %{customdata}<extra></extra>"))
    changed = sum(op != "equal" for op, _, _ in cols)
    title = (f"{esc(other_label)} and {esc(reference_label)} write the same tokens" if not changed else
             f"Where {esc(other_label)} and {esc(reference_label)} differ: {changed} of {n} positions highlighted")
    fig.update_layout(title=dict(text=title),
                      xaxis=dict(showticklabels=False, showgrid=False, zeroline=False),
                      yaxis=dict(tickmode="array", tickvals=[0, 1], ticktext=[esc(reference_label), esc(other_label)],
                                 autorange="reversed", showgrid=False),
                      height=200, plot_bgcolor="white")
    return apply_fonts(fig, font_size)
