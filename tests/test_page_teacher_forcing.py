"""The Teacher forcing page (AppTest): schedules, sweep results, replay, live lab."""
import json
import shutil
import statistics

from types import SimpleNamespace

import pandas as pd
import pyarrow as pa
import pytest
import torch
from streamlit.testing.v1 import AppTest

from seq2seq.errors import InputError
from seq2seq.exposure import replay, replay_rows, replay_text
from seq2seq.schedules import teacher_forcing_ratio
from seq2seq.sweep import decay_setting, load_results, write_results
from seq2seq.sweep_findings import COIN_CAPTION, findings
from seq2seq.translate import Translator

from apptest_util import elements, tiny_reverse_sweep, translate_sweep_results
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
                                   "linear decay", "exponential decay", "inverse-sigmoid decay", "tutorials' rule 0.5"}
    assert set(df[df["strategy"] == "tutorials' rule 0.5"]["kind"]) == {"constant, one coin per step"}
    table = dataframe(at, ["strategy", "formula", "coin"]).set_index("strategy")
    assert table.loc["tutorials' rule 0.5", "coin"] == "one per step for the batch"
    assert set(table.drop(index="tutorials' rule 0.5")["coin"]) == {"one per token"}

    def at_step(strategy, step):
        row = df[(df["strategy"] == strategy) & (df["step"] == step)]
        assert len(row) == 1
        return float(row["ratio"].iloc[0])

    # no sweep: decays fitted to 1000 batches, ~1 at the start and ~0 at the end
    assert at_step("constant 0.25", 0) == at_step("constant 0.25", 1000) == 0.25
    assert at_step("tutorials' rule 0.5", 0) == at_step("tutorials' rule 0.5", 1000) == 0.5
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
    # away to another page and back: the form shows the settings trained with, and the result stays
    at.switch_page("pages/home.py").run()
    at.switch_page(PAGE).run()
    assert not at.exception
    assert (at.selectbox(key="tf.lab.arch").value, at.selectbox(key="tf.lab.kind").value) == ("gru", "inverse_sigmoid")
    assert (at.slider(key="tf.lab.epochs").value, at.select_slider(key="tf.lab.size").value,
            at.slider(key="tf.lab.max_len").value) == (1, 256, 3)
    assert metric == {m.label: m.value for m in at.metric}


# ------------------------------------------------------------------ format 2 files, both sweeps, the shipped file
@pytest.fixture(scope="module")
def tiny_v2(tmp_path_factory):
    """A real format 2 reversal sweep (trained once for the module, in seconds), with its kept weights."""
    folder = tmp_path_factory.mktemp("tiny_sweep") / "sweeps"
    tiny_reverse_sweep(folder)
    return folder


@pytest.fixture
def v2_sweeps(tiny_v2, tmp_path, monkeypatch):
    """A copy of the tiny sweep's folder (so a test may change it), made the page's sweeps folder."""
    folder = tmp_path / "sweeps"
    shutil.copytree(tiny_v2, folder)
    monkeypatch.setenv("ATTENTION_LAB_SWEEPS", str(folder))
    return folder


def findings_text(at) -> str:
    found = [m.value for m in at.markdown if "What the numbers say" in m.value]
    assert len(found) == 1
    return found[0]


def svg_buttons(at) -> set[str]:
    return {b.proto.id.split("-", 2)[-1] for b in elements(at.main, "download_button")
            if b.proto.label == "Download this chart as SVG"}


def runs_of(res, label, arch=None):
    return [r for r in res["runs"] if r["setting"] == label and (arch is None or r["arch"] == arch)]


CHART_KEYS = {"tf.schedules", "tf.final", "tf.curves", "tf.loss_by_epoch", "tf.metric_by_epoch", "tf.positions",
              "tf.by_length"}


def test_format_2_sweep_summary_exposure_bias_lengths_and_downloads(v2_sweeps, monkeypatch):
    from streamlit.runtime.media_file_manager import MediaFileManager

    deferred = {}
    original = MediaFileManager.add_deferred

    def spy(self, data_callable, mimetype, coordinates, file_name=None, **kw):
        file_id = original(self, data_callable, mimetype, coordinates, file_name=file_name, **kw)
        deferred[file_id] = (data_callable, file_name)
        return file_id

    monkeypatch.setattr(MediaFileManager, "add_deferred", spy)
    at = open_page()
    res = load_results(v2_sweeps / "reverse.json")
    assert res["format_version"] == 2
    assert "results of a reduced sweep" in messages(at)
    summary = dataframe(at, ["strategy", "mean", "min", "max", "coin"]).set_index("strategy")
    assert list(summary.index) == ["constant 0", "constant 1", "inverse-sigmoid decay", "tutorials' rule 0.5"]
    for label in summary.index:
        vals = [r["final"]["exact_match"] for r in runs_of(res, label)]
        row = summary.loc[label]
        assert row["mean"] == pytest.approx(statistics.fmean(vals), abs=1e-4)
        assert (row["min"], row["max"], row["seeds"]) == (min(vals), max(vals), len(vals))
    assert summary.loc["constant 1", "seed list"] == "1, 2, 3"                  # the second pass's seed
    # the tutorials' rule is marked: its coin in the table, a triangle in the final chart, a caption
    assert summary.loc["tutorials' rule 0.5", "coin"] == "one per step for the batch"
    assert set(summary.drop(index="tutorials' rule 0.5")["coin"]) == {"one per token"}
    spec, runs = chart(at, "Final exact match")
    assert set(runs[runs["strategy"] == "tutorials' rule 0.5"]["coin"]) == {"one per step for the batch"}
    assert "shape" in json.dumps(spec) and COIN_CAPTION in [c.value for c in at.caption]
    assert "plus 3 for constant 1 and" in " ".join(c.value for c in at.caption)
    for line in findings(res):
        assert line in findings_text(at)
    # exposure bias: both curves, the means over seeds of the file's numbers
    _, pos = chart(at, "Accuracy by output position, teacher-forced vs free-running")
    for mode, field in (("teacher-forced", "accuracy_by_position_teacher_forced"),
                        ("free-running", "accuracy_by_position")):
        row = pos[(pos["strategy"] == "constant 1") & (pos["mode"] == mode) & (pos["position"] == 2)]
        assert float(row["accuracy"].iloc[0]) == pytest.approx(
            statistics.fmean(r[field]["2"] for r in runs_of(res, "constant 1")))
    assert "tutorials' rule 0.5 (one coin per step)" in set(pos["panel"])
    # exact match by length
    spec, lengths = chart(at, "Final free-running exact match by sequence length")
    row = lengths[(lengths["strategy"] == "inverse-sigmoid decay") & (lengths["length"] == "3")]
    assert float(row["value"].iloc[0]) == pytest.approx(
        statistics.fmean(r["exact_match_by_length"]["3"] for r in runs_of(res, "inverse-sigmoid decay")))
    assert spec["encoding"]["x"]["sort"] == ["1", "2", "3", "4", "5"]
    # every chart of the page offers an SVG download besides the toolbar's PNG; drawn when clicked
    assert svg_buttons(at) == {f"{k}.svg" for k in CHART_KEYS}
    button = next(b for b in elements(at.main, "download_button") if b.proto.id.endswith("tf.final.svg"))
    make, name = deferred[button.proto.deferred_file_id]
    assert name == "attention-lab-teacher-forcing-reverse-final.svg"
    svg = make()
    assert svg.lstrip().startswith("<svg") and "tutorials' rule 0.5" in svg.replace("&#39;", "'")
    assert not at.exception


def test_known_numbers_give_the_findings_and_a_full_sweep_has_no_notice(v2_sweeps):
    path = v2_sweeps / "reverse.json"
    res = load_results(path)
    finals = {"constant 0": [0.1, 0.2], "constant 1": [0.5, 0.6, 0.7], "inverse-sigmoid decay": [0.8, 0.9, 0.85],
              "tutorials' rule 0.5": [0.3, 0.4]}
    for label, values in finals.items():
        for run, v in zip(runs_of(res, label), values):
            run["final"]["exact_match"] = v
    res["scale"], res["note"] = "full", "the full sweep"
    write_results(path, res)
    at = open_page()
    assert "reduced sweep" not in messages(at)
    summary = dataframe(at, ["strategy", "mean", "min", "max"]).set_index("strategy")
    assert summary.loc["inverse-sigmoid decay", "mean"] == pytest.approx(0.85)
    assert summary.loc["constant 1", "std"] == pytest.approx(0.1)             # sample std of 0.5, 0.6, 0.7
    text = findings_text(at)
    assert "Best policy by mean free-running test exact match: inverse-sigmoid decay (0.8500 over 3 seeds)." in text
    assert ("inverse-sigmoid decay beats constant 1 (0.6000 over 3 seeds) by 0.2500: larger than the seed spread "
            "(the wider min–max range of the two is 0.2000).") in text
    assert "There is no constant 0.5 run to set the tutorials' rule against." in text
    assert not at.exception


def test_both_sweeps_the_translation_one_in_bleu(v2_sweeps):
    write_results(v2_sweeps / "translate.json", translate_sweep_results(scale="full"))
    at = open_page()
    assert at.radio(key="tf.sweep").options == ["reversal", "translation"]
    assert at.radio(key="tf.sweep").value == "translate"                      # the full one first
    assert "reduced sweep" not in messages(at)
    at.radio(key="tf.sweep").set_value("reverse").run()
    assert not at.exception, at.exception
    assert "reduced sweep" in messages(at)
    at.radio(key="tf.sweep").set_value("translate").run()
    assert not at.exception, at.exception
    assert "reduced sweep" not in messages(at)
    res = load_results(v2_sweeps / "translate.json")
    summary = dataframe(at, ["strategy", "mean", "min", "max"]).set_index("strategy")
    assert (summary.loc["constant 1", "mean"], summary.loc["constant 1", "min"], summary.loc["constant 1", "max"],
            summary.loc["constant 1", "seeds"]) == (29.0, 28.0, 30.0, 3)
    assert summary.loc["constant 1", "std"] == pytest.approx(1.0)
    assert pd.isna(summary.loc["constant 0.5", "std"])                         # one seed: no spread
    assert summary.loc["tutorials' rule 0.5", "coin"] == "one per step for the batch"
    text = findings_text(at)
    for line in findings(res):
        assert line in text
    assert "inverse-sigmoid decay beats constant 1 (29.00 over 3 seeds) by 4.00: larger than the seed spread" in text
    assert "lower by 3.00; with one seed for tutorials' rule 0.5 and constant 0.5 the seed spread is unknown" in text
    _, runs = chart(at, "Final BLEU by strategy")
    assert sorted(runs[runs["strategy"] == "inverse-sigmoid decay"]["value"]) == [32.0, 33.0, 34.0]
    spec, buckets = chart(at, "Final free-running BLEU by source length")
    assert spec["encoding"]["x"]["sort"] == ["1-8", "9-12", "13-16", "21+"]
    row = buckets[(buckets["strategy"] == "inverse-sigmoid decay") & (buckets["length"] == "1-8")]
    assert (float(row["value"].iloc[0]), int(row["sentences"].iloc[0]), int(row["seeds"].iloc[0])) == (38.0, 300, 3)
    _, pos = chart(at, "Accuracy by output position, teacher-forced vs free-running")
    assert set(pos["mode"]) == {"teacher-forced", "free-running"}
    _, curves = chart(at, "Free-running BLEU by epoch")
    epoch2 = curves[(curves["strategy"] == "constant 1") & (curves["epoch"] == 2)]
    assert float(epoch2["metric"].iloc[0]) == pytest.approx(29.0)
    assert "plus 2, 3 for constant 1 and inverse-sigmoid decay" in " ".join(c.value for c in at.caption)
    assert svg_buttons(at) >= {"tf.final.svg", "tf.positions.svg", "tf.by_length.svg"}


def test_a_format_1_file_still_draws(monkeypatch):
    # the reduced reversal sweep shipped before the full one, kept as a fixture
    folder = ROOT / "tests" / "data" / "sweeps-format1"
    monkeypatch.setenv("ATTENTION_LAB_SWEEPS", str(folder))
    res = load_results(folder / "reverse.json")
    assert res["format_version"] == 1 and res["scale"] == "reduced"
    at = open_page()                                     # its only sweep: no choice of sweep
    assert not [r for r in at.radio if r.key == "tf.sweep"]
    at.radio(key="tf.arch.reverse").set_value("gru").run()
    assert "results of a reduced sweep" in messages(at)
    summary = dataframe(at, ["arch", "strategy", "mean", "min", "max"]).set_index(["arch", "strategy"])
    assert len(summary) == 16
    for (arch, label), row in summary.iterrows():
        vals = [r["final"]["exact_match"] for r in runs_of(res, label, arch)]
        assert row["mean"] == pytest.approx(statistics.fmean(vals), abs=1e-4)
        assert row["std"] == pytest.approx(statistics.stdev(vals), abs=1e-4)
        assert (row["min"], row["max"], row["seeds"], row["coin"]) == (min(vals), max(vals), 3, "one per token")
    text = findings_text(at)
    for line in findings(res):
        assert line in text
    assert "no tutorials' rule runs" in text
    _, pos = chart(at, "Accuracy by output position (exposure bias")            # free-running only
    assert "mode" not in pos.columns or set(pos["mode"]) == {"free-running"}
    _, lengths = chart(at, "Final free-running exact match by sequence length")
    row = lengths[(lengths["strategy"] == "constant 1") & (lengths["length"] == "2")]
    assert float(row["value"].iloc[0]) == pytest.approx(
        statistics.fmean(r["exact_match_by_length"]["2"] for r in runs_of(res, "constant 1", "gru")))
    assert svg_buttons(at) == {f"{k}.svg" for k in CHART_KEYS}
    assert not at.exception


def test_the_shipped_reversal_sweep_says_how_far_it_has_run(monkeypatch):
    monkeypatch.setenv("ATTENTION_LAB_SWEEPS", str(ROOT / "checkpoints" / "sweeps"))
    res = load_results(ROOT / "checkpoints" / "sweeps" / "reverse.json")
    assert res["scale"] == "full"
    at = open_page()
    at.radio(key="tf.sweep").set_value("reverse").run()
    text = messages(at)
    assert "reduced sweep" not in text
    if res["complete"]:
        assert "not finished" not in text
    else:
        assert f"The sweep is not finished yet: {len(res['runs'])} of its 54 runs so far." in text
    summary = dataframe(at, ["arch", "strategy", "seeds"])
    assert len(summary) == 18                                  # every policy of both archs has a seed
    assert not at.exception


def test_the_replay_opens_on_a_model_whose_own_mistakes_show(monkeypatch):
    # the shipped sweep's GRU trained with teacher forcing throughout leaves the gold reversal
    # of the first example; the attention models reverse it perfectly (nothing to see)
    monkeypatch.setenv("ATTENTION_LAB_SWEEPS", str(ROOT / "checkpoints" / "sweeps"))
    at = open_page()
    assert not at.exception
    assert at.selectbox(key="tf.model").value == "gru-tf1-s1"
    assert at.text_input(key="tf.text").value == "attention is all you need"
    assert [m.value for m in at.metric if m.label == "first divergence (free-running)"][0].startswith("step ")


def test_each_sweep_keeps_its_own_architecture_for_the_curves(monkeypatch):
    # the reversal sweep has two architectures to choose from, the translation sweep one (no choice)
    monkeypatch.setenv("ATTENTION_LAB_SWEEPS", str(ROOT / "checkpoints" / "sweeps"))
    at = open_page()
    at.radio(key="tf.sweep").set_value("reverse").run()
    at.radio(key="tf.arch.reverse").set_value("gru").run()
    at.radio(key="tf.sweep").set_value("translate").run()
    assert not at.exception
    assert not [r for r in at.radio if r.key and r.key.startswith("tf.arch")]
    assert "Architecture: GRU + Bahdanau attention" in [c.value for c in at.caption]
    assert at.radio(key="tf.replay_mode").value == "translate"          # the replay follows the sweep
    at.radio(key="tf.sweep").set_value("reverse").run()
    assert at.radio(key="tf.arch.reverse").value == "gru"
    assert at.radio(key="tf.replay_mode").value == "reverse"
