"""Training's fast path (Seq2Seq.loss, fast=True) against the plain step loop (fast=False):
the same loss and the same gradients for every architecture, tied and untied, at
teacher-forcing ratios 1.0, 0.5 and 0 with a fixed coin sequence; and a short seeded
training run's history on both paths. No timing here: speed is the benchmark's."""
import pytest
import torch

from seq2seq.config import ModelConfig, TeacherForcingConfig, TrainConfig
from seq2seq.models import Seq2Seq, build_model
from seq2seq.task_data import load_task_data
from seq2seq.trainer import train

from conftest import tiny_config, training_batch as batch

LOSS_TOL = 1e-5      # float32: the paths add in different orders (about 1e-7 relative)
GRAD_TOL = 1e-5


def loss_and_grads(model: Seq2Seq, coins, fast: bool, label_smoothing=0.1):
    model.zero_grad(set_to_none=True)
    src, lens, tgt = batch()
    loss, n = model.loss(src, lens, tgt, coins=coins, fast=fast, label_smoothing=label_smoothing)
    loss.backward()
    return loss.item(), n, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("ratio", [1.0, 0.5, 0.0])
def test_fast_path_gives_the_plain_loss_and_gradients(arch, tied, ratio):
    torch.manual_seed(0)
    model = build_model(tiny_config(arch, tie_embeddings=tied, n_layers=2 if arch == "lstm" else 1)).train()
    torch.manual_seed(5)
    coins = Seq2Seq.draw_coins(batch()[2], ratio)        # one fixed coin sequence for both paths
    plain_loss, plain_n, plain_grads = loss_and_grads(model, coins, fast=False)
    fast_loss, fast_n, fast_grads = loss_and_grads(model, coins, fast=True)
    assert fast_n == plain_n == int((batch()[2][:, 1:] != 0).sum())
    assert abs(fast_loss - plain_loss) <= LOSS_TOL
    assert set(fast_grads) == set(plain_grads)
    for name, g in plain_grads.items():
        assert torch.allclose(fast_grads[name], g, atol=GRAD_TOL, rtol=1e-4), name


@pytest.mark.parametrize("ratio", [1.0, 0.5, 0.0])
@pytest.mark.parametrize("layers", [2, 3])
def test_several_gru_layers_also_match(ratio, layers):
    # the first layer's input projection split, the upper layers' W_ih and every W_hh deferred
    for arch in ("gru", "bahdanau", "luong"):
        torch.manual_seed(0)
        model = build_model(tiny_config(arch, n_layers=layers)).train()
        torch.manual_seed(5)
        coins = Seq2Seq.draw_coins(batch()[2], ratio)
        a, _, ga = loss_and_grads(model, coins, fast=False)
        b, _, gb = loss_and_grads(model, coins, fast=True)
        assert abs(a - b) <= LOSS_TOL
        assert all(torch.allclose(ga[k], gb[k], atol=GRAD_TOL, rtol=1e-4) for k in ga)


@pytest.mark.parametrize("arch, ratio", [("bahdanau", 1.0), ("luong", 1.0), ("gru", 0.5), ("lstm", 0.0)])
def test_the_step_loop_runs_only_the_rows_whose_target_goes_on(arch, ratio, monkeypatch):
    # the batch's targets: 8 steps, except row 2 (5) and row 4 (3); the parity tests above
    # check that dropping rows changes no loss or gradient
    model = build_model(tiny_config(arch)).train()
    rows, features = [], type(model.decoder).features
    def spy(self, x, state, memory, fast=None):
        rows.append(x.size(0))
        assert all(v.size(0) == x.size(0) for v in state.values()) and memory.mask.size(0) == x.size(0)
        return features(self, x, state, memory, fast)
    monkeypatch.setattr(type(model.decoder), "features", spy)
    src, lens, tgt = batch()
    _, n = model.loss(src, lens, tgt, teacher_forcing=ratio)
    assert rows == [6, 6, 6, 5, 5, 4, 4, 4] and sum(rows) == n


@pytest.mark.parametrize("arch, layers", [("lstm", 2), ("gru", 1), ("gru", 2)])
def test_the_teacher_forced_layers_also_run_only_the_rows_whose_target_goes_on(arch, layers, monkeypatch):
    from seq2seq.models import decoder as decoder_module
    model = build_model(tiny_config(arch, n_layers=layers)).train()
    rows, layer_steps = [], decoder_module.rnn_layer_steps
    def spy(cell, gi_steps, *args):
        rows.append([g.size(0) for g in gi_steps])
        return layer_steps(cell, gi_steps, *args)
    monkeypatch.setattr(decoder_module, "rnn_layer_steps", spy)
    src, lens, tgt = batch()
    _, n = model.loss(src, lens, tgt)                              # ratio 1: a layer at a time
    assert rows == [[6, 6, 6, 5, 5, 4, 4, 4]] * model.cfg.n_layers and n == 40


def test_targets_padded_inside_are_refused_by_the_fast_path():
    model = build_model(tiny_config("gru")).train()
    src, lens, tgt = batch()
    tgt[1, 3] = 0                                       # padding before real tokens
    with pytest.raises(ValueError, match="padded on the right"):
        model.loss(src, lens, tgt)


def test_coins_are_per_token_and_per_sequence():
    torch.manual_seed(0)
    tgt = torch.zeros(64, 30, dtype=torch.long)
    coins = Seq2Seq.draw_coins(tgt, 0.5)
    assert coins.shape == (64, 29)
    assert bool(coins[:, 0].all())                         # the <sos> step is always fed <sos>
    rest = coins[:, 1:].float()
    assert 0.4 < rest.mean().item() < 0.6
    # coins differ along both the batch and the time axis (not one coin per step or per sequence)
    assert rest.std(0).mean() > 0.3 and rest.std(1).mean() > 0.3
    assert Seq2Seq.draw_coins(tgt, 1.0) is None
    assert not bool(Seq2Seq.draw_coins(tgt, 0.0)[:, 1:].any())


def test_the_tutorials_rule_draws_one_coin_per_step_for_the_whole_batch():
    torch.manual_seed(0)
    tgt = torch.zeros(64, 30, dtype=torch.long)
    coins = Seq2Seq.draw_coins(tgt, 0.5, coin="step")
    assert coins.shape == (64, 29) and bool(coins[:, 0].all())
    assert torch.equal(coins, coins[:1].expand_as(coins))   # every row the same
    assert 0 < int(coins[0, 1:].sum()) < 28                  # but steps differ
    assert Seq2Seq.draw_coins(tgt, 1.0, coin="step") is None
    with pytest.raises(ValueError):
        Seq2Seq.draw_coins(tgt, 0.5, coin="sequence")
    with pytest.raises(ValueError):
        TeacherForcingConfig(coin="batch")


@pytest.mark.parametrize("arch", ["gru", "bahdanau"])
def test_step_coins_give_the_plain_loss_and_gradients_on_the_fast_path(arch):
    torch.manual_seed(0)
    model = build_model(tiny_config(arch)).train()
    torch.manual_seed(3)
    coins = Seq2Seq.draw_coins(batch()[2], 0.5, coin="step")
    a, _, ga = loss_and_grads(model, coins, fast=False)
    b, _, gb = loss_and_grads(model, coins, fast=True)
    assert abs(a - b) <= LOSS_TOL
    assert all(torch.allclose(ga[k], gb[k], atol=GRAD_TOL, rtol=1e-4) for k in ga)


def test_training_passes_the_coin_rule_to_the_loss(monkeypatch):
    seen = []
    original = Seq2Seq.draw_coins

    def spy(tgt, ratio, coin="token"):
        if ratio < 1.0:                 # validation's teacher-forced loss draws nothing
            seen.append(coin)
        return original(tgt, ratio, coin)
    monkeypatch.setattr(Seq2Seq, "draw_coins", staticmethod(spy))
    cfg = TrainConfig(task="reverse", epochs=1, batch_size=32, patience=0, reverse_max_len=5,
                      reverse_train_size=64, reverse_val_size=16,
                      teacher_forcing=TeacherForcingConfig(kind="constant", ratio=0.5, coin="step"))
    model_cfg = ModelConfig(arch="gru", emb_dim=8, hidden_dim=16, attn_dim=8, dropout=0.0)
    _, card = train(model_cfg, cfg, None, load_task_data(cfg, None, None), torch.device("cpu"),
                    progress=False, final_eval=False)
    assert seen and set(seen) == {"step"}
    assert card["teacher_forcing"]["coin"] == "step" and "tutorials" in card["teacher_forcing"]["coin_rule"]


def test_ratio_zero_feeds_the_models_own_argmax_on_the_fast_path_too():
    """With every coin tails the gold inputs after <sos> must not matter."""
    torch.manual_seed(0)
    model = build_model(tiny_config("bahdanau")).train()
    src, lens, tgt = batch()
    other = tgt.clone()
    other[:, 1:-1][other[:, 1:-1] > 3] = 4 + (other[:, 1:-1][other[:, 1:-1] > 3] + 3) % 15
    coins = Seq2Seq.draw_coins(tgt, 0.0)
    B, T = tgt[:, :-1].shape
    steps = torch.full((B,), T)                              # every row runs every step
    la = model.decoder.train_features(tgt[:, :-1], *reversed(model.encode(src, lens)), coins, steps)
    lb = model.decoder.train_features(other[:, :-1], *reversed(model.encode(src, lens)), coins, steps)
    assert la.shape[0] == B * T                              # step-major: step 0's rows first
    assert torch.equal(la[:B], lb[:B])                       # step 0 sees <sos> only
    assert torch.allclose(la, lb)                            # later steps: predictions, not gold


@pytest.mark.parametrize("arch", ["gru", "luong"])
def test_a_short_seeded_training_run_has_the_same_history_on_both_paths(arch):
    histories = []
    for fast in (True, False):
        cfg = TrainConfig(task="reverse", epochs=2, batch_size=32, lr=3e-3, patience=0, seed=3,
                          reverse_max_len=6, reverse_train_size=256, reverse_val_size=64, fast_path=fast,
                          teacher_forcing=TeacherForcingConfig(kind="constant", ratio=0.5))
        model_cfg = ModelConfig(arch=arch, emb_dim=8, hidden_dim=16, attn_dim=8, dropout=0.0)
        data = load_task_data(cfg, None, None)
        _, card = train(model_cfg, cfg, None, data, torch.device("cpu"), progress=False, final_eval=False)
        histories.append(card["history"])
    for fast_row, plain_row in zip(*histories):
        assert abs(fast_row["train_loss"] - plain_row["train_loss"]) <= 1e-3
        assert abs(fast_row["val_loss"] - plain_row["val_loss"]) <= 1e-3
        assert fast_row["tf_ratio"] == plain_row["tf_ratio"]


def test_the_training_command_takes_the_coin_rule():
    from seq2seq.train import build_parser, configs_from_args

    args = build_parser().parse_args(["--task", "reverse", "--arch", "gru", "--out", "x",
                                      "--tf-ratio", "0.5", "--tf-coin", "step"])
    _, cfg = configs_from_args(args)
    assert cfg.teacher_forcing.coin == "step" and cfg.teacher_forcing.ratio == 0.5
    _, default = configs_from_args(build_parser().parse_args(["--task", "reverse", "--arch", "gru", "--out", "x"]))
    assert default.teacher_forcing.coin == "token"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--task", "reverse", "--out", "x", "--tf-coin", "batch"])
