"""Compare page: pure tables, and the page through AppTest on a checkpoint folder made for the
test (independent of what is being trained into checkpoints/).

`build_lab_checkpoints` and the element helpers here are shared by test_page_home.py and
test_page_beam.py."""
from __future__ import annotations

import base64
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from seq2seq.checkpoint import save_checkpoint
from seq2seq.report import TUTORIAL_REFERENCE
from seq2seq.text import REVERSE_ALPHABET
from seq2seq.vocab import SPECIALS, Vocab

from apptest_util import open_page
from conftest import tiny_model

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
REAL_REVERSE = ROOT / "checkpoints" / "reverse-bahdanau"
HTML_INPUT = "<b>x</b> **bold** [link](http://x) ![img](http://x/a.png)"

GERMAN = ["ein", "mann", "fährt", "mit", "dem", "fahrrad", "die", "straße", "entlang", ".", "zwei", "hunde",
          "spielen", "im", "schnee", "x"]
ENGLISH = ["a", "man", "rides", "bike", "down", "the", "street", ".", "two", "dogs", "play", "in", "snow"]


# ------------------------------------------------------------------ checkpoints for the tests
def _card(name: str, task: str, tokenizer: str, metrics: dict, device: str = "cpu",
          device_name: str = "x86_64", wall_seconds: float = 120.0) -> dict:
    return {
        "name": name, "task": task, "description": "made by the page tests",
        "teacher_forcing": {"kind": "constant", "ratio": 1.0}, "metrics": metrics, "history": [],
        "tokenizers": {"src": tokenizer, "tgt": tokenizer},
        "provenance": {"device": device, "device_name": device_name, "torch_version": torch.__version__,
                       "git_commit": "test", "trained_at": "2026-01-01T00:00:00+00:00",
                       "wall_seconds": wall_seconds, "seed": 0, "data": "none"},
    }


def _tiny(out_dir: Path, arch: str, task: str, seed: int, metrics: dict, **card_kw) -> None:
    """A random tiny model: fast to load and decode; it writes up to 8 tokens."""
    if task == "translate":
        src, tgt, tokenizer = Vocab([*SPECIALS, *GERMAN]), Vocab([*SPECIALS, *ENGLISH]), "spacy:de"
    else:
        src = tgt = Vocab.from_alphabet(REVERSE_ALPHABET)
        tokenizer = "chars"
    model = tiny_model(arch, seed=seed, src_vocab=len(src), tgt_vocab=len(tgt), max_src_len=12, max_out_len=8)
    card = _card(out_dir.name, task, tokenizer, metrics, **card_kw)
    if task == "translate":   # the tokenizers differ by language; the card names both
        card["tokenizers"] = {"src": "spacy:de", "tgt": "spacy:en"}
    save_checkpoint(out_dir, model, src, tgt, card)


def build_lab_checkpoints(root: Path) -> Path:
    """A checkpoint folder with every case the pages must handle:

    reverse-bahdanau  the real trained model (a copy): reverses text correctly
    reverse-gru       tiny, no attention (saliency)
    reverse-luong     a copy of reverse-bahdanau with corrupted weights (fails on load)
    translate-bahdanau, translate-lstm   tiny, random weights, spaCy tokenizers
    translate-luong   card.json is not JSON (unreadable card)"""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REAL_REVERSE, root / "reverse-bahdanau")
    _tiny(root / "reverse-gru", "gru", "reverse", 1,
          {"exact_match_1_10": 0.5, "exact_match_1_20": 0.25, "exact_match_21_30": 0.0})
    broken = root / "reverse-luong"
    shutil.copytree(REAL_REVERSE, broken)
    card = json.loads((broken / "card.json").read_text())
    card["name"] = "reverse-luong"
    (broken / "card.json").write_text(json.dumps(card))
    weights = bytearray((broken / "model.safetensors").read_bytes())
    weights[-100:] = bytes(100)                       # same size, different bytes: sha256 mismatch
    (broken / "model.safetensors").write_bytes(bytes(weights))
    _tiny(root / "translate-bahdanau", "bahdanau", "translate", 2,
          {"test2016": {"bleu": 30.1, "sacrebleu": 28.4, "ppl": 20.5, "decoding": {"beam": 5}}},
          device="cuda", device_name="NVIDIA H100 80GB HBM3", wall_seconds=600.0)
    _tiny(root / "translate-lstm", "lstm", "translate", 3,
          {"test2016": {"bleu": 14.0, "sacrebleu": 13.0, "ppl": 40.0, "decoding": {"beam": 1}}})
    (root / "translate-luong").mkdir()
    (root / "translate-luong" / "card.json").write_text("{not json")
    return root


# ------------------------------------------------------------------ AppTest helpers
def walk(node):
    """Every element under `node` (columns and containers included), depth first."""
    children = getattr(node, "children", None)
    if not isinstance(children, dict):
        return
    for child in children.values():
        yield child
        yield from walk(child)


def elements(at, kind: str) -> list:
    return [e for e in walk(at.main) if e.type == kind]


def plotly_specs(at) -> list[dict]:
    return [json.loads(e.proto.spec) for e in elements(at, "plotly_chart")]


def plotly_array(value) -> np.ndarray:
    """A Plotly JSON array: a list, or typed binary {dtype, bdata, shape} (Plotly ≥ 6)."""
    if isinstance(value, dict) and "bdata" in value:
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = value.get("shape")
        if shape:
            arr = arr.reshape([int(n) for n in str(shape).split(",")])
        return arr
    return np.array(value, dtype=float)


def texts(at, kind: str) -> list[str]:
    return [e.value for e in elements(at, kind)]


def url(at) -> dict:
    """The page's query parameters as a plain dict."""
    return {k: at.query_params[k] for k in at.query_params}


def no_user_markup(at, spec_texts: list[str]) -> None:
    """User text never reaches a Markdown element or raw into a Plotly figure."""
    for md in texts(at, "markdown") + texts(at, "caption") + texts(at, "subheader"):
        assert "**bold**" not in md and "[link]" not in md and "<b>x</b>" not in md
    for spec in spec_texts:
        assert "<b>x</b>" not in spec and "<b>x" not in spec


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
    assert [e.value for e in elements(at, "code")][0] == "321 cba"


def test_url_opens_on_its_task_and_text(lab_root):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["task"] = "reverse"
    at.query_params["text"] = "xyz"
    at.run()
    at.switch_page("pages/compare.py").run()
    assert at.radio(key="compare.task").value == "reverse"
    assert at.text_area(key="compare.text.reverse").value == "xyz"
    assert "zyx" in [e.value for e in elements(at, "code")]


def test_a_bad_url_falls_back_to_the_defaults(lab_root):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["task"] = "<script>"
    at.run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception
    assert at.radio(key="compare.task").value == "translate"
    assert url(at)["task"] == "translate"
