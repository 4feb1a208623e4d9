"""The Translate and Reverse pages' "During training" tab (AppTest): every snapshot's decode
equals the command line's, and a model without snapshots says how to make them."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from apptest_util import elements, messages, open_page, plotly_array
from conftest import ROOT

TEXT = "abcd"


def train_with_snapshots(out, arch, state):
    cmd = [sys.executable, "-m", "seq2seq.train", "--task", "reverse", "--arch", arch, "--out", str(out),
           "--state-dir", str(state), "--epochs", "4", "--train-size", "3000", "--val-size", "100", "--max-len", "6",
           "--hidden", "32", "--emb", "16", "--attn-dim", "16", "--snapshots", "--device", "cpu", "--eval-n", "20"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def snap_root(tmp_path_factory, lab_root):
    """The lab's checkpoints plus a tiny reverse-bahdanau and reverse-gru trained with --snapshots."""
    root = tmp_path_factory.mktemp("snaps")
    for name in ("reverse-gru", "translate-bahdanau", "translate-lstm"):
        shutil.copytree(lab_root / name, root / name)
    for arch in ("bahdanau", "gru"):
        train_with_snapshots(root / f"reverse-{arch}", arch, root.parent / f"state-{arch}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTENTION_LAB_CHECKPOINTS", str(root))
        yield root


def chart(at, key):
    found = [json.loads(e.proto.spec) for e in elements(at.main, "plotly_chart") if e.proto.id.endswith("-" + key)]
    assert len(found) == 1, key
    return found[0]


def cli_decode(ckpt, n, text=TEXT):
    from seq2seq.translate import load_translator

    return load_translator(ckpt, snapshot=n).translate(text, beam=1, topk=5)


@pytest.mark.parametrize("arch", ["bahdanau", "gru"])
def test_every_snapshot_decodes_as_the_command_line(snap_root, arch):
    from seq2seq.snapshots import list_snapshots

    ckpt = snap_root / f"reverse-{arch}"
    snaps = list_snapshots(ckpt)
    assert len(snaps) >= 4
    at = open_page("pages/reverse.py", {"text": TEXT, "model": f"reverse-{arch}", "tab": "During training"})
    assert not at.exception
    expected = [cli_decode(ckpt, i) for i in range(len(snaps))]
    # the animation: one frame per snapshot, its heatmap the snapshot's alignment, its output in the title
    anim = chart(at, "reverse.training.anim")
    assert len(anim["frames"]) == len(snaps)
    for frame, snap, exp in zip(anim["frames"], snaps, expected):
        title = frame["layout"]["title"]["text"]
        assert f"step {snap['step']}, epoch {snap['epoch']}" in title and snap["metric"] in title
        assert title.endswith("output: " + (" ".join(exp.output_tokens).replace(" ", " ") or "(nothing)")) or \
            not exp.output_tokens
        if exp.output_tokens:
            z = plotly_array(frame["data"][0]["z"]).reshape(len(exp.output_tokens), -1)
            assert np.allclose(z, exp.alignment, atol=1e-5)
    # the table: every snapshot's output
    table = next(d.value for d in at.dataframe if "snapshot" in d.value.columns)
    assert list(table["output"]) == [e.text for e in expected]
    if arch == "bahdanau":
        assert "diagonality" in table.columns
    # the slider: each snapshot's output, metrics and heatmap
    for i in (0, len(snaps) - 1):
        at.select_slider(key="reverse.snapshot").set_value(i).run()
        assert not at.exception
        assert expected[i].text in [c.value for c in at.code] or not expected[i].output_tokens
        labels = {m.label: m.value for m in at.metric}
        assert labels["training step"] == str(snaps[i]["step"]) and labels["epoch"] == str(snaps[i]["epoch"])
        assert f"validation {snaps[i]['metric']}" in labels
        if expected[i].output_tokens:
            z = plotly_array(chart(at, "reverse.training.heatmap")["data"][0]["z"])
            assert np.allclose(z.reshape(expected[i].alignment.shape), expected[i].alignment, atol=1e-5)


def test_command_line_snapshot_json_matches_the_tab(snap_root):
    ckpt = snap_root / "reverse-bahdanau"
    out = subprocess.run([sys.executable, "-m", "seq2seq.translate", str(ckpt), TEXT, "--json", "--snapshot", "01"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr
    cli = json.loads(out.stdout)
    at = open_page("pages/reverse.py", {"text": TEXT, "model": "reverse-bahdanau", "tab": "During training"})
    table = next(d.value for d in at.dataframe if "snapshot" in d.value.columns)
    assert table["output"][1] == cli["text"]
    if cli["output_tokens"]:
        z = plotly_array(chart(at, "reverse.training.anim")["frames"][1]["data"][0]["z"])
        assert np.allclose(z.reshape(len(cli["output_tokens"]), -1), cli["alignment"], atol=1e-5)


@pytest.mark.parametrize("page,model", [("pages/translate.py", "translate-bahdanau"),
                                        ("pages/translate.py", "translate-lstm"),
                                        ("pages/reverse.py", "reverse-gru")])
def test_model_without_snapshots_names_the_command(snap_root, page, model):
    if model == "reverse-gru":   # the lab's tiny gru (no snapshots) under another name
        shutil.copytree(snap_root / "reverse-gru", snap_root / "reverse-lstm", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("snapshots"))
        model = "reverse-lstm"
    at = open_page(page, {"text": "Zwei Hunde" if "translate" in page else "abc", "model": model, "tab": "During training"})
    assert not at.exception
    assert "no snapshots" in messages(at)
    assert any("--snapshots" in c.value and "seq2seq.train" in c.value for c in at.code)
    assert at.code[0].value  # the page's own output still works


@pytest.mark.parametrize("text,fragment", [("   ", "Type something"), ("x" * 300, "truncated"),
                                           ("<b>x</b> **y** [l](http://e.x)", "")])
def test_bad_inputs_in_the_training_tab(snap_root, text, fragment):
    at = open_page("pages/reverse.py", {"text": text, "model": "reverse-bahdanau", "tab": "During training"})
    assert not at.exception
    assert fragment in messages(at)
    for e in elements(at.main, "plotly_chart"):
        assert "<b>x" not in e.proto.spec
    for md in at.markdown:
        assert "http" not in md.value
