"""The Test set page through AppTest, on checkpoints and corpus files made for the test
(test_corpus.build_corpus_lab): the numbers it shows are checked against an independent
recomputation of the statistics (one sentence at a time through the Translator)."""
from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pyarrow as pa
import pytest

from seq2seq.corpus import correlation

from apptest_util import elements, messages, open_page
from apptest_util import GERMAN_TEST, build_corpus_lab, recompute


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = build_corpus_lab(tmp_path_factory.mktemp("test_set"))
    lab["expected"] = {"translate-bahdanau": recompute(lab["checkpoints"] / "translate-bahdanau", beam=2),
                       "translate-lstm": recompute(lab["checkpoints"] / "translate-lstm", beam=1)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTENTION_LAB_CHECKPOINTS", str(lab["checkpoints"]))
        yield lab


@pytest.fixture(scope="module")
def page(lab):
    at = open_page("pages/test_set.py", timeout=60)
    assert not at.exception, at.exception
    return at


def table(at):
    return next(e.value for e in at.dataframe if "open" in e.value.columns)


def average_ranks(values: list[float]) -> list[float]:
    """Ranks 1..n, tied values sharing the mean of their ranks (by counting, not sorting)."""
    return [sum(v < a for v in values) + (sum(v == a for v in values) + 1) / 2 for a in values]


def chart_data(at, index: int):
    """The data of the page's index-th Altair chart, as a DataFrame."""
    chart = elements(at.main, "vega_lite_chart")[index]
    return pa.ipc.open_stream(chart.proto.datasets[0].data.data).read_all().to_pandas()


def test_overview_and_notices(page, lab):
    overview = next(e.value for e in page.dataframe if "status" in e.value.columns).set_index("model")
    exp = lab["expected"]["translate-bahdanau"]
    row = overview.loc["translate-bahdanau"]
    assert row["status"] == "ok" and row["decoding"] == "beam 2" and row["sentences"] == len(GERMAN_TEST)
    assert row["corpus BLEU"] == lab["files"]["translate-bahdanau"]["corpus_bleu"] and row["card BLEU"] == 1.0
    assert row["mean sentence BLEU"] == pytest.approx(np.mean([e["bleu"] for e in exp]), abs=1e-3)
    assert row["mean attention entropy (nats)"] == pytest.approx(np.mean([e["entropy"] for e in exp]), abs=1e-3)
    assert row["mean tokens attended repeatedly"] == pytest.approx(
        np.mean([len(e["repeated_positions"]) for e in exp]))
    lstm = overview.loc["translate-lstm"]
    assert lstm["decoding"] == "greedy" and np.isnan(lstm["mean attention entropy (nats)"])
    assert lstm["mean length ratio (output / source)"] == pytest.approx(
        np.mean([e["length_ratio"] for e in lab["expected"]["translate-lstm"]]), abs=1e-3)
    assert overview.loc["translate-gru", "status"] == "statistics file refused"
    assert overview.loc["translate-luong", "status"] == "no statistics file"
    text = messages(page)
    assert "translate-luong: no test-set statistics yet" in text and "translate-gru" in text
    codes = [c.value for c in page.code]
    assert any(c.startswith("python -m seq2seq.corpus ") and "translate-luong --data-dir" in c for c in codes)
    assert any("sha256 does not match the card" in t.value for t in page.text)
    assert any("translate-lstm: no attention" in c.value for c in page.caption)


def test_table_rows_values_and_links(page, lab):
    exp = lab["expected"]["translate-bahdanau"]
    df = table(page)
    bleu = [round(e["bleu"], 4) for e in exp]
    order = sorted(range(len(exp)), key=lambda i: (bleu[i], i))            # worst BLEU first
    assert df["sentence"].tolist() == [i + 1 for i in order]
    for (_, row), i in zip(df.iterrows(), order):
        e = exp[i]
        assert row["source"] == e["source"] and row["output"] == e["output"] and row["reference"] == e["reference"]
        assert row["bleu"] == pytest.approx(e["bleu"], abs=1e-4)
        assert row["entropy"] == pytest.approx(e["entropy"], abs=2e-4)
        assert row["monotonicity"] == pytest.approx(e["monotonicity"], abs=2e-4)
        assert row["dropped"] == len(e["dropped_positions"]) and row["repeated"] == len(e["repeated_positions"])
        tokens = e["source"].split(" ")
        assert row["repeated words"] == " · ".join(tokens[j] for j in e["repeated_positions"])
        link = urlsplit(row["open"])
        assert link.path == "translate"
        assert parse_qs(link.query) == {"text": [e["source"]], "model": ["translate-bahdanau"], "beam": ["2"]}


def test_table_order_and_a_model_without_attention(page, lab):
    exp = lab["expected"]["translate-bahdanau"]
    page.selectbox(key="test_set.order").set_value("least monotone").run()
    assert not page.exception
    mono = [round(e["monotonicity"], 4) for e in exp]
    assert table(page)["sentence"].tolist() == [i + 1 for i in sorted(range(len(exp)), key=lambda i: (mono[i], i))]
    page.selectbox(key="test_set.table_model").set_value("translate-lstm").run()
    assert not page.exception
    assert page.selectbox(key="test_set.order").options == ["worst BLEU"]
    df = table(page)
    assert "entropy" not in df.columns and "dropped words" not in df.columns
    lstm = lab["expected"]["translate-lstm"]
    bleu = [round(e["bleu"], 4) for e in lstm]
    assert df["sentence"].tolist() == [i + 1 for i in sorted(range(len(lstm)), key=lambda i: (bleu[i], i))]
    assert all("beam" not in parse_qs(urlsplit(u).query) for u in df["open"])    # greedy: no beam in the link
    page.selectbox(key="test_set.table_model").set_value("translate-bahdanau").run()


def test_scatter_correlation(page, lab):
    exp = lab["expected"]["translate-bahdanau"]
    assert page.selectbox(key="test_set.scatter_model").options == ["translate-bahdanau"]   # attention only
    for stat in ("entropy", "monotonicity"):
        page.selectbox(key="test_set.scatter_stat").set_value(stat).run()
        assert not page.exception
        x, y = [round(e[stat], 4) for e in exp], [round(e["bleu"], 4) for e in exp]
        pearson = np.corrcoef(x, y)[0, 1]
        spearman = np.corrcoef(average_ranks(x), average_ranks(y))[0, 1]
        assert correlation(x, y)["spearman"] == pytest.approx(spearman)
        metrics = {m.label: m.value for m in page.metric}
        assert metrics["Pearson r"] == f"{pearson:.3f}" and metrics["Spearman ρ"] == f"{spearman:.3f}"
        assert metrics["sentences"] == str(len(exp))
        points = chart_data(page, 1)
        assert points.sort_values("sentence")[stat].tolist() == pytest.approx(x)
        assert json.loads(elements(page.main, "vega_lite_chart")[1].proto.spec)["encoding"]["x"]["field"] == stat


def test_distributions(page, lab):
    page.selectbox(key="test_set.dist_stat").set_value("bleu").run()
    data = chart_data(page, 0)
    for name in ("translate-bahdanau", "translate-lstm"):
        assert sorted(data[data["model"] == name]["value"]) == pytest.approx(
            sorted(e["bleu"] for e in lab["expected"][name]), abs=1e-4)
    page.selectbox(key="test_set.dist_stat").set_value("entropy").run()
    data = chart_data(page, 0)
    assert set(data["model"]) == {"translate-bahdanau"}                  # lstm has no attention
    assert sorted(data["value"]) == pytest.approx(sorted(e["entropy"] for e in lab["expected"]["translate-bahdanau"]),
                                                  abs=2e-4)
    assert any("left out" in c.value for c in page.caption)


def test_user_text_never_reaches_markdown(page):
    # sentence 5 of the fake test set holds HTML and Markdown; it is shown in dataframes only
    for el in elements(page.main, "markdown") + list(page.caption) + list(page.info) + list(page.error):
        assert "fett" not in el.value and "<b>" not in el.value and "link](" not in el.value
    for chart in elements(page.main, "vega_lite_chart"):
        assert "fett" not in chart.proto.spec


def test_page_without_any_corpus_file(tmp_path, monkeypatch):
    from apptest_util import _tiny

    _tiny(tmp_path / "translate-gru", "gru", "translate", 1, {"test2016": {"bleu": 1.0}})
    monkeypatch.setenv("ATTENTION_LAB_CHECKPOINTS", str(tmp_path))
    at = open_page("pages/test_set.py", timeout=60)
    assert not at.exception
    assert "translate-gru: no test-set statistics yet" in messages(at)
    assert any("python -m seq2seq.corpus" in c.value and "translate-gru" in c.value for c in at.code)
    assert not at.tabs
    monkeypatch.setenv("ATTENTION_LAB_CHECKPOINTS", str(tmp_path / "empty"))
    at = open_page("pages/test_set.py", timeout=60)
    assert not at.exception and "No translation checkpoints" in messages(at)
