"""The "Attention vs attribution" tab (AppTest): correlations in [-1, 1], the plain-words
readout, an ablation diff; the attributions alone for models without attention."""
import json

import numpy as np
import pytest

from apptest_util import elements, messages, open_page, open_tab, plotly_array


def chart(at, key):
    found = [json.loads(e.proto.spec) for e in elements(at.main, "plotly_chart") if e.proto.id.endswith("-" + key)]
    assert len(found) == 1, key
    return found[0]


def spearman_table(at):
    return next(d.value for d in at.dataframe if any(c.startswith("Spearman") for c in d.value.columns))


@pytest.mark.parametrize("model,text", [("reverse-bahdanau", "abc de"), ("translate-bahdanau", "Zwei Hunde spielen")])
def test_attention_models_compare_and_ablate(lab_root, model, text):
    from seq2seq.attribution import grad_input
    from seq2seq.translate import Translator

    task = model.split("-")[0]
    at = open_page(f"pages/{task}.py", {"text": text, "model": model, "tab": "Attention vs attribution"})
    assert not at.exception
    ref = Translator.load(lab_root / model).translate(text)
    if not ref.output_tokens:
        pytest.skip("the tiny model wrote nothing on this input")
    fig = chart(at, f"{task}.attr.fig")
    assert [d["type"] for d in fig["data"]] == ["heatmap"] * 3          # attention, grad x input, occlusion
    gi = grad_input(Translator.load(lab_root / model).model, ref.source.ids, ref.step_tokens[: len(ref.output_tokens)])
    shown = plotly_array(fig["data"][1]["z"]).reshape(gi.shape)
    expect = np.abs(gi) / np.maximum(np.abs(gi).max(1, keepdims=True), 1e-12)
    assert np.allclose(shown, expect, atol=1e-4)
    table = spearman_table(at)
    for col in [c for c in table.columns if c.startswith("Spearman")]:
        vals = table[col].dropna().to_numpy(float)
        assert ((vals >= -1) & (vals <= 1)).all()
    assert len(table) == len(ref.output_tokens)
    words = " ".join(m.value for m in at.markdown)
    assert "Attention and gradient × input agree" in words or "cannot be compared" in words
    assert "most-attended source token is also the most important" in words or "cannot be compared" in words
    # ablation: uniform first, then the most-attended token masked; a diff each time
    for mode in ("uniform", "mask_top"):
        at.radio(key=f"{task}.attr.ablation").set_value(mode).run()
        assert not at.exception
        diff = chart(at, f"{task}.attr.diff")
        assert diff["layout"]["yaxis"]["ticktext"] == ["normal", "ablated"]
        assert "differ" in diff["layout"]["title"]["text"] or "the same tokens" in diff["layout"]["title"]["text"]
    assert any(t.value.startswith("masked: #") for t in at.text)
    # the second attribution switched to integrated gradients
    at.radio(key=f"{task}.attr.method").set_value("integrated_gradients").run()
    assert not at.exception
    assert "integrated gradients" in chart(at, f"{task}.attr.fig")["layout"]["annotations"][2]["text"]


def test_reversal_ablation_changes_the_output(lab_root):
    # the real reversal model needs its attention: uniform weights break the reversal
    at = open_page("pages/reverse.py", {"text": "hello world", "model": "reverse-bahdanau", "tab": "Attention vs attribution"})
    at.radio(key="reverse.attr.ablation").set_value("uniform").run()
    assert "differ" in chart(at, "reverse.attr.diff")["layout"]["title"]["text"]


@pytest.mark.parametrize("model,text", [("reverse-gru", "abc"), ("translate-lstm", "Zwei Hunde")])
def test_models_without_attention_show_attributions_alone(lab_root, model, text):
    task = model.split("-")[0]
    at = open_page(f"pages/{task}.py", {"text": text, "model": model, "tab": "Attention vs attribution"})
    assert not at.exception
    if "wrote nothing" in messages(at):
        return
    fig = chart(at, f"{task}.attr.fig")
    assert len(fig["data"]) == 2 and "attention" not in json.dumps(fig["layout"]["annotations"]).lower()
    assert "attributions alone" in messages(at)
    assert not [e for e in elements(at.main, "plotly_chart") if e.proto.id.endswith("attr.diff")]


def test_long_input_is_bounded(lab_root):
    from seq2seq.attribution import MAX_ATTRIBUTION_TOKENS

    at = open_page("pages/reverse.py", {"text": "ab " * 30, "model": "reverse-bahdanau", "tab": "Attention vs attribution"})
    assert not at.exception
    msgs = messages(at)
    if len("ab " * 30) > MAX_ATTRIBUTION_TOKENS and "truncated" not in msgs:
        assert "computed for the first" in msgs
    fig = chart(at, "reverse.attr.fig")
    assert len(fig["layout"]["xaxis"]["ticktext"]) <= MAX_ATTRIBUTION_TOKENS
