import json
import subprocess
import sys

import numpy as np
import pytest

from seq2seq.translate import Translator

from conftest import ROOT
from conftest import save_tiny

REVERSE_CK = ROOT / "checkpoints" / "reverse-bahdanau"


def run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_translate_json_on_the_shipped_reversal_model():
    proc = run("-m", "seq2seq.translate", str(REVERSE_CK), "Hello World 42", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["source_tokens"] == list("hello world 42")
    assert "".join(out["output_tokens"]) == "24 dlrow olleh"
    assert out["alignment_kind"] == "attention"
    a = np.array(out["alignment"])
    assert a.shape == (len(out["output_tokens"]), len(out["source_tokens"]))
    assert np.allclose(a.sum(1), 1, atol=1e-4)
    # reversal attends at (or next to) the mirrored position
    assert np.abs(a.argmax(1) - np.arange(len(a))[::-1]).max() <= 1
    assert out["steps"][-1]["token"] == "<eos>" and len(out["steps"]) == len(out["output_tokens"]) + 1
    for step in out["steps"]:
        assert step["topk"][0][1] >= step["topk"][-1][1] and 0 < step["prob"] <= 1
    assert isinstance(out["log_prob"], float) and out["log_prob"] <= 0


def test_translate_plain_and_beam():
    proc = run("-m", "seq2seq.translate", str(REVERSE_CK), "abc", "--beam", "3")
    assert proc.returncode == 0 and proc.stdout.strip() == "cba"


@pytest.mark.parametrize("args,fragment", [
    (["/nonexistent/ck", "hi"], "not found"),
    ([str(REVERSE_CK), "   "], "empty"),
    ([str(REVERSE_CK), "abc", "--beam", "99"], "beam width"),
])
def test_translate_errors_are_one_line(args, fragment):
    proc = run("-m", "seq2seq.translate", *args)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and fragment in proc.stderr and "Traceback" not in proc.stderr


def test_evaluate_reversal_cli():
    proc = run("-m", "seq2seq.evaluate", str(REVERSE_CK), "--lengths", "1-12", "--n-per-length", "20", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    em = out["exact_match_by_length"]
    assert set(em) == {str(n) for n in range(1, 13)}
    assert min(em.values()) >= 0.9


def test_saliency_for_models_without_attention(tmp_path):
    save_tiny(tmp_path / "ck", "lstm")
    tr = Translator.load(tmp_path / "ck")
    res = tr.translate("abcabc")
    assert res.alignment_kind == "saliency"
    assert res.alignment.shape == (len(res.output_tokens), 6)
    if len(res.output_tokens):
        assert np.allclose(res.alignment.sum(1), 1, atol=1e-5)
    assert all(p.grad is None for p in tr.model.parameters())  # cached models stay untouched


def test_unknown_and_truncated_inputs(tmp_path):
    save_tiny(tmp_path / "ck", "bahdanau")
    tr = Translator.load(tmp_path / "ck")
    res = tr.translate("ä" * 50)  # tiny test vocab: every char is unknown; max_src_len is 30
    assert all(res.source.unknown) and res.source.truncated
    assert len(res.source.tokens) == 30 and res.source.n_tokens == 50


def test_translate_with_a_snapshot(tmp_path):
    import shutil

    save_tiny(tmp_path / "ck", "bahdanau", seed=0)
    save_tiny(tmp_path / "other", "bahdanau", seed=5)
    shutil.copytree(tmp_path / "other", tmp_path / "ck" / "snapshots" / "00")   # a snapshot is a checkpoint dir
    direct = run("-m", "seq2seq.translate", str(tmp_path / "other"), "abcab", "--json")
    snap = run("-m", "seq2seq.translate", str(tmp_path / "ck"), "abcab", "--json", "--snapshot", "0")
    final = run("-m", "seq2seq.translate", str(tmp_path / "ck"), "abcab", "--json")
    assert snap.returncode == 0, snap.stderr
    assert json.loads(snap.stdout) == json.loads(direct.stdout)                 # decoded with the snapshot's weights
    assert json.loads(final.stdout)["alignment"] != json.loads(snap.stdout)["alignment"]


def test_translate_snapshot_missing_is_one_line_naming_the_command():
    proc = run("-m", "seq2seq.translate", str(REVERSE_CK), "abc", "--snapshot", "99")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "no such snapshot" in proc.stderr and "--snapshots" in proc.stderr
    bad = run("-m", "seq2seq.translate", str(REVERSE_CK), "abc", "--snapshot", "-1")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
