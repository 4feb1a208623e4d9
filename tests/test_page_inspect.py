"""The Translate and Reverse pages (AppTest)."""
import json
import shutil

import numpy as np
import pytest

from apptest_util import elements, messages, open_page, open_tab, plotly_figures, save_tiny_piece_reader
from conftest import ROOT

CK = ROOT / "checkpoints"


def heatmap(at):
    """The Alignment heatmap tab's figure (other tabs have heatmaps too: picked by its key)."""
    figs = [json.loads(e.proto.spec) for e in elements(at.main, "plotly_chart")
            if e.proto.id.endswith((".heatmap",)) and not e.proto.id.endswith("training.heatmap")]
    assert len(figs) == 1
    return figs[0]


def length_chart(at):
    """The Where models break tab's chart (the heatmap tab has a chart too: picked by its title)."""
    return [e for e in at.get("vega_lite_chart") if "Exact match by sequence length" in e.proto.spec]


def test_reverse_page_shows_output_heatmap_and_url():
    at = open_page("pages/reverse.py", {"text": "abc de", "model": "reverse-bahdanau"})
    assert not at.exception
    assert at.code[0].value == "ed cba"
    fig = heatmap(at)
    z = np.array(fig["data"][0]["z"])
    assert z.shape == (6, 6)
    assert np.allclose(z.sum(1), 1, atol=1e-4)
    assert fig["layout"]["xaxis"]["ticktext"] == ["a", "b", "c", "␣", "d", "e"]
    assert fig["data"][1]["name"].startswith("ideal")
    assert float(at.metric[-1].value) > 0.3 or any(m.label == "diagonality" for m in at.metric)
    assert at.query_params["text"] == ["abc de"] or at.query_params["text"] == "abc de"
    assert "tab" not in at.query_params                        # the first tab is the default: not in the URL
    # only the open tab is computed: no step animation, no length chart until their tabs open
    assert not [f for f in plotly_figures(at) if f.get("frames")] and not length_chart(at)
    open_tab(at, "reverse.tab", "Step by step")
    assert not at.exception
    assert at.query_params["tab"] in (["Step by step"], "Step by step")
    assert not [e for e in elements(at.main, "plotly_chart") if e.proto.id.endswith("reverse.heatmap")]
    # the step-by-step figure: one frame per decoder step (6 tokens + <eos>)
    animated = [f for f in plotly_figures(at) if f.get("frames")]
    assert len(animated) == 1 and len(animated[0]["frames"]) == 7
    # the exact-match-by-length chart from the cards is there
    open_tab(at, "reverse.tab", "Where models break")
    assert not at.exception and length_chart(at)


def test_a_shared_link_opens_on_its_tab_and_the_tab_survives_a_page_switch():
    at = open_page("pages/reverse.py", {"text": "abc", "tab": "Step by step"})
    assert not at.exception
    assert [f for f in plotly_figures(at) if f.get("frames")] and at.query_params["tab"] in (["Step by step"],
                                                                                          "Step by step")
    at.switch_page("pages/home.py").run()
    at.switch_page("pages/reverse.py").run()
    assert at.session_state["reverse.tab"] == "Step by step"
    at = open_page("pages/reverse.py", {"text": "abc", "tab": "No such tab"})   # a bad link: the first tab
    assert not at.exception and at.session_state["reverse.tab"] == "Alignment heatmap"
    assert "tab" not in at.query_params


@pytest.mark.parametrize("text,fragment", [
    ("   ", "Type something"),
    ("x" * 200, "truncated"),
    ("héllo 🙂 مرحبا 你好", "unknown"),
])
def test_reverse_page_bad_inputs_give_messages(text, fragment):
    at = open_page("pages/reverse.py", {"text": text})
    assert not at.exception
    assert fragment in messages(at)


def test_html_and_markdown_are_shown_literally():
    text = "<i>x</i> **y** [l](http://e.x) ![i](http://e.x/a.png)"
    at = open_page("pages/reverse.py", {"text": text})
    assert not at.exception
    # nothing from the user went through markdown
    assert all("<i>" not in m.value and "http" not in m.value for m in at.markdown)
    for fig in plotly_figures(at):  # the app's own markup never uses <i>
        assert "<i>" not in json.dumps(fig)
    assert "&lt;" in json.dumps(heatmap(at)["layout"]["xaxis"]["ticktext"])


def test_input_survives_a_page_switch():
    at = open_page("pages/reverse.py")
    at.text_area(key="reverse.text").set_value("keep me").run()
    at.switch_page("pages/home.py").run()
    at.switch_page("pages/reverse.py").run()
    assert at.text_area(key="reverse.text").value == "keep me"
    assert at.code[0].value == "em peek"


def test_corrupt_checkpoint_is_reported_and_others_work(tmp_path, monkeypatch):
    shutil.copytree(CK / "reverse-bahdanau", tmp_path / "reverse-bahdanau")
    shutil.copytree(CK / "reverse-bahdanau", tmp_path / "reverse-broken")
    w = tmp_path / "reverse-broken" / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    card = json.loads((tmp_path / "reverse-broken" / "card.json").read_text())
    card["name"] = "reverse-broken"
    (tmp_path / "reverse-broken" / "card.json").write_text(json.dumps(card))
    monkeypatch.setenv("ATTENTION_LAB_CHECKPOINTS", str(tmp_path))
    at = open_page("pages/reverse.py", {"model": "reverse-broken", "text": "abc"})
    assert not at.exception
    assert "sha256" in messages(at) and "reverse-broken" in messages(at)
    at.selectbox(key="reverse.model").set_value("reverse-bahdanau").run()
    assert not at.exception and at.code[0].value == "cba"


@pytest.mark.skipif(not (CK / "translate-bahdanau").is_dir(), reason="translate checkpoints not committed yet")
def test_translate_page_attention_beam_prefix_and_saliency():
    at = open_page("pages/translate.py", {"text": "Zwei Hunde spielen im Schnee.", "model": "translate-bahdanau"})
    assert not at.exception
    greedy = at.code[0].value
    assert greedy and greedy[0].isupper()
    z = np.array(heatmap(at)["data"][0]["z"])
    assert z.shape[1] == 6 and np.allclose(z.sum(1), 1, atol=1e-4)
    at.slider(key="translate.beam").set_value(5).run()
    assert not at.exception and at.code[0].value
    at.text_input(key="translate.prefix").set_value("two cats").run()
    assert not at.exception
    assert at.code[0].value.lower().startswith("two cats")
    ticks = heatmap(at)["layout"]["yaxis"]["ticktext"]
    assert ticks[:2] == ["two (forced)", "cats (forced)"]
    if (CK / "translate-gru").is_dir():
        at.text_input(key="translate.prefix").set_value("").run()
        at.selectbox(key="translate.model").set_value("translate-gru").run()
        assert not at.exception
        assert "saliency" in messages(at)
        assert "not attention" in heatmap(at)["layout"]["title"]["text"]


def test_translate_page_decoding_options_forbid_unk_and_go_in_the_url():
    text = "Leute bewundern ein Kunstwerk."      # greedy: "People are <unk> a piece of art."; no <unk>: "admiring"
    at = open_page("pages/translate.py", {"text": text, "model": "translate-bahdanau"})
    assert not at.exception
    assert "<unk>" in at.code[0].value
    at.toggle(key="translate.no_unk").set_value(True).run()
    assert not at.exception
    assert at.code[0].value and "<unk>" not in at.code[0].value
    assert at.query_params["no_unk"] in (["1"], "1")
    assert any(m.label == "decoding" and m.value == "greedy, no <unk>" for m in at.metric)
    # a Test set link's decoding opens as it was made: beam, length exponent, <unk> forbidden
    at = open_page("pages/translate.py", {"text": text, "model": "translate-bahdanau", "beam": "3", "alpha": "0.8",
                                          "no_unk": "1"})
    assert not at.exception
    assert at.slider(key="translate.beam").value == 3 and at.number_input(key="translate.alpha").value == 0.8
    assert any(m.label == "decoding" and m.value == "beam 3, α 0.8, no <unk>" for m in at.metric)
    assert "<unk>" not in at.code[0].value


def test_a_model_reading_pieces_shows_them_or_whole_words(tmp_path, monkeypatch):
    save_tiny_piece_reader(tmp_path / "translate-bahdanau")
    monkeypatch.setenv("ATTENTION_LAB_CHECKPOINTS", str(tmp_path))
    at = open_page("pages/translate.py", {"text": "Ein Mann fährt mit dem Kletterwand.", "model": "translate-bahdanau"})
    assert not at.exception
    fig = heatmap(at)
    assert fig["layout"]["xaxis"]["ticktext"][5:7] == ["kletter@@", "wand"]
    pieces = np.array(fig["data"][0]["z"])
    assert pieces.shape[1] == 8 and np.allclose(pieces.sum(1), 1, atol=1e-4)
    at.radio(key="translate.source_axis").set_value("whole words (their pieces' weights summed)").run()
    assert not at.exception
    fig = heatmap(at)
    assert fig["layout"]["xaxis"]["ticktext"][5] == "kletterwand"
    words = np.array(fig["data"][0]["z"])
    assert words.shape[1] == 7 and np.allclose(words.sum(1), 1, atol=1e-4)
    assert np.allclose(words[:, 5], pieces[:, 5] + pieces[:, 6], atol=1e-3)     # the pieces' weights, summed
    assert np.allclose(np.delete(words, 5, 1), np.delete(pieces, [5, 6], 1), atol=1e-3)


def test_the_chart_preloader_leaves_only_the_real_charts():
    # the first run sends a one-cell chart before the heavy imports; it must be gone when
    # the page is drawn, and later runs must not send it again
    at = open_page("pages/reverse.py", {"text": "abc"})
    assert at.session_state["_charts_preloaded"] is True
    figs = plotly_figures(at)
    assert len(figs) >= 1 and all(f["layout"].get("height") != 10 for f in figs)
    at.run()
    assert len(plotly_figures(at)) == len(figs)
