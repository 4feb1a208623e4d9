"""The fast greedy argmax (bf16 scores, exact float32 rescoring, a proven bound) must
choose exactly the float32 argmax, whatever the CPU: these tests force the fast path."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from seq2seq.decoding import greedy_decode
from seq2seq.evaluate import decode_corpus
from seq2seq.models.output import OutputLayer, logit_error_bound
from seq2seq.vocab import EOS_ID, PAD_ID, SOS_ID

from conftest import padded_batch, tiny_model

EXCLUDE = (PAD_ID, SOS_ID)


def _layer(tied: bool, vocab=1000, in_dim=48, emb=32, seed=0) -> OutputLayer:
    torch.manual_seed(seed)
    embedding = nn.Embedding(vocab, emb)
    with torch.no_grad():
        embedding.weight.mul_(0.3)
    return OutputLayer(in_dim, vocab, embedding, tied).eval()


def _exact(layer, x):
    logits = layer(x)
    logits[:, list(EXCLUDE)] = float("-inf")
    return logits.argmax(-1)


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0])
def test_fast_argmax_is_the_float32_argmax(tied, scale):
    layer = _layer(tied)
    x = torch.randn(400, 48, generator=torch.Generator().manual_seed(1)) * scale
    assert torch.equal(layer.argmax(x, EXCLUDE, fast=True), _exact(layer, x))


def _aligned_features(layer, direction, n=64):
    """Features x with proj(x) = direction scaled by n factors (the tied layer's h)."""
    h = direction.detach().clone().repeat(n, 1) * torch.linspace(0.5, 3, n).unsqueeze(1)
    return torch.linalg.lstsq(layer.proj.weight.detach(), (h - layer.proj.bias.detach()).T).solution.T


def test_near_ties_that_bf16_cannot_separate_are_settled_in_float32():
    layer = _layer(tied=True)
    w = layer.embedding.weight
    with torch.no_grad():
        # ids 500/501 (and 700/701, in another block) differ by far less than bf16 resolves
        w[501] = w[500] * (1 + 1e-5)
        w[700] = w[500] * (1 - 1e-5)
        w[701] = w[500] * (1 + 2e-5)
    x = _aligned_features(layer, w[500])
    got = layer.argmax(x, EXCLUDE, fast=True)
    assert torch.equal(got, _exact(layer, x))
    assert set(got.tolist()) <= {500, 501, 700, 701}


def test_near_ties_in_more_blocks_than_are_kept_fall_back_to_float32(monkeypatch):
    layer = _layer(tied=True)
    w = layer.embedding.weight
    with torch.no_grad():  # one near-tie in each of BLOCKS_KEPT + 1 blocks
        for i, block in enumerate(range(1, OutputLayer.BLOCKS_KEPT + 2)):
            w[block * OutputLayer.BLOCK + 7] = w[5] * (1 + (i + 1) * 1e-5)
    x = _aligned_features(layer, w[5])
    calls = []
    original = OutputLayer._exact_argmax
    monkeypatch.setattr(OutputLayer, "_exact_argmax",
                        lambda self, h, *a: calls.append(len(h)) or original(self, h, *a))
    assert torch.equal(layer.argmax(x, EXCLUDE, fast=True), _exact(layer, x))
    assert calls and calls[0] > 0          # those rows went through the float32 fallback


def test_excluded_ids_are_never_chosen_even_when_they_score_highest():
    layer = _layer(tied=False)
    with torch.no_grad():
        layer.proj.bias[PAD_ID] += 100.0
        layer.proj.bias[SOS_ID] += 90.0
    x = torch.randn(64, 48)
    got = layer.argmax(x, EXCLUDE, fast=True)
    assert not set(got.tolist()) & set(EXCLUDE)
    assert torch.equal(got, _exact(layer, x))


def test_the_bf16_copy_follows_in_place_weight_updates():
    layer = _layer(tied=True)
    x = torch.randn(64, 48)
    before = layer.argmax(x, EXCLUDE, fast=True)
    with torch.no_grad():
        layer.embedding.weight.mul_(-1.0)          # what an optimizer step does: in place
    after = layer.argmax(x, EXCLUDE, fast=True)
    assert torch.equal(after, _exact(layer, x))
    assert not torch.equal(before, after)


@pytest.mark.parametrize("seed", range(5))
def test_the_error_bound_holds_for_every_logit(seed):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(200, 128, generator=g) * (seed + 1)
    w = torch.randn(3000, 128, generator=g) * 0.2
    exact = F.linear(h.double(), w.double())                                  # the true values
    approx = F.linear(h.bfloat16(), w.bfloat16()).float()
    bound = logit_error_bound(h, w.norm(dim=-1).max(), approx)               # [B, V]
    assert ((approx.double() - exact).abs() <= bound.double()).all()


def _varied_length_model(arch, vocab=900):
    """A random model with a vocabulary large enough for the fast argmax, peaked
    distributions, and <eos> boosted until outputs end at several lengths."""
    src, lens = padded_batch([5, 3, 7, 1, 4] * 8, seed=3)
    for boost in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0):
        model = tiny_model(arch, seed=2, tgt_vocab=vocab, hidden_dim=32, emb_dim=32)
        with torch.no_grad():
            for p in model.decoder.parameters():
                p.mul_(3.0)
            model.decoder.out.proj.bias[EOS_ID] += boost
        if len({len(h.step_tokens) for h in greedy_decode(model, src, lens)}) > 2:
            return model, src, lens
    raise AssertionError("no boost gave varied lengths")


@pytest.mark.parametrize("arch", ["gru", "bahdanau", "luong", "lstm"])
def test_tokens_only_greedy_equals_detailed_greedy_with_a_large_vocabulary(arch):
    model, src, lens = _varied_length_model(arch)
    detailed = greedy_decode(model, src, lens)
    with model.inference():         # with the bf16 argmax where this CPU has it
        fast = greedy_decode(model, src, lens, details=False)
    plain = greedy_decode(model, src, lens, details=False)   # standard ops, float32 argmax
    for tokens_only in (fast, plain):
        assert [h.step_tokens for h in tokens_only] == [h.step_tokens for h in detailed]
        assert [h.finished for h in tokens_only] == [h.finished for h in detailed]


def test_decode_corpus_ids_do_not_depend_on_the_number_of_threads():
    threads = torch.get_num_threads()
    model = tiny_model("bahdanau", seed=4, tgt_vocab=600)
    with torch.no_grad():
        model.decoder.out.proj.bias[EOS_ID] += 1.5
    g = torch.Generator().manual_seed(5)
    sources = [torch.randint(4, 23, (int(n),), generator=g).tolist() for n in torch.randint(1, 15, (90,), generator=g)]
    one = decode_corpus(model, sources, "cpu", batch_size=16, workers=1)
    two = decode_corpus(model, sources, "cpu", batch_size=16, workers=2)
    beam_one = decode_corpus(model, sources[:30], "cpu", beam=3, batch_size=12, workers=1)
    beam_two = decode_corpus(model, sources[:30], "cpu", beam=3, batch_size=12, workers=2)
    assert one == two and beam_one == beam_two
    assert torch.get_num_threads() == threads        # the workers' setting stays theirs
