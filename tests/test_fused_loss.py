"""The fused output layer + cross-entropy (models/fused_loss.py) and training's bf16 mode:
the fused float32 pass gives F.cross_entropy(F.linear(...))'s loss and gradients; the
bf16 mode stays close to float32 and is only chosen where the CPU has native bf16."""
import pytest
import torch
import torch.nn.functional as F

from seq2seq.config import TrainConfig
from seq2seq.models import Seq2Seq, build_model
from seq2seq.models.fused_loss import linear_cross_entropy
from seq2seq.models.kernels import FastDropout
from seq2seq import trainer
from seq2seq.train_card import mixed_precision

from conftest import tiny_config, training_batch as batch

TOL = 1e-5           # float32, summed in another order
BF16_REL = 3e-2      # bf16 matmuls: 8 significant bits


def operands(n=300, d=24, v=211, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g).requires_grad_()
    w = (torch.randn(v, d, generator=g) * 0.5).requires_grad_()
    b = torch.randn(v, generator=g).requires_grad_() if bias else None
    y = torch.randint(0, v, (n,), generator=g)
    return h, w, b, y


def loss_and_grads(fn, h, w, b):
    for t in (h, w, b):
        if t is not None:
            t.grad = None
    loss = fn()
    loss.backward()
    return loss.item(), [None if t is None else t.grad.clone() for t in (h, w, b)]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("chunk", [1, 64, 128, 1000])     # 300 rows: one row, ragged chunks, one chunk
def test_fused_float32_equals_linear_then_cross_entropy(bias, eps, chunk):
    h, w, b, y = operands(bias=bias)
    ref, ref_g = loss_and_grads(lambda: F.cross_entropy(F.linear(h, w, b), y, label_smoothing=eps), h, w, b)
    got, got_g = loss_and_grads(lambda: linear_cross_entropy(h, w, b, y, eps, chunk_rows=chunk), h, w, b)
    assert abs(got - ref) <= TOL * max(1.0, abs(ref))
    for r, g in zip(ref_g, got_g):
        assert (r is None) == (g is None)
        if r is not None:
            assert torch.allclose(g, r, atol=TOL, rtol=1e-4)


def test_fused_loss_scales_with_the_incoming_gradient_and_adds_to_other_uses():
    # backward only scales the gradients computed in forward: 3 * loss and a second use of w
    h, w, b, y = operands()
    ref, ref_g = loss_and_grads(lambda: 3 * F.cross_entropy(F.linear(h, w, b), y) + w.sum(), h, w, b)
    got, got_g = loss_and_grads(lambda: 3 * linear_cross_entropy(h, w, b, y) + w.sum(), h, w, b)
    assert abs(got - ref) <= 1e-4
    assert all(torch.allclose(g, r, atol=TOL, rtol=1e-4) for g, r in zip(got_g, ref_g))


def test_without_autograd_only_the_loss_is_computed():
    h, w, b, y = operands()
    with torch.no_grad():
        got = linear_cross_entropy(h, w, b, y, 0.1)
        ref = F.cross_entropy(F.linear(h, w, b), y, label_smoothing=0.1)
    assert not got.requires_grad
    assert abs(got.item() - ref.item()) <= TOL * ref.item()


def test_bf16_matmuls_stay_close_to_float32():
    h, w, b, y = operands(n=500, d=64, v=700)
    ref, ref_g = loss_and_grads(lambda: linear_cross_entropy(h, w, b, y, 0.1), h, w, b)
    got, got_g = loss_and_grads(lambda: linear_cross_entropy(h, w, b, y, 0.1, torch.bfloat16), h, w, b)
    assert got != ref                                     # it did run in bf16
    assert abs(got - ref) <= 1e-2 * ref
    for r, g in zip(ref_g, got_g):
        assert g.dtype == torch.float32
        assert ((g - r).norm() / r.norm()).item() < BF16_REL


def test_bad_shapes_and_empty_batches_are_refused():
    h, w, b, y = operands()
    with pytest.raises(ValueError, match="target"):
        linear_cross_entropy(h, w, b, y[:-1])
    with pytest.raises(ValueError, match="no target tokens"):
        linear_cross_entropy(h[:0], w, b, y[:0])


def test_model_loss_in_bf16_is_close_to_float32_for_every_architecture(arch):
    torch.manual_seed(0)
    model = build_model(tiny_config(arch, tie_embeddings=True)).train()
    src, lens, tgt = batch()
    coins = Seq2Seq.draw_coins(tgt, 0.5)
    losses, grads = {}, {}
    for precision in ("float32", "bf16"):
        torch.manual_seed(3)                               # the same dropout masks
        model.zero_grad(set_to_none=True)
        loss, _ = model.loss(src, lens, tgt, coins=coins, label_smoothing=0.1, precision=precision)
        loss.backward()
        losses[precision] = loss.item()
        grads[precision] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    assert abs(losses["bf16"] - losses["float32"]) <= 2e-2 * losses["float32"]
    assert grads["bf16"].dtype == torch.float32
    cos = F.cosine_similarity(grads["bf16"], grads["float32"], dim=0).item()
    assert cos > 0.99
    with pytest.raises(ValueError, match="precision"):
        model.loss(src, lens, tgt, precision="fp8")


def test_training_argmax_is_the_float32_argmax_on_many_rows():
    # training's sampled steps: the bf16-scored argmax (where it pays) must pick the float32 argmax
    torch.manual_seed(0)
    model = build_model(tiny_config("bahdanau", tie_embeddings=True)).train()
    feats = torch.randn(200, model.decoder.out.proj.in_features, requires_grad=True) * 3
    exact = F.linear(model.decoder.out.proj(feats), model.decoder.embedding.weight).argmax(-1)
    assert torch.equal(model.decoder.out.training_argmax(feats), exact)


def test_cpu_bf16_is_used_only_where_the_cpu_multiplies_bf16_natively(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: True)
    assert trainer.training_precision(TrainConfig(cpu_bf16=True), cpu) == ("bf16", None)
    assert trainer.training_precision(TrainConfig(), cpu) == ("float32", None)
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: False)
    precision, notice = trainer.training_precision(TrainConfig(cpu_bf16=True), cpu)
    assert precision == "float32" and "no native bf16" in notice
    with pytest.raises(ValueError, match="fast path"):
        TrainConfig(cpu_bf16=True, fast_path=False)


def test_the_card_says_what_precision_each_epoch_trained_in():
    cpu, cfg = torch.device("cpu"), TrainConfig(cpu_bf16=True)
    assert mixed_precision(cfg, cpu, [{"epoch": 1, "precision": "bf16"}, {"epoch": 2, "precision": "bf16"}]) == "bf16"
    assert mixed_precision(cfg, cpu, [{"epoch": 1, "precision": "float32"}]) == "none"
    assert mixed_precision(cfg, cpu, [{"epoch": 1}]) == "none"            # cards from before the option
    assert "epochs [2]" in mixed_precision(cfg, cpu, [{"epoch": 1, "precision": "float32"},
                                                      {"epoch": 2, "precision": "bf16"}])


def test_a_short_bf16_training_run_learns_and_records_its_precision(monkeypatch):
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: True)
    from seq2seq.task_data import load_task_data
    # small: on a CPU without native bf16 (CI may be one) the bf16 matmuls are emulated
    cfg = TrainConfig(task="reverse", epochs=3, reverse_max_len=5, reverse_train_size=512, reverse_val_size=50,
                      batch_size=64, lr=1e-2, cpu_bf16=True, patience=0)
    model, card = trainer.train(tiny_config("bahdanau"), cfg, None,
                                load_task_data(cfg, None, None), torch.device("cpu"), progress=False,
                                final_eval=False)
    losses = [h["train_loss"] for h in card["history"]]
    assert [h["precision"] for h in card["history"]] == ["bf16"] * 3
    assert card["provenance"]["mixed_precision"] == "bf16"
    assert losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 for p in model.parameters())   # the weights stay float32


def test_fast_dropout_keeps_the_expectation_and_zeroes_the_rest():
    torch.manual_seed(0)
    drop = FastDropout(0.3).train()
    x = torch.ones(200, 500)
    y = drop(x)
    values = torch.unique(y).tolist()
    assert values[0] == 0.0 and values[1] == pytest.approx(1 / 0.7) and len(values) == 2
    assert abs(y.mean().item() - 1.0) < 0.01
    assert abs((y == 0).float().mean().item() - 0.3) < 0.01
    assert torch.equal(drop.eval()(x), x)
