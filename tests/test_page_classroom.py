"""Classroom tools on the Translate and Reverse pages (AppTest): a colour-blind-safe palette
for every heatmap, PNG or SVG from every chart's camera button, and Guess first."""
import json

import numpy as np

from apptest_util import elements, open_page
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
    charts = specs(at)
    recoloured = 0
    for key, (spec, config) in charts.items():
        assert config["toImageButtonOptions"]["format"] == "svg", key
        for scale in heatmap_scales(spec):
            if key.endswith("attr.diff"):          # categorical colours (changed / only in), not a scale
                continue
            assert json.dumps(scale).lower().count("#00224e") or "cividis" in json.dumps(scale).lower(), key
            recoloured += 1
    assert recoloured >= 2
    # the settings are kept across pages
    at.switch_page("pages/translate.py").run()
    assert at.sidebar.selectbox(key="palette").value == "cividis"


def test_guess_first_hides_then_reveals_and_scores(lab_root):
    ref = Translator.load(lab_root / "reverse-bahdanau").translate(TEXT)
    answers = [int(np.argmax(r)) for r in ref.step_alignment]
    at = open_page("pages/reverse.py", {"text": TEXT, "model": "reverse-bahdanau"})
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
    at = open_page("pages/reverse.py", {"text": "abc", "model": "reverse-gru"})
    at.toggle(key="reverse.guess_mode").set_value(True).run()
    assert not at.exception
    assert any("Guess first needs attention" in i.value for i in at.info)


def test_guess_buttons_show_tokens_literally(lab_root):
    at = open_page("pages/translate.py", {"text": "<b>x</b> **y** [l](http://e.x)", "model": "translate-bahdanau"})
    at.toggle(key="translate.guess_mode").set_value(True).run()
    assert not at.exception
    groups = at.get("button_group")
    if groups:
        labels = json.dumps([o.content for o in groups[0].proto.options])
        assert "**" not in labels.replace("\\\\*\\\\*", "")
