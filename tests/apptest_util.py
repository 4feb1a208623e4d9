"""Helpers shared by the page tests (AppTest): opening a page, finding elements and figures,
and a checkpoint folder with every case the pages must handle (`build_lab_checkpoints`).
Test modules import helpers from here or conftest.py, never from each other."""
import base64
import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch
from streamlit.testing.v1 import AppTest

import sacrebleu

from seq2seq import corpus
from seq2seq.checkpoint import load_checkpoint, save_checkpoint
from seq2seq.cli import run_main
from seq2seq.text import REVERSE_ALPHABET
from seq2seq.vocab import SPECIALS, Vocab

from conftest import ROOT, tiny_model

APP = str(ROOT / "app.py")
REAL_REVERSE = ROOT / "checkpoints" / "reverse-bahdanau"
HTML_INPUT = "<b>x</b> **bold** [link](http://x) ![img](http://x/a.png)"

GERMAN = ["ein", "mann", "fährt", "mit", "dem", "fahrrad", "die", "straße", "entlang", ".", "zwei", "hunde",
          "spielen", "im", "schnee", "x"]
ENGLISH = ["a", "man", "rides", "bike", "down", "the", "street", ".", "two", "dogs", "play", "in", "snow"]


def open_page(page: str, query: dict | None = None, timeout: int = 90) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=timeout)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.switch_page(page)
    at.run()
    return at


def open_tab(at: AppTest, key: str, label: str) -> AppTest:
    """Open tab `label` of the kept tabs `key` as a click does (the tabs' callback keeps the
    label, then the page reruns): only the open tab's content is computed."""
    at.session_state[key] = label
    at.session_state[f"keep:{key}"] = label
    return at.run()


def walk(node):
    """Every element under `node` (columns and containers included), depth first."""
    children = getattr(node, "children", None)
    if not isinstance(children, dict):
        return
    for child in children.values():
        yield child
        yield from walk(child)


def elements(node, kind: str) -> list:
    """Every element of type `kind` under `node` (e.g. `at.main`), depth first."""
    return [e for e in walk(node) if getattr(e, "type", None) == kind]


def plotly_figures(at: AppTest) -> list[dict]:
    return [json.loads(e.proto.spec) for e in elements(at.main, "plotly_chart")]


def messages(at: AppTest) -> str:
    return " | ".join([e.value for e in at.error] + [w.value for w in at.warning] + [i.value for i in at.info])


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


def save_tiny_piece_reader(out_dir: Path) -> None:
    """A tiny random translate-bahdanau whose source vocabulary holds byte-pair pieces:
    "kletterwand" is read as "kletter@@ wand"."""
    def left_to_right(symbols):       # the merges that build these symbols into one piece
        return [("".join(symbols[:i]), symbols[i]) for i in range(1, len(symbols))]

    merges = [m for w in GERMAN + ["wand"] for m in left_to_right(list(w[:-1]) + [w[-1] + "</w>"])]
    merges += left_to_right(list("kletter"))
    src = Vocab([*SPECIALS, *GERMAN, "kletter@@", "wand"], list(dict.fromkeys(merges)))
    tgt = Vocab([*SPECIALS, *ENGLISH])
    model = tiny_model("bahdanau", seed=4, src_vocab=len(src), tgt_vocab=len(tgt), max_src_len=12, max_out_len=8)
    card = _card(out_dir.name, "translate", "spacy:de", {})
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
          {"test2016": {"bleu": 30.1, "sacrebleu": 28.4, "ppl": 20.5, "decoding": {"beam": 5}},
           "val": {"sentences": 1014, "by_decoding": {"beam5": {"bleu": 31.0}, "beam5-cov0.1": {"bleu": 29.5}}}},
          device="cuda", device_name="NVIDIA H100 80GB HBM3", wall_seconds=600.0)
    _tiny(root / "translate-lstm", "lstm", "translate", 3,
          {"test2016": {"bleu": 14.0, "sacrebleu": 13.0, "ppl": 40.0, "decoding": {"beam": 1}}})
    (root / "translate-luong").mkdir()
    (root / "translate-luong" / "card.json").write_text("{not json")
    return root


# ------------------------------------------------------------------ AppTest helpers
def plotly_specs(at) -> list[dict]:
    return [json.loads(e.proto.spec) for e in elements(at.main, "plotly_chart")]


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
    return [e.value for e in elements(at.main, kind)]


def url(at) -> dict:
    """The page's query parameters as a plain dict."""
    return {k: at.query_params[k] for k in at.query_params}


def no_user_markup(at, spec_texts: list[str]) -> None:
    """User text never reaches a Markdown element or raw into a Plotly figure."""
    for md in texts(at, "markdown") + texts(at, "caption") + texts(at, "subheader"):
        assert "**bold**" not in md and "[link]" not in md and "<b>x</b>" not in md
    for spec in spec_texts:
        assert "<b>x</b>" not in spec and "<b>x" not in spec


# ------------------------------------------------------------------ corpus statistics (seq2seq.corpus)
GERMAN_TEST = ["Ein Mann fährt mit dem Fahrrad die Straße entlang.",
               "Zwei Hunde spielen im Schnee.",
               "Ein Mann spielt im Schnee mit zwei Hunden.",
               "Die Straße.",
               "<b>x</b> **fett** [link](http://x) ein mann",
               "Zwei Männer fahren mit dem Fahrrad entlang die Straße im Schnee."]
ENGLISH_TEST = ["A man rides a bike down the street.",
                "Two dogs play in the snow.",
                "A man plays in the snow with two dogs.",
                "The street.",
                "a man",
                "Two men ride bikes down the street in the snow."]


def fake_multi30k(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "test_2016_flickr.de").write_text("\n".join(GERMAN_TEST) + "\n", encoding="utf-8")
    (d / "test_2016_flickr.en").write_text("\n".join(ENGLISH_TEST) + "\n", encoding="utf-8")
    return d


def make_corpus_file(ckpt: Path, data_dir: Path, capsys=None) -> dict:
    argv = [str(ckpt), "--data-dir", str(data_dir), "--split", "test2016",
            "--out", str(ckpt / "corpus-test2016.json")]
    assert run_main(corpus.main, argv) == 0
    return json.loads((ckpt / "corpus-test2016.json").read_text(encoding="utf-8"))


def build_corpus_lab(root: Path) -> dict:
    """root/checkpoints: translate-bahdanau (beam 2, file), translate-lstm (greedy, file),
    translate-luong (no file), translate-gru (a tampered file); root/data: the fake test set."""
    ckpts, data = root / "checkpoints", fake_multi30k(root / "data")
    ckpts.mkdir(parents=True)
    _tiny(ckpts / "translate-bahdanau", "bahdanau", "translate", 2,
          {"test2016": {"bleu": 1.0, "decoding": {"beam": 2, "alpha": 1.0}}})
    _tiny(ckpts / "translate-lstm", "lstm", "translate", 3, {"test2016": {"bleu": 1.0, "decoding": {"beam": 1}}})
    _tiny(ckpts / "translate-luong", "luong", "translate", 4, {"test2016": {"bleu": 1.0, "decoding": {"beam": 1}}})
    _tiny(ckpts / "translate-gru", "gru", "translate", 5, {"test2016": {"bleu": 1.0, "decoding": {"beam": 1}}})
    files = {name: make_corpus_file(ckpts / name, data) for name in ("translate-bahdanau", "translate-lstm",
                                                                     "translate-gru")}
    gru = ckpts / "translate-gru" / "corpus-test2016.json"
    gru.write_text(gru.read_text(encoding="utf-8").replace('"sentences":6', '"sentences":7'), encoding="utf-8")
    return {"checkpoints": ckpts, "data": data, "files": files}


def recompute(ckpt: Path, beam: int) -> list[dict]:
    """The statistics of every test sentence, computed independently: one sentence at a time
    through the Translator (the Translate page's path), plain loops for the numbers."""
    from seq2seq.translate import Translator

    tr = Translator(load_checkpoint(ckpt))
    out = []
    for de, en in zip(GERMAN_TEST, ENGLISH_TEST):
        t = tr.translate(de, beam=beam)
        ref = " ".join(tokenize_en(en))
        hyp = " ".join(t.output_tokens)
        row = {"source": " ".join(t.source.tokens), "output": hyp, "reference": ref,
               "bleu": sacrebleu.sentence_bleu(hyp, [ref], tokenize="none").score,
               "length_ratio": len(t.output_tokens) / len(t.source.tokens)}
        if t.alignment_kind == "attention":
            A = t.alignment.tolist()              # one row per output token, <eos> excluded
            ents = [-sum(a * math.log(a) for a in r if a > 0) for r in A]
            row["entropy"] = sum(ents) / len(ents) if ents else None
            am = [max(range(len(r)), key=lambda j: (r[j], -j)) for r in A]
            row["monotonicity"] = (sum(am[t] >= am[t - 1] for t in range(1, len(am))) / (len(am) - 1)
                                   if len(am) >= 2 else None)
            cov = [sum(r[j] for r in A) for j in range(len(t.source.tokens))]
            row["dropped_positions"] = [j for j, c in enumerate(cov) if c < 0.2]
            row["repeated_positions"] = [j for j, c in enumerate(cov) if c > 2.0]
        out.append(row)
    return out


def tokenize_en(text: str) -> list[str]:
    from seq2seq.text import tokenize

    return tokenize(text, "spacy:en")


# ------------------------------------------------------------------ sweep results files for the tests
TRANSLATE_SWEEP_BLEU = {   # (policy, seed) -> test BLEU: the numbers the translation sweep tests check
    ("constant 0", 1): 20.0, ("constant 0.5", 1): 30.0, ("constant 0.75", 1): 31.0,
    ("constant 1", 1): 29.0, ("constant 1", 2): 30.0, ("constant 1", 3): 28.0,
    ("linear decay", 1): 31.5,
    ("inverse-sigmoid decay", 1): 33.0, ("inverse-sigmoid decay", 2): 32.0, ("inverse-sigmoid decay", 3): 34.0,
    ("tutorials' rule 0.5", 1): 27.0,
}


def translate_sweep_results(scale: str = "full", bleu: dict | None = None) -> dict:
    """A format 2 translation sweep with known numbers (bahdanau, the translation settings,
    seed 1, then seeds 2 and 3 for constant 1 and the best scheduled policy), in the shape
    seq2seq.sweep.run_sweep writes: final {bleu, sacrebleu, bleu_val, ppl}, history with
    val_bleu, accuracy by position both ways, BLEU by source-length bucket."""
    from seq2seq.sweep import TUTORIALS_RULE, schedule_check, sweep_settings

    bleu = dict(TRANSLATE_SWEEP_BLEU if bleu is None else bleu)
    total = 300
    settings = [dict(s.to_dict(), schedule=schedule_check(s.tf, total)) for s in sweep_settings("translate", total)]
    by_label = {s["label"]: s for s in settings}
    assert set(label for label, _ in bleu) <= set(by_label) and TUTORIALS_RULE in by_label
    runs = []
    for (label, seed), b in bleu.items():
        slug = by_label[label]["slug"]
        runs.append({
            "name": f"bahdanau-{slug}-s{seed}", "arch": "bahdanau", "setting": label, "seed": seed,
            "teacher_forcing": by_label[label]["teacher_forcing"], "checkpoint": None,
            "history": [{"epoch": e, "train_loss": 3.0 / e, "val_loss": 2.5 / e, "val_bleu": b * e / 2,
                         "tf_ratio": 1.0} for e in (1, 2)],
            "final": {"bleu": b, "sacrebleu": b - 1.0, "bleu_val": b + 0.5, "ppl": 6.0},
            "accuracy_by_position": {"1": 0.9, "2": round(b / 50, 4), "3": round(b / 100, 4)},
            "accuracy_by_position_teacher_forced": {"1": 0.9, "2": 0.8, "3": 0.75},
            "bleu_by_source_length": {"1-8": {"bleu": b + 5, "sacrebleu": b + 4, "sentences": 300},
                                      "9-12": {"bleu": b, "sacrebleu": b - 1, "sentences": 400},
                                      "13-16": {"bleu": b - 5, "sacrebleu": b - 6, "sentences": 200},
                                      "21+": {"bleu": b - 10, "sacrebleu": b - 11, "sentences": 30}},
            "seconds": 1.0})
    return {"format_version": 2, "sweep": "translate", "task": "translate", "metric": "bleu", "scale": scale,
            "note": "the full sweep" if scale == "full" else "a reduced sweep made by the tests",
            "total_batches": total, "batches_per_epoch": total // 2, "settings": settings, "archs": ["bahdanau"],
            "seeds": [1], "device": "cpu", "complete": True, "runs": runs,
            "extra_seeds": {"settings": ["constant 1", "inverse-sigmoid decay"], "seeds": [2, 3],
                            "best_scheduled": "inverse-sigmoid decay",
                            "chosen_on": "the best mean free-running validation BLEU of the first pass"}}


def tiny_reverse_sweep(folder: Path) -> Path:
    """A real format 2 reversal sweep, trained in seconds (as test_sweep's end-to-end test,
    one worker): gru, constant 0 and 1, the inverse-sigmoid decay and the tutorials' rule,
    2 seeds plus one more for constant 1 and the better scheduled policy."""
    from seq2seq.sweep import main

    out = Path(folder) / "reverse.json"
    args = ["reverse", "--out", str(out), "--jobs", "1", "--threads", "1", "--archs", "gru", "--seeds", "2",
            "--epochs", "2", "--train-size", "192", "--batch-size", "64", "--max-len", "5", "--emb", "8",
            "--hidden", "16", "--val-size", "32", "--eval-n", "10", "--extra-seeds", "1",
            "--settings", "tf0,tf1,inverse-sigmoid,tutorial0.5"]
    assert main(args) == 0
    return out
