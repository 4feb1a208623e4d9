"""Attention against attribution: the attributions are what their definitions say, the
correlations are correlations, and ablating attention changes what it should."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seq2seq import saliency
from seq2seq.attribution import (ATTRIBUTION_METHODS, ablate_attention, agreement, agreement_summary,
                                 all_step_log_probs, attribution_report, average_ranks, gradient_saliency,
                                 grad_input, integrated_gradients, mask_position, most_attended_position,
                                 occlusion, spearman, uniform_keys)
from seq2seq.decoding import greedy_decode
from seq2seq.translate import Translator
from seq2seq.vocab import SOS_ID, UNK_ID

from conftest import ROOT, padded_batch, tiny_model

REVERSE_CK = ROOT / "checkpoints" / "reverse-bahdanau"


def _eos_late(arch, seed=0):
    return tiny_model(arch, seed=seed)


def _decoded(model, n_src=5, seed=1, max_len=6):
    src, lens = padded_batch([n_src], seed=seed)
    (hyp,) = greedy_decode(model, src, lens, max_len=max_len, topk=2)
    return src[0].tolist(), hyp


def _score_of_row(model, embedded, out_ids, t):
    """log p(y_t | y_<t, source) from the plain teacher-forced forward, embeddings given."""
    src = torch.zeros(1, embedded.size(1), dtype=torch.long)
    memory, state = model.encode(src, torch.tensor([embedded.size(1)]), src_embedded=embedded)
    prev = torch.tensor([SOS_ID])
    for s in range(t + 1):
        logits, state, _ = model.decode_step(prev, state, memory)
        prev = torch.tensor([out_ids[s]])
    return F.log_softmax(logits.float(), -1)[0, out_ids[t]]


def test_grad_input_is_gradient_times_input(arch):
    model = _eos_late(arch, seed=3)
    ids, hyp = _decoded(model)
    out = hyp.tokens[:4]
    got = grad_input(model, ids, out)
    assert got.shape == (len(out), len(ids))
    for t in (0, len(out) - 1):
        with torch.enable_grad():
            e = model.encoder.embed(torch.tensor([ids])).detach().requires_grad_(True)
            (g,) = torch.autograd.grad(_score_of_row(model, e, out, t), e)
        np.testing.assert_allclose(got[t], (g * e).sum(-1)[0].detach().numpy(), atol=1e-5)


def test_integrated_gradients_are_complete(arch):
    model = _eos_late(arch, seed=4)
    ids, hyp = _decoded(model)
    out = hyp.tokens[:4]
    ig, gap = integrated_gradients(model, ids, out, steps=64, return_completeness=True)
    # rows add up to f(e) - f(zero embeddings): the path integral, up to the midpoint rule's error
    np.testing.assert_allclose(ig.sum(1), gap, atol=0.02 * np.abs(gap).max() + 1e-3)
    with pytest.raises(ValueError):
        integrated_gradients(model, ids, out, steps=10)


def test_occlusion_is_the_drop_in_log_probability():
    model = _eos_late("luong", seed=5)
    ids, hyp = _decoded(model, n_src=4)
    out = hyp.tokens
    drop = occlusion(model, ids, out)
    assert drop.shape == (len(out), len(ids))
    base = all_step_log_probs(model, torch.tensor([ids]), out)[0]
    np.testing.assert_allclose(base.numpy(), np.log(hyp.step_probs[: len(out)]), atol=1e-5)   # the decoder's own
    for j in range(len(ids)):
        occluded = list(ids)
        occluded[j] = UNK_ID
        lp = all_step_log_probs(model, torch.tensor([occluded]), out)[0]
        np.testing.assert_allclose(drop[:, j], (base - lp).numpy(), atol=1e-5)


def test_spearman_on_hand_values():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert average_ranks([5, 1, 5, 3]).tolist() == [3.5, 1.0, 3.5, 2.0]
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)   # ties: Pearson of ranks
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3])) and np.isnan(spearman([1], [2]))
    rho, same = agreement(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]), np.array([[-3.0, 1.0, 0.5], [2.0, 0.0, 1.0]]))
    assert rho[0] == pytest.approx(1.0) and same == [True, False]                 # compared on |attribution|
    summary = agreement_summary("occlusion", rho, same)
    assert summary["argmax_agreement"] == 0.5 and "1 of 2 rows (50%)" in summary["text"]


def test_report_on_the_shipped_reversal_model():
    tr = Translator.load(REVERSE_CK)
    res = tr.translate("hello world")
    out = res.step_tokens[: len(res.output_tokens)]
    for method in ATTRIBUTION_METHODS:
        rep = attribution_report(tr.model, res.source.ids, out, method, attention=res.alignment)
        assert rep.matrix.shape == res.alignment.shape and not rep.bounded and rep.note is None
        rho = np.array(rep.spearman_with_attention)
        assert len(rho) == len(out) and np.all((rho >= -1) & (rho <= 1))
        # reversal is positional: every method finds attention's focus meaningful more often than chance
        assert rep.summary["argmax_agreement"] > 1 / len(res.source.ids)
        assert rep.summary["mean_spearman"] > 0
        js = rep.to_json()
        assert js["method"] == method and len(js["matrix"]) == len(out) and len(js["matrix"][0]) == 11


def test_cost_is_bounded_and_said():
    tr = Translator.load(REVERSE_CK)
    res = tr.translate("abcdefghij")
    out = res.step_tokens[: len(res.output_tokens)]
    rep = attribution_report(tr.model, res.source.ids, out, "occlusion", attention=res.alignment, limit=4)
    assert rep.matrix.shape == (4, 4) and rep.bounded
    assert "first 4 of 10 source tokens" in rep.note and "first 4 of 10 output tokens" in rep.note
    full = occlusion(tr.model, res.source.ids, out)
    np.testing.assert_allclose(rep.matrix, full[:4, :4], atol=1e-6)               # the same numbers, fewer


def test_models_without_attention_get_attributions_alone():
    model = _eos_late("gru", seed=6)
    ids, hyp = _decoded(model)
    rep = attribution_report(model, ids, hyp.tokens, "grad_input")
    assert rep.spearman_with_attention is None and "spearman_with_attention" not in rep.to_json()
    with pytest.raises(ValueError):
        ablate_attention(model, ids, "uniform")
    assert saliency.gradient_saliency is gradient_saliency                       # the app's import still works
    assert all(p.grad is None for p in model.parameters())


def test_uniform_and_masked_memories():
    model = _eos_late("bahdanau", seed=7)
    src, lens = padded_batch([5, 3], seed=8)
    with torch.no_grad():
        memory, state = model.encode(src, lens)
        _, _, attn = model.decode_step(torch.full((2,), SOS_ID), state, uniform_keys(memory))
        _, _, masked = model.decode_step(torch.full((2,), SOS_ID), state, mask_position(memory, 1))
    assert torch.allclose(attn[0], torch.full((5,), 0.2), atol=1e-6)
    assert torch.allclose(attn[1, :3], torch.full((3,), 1 / 3), atol=1e-6) and (attn[1, 3:] == 0).all()
    assert (masked[:, 1] == 0).all() and torch.allclose(masked.sum(1), torch.ones(2), atol=1e-6)
    assert most_attended_position(np.array([[0.1, 0.9], [0.6, 0.4], [0.7, 0.3]])) == 1


def test_ablating_attention_breaks_reversal():
    # reversal is the case built for it: every output character must read one source position
    tr = Translator.load(REVERSE_CK)
    itos = tr.ckpt.tgt_vocab.itos
    res = tr.translate("hello world")
    normal = res.step_tokens[: len(res.output_tokens)]
    uniform = ablate_attention(tr.model, res.source.ids, "uniform", res.alignment)
    assert uniform.changed(normal)
    np.testing.assert_allclose(uniform.attention, 1 / len(res.source.ids), atol=1e-6)
    ops = uniform.diff(normal, itos)
    assert any(o["op"] != "equal" for o in ops)
    assert sum((len(o["reference"]) for o in ops), 0) == len(normal)              # the diff covers the output
    top = ablate_attention(tr.model, res.source.ids, "mask_top", res.alignment)
    assert top.masked_position == most_attended_position(res.alignment)
    assert (top.attention[:, top.masked_position] == 0).all() and top.changed(normal)
    with pytest.raises(ValueError):
        ablate_attention(tr.model, [5], "mask_top", np.ones((1, 1)))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "seq2seq.translate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=180)


@pytest.mark.parametrize("method", ATTRIBUTION_METHODS)
def test_cli_attribution(method):
    proc = _cli(str(REVERSE_CK), "abc 12", "--json", "--attribution", method)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    att = out["attribution"]
    assert att["method"] == method
    assert np.array(att["matrix"]).shape == (len(out["output_tokens"]), len(out["source_tokens"]))
    rho = att["spearman_with_attention"]
    assert len(rho) == len(out["output_tokens"]) and all(-1 <= r <= 1 for r in rho if r is not None)


def test_cli_attribution_without_attention_and_bad_method():
    proc = _cli(str(ROOT / "checkpoints" / "reverse-gru"), "abc", "--json", "--attribution", "occlusion")
    assert proc.returncode == 0, proc.stderr
    att = json.loads(proc.stdout)["attribution"]
    assert "spearman_with_attention" not in att and len(att["matrix"]) == 3
    bad = _cli(str(REVERSE_CK), "abc", "--json", "--attribution", "lime")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "invalid choice" in bad.stderr


def test_comparison_and_diff_figures():
    from seq2seq import figures as figures_step
    from seq2seq.decoding import token_diff

    att = np.array([[0.9, 0.1], [0.2, 0.8]])
    gi = np.array([[-2.0, 1.0], [0.5, 1.0]])
    fig = json.loads(figures_step.attribution_comparison_figure(
        ["<b>x</b>", "y"], ["a", "a"], [("attention", att), ("gradient × input", gi)],
        spearman={"gradient × input": [1.0, None]}, note="first 2 of 3 source tokens").to_json())
    assert fig["data"][0]["z"] == att.tolist()
    assert fig["data"][1]["z"] == [[1.0, 0.5], [0.5, 1.0]]                  # by size, each row scaled to its max
    assert fig["layout"]["yaxis"]["tickvals"] == [0, 1] and "<b>x" not in json.dumps(fig)
    assert "first 2 of 3" in fig["layout"]["title"]["text"]
    diff = json.loads(figures_step.token_diff_figure(token_diff(["a", "<b>", "c"], ["a", "d", "c", "e"]),
                                                     "normal", "uniform attention").to_json())
    cells = diff["data"][0]
    assert cells["z"][0] == [0, 1, 0, 3]                                      # same, changed, same, only in other
    assert cells["text"] == [["a", "&lt;b&gt;", "c", ""], ["a", "d", "c", "e"]]
    assert "2 of 4 positions" in diff["layout"]["title"]["text"]
