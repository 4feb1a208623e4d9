"""Compare page: pure tables, and the page through AppTest on a checkpoint folder made for the
test (independent of what is being trained into checkpoints/: `build_lab_checkpoints` in
apptest_util.py)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from seq2seq.report import TUTORIAL_REFERENCE

from apptest_util import (APP, HTML_INPUT, elements, no_user_markup, open_page, plotly_array, plotly_specs, texts,
                          url, walk)


# ------------------------------------------------------------------ pure functions
def _entry(name, card):
    return {"name": name, "path": f"/nowhere/{name}", "card": card, "error": None}


def test_metrics_frame_puts_ours_beside_the_tutorial_references():
    from app_support.compare_view import REFERENCE_SOURCE, metrics_frame

    card = {"name": "translate-bahdanau", "task": "translate", "arch": "bahdanau", "params": 20_500_000,
            "metrics": {"test2016": {"bleu": 30.1, "sacrebleu": 28.4, "ppl": 20.5, "decoding": {"beam": 5}}},
            "provenance": {"device": "cuda", "device_name": "NVIDIA H100"}}
    broken = {"name": "translate-x", "path": "/x", "card": None, "error": "corrupt"}
    df = metrics_frame([_entry("translate-bahdanau", card), broken], "translate")
    assert list(df["model"]) == ["translate-bahdanau"] + [r["name"] for r in TUTORIAL_REFERENCE]
    assert list(df["source"]) == ["ours"] + [REFERENCE_SOURCE] * len(TUTORIAL_REFERENCE)
    ours = df.iloc[0]
    assert ours["params (M)"] == pytest.approx(20.5) and ours["test PPL"] == 20.5
    assert ours["BLEU (tutorial form)"] == 30.1 and ours["sacreBLEU"] == 28.4
    assert ours["decoding"] == "beam 5" and ours["trained on"] == "GPU: NVIDIA H100"
    ref = df[df["model"] == TUTORIAL_REFERENCE[2]["name"]].iloc[0]
    assert ref["BLEU (tutorial form)"] == 28.3 and ref["test PPL"] == 25.6 and ref["params (M)"] == pytest.approx(20.5)
    assert math.isnan(ref["sacreBLEU"])


def test_metrics_frame_for_reversal_has_exact_match_and_no_references():
    from app_support.compare_view import metrics_frame

    card = {"name": "reverse-gru", "task": "reverse", "arch": "gru", "params": 100_000,
            "metrics": {"exact_match_1_10": 1.0, "exact_match_1_20": 0.9, "exact_match_21_30": 0.1},
            "provenance": {"device": "cpu", "device_name": "x86_64", "cpu_threads": 2}}
    df = metrics_frame([_entry("reverse-gru", card)], "reverse")
    assert list(df.columns) == ["model", "source", "params (M)", "exact match 1–10 (%)", "exact match 1–20 (%)",
                                "exact match 21–30 (%)", "architecture", "trained on"]
    assert df.iloc[0][["exact match 1–10 (%)", "exact match 1–20 (%)", "exact match 21–30 (%)"]].tolist() == \
        pytest.approx([100.0, 90.0, 10.0])
    assert df.iloc[0]["trained on"] == "CPU: x86_64 (2 threads)"
    assert len(df) == 1


def test_grid_rows_are_two_wide():
    from app_support.compare_view import grid_rows, heatmap_title

    assert grid_rows([1, 2, 3]) == [[1, 2], [3]]
    assert grid_rows([]) == []
    assert "not attention" in heatmap_title("m", "saliency") and heatmap_title("m", "attention") == "m: attention"


# ------------------------------------------------------------------ the page
@pytest.fixture(scope="module")
def compare_app(lab_root):
    at = open_page("pages/compare.py", timeout=60)
    assert not at.exception
    return at


def _set_task_and_text(at, task: str, text: str):
    at.radio(key="compare.task").set_value(task).run()
    at.text_area(key=f"compare.text.{task}").input(text).run()
    assert not at.exception, at.exception
    return at


def _cells(at) -> dict[str, object]:
    """Model cell containers by the model name in their subheader."""
    cells = {}
    for node in walk(at.main):
        heads = [c for c in walk(node) if c.type == "subheader"] if node.type == "flex_container" else []
        if len(heads) == 1 and node.type == "flex_container":
            cells[heads[0].value] = node
    return cells


def test_translate_grid_has_one_heatmap_per_model_with_the_right_shape(compare_app):
    at = _set_task_and_text(compare_app, "translate", "Ein Mann fährt mit dem Fahrrad.")
    assert url(at) == {"task": "translate", "text": "Ein Mann fährt mit dem Fahrrad."}
    specs = plotly_specs(at)
    titles = [s["layout"]["title"]["text"] for s in specs]
    assert titles == ["translate-bahdanau: attention", "translate-lstm: saliency, not attention"]
    for spec in specs:
        hm = spec["data"][0]
        z = plotly_array(hm["z"])
        source = spec["layout"]["xaxis"]["ticktext"]
        assert source == ["ein", "mann", "fährt", "mit", "dem", "fahrrad", "."]
        assert z.shape == (len(spec["layout"]["yaxis"]["ticktext"]), len(source)) and z.shape[0] >= 1
        assert np.allclose(z.sum(axis=1), 1.0, atol=1e-4)        # attention and saliency rows are distributions
    cells = _cells(at)
    # the unreadable card is named in its own cell, and the saliency model says it is not attention
    assert any("cannot be used" in e.value for e in walk(cells["translate-luong"]) if e.type == "error")
    assert any("not attention" in e.value for e in walk(cells["translate-lstm"]) if e.type == "info")
    # ours next to the tutorial's numbers
    metrics = at.dataframe[0].value
    assert list(metrics["model"][:2]) == ["translate-bahdanau", "translate-lstm"]
    assert (metrics["source"] != "ours").sum() == len(TUTORIAL_REFERENCE)
    formats = {c: v.get("type_config", {}).get("format")
               for c, v in json.loads(at.dataframe[0].proto.columns).items()}
    assert {formats[c] for c in formats if "BLEU" in c} == {"%.2f"}        # as the cards record BLEU


def test_reverse_grid_runs_the_real_model_and_shows_the_corrupt_one(compare_app):
    at = _set_task_and_text(compare_app, "reverse", "hello world")
    cells = _cells(at)
    assert set(cells) == {"reverse-bahdanau", "reverse-gru", "reverse-luong"}
    outputs = [e.value for e in walk(cells["reverse-bahdanau"]) if e.type == "code"]
    assert outputs == ["dlrow olleh"]
    corrupt = [e.value for e in walk(cells["reverse-luong"]) if e.type == "error"]
    assert corrupt and "sha256" in corrupt[0]
    spec = plotly_specs(at)[0]
    z = plotly_array(spec["data"][0]["z"])
    assert z.shape == (11, 11)
    assert np.allclose(z.sum(axis=1), 1.0, atol=1e-4)
    assert spec["data"][1]["name"] == "ideal (mirrored position)"     # the anti-diagonal is drawn for reversal
    assert url(at) == {"task": "reverse", "text": "hello world"}


def test_bad_inputs_give_messages_not_tracebacks(compare_app):
    at = _set_task_and_text(compare_app, "translate", "   ")
    assert any("Type something" in m for m in texts(at, "info"))
    assert not plotly_specs(at)

    at = _set_task_and_text(compare_app, "translate", "😀 مرحبا 你好 " + HTML_INPUT)
    specs = [json.dumps(s) for s in plotly_specs(at)]
    assert len(specs) == 2
    assert all("x&lt;/b" in s and "&gt;" in s for s in specs)     # spaCy splits "<b>x</b>" into < b > x</b >
    no_user_markup(at, specs)
    assert any("unknown to this model" in m for m in texts(at, "info"))
    assert any("😀" in t and "你好" in t for t in texts(at, "text"))     # unknown words listed as plain text

    at = _set_task_and_text(compare_app, "translate", " ".join(["ein mann"] * 20))   # 40 tokens, the models read 12
    assert any("truncated" in w for w in texts(at, "warning"))
    spec = plotly_specs(at)[0]
    assert len(spec["layout"]["xaxis"]["ticktext"]) == 12

    at = _set_task_and_text(compare_app, "reverse", "<b>x</b> **bold**")
    specs = [json.dumps(s) for s in plotly_specs(at)]
    no_user_markup(at, specs)
    assert not at.exception


def test_input_survives_a_page_switch(compare_app):
    at = _set_task_and_text(compare_app, "reverse", "abc 123")
    at.switch_page("pages/home.py").run()
    at.switch_page("pages/compare.py").run()
    assert at.radio(key="compare.task").value == "reverse"
    assert at.text_area(key="compare.text.reverse").value == "abc 123"
    assert [e.value for e in elements(at.main, "code")][0] == "321 cba"


def test_url_opens_on_its_task_and_text(lab_root):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["task"] = "reverse"
    at.query_params["text"] = "xyz"
    at.run()
    at.switch_page("pages/compare.py").run()
    assert at.radio(key="compare.task").value == "reverse"
    assert at.text_area(key="compare.text.reverse").value == "xyz"
    assert "zyx" in [e.value for e in elements(at.main, "code")]


def test_a_bad_url_falls_back_to_the_defaults(lab_root):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["task"] = "<script>"
    at.run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception
    assert at.radio(key="compare.task").value == "translate"
    assert url(at)["task"] == "translate"
