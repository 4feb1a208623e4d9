"""Training's streams (seq2seq/streams.py): a batch split across threads gives the loss and
the gradients of the whole batch on one stream (every architecture, ratios 1.0, 0.5 and 0,
coins per token and per step), its dropout masks do not depend on thread timing, and a
seeded training run on two streams matches one stream and repeats itself exactly. Also
the RNN runner that draws between-layer dropout (models/rnn.py). No timing here."""
import pytest
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seq2seq.config import ModelConfig, TeacherForcingConfig, TrainConfig
from seq2seq.data import Batch
from seq2seq.models import build_model
from seq2seq.models.kernels import DropoutRandomness
from seq2seq.models.rnn import run_rnn
from seq2seq.streams import TrainingStreams, default_streams
from seq2seq.task_data import load_task_data
from seq2seq.trainer import train

from conftest import padded_batch, tiny_config

LOSS_TOL = 1e-5      # float32: the parts add their token losses in another order
GRAD_TOL = 1e-5


def ragged_batch(rows=12, seed=0, vocab=19):
    """A Batch of `rows` examples whose sources and targets have many lengths."""
    lengths = [1 + (7 * i + seed) % 9 for i in range(rows)]
    src, lens = padded_batch(lengths, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    tgt = torch.randint(4, vocab, (rows, 11), generator=g)
    tgt[:, 0] = 2
    for i in range(rows):
        end = 2 + (5 * i + seed) % 9                    # <eos> at 2..10, padding after it
        tgt[i, end], tgt[i, end + 1:] = 3, 0
    return Batch(src, lens, tgt, list(range(rows)))


def grads_of(model, batch, streams, ratio, coin="token", seed=5, **kw):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)                              # the same coins for every stream count
    with TrainingStreams(model, streams) as s:
        loss, n = s.loss_and_backward(model.loss, batch, ratio, coin, label_smoothing=0.1, **kw)
    return float(loss), n, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def test_split_interleaves_rows_and_trims_padding():
    b = ragged_batch(12)
    parts = b.split(3)
    assert [p.index for p in parts] == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]
    for i, p in enumerate(parts):
        assert torch.equal(p.src_lens, b.src_lens[i::3])
        assert p.src.size(1) == int(p.src_lens.max())
        assert torch.equal(p.src, b.src[i::3, : p.src.size(1)])
        assert bool((p.tgt[:, -1] != 0).any())                     # no all-padding column left
        assert torch.equal(p.tgt, b.tgt[i::3, : p.tgt.size(1)])
        assert not bool((b.tgt[i::3, p.tgt.size(1):] != 0).any())   # only padding was cut
    assert sum(p.n_target_tokens for p in parts) == b.n_target_tokens
    assert len(ragged_batch(2).split(4)) == 2                     # never an empty part


@pytest.mark.parametrize("ratio", [1.0, 0.5, 0.0])
def test_streams_give_the_one_stream_loss_and_gradients(arch, ratio):
    torch.manual_seed(0)
    model = build_model(tiny_config(arch, tie_embeddings=arch == "bahdanau")).train()   # dropout 0
    b = ragged_batch(12, seed=1)
    one_loss, one_n, one = grads_of(model, b, 1, ratio)
    for streams in (2, 3):
        loss, n, grads = grads_of(model, b, streams, ratio)
        assert n == one_n == b.n_target_tokens
        assert abs(loss - one_loss) <= LOSS_TOL
        assert set(grads) == set(one)
        for name, g in one.items():
            assert torch.allclose(grads[name], g, atol=GRAD_TOL, rtol=1e-4), (streams, name)


def test_the_tutorials_coin_is_one_per_step_across_the_parts():
    torch.manual_seed(0)
    model = build_model(tiny_config("bahdanau")).train()
    b = ragged_batch(12, seed=2)
    seen = []
    original = model.loss

    def spy(src, src_lens, tgt, coins=None, **kw):
        seen.append(coins)
        return original(src, src_lens, tgt, coins=coins, **kw)
    model.loss = spy
    one_loss, _, one = grads_of(model, b, 1, 0.5, coin="step")
    two_loss, _, two = grads_of(model, b, 2, 0.5, coin="step")
    parts = seen[1:]
    assert len(parts) == 2
    for c in parts:                                   # every row of every part: the same column values
        assert torch.equal(c, c[:1].expand_as(c))
    width = min(c.size(1) for c in parts)
    assert torch.equal(parts[0][0, :width], parts[1][0, :width])
    assert abs(one_loss - two_loss) <= LOSS_TOL
    assert all(torch.allclose(two[k], g, atol=GRAD_TOL, rtol=1e-4) for k, g in one.items())


def test_dropout_masks_do_not_depend_on_thread_timing():
    torch.manual_seed(0)
    model = build_model(tiny_config("lstm", dropout=0.3, n_layers=2)).train()
    b = ragged_batch(16, seed=3)
    runs = [grads_of(model, b, 2, 0.5, seed=9) for _ in range(4)]
    for loss, _, grads in runs[1:]:
        assert loss == runs[0][0]
        assert all(torch.equal(grads[k], runs[0][2][k]) for k in grads)
    other = grads_of(model, b, 2, 0.5, seed=10)            # another seed: other masks
    assert other[0] != runs[0][0]


def test_default_streams():
    assert default_streams(torch.device("cpu"), 128, threads=2) == 2
    assert default_streams(torch.device("cpu"), 128, threads=16) == 4     # at least 32 rows a stream
    assert default_streams(torch.device("cpu"), 32, threads=2) == 1
    assert default_streams(torch.device("cpu"), 128, threads=1) == 1
    assert default_streams(torch.device("cuda"), 128, threads=8) == 1
    with pytest.raises(ValueError):
        TrainingStreams(build_model(tiny_config("gru")), 0)
    with pytest.raises(ValueError):
        TrainConfig(streams=-1)


# ------------------------------------------------------------------ models/rnn.py
def by_layers(rnn, x, hx, seed, p):
    """Reference: one single-layer module per layer (same weights), a mask from a generator
    seeded like run_rnn's between them."""
    g = torch.Generator().manual_seed(seed)
    lstm = isinstance(rnn, nn.LSTM)
    dirs = 2 if rnn.bidirectional else 1
    finals = []
    for layer in range(rnn.num_layers):
        one = type(rnn)(x.size(-1), rnn.hidden_size, 1, batch_first=True, bidirectional=rnn.bidirectional)
        for name, _ in one.named_parameters():
            src_name = name.replace("_l0", f"_l{layer}")
            getattr(one, name).data.copy_(getattr(rnn, src_name).data)
        rows = slice(layer * dirs, (layer + 1) * dirs)
        h0 = None if hx is None else (tuple(h[rows] for h in hx) if lstm else hx[rows])
        x, final = one(x, h0)
        finals.append(final if lstm else (final,))
        if layer + 1 < rnn.num_layers:
            x = x * torch.rand(x.shape, generator=g).ge_(p).mul_(1 / (1 - p))
    final = tuple(torch.cat([f[i] for f in finals], 0) for i in range(len(finals[0])))
    return x, final if lstm else final[0]


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_run_rnn_draws_between_layer_dropout_from_the_models_generator(cell, bidirectional):
    torch.manual_seed(0)
    rnn = cell(6, 5, 3, batch_first=True, dropout=0.4, bidirectional=bidirectional).train()
    dirs = 2 if bidirectional else 1
    x = torch.randn(4, 7, 6)
    lstm = cell is nn.LSTM
    h = torch.randn(3 * dirs, 4, 5)
    hx = (h, torch.randn(3 * dirs, 4, 5)) if lstm else h
    randomness = DropoutRandomness()
    with randomness.use(torch.Generator().manual_seed(11)):
        out, final = run_rnn(rnn, x, hx, randomness)
    ref_out, ref_final = by_layers(rnn, x, hx, 11, 0.4)
    assert torch.allclose(out, ref_out, atol=1e-6)
    for a, b in zip(final if lstm else (final,), ref_final if lstm else (ref_final,)):
        assert torch.allclose(a, b, atol=1e-6)
    # packed, unsorted lengths, no initial state: the encoder's call
    lens = torch.tensor([3, 7, 1, 5])
    packed = pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False)
    with randomness.use(torch.Generator().manual_seed(12)):
        pout, pfinal = run_rnn(rnn, packed, None, randomness)
    padded, _ = pad_packed_sequence(pout, batch_first=True, total_length=7)
    assert padded.shape == (4, 7, 5 * dirs)
    assert bool((padded[2, 1:] == 0).all())
    # eval mode, or no grad: the module itself, bit for bit
    rnn.eval()
    assert torch.equal(run_rnn(rnn, x, hx, randomness)[0], rnn(x, hx)[0])
    rnn.train()
    with torch.no_grad():
        torch.manual_seed(3)
        a = run_rnn(rnn, x, hx, randomness)[0]
        torch.manual_seed(3)
        assert torch.equal(a, rnn(x, hx)[0])


def test_run_rnn_packed_matches_the_module_without_dropout():
    torch.manual_seed(0)
    rnn = nn.GRU(6, 5, 2, batch_first=True, dropout=0.4, bidirectional=True)
    x = torch.randn(4, 7, 6)
    lens = torch.tensor([3, 7, 1, 5])
    packed = pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False)
    randomness = DropoutRandomness()
    rnn.train()
    import seq2seq.models.rnn as rnn_module
    saved = rnn_module.dropout
    rnn_module.dropout = lambda t, p, g=None: t        # the layer loop with masks of ones
    try:
        out, final = run_rnn(rnn, packed, None, randomness)
    finally:
        rnn_module.dropout = saved
    rnn.dropout = 0.0
    ref_out, ref_final = rnn(packed)
    assert torch.allclose(out.data, ref_out.data, atol=1e-6)
    assert torch.allclose(final, ref_final, atol=1e-6)


def test_a_seeded_run_on_two_streams_matches_one_and_repeats_itself():
    def history(streams, dropout=0.0, arch="bahdanau"):
        cfg = TrainConfig(task="reverse", epochs=2, batch_size=64, lr=3e-3, patience=0, seed=3, reverse_max_len=6,
                          reverse_train_size=128, reverse_val_size=32, streams=streams,
                          teacher_forcing=TeacherForcingConfig(kind="constant", ratio=0.5))
        model_cfg = ModelConfig(arch=arch, emb_dim=8, hidden_dim=16, attn_dim=8, dropout=dropout)
        model, card = train(model_cfg, cfg, None, load_task_data(cfg, None, None), torch.device("cpu"),
                            progress=False, final_eval=False)
        return card, model
    one, _ = history(1)
    two, _ = history(2)
    assert two["provenance"]["streams"] == 2 and one["provenance"]["streams"] == 1
    for a, b in zip(one["history"], two["history"]):
        assert abs(a["train_loss"] - b["train_loss"]) <= 1e-3
        assert abs(a["val_loss"] - b["val_loss"]) <= 1e-3
    # with dropout (a 2-layer LSTM: the between-layer masks too) two runs are the same run
    (c1, m1), (c2, m2) = history(2, 0.3, "lstm"), history(2, 0.3, "lstm")
    assert [r["train_loss"] for r in c1["history"]] == [r["train_loss"] for r in c2["history"]]
    assert all(torch.equal(p, q) for p, q in zip(m1.state_dict().values(), m2.state_dict().values()))
