"""Deferred gradients (models/deferred.py): a recurrent loop through each deferred op gives
the standard ops' values and gradients, for leaf and computed operands, in float32 and
under bf16 autocast."""
import pytest
import torch
import torch.nn.functional as F

from seq2seq.models.deferred import (DeferredEmbedding, DeferredLinear, DeferredScores,
                                     DeferredWeightedSum)

B, S, H, T, V = 5, 7, 6, 4, 11


def _leaves(seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g).requires_grad_()
    return {"w": r(H, H), "m_src": r(B, S, H), "w_m": r(H, H), "emb": r(V, H), "h0": r(B, H)}


def _loop(p, deferred: bool, rows=(B,) * T):
    """A toy decoder: every step uses W (linear), the memory M = m_src W_m (scores and a
    weighted sum) and the embedding (ids from the previous step's argmax). rows[t]: the
    batch's first rows that run step t (training's loop drops rows whose target ended)."""
    memory = p["m_src"] @ p["w_m"]                                    # computed: its grad flows on
    if deferred:
        lin, scores, wsum = DeferredLinear(p["w"]), DeferredScores(memory), DeferredWeightedSum(memory)
        emb = DeferredEmbedding(p["emb"], padding_idx=0)
    else:
        lin = lambda x: F.linear(x, p["w"])
        scores = lambda q: torch.bmm(memory[:q.size(0)], q.unsqueeze(2)).squeeze(2)
        wsum = lambda a: torch.bmm(a.unsqueeze(1), memory[:a.size(0)]).squeeze(1)
        emb = lambda ids: F.embedding(ids, p["emb"], padding_idx=0)
    h, ids, out = p["h0"], torch.tensor([0, 1, 2, 0, 3]), []
    for n in rows:
        h, ids = h[:n], ids[:n]
        a = torch.softmax(scores(h).float(), -1)                      # [n, S]
        h = torch.tanh(lin(h) + wsum(a) + emb(ids))                   # [n, H]
        ids = h.detach().float().argmax(-1) % V
        out.append(h)
    return torch.cat(out, 0).float().square().mean()


def _grads(deferred, autocast=False, seed=0, rows=(B,) * T):
    p = _leaves(seed)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = _loop(p, deferred, rows)
    return loss, torch.autograd.grad(loss, list(p.values()))


def test_values_and_gradients_equal_the_standard_ops_in_float32():
    ref_loss, ref = _grads(False)
    loss, got = _grads(True)
    assert torch.allclose(loss, ref_loss, rtol=1e-6)
    for name, a, b in zip(_leaves(), got, ref):
        assert a.dtype == b.dtype == torch.float32, name
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), name


def test_steps_on_fewer_rows_give_the_standard_ops_gradients():
    # rows 3-4 stop after step 1 and rows 1-4 after step 2: the memory's rows get gradients
    # only from the steps they ran
    ref_loss, ref = _grads(False, rows=(5, 5, 3, 1))
    loss, got = _grads(True, rows=(5, 5, 3, 1))
    assert torch.allclose(loss, ref_loss, rtol=1e-6)
    for name, a, b in zip(_leaves(), got, ref):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), name
    _, full = _grads(True)
    assert not torch.allclose(got[1], full[1])                 # the rows that stopped count


@pytest.mark.parametrize("rows", [(B,) * T, (5, 5, 3, 1)])
def test_under_bf16_autocast_the_gradients_stay_within_bf16_rounding(rows):
    _, exact = _grads(False, rows=rows)
    _, ref = _grads(False, autocast=True, rows=rows)
    _, got = _grads(True, autocast=True, rows=rows)
    for name, a, b, e in zip(_leaves(), got, ref, exact):
        assert a.dtype == torch.float32, name                        # the leaf's own dtype
        scale = e.abs().max()
        # deferred and standard bf16 differ from float32 by the same order
        assert (a - e).abs().max() <= 3 * max((b - e).abs().max(), 1e-3 * scale), name


def test_the_padding_row_gets_no_gradient_and_unused_rows_zero():
    p = _leaves()
    emb = DeferredEmbedding(p["emb"], padding_idx=0)
    ids = torch.tensor([0, 2, 2, 0, 5])
    (emb(ids) * torch.arange(1.0, H + 1)).sum().backward()
    g = p["emb"].grad
    assert torch.equal(g[0], torch.zeros(H)) and torch.equal(g[1], torch.zeros(H))
    assert torch.allclose(g[2], 2 * torch.arange(1.0, H + 1)) and torch.allclose(g[5], torch.arange(1.0, H + 1))


def test_without_gradients_only_the_forward_runs():
    p = _leaves()
    with torch.no_grad():
        lin = DeferredLinear(p["w"])
        assert lin.anchor is None
        assert torch.allclose(lin(p["h0"]), F.linear(p["h0"], p["w"]))


@pytest.mark.parametrize("kind", ["linear", "scores", "wsum", "embedding"])
def test_an_operand_used_by_no_step_gets_no_gradient(kind):
    p = _leaves()
    op = {"linear": lambda: DeferredLinear(p["w"]), "scores": lambda: DeferredScores(p["m_src"]),
          "wsum": lambda: DeferredWeightedSum(p["m_src"]), "embedding": lambda: DeferredEmbedding(p["emb"], 0)}[kind]()
    loss = p["h0"].square().sum() + 0 * op.anchor
    grads = torch.autograd.grad(loss, [p["h0"], op.anchor.grad_fn.next_functions[0][0].variable], allow_unused=True)
    assert grads[1] is None
