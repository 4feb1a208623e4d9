"""Beam search page: the final-hypotheses table, the tree figure on a real model, and the page."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from app_support.beam_view import final_hypotheses, slot_history, winner_slot
from seq2seq import figures

from apptest_util import open_page
from test_page_compare import APP, HTML_INPUT, REAL_REVERSE, no_user_markup, plotly_specs, texts, url

ITOS = ["<pad>", "<unk>", "<sos>", "<eos>", "a", "b"]
# step 0: a | b; step 1: slot 0 = b+<eos>, slot 1 = a+a; step 2: slot 0 = frozen copy, slot 1 = a+a+<eos>
HAND_TREE = [{"tokens": [4, 5], "parents": [0, 0], "scores": [-0.1, -0.5], "finished": [False, False]},
             {"tokens": [3, 4], "parents": [1, 0], "scores": [-0.3, -0.4], "finished": [False, False]},
             {"tokens": [0, 3], "parents": [0, 1], "scores": [-0.3, -0.35], "finished": [True, False]}]


def test_final_hypotheses_trace_every_slot_back_and_rank_by_score():
    assert slot_history(HAND_TREE, 0) == [5, 3] and slot_history(HAND_TREE, 1) == [4, 4, 3]
    assert winner_slot(HAND_TREE) == 0
    df = final_hypotheses(HAND_TREE, ITOS, "chars")
    assert list(df.columns) == ["rank", "winner", "output", "tokens", "ended", "score (log P / length)", "log P"]
    assert df["output"].tolist() == ["b", "aa"] and df["rank"].tolist() == [1, 2]
    assert df["winner"].tolist() == [True, False] and df["ended"].tolist() == [True, True]
    assert df["tokens"].tolist() == [1, 2]
    assert df["score (log P / length)"].tolist() == [-0.3, -0.35]
    assert df["log P"].tolist() == pytest.approx([-0.6, -1.05])      # score × steps (with <eos>)


def test_final_hypotheses_skip_empty_slots_and_keep_unfinished_ones():
    tree = [{"tokens": [4, 5, 0], "parents": [0, 0, 0], "scores": [-0.2, -0.9, -math.inf],
             "finished": [False, False, False]}]
    df = final_hypotheses(tree, ITOS, "spacy:en")
    assert df["output"].tolist() == ["A", "B"]          # truecased as the translator shows text
    assert df["ended"].tolist() == [False, False] and len(df) == 2
    assert final_hypotheses([], ITOS, "chars").empty


@pytest.fixture(scope="module")
def reverser():
    from seq2seq.translate import Translator

    return Translator.load(REAL_REVERSE)


def test_beam_width_one_is_greedy(reverser):
    for text in ["hello world", "attention is all you need", "a"]:
        greedy = reverser.translate(text, beam=1)
        tree_run = reverser.translate(text, beam=1, return_tree=True)   # goes through beam_search
        assert tree_run.output_tokens == greedy.output_tokens
        assert tree_run.log_prob == pytest.approx(greedy.log_prob, abs=1e-4)
        assert all(len(step["tokens"]) == 1 for step in tree_run.beam_tree)


def test_tree_figure_marks_the_winner_path_over_width_slots(reverser):
    width = 4
    result = reverser.translate("seq2seq models", beam=width, return_tree=True)
    itos = reverser.ckpt.tgt_vocab.itos
    spec = json.loads(figures.beam_tree_figure(result.beam_tree, itos).to_json())
    assert spec["layout"]["yaxis"]["tickvals"] == list(range(width))
    nodes = spec["data"][3]
    winner = [(x, t) for x, t, c in zip(nodes["x"], nodes["text"], nodes["marker"]["color"]) if c == "crimson"]
    # one red node per step, in order, spelling the output and its <eos>
    assert [x for x, _ in winner] == list(range(len(result.output_tokens) + 1))
    assert [t for _, t in winner] == [figures.esc(t) for t in result.output_tokens] + ["&lt;eos&gt;"]
    df = final_hypotheses(result.beam_tree, itos, reverser.tgt_tokenizer)
    assert len(df) == width and df.iloc[0]["winner"] and df.iloc[0]["output"] == result.text == "sledom qes2qes"
    assert df.iloc[0]["log P"] == pytest.approx(result.log_prob, abs=1e-4)
    assert df["score (log P / length)"].is_monotonic_decreasing


# ------------------------------------------------------------------ the page
@pytest.fixture(scope="module")
def beam_app(lab_root):
    at = open_page("pages/beam_search.py", timeout=60)
    assert not at.exception
    return at


def _choose(at, model: str, text: str | None = None, width: int | None = None):
    at.selectbox(key="beam.model").set_value(model).run()
    task = model.split("-")[0]
    if text is not None:
        at.text_area(key=f"beam.text.{task}").input(text).run()
    if width is not None:
        at.slider(key="beam.width").set_value(width).run()
    assert not at.exception, at.exception
    return at


def test_page_draws_the_tree_and_the_final_hypotheses(beam_app):
    assert beam_app.selectbox(key="beam.model").value == "translate-bahdanau"   # the preferred default
    at = _choose(beam_app, "reverse-bahdanau", "hello world", 4)
    assert url(at) == {"text": "hello world", "model": "reverse-bahdanau", "width": "4"}
    assert texts(at, "code") == ["dlrow olleh"]
    (spec,) = plotly_specs(at)
    assert spec["layout"]["yaxis"]["tickvals"] == [0, 1, 2, 3]
    table = at.dataframe[0].value
    assert len(table) == 4 and table.iloc[0]["output"] == "dlrow olleh" and bool(table.iloc[0]["winner"])
    assert table["winner"].sum() == 1
    assert spec["layout"]["font"]["size"] == 14
    at.toggle(key="projector").set_value(True).run()                  # projector mode: larger figure fonts
    assert plotly_specs(at)[0]["layout"]["font"]["size"] == 20
    at.toggle(key="projector").set_value(False).run()


def test_page_width_one_shows_the_greedy_output(beam_app, reverser):
    at = _choose(beam_app, "reverse-bahdanau", "attention is all you need", 1)
    assert texts(at, "code") == [reverser.translate("attention is all you need", beam=1).text]
    (spec,) = plotly_specs(at)
    assert spec["layout"]["yaxis"]["tickvals"] == [0]
    assert len(at.dataframe[0].value) == 1


def test_page_bad_inputs_and_broken_models(beam_app):
    at = _choose(beam_app, "reverse-bahdanau", "  \n ", 3)
    assert any("Type something" in m for m in texts(at, "info")) and not plotly_specs(at)

    at = _choose(beam_app, "reverse-bahdanau", HTML_INPUT + " 😀 مرحبا 你好")
    assert any("unknown to this model" in m for m in texts(at, "info"))
    no_user_markup(at, [json.dumps(s) for s in plotly_specs(at)])
    assert len(plotly_specs(at)) == 1

    at = _choose(beam_app, "reverse-bahdanau", "x" * 100)          # the model reads 60 characters
    assert any("truncated" in w for w in texts(at, "warning"))

    at = _choose(beam_app, "translate-bahdanau", "Ein <b>Mann</b> **fährt** 你好")
    assert len(plotly_specs(at)) == 1
    no_user_markup(at, [json.dumps(s) for s in plotly_specs(at)])

    at = _choose(beam_app, "reverse-luong")                        # weights corrupted on disk
    assert any("sha256" in e for e in texts(at, "error")) and not plotly_specs(at)
    at = _choose(beam_app, "translate-luong")                      # card.json is not JSON
    assert any("cannot be used" in e for e in texts(at, "error"))
    at = _choose(beam_app, "reverse-gru", "abc", 2)                 # the others still work
    assert len(plotly_specs(at)) == 1 and len(at.dataframe[0].value) == 2


def test_url_opens_on_its_model_text_and_width(lab_root):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update({"model": "reverse-bahdanau", "text": "abc 123", "width": "2"})
    at.run()
    at.switch_page("pages/beam_search.py").run()
    assert at.selectbox(key="beam.model").value == "reverse-bahdanau"
    assert at.slider(key="beam.width").value == 2
    assert texts(at, "code") == ["321 cba"]
    np.testing.assert_equal(plotly_specs(at)[0]["layout"]["yaxis"]["tickvals"], [0, 1])


def test_a_bad_url_falls_back_to_the_defaults(lab_root):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update({"model": "../../etc", "width": "99"})
    at.run()
    at.switch_page("pages/beam_search.py").run()
    assert not at.exception
    assert at.selectbox(key="beam.model").value == "translate-bahdanau"
    assert at.slider(key="beam.width").value == 3
    assert url(at)["width"] == "3"
