"""The "Inside one step" tab (AppTest): the recomputed weights equal the alignment row, the
top-k the step's candidates, for every architecture the lab ships."""
import json

import numpy as np
import pytest

from apptest_util import elements, messages, open_page, open_tab, plotly_array
from seq2seq.figures import esc


def chart(at, key):
    found = [json.loads(e.proto.spec) for e in elements(at.main, "plotly_chart") if e.proto.id.endswith("-" + key)]
    assert len(found) == 1, key
    return found[0]


def reference(lab_root, model, text, topk=5):
    from seq2seq.translate import Translator

    return Translator.load(lab_root / model).translate(text, topk=topk)


def step_table(at):
    return next(d.value for d in at.dataframe if "weight a_i" in d.value.columns)


def topk_of(at, task):
    fig = chart(at, f"{task}.inside.topk")
    probs = plotly_array(fig["data"][0]["x"])
    return list(zip(fig["layout"]["yaxis"]["ticktext"], probs))


@pytest.mark.parametrize("model,text", [("reverse-bahdanau", "abc de"), ("translate-bahdanau", "Zwei Hunde spielen")])
def test_weights_equal_the_alignment_row_and_topk_the_candidates(lab_root, model, text):
    task = model.split("-")[0]
    page = f"pages/{task}.py"
    ref = reference(lab_root, model, text)
    at = open_page(page, {"text": text, "model": model, "tab": "Inside one step"})
    assert not at.exception
    steps = range(1, len(ref.steps) + 1)
    for t in steps if len(ref.steps) <= 4 else (1, 2, len(ref.steps)):
        if len(ref.steps) > 1:
            at.slider(key=f"{task}.step").set_value(t).run()
        assert not at.exception
        table = step_table(at)
        assert np.allclose(table["weight a_i"].to_numpy(float), ref.step_alignment[t - 1], atol=1e-6)
        assert table["in the softmax"].all()
        assert list(table["source token"]) == ref.source.tokens
        # softmax of the energies is the weights
        e = table["energy e_i"].to_numpy(float)
        assert np.allclose(np.exp(e - e.max()) / np.exp(e - e.max()).sum(), table["weight a_i"], atol=1e-6)
        shown = topk_of(at, task)
        cands = ref.steps[t - 1]["topk"]
        assert [s[0] for s in shown] == [esc(c[0]) for c in cands]
        assert np.allclose([s[1] for s in shown], [c[1] for c in cands], atol=1e-5)
        # the energies figure: a bar per source token
        en = chart(at, f"{task}.inside.energies")
        assert np.allclose(plotly_array(en["data"][1]["y"]), ref.step_alignment[t - 1], atol=1e-6)
        # the Step by step tab opens on the same step; back here, the step is still chosen
        open_tab(at, f"{task}.tab", "Step by step")
        assert chart(at, f"{task}.steps")["layout"]["sliders"][0]["active"] == t - 1
        open_tab(at, f"{task}.tab", "Inside one step")
        assert not len(ref.steps) > 1 or at.slider(key=f"{task}.step").value == t


@pytest.mark.parametrize("model,text", [("reverse-gru", "abc"), ("translate-lstm", "Zwei Hunde")])
def test_without_attention_the_context_is_fixed(lab_root, model, text):
    task = model.split("-")[0]
    ref = reference(lab_root, model, text)
    at = open_page(f"pages/{task}.py", {"text": text, "model": model, "tab": "Inside one step"})
    assert not at.exception
    assert any("No attention in this model" in m.value for m in at.markdown)
    assert {"|context|", "|decoder input|", "|decoder state|"} <= {m.label for m in at.metric}
    ctx = [float(m.value) for m in at.metric if m.label == "|context|"]
    fig = chart(at, f"{task}.inside.context")
    assert "the same at every step" in fig["layout"]["title"]["text"]
    if len(ref.steps) > 1:   # the same context at another step
        at.slider(key=f"{task}.step").set_value(len(ref.steps)).run()
        assert [float(m.value) for m in at.metric if m.label == "|context|"] == ctx
    shown = topk_of(at, task)
    assert [s[0] for s in shown] == [esc(c[0]) for c in ref.steps[-1 if len(ref.steps) > 1 else 0]["topk"]]


def test_step_survives_a_shorter_sentence_and_bad_inputs(lab_root):
    at = open_page("pages/reverse.py", {"text": "abcdefgh", "model": "reverse-bahdanau", "tab": "Inside one step"})
    at.slider(key="reverse.step").set_value(8).run()
    at.text_area(key="reverse.text").set_value("ab").run()
    assert not at.exception
    assert at.slider(key="reverse.step").value <= 3
    for text, fragment in (("   ", "Type something"), ("x" * 300, "truncated"), ("héllo 🙂", "unknown")):
        at.text_area(key="reverse.text").set_value(text).run()
        assert not at.exception and fragment in messages(at)
    at.selectbox(key="reverse.model").set_value("reverse-luong").run()   # a corrupted model: a message
    assert not at.exception and "cannot be used" in messages(at)
