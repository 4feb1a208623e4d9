"""Beam search page: the final-hypotheses table, the tree figure on a real model, the knobs
(alpha, beta), the n-best heatmaps, the diff against greedy, and the page."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from app_support.beam_view import differing_positions, final_hypotheses, score_formula
from seq2seq import figures
from seq2seq.decoding import slot_history, token_diff, winner_slot

from apptest_util import APP, HTML_INPUT, REAL_REVERSE, no_user_markup, open_page, plotly_specs, texts, url

# step 0: a | b; step 1: slot 0 = b+<eos>, slot 1 = a+a; step 2: slot 0 = frozen copy, slot 1 = a+a+<eos>
HAND_TREE = [{"tokens": [4, 5], "parents": [0, 0], "scores": [-0.1, -0.5], "finished": [False, False]},
             {"tokens": [3, 4], "parents": [1, 0], "scores": [-0.3, -0.4], "finished": [False, False]},
             {"tokens": [0, 3], "parents": [0, 1], "scores": [-0.3, -0.35], "finished": [True, False]}]


def test_the_tree_is_read_back_by_decoding_and_the_table_only_formats():
    assert slot_history(HAND_TREE, 0) == [5, 3] and slot_history(HAND_TREE, 1) == [4, 4, 3]
    assert winner_slot(HAND_TREE) == 0
    n_best = [SimpleNamespace(rank=1, text="b", output_tokens=["b"], finished=True, score=-0.3, log_prob=-0.6),
              SimpleNamespace(rank=2, text="aa", output_tokens=["a", "a"], finished=False, score=-0.35,
                              log_prob=-1.05)]
    df = final_hypotheses(n_best)
    assert list(df.columns) == ["rank", "winner", "output", "tokens", "ended", "score", "log P"]
    assert df["output"].tolist() == ["b", "aa"] and df["rank"].tolist() == [1, 2]
    assert df["winner"].tolist() == [True, False] and df["ended"].tolist() == [True, False]
    assert df["tokens"].tolist() == [1, 2] and df["log P"].tolist() == [-0.6, -1.05]
    assert final_hypotheses(None).empty
    assert "β" not in score_formula(1.0, 0.0) and "β = 0.5" in score_formula(0.7, 0.5)
    assert differing_positions(token_diff(list("abc"), list("axcd"))) == 2


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
    df = final_hypotheses(result.n_best)
    assert len(df) == width and df.iloc[0]["winner"] and df.iloc[0]["output"] == result.text == "sledom qes2qes"
    assert df.iloc[0]["log P"] == result.log_prob
    assert df["score"].is_monotonic_decreasing


# ------------------------------------------------------------------ the page
@pytest.fixture(scope="module")
def beam_app(lab_root):
    at = open_page("pages/beam_search.py", timeout=60)
    assert not at.exception
    return at


def _choose(at, model: str, text: str | None = None, width: int | None = None, alpha: float | None = None,
            coverage: float | None = None):
    at.selectbox(key="beam.model").set_value(model).run()
    task = model.split("-")[0]
    if text is not None:
        at.text_area(key=f"beam.text.{task}").input(text).run()
    if width is not None:
        at.slider(key="beam.width").set_value(width).run()
    if alpha is not None:
        at.slider(key="beam.alpha").set_value(alpha).run()
    if coverage is not None:
        at.slider(key="beam.coverage").set_value(coverage).run()
    assert not at.exception, at.exception
    return at


def _tree(at) -> dict:
    (spec,) = [s for s in plotly_specs(at) if s["layout"]["title"]["text"].startswith("Beam search, width")]
    return spec


def _heatmaps(at) -> list[dict]:
    return [s for s in plotly_specs(at) if s["layout"]["title"]["text"].startswith("Hypothesis ")]


def _diff(at) -> list[dict]:
    return [s for s in plotly_specs(at) if s["data"] and s["layout"]["yaxis"].get("ticktext", [""])[0] == "greedy"]


def test_page_draws_the_tree_the_n_best_heatmaps_and_the_final_hypotheses(beam_app, reverser):
    assert beam_app.selectbox(key="beam.model").value == "translate-bahdanau"   # the preferred default
    # what the penalty did on a corpus, from the card, under the slider
    assert ("Measured on the 1,014 validation sentences: beam 5: BLEU 31.00 without the penalty, 29.50 with "
            "β = 0.1.") in texts(beam_app, "caption")
    at = _choose(beam_app, "reverse-bahdanau", "hello world", 4, alpha=1.0, coverage=0.0)
    assert url(at) == {"text": "hello world", "model": "reverse-bahdanau", "width": "4"}
    assert texts(at, "code") == ["dlrow olleh"]
    spec = _tree(at)
    assert spec["layout"]["yaxis"]["tickvals"] == [0, 1, 2, 3]
    table = at.dataframe[0].value
    expected = reverser.translate("hello world", beam=4, return_tree=True)
    assert table["output"].tolist() == [h.text for h in expected.n_best]
    assert table["score"].tolist() == pytest.approx([h.score for h in expected.n_best], abs=1e-9)
    assert table.iloc[0]["output"] == "dlrow olleh" and bool(table.iloc[0]["winner"]) and table["winner"].sum() == 1
    # one attention heatmap per final hypothesis, its rows the hypothesis' tokens
    maps = _heatmaps(at)
    assert len(maps) == 4 == len(at.tabs)
    for spec_h, h in zip(maps, expected.n_best):
        assert spec_h["layout"]["yaxis"]["ticktext"] == [figures.esc(t) for t in h.output_tokens]
        np.testing.assert_allclose(np.array(spec_h["data"][0]["z"]), h.attention, atol=1e-6)
    assert spec["layout"]["font"]["size"] == 14
    at.toggle(key="projector").set_value(True).run()                  # projector mode: larger figure fonts
    assert _tree(at)["layout"]["font"]["size"] == 20
    at.toggle(key="projector").set_value(False).run()


def test_alpha_and_coverage_change_the_scores_as_the_formula_says(beam_app, reverser):
    text = "attention is all you need"
    at = _choose(beam_app, "reverse-bahdanau", text, 3, alpha=0.0, coverage=0.0)
    table = at.dataframe[0].value
    assert table["score"].tolist() == pytest.approx(table["log P"].tolist(), abs=1e-6)   # alpha 0: log P itself
    assert url(at)["alpha"] == "0.0"
    at = _choose(beam_app, "reverse-bahdanau", text, 3, alpha=0.5, coverage=0.5)
    assert url(at)["alpha"] == "0.5" and url(at)["coverage"] == "0.5"
    expected = reverser.translate(text, beam=3, alpha=0.5, coverage=0.5, return_tree=True)
    table = at.dataframe[0].value
    assert table["output"].tolist() == [h.text for h in expected.n_best]
    for (_, row), h in zip(table.iterrows(), expected.n_best):
        n = len(h.output_tokens) + h.finished                                    # steps, <eos> counted
        assert row["score"] == pytest.approx(h.score, abs=1e-9)
        assert row["score"] <= row["log P"] / n ** 0.5 + 1e-9                    # the coverage penalty is <= 0
    assert any("β = 0.5" in c for c in texts(at, "caption"))
    at = _choose(beam_app, "reverse-bahdanau", text, 3, alpha=1.0, coverage=0.0)
    assert "alpha" not in url(at) and "coverage" not in url(at)


def test_words_that_differ_from_greedy_are_highlighted(beam_app, reverser):
    # alpha 0 at width 10 favours short hypotheses: the output differs from greedy's here
    text = "attention is all you need"
    greedy = reverser.translate(text)
    beam = reverser.translate(text, beam=10, alpha=0.0)
    at = _choose(beam_app, "reverse-bahdanau", text, 10, alpha=0.0, coverage=0.0)
    (spec,) = _diff(at)
    cells = spec["data"][0]
    expected = token_diff(greedy.output_tokens, beam.output_tokens)
    changed = differing_positions(expected)
    assert sum(1 for z in cells["z"][0] if z != 0) == changed
    assert [t for t in cells["text"][0] if t] == [figures.esc(t) for t in greedy.output_tokens]
    assert [t for t in cells["text"][1] if t] == [figures.esc(t) for t in beam.output_tokens]
    if changed:
        assert any(f"{changed} position(s) differ" in c for c in texts(at, "caption"))
    at = _choose(beam_app, "reverse-bahdanau", "hello world", 3, alpha=1.0)
    (spec,) = _diff(at)
    assert set(spec["data"][0]["z"][0]) == {0} and "the same tokens" in spec["layout"]["title"]["text"]


def test_page_width_one_shows_the_greedy_output(beam_app, reverser):
    at = _choose(beam_app, "reverse-bahdanau", "attention is all you need", 1, alpha=1.0, coverage=0.0)
    assert texts(at, "code") == [reverser.translate("attention is all you need", beam=1).text]
    assert _tree(at)["layout"]["yaxis"]["tickvals"] == [0]
    assert len(at.dataframe[0].value) == 1 and not _diff(at) and len(_heatmaps(at)) == 1


def test_page_bad_inputs_and_broken_models(beam_app):
    at = _choose(beam_app, "reverse-bahdanau", "  \n ", 3)
    assert any("Type something" in m for m in texts(at, "info")) and not plotly_specs(at)

    at = _choose(beam_app, "reverse-bahdanau", HTML_INPUT + " 😀 مرحبا 你好")
    assert any("unknown to this model" in m for m in texts(at, "info"))
    no_user_markup(at, [json.dumps(s) for s in plotly_specs(at)])
    assert len(_heatmaps(at)) == 3

    at = _choose(beam_app, "reverse-bahdanau", "x" * 100)          # the model reads 60 characters
    assert any("truncated" in w for w in texts(at, "warning"))

    at = _choose(beam_app, "translate-bahdanau", "Ein <b>Mann</b> **fährt** 你好")
    assert _tree(at)
    no_user_markup(at, [json.dumps(s) for s in plotly_specs(at)])

    at = _choose(beam_app, "reverse-luong")                        # weights corrupted on disk
    assert any("sha256" in e for e in texts(at, "error")) and not plotly_specs(at)
    at = _choose(beam_app, "translate-luong")                      # card.json is not JSON
    assert any("cannot be used" in e for e in texts(at, "error"))
    at = _choose(beam_app, "reverse-gru", "abc", 2)                 # the others still work; no attention:
    assert _tree(at) and len(at.dataframe[0].value) == 2
    assert at.slider(key="beam.coverage").disabled and not _heatmaps(at)
    assert any("no attention" in m for m in texts(at, "info"))


def test_url_opens_on_its_model_text_width_and_knobs(lab_root):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update({"model": "reverse-bahdanau", "text": "abc 123", "width": "2", "alpha": "0.5",
                            "coverage": "0.2"})
    at.run()
    at.switch_page("pages/beam_search.py").run()
    assert at.selectbox(key="beam.model").value == "reverse-bahdanau"
    assert at.slider(key="beam.width").value == 2
    assert at.slider(key="beam.alpha").value == 0.5 and at.slider(key="beam.coverage").value == 0.2
    assert texts(at, "code") == ["321 cba"]
    np.testing.assert_equal(_tree(at)["layout"]["yaxis"]["tickvals"], [0, 1])


def test_a_bad_url_falls_back_to_the_defaults(lab_root):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update({"model": "../../etc", "width": "99", "alpha": "7", "coverage": "x"})
    at.run()
    at.switch_page("pages/beam_search.py").run()
    assert not at.exception
    assert at.selectbox(key="beam.model").value == "translate-bahdanau"
    assert at.slider(key="beam.width").value == 3
    assert at.slider(key="beam.alpha").value == 1.0 and at.slider(key="beam.coverage").value == 0.0
    assert url(at)["width"] == "3" and "alpha" not in url(at)
