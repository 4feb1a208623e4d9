"""Decoding's oneDNN matmuls (models/kernels.py) and the masked GRU encoder: the same
float32 arithmetic as torch's standard ops, up to the order of additions."""
import copy

import pytest
import torch
import torch.nn.functional as F

from seq2seq.bench import tutorial_greedy
from seq2seq.checkpoint import load_checkpoint
from seq2seq.data import collate
from seq2seq.decoding import greedy_decode
from seq2seq.models.kernels import PackedLinears, onednn_linear_available
from seq2seq.vocab import EOS_ID

from conftest import ROOT, padded_batch, tiny_model

needs_onednn = pytest.mark.skipif(not onednn_linear_available(), reason="this torch build has no oneDNN linear")


@needs_onednn
@pytest.mark.parametrize("shape", [(1, 64), (7, 64), (5, 3, 64)])
def test_packed_linear_equals_f_linear(shape):
    kernels = PackedLinears()
    x, w, b = torch.randn(shape), torch.randn(96, 64), torch.randn(96)
    with_switch = kernels.mode.enter()
    with torch.inference_mode():
        got = kernels.linear(x, w, b)
    kernels.mode.exit(with_switch)
    assert got.shape == F.linear(x, w, b).shape
    assert torch.allclose(got, F.linear(x, w, b), rtol=1e-5, atol=1e-5)


@needs_onednn
def test_packed_copy_follows_in_place_updates_and_autograd_keeps_the_standard_op():
    kernels = PackedLinears()
    x, w = torch.randn(4, 8), torch.randn(6, 8)
    token = kernels.mode.enter()
    with torch.inference_mode():
        kernels.linear(x, w)
    with torch.no_grad():
        w.mul_(-2.0)                                       # an optimizer step: in place
    with torch.inference_mode():
        assert torch.allclose(kernels.linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)
    kernels.mode.exit(token)
    assert not kernels.applies(x)                          # outside the model's inference mode: off
    wg = w.clone().requires_grad_()
    y = kernels.linear(x, wg)                              # the standard op, differentiable
    y.sum().backward()
    assert wg.grad is not None
    assert copy.deepcopy(kernels)._packed == {}


@needs_onednn
@pytest.mark.parametrize("arch", ["gru", "bahdanau", "luong"])
@pytest.mark.parametrize("layers", [1, 2])
def test_masked_gru_encoder_equals_packed_nn_gru(arch, layers):
    model = tiny_model(arch, seed=1, n_layers=layers)
    src, lens = padded_batch([5, 3, 7, 1, 4], seed=2)
    with torch.inference_mode():
        out_ref, final_ref = model.encoder(src, lens)      # plain: packed nn.GRU
    with model.inference():
        out, final = model.encoder(src, lens)
    assert out.shape == out_ref.shape and final.shape == final_ref.shape
    assert torch.allclose(out, out_ref, atol=1e-6) and torch.allclose(final, final_ref, atol=1e-6)
    assert (out[torch.arange(7)[None, :] >= lens[:, None]] == 0).all()      # padding outputs 0


@needs_onednn
@pytest.mark.parametrize("arch", ["gru", "bahdanau", "luong"])
def test_decoder_steps_and_greedy_tokens_match_the_standard_ops(arch):
    model = tiny_model(arch, seed=3, tgt_vocab=40)
    with torch.no_grad():
        model.decoder.out.proj.bias[EOS_ID] += 1.0
    src, lens = padded_batch([5, 3, 7, 1, 4, 6], seed=4)
    prev = torch.full((6,), 5)
    with torch.inference_mode():
        memory, state = model.encode(src, lens)
        ref = model.decode_step(prev, state, memory)
        plain = greedy_decode(model, src, lens)
    with model.inference():
        got = model.decode_step(prev, state, memory)
        fast = greedy_decode(model, src, lens)
    assert torch.allclose(got[0], ref[0], atol=1e-5)
    assert all(torch.allclose(got[1][k], ref[1][k], atol=1e-6) for k in ref[1])
    assert [h.step_tokens for h in fast] == [h.step_tokens for h in plain]


def test_the_benchmark_loop_on_standard_ops_equals_batched_greedy_on_the_shipped_model():
    ck = load_checkpoint(ROOT / "checkpoints" / "reverse-bahdanau")
    ids = [ck.src_vocab.encode(list(t)) for t in ["hello world", "abc", "attention is all you need", "x"]]
    batch = collate(ids, [[] for _ in ids], list(range(len(ids))))
    with ck.model.inference():
        batched = greedy_decode(ck.model, batch.src, batch.src_lens, details=False)
    assert [tutorial_greedy(ck.model, s, 80) for s in ids] == [h.tokens for h in batched]


def test_a_model_built_under_inference_mode_decodes():
    # weights created under inference_mode have no version counter: the caches must cope
    with torch.inference_mode():
        model = tiny_model("bahdanau", seed=5, tgt_vocab=600)
        src, lens = padded_batch([4, 2, 6], seed=6)
        plain = greedy_decode(model, src, lens, details=False)
    with model.inference():
        fast = greedy_decode(model, src, lens, details=False)
    assert [h.tokens for h in fast] == [h.tokens for h in plain]


def test_inference_mode_needs_eval_mode_and_is_per_thread():
    import threading

    model = tiny_model("gru", seed=1)
    model.train()
    with pytest.raises(RuntimeError, match="eval mode"):
        with model.inference():
            pass
    model.eval()
    seen = {}
    with model.inference():
        assert model.in_inference
        t = threading.Thread(target=lambda: seen.setdefault("other", model.in_inference))
        t.start()
        t.join()
    assert seen["other"] is False and not model.in_inference


@needs_onednn
def test_the_training_optimizer_step_refreshes_the_packed_weights():
    """The fused Adam kernel updates weights without bumping their version counters; the
    trainer's optimizer bumps them, so a validation after an update decodes with the new
    weights, not the packed copies of before it."""
    from seq2seq.trainer import build_optimizer

    model = tiny_model("bahdanau", seed=3, tgt_vocab=40)
    src, lens = padded_batch([5, 3, 7, 1, 4, 6], seed=4)
    prev = torch.full((6,), 5)
    optimizer = build_optimizer(model, lr=0.05)
    assert optimizer.param_groups[0]["fused"]
    with model.inference():
        memory, state = model.encode(src, lens)
        before = model.decode_step(prev, state, memory)[0]         # fills the packed cache
    model.train()
    sum(p.square().sum() for p in model.parameters()).backward()
    optimizer.step()
    model.eval()
    with torch.inference_mode():
        memory, state = model.encode(src, lens)
        ref = model.decode_step(prev, state, memory)[0]
    with model.inference():
        got = model.decode_step(prev, state, memory)[0]
    assert not torch.allclose(ref, before, atol=1e-3)               # the step moved the logits
    assert torch.allclose(got, ref, atol=1e-5)
