"""The Teacher forcing page's translation replay (AppTest): two translation models side by side
on a test-2016 sentence (from the corpus files beside the shipped checkpoints) or a typed
one, teacher-forced vs free-running, with the first divergence marked; by default the
translation sweep's constant 1 run and its best scheduled policy."""
import json
import re

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from app_support.teacher_forcing_view import (_highlight, fallback_pair, gold_prob_frame, sentence_matches,
                                              sweep_defaults)
from seq2seq import figures
from seq2seq.errors import InputError
from seq2seq.exposure import replay, replay_rows, replay_text, replay_tokens
from seq2seq.subword import join_pieces
from seq2seq.sweep import best_scheduled, full_command, write_results
from seq2seq.translate import Translator

from apptest_util import translate_sweep_results
from test_page_teacher_forcing import CountingModel, open_page as open_teacher_forcing_page
from conftest import ROOT

CKPTS = ROOT / "checkpoints"
CORPUS = json.loads((CKPTS / "translate-bahdanau" / "corpus-test2016.json").read_text(encoding="utf-8"))["columns"]
FORCED, FREE = "p(gold | gold prefix)", "p(gold | own prefix)"
NOTE = "The translation sweep's models are not trained yet"


def open_page(query=None, timeout=120) -> AppTest:
    return open_teacher_forcing_page(query, timeout)   # two models decode here: a longer timeout


def messages(at) -> str:
    return " | ".join(e.value for kind in ("error", "warning", "info", "success") for e in getattr(at, kind))


def tables(at) -> list:
    return [d.value for d in at.dataframe if FREE in d.value.columns]


def divergences(at) -> list[str]:
    return [m.value for m in at.metric if m.label == "first divergence (free-running)"]


def gold_prob_charts(at) -> list[tuple[dict, object]]:
    out = []
    for e in at.get("vega_lite_chart"):
        spec = json.loads(e.proto.spec)
        if spec.get("title") == "p(reference token) at each position":
            frames = [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in e.proto.datasets]
            out.append((spec, frames[0]))
    return out


def direct(ckpt, source: str, reference: str):
    """replay() computed directly with the model: the corpus file's words, in the model's
    source tokens (pieces for a model that reads them), encoded."""
    tr = Translator.load(ckpt)
    src = tr.ckpt.src_vocab.encode(tr.ckpt.src_vocab.segment(source.split(" ")))
    gold = tr.ckpt.tgt_vocab.encode(reference.split(" "))
    return replay(tr.model, src, gold, tr.ckpt.tgt_vocab.itos)


def check_side(table, metric: str, chart, r) -> None:
    """One model's column against its Replay: both probability columns, the divergence
    (metric, highlighted note, the chart's marked step)."""
    n = len(r.gold)
    assert list(table[FORCED].iloc[:n]) == pytest.approx([round(p, 4) for p in r.forced_gold_prob], abs=1e-6)
    m = len(r.free_gold_prob)
    assert m == min(n, len(r.free))
    assert list(table[FREE].iloc[:m]) == pytest.approx([round(p, 4) for p in r.free_gold_prob], abs=1e-6)
    assert table[FREE].iloc[m:].isna().all()
    assert metric == ("none" if r.divergence is None else f"step {r.divergence + 1}")
    spec, frame = chart
    layers = spec["layer"]
    assert [layer["mark"]["type"] for layer in layers] == ["line", "rule", "text"]
    forced = frame[frame["mode"] == figures.GOLD_PROB_MODES[0]].sort_values("step")
    assert list(forced["prob"]) == pytest.approx(r.forced_gold_prob)
    free = frame[frame["mode"] == figures.GOLD_PROB_MODES[1]].sort_values("step")
    assert list(free["prob"]) == pytest.approx(r.free_gold_prob)
    if r.divergence is not None:
        assert list(table["note"]).index("free-running diverges here") == r.divergence
        marked = frame[frame["divergence"]]
        assert set(marked["step"]) == {r.divergence + 1}
        assert set(marked["divergence_label"]) == {f"first divergence (step {r.divergence + 1})"}


@pytest.fixture
def no_sweeps(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTENTION_LAB_SWEEPS", str(tmp_path))
    monkeypatch.delenv("ATTENTION_LAB_CHECKPOINTS", raising=False)
    return tmp_path


def kept_translation_sweep(folder, kept: dict) -> dict:
    """The synthetic translation sweep (apptest_util.translate_sweep_results) with kept
    checkpoints: run name -> a shipped checkpoint, linked under folder/translate/."""
    res = translate_sweep_results(scale="full")
    (folder / "translate").mkdir(parents=True)
    for run in res["runs"]:
        if run["name"] in kept:
            (folder / "translate" / run["name"]).symlink_to(CKPTS / kept[run["name"]], target_is_directory=True)
            run["checkpoint"] = f"translate/{run['name']}"
    write_results(folder / "translate.json", res)
    return res


# ------------------------------------------------------------------ pure
def test_gold_prob_frame_and_chart_mark_the_first_divergence():
    itos = ["<pad>", "<unk>", "<sos>", "<eos>"] + [str(i) for i in range(4, 12)]
    r = replay(CountingModel(), [4, 4], [5, 6, 7, 9], itos)        # free: 5 6 7 8 9 <eos>, diverges at step 4
    assert r.divergence == 3 and len(r.free_gold_prob) == 5
    df = gold_prob_frame(r)
    forced = df[df["mode"] == figures.GOLD_PROB_MODES[0]]
    free = df[df["mode"] == figures.GOLD_PROB_MODES[1]]
    assert list(forced["position"]) == ["1 5", "2 6", "3 7", "4 9", "5 <eos>"]
    assert list(forced["prob"]) == pytest.approx(r.forced_gold_prob)
    assert list(free["prob"]) == pytest.approx(r.free_gold_prob)
    assert list(free["fed"]) == ["<sos>", "5", "6", "7", "8"]          # its own tokens, the 8 included
    assert free["prob"].iloc[3] < 0.01 and forced["prob"].iloc[3] < 0.01   # it writes 8 either way
    assert free["prob"].iloc[4] < 0.01 < forced["prob"].iloc[4]          # fed gold 9: <eos>; fed its 8: 9
    assert set(df[df["divergence"]]["step"]) == {4}
    spec = figures.gold_prob_chart(df).to_dict()
    rule, label = spec["layer"][1], spec["layer"][2]
    assert rule["mark"]["type"] == "rule" and "datum.divergence" in rule["transform"][0]["filter"]
    assert label["encoding"]["text"]["field"] == "divergence_label"
    assert spec["layer"][0]["encoding"]["x"]["sort"] == list(forced["position"])
    assert figures.chart_svg(figures.gold_prob_chart(df)).lstrip().startswith("<svg")
    # the table: both probabilities, the divergence row highlighted (and only it)
    rows = pd.DataFrame(replay_rows(r))
    assert list(rows[FREE].iloc[:5]) == pytest.approx([round(p, 4) for p in r.free_gold_prob])
    html = _highlight(rows, r.divergence).to_html()
    marked = " ".join(re.findall(r"([^{}]*)\{[^}]*#ffd6d6", html))
    assert set(re.findall(r"_row(\d+)_", marked)) == {"3"}
    # no divergence: nothing marked
    same = replay(CountingModel(), [4], [5, 6, 7, 8, 9], itos)
    assert same.divergence is None and not gold_prob_frame(same)["divergence"].any()


def test_sweep_defaults_constant_1_and_the_best_scheduled_policy():
    res = translate_sweep_results()
    for r in res["runs"]:
        r["checkpoint"] = f"translate/{r['name']}"
    models = {r["name"]: {} for r in res["runs"]}
    picked = sweep_defaults(res, models)
    assert picked == {"baseline": "bahdanau-tf1-s1", "scheduled": "bahdanau-inverse-sigmoid-s1",
                      "policy": "inverse-sigmoid decay"}
    # without the second pass's record: best_scheduled over the runs, by validation BLEU
    del res["extra_seeds"]
    for r in res["runs"]:
        if r["setting"] == "linear decay":
            r["final"]["bleu_val"] = 99.0
    assert best_scheduled(res["runs"], res["settings"], "translate") == "linear decay"
    assert sweep_defaults(res, models)["scheduled"] == "bahdanau-linear-s1"
    # seed 1 not kept: the lowest kept seed; nothing kept: none
    del models["bahdanau-tf1-s1"]
    assert sweep_defaults(res, models)["baseline"] == "bahdanau-tf1-s2"
    assert sweep_defaults(res, {})["baseline"] is None and sweep_defaults(None, {})["policy"] is None
    assert fallback_pair({"translate-gru": {}, "translate-luong": {}, "translate-bahdanau": {}}) == \
        ("translate-bahdanau", "translate-luong")
    assert fallback_pair({"translate-gru": {}}) == ("translate-gru", "translate-gru")
    sentences = {"source": ["ein hund .", "zwei männer"], "reference": ["a dog .", "two men"]}
    assert sentence_matches(sentences, "Hund") == [1] and sentence_matches(sentences, "men") == [2]
    assert sentence_matches(sentences, "  ") == []


def test_replay_tokens_reads_a_corpus_sentence_as_it_is():
    tr = Translator.load(CKPTS / "translate-bahdanau")
    source, reference = CORPUS["source"][359], CORPUS["reference"][359]     # "e.s.e.": spaCy splits it again
    src, r = replay_tokens(tr, source.split(" "), reference.split(" "))
    # read as the corpus file's words (in the model's byte-pair pieces: they join back into them)
    assert join_pieces(src.tokens) == source.split(" ") and not src.truncated
    assert r == direct(CKPTS / "translate-bahdanau", source, reference)
    assert r.gold[:-1] == [t if t in tr.ckpt.tgt_vocab.stoi else "<unk>" for t in reference.split(" ")]
    long_src, long_r = replay_tokens(tr, ["hund"] * 150, ["dog"] * 150)
    assert (len(long_src.tokens), long_src.truncated, long_src.n_tokens) == (tr.cfg.max_src_len, True, 150)
    assert len(long_r.gold) == tr.cfg.max_out_len                             # cut to what it can write, + <eos>
    with pytest.raises(InputError, match="reference"):
        replay_tokens(tr, ["hund"], [" "])
    with pytest.raises(InputError, match="empty"):
        replay_tokens(tr, [], ["dog"])


# ------------------------------------------------------------------ the page
def test_a_test_sentence_side_by_side_without_a_sweep(no_sweeps):
    n = 6
    at = open_page({"replay": "translate", "sent": str(n)})
    assert at.radio(key="tf.replay_mode").value == "translate"
    assert NOTE in messages(at) and full_command("translate") in messages(at)
    a, b = at.selectbox(key="tf.tr.a").value, at.selectbox(key="tf.tr.b").value
    assert (a, b) == ("translate-bahdanau", "translate-luong")
    assert at.number_input(key="tf.tr.n").value == n
    texts = [t.value for t in at.text]
    assert CORPUS["source"][n - 1] in texts and CORPUS["reference"][n - 1] in texts
    found, metrics, charts = tables(at), divergences(at), gold_prob_charts(at)
    assert len(found) == len(metrics) == len(charts) == 2
    for name, table, metric, chart in zip((a, b), found, metrics, charts):
        check_side(table, metric, chart, direct(CKPTS / name, CORPUS["source"][n - 1], CORPUS["reference"][n - 1]))
    assert {k: at.query_params[k] for k in ("replay", "input", "sent", "a", "b")} == \
        {"replay": "translate", "input": "test", "sent": str(n), "a": a, "b": b}
    svg = {e.proto.id.split("-", 2)[-1] for e in at.get("download_button")}
    assert {"tf.tr.chart.a.svg", "tf.tr.chart.b.svg"} <= svg
    # another model on the right, another sentence by search
    at.selectbox(key="tf.tr.b").set_value("translate-gru").run()
    at.text_input(key="tf.tr.search").set_value("boston terrier").run()
    match = at.selectbox(key="tf.tr.match")
    assert match.options == ["2 · " + CORPUS["source"][1]]
    match.set_value(2).run()
    assert not at.exception, at.exception
    assert at.number_input(key="tf.tr.n").value == 2
    assert CORPUS["source"][1] in [t.value for t in at.text]
    found, metrics, charts = tables(at), divergences(at), gold_prob_charts(at)
    for name, table, metric, chart in zip(("translate-bahdanau", "translate-gru"), found, metrics, charts):
        check_side(table, metric, chart, direct(CKPTS / name, CORPUS["source"][1], CORPUS["reference"][1]))


def test_the_sweeps_constant_1_and_best_scheduled_are_the_defaults(no_sweeps):
    kept_translation_sweep(no_sweeps, {"bahdanau-tf1-s1": "translate-gru",
                                       "bahdanau-inverse-sigmoid-s1": "translate-lstm",
                                       "bahdanau-tf1-s2": "translate-luong"})
    at = open_page({"replay": "translate", "sent": "3"})
    assert NOTE not in messages(at)
    a, b = at.selectbox(key="tf.tr.a"), at.selectbox(key="tf.tr.b")
    assert (a.value, b.value) == ("bahdanau-tf1-s1", "bahdanau-inverse-sigmoid-s1")
    assert a.options[:2] == ["sweep · bahdanau · constant 1 (seed 1) · baseline",      # any other may be picked
                             "sweep · bahdanau · constant 1 (seed 2)"]
    assert "sweep · bahdanau · inverse-sigmoid decay (seed 1) · best scheduled" in b.options
    assert any(o.startswith("translate-bahdanau · ") for o in a.options)
    assert any("best scheduled policy (inverse-sigmoid decay" in c.value for c in at.caption)
    assert not any("trained so far" in c.value for c in at.caption)
    for ckpt, table, metric, chart in zip(("translate-gru", "translate-lstm"), tables(at), divergences(at),
                                          gold_prob_charts(at)):
        check_side(table, metric, chart, direct(CKPTS / ckpt, CORPUS["source"][2], CORPUS["reference"][2]))
    # every policy trained once, the extra seeds not yet
    res = json.loads((no_sweeps / "translate.json").read_text(encoding="utf-8"))
    write_results(no_sweeps / "translate.json", dict(res, complete=False))
    at = open_page({"replay": "translate", "sent": "3"})
    assert any("every policy has its first seed, the extra seeds are still to train" in c.value for c in at.caption)
    assert not any("trained so far" in c.value for c in at.caption)
    # an unfinished sweep (a policy not trained yet): the best scheduled policy is the best
    # so far, and the caption says so
    missing = next(x["label"] for x in res["settings"] if x["label"] not in ("constant 1", "inverse-sigmoid decay"))
    partial = dict(res, complete=False, runs=[r for r in res["runs"] if r["setting"] != missing])
    write_results(no_sweeps / "translate.json", partial)
    at = open_page({"replay": "translate", "sent": "3"})
    trained = len({r["setting"] for r in partial["runs"]})
    assert trained == len(res["settings"]) - 1
    assert any(f"the sweep is not finished ({trained} of its {len(res['settings'])} policies trained so far), so "
               "this is the best so far" in c.value for c in at.caption)
    # a results file without kept checkpoints: the note, and the shipped pair
    for run in res["runs"]:
        run["checkpoint"] = None
    write_results(no_sweeps / "translate.json", res)
    at = open_page({"replay": "translate"})
    assert "`translate.json` has no kept checkpoints for constant 1" in messages(at)
    assert (at.selectbox(key="tf.tr.a").value, at.selectbox(key="tf.tr.b").value) == \
        ("translate-bahdanau", "translate-luong")


def test_a_typed_sentence_and_bad_input_give_messages_not_exceptions(no_sweeps):
    at = open_page({"replay": "translate", "input": "own", "de": "Zwei Hunde spielen im Schnee."})
    assert at.radio(key="tf.tr.input").value == "own"
    assert "Type the reference English translation" in messages(at)             # empty reference
    assert not tables(at)
    at.text_input(key="tf.tr.ref").set_value("   ").run()
    assert not at.exception and "Type the reference English translation" in messages(at)
    at.text_input(key="tf.tr.text").set_value("  ").run()
    assert not at.exception and "Type a German sentence" in messages(at)
    at.text_input(key="tf.tr.text").set_value("Zwei Hunde spielen im Schnee.")
    at.text_input(key="tf.tr.ref").set_value("Two dogs are playing in the snow.").run()
    assert not at.exception, at.exception
    assert at.query_params["de"] == "Zwei Hunde spielen im Schnee." and "sent" not in at.query_params
    for name, table, metric, chart in zip(FALLBACK := ("translate-bahdanau", "translate-luong"), tables(at),
                                          divergences(at), gold_prob_charts(at)):
        _, r = replay_text(Translator.load(CKPTS / name), "Zwei Hunde spielen im Schnee.",
                           "Two dogs are playing in the snow.")
        check_side(table, metric, chart, r)
    assert len(tables(at)) == len(FALLBACK)
    # text no model can read: a message per model, never a traceback
    at.text_input(key="tf.tr.text").set_value("🙂🙂🙂").run()
    assert not at.exception
    assert "nothing left to read" in messages(at) or "unknown" in messages(at)
    # the reversal replay is still one model, the default mode
    at = open_page({"text": "abc 123"})
    assert at.radio(key="tf.replay_mode").value == "reverse"
    assert [m.value for m in at.metric if m.label == "first divergence (free-running)"] == ["none"]
    assert all(not n.startswith("translate-") for n in at.selectbox(key="tf.model").options)


def test_hostile_typed_input_is_shown_as_data(no_sweeps):
    markup = "<script>alert(1)</script> <i>x</i> **fett** [link](http://evil.example)"
    at = open_page({"replay": "translate", "input": "own", "de": markup, "en": markup})
    for text in (markup, "Ein Hund 🙂 مرحبا 你好 e\u0301 a\x00b\x07c\u202e", "Hund" * 120):
        at.text_input(key="tf.tr.text").set_value(text)
        at.text_input(key="tf.tr.ref").set_value(text).run()
        assert not at.exception, at.exception
        shown = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
        assert "<script>" not in shown and "**fett**" not in shown and "evil.example" not in shown
        assert len(tables(at)) == 2 or messages(at)
