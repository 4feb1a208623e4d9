"""Inside one step: the attention arithmetic recomputed from the weights must equal what the
decoder did (weights within 1e-6 of its attention row, top-k equal to its candidates)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from seq2seq.decoding import greedy_decode
from seq2seq.step_detail import (additive_energies, attention_weights, contribution_along_context, explain_step,
                                 general_scores, padded_step_energies, weighted_context)
from seq2seq.translate import Translator
from seq2seq.vocab import EOS_ID, SOS_ID

from conftest import ROOT, padded_batch, tiny_model

REVERSE_CK = ROOT / "checkpoints" / "reverse-bahdanau"
TRANSLATE_LUONG = ROOT / "checkpoints" / "translate-luong"


def _eos_likely(arch, seed=0):
    model = tiny_model(arch, seed=seed)
    with torch.no_grad():
        model.decoder.out.proj.bias[EOS_ID] += 1.0
    return model


def _check_every_step(model, src_ids, hyp, topk=4):
    assert hyp.step_tokens, "nothing decoded"
    for t in range(1, len(hyp.step_tokens) + 1):
        d = explain_step(model, src_ids, hyp.step_tokens, t, topk=topk)
        assert d.topk_ids == hyp.topk_ids[t - 1]                       # the step's candidates, in order
        np.testing.assert_allclose(d.topk_probs, hyp.topk_probs[t - 1], atol=1e-5)
        assert d.chosen_id == hyp.step_tokens[t - 1]
        assert d.input_id == (SOS_ID if t == 1 else hyp.step_tokens[t - 2])
        if model.has_attention:
            assert d.energies.shape == d.weights.shape == (len(src_ids),)
            assert np.abs(d.weights - hyp.attention[t - 1]).max() <= 1e-6
            assert d.weights.sum() == pytest.approx(1.0, abs=1e-9)
            # each token's share of the context along its direction adds up to |c|
            assert d.contributions.sum() == pytest.approx(d.context_norm, rel=1e-6, abs=1e-9)
            assert not d.fixed_context
        else:
            assert d.energies is None and d.weights is None and d.fixed_context


@pytest.mark.parametrize("seed", [0, 1])
def test_recomputed_step_equals_the_decoder_on_tiny_models(arch, seed):
    model = _eos_likely(arch, seed)
    src, lens = padded_batch([6, 3], seed=seed + 5)
    for i, hyp in enumerate(greedy_decode(model, src, lens, topk=4)):
        _check_every_step(model, src[i, : int(lens[i])].tolist(), hyp)


@pytest.mark.parametrize("path,text", [(REVERSE_CK, "hello world 42"),
                                       (TRANSLATE_LUONG, "Zwei Hunde spielen im Schnee."),
                                       (ROOT / "checkpoints" / "translate-bahdanau", "Ein Mann fährt Fahrrad.")])
def test_recomputed_step_equals_the_shipped_models(path, text):
    tr = Translator.load(path)
    res = tr.translate(text, topk=5)
    for t in range(1, len(res.steps) + 1):
        d = explain_step(tr.model, res.source.ids, res.step_tokens, t, topk=5)
        assert np.abs(d.weights - res.step_alignment[t - 1]).max() <= 1e-6
        assert [tr.ckpt.tgt_vocab.itos[i] for i in d.topk_ids] == [c[0] for c in res.steps[t - 1]["topk"]]


def test_beam_winner_steps_are_recomputed_too():
    tr = Translator.load(REVERSE_CK)
    res = tr.translate("attention", beam=4, topk=3)
    for t in (1, 4, len(res.steps)):
        d = explain_step(tr.model, res.source.ids, res.step_tokens, t, topk=3)
        assert np.abs(d.weights - res.step_alignment[t - 1]).max() <= 1e-6
        assert [tr.ckpt.tgt_vocab.itos[i] for i in d.topk_ids] == [c[0] for c in res.steps[t - 1]["topk"]]


@pytest.mark.parametrize("arch_name", ["bahdanau", "luong"])
def test_padding_is_excluded_and_matches_the_decoders_batch(arch_name):
    model = _eos_likely(arch_name, seed=3)
    src, lens = padded_batch([7, 4, 2], seed=4)
    with torch.no_grad():
        memory, state = model.encode(src, lens)
        prev = torch.full((3,), SOS_ID)
        _, state, _ = model.decode_step(prev, state, memory)            # one step in: a real state
        prev = torch.tensor([5, 6, 7])
        energies, weights = padded_step_energies(model, prev, state, memory)
        _, _, decoder_attn = model.decode_step(prev, state, memory)
    assert energies.shape == weights.shape == (3, 7)
    assert torch.isfinite(energies).all()                                # padding energies exist ...
    assert (weights[~memory.mask] == 0).all()                            # ... but get exactly 0 weight
    assert torch.allclose(weights.sum(1), torch.ones(3), atol=1e-6)
    assert (weights - decoder_attn).abs().max() <= 1e-6


def test_pure_functions_on_hand_numbers():
    # additive: v^T tanh(W s + U h + b) with 1-d everything
    e = additive_energies(torch.tensor([[1.0]]), torch.tensor([[[0.0], [2.0]]]), torch.tensor([[1.0]]),
                          torch.tensor([[1.0]]), torch.tensor([0.0]), torch.tensor([[2.0]]))
    assert torch.allclose(e, 2 * torch.tanh(torch.tensor([[1.0, 3.0]])))
    g = general_scores(torch.tensor([[1.0, 2.0]]), torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]), torch.eye(2))
    assert g.tolist() == [[1.0, 2.0]]
    w = attention_weights(torch.tensor([[0.0, 0.0, 5.0]]), torch.tensor([[True, True, False]]))
    assert w.tolist() == [[0.5, 0.5, 0.0]]
    ctx, parts = weighted_context(w, torch.tensor([[[2.0, 0.0], [0.0, 2.0], [9.0, 9.0]]]))
    assert ctx.tolist() == [[1.0, 1.0]] and parts[0, 2].tolist() == [0.0, 0.0]
    assert torch.allclose(contribution_along_context(parts, ctx), torch.tensor([[2 ** -0.5, 2 ** -0.5, 0.0]]))


@pytest.mark.parametrize("arch_name", ["lstm", "gru"])
def test_models_without_attention_show_the_fixed_context(arch_name):
    model = _eos_likely(arch_name, seed=2)
    src, lens = padded_batch([5], seed=2)
    ids = src[0].tolist()
    (hyp,) = greedy_decode(model, src, lens, topk=3)
    steps = hyp.step_tokens + [5, 6] if len(hyp.step_tokens) < 3 else hyp.step_tokens
    first = explain_step(model, ids, steps, 1, topk=3)
    third = explain_step(model, ids, steps, 3, topk=3)
    assert first.fixed_context and first.energies is None
    np.testing.assert_array_equal(first.context, third.context)         # the same context at every step
    with torch.no_grad():
        memory, state = model.encode(src, lens)
    expected = memory.context[0] if arch_name == "gru" else state["h"][0, -1]
    np.testing.assert_allclose(first.context, expected.double().numpy(), atol=1e-7)
    assert first.topk_ids == hyp.topk_ids[0]
    assert "encoder's final state" in first.context_label


def test_out_of_range_step_is_an_input_error():
    from seq2seq.errors import InputError

    model = _eos_likely("bahdanau")
    with pytest.raises(InputError):
        explain_step(model, [5, 6], [7, EOS_ID], 3)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "seq2seq.translate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_cli_step_detail_matches_the_alignment():
    proc = _cli(str(REVERSE_CK), "abc xyz", "--json", "--step", "3")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    d = out["step_detail"]
    assert d["step"] == 3
    assert len(d["energies"]) == len(d["weights"]) == len(out["source_tokens"])
    assert np.abs(np.array(d["weights"]) - np.array(out["alignment"][2])).max() <= 1e-6
    assert [c[0] for c in d["topk"]] == [c[0] for c in out["steps"][2]["topk"]]
    assert d["context_norm"] > 0 and d["token"] == out["output_tokens"][2]
    # reversal attends at (or next to) the mirrored position
    assert abs(int(np.argmax(d["weights"])) - (len(out["source_tokens"]) - 3)) <= 1


@pytest.mark.parametrize("args,fragment", [(["--json", "--step", "50"], "took"),
                                           (["--step", "1"], "with --json"),
                                           (["--json", "--step", "0"], "at least 1")])
def test_cli_step_errors_are_one_line(args, fragment):
    proc = _cli(str(REVERSE_CK), "abc", *args)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and fragment in proc.stderr
    assert "Traceback" not in proc.stderr


def test_step_figures_escape_tokens_and_show_padding_excluded():
    from seq2seq import figures as figures_step

    tokens = ["<b>x</b>", "der", "der", "<pad>"]
    fig = json.loads(figures_step.step_energy_figure(tokens, [0.5, 1.0, 1.0, 3.0], [0.2, 0.4, 0.4, 0.0],
                                                     included=[True, True, True, False], step=2).to_json())
    assert fig["layout"]["xaxis2"]["tickvals"] == [0, 1, 2, 3]                      # positions, not tokens
    ticks = fig["layout"]["xaxis2"]["ticktext"]
    assert ticks[0] == "&lt;b&gt;x&lt;/b&gt;" and ticks[1] == ticks[2] == "der" and "excluded" in ticks[3]
    assert fig["data"][1]["y"] == [0.2, 0.4, 0.4, 0.0] and fig["data"][1]["marker"]["color"][3] == "lightgray"
    assert "<b>x" not in json.dumps(fig)
    contrib = json.loads(figures_step.context_contribution_figure(tokens[:2], [1.0, 0.5], [1.2, 0.6], 1.5).to_json())
    assert contrib["data"][0]["y"] == [1.0, 0.5] and "1.500" in contrib["layout"]["title"]["text"]
    top = json.loads(figures_step.topk_figure(["<i>a</i>", "b"], [0.7, 0.2], chosen="<i>a</i>").to_json())
    assert top["layout"]["yaxis"]["ticktext"][0] == "&lt;i&gt;a&lt;/i&gt;" and top["data"][0]["marker"]["color"][0] == "crimson"
    fixed = json.loads(figures_step.fixed_context_figure(np.ones(4), 1.0, 2.0, step=3).to_json())
    assert fixed["data"][0]["z"] == [[1.0] * 4] and "same at every step" in fixed["layout"]["title"]["text"]
