import csv
import io
import json

import numpy as np
import pandas as pd

from seq2seq import figures
from seq2seq.alignment import diagonality, first_divergence, mirrored_positions, row_entropy


def test_heatmap_keeps_repeated_tokens_apart_and_escapes_html():
    src = ["der", "<b>x</b>", "der", " "]
    out = ["the", "the", "x"]
    A = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1], [0.0, 1.0, 0.0, 0.0]])
    fig = figures.alignment_heatmap(src, out, A, source_unknown=[False, True, False, False])
    spec = json.loads(fig.to_json())
    hm = spec["data"][0]
    assert hm["type"] == "heatmap"
    assert np.allclose(np.array(hm["z"]), A)
    assert hm["x"] == [0, 1, 2, 3] and hm["y"] == [0, 1, 2]       # positions, not tokens
    xt = spec["layout"]["xaxis"]["ticktext"]
    assert xt == ["der", "&lt;b&gt;x&lt;/b&gt; (?)", "der", "␣"]
    assert spec["layout"]["yaxis"]["ticktext"] == ["the", "the", "x"]
    assert "<b>x</b>" not in fig.to_json()
    assert "Attention" in spec["layout"]["title"]["text"]


def test_saliency_heatmap_is_labeled_and_ideal_line_is_the_antidiagonal():
    fig = figures.alignment_heatmap(list("abc"), list("cba"), np.eye(3)[::-1], kind="saliency", ideal_antidiagonal=True)
    spec = json.loads(fig.to_json())
    assert "not attention" in spec["layout"]["title"]["text"]
    line = spec["data"][1]
    assert line["x"] == [2, 1, 0] and line["y"] == [0, 1, 2]


def test_step_figure_has_one_frame_per_step_with_the_step_weights():
    steps = [{"token": "c", "prob": 0.9, "topk": [["c", 0.9], ["b", 0.05]]},
             {"token": "b", "prob": 0.8, "topk": [["b", 0.8], ["a", 0.1]]},
             {"token": "<eos>", "prob": 0.99, "topk": [["<eos>", 0.99], ["a", 0.01]]}]
    W = np.array([[0, 0.1, 0.9], [0.1, 0.8, 0.1], [0.4, 0.3, 0.3]])
    fig = figures.step_figure(list("abc"), steps, W, forced_rows=1)
    spec = json.loads(fig.to_json())
    assert len(spec["frames"]) == 3
    assert np.allclose(spec["frames"][1]["data"][0]["y"], W[1])
    assert spec["frames"][2]["data"][1]["text"][0].startswith("&lt;eos&gt;")
    assert "(forced)" in spec["frames"][0]["layout"]["title"]["text"]
    assert "(forced)" not in spec["frames"][1]["layout"]["title"]["text"]
    assert len(spec["layout"]["sliders"][0]["steps"]) == 3
    assert spec["layout"]["updatemenus"][0]["buttons"][0]["method"] == "animate"


def test_beam_tree_marks_the_winner_path():
    itos = ["<pad>", "<unk>", "<sos>", "<eos>", "a", "b"]
    tree = [{"tokens": [4, 5], "parents": [0, 0], "scores": [-0.1, -0.5], "finished": [False, False]},
            {"tokens": [3, 4], "parents": [1, 0], "scores": [-0.3, -0.4], "finished": [False, False]},
            {"tokens": [0, 3], "parents": [0, 1], "scores": [-0.3, -0.35], "finished": [True, False]}]
    spec = json.loads(figures.beam_tree_figure(tree, itos).to_json())
    nodes = spec["data"][3]
    winners = [(x, y) for x, y, c in zip(nodes["x"], nodes["y"], nodes["marker"]["color"]) if c == "crimson"]
    # winner: final slot 0 (score -0.3) is the frozen copy of step-1 slot 0 (<eos>), whose parent is step-0 slot 1 (b)
    assert winners == [(0, 1), (1, 0)]
    assert (2, 0) not in list(zip(nodes["x"], nodes["y"]))  # frozen copies are not drawn as new tokens ...
    kept = spec["data"][4]
    assert list(zip(kept["x"], kept["y"])) == [(2, 0)]          # ... but as an ended hypothesis still ranked
    assert kept["marker"]["color"] == ["crimson"]


def test_csv_round_trip_and_formula_defused():
    text = figures.alignment_csv(["=cmd", "b"], ["x"], np.array([[0.25, 0.75]]))
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["output \\ source", "'=cmd", "b"]
    assert rows[1][0] == "x" and float(rows[1][1]) == 0.25 and float(rows[1][2]) == 0.75


def test_alignment_numbers():
    assert diagonality(np.eye(4)[::-1]) == 1.0
    assert diagonality(np.eye(4)) == 0.0
    assert list(mirrored_positions(5, 3)) == [2, 1, 0, -1, -1]
    ent = row_entropy(np.array([[1.0, 0.0], [0.5, 0.5]]))
    assert abs(ent[0]) < 1e-9 and abs(ent[1] - np.log(2)) < 1e-9
    assert first_divergence(list("abc"), list("abd")) == 2
    assert first_divergence(list("ab"), list("ab")) is None
    assert first_divergence(list("ab"), list("abc")) == 2


def test_line_chart_carries_the_data():
    df = pd.DataFrame({"length": [1, 2], "exact match": [1.0, 0.5], "model": ["m", "m"]})
    spec = figures.line_chart(df, "length", "exact match", "model", "t", rule_x=1.5).to_dict()
    values = [v for d in spec["datasets"].values() for v in d]
    assert {"length": 2, "exact match": 0.5, "model": "m"} in values


def test_one_font_helper_sizes_plotly_and_altair_alike():
    df = pd.DataFrame({"step": [0, 1], "ratio": [1.0, 0.5], "strategy": ["a", "a"], "kind": ["decay", "decay"]})
    config = figures.schedule_chart(df, font_size=20).to_dict()["config"]
    assert config["axis"]["labelFontSize"] == config["legend"]["labelFontSize"] == 20
    assert config["title"]["fontSize"] == figures.font_sizes(20)["title"] == 22
    layout = json.loads(figures.alignment_heatmap(list("ab"), list("ba"), np.eye(2), font_size=20).to_json())["layout"]
    assert layout["font"]["size"] == layout["xaxis"]["tickfont"]["size"] == 20
    assert layout["title"]["font"]["size"] == 22
    line = figures.line_chart(pd.DataFrame({"x": [1], "y": [1.0], "c": ["m"]}), "x", "y", "c", "t", font_size=20)
    assert line.to_dict()["config"]["axis"]["titleFontSize"] == 20


def test_teacher_forcing_charts_carry_their_frames():
    order = ["constant 1", "linear decay"]
    runs = pd.DataFrame({"arch": ["gru"] * 3, "strategy": ["constant 1", "linear decay", "linear decay"],
                         "seed": [1, 1, 2], "name": ["a", "b", "c"], "value": [0.8, 0.4, None],
                         "error": [None, None, "boom"]})
    spec = figures.final_chart(runs, order, "exact match").to_dict()
    values = [v for d in spec["datasets"].values() for v in d]
    assert sorted(v["value"] for v in values) == [0.4, 0.8]              # the failed run is left out
    assert spec["title"].startswith("Final exact match")
    curves = pd.DataFrame({"arch": ["gru"] * 2, "strategy": order, "epoch": [1, 1], "val_loss": [0.5, 0.6],
                           "metric": [0.7, 0.6], "train_loss": [1.0, 1.0], "tf_ratio": [1.0, 0.5]})
    against, loss, metric = figures.curves_charts(curves, order, "exact match")
    assert (against.to_dict()["encoding"]["x"]["field"], against.to_dict()["encoding"]["y"]["field"]) == \
        ("val_loss", "metric")
    assert loss.to_dict()["encoding"]["color"]["legend"] is None      # only the first chart has the legend
    positions = pd.DataFrame({"strategy": order, "position": [1, 1], "accuracy": [1.0, 0.5], "min": [1.0, 0.4],
                              "max": [1.0, 0.6]})
    assert figures.position_chart(positions, order).to_dict()["encoding"]["y"]["field"] == "accuracy"
    points = pd.DataFrame({"step": [1, 2], "value": [0.9, 0.8], "series": ["loss", "loss"]})
    assert figures.lab_chart(points).to_dict()["title"] == "Live training"


def test_teacher_forcing_charts_mark_the_tutorials_rule_and_draw_both_curves():
    order = ["constant 0.5", "tutorials' rule 0.5"]
    coins = ["one per token", "one per step for the batch"]
    positions = pd.DataFrame({"arch": ["gru"] * 4, "strategy": order * 2, "coin": coins * 2,
                              "mode": ["teacher-forced"] * 2 + ["free-running"] * 2, "position": [1] * 4,
                              "accuracy": [0.9, 0.8, 0.5, 0.4], "min": [0.9, 0.8, 0.5, 0.4],
                              "max": [0.9, 0.8, 0.5, 0.4]})
    spec = figures.position_chart(positions, order).to_dict()
    assert spec["facet"]["field"] == "panel" and spec["columns"] == 3
    assert spec["facet"]["sort"] == ["constant 0.5", "tutorials' rule 0.5 (one coin per step)"]
    assert spec["spec"]["encoding"]["color"]["field"] == "mode"
    free = positions[positions["mode"] == "free-running"]
    single = figures.position_chart(free.drop(columns="mode"), order).to_dict()       # an older file
    assert single["encoding"]["strokeDash"]["scale"]["domain"] == coins              # per token solid, first
    # a line-and-point chart's legend draws points: the coin is a point shape there as well as a dash
    assert single["encoding"]["shape"]["scale"] == {"domain": coins, "range": ["circle", "triangle-up"]}
    assert single["encoding"]["shape"]["field"] == single["encoding"]["strokeDash"]["field"] == "coin"
    runs = pd.DataFrame({"arch": ["gru"] * 2, "strategy": order, "seed": [1, 1], "name": ["a", "b"],
                         "value": [0.5, 0.4], "error": [None, None], "coin": coins})
    layers = figures.final_chart(runs, order, "exact match").to_dict()["spec"]["layer"]
    assert layers[2]["encoding"]["shape"]["scale"] == {"domain": coins, "range": ["circle", "triangle-up"]}
    tips = {t.get("title"): t.get("aggregate") for t in layers[0]["encoding"]["tooltip"] if isinstance(t, dict)}
    assert tips["seeds"] == "count" and tips["std (sample)"] == "stdev"     # the bar's tooltip: n and spread
    buckets = pd.DataFrame({"arch": ["x"] * 3, "strategy": ["constant 0.5"] * 3, "coin": coins[:1] * 3,
                            "length": ["21+", "1-8", "9-12"], "rank": [21, 1, 9], "value": [10.0, 30.0, 20.0],
                            "min": [10.0, 30.0, 20.0], "max": [10.0, 30.0, 20.0], "seeds": [1, 1, 1],
                            "sentences": [5, 50, 40]})
    spec = figures.by_length_chart(buckets, order, "BLEU", "source length (tokens)").to_dict()
    assert spec["encoding"]["x"]["sort"] == ["1-8", "9-12", "21+"]
    assert spec["title"] == "Final free-running BLEU by source length (tokens)"


def test_step_figure_controls_sit_below_the_axes_at_every_font_size():
    src = "ein mann fährt mit dem fahrrad die straße entlang .".split()
    steps = [{"token": "a", "prob": 0.9, "topk": [["a", 0.9], ["man", 0.05]]},
             {"token": "man", "prob": 0.8, "topk": [["man", 0.8], ["a", 0.1]]}]
    bottoms = []
    for size in (14, 20):
        layout = json.loads(figures.step_figure(src, steps, np.full((2, len(src)), 0.1), font_size=size)
                            .to_json())["layout"]
        top, bottom = layout["margin"]["t"], layout["margin"]["b"]
        plot_h = layout["height"] - top - bottom
        menu, slider = layout["updatemenus"][0], layout["sliders"][0]
        assert menu["yanchor"] == slider["yanchor"] == "top"
        # in pixels below the plot: the tick labels first, then the buttons, then the slider, all inside the figure
        menu_px, slider_px = -menu["y"] * plot_h, -slider["y"] * plot_h
        assert 2.5 * size < menu_px < slider_px < bottom - 3 * size
        assert layout["title"]["pad"]["t"] > 8                       # the two-line title is not cut off at the top
        bottoms.append(bottom)
    assert bottoms[1] > bottoms[0]                                   # larger fonts get more room


def test_single_altair_charts_grow_with_their_legends_and_concat_charts_keep_streamlits_sizing():
    # Streamlit's default ("fit") squeezes plot, axes and legends into the chart's height, which
    # cut off the schedule chart's third "kind" entry: single and layered charts fit the width only
    import altair as alt

    frame = pd.DataFrame({"step": [0, 1] * 9, "ratio": [1.0, 0.5] * 9, "strategy": [f"s{i}" for i in range(9)
                                                                                  for _ in range(2)],
                          "kind": ["decay"] * 6 + ["constant"] * 6 + ["constant, one coin per step"] * 6})
    for chart in (figures.schedule_chart(frame),
                  figures.line_chart(frame, "step", "ratio", "strategy", "t", rule_x=0.5)):     # a layer
        assert chart.to_dict()["autosize"] == {"type": "fit-x", "contains": "padding"}
    gold = pd.DataFrame({"step": [1], "position": ["1 a"], "gold": ["a"], "mode": ["teacher-forced"], "prob": [0.5],
                         "fed": ["<sos>"], "divergence": [False], "divergence_label": [""]})
    assert figures.gold_prob_chart(gold).to_dict()["autosize"] == {"type": "pad"}      # its own choice kept
    concat = figures.apply_fonts(alt.hconcat(alt.Chart(frame).mark_line().encode(x="step:Q", y="ratio:Q")), 14)
    assert "autosize" not in concat.to_dict()


def test_statistic_histograms_stack_one_row_per_model_over_the_same_bins():
    df = pd.DataFrame({"model": ["a"] * 3 + ["b"] * 2, "value": [0.0, 50.0, 100.0, 20.0, 30.0]})
    spec = figures.statistic_histograms(df, "t", "sentence BLEU").to_dict()
    rows = spec["vconcat"]           # concatenated, not faceted: Streamlit stretches it to the page's width
    assert [r["title"]["text"] for r in rows] == ["a", "b"]
    assert [r["transform"][0]["filter"]["equal"] for r in rows] == ["a", "b"]
    assert all(r["encoding"]["x"]["bin"]["extent"] == [0.0, 100.0] for r in rows)     # b's bins are a's
    assert [r["encoding"]["x"].get("title") for r in rows] == [None, "sentence BLEU"]
    assert spec["resolve"]["scale"] == {"x": "shared", "y": "shared"}


def test_titles_start_below_the_toolbar_and_plots_keep_their_height():
    # Plotly's toolbar sits in the figure's top right corner, as wide as a Compare page column
    # (tests/test_browser.py measures it): titles and top tick labels start below its band
    src = "ein mann fährt mit dem fahrrad .".split()
    steps = [{"token": "a", "prob": 0.9, "topk": [["a", 0.9]]}]
    heatmap = json.loads(figures.alignment_heatmap(src, ["a"], np.full((1, len(src)), 1 / len(src)), title="m: attention",
                                                   font_size=14).to_json())["layout"]
    step = json.loads(figures.step_figure(src, steps, np.full((1, len(src)), 0.1), font_size=14).to_json())["layout"]
    for layout in (heatmap, step):
        assert layout["title"]["pad"]["t"] >= figures.TOOLBAR_BAND + figures.TITLE_PAD
        assert layout["margin"]["t"] >= figures.TOOLBAR_BAND + 2 * 16          # the band, a title, tick labels
    bare = figures.apply_fonts(figures.go.Figure(layout=dict(height=300, margin=dict(t=50))), 14, top=50)
    assert bare.layout.height - bare.layout.margin.t == 300 - 50                # the plot area did not shrink
