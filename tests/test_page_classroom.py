"""Classroom tools (AppTest): a colour-blind-safe palette for every heatmap and PNG or SVG
from every chart's camera button, on the Translate, Reverse, Compare and Beam search pages;
PNG and SVG downloads for the Test set page's Altair charts; and Guess first."""
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import plotly.colors
import pytest
import streamlit

from apptest_util import build_corpus_lab, elements, open_page, open_tab
from seq2seq import figures
from seq2seq.translate import Translator

TEXT = "abc de"


def specs(at):
    return {e.proto.id.rsplit("-", 1)[-1]: (json.loads(e.proto.spec), json.loads(e.proto.config))
            for e in elements(at.main, "plotly_chart")}


def heatmap_scales(spec):
    traces = list(spec["data"]) + [t for f in spec.get("frames", []) for t in f["data"]]
    return [t.get("colorscale") for t in traces if t["type"] == "heatmap"]


def test_palette_recolours_every_heatmap_and_svg_download(lab_root):
    at = open_page("pages/reverse.py", {"text": TEXT, "model": "reverse-bahdanau"})
    assert not at.exception
    for _, (spec, config) in specs(at).items():
        assert config["toImageButtonOptions"]["format"] == "png"
    at.sidebar.selectbox(key="palette").set_value("cividis").run()
    at.sidebar.radio(key="image_format").set_value("svg").run()
    assert not at.exception
    recoloured = 0
    for tab in ("Alignment heatmap", "Step by step", "Inside one step", "Attention vs attribution",
                "During training"):           # only the open tab is drawn: each in turn
        open_tab(at, "reverse.tab", tab)
        assert not at.exception
        for key, (spec, config) in specs(at).items():
            assert config["toImageButtonOptions"]["format"] == "svg", key
            for scale in heatmap_scales(spec):
                if key.endswith("attr.diff"):          # categorical colours (changed / only in), not a scale
                    continue
                assert json.dumps(scale).lower().count("#00224e") or "cividis" in json.dumps(scale).lower(), key
                recoloured += 1
    assert recoloured >= 4
    # the settings are kept across pages
    at.switch_page("pages/translate.py").run()
    assert at.sidebar.selectbox(key="palette").value == "cividis"


def test_guess_first_hides_then_reveals_and_scores(lab_root):
    ref = Translator.load(lab_root / "reverse-bahdanau").translate(TEXT)
    answers = [int(np.argmax(r)) for r in ref.step_alignment]
    at = open_page("pages/reverse.py", {"text": TEXT, "model": "reverse-bahdanau", "tab": "Inside one step"})
    at.toggle(key="reverse.guess_mode").set_value(True).run()
    assert not at.exception
    ids = [e.proto.id for e in elements(at.main, "plotly_chart")]
    assert not any(i.endswith("inside.energies") for i in ids)          # hidden until a guess
    pills = [p for p in at.get("button_group")]
    assert len(pills) == 1
    # step 1: the right token
    pills[0].set_value(answers[0]).run()
    assert not at.exception
    assert any(i.endswith("inside.energies") for i in (e.proto.id for e in elements(at.main, "plotly_chart")))
    assert at.success and "Right" in at.success[0].value
    score = {m.label: m.value for m in at.metric}["Right guesses for this sentence"]
    assert score == "1 of 1"
    energies = next(json.loads(e.proto.spec) for e in elements(at.main, "plotly_chart")
                    if e.proto.id.endswith("inside.energies"))
    assert any("your guess" in a.get("text", "") for a in energies["layout"]["annotations"])
    # step 2: a wrong token
    at.button(key="reverse.guess.next").click().run()
    assert at.slider(key="reverse.step").value == 2
    wrong = (answers[1] + 1) % len(ref.source.tokens)
    at.get("button_group")[0].set_value(wrong).run()
    assert not at.exception
    assert at.error and "Not quite" in at.error[0].value
    assert {m.label: m.value for m in at.metric}["Right guesses for this sentence"] == "1 of 2"
    # a new sentence starts a fresh score
    at.text_area(key="reverse.text").set_value("xyz").run()
    at.slider(key="reverse.step").set_value(1).run()
    assert not at.exception
    assert "No guesses yet" in " ".join(c.value for c in at.caption)


def test_guess_first_on_a_model_without_attention(lab_root):
    at = open_page("pages/reverse.py", {"text": "abc", "model": "reverse-gru", "tab": "Inside one step"})
    at.toggle(key="reverse.guess_mode").set_value(True).run()
    assert not at.exception
    assert any("Guess first needs attention" in i.value for i in at.info)


def test_guess_buttons_show_tokens_literally(lab_root):
    at = open_page("pages/translate.py", {"text": "<b>x</b> **y** [l](http://e.x)", "model": "translate-bahdanau",
                                          "tab": "Inside one step"})
    at.toggle(key="translate.guess_mode").set_value(True).run()
    assert not at.exception
    groups = at.get("button_group")
    if groups:
        labels = json.dumps([o.content for o in groups[0].proto.options])
        assert "**" not in labels.replace("\\\\*\\\\*", "")


# ------------------------------------------------------------------ Compare and Beam search pages
def charts_by_key(at) -> dict:
    """{widget key: (figure spec, chart config)} of the page's Plotly charts (ids are $$ID-<hash>-<key>)."""
    return {e.proto.id.split("-", 2)[-1]: (json.loads(e.proto.spec), json.loads(e.proto.config))
            for e in elements(at.main, "plotly_chart")}


def stops(colorscale) -> list[tuple[float, str]]:
    """A colorscale as (position, colour) stops, positions rounded (their last digit varies with
    the serializer)."""
    return [(round(float(p), 9), str(c).lower()) for p, c in colorscale]


def scale(name: str) -> list[tuple[float, str]]:
    """A named Plotly colorscale, e.g. "Cividis", as stops."""
    return stops(plotly.colors.get_colorscale(name))


def heatmap_traces(spec) -> list[dict]:
    return [t for t in spec["data"] if t["type"] == "heatmap"]


def heatmap_scales_of(spec) -> list[list[tuple[float, str]]]:
    return [stops(t["colorscale"]) for t in heatmap_traces(spec)]


def test_compare_page_heatmaps_follow_the_palette_and_the_camera_button_format(lab_root):
    at = open_page("pages/compare.py", {"task": "translate", "text": "ein mann"})
    assert not at.exception, at.exception
    charts = charts_by_key(at)
    assert set(charts) == {"compare.heatmap.translate-bahdanau", "compare.heatmap.translate-lstm"}

    def colours(charts):
        return {k: heatmap_scales_of(spec) for k, (spec, _) in charts.items()}

    # default: attention blue, saliency orange; the camera button saves a PNG at twice the size
    assert colours(charts) == {"compare.heatmap.translate-bahdanau": [scale("Blues")],
                               "compare.heatmap.translate-lstm": [scale("Oranges")]}
    for _, config in charts.values():
        assert config["toImageButtonOptions"] == {"format": "png", "scale": 2, "filename": "attention-lab"}
        assert config["displaylogo"] is False
    at.sidebar.selectbox(key="palette").set_value("cividis").run()
    at.sidebar.radio(key="image_format").set_value("svg").run()
    assert not at.exception, at.exception
    charts = charts_by_key(at)
    assert colours(charts) == {k: [scale("Cividis")] for k in charts} and len(charts) == 2
    for _, config in charts.values():
        assert config["toImageButtonOptions"] == {"format": "svg", "filename": "attention-lab"}   # no pixel scale
    # the other task's grid too (reversal: the real model with its ideal anti-diagonal, and a saliency model)
    at.radio(key="compare.task").set_value("reverse").run()
    at.sidebar.selectbox(key="palette").set_value("viridis").run()
    assert not at.exception, at.exception
    charts = charts_by_key(at)
    assert set(charts) == {"compare.heatmap.reverse-bahdanau", "compare.heatmap.reverse-gru"}
    assert colours(charts) == {k: [scale("Viridis")] for k in charts}
    assert all(config["toImageButtonOptions"]["format"] == "svg" for _, config in charts.values())
    at.sidebar.selectbox(key="palette").set_value("default").run()
    assert colours(charts_by_key(at))["compare.heatmap.reverse-bahdanau"] == [scale("Blues")]


def test_beam_page_heatmaps_follow_the_palette_and_every_chart_the_camera_button_format(lab_root):
    at = open_page("pages/beam_search.py", {"model": "reverse-bahdanau", "text": "hello world", "width": "3"})
    assert not at.exception, at.exception
    charts = charts_by_key(at)
    hypotheses = [f"beam.heatmap.{rank}" for rank in (1, 2, 3)]
    assert set(charts) == {"beam.tree", "beam.diff", *hypotheses}
    for key in hypotheses:
        assert heatmap_scales_of(charts[key][0]) == [scale("Blues")]
    diff_colours = heatmap_scales_of(charts["beam.diff"][0])
    assert all(config["toImageButtonOptions"]["format"] == "png" for _, config in charts.values())
    at.sidebar.selectbox(key="palette").set_value("cividis").run()
    at.sidebar.radio(key="image_format").set_value("svg").run()
    assert not at.exception, at.exception
    charts = charts_by_key(at)
    assert set(charts) == {"beam.tree", "beam.diff", *hypotheses}
    for key in hypotheses:
        assert heatmap_scales_of(charts[key][0]) == [scale("Cividis")], key
    # the diff's colours are categories (changed / only in one), not a scale: as on the Translate page
    assert heatmap_scales_of(charts["beam.diff"][0]) == diff_colours
    assert not heatmap_traces(charts["beam.tree"][0])
    for key, (_, config) in charts.items():
        assert config["toImageButtonOptions"] == {"format": "svg", "filename": "attention-lab"}, key
    assert at.sidebar.selectbox(key="palette").value == "cividis"


# ------------------------------------------------------------------ Test set page (Altair)
def _streamlit_vega_frontend() -> str:
    js = Path(streamlit.__file__).parent / "static" / "static" / "js"
    (chart,) = js.glob("ArrowVegaLiteChart.*.js")
    return chart.read_text(encoding="utf-8")


def test_streamlit_gives_vega_lite_charts_a_png_download_only():
    """Why the Test set page adds its own SVG button: in the installed Streamlit the chart
    toolbar has "Download as PNG", vega-embed runs with its action menu (with "Save as SVG")
    switched off, and a chart's usermeta.embedOptions keeps theme, renderer and padding only,
    so `actions` cannot switch the menu back on. A Streamlit upgrade that changes this fails
    here: then the button may be dropped."""
    source = _streamlit_vega_frontend()
    assert "`Download as PNG`" in source
    assert "Download as SVG" not in source and "Save as SVG" not in source
    embed = re.search(r"\{ast:!0,expr:\w+,[^}]*\},defaultStyle:!1,actions:(!1|false)\}", source)
    assert embed, "vega-embed options changed: check whether its action menu (Save as SVG) is back"
    sanitizer = re.search(r"embedOptions,i=r\?\.theme;.{0,400}?delete t\.embedOptions", source)
    assert sanitizer and "actions" not in sanitizer.group(0)


@pytest.fixture(scope="module")
def corpus_lab(tmp_path_factory):
    lab = build_corpus_lab(tmp_path_factory.mktemp("classroom_test_set"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTENTION_LAB_CHECKPOINTS", str(lab["checkpoints"]))
        yield lab


def test_test_set_charts_offer_png_and_svg_downloads(corpus_lab, monkeypatch):
    from streamlit.runtime.media_file_manager import MediaFileManager

    deferred = {}                       # what each SVG button hands over when clicked (made only then)
    original = MediaFileManager.add_deferred

    def spy(self, data_callable, mimetype, coordinates, file_name=None, **kw):
        file_id = original(self, data_callable, mimetype, coordinates, file_name=file_name, **kw)
        deferred[file_id] = (data_callable, mimetype, file_name)
        return file_id

    monkeypatch.setattr(MediaFileManager, "add_deferred", spy)
    monkeypatch.setattr(figures, "chart_svg", _counting(figures.chart_svg))
    at = open_page("pages/test_set.py", timeout=90)
    assert not at.exception, at.exception
    at.selectbox(key="test_set.dist_stat").set_value("bleu").run()
    at.selectbox(key="test_set.scatter_stat").set_value("entropy").run()
    assert not at.exception, at.exception
    assert figures.chart_svg.calls == 0                  # nothing is drawn until a button is clicked
    charts = [json.loads(e.proto.spec) for e in elements(at.main, "vega_lite_chart")]
    assert len(charts) == 2                              # the histograms, then the scatter
    buttons = {b.proto.id.split("-", 2)[-1]: b for b in elements(at.main, "download_button")}
    assert set(buttons) == {"test_set.hist.svg", "test_set.scatter.svg"}
    expected = {"test_set.hist.svg": ("attention-lab-test2016-bleu-histograms.svg", "sentence BLEU per sentence"),
                "test_set.scatter.svg": ("attention-lab-test2016-translate-bahdanau-entropy-against-bleu.svg",
                                         "translate-bahdanau: attention entropy")}
    for key, button in buttons.items():
        assert button.proto.label == "Download this chart as SVG" and button.proto.ignore_rerun
        make, mime, name = deferred[button.proto.deferred_file_id]
        assert mime == "image/svg+xml" and name == expected[key][0]
        svg = make()
        root = ET.fromstring(svg)                         # well-formed XML, an <svg> drawing
        assert root.tag == "{http://www.w3.org/2000/svg}svg" and float(root.get("width")) > 100
        drawn = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
        assert expected[key][1] in drawn, drawn[:300]
        assert "fett" not in svg                          # corpus text stays out of the charts
    # the histogram's SVG draws one panel per model with statistics, named in the drawing
    hist_svg = deferred[buttons["test_set.hist.svg"].proto.deferred_file_id][0]()
    assert "translate-bahdanau" in hist_svg and "translate-lstm" in hist_svg
    assert figures.chart_svg.calls == 3
    # the PNG comes from Streamlit's own toolbar on each chart (test_streamlit_gives_vega_lite_charts_a_png_download_only)


def _counting(fn):
    def wrapper(*args, **kwargs):
        wrapper.calls += 1
        return fn(*args, **kwargs)

    wrapper.calls = 0
    return wrapper


def test_chart_svg_draws_an_altair_chart_and_says_when_it_can():
    import pandas as pd

    assert figures.can_export_svg()                  # vl-convert-python is in requirements.txt
    df = pd.DataFrame({"sentence": [1, 2, 3], "entropy": [0.5, 1.0, 1.5], "bleu": [10.0, 20.0, 5.0]})
    svg = figures.chart_svg(figures.statistic_scatter(df, "entropy", "bleu", "entropy (nats)", "BLEU", "a & b"))
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    (marks,) = [g for g in root.iter() if (g.get("class") or "").startswith("mark-symbol")]
    points = [p.get("aria-label") for p in marks]           # one circle per sentence, its numbers in its label
    assert points == ["entropy (nats): 0.5; BLEU: 10; sentence: 1", "entropy (nats): 1; BLEU: 20; sentence: 2",
                      "entropy (nats): 1.5; BLEU: 5; sentence: 3"]
    texts = [t.text for t in root.iter() if t.tag.endswith("text")]
    assert "a & b" in texts and "entropy (nats)" in texts and "BLEU" in texts
