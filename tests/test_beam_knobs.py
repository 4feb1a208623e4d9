"""Beam search knobs: the length exponent alpha, GNMT's coverage penalty beta, the n-best
and the beam tree; alpha = 1 and beta = 0 must give exactly today's results."""
from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from seq2seq.decoding import (PAD_ID, SOS_ID, EOS_ID, _prefix_tensor, _source_lengths, beam_search,
                              coverage_penalty, greedy_decode, next_token_logprobs, slot_history, slot_path,
                              token_diff, winner_slot)
from seq2seq.models import reorder_state
from seq2seq.translate import Translator

from conftest import ROOT, padded_batch, tiny_model

REVERSE_CK = ROOT / "checkpoints" / "reverse-bahdanau"
TRANSLATE_CK = ROOT / "checkpoints" / "translate-bahdanau"


# ------------------------------------------------------------------ today's beam search, frozen
try:   # the reference runs on whatever path decoding runs on
    from seq2seq.models import inference_path as _on_the_decoding_path
except ImportError:
    _on_the_decoding_path = torch.inference_mode()


@_on_the_decoding_path
def reference_beam_search(model, src, src_lens, beam: int = 5, max_len: int | None = None,
                topk: int = 5, alpha: float = 1.0, prefix: list[list[int]] | None = None,
                return_tree: bool = False) -> list:
    """seq2seq/decoding.py's beam search before alpha/coverage knobs and the n-best (verbatim
    but for the tree): the reference that alpha = 1, beta = 0 must reproduce exactly."""
    if beam < 1:
        raise ValueError("beam width must be at least 1")
    device = src.device
    batch, K = src.size(0), beam
    V = model.cfg.tgt_vocab_size
    max_len = max_len or model.cfg.max_out_len
    memory, state = model.encode(src, src_lens)
    expand = torch.arange(batch, device=device).repeat_interleave(K)   # [B*K]
    memory, state = memory.index_select(expand), reorder_state(state, expand)
    forced, forced_lens = _prefix_tensor(prefix, batch, device)

    scores = torch.full((batch, K), float("-inf"), device=device)
    scores[:, 0] = 0.0                                  # only the first beam is alive at start
    lengths = torch.zeros(batch, K, device=device)
    finished = torch.zeros(batch, K, dtype=torch.bool, device=device)
    prev = torch.full((batch * K,), SOS_ID, dtype=torch.long, device=device)
    k = min(topk, V)
    # a finished beam may only be extended by <pad> at no cost: its score stays frozen
    frozen = torch.full((V,), float("-inf"), device=device)
    frozen[PAD_ID] = 0.0
    hist_tok, hist_parent, hist_prob, hist_topi, hist_topp, hist_attn, hist_score, hist_fin = \
        [], [], [], [], [], [], [], []
    batch_base = (torch.arange(batch, device=device) * K).unsqueeze(1)   # [B, 1]
    for t in range(max_len):
        logits, state, attn = model.decode_step(prev, state, memory)
        logp = next_token_logprobs(logits).view(batch, K, V)           # [B, K, V]
        top_p, top_i = logp.topk(k, -1)                                  # [B, K, k] (before freezing)
        if forced is not None and t < forced.size(1):
            only = torch.full_like(logp, float("-inf"))
            only.scatter_(2, forced[:, t].view(batch, 1, 1).expand(batch, K, 1),
                          logp.gather(2, forced[:, t].view(batch, 1, 1).expand(batch, K, 1)))
            logp = torch.where((t < forced_lens).view(batch, 1, 1), only, logp)
        step_logp = torch.where(finished.unsqueeze(-1), frozen, logp)   # [B, K, V]
        cand = scores.unsqueeze(-1) + step_logp                          # [B, K, V]
        new_len = (lengths + (~finished).float()).clamp(min=1)           # [B, K]
        norm = cand / new_len.unsqueeze(-1) ** alpha
        best, flat = norm.view(batch, K * V).topk(K, -1)                 # [B, K]
        parent, token = flat // V, flat % V                              # [B, K]
        scores = cand.view(batch, K * V).gather(1, flat)
        lengths = new_len.gather(1, parent)
        was_finished = finished.gather(1, parent)
        finished = was_finished | (token == EOS_ID)
        rows = (batch_base + parent).view(-1)                            # [B*K] flat parent rows
        hist_tok.append(token)
        hist_parent.append(parent)
        hist_prob.append(logp.view(batch * K, V)[rows, token.view(-1)].view(batch, K))
        hist_topi.append(top_i)
        hist_topp.append(top_p)
        hist_score.append(best)
        hist_fin.append(was_finished)
        if attn is not None:
            hist_attn.append(attn.view(batch, K, -1))
        state = reorder_state(state, rows)
        prev = token.view(-1).masked_fill(was_finished.view(-1), PAD_ID)
        if bool(finished.all()):
            break

    final = scores / lengths.clamp(min=1) ** alpha                       # [B, K]
    winner = final.argmax(-1)                                            # [B]
    T = len(hist_tok)
    tok = torch.stack(hist_tok, 1).cpu()          # [B, T, K]
    par = torch.stack(hist_parent, 1).cpu()
    prob = torch.stack(hist_prob, 1).cpu()
    fin = torch.stack(hist_fin, 1).cpu()          # beam was already finished before step t
    topi = torch.stack(hist_topi, 1).cpu()        # [B, T, K, k]
    topp = torch.stack(hist_topp, 1).exp().cpu()
    att = torch.stack(hist_attn, 1).float().cpu().numpy() if hist_attn else None  # [B, T, K, S]
    sc = torch.stack(hist_score, 1).cpu()
    scores_c, final_c, winner_c = scores.cpu(), final.cpu(), winner.cpu()

    hyps = []
    for b, src_len in enumerate(_source_lengths(src_lens)):
        j = int(winner_c[b])
        path = []                                                        # (t, chosen beam, parent beam)
        for t in range(T - 1, -1, -1):
            p = int(par[b, t, j])
            path.append((t, j, p))
            j = p
        path.reverse()
        path = [(t, j, p) for t, j, p in path if not fin[b, t, j]]       # drop frozen <pad> steps
        steps = [int(tok[b, t, j]) for t, j, p in path]
        done = bool(steps and steps[-1] == EOS_ID)
        tree = None
        if return_tree:
            tree = [{"tokens": tok[b, t].tolist(), "parents": par[b, t].tolist(),
                     "scores": sc[b, t].tolist(), "finished": fin[b, t].tolist()} for t in range(T)]
        hyps.append(SimpleNamespace(
            tokens=steps[:-1] if done else steps,
            log_prob=float(scores_c[b, winner_c[b]]), score=float(final_c[b, winner_c[b]]),
            finished=done, step_tokens=steps,
            step_probs=[float(prob[b, t, j].exp()) for t, j, p in path],
            topk_ids=[topi[b, t, p].tolist() for t, j, p in path],
            topk_probs=[topp[b, t, p].tolist() for t, j, p in path],
            attention=None if att is None else np.stack([att[b, t, p, :src_len] for t, j, p in path])
            if path else np.zeros((0, src_len), dtype=np.float32),
            beam_tree=tree))
    return hyps


def _eos_likely(arch, seed=0):
    model = tiny_model(arch, seed=seed)
    with torch.no_grad():
        model.decoder.out.proj.bias[EOS_ID] += 1.5
    return model


def _same(new, old):
    assert new.tokens == old.tokens and new.step_tokens == old.step_tokens and new.finished == old.finished
    assert new.log_prob == old.log_prob and new.score == old.score          # bit for bit
    assert new.step_probs == old.step_probs and new.topk_ids == old.topk_ids
    if old.attention is None:
        assert new.attention is None
    else:
        np.testing.assert_array_equal(new.attention, old.attention)


@pytest.mark.parametrize("width", [2, 5])
def test_alpha_one_beta_zero_is_exactly_todays_beam_on_tiny_models(arch, width):
    model = _eos_likely(arch, seed=width)
    src, lens = padded_batch([6, 3, 7, 1, 5], seed=width + 1)
    new = beam_search(model, src, lens, beam=width, topk=3, alpha=1.0, coverage=0.0, return_tree=True)
    old = reference_beam_search(model, src, lens, beam=width, topk=3, alpha=1.0, return_tree=True)
    for n, o in zip(new, old):
        _same(n, o)
        for step_new, step_old in zip(n.beam_tree, o.beam_tree):
            assert {k: step_new[k] for k in step_old} == step_old                # the old tree, plus log_probs


@pytest.mark.parametrize("path,texts", [
    (REVERSE_CK, ["hello world", "attention is all you need", "a", "12345 54321"]),
    (TRANSLATE_CK, ["Ein Hund rennt im Park.", "Zwei Männer spielen Fußball auf einer Wiese.", "Eine Frau."]),
])
def test_alpha_one_beta_zero_is_exactly_todays_beam_on_shipped_models(path, texts):
    tr = Translator.load(path)
    for width in (3, 5):
        for text in texts:
            ids = tr.prepare(text).ids
            src, lens = torch.tensor([ids]), torch.tensor([len(ids)])
            (new,) = beam_search(tr.model, src, lens, beam=width, alpha=1.0, coverage=0.0)
            (old,) = reference_beam_search(tr.model, src, lens, beam=width, alpha=1.0)
            _same(new, old)
            with (tr.model.inference() if hasattr(tr.model, "inference") else contextlib.nullcontext()):
                (new,) = beam_search(tr.model, src, lens, beam=width, alpha=1.0, coverage=0.0)   # the fast path
                (old,) = reference_beam_search(tr.model, src, lens, beam=width, alpha=1.0)
            _same(new, old)
            assert tr.translate(text, beam=width, alpha=1.0, coverage=0.0).log_prob == old.log_prob


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (0.3, 0.0), (2.0, 0.0), (1.0, 0.8)])
def test_width_one_is_greedy_whatever_the_knobs(arch, alpha, beta):
    model = _eos_likely(arch, seed=7)
    src, lens = padded_batch([5, 2, 6], seed=8)
    greedy = greedy_decode(model, src, lens, topk=3)
    beam = beam_search(model, src, lens, beam=1, topk=3, alpha=alpha, coverage=beta, return_tree=True)
    for g, b in zip(greedy, beam):
        assert g.tokens == b.tokens and g.topk_ids == b.topk_ids
        assert g.log_prob == pytest.approx(b.log_prob, abs=1e-5)


def _expected_score(h, alpha, beta, src_len):
    n = max(len(h.step_tokens), 1)
    score = h.log_prob / n ** alpha
    if beta:
        cov = torch.tensor(h.attention.sum(0))                                  # [S] attention received
        score += beta * float(coverage_penalty(cov, torch.ones(src_len)))
    return score


@pytest.mark.parametrize("alpha,beta", [(0.0, 0.0), (0.6, 0.0), (1.7, 0.0), (1.0, 0.5), (0.5, 1.0)])
def test_every_final_hypothesis_scores_as_the_formula_says(alpha, beta):
    model = _eos_likely("bahdanau", seed=9)
    src, lens = padded_batch([6, 4, 7], seed=10)
    for b, h in enumerate(beam_search(model, src, lens, beam=4, alpha=alpha, coverage=beta, return_tree=True)):
        assert h.n_best[0] is h and len(h.n_best) == 4
        scores = [x.score for x in h.n_best]
        assert scores == sorted(scores, reverse=True)                           # best first
        for x in h.n_best:
            assert x.score == pytest.approx(_expected_score(x, alpha, beta, int(lens[b])), abs=1e-4)
            assert np.log(np.array(x.step_probs)).sum() == pytest.approx(x.log_prob, abs=1e-4)
            # the tree holds each node's cumulative log-probability and the path read back from it
            assert slot_history(h.beam_tree, x.beam_slot) == x.step_tokens
            path = slot_path(h.beam_tree, x.beam_slot)
            t, j = path[-1]
            assert h.beam_tree[t]["log_probs"][j] == pytest.approx(x.log_prob, abs=1e-5)
            assert h.beam_tree[-1]["scores"][x.beam_slot] == pytest.approx(x.score, abs=1e-6)
        assert winner_slot(h.beam_tree) == h.beam_slot


def test_coverage_penalty_is_gnmts_form():
    cov = torch.tensor([[0.5, 1.0, 2.0, 0.0]])
    mask = torch.tensor([[True, True, True, False]])
    assert float(coverage_penalty(cov, mask)) == pytest.approx(math.log(0.5))   # min(c, 1); padding left out
    assert float(coverage_penalty(torch.ones(1, 3), torch.ones(1, 3, dtype=torch.bool))) == 0.0
    assert math.isfinite(float(coverage_penalty(torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool))))


def test_alpha_zero_ranks_by_raw_log_probability_and_large_alpha_favours_length():
    model = _eos_likely("luong", seed=11)
    src, lens = padded_batch([6, 5, 7, 4], seed=12)
    short = beam_search(model, src, lens, beam=5, alpha=0.0, return_tree=True)
    long = beam_search(model, src, lens, beam=5, alpha=2.0, return_tree=True)
    for s, l in zip(short, long):
        assert s.score == s.log_prob and all(x.log_prob <= s.log_prob for x in s.n_best)
        assert len(l.step_tokens) >= len(s.step_tokens)


def test_coverage_rescores_the_kept_hypotheses_and_does_not_steer_the_search():
    """GNMT's form: the search keeps the same hypotheses with and without the penalty; the
    penalty only reorders them (steering the search with it turned translate-luong's output
    into word salad, val BLEU 39.0 -> 12.2 at beta 0.1)."""
    model = _eos_likely("bahdanau", seed=13)
    src, lens = padded_batch([6, 4, 7, 5], seed=14)
    plain = beam_search(model, src, lens, beam=4, return_tree=True)
    reordered = 0
    for p, c in zip(plain, beam_search(model, src, lens, beam=4, coverage=0.7, return_tree=True)):
        kept = sorted((x.beam_slot, tuple(x.step_tokens), round(x.log_prob, 5)) for x in p.n_best)
        assert sorted((x.beam_slot, tuple(x.step_tokens), round(x.log_prob, 5)) for x in c.n_best) == kept
        assert [s["tokens"] for s in c.beam_tree[:-1]] == [s["tokens"] for s in p.beam_tree[:-1]]
        reordered += [x.beam_slot for x in c.n_best] != [x.beam_slot for x in p.n_best]
    assert reordered                                       # the penalty did change some ranking


def test_coverage_changes_the_search_and_only_for_attention_models():
    tr = Translator.load(REVERSE_CK)
    text = "attention is all you need"
    plain = tr.translate(text, beam=4, return_tree=True)
    covered = tr.translate(text, beam=4, coverage=1.0, return_tree=True)
    assert covered.coverage == 1.0 and covered.score != plain.score
    # the hypotheses' scores now include beta * sum log(min(coverage, 1)) <= 0
    for x in covered.n_best:
        n = len(x.output_tokens) + x.finished
        assert x.score <= x.log_prob / n + 1e-6
    lstm = tiny_model("lstm")
    src, lens = padded_batch([4], seed=1)
    a = beam_search(lstm, src, lens, beam=3, coverage=0.9)[0]
    b = beam_search(lstm, src, lens, beam=3, coverage=0.0)[0]
    assert a.tokens == b.tokens and a.score == b.score                          # nothing to cover without attention


def test_translator_n_best_carries_text_and_attention():
    tr = Translator.load(REVERSE_CK)
    res = tr.translate("hello world", beam=3, return_tree=True)
    assert [h.rank for h in res.n_best] == [1, 2, 3]
    assert res.n_best[0].text == res.text == "dlrow olleh" and res.n_best[0].log_prob == res.log_prob
    for h in res.n_best:
        assert h.attention.shape == (len(h.output_tokens), len(res.source.tokens))
        assert np.allclose(h.attention.sum(1), 1, atol=1e-5)


def test_token_diff_marks_what_differs():
    ops = token_diff(["a", "dog", "runs", "."], ["a", "cat", "runs", "fast", "."])
    assert [o["op"] for o in ops] == ["equal", "replace", "equal", "insert", "equal"]
    assert ops[1] == {"op": "replace", "reference": ["dog"], "other": ["cat"]}
    assert token_diff(["x"], ["x"]) == [{"op": "equal", "reference": ["x"], "other": ["x"]}]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "seq2seq.translate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_cli_alpha_and_coverage():
    plain = json.loads(_cli(str(REVERSE_CK), "hello world", "--beam", "4", "--json").stdout)
    same = json.loads(_cli(str(REVERSE_CK), "hello world", "--beam", "4", "--alpha", "1", "--coverage", "0",
                           "--json").stdout)
    assert plain == same
    other = _cli(str(REVERSE_CK), "attention is all you need", "--beam", "4", "--coverage", "1", "--alpha", "0.5",
                 "--json")
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout)["beam"] == 4


@pytest.mark.parametrize("args,fragment", [
    (["--beam", "3", "--alpha", "2.5"], "alpha must be between 0 and 2"),
    (["--beam", "3", "--coverage", "-0.1"], "beta must be between 0 and 1"),
    (["--beam", "3", "--alpha", "nan"], "finite"),
    (["--beam", "3", "--coverage", "x"], "expected a number"),
])
def test_cli_knob_errors_are_one_line(args, fragment):
    proc = _cli(str(REVERSE_CK), "abc", *args)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and fragment in proc.stderr, proc.stderr


def test_cli_coverage_on_a_model_without_attention_is_refused():
    proc = _cli(str(ROOT / "checkpoints" / "reverse-lstm"), "abc", "--beam", "3", "--coverage", "0.5")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "needs attention" in proc.stderr


def test_coverage_lets_a_real_model_finish():
    # With the penalty on finished hypotheses alone, ending always ranked below going on and
    # translate-bahdanau wrote to the length limit (test-2016 BLEU 13 at beta 0.2).
    tr = Translator.load(ROOT / "checkpoints" / "translate-bahdanau")
    text = "ein mann mit einem orangefarbenen hut , der etwas anstarrt ."
    plain = tr.translate(text, beam=5)
    for beta, slack in ((0.2, 3), (1.0, len(plain.output_tokens))):   # the most the slider allows: a few more
        covered = tr.translate(text, beam=5, coverage=beta)             # tokens that attend to what is left
        assert covered.finished
        assert len(covered.output_tokens) <= len(plain.output_tokens) + slack, covered.text
