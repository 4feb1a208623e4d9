"""The Teacher forcing page (AppTest): schedules, sweep results, replay, live lab."""
import json

from types import SimpleNamespace

import pyarrow as pa
import pytest
import torch
from streamlit.testing.v1 import AppTest

from seq2seq.errors import InputError
from seq2seq.exposure import replay, replay_rows, replay_text
from seq2seq.schedules import teacher_forcing_ratio
from seq2seq.sweep import decay_setting, write_results
from seq2seq.translate import Translator

from conftest import ROOT

PAGE = "pages/teacher_forcing.py"
REVERSE_CK = ROOT / "checkpoints" / "reverse-bahdanau"
LONG = "attention is all you need and more text here 123456"   # longer than anything it trained on


def open_page(query=None, timeout=60) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.switch_page(PAGE)
    at.run()
    assert not at.exception, at.exception
    return at


def charts(at) -> dict:
    """Altair charts by title: (spec, the data frame behind them)."""
    out = {}
    for e in at.get("vega_lite_chart"):
        spec = json.loads(e.proto.spec)
        frames = [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in e.proto.datasets]
        out[spec.get("title", "")] = (spec, frames[0] if frames else None)
    return out


def chart(at, prefix):
    found = [v for k, v in charts(at).items() if k.startswith(prefix)]
    assert len(found) == 1, list(charts(at))
    return found[0]


def messages(at) -> str:
    return " | ".join(e.value for kind in ("error", "warning", "info", "success") for e in getattr(at, kind))


def dataframe(at, columns):
    found = [d.value for d in at.dataframe if set(columns) <= set(d.value.columns)]
    assert len(found) == 1
    return found[0]


@pytest.fixture
def no_sweeps(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTENTION_LAB_SWEEPS", str(tmp_path))
    return tmp_path


@pytest.fixture
def small_sweep(tmp_path, monkeypatch):
    """A hand-made results file with known numbers (2 strategies x 2 seeds, one arch)."""
    total = 200
    settings = [{"label": "constant 1", "slug": "tf1",
                 "teacher_forcing": {"kind": "constant", "ratio": 1.0, "k": 1.0, "c": 0.0, "eps_min": 0.0}},
                {"label": "linear decay", "slug": "linear",
                 "teacher_forcing": decay_setting("linear", total).tf.to_dict()}]
    final = {("constant 1", 1): 0.8, ("constant 1", 2): 0.6, ("linear decay", 1): 0.4, ("linear decay", 2): 0.2}
    runs = []
    for (label, seed), em in final.items():
        runs.append({"name": f"gru-{label[:3]}-s{seed}", "arch": "gru", "setting": label, "seed": seed,
                     "teacher_forcing": {}, "final": {"exact_match": em, "val_exact_match": em},
                     "history": [{"epoch": e, "val_loss": 1.0 / e, "val_exact_match": em * e / 2, "train_loss": 1.0,
                                  "tf_ratio": 1.0} for e in (1, 2)],
                     "accuracy_by_position": {"1": 1.0, "2": em, "3": em / 2}, "checkpoint": None})
    write_results(tmp_path / "reverse.json", {
        "format_version": 1, "sweep": "reverse", "task": "reverse", "metric": "exact_match", "scale": "reduced",
        "note": "a reduced CPU sweep for the test", "total_batches": total, "settings": settings, "seeds": [1, 2],
        "complete": True, "device": "cpu", "runs": runs})
    monkeypatch.setenv("ATTENTION_LAB_SWEEPS", str(tmp_path))
    return tmp_path


class CountingModel(torch.nn.Module):
    """Writes prev + 1 (5 after <sos>, <eos> after 9): teacher-forced and free-running
    decoding differ in a way we can work out by hand."""

    def __init__(self):
        super().__init__()
        self.cfg = SimpleNamespace(tgt_vocab_size=12, max_out_len=20)
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def encode(self, src, src_lens):
        return None, {}

    def decode_step(self, prev, state, memory):
        nxt = torch.where(prev == 2, 5, torch.where(prev >= 9, 3, prev + 1))    # [B]
        return torch.nn.functional.one_hot(nxt, 12).float() * 10, state, None  # [B, V]


def test_replay_feeds_gold_when_teacher_forced_and_own_tokens_when_free():
    itos = ["<pad>", "<unk>", "<sos>", "<eos>"] + [str(i) for i in range(4, 12)]
    r = replay(CountingModel(), [4, 4], [5, 6, 7, 9], itos)
    assert r.gold == ["5", "6", "7", "9", "<eos>"]
    assert r.forced == ["5", "6", "7", "8", "<eos>"]        # after gold 9 comes <eos>: it was fed the gold 9
    assert r.free == ["5", "6", "7", "8", "9", "<eos>"]      # fed its own 8, it goes on to 9
    assert (r.divergence, r.forced_errors) == (3, [3])
    rows = replay_rows(r)
    assert len(rows) == 6 and rows[3]["note"] == "free-running diverges here"
    assert [row["forced ok"] for row in rows] == [True, True, True, False, True, None]
    assert [row["free ok"] for row in rows] == [True, True, True, False, False, False]


def test_replay_text_builds_the_gold_output_from_the_input_or_the_reference():
    tr = Translator.load(REVERSE_CK)
    source, r = replay_text(tr, "abc 12")
    assert source.tokens == list("abc 12")
    assert r.gold == list("21 cba") + ["<eos>"]                     # reversal: the reversed input
    assert r == replay(tr.model, source.ids, list(reversed(source.ids)), tr.ckpt.tgt_vocab.itos)
    _, with_ref = replay_text(tr, "abc", reference="cba")           # a reference is tokenized as targets are
    assert with_ref.gold == ["c", "b", "a", "<eos>"]
    with pytest.raises(InputError, match="reference"):
        replay_text(tr, "abc", reference="   ")
    with pytest.raises(InputError):
        replay_text(tr, "   ")


def test_schedules_chart_values_and_adjustable_decays(no_sweeps):
    at = open_page()
    assert "No sweep results found" in messages(at)            # a message, not a crash
    spec, df = chart(at, "Teacher-forcing ratio")
    assert set(df["strategy"]) == {"constant 0", "constant 0.25", "constant 0.5", "constant 0.75", "constant 1",
                                   "linear decay", "exponential decay", "inverse-sigmoid decay"}

    def at_step(strategy, step):
        row = df[(df["strategy"] == strategy) & (df["step"] == step)]
        assert len(row) == 1
        return float(row["ratio"].iloc[0])

    # no sweep: decays fitted to 1000 batches, ~1 at the start and ~0 at the end
    assert at_step("constant 0.25", 0) == at_step("constant 0.25", 1000) == 0.25
    assert at_step("linear decay", 0) == 1.0 and at_step("linear decay", 500) == pytest.approx(0.5)
    assert at_step("exponential decay", 500) == pytest.approx(0.1, abs=1e-3)
    assert at_step("exponential decay", 1000) == pytest.approx(0.01, abs=1e-4)
    assert at_step("inverse-sigmoid decay", 0) > 0.95 and at_step("inverse-sigmoid decay", 1000) <= 0.0101
    at.number_input(key="tf.exp_k").set_value(0.99).run()
    _, df = chart(at, "Teacher-forcing ratio")
    assert at_step("exponential decay", 100) == pytest.approx(0.99 ** 100)


def test_sweep_section_renders_known_numbers(small_sweep):
    at = open_page()
    assert "reduced CPU sweep for the test" in messages(at)
    summary = dataframe(at, ["strategy", "mean", "min", "max"]).set_index("strategy")
    assert summary.loc["constant 1", "mean"] == pytest.approx(0.7)
    assert (summary.loc["linear decay", "min"], summary.loc["linear decay", "max"]) == (0.2, 0.4)
    assert summary.loc["constant 1", "seeds"] == 2
    _, runs = chart(at, "Final exact match")
    assert sorted(runs["value"]) == [0.2, 0.4, 0.6, 0.8]
    _, pos = chart(at, "Accuracy by output position")
    row = pos[(pos["strategy"] == "linear decay") & (pos["position"] == 3)]
    assert float(row["accuracy"].iloc[0]) == pytest.approx(0.15)      # mean of 0.2 and 0.1
    spec, curves = chart(at, "Free-running quality against teacher-forced loss")
    assert (spec["encoding"]["x"]["field"], spec["encoding"]["y"]["field"]) == ("val_loss", "metric")
    epoch2 = curves[(curves["strategy"] == "constant 1") & (curves["epoch"] == 2)]
    assert float(epoch2["metric"].iloc[0]) == pytest.approx(0.7)       # mean of 0.8 and 0.6


def test_unreadable_results_file_gives_a_message(no_sweeps):
    (no_sweeps / "reverse.json").write_text("{truncated")
    at = open_page()
    assert "not a readable results file" in messages(at)


def test_replay_shows_the_first_divergence(no_sweeps):
    at = open_page({"text": LONG, "model": "reverse-bahdanau"})
    tr = Translator.load(REVERSE_CK)
    src = tr.prepare(LONG)
    expected = replay(tr.model, src.ids, list(reversed(src.ids)), tr.ckpt.tgt_vocab.itos)
    assert expected.divergence is not None
    table = dataframe(at, ["gold", "teacher-forced argmax", "free-running"])
    assert list(table["note"]).index("free-running diverges here") == expected.divergence
    assert "".join(table["gold"].iloc[:6]) == "654321"
    assert table["free ok"].iloc[:expected.divergence].all() and not table["free ok"].iloc[expected.divergence]
    metric = {m.label: m.value for m in at.metric}
    assert metric["first divergence (free-running)"] == f"step {expected.divergence + 1}"
    assert at.query_params["text"] in (LONG, [LONG])
    # a short input the model reverses correctly: no divergence
    at.text_input(key="tf.text").set_value("abc 123").run()
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["first divergence (free-running)"] == "none"
    assert "".join(dataframe(at, ["gold"])["free-running"]).replace("␣", " ") == "321 cba<eos>"


@pytest.mark.parametrize("text,fragment", [("   ", "Type something"), ("🙂🙂 ok", "unknown"),
                                           ("<b>x</b>", "unknown"), ("x" * 200, "truncated")])
def test_replay_bad_inputs_give_messages(no_sweeps, text, fragment):
    at = open_page({"text": text, "model": "reverse-bahdanau"})
    assert fragment in messages(at)
    assert all("<b>" not in m.value for m in at.markdown)              # user text never goes through markdown
    if text == "<b>x</b>":
        assert "<" in "".join(dataframe(at, ["gold"])["gold"])         # shown literally, as data


def test_live_lab_trains_and_reports(no_sweeps):
    at = open_page()
    at.selectbox(key="tf.lab.arch").set_value("gru")
    at.selectbox(key="tf.lab.kind").set_value("inverse_sigmoid")
    at.slider(key="tf.lab.epochs").set_value(1)
    at.select_slider(key="tf.lab.size").set_value(256)
    at.slider(key="tf.lab.max_len").set_value(3)
    at.button(key="tf.lab.train").click().run()
    assert not at.exception
    metric = {m.label: m.value for m in at.metric}
    assert 0 <= float(metric["exact match (lengths 1–3)"]) <= 1
    _, points = chart(at, "Live training")
    ratio = points[points["series"] == "teacher-forcing ratio"].sort_values("step")["value"].tolist()
    tf = decay_setting("inverse_sigmoid", 8).tf                        # 256 sequences = 8 batches of 32
    assert ratio[0] == pytest.approx(teacher_forcing_ratio(tf, 0)) and ratio[-1] < ratio[0]
    assert "validation exact match (free-running)" in set(points["series"])
    assert list(no_sweeps.iterdir()) == []                               # the lab wrote nothing
