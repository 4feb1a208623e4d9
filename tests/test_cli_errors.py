"""Every command answers bad arguments, bad input and bad checkpoints with ONE line on
stderr and exit status 2, never a traceback.

Every damaged-checkpoint kind goes through both `python -m seq2seq.translate` and
`python -m seq2seq.evaluate` as real subprocesses (a few at a time: starting Python with
torch costs seconds), as does one usage error per command. The many other cases call the
same `run_main(main, argv)` the `python -m` entry points call, in-process."""
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from seq2seq.checkpoint import CARD, VOCAB, WEIGHTS, sha256_file
from seq2seq.cli import run_main
from seq2seq.config import ModelConfig, TrainConfig
from seq2seq.train import load_task_data, train

from conftest import ROOT
from conftest import save_tiny

REVERSE_CK = ROOT / "checkpoints" / "reverse-bahdanau"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}


class _Payload:
    """Unpickling this runs `touch MARKER`: the proof a loader unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _damage(kind: str, ck, other, marker) -> None:
    """Break checkpoint `ck` the way `kind` says (`other` is a second, different model)."""
    w, card_path = ck / WEIGHTS, ck / CARD
    if kind == "truncated":
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    elif kind == "flipped":
        data = bytearray(w.read_bytes())
        data[len(data) // 2] ^= 0xFF
        w.write_bytes(bytes(data))
    elif kind == "swapped":
        shutil.copy(other / WEIGHTS, w)
    elif kind == "newer":
        card = json.loads(card_path.read_text())
        card["format_version"] = 99
        card_path.write_text(json.dumps(card))
    elif kind == "no-vocab":
        (ck / VOCAB).unlink()
    elif kind in ("pickle", "pickle-forged"):
        torch.save({"weights": _Payload(marker)}, w)
        if kind == "pickle-forged":   # hash and size forged to match: the reader itself must refuse
            card = json.loads(card_path.read_text())
            card["files"][WEIGHTS] = {"sha256": sha256_file(w), "bytes": w.stat().st_size}
            card_path.write_text(json.dumps(card))
    elif kind == "card-not-json":
        card_path.write_text(card_path.read_text()[:40])
    else:
        raise ValueError(kind)


# damage kind -> a fragment of the one-line message (the message also names the file)
DAMAGE = {"truncated": "truncated", "flipped": "sha256", "swapped": "sha256", "newer": "newer",
          "no-vocab": "missing", "pickle-forged": "safetensors"}


def _subprocess_cases(tmp) -> dict[str, tuple[list[str], str]]:
    """name -> (arguments after `python`, fragment of the message); all must exit 2.

    Every damaged checkpoint through both commands, and one usage error per command
    through its real `python -m` entry point. The many other cases run in-process below
    (same code, without paying for a Python start each)."""
    other = tmp / "other"
    save_tiny(other, seed=1)
    cases = {}
    for kind, fragment in DAMAGE.items():
        ck = tmp / kind
        save_tiny(ck)
        _damage(kind, ck, other, tmp / f"pwned-{kind}")
        cases[f"translate-{kind}"] = (["-m", "seq2seq.translate", str(ck), "abc"], fragment)
        cases[f"evaluate-{kind}"] = (["-m", "seq2seq.evaluate", str(ck), "--lengths", "1-2"], fragment)
    cases["translate-usage"] = (["-m", "seq2seq.translate", str(REVERSE_CK), "abc", "--beam", "x"], "--beam")
    cases["evaluate-usage"] = (["-m", "seq2seq.evaluate", str(REVERSE_CK), "--lengths", "0-5"], "lengths")
    cases["train-usage"] = (["-m", "seq2seq.train", "--task", "reverse", "--arch", "gru", "--out", str(tmp / "o"),
                             "--epochs", "0"], "--epochs")
    return cases


SUBPROCESS_CASES = ([f"{cli}-{kind}" for kind in DAMAGE for cli in ("translate", "evaluate")]
                    + ["translate-usage", "evaluate-usage", "train-usage"])


@pytest.fixture(scope="module")
def subprocess_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    cases = _subprocess_cases(tmp)

    def run(args):
        return subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True,
                              encoding="utf-8", errors="replace", timeout=180)

    with ThreadPoolExecutor(max_workers=4) as pool:
        procs = dict(zip(cases, pool.map(run, (args for args, _ in cases.values()))))
    return tmp, cases, procs


def _assert_one_line(status, err, out, fragment, expected_status=2):
    assert "Traceback" not in err, err
    assert status == expected_status, (status, err)
    assert len(err.splitlines()) == 1 and err.endswith("\n"), f"not one line: {err!r}"
    assert fragment in err, err
    assert out == ""


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_command_answers_one_line_and_status_2(subprocess_results, name):
    _, cases, procs = subprocess_results
    proc = procs[name]
    _assert_one_line(proc.returncode, proc.stderr, proc.stdout, cases[name][1])


def test_pickle_payload_never_ran(subprocess_results):
    tmp, cases, _ = subprocess_results
    assert sorted(cases) == sorted(SUBPROCESS_CASES)
    assert (tmp / "pickle-forged").is_dir() and not list(tmp.glob("pwned-*"))


def test_undecodable_argument_bytes_are_read_not_crashed_on():
    """Bytes that are not UTF-8 reach Python as lone surrogates: the tool still answers."""
    proc = subprocess.run([sys.executable.encode(), b"-m", b"seq2seq.translate", str(REVERSE_CK).encode(),
                           b"ab\xff\xfe c", b"--json"], cwd=ROOT, env=ENV, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    out = json.loads(proc.stdout.decode("utf-8"))
    assert out["source_tokens"][:2] == ["a", "b"] and out["text"]


# ------------------------------------------------------------------ in-process
def call(main, argv, capsys):
    """Run a command's main as `python -m` would (through run_main): (status, stderr, stdout)."""
    grad = torch.is_grad_enabled()
    try:
        status = run_main(main, argv)
    except SystemExit as e:                 # argparse exits by itself
        status = e.code
    leaked = torch.is_grad_enabled() != grad
    torch.set_grad_enabled(grad)
    assert not leaked, "a command's main changed the process's autograd mode"
    captured = capsys.readouterr()
    return status, captured.err, captured.out


@pytest.mark.parametrize("argv,fragment", [
    (["{tmp}/nowhere", "abc"], "not found"),
    ([REVERSE_CK, " \t\n "], "empty"),
    ([REVERSE_CK, "\x01\x02"], "nothing left to read"),
    ([REVERSE_CK, "abc", "--beam", "99"], "beam width"),
    ([REVERSE_CK, "abc", "--beam", "0"], "beam width"),
    ([REVERSE_CK], "text"),
    ([REVERSE_CK, "abc", "--nope"], "--nope"),
    ([], "required"),
    (["{tmp}/card-not-json", "abc"], "not valid JSON"),
    (["{tmp}/pickle", "abc"], "truncated or was replaced"),
])
def test_translate_errors(argv, fragment, capsys, tmp_path):
    from seq2seq import translate
    _broken_checkpoints(tmp_path)
    argv = [str(a).format(tmp=tmp_path) for a in argv]
    _assert_one_line(*call(translate.main, argv, capsys), fragment)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("argv,fragment", [
    ([REVERSE_CK, "--lengths", "9-2"], "lengths"),
    ([REVERSE_CK, "--n-per-length", "0"], "--n-per-length"),
    ([REVERSE_CK, "--beam", "-3"], "--beam"),
    ([REVERSE_CK, "--device", "toaster"], "device"),
    ([REVERSE_CK, "--split", "train"], "--split"),
    (["{tmp}/card-not-json"], "not valid JSON"),
    (["{tmp}/translate-tiny", "--data-dir", "{tmp}/no-data"], "Multi30k"),
])
def test_evaluate_errors(argv, fragment, capsys, tmp_path):
    from seq2seq import evaluate
    _broken_checkpoints(tmp_path)
    argv = [str(a).format(tmp=tmp_path) for a in argv]
    _assert_one_line(*call(evaluate.main, argv, capsys), fragment)


TRAIN = ["--task", "reverse", "--arch", "bahdanau", "--device", "cpu", "--out", "{tmp}/o"]


@pytest.mark.parametrize("argv,fragment", [
    (["--arch", "gru", "--out", "{tmp}/o"], "--task"),
    (["--task", "reverse", "--arch", "cnn", "--out", "{tmp}/o"], "--arch"),
    (["--task", "reverse", "--arch", "gru"], "--out"),
    ([*TRAIN, "--batch-size", "0"], "--batch-size"),
    ([*TRAIN, "--device", "toaster"], "device"),
    ([*TRAIN, "--min-len", "9", "--max-len", "3"], "--min-len"),
    (["--task", "reverse", "--arch", "gru", "--out", "{tmp}/a-file"], "not a directory"),
    ([*TRAIN, "--lr", "-1", "--state-dir", "{tmp}/s", "--train-size", "64", "--val-size", "8"], "learning rate"),
    ([*TRAIN, "--resume", "--state-dir", "{tmp}/empty"], "no saved state"),
    ([*TRAIN, "--resume", "--state-dir", "{tmp}/state-damaged"], "cannot resume"),
    ([*TRAIN, "--resume", "--state-dir", "{tmp}/state-not-json"], "not valid JSON"),
    (["--task", "translate", "--arch", "gru", "--out", "{tmp}/o", "--data-dir", "{tmp}/no-data"], "Multi30k"),
])
def test_train_errors(argv, fragment, capsys, tmp_path):
    from seq2seq import train as train_cli
    (tmp_path / "a-file").write_text("x")
    if "state-damaged" in " ".join(argv) or "state-not-json" in " ".join(argv):
        _state_dirs(tmp_path)
    argv = [str(a).format(tmp=tmp_path) for a in argv]
    _assert_one_line(*call(train_cli.main, argv, capsys), fragment)
    assert not (tmp_path / "o").exists()


def _broken_checkpoints(tmp):
    save_tiny(tmp / "card-not-json")
    _damage("card-not-json", tmp / "card-not-json", None, None)
    save_tiny(tmp / "pickle")
    _damage("pickle", tmp / "pickle", None, tmp / "pwned")
    _translate_ck(tmp)


def _translate_ck(tmp):
    """A loadable checkpoint of the translation task (evaluate then needs Multi30k)."""
    ck = tmp / "translate-tiny"
    save_tiny(ck)
    card = json.loads((ck / CARD).read_text())
    card.update(task="translate", tokenizers={"src": "spacy:de", "tgt": "spacy:en"})
    (ck / CARD).write_text(json.dumps(card))
    return ck


def _state_dirs(tmp):
    """A real resumable state (one tiny epoch), copied twice and damaged: its weights,
    and its state.json."""
    mc = ModelConfig(arch="bahdanau", emb_dim=8, hidden_dim=8, attn_dim=8, dropout=0.0, max_src_len=10, max_out_len=10)
    tc = TrainConfig(task="reverse", epochs=1, batch_size=32, reverse_max_len=4, reverse_train_size=64,
                     reverse_val_size=8)
    train(mc, tc, None, load_task_data(tc, None, None), torch.device("cpu"), state_dir=tmp / "state",
          progress=False, final_eval=False)
    shutil.copytree(tmp / "state", tmp / "state-damaged")
    w = next((tmp / "state-damaged").glob("state-*.safetensors"))
    w.write_bytes(w.read_bytes()[:-10] + b"0123456789")
    shutil.copytree(tmp / "state", tmp / "state-not-json")
    (tmp / "state-not-json" / "state.json").write_text("{\"epoch\": 1, ")


