"""Pure functions from data to figures: Plotly for heatmaps, step views and beam trees,
Altair for curves. No Streamlit here, so everything is testable without a browser.

User text reaches these figures as tokens. Plotly renders HTML in labels and hovers, so
every token is escaped (`html.escape(t, quote=False)`); axes use positions as values and
tokens only as tick text, so repeated tokens stay distinct. Arrays go into the figures
as plain lists, so the figure JSON is readable (and checkable in tests)."""
from __future__ import annotations

import csv
import html
import io

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .alignment import mirrored_positions

UNKNOWN_MARK = " (?)"       # appended to tokens the model does not know (read as <unk>)
FORCED_MARK = " (forced)"


def esc(token: str) -> str:
    """A token as Plotly may show it: HTML escaped, whitespace made visible."""
    if token == " ":
        return "␣"
    return html.escape(str(token), quote=False).replace("\n", " ")


def tick_labels(tokens: list[str], unknown: list[bool] | None = None, suffix_rows: int = 0,
                suffix: str = FORCED_MARK) -> list[str]:
    out = []
    for i, t in enumerate(tokens):
        label = esc(t)
        if unknown is not None and i < len(unknown) and unknown[i]:
            label += UNKNOWN_MARK
        if i < suffix_rows:
            label += suffix
        out.append(label)
    return out


def font_sizes(font_size: int) -> dict:
    """The app's one type scale: tick and axis labels, legends and hovers at `font_size`,
    titles 2 px larger. Every figure here, Plotly or Altair, takes its sizes from this."""
    return {"label": int(font_size), "title": int(font_size) + 2}


TOOLBAR_BAND = 28       # px: the height of Plotly's toolbar (26 px measured in Chromium) and a gap
TITLE_PAD = 8           # px above a figure's title, below the toolbar


def apply_fonts(figure, font_size: int, top: int = 60):
    """Font sizes set explicitly everywhere (the app's theme would otherwise shrink ticks).

    A Plotly figure is changed in place and returned (with its title at the top left and
    margins, `top` px above the plot); an Altair chart comes back configured (a copy)."""
    sizes = font_sizes(font_size)
    if not isinstance(figure, go.Figure):       # Altair: a top-level chart's configuration
        label, title = sizes["label"], sizes["title"]
        figure = _fit_width_only(figure)
        return figure.configure_axis(labelFontSize=label, titleFontSize=label).configure_legend(
            labelFontSize=label, titleFontSize=label).configure_title(fontSize=title).configure_header(
            labelFontSize=label, titleFontSize=label)
    label = sizes["label"]
    # The toolbar (camera, zoom, reset) sits in the top right corner of the figure, as wide as a
    # narrow column: the title and the top tick labels start below it, the plot keeps its height.
    if figure.layout.height is not None:
        figure.update_layout(height=figure.layout.height + TOOLBAR_BAND)
    figure.update_layout(font=dict(size=label), hoverlabel=dict(font_size=label),
                         title=dict(font=dict(size=sizes["title"]), x=0, xanchor="left", y=1, yref="container",
                                    yanchor="top", pad=dict(t=TITLE_PAD + TOOLBAR_BAND, l=4)),
                         margin=dict(l=10, r=10, t=top + TOOLBAR_BAND, b=10))
    figure.update_xaxes(tickfont=dict(size=label), title_font=dict(size=label))
    figure.update_yaxes(tickfont=dict(size=label), title_font=dict(size=label))
    return figure


def _fit_width_only(chart):
    """A single or layered Altair chart stretches to the page's width while its height grows
    with what it holds. Streamlit's default for such charts ("fit") squeezes the plot, the axes
    and the legends into `height` pixels, so a legend longer than the plot is cut off. (Concat
    and facet charts keep Streamlit's choice: "fit-x" breaks nested concatenations; a chart that
    sets its own autosize keeps it.)"""
    import altair as alt

    if isinstance(chart, (alt.Chart, alt.LayerChart)) and chart.autosize is alt.Undefined:
        return chart.properties(autosize=alt.AutoSizeParams(type="fit-x", contains="padding"))
    return chart


def alignment_heatmap(source_tokens: list[str], output_tokens: list[str], matrix, kind: str = "attention",
                      source_unknown: list[bool] | None = None, forced_rows: int = 0,
                      ideal_antidiagonal: bool = False, font_size: int = 14, title: str | None = None,
                      colorscale: str | None = None) -> go.Figure:
    """Output tokens down, source tokens across; hover gives the weight.

    kind "attention" (rows sum to 1) or "saliency" (gradient saliency, labeled as such).
    colorscale: a Plotly scale name (see PALETTES) instead of the default."""
    A = np.asarray(matrix, dtype=float).reshape(len(output_tokens), len(source_tokens))
    S, T = len(source_tokens), len(output_tokens)
    src_labels = tick_labels(source_tokens, source_unknown)
    out_labels = tick_labels(output_tokens, suffix_rows=forced_rows)
    custom = np.empty((T, S, 2), dtype=object)
    for t in range(T):
        for s in range(S):
            custom[t, s] = (out_labels[t], src_labels[s])
    what = "attention weight" if kind == "attention" else "saliency (share of gradient norm)"
    slant = S > 8 and max(len(t) for t in src_labels) > 2   # single characters fit upright
    fig = go.Figure(go.Heatmap(
        z=A.tolist(), x=list(range(S)), y=list(range(T)), customdata=custom.tolist(), zmin=0,
        zmax=1 if kind == "attention" else (float(A.max()) if A.size else 1),
        colorscale=colorscale or ("Blues" if kind == "attention" else "Oranges"),
        colorbar=dict(title=dict(text="weight" if kind == "attention" else "saliency")),
        hovertemplate=("output #%{y} <b>%{customdata[0]}</b><br>source #%{x} <b>%{customdata[1]}</b><br>"
                       + what + ": %{z:.3f}<extra></extra>"),
        xgap=1, ygap=1))
    if ideal_antidiagonal and T and S:
        mirror = mirrored_positions(T, S)
        keep = mirror >= 0
        fig.add_trace(go.Scatter(x=mirror[keep].tolist(), y=np.arange(T)[keep].tolist(), mode="lines+markers",
                                 name="ideal (mirrored position)", line=dict(color="crimson", dash="dash", width=2),
                                 marker=dict(symbol="x", size=8), hoverinfo="skip"))
    default_title = ("Attention: where the decoder looked for each output token" if kind == "attention"
                     else "Gradient saliency (not attention): how much each source token moved each output score")
    fig.update_layout(
        title=dict(text=esc(title) if title else default_title),
        xaxis=dict(tickmode="array", tickvals=list(range(S)), ticktext=src_labels, side="top", tickangle=-45 if slant else 0,
                   title=dict(text="source"), showgrid=False),
        yaxis=dict(tickmode="array", tickvals=list(range(T)), ticktext=out_labels, autorange="reversed",
                   title=dict(text="output"), showgrid=False),
        height=max(360, int(1.9 * font_size) * T + 200 + (font_size * 3 if slant else 0)),
        legend=dict(orientation="h", y=-0.05), plot_bgcolor="white")
    # the source axis sits on top: room for the title, the axis title and (slanted) tick labels
    top = int(font_size * (6.5 + (max(len(t) for t in src_labels) * 0.5 if slant else 1.5)))
    return apply_fonts(fig, font_size, top=min(top, 320))


# ------------------------------------------------------------------ classroom: palettes, guesses
# Colour-blind-safe options for every heatmap ("default": each figure's own scale).
PALETTES = {"default": None, "viridis": "Viridis", "cividis": "Cividis"}


def palette_scale(palette: str | None) -> str | None:
    """A palette name (a key of PALETTES) -> the Plotly colorscale, None for the default."""
    return PALETTES.get(palette or "default")


def with_palette(fig: go.Figure, palette: str | None) -> go.Figure:
    """Every heatmap trace of `fig` recoloured with `palette` (unchanged for "default"); in place."""
    scale = palette_scale(palette)
    if scale:
        fig.update_traces(colorscale=scale, selector=dict(type="heatmap"))
        for frame in fig.frames or ():
            for trace in frame.data:
                if trace.type == "heatmap":
                    trace.colorscale = scale
    return fig


def mark_guess(fig: go.Figure, position: int, right: bool, row: int | None = None, col: int | None = None) -> go.Figure:
    """A guessed source position marked on a bar figure over source positions (e.g. the
    weights of one step): a dashed box around the bar and a label above it. In place."""
    color = "seagreen" if right else "crimson"
    kw = {} if row is None else {"row": row, "col": col}
    fig.add_vrect(x0=position - 0.45, x1=position + 0.45, line=dict(color=color, width=3, dash="dash"),
                  fillcolor="rgba(0,0,0,0)", **kw)
    fig.add_annotation(x=position, y=1.0, yref="y domain" if row is None else f"y{'' if row == 1 else row} domain",
                       xref="x" if row is None else f"x{'' if row == 1 else row}", yanchor="bottom",
                       text="your guess" + (" ✓" if right else " ✗"), showarrow=False, font=dict(color=color))
    return fig


def step_figure_at(fig: go.Figure, index: int) -> go.Figure:
    """A `step_figure` opened on step `index` (0-based) instead of the first: its traces, title
    and slider set to that frame (so it stays in step with a step chosen elsewhere). In place."""
    if not fig.frames or not 0 <= index < len(fig.frames):
        return fig
    frame = fig.frames[index]
    for i, trace in zip(frame.traces or range(len(frame.data)), frame.data):
        fig.data[i].update(trace.to_plotly_json())
    if frame.layout and frame.layout.title and frame.layout.title.text:
        fig.layout.title.text = frame.layout.title.text
    if fig.layout.sliders:
        fig.layout.sliders[0].active = index
    return fig


# ------------------------------------------------------------------ during training (snapshots)
def snapshot_title(snap: dict) -> str:
    """One snapshot's card entry in words: "snapshot 02 (after epoch 1): step 130, epoch 1, val_bleu 3.1"."""
    value = snap.get("value")
    value = f"{value:.3g}" if isinstance(value, (int, float)) else str(value)
    return (f"snapshot {int(snap.get('index', 0)):02d} ({esc(str(snap.get('label', '')))}): "
            f"step {snap.get('step')}, epoch {snap.get('epoch')}, {esc(str(snap.get('metric', 'metric')))} {value}")


def play_controls(labels: list[str], prefix: str, frame_ms: int, below: float, plot_h: float,
                  buttons_h: float) -> dict:
    """Layout for an animated figure's controls, laid out in pixels under the plot: a row
    with play and pause, then a full-width slider with one step per frame (frames named
    "0", "1", ...). `below` is the space the x-axis labels take under the plot."""
    frame_args = dict(mode="immediate", frame=dict(duration=0, redraw=True), transition=dict(duration=0))
    return dict(
        updatemenus=[dict(type="buttons", direction="left", showactive=False, x=0, xanchor="left",
                          y=-below / plot_h, yanchor="top", pad=dict(t=0, b=0, l=0, r=0),
                          buttons=[dict(label="▶ play", method="animate",
                                        args=[None, dict(frame=dict(duration=frame_ms, redraw=True), fromcurrent=True,
                                                         transition=dict(duration=0))]),
                                   dict(label="❚❚ pause", method="animate",
                                        args=[[None], dict(frame=dict(duration=0, redraw=False), mode="immediate")])])],
        sliders=[dict(active=0, x=0, xanchor="left", len=1.0, y=-(below + buttons_h + 10) / plot_h, yanchor="top",
                      pad=dict(t=0, b=0, l=0, r=0), currentvalue=dict(prefix=prefix),
                      steps=[dict(label=label, method="animate", args=[[str(i)], frame_args])
                             for i, label in enumerate(labels)])])


def snapshot_animation(source_tokens: list[str], snapshots: list[dict], source_unknown: list[bool] | None = None,
                       ideal_antidiagonal: bool = False, font_size: int = 14, colorscale: str | None = None) -> go.Figure:
    """The same input decoded by each snapshot of a training run, as an animation: one frame
    per snapshot (its alignment heatmap, its output on the rows, its step / epoch / metric in
    the title), a slider over the snapshots and play / pause.

    snapshots: [{index, label, step, epoch, metric, value, output_tokens, alignment [T, S],
    kind}], in training order."""
    S = len(source_tokens)
    src_labels = tick_labels(source_tokens, source_unknown)
    t_max = max([len(s["output_tokens"]) for s in snapshots] + [1])
    f = font_size

    def traces(s: dict):
        T = len(s["output_tokens"])
        A = np.asarray(s["alignment"], dtype=float).reshape(T, S) if T else np.zeros((1, S))
        out_labels = tick_labels(s["output_tokens"]) if T else ["(nothing)"]
        custom = [[[out_labels[t], src_labels[j]] for j in range(S)] for t in range(len(out_labels))]
        kind = s.get("kind", "attention")
        heat = go.Heatmap(z=A.tolist(), x=list(range(S)), y=list(range(len(out_labels))), customdata=custom, zmin=0,
                          zmax=1 if kind == "attention" else (float(A.max()) or 1.0),
                          colorscale=colorscale or ("Blues" if kind == "attention" else "Oranges"), xgap=1, ygap=1,
                          colorbar=dict(title=dict(text="weight" if kind == "attention" else "saliency")),
                          hovertemplate=("output #%{y} <b>%{customdata[0]}</b><br>source #%{x} "
                                         "<b>%{customdata[1]}</b><br>%{z:.3f}<extra></extra>"))
        if ideal_antidiagonal and T and S:
            mirror = mirrored_positions(T, S)
            keep = mirror >= 0
            ideal = go.Scatter(x=mirror[keep].tolist(), y=np.arange(T)[keep].tolist(), mode="lines+markers",
                               name="ideal (mirrored position)", line=dict(color="crimson", dash="dash", width=2),
                               marker=dict(symbol="x", size=8), hoverinfo="skip", showlegend=False)
        else:
            ideal = go.Scatter(x=[], y=[], mode="lines", hoverinfo="skip", showlegend=False)
        return [heat, ideal], out_labels

    def layout(s: dict, out_labels: list[str]) -> dict:
        written = " ".join(out_labels) if s["output_tokens"] else "(nothing)"
        return dict(title=dict(text=f"{snapshot_title(s)}<br>output: {written}"),
                    yaxis=dict(tickmode="array", tickvals=list(range(len(out_labels))), ticktext=out_labels,
                               range=[t_max - 0.5, -0.5], title=dict(text="output"), showgrid=False))

    fig = go.Figure()
    if not snapshots:
        fig.update_layout(title=dict(text="no snapshots"))
        return apply_fonts(fig, font_size)
    first, first_labels = traces(snapshots[0])
    for tr in first:
        fig.add_trace(tr)
    frames = []
    for i, s in enumerate(snapshots):
        data, labels = traces(s)
        frames.append(go.Frame(data=data, traces=[0, 1], name=str(i), layout=layout(s, labels)))
    fig.frames = frames
    slant = S > 8 and max(len(t) for t in src_labels) > 2
    plot_h = max(260, int(1.9 * f) * t_max + 40)
    buttons_h, slider_h = int(1.3 * f) + 16, int(3.4 * f) + 36
    below = 16
    top = int(f * (8 + (max(len(t) for t in src_labels) * 0.5 if slant else 1.5)))
    bottom = below + buttons_h + 10 + slider_h
    fig.update_layout(
        **layout(snapshots[0], first_labels), height=top + plot_h + bottom, plot_bgcolor="white",
        xaxis=dict(tickmode="array", tickvals=list(range(S)), ticktext=src_labels, side="top",
                   tickangle=-45 if slant else 0, title=dict(text="source"), showgrid=False, range=[-0.5, S - 0.5]),
        **play_controls([f"{int(s.get('index', i)):02d}" for i, s in enumerate(snapshots)], "snapshot ", 1200,
                        below, plot_h, buttons_h))
    fig = apply_fonts(fig, font_size, top=top)
    fig.update_layout(margin=dict(b=bottom), title_pad_t=TITLE_PAD + TOOLBAR_BAND + font_sizes(f)["title"])
    return fig


def step_figure(source_tokens: list[str], steps: list[dict], step_matrix, kind: str = "attention",
                source_unknown: list[bool] | None = None, forced_rows: int = 0, font_size: int = 14) -> go.Figure:
    """Decoder step by step, with a slider and a play button (animated in the browser).

    Frame t: the partial output in the title, the weights over the source at step t
    (left), and the top-k next-token candidates with probabilities (right)."""
    A = np.asarray(step_matrix, dtype=float).reshape(len(steps), len(source_tokens)) if steps else np.zeros((0, len(source_tokens)))
    S = len(source_tokens)
    k = max((len(s["topk"]) for s in steps), default=1)
    src_labels = tick_labels(source_tokens, source_unknown)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.12,
                        subplot_titles=("attention over the source" if kind == "attention"
                                        else "saliency over the source (not attention)",
                                        "top candidates for this step"))

    def traces(t: int):
        step = steps[t]
        cands = step["topk"] + [["", 0.0]] * (k - len(step["topk"]))
        colors = ["crimson" if c[0] == step["token"] else "steelblue" for c in cands]
        return [
            go.Bar(x=list(range(S)), y=A[t].tolist(), marker_color="steelblue" if kind == "attention" else "darkorange",
                   customdata=src_labels, hovertemplate="%{customdata}: %{y:.3f}<extra></extra>", showlegend=False),
            go.Bar(x=[c[1] for c in cands], y=list(range(k)), orientation="h", marker_color=colors,
                   text=[f"{esc(c[0])}  {c[1]:.2f}" if c[0] else "" for c in cands], textposition="auto",
                   hovertemplate="%{text}<extra></extra>", showlegend=False),
        ]

    def title(t: int) -> str:
        so_far = " ".join(esc(s["token"]) for s in steps[: t + 1])
        forced = " (forced)" if t < forced_rows else ""
        return (f"step {t + 1}/{len(steps)}: wrote <b>{esc(steps[t]['token'])}</b>{forced} "
                f"(p = {steps[t]['prob']:.2f})<br>output so far: {so_far}")

    if not steps:
        fig.update_layout(title=dict(text="no decoder steps"))
        return apply_fonts(fig, font_size)
    for tr, col in zip(traces(0), (1, 2)):
        fig.add_trace(tr, row=1, col=col)
    fig.frames = [go.Frame(data=traces(t), traces=[0, 1], name=str(t), layout=dict(title=dict(text=title(t))))
                  for t in range(len(steps))]
    # Pixel layout, so the controls never cover the axes whatever the font size and labels:
    # title (two lines) and subplot titles above the plots; below them the tick labels
    # (slanted ones need room for their length) and the right plot's axis title, then the
    # play/pause row, then the slider (its "step N" label, rail and step numbers).
    f = font_size
    slant = S > 8
    longest = max((len(t) for t in src_labels), default=1)
    left_ticks = int(0.71 * 0.6 * f * min(longest, 40) + 1.2 * f) + 12 if slant else int(1.5 * f) + 10
    right_ticks = int(3.2 * f) + 14                           # tick labels and "probability"
    below = max(left_ticks, right_ticks) + 14                 # plot bottom -> the buttons
    buttons_h = int(1.3 * f) + 16
    slider_h = int(3.4 * f) + 36
    top = int(f * 7.5)                                        # a two-line title, then the subplot titles
    plot_h = int(250 + 8 * k + 5 * f)
    bottom = below + buttons_h + 10 + slider_h
    fig.update_layout(
        title=dict(text=title(0)), height=top + plot_h + bottom,
        xaxis=dict(tickmode="array", tickvals=list(range(S)), ticktext=src_labels, tickangle=-45 if slant else 0,
                   automargin=False),
        yaxis=dict(range=[0, 1.05] if kind == "attention" else [0, float(A.max()) * 1.05 + 1e-9], title=dict(text="weight")),
        xaxis2=dict(range=[0, 1.05], title=dict(text="probability"), automargin=False),
        yaxis2=dict(autorange="reversed", showticklabels=False),
        **play_controls([str(t + 1) for t in range(len(steps))], "step ", 900, below, plot_h, buttons_h))
    fig = apply_fonts(fig, font_size, top=top)
    fig.update_annotations(font_size=font_sizes(f)["label"])          # the subplot titles
    # a two-line title anchored at the top is drawn a line too high by Plotly: one line lower
    fig.update_layout(margin=dict(b=bottom), title_pad_t=TITLE_PAD + TOOLBAR_BAND + font_sizes(f)["title"])
    return fig


def beam_tree_figure(tree: list[dict], itos: list[str], font_size: int = 14) -> go.Figure:
    """Every hypothesis kept at every step: x = step, y = beam slot; edges go to the parent;
    the winning path in red. A node's hover gives its length-normalized score."""
    fig = go.Figure()
    if not tree:
        fig.update_layout(title=dict(text="no beam steps"))
        return apply_fonts(fig, font_size)
    T, K = len(tree), len(tree[0]["tokens"])
    last = tree[-1]["scores"]
    winner = int(np.nanargmax([s if np.isfinite(s) else -np.inf for s in last]))
    on_path = set()
    j = winner
    for t in range(T - 1, -1, -1):
        on_path.add((t, j))
        j = tree[t]["parents"][j]
    edge_x, edge_y, win_x, win_y = [], [], [], []
    nodes = {"x": [], "y": [], "text": [], "hover": [], "color": [], "symbol": []}
    kept = {"x": [], "y": [], "hover": [], "color": [], "lx": [], "ly": []}
    for t, step in enumerate(tree):
        for k in range(K):
            score = step["scores"][k]
            if not np.isfinite(score):
                continue  # an empty slot (fewer candidates than the width)
            p = step["parents"][k]
            if step["finished"][k]:
                # an ended hypothesis keeps competing with its frozen score: a small hollow mark
                kept["x"].append(t)
                kept["y"].append(k)
                kept["lx"].extend([t - 1, t, None])
                kept["ly"].extend([p, k, None])
                kept["hover"].append(f"step {t + 1}, beam {k + 1}: ended earlier, kept with score {score:.3f}")
                kept["color"].append("crimson" if (t, k) in on_path else "gray")
                continue
            px, py = (t - 1, p) if t > 0 else (-1, 0)
            target = (win_x, win_y) if (t, k) in on_path else (edge_x, edge_y)
            target[0].extend([px, t, None])
            target[1].extend([py, k, None])
            tok = itos[step["tokens"][k]]
            nodes["x"].append(t)
            nodes["y"].append(k)
            nodes["text"].append(esc(tok))
            nodes["hover"].append(f"step {t + 1}, beam {k + 1}: {esc(tok)}<br>score {score:.3f}")
            nodes["color"].append("crimson" if (t, k) in on_path else "steelblue")
            nodes["symbol"].append("square" if tok == "<eos>" else "circle")
    fig.add_trace(go.Scatter(x=edge_x, y=edge_y, mode="lines", line=dict(color="lightgray", width=1.5),
                             hoverinfo="skip", name="kept hypotheses"))
    fig.add_trace(go.Scatter(x=win_x, y=win_y, mode="lines", line=dict(color="crimson", width=3),
                             hoverinfo="skip", name="winner"))
    fig.add_trace(go.Scatter(x=[-1], y=[0], mode="markers+text", text=["&lt;sos&gt;"], textposition="middle left",
                             marker=dict(size=10, color="black"), hoverinfo="skip", showlegend=False))
    fig.add_trace(go.Scatter(x=nodes["x"], y=nodes["y"], mode="markers+text", text=nodes["text"],
                             textposition="top center", customdata=nodes["hover"],
                             hovertemplate="%{customdata}<extra></extra>",
                             marker=dict(size=11, color=nodes["color"], symbol=nodes["symbol"]), showlegend=False))
    fig.add_trace(go.Scatter(x=kept["x"], y=kept["y"], mode="markers", customdata=kept["hover"],
                             hovertemplate="%{customdata}<extra></extra>", name="ended, still ranked",
                             marker=dict(size=9, symbol="square-open", color=kept["color"])))
    fig.add_trace(go.Scatter(x=kept["lx"], y=kept["ly"], mode="lines", hoverinfo="skip", showlegend=False,
                             line=dict(color="lightgray", width=1, dash="dot")))
    fig.update_layout(
        title=dict(text=f"Beam search, width {K}: every hypothesis kept at each step (winner in red, ■ = ended)"),
        xaxis=dict(title=dict(text="decoder step"), tickmode="array", tickvals=list(range(-1, T)),
                   ticktext=["start"] + [str(t + 1) for t in range(T)], zeroline=False),
        yaxis=dict(title=dict(text="beam slot"), tickmode="array", tickvals=list(range(K)),
                   ticktext=[str(k + 1) for k in range(K)], autorange="reversed", zeroline=False),
        height=max(340, int(5.5 * font_size) * K + 180), plot_bgcolor="white", legend=dict(orientation="h", y=-0.15))
    return apply_fonts(fig, font_size)


def _csv_cell(text: str) -> str:
    # Spreadsheets run cells that start with = + - @ as formulas: defuse them.
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def alignment_csv(source_tokens: list[str], output_tokens: list[str], matrix) -> str:
    """The alignment matrix as CSV: one row per output token, one column per source token."""
    A = np.asarray(matrix, dtype=float).reshape(len(output_tokens), len(source_tokens))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["output \\ source"] + [_csv_cell(t) for t in source_tokens])
    for tok, row in zip(output_tokens, A):
        w.writerow([_csv_cell(tok)] + [f"{v:.6f}" for v in row])
    return buf.getvalue()


# ------------------------------------------------------------------ Altair curves
def line_chart(df, x: str, y: str, color: str, title: str, x_title: str | None = None, y_title: str | None = None,
               y_domain: tuple | None = None, rule_x: float | None = None, rule_label: str = "", font_size: int = 14):
    """A tidy DataFrame -> an Altair line chart (one line per `color` value)."""
    import altair as alt

    y_scale = alt.Scale(domain=list(y_domain)) if y_domain else alt.Undefined
    # whole-number x (steps, lengths, epochs): no fractional ticks
    x_axis = alt.Axis(tickMinStep=1, format="d") if str(df[x].dtype).startswith(("int", "Int")) else alt.Undefined
    chart = alt.Chart(df).mark_line(point=True).encode(
        x=alt.X(f"{x}:Q", title=x_title or x, axis=x_axis),
        y=alt.Y(f"{y}:Q", title=y_title or y, scale=y_scale),
        color=alt.Color(f"{color}:N", title=color),
        tooltip=[alt.Tooltip(f"{color}:N"), alt.Tooltip(f"{x}:Q"), alt.Tooltip(f"{y}:Q", format=".3f")])
    if rule_x is not None:
        import pandas as pd
        rule = alt.Chart(pd.DataFrame({x: [rule_x], "label": [rule_label]})).mark_rule(
            strokeDash=[6, 4], color="gray").encode(x=f"{x}:Q", tooltip=["label:N"])
        chart = chart + rule
    return apply_fonts(chart.properties(title=title, height=340), font_size)


# ------------------------------------------------------------------ Altair: teacher forcing
# Tidy DataFrames in (the Teacher forcing page's *_frame functions make them), charts out.
def _strategy_color(order: list[str], legend: bool = True):
    import altair as alt

    return alt.Color("strategy:N", title="strategy", scale=alt.Scale(domain=order), sort=order,
                     **({} if legend else {"legend": None}))


def _coin_dash(df, legend: bool = True):
    """Line style by teacher-forcing coin (column `coin`): solid for one coin per token, dashed
    for one per step (the tutorials' rule), so that policy stands out wherever it is drawn."""
    import altair as alt

    return alt.StrokeDash("coin:N", title="coin", scale=alt.Scale(domain=_coins(df)),
                          **({} if legend else {"legend": None}))


def _coins(df) -> list:
    return sorted(dict.fromkeys(df["coin"]), key=lambda v: "step" in str(v))      # per token (solid) first


def _with_coin(encoding: dict, df, legend: bool = True) -> dict:
    """`encoding` plus the coin as line dash and point shape (triangles for one coin per step, as
    on the bar chart): a line-and-point chart's legend draws its points, so the shape is what
    tells the coins apart there."""
    import altair as alt

    if "coin" not in df.columns or not len(df):
        return encoding
    shape = alt.Shape("coin:N", title="coin", scale=alt.Scale(domain=_coins(df), range=["circle", "triangle-up"]),
                      **({} if legend else {"legend": None}))
    return dict(encoding, strokeDash=_coin_dash(df, legend), shape=shape)


def schedule_chart(df, font_size: int = 14):
    """(step, ratio, strategy, kind) rows -> the teacher-forcing ratio of each strategy over training."""
    import altair as alt

    order = list(dict.fromkeys(df["strategy"]))
    kinds = sorted(dict.fromkeys(df["kind"]), key=lambda k: (k != "decay", k != "constant", k))
    chart = alt.Chart(df).mark_line().encode(
        x=alt.X("step:Q", title="training batch (i)"),
        y=alt.Y("ratio:Q", title="P(feed the gold token)", scale=alt.Scale(domain=[0, 1])),
        color=_strategy_color(order),
        strokeDash=alt.StrokeDash("kind:N", title="kind", sort=kinds, scale=alt.Scale(domain=kinds)),
        tooltip=["strategy:N", "step:Q", alt.Tooltip("ratio:Q", format=".3f")])
    return apply_fonts(chart.properties(title="Teacher-forcing ratio during training", height=340), font_size)


def curves_charts(curves, order: list[str], metric_label: str, font_size: int = 14):
    """Three charts from per-epoch curves (strategy, epoch, val_loss, metric[, coin]): the
    free-running metric against the teacher-forced validation loss (one point per epoch,
    joined in epoch order), then each against epoch. One coin per step (the tutorials'
    rule) is dashed."""
    import altair as alt

    tip = ["strategy:N", "epoch:Q", alt.Tooltip("val_loss:Q", format=".3f"),
           alt.Tooltip("metric:Q", title=metric_label, format=".3f")]
    whole = alt.Axis(tickMinStep=1, format="d")
    base = alt.Chart(curves)
    against = base.mark_line(point=True).encode(**_with_coin(dict(
        x=alt.X("val_loss:Q", title="teacher-forced validation loss", scale=alt.Scale(zero=False)),
        y=alt.Y("metric:Q", title=f"free-running {metric_label}"), color=_strategy_color(order), order="epoch:Q",
        tooltip=tip), curves)).properties(
        title="Free-running quality against teacher-forced loss (each point: an epoch)", height=340)
    quiet = _strategy_color(order, legend=False)        # the first chart has the legends
    loss = base.mark_line(point=True).encode(**_with_coin(dict(
        x=alt.X("epoch:Q", axis=whole), y=alt.Y("val_loss:Q", title="teacher-forced validation loss"),
        color=quiet, tooltip=tip), curves, legend=False)).properties(
        title="Teacher-forced validation loss by epoch", height=280)
    metric = base.mark_line(point=True).encode(**_with_coin(dict(
        x=alt.X("epoch:Q", axis=whole), y=alt.Y("metric:Q", title=f"free-running {metric_label}"),
        color=quiet, tooltip=tip), curves, legend=False)).properties(
        title=f"Free-running {metric_label} by epoch", height=280)
    return tuple(apply_fonts(c, font_size) for c in (against, loss, metric))


def final_chart(runs, order: list[str], metric_label: str, font_size: int = 14):
    """One row per run (arch, strategy, seed, value[, coin]): mean over seeds (bar), min to
    max (rule), each seed (dot; a triangle for one coin per step, the tutorials' rule); one
    panel per arch. The bar's tooltip gives mean, sample std, min, max and the number of
    seeds. Horizontal bars, so the strategy names stay readable. Failed runs (value missing)
    are left out."""
    import altair as alt

    ok = runs.dropna(subset=["value"])
    y = alt.Y("strategy:N", sort=order, title=None, axis=alt.Axis(labelLimit=300))
    color = _strategy_color(order, legend=False)
    bars = alt.Chart().mark_bar(opacity=0.55).encode(
        y=y, x=alt.X("mean(value):Q", title=f"final free-running {metric_label}"), color=color,
        tooltip=["strategy:N", alt.Tooltip("mean(value):Q", title="mean", format=".3f"),
                 alt.Tooltip("stdev(value):Q", title="std (sample)", format=".3f"),
                 alt.Tooltip("min(value):Q", title="min", format=".3f"),
                 alt.Tooltip("max(value):Q", title="max", format=".3f"),
                 alt.Tooltip("count(value):Q", title="seeds")])
    spread = alt.Chart().mark_rule(strokeWidth=2, color="black").encode(
        y=y, x="min(value):Q", x2="max(value):Q")
    dots = dict(y=y, x="value:Q", tooltip=["strategy:N", "seed:Q", alt.Tooltip("value:Q", format=".3f")])
    if "coin" in ok.columns and len(ok):
        coins = sorted(dict.fromkeys(ok["coin"]), key=lambda v: "step" in str(v))
        dots["shape"] = alt.Shape("coin:N", title="coin", scale=alt.Scale(domain=coins,
                                                                          range=["circle", "triangle-up"]))
    seeds = alt.Chart().mark_point(filled=True, size=45, color="black").encode(**dots)
    chart = alt.layer(bars, spread, seeds, data=ok).properties(height=28 * len(order), width=260).facet(
        column=alt.Column("arch:N", title=None)).properties(
        title=f"Final {metric_label} by strategy (bar: mean over seeds; line: min to max; dots: seeds)")
    return apply_fonts(chart, font_size)


EXPOSURE_MODES = ("teacher-forced", "free-running")


def position_chart(positions, order: list[str], font_size: int = 14):
    """(strategy, position, accuracy, min, max[, mode, coin]) rows -> accuracy by output
    position. With teacher-forced rows (mode), one small panel per strategy with both curves:
    fed the gold prefix and fed its own output, the gap between them being exposure bias;
    without them (older files), the free-running curve of every strategy in one chart."""
    import altair as alt

    x = alt.X("position:Q", title="output position", axis=alt.Axis(tickMinStep=1, format="d"))
    tip = ["strategy:N", "position:Q", alt.Tooltip("accuracy:Q", format=".3f"),
           alt.Tooltip("min:Q", format=".3f"), alt.Tooltip("max:Q", format=".3f")]
    if "mode" in positions.columns and (positions["mode"] == "teacher-forced").any():
        data = positions.assign(panel=positions["strategy"])
        if "coin" in data.columns:         # the panel's title marks the tutorials' rule
            step = data["coin"].astype(str).str.contains("step")
            data.loc[step, "panel"] = data.loc[step, "strategy"] + " (one coin per step)"
        panel_of = dict(zip(data["strategy"], data["panel"]))
        panels = [panel_of[k] for k in order if k in panel_of] + [p for k, p in panel_of.items() if k not in order]
        mode = alt.Scale(domain=list(EXPOSURE_MODES))
        chart = alt.Chart(data).mark_line(point=True).encode(
            x=x, y=alt.Y("accuracy:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("mode:N", title="decoder fed", scale=mode),
            strokeDash=alt.StrokeDash("mode:N", title="decoder fed", scale=mode),
            tooltip=["mode:N", *tip]).properties(width=220, height=150).facet(
            facet=alt.Facet("panel:N", sort=panels, title=None), columns=3).properties(
            title="Accuracy by output position, teacher-forced vs free-running (the gap is exposure bias)")
        return apply_fonts(chart, font_size)
    chart = alt.Chart(positions).mark_line(point=True).encode(**_with_coin(dict(
        x=x, y=alt.Y("accuracy:Q", title="accuracy (mean over seeds)", scale=alt.Scale(domain=[0, 1])),
        color=_strategy_color(order), tooltip=tip), positions))
    return apply_fonts(chart.properties(title="Accuracy by output position (exposure bias: errors compound)",
                                        height=340), font_size)


def by_length_chart(frame, order: list[str], metric_label: str, x_title: str, font_size: int = 14,
                    share: bool = False):
    """(strategy, length, rank, value, min, max, seeds[, sentences, coin]) rows -> the final
    metric by source length, one line per strategy (mean over seeds; min and max in the
    tooltip). `length` is the axis label (a length or a bucket such as "9-12"), `rank` its
    order; `share`: the metric is a share (y from 0 to 1)."""
    import altair as alt

    labels = list(dict.fromkeys(frame.sort_values("rank")["length"])) if len(frame) else []
    tip = ["strategy:N", alt.Tooltip("length:N", title=x_title),
           alt.Tooltip("value:Q", title=f"{metric_label} (mean)", format=".3f"),
           alt.Tooltip("min:Q", format=".3f"), alt.Tooltip("max:Q", format=".3f"), alt.Tooltip("seeds:Q")]
    if "sentences" in frame.columns:
        tip.append(alt.Tooltip("sentences:Q"))
    chart = alt.Chart(frame).mark_line(point=True).encode(**_with_coin(dict(
        x=alt.X("length:O", sort=labels, title=x_title, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("value:Q", title=f"{metric_label} (mean over seeds)",
                scale=alt.Scale(domain=[0, 1]) if share else alt.Undefined),
        color=_strategy_color(order), tooltip=tip), frame))
    return apply_fonts(chart.properties(title=f"Final free-running {metric_label} by {x_title}", height=340),
                       font_size)


def lab_chart(points, font_size: int = 14):
    """(step, value, series) rows -> the live lab's curves (loss, ratio, validation exact match)."""
    import altair as alt

    chart = alt.Chart(points).mark_line(point=True).encode(
        x=alt.X("step:Q", title="training batch"), y=alt.Y("value:Q", title=None),
        color=alt.Color("series:N", title=None),
        tooltip=["series:N", "step:Q", alt.Tooltip("value:Q", format=".3f")])
    return apply_fonts(chart.properties(title="Live training", height=300), font_size)


GOLD_PROB_MODES = ("teacher-forced (gold prefix)", "free-running (own prefix)")
DIVERGENCE_COLOR = "#c00000"


def gold_prob_chart(frame, font_size: int = 14, title: str = "p(reference token) at each position"):
    """(step, position, gold, mode, prob, fed, divergence, divergence_label) rows, one per
    reference step and mode (GOLD_PROB_MODES) -> the probability the model gives each
    reference token, fed the gold prefix (teacher-forced) and fed its own output
    (free-running), with the first divergence of free-running decoding marked by a vertical
    rule and its label (the rows with `divergence` true). `position` is the axis label
    ("3 man"), `step` its order, so repeated tokens stay apart."""
    import altair as alt

    positions = list(dict.fromkeys(frame.sort_values("step")["position"])) if len(frame) else []
    x = alt.X("position:N", sort=positions, title="reference token (step)", axis=alt.Axis(labelAngle=-45))
    mode = alt.Scale(domain=list(GOLD_PROB_MODES))
    legend = alt.Legend(orient="bottom", direction="vertical", labelLimit=0)
    base = alt.Chart(frame)
    lines = base.mark_line(point=True).encode(
        x=x, y=alt.Y("prob:Q", title="p(reference token)", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("mode:N", title="decoder fed", scale=mode, legend=legend),
        strokeDash=alt.StrokeDash("mode:N", title="decoder fed", scale=mode, legend=legend),
        tooltip=[alt.Tooltip("step:Q"), alt.Tooltip("gold:N", title="reference token"), alt.Tooltip("mode:N"),
                 alt.Tooltip("prob:Q", title="p(reference token)", format=".3f"),
                 alt.Tooltip("fed:N", title="fed before this step")])
    marked = base.transform_filter("datum.divergence && datum.mode == '%s'" % GOLD_PROB_MODES[0])
    rule = marked.mark_rule(color=DIVERGENCE_COLOR, strokeWidth=2, strokeDash=[4, 3]).encode(x=x)
    label = marked.mark_text(align="left", baseline="top", dx=4, dy=2, color=DIVERGENCE_COLOR,
                             fontSize=font_sizes(font_size)["label"]).encode(
        x=x, y=alt.value(0), text="divergence_label:N")
    # autosize "pad": the plot keeps its 300 px and the axes, rotated labels and legend are
    # added around it; Streamlit's default ("fit" into its element) squeezed the plot of this
    # chart to a flat line
    chart = alt.layer(lines, rule, label).properties(title=title, height=300,
                                                     autosize=alt.AutoSizeParams(type="pad"))
    return apply_fonts(chart, font_size)


# ------------------------------------------------------------------ corpus statistics (Test set page)
def _configured(chart, font_size: int):
    return apply_fonts(chart, font_size)          # the one font helper (same sizes as before)


def statistic_histograms(df, title: str, x_title: str, font_size: int = 14, maxbins: int = 40):
    """Tidy (model, value) rows -> one histogram per model, stacked in rows over one x axis
    (Altair). The rows are concatenated, not faceted, so that they stretch to the page's width
    (Streamlit draws a facet chart at its natural width); the bins are the same in every row.
    Only numbers and model names reach the chart."""
    import altair as alt

    models = list(dict.fromkeys(df["model"]))
    values = df["value"].dropna()
    extent = [float(values.min()), float(values.max())] if len(values) else alt.Undefined
    bins = alt.Bin(maxbins=maxbins, extent=extent)
    base = alt.Chart(df).mark_bar().encode(
        y=alt.Y("count():Q", title="sentences"),
        color=alt.Color("model:N", legend=None, scale=alt.Scale(domain=models)),
        tooltip=[alt.Tooltip("model:N"), alt.Tooltip("value:Q", bin=bins, title=x_title),
                 alt.Tooltip("count():Q", title="sentences")])
    rows = [base.transform_filter(alt.FieldEqualPredicate(field="model", equal=m)).encode(
        x=alt.X("value:Q", bin=bins, title=x_title if i == len(models) - 1 else None)).properties(
        height=140, title=alt.TitleParams(m, anchor="start", fontSize=font_sizes(font_size)["label"]))
        for i, m in enumerate(models)]            # the x axis titled once, under the last row
    chart = alt.vconcat(*rows).resolve_scale(x="shared", y="shared").properties(title=title)
    return _configured(chart, font_size)


def statistic_scatter(df, x: str, y: str, x_title: str, y_title: str, title: str, font_size: int = 14):
    """Per-sentence points (columns `sentence`, x, y) -> an Altair scatter; the tooltip shows
    the sentence number and the two numbers only (no corpus text)."""
    import altair as alt

    data = df[["sentence", x, y]].dropna()
    chart = alt.Chart(data).mark_circle(size=40, opacity=0.45).encode(
        x=alt.X(f"{x}:Q", title=x_title), y=alt.Y(f"{y}:Q", title=y_title),
        tooltip=[alt.Tooltip("sentence:Q", title="sentence"), alt.Tooltip(f"{x}:Q", title=x_title, format=".4f"),
                 alt.Tooltip(f"{y}:Q", title=y_title, format=".2f")])
    return _configured(chart.properties(title=title, height=380), font_size)


def can_export_svg() -> bool:
    """Whether `chart_svg` can draw here: it needs the vl-convert-python package."""
    import importlib.util

    return importlib.util.find_spec("vl_convert") is not None


def chart_svg(chart) -> str:
    """An Altair chart drawn as SVG (a vector drawing, sharp at any size), on the server by
    vl-convert: Streamlit's toolbar for Vega-Lite charts saves PNG only (its vega-embed menu,
    which had "Save as SVG", is switched off). Vega's own theme, not Streamlit's."""
    buf = io.StringIO()
    chart.save(buf, format="svg")
    return buf.getvalue()


# ------------------------------------------------------------------ inside one step, attribution, diffs
# plain data (seq2seq/step_detail.py, seq2seq/attribution.py, decoding.token_diff) in, a Plotly figure out
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
