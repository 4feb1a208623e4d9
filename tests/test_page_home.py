"""Home page: the models table from the cards, and the links to every page."""
from __future__ import annotations

import json
import math

import pytest

from app_support.cards import trained_on
from app_support.constants import PAGES
from app_support.home_view import MODEL_COLUMNS, models_frame, task_table
from seq2seq.subword import source_units

from apptest_util import APP, build_lab_checkpoints, elements

TRANSLATE_CARD = {
    "name": "translate-bahdanau", "task": "translate", "arch": "bahdanau", "params": 20_518_917,
    "tokenizers": {"src": "spacy:de", "tgt": "spacy:en"}, "train_config": {"src_bpe": 8000},
    "metrics": {"test2016": {"bleu": 31.2, "sacrebleu": 29.7, "ppl": 19.8, "decoding": {"beam": 5}}},
    "provenance": {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "wall_seconds": 900.0},
    "files": {"model.safetensors": {"sha256": "0", "bytes": 3 * 2**20}, "vocab.json": {"sha256": "0", "bytes": 2**19}},
}
REVERSE_CARD = {
    "name": "reverse-gru", "task": "reverse", "arch": "gru", "params": 365_135,
    "metrics": {"exact_match_1_10": 1.0, "exact_match_1_20": 0.975, "exact_match_21_30": 0.3635},
    "provenance": {"device": "cpu", "device_name": "x86_64", "cpu_threads": 2, "wall_seconds": 195.9},
    "files": {"model.safetensors": {"sha256": "0", "bytes": 2**20}, "vocab.json": {"sha256": "0", "bytes": 0}},
}


def _entries():
    return [{"name": "translate-bahdanau", "path": "/x/translate-bahdanau", "card": TRANSLATE_CARD, "error": None},
            {"name": "translate-broken", "path": "/x/translate-broken", "card": None, "error": "not valid JSON"},
            {"name": "reverse-gru", "path": "/x/reverse-gru", "card": REVERSE_CARD, "error": None}]


def test_models_frame_has_one_row_per_readable_card_with_its_numbers():
    df = models_frame(_entries())
    assert list(df.columns) == list(MODEL_COLUMNS)
    assert list(df["model"]) == ["translate-bahdanau", "reverse-gru"]         # the unreadable one is left out
    tr, rv = df.iloc[0], df.iloc[1]
    assert tr["task"] == "German → English" and tr["architecture"] == "GRU + Bahdanau attention"
    assert tr["params"] == 20_518_917 and tr["size on disk (MiB)"] == pytest.approx(3.5)
    assert tr["source read as"] == "byte-pair pieces (8000 merges)"
    assert source_units("spacy:de", {"src_bpe": 0}) == "words" and source_units("chars", None) == "characters"
    assert (tr["BLEU (tutorial form)"], tr["sacreBLEU"], tr["test PPL"]) == (31.2, 29.7, 19.8)
    assert tr["trained on"] == "GPU: NVIDIA H100 80GB HBM3" and tr["training time (min)"] == pytest.approx(15.0)
    assert math.isnan(tr["exact match 1–20 (%)"]) and math.isnan(tr["exact match 21–30 (%)"])
    assert rv["exact match 1–20 (%)"] == pytest.approx(97.5) and rv["exact match 21–30 (%)"] == pytest.approx(36.35)
    assert math.isnan(rv["BLEU (tutorial form)"]) and math.isnan(rv["sacreBLEU"])
    assert rv["trained on"] == "CPU: x86_64 (2 threads)" and rv["size on disk (MiB)"] == pytest.approx(1.0)
    assert df["params"].dtype.kind == "i" and df["BLEU (tutorial form)"].dtype.kind == "f"   # sortable numbers


def test_training_time_counts_every_run_behind_the_weights():
    """A continuation or a soup records the whole cost (wall_seconds_total), not its last run's."""
    card = {**TRANSLATE_CARD, "provenance": {**TRANSLATE_CARD["provenance"], "wall_seconds": 600.0,
                                             "wall_seconds_total": 6000.0}}
    df = models_frame([{"name": "translate-bahdanau", "path": "/x", "card": card, "error": None}])
    assert df.iloc[0]["training time (min)"] == pytest.approx(100.0)


def test_models_frame_of_nothing_is_an_empty_table_with_the_columns():
    df = models_frame([])
    assert df.empty and list(df.columns) == list(MODEL_COLUMNS)
    assert task_table(df, "translate").empty


def test_task_table_keeps_only_that_tasks_metrics():
    frame = models_frame(_entries())
    reverse = task_table(frame, "reverse")
    assert list(reverse["model"]) == ["reverse-gru"]
    assert list(reverse.columns) == ["model", "architecture", "params", "size on disk (MiB)", "exact match 1–20 (%)",
                                     "exact match 21–30 (%)", "trained on", "training time (min)"]
    assert "sacreBLEU" in task_table(frame, "translate").columns


def test_trained_on_names_the_gpu_or_the_cpu():
    assert trained_on({"device": "cuda", "device_name": "NVIDIA H200"}) == "GPU: NVIDIA H200"
    assert trained_on({"device": "cpu", "device_name": "x86_64"}) == "CPU: x86_64"


def test_home_page_lists_the_models_links_every_page_and_names_the_broken_card(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("ATTENTION_LAB_CHECKPOINTS", str(build_lab_checkpoints(tmp_path / "checkpoints")))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    links = [(e.proto.page, e.proto.label, e.proto.icon) for e in elements(at.main, "page_link")]
    assert [label for _, label, _ in links] == [p.title for p in PAGES[1:]]     # every page but Home itself
    # each link resolved to a page registered in app.py (by its URL path), with its Material icon
    assert [page for page, _, _ in links] == [p.url_path for p in PAGES[1:]]
    assert [page for page, _, _ in links][:5] == ["translate", "reverse", "compare", "teacher_forcing", "beam_search"]
    assert all(icon.startswith(":material/") for _, _, icon in links)
    translate, reverse = (t.value.set_index("model") for t in at.dataframe)
    assert sorted(translate.index) == ["translate-bahdanau", "translate-lstm"]
    assert sorted(reverse.index) == ["reverse-bahdanau", "reverse-gru", "reverse-luong"]
    assert translate.loc["translate-bahdanau", "BLEU (tutorial form)"] == pytest.approx(30.1)
    assert translate.loc["translate-bahdanau", "trained on"] == "GPU: NVIDIA H100 80GB HBM3"
    assert reverse.loc["reverse-bahdanau", "exact match 1–20 (%)"] == pytest.approx(100.0)
    assert "BLEU (tutorial form)" not in reverse.columns and "exact match 1–20 (%)" not in translate.columns
    # BLEU shown to the two decimals the cards record (39.95 must not read as 40.0)
    shown = json.loads(at.dataframe[0].proto.columns)
    assert shown["BLEU (tutorial form)"]["type_config"]["format"] == shown["sacreBLEU"]["type_config"]["format"] \
        == "%.2f"
    # what the exact match measures comes from the cards (the real model: 200 per length, trained on 1-40)
    captions = " ".join(c.value for c in at.caption)
    assert ("Exact match on 200 fresh sequences per length for reverse-bahdanau, reverse-luong (trained on lengths "
            "1–40); fresh sequences per length (how many is not recorded) for reverse-gru (training lengths not "
            "recorded).") in captions
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "translate-luong" in errors[0] and "not valid JSON" in errors[0]


def test_home_page_with_no_checkpoints_says_so(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("ATTENTION_LAB_CHECKPOINTS", str(tmp_path / "empty"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert any("No readable checkpoints" in e.value for e in at.info)
    assert len(elements(at.main, "page_link")) == len(PAGES) - 1
