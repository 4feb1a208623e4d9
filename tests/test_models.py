import pytest
import torch

from seq2seq.models import count_params

from conftest import padded_batch, tiny_model


def test_forward_shapes(arch):
    model = tiny_model(arch)
    src, lens = padded_batch([5, 3, 7])
    tgt = torch.randint(4, 19, (3, 6))
    for ratio in (1.0, 0.5, 0.0):
        logits = model(src, lens, tgt, teacher_forcing=ratio)
        assert logits.shape == (3, 5, 19)
    memory, state = model.encode(src, lens)
    assert memory.mask.shape == (3, 7)
    logits, state2, attn = model.decode_step(torch.full((3,), 2), state, memory)
    assert logits.shape == (3, 19)
    assert set(state2) == set(state)
    for k in state:
        assert state2[k].shape == state[k].shape and state[k].shape[0] == 3
    if model.has_attention:
        assert attn.shape == (3, 7)
    else:
        assert attn is None
    assert count_params(model) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", ["bahdanau", "luong"])
def test_attention_rows_sum_to_one_and_padding_gets_zero(arch):
    model = tiny_model(arch)
    assert model.has_attention
    src, lens = padded_batch([6, 2, 4])
    memory, state = model.encode(src, lens)
    prev = torch.full((3,), 2)
    for _ in range(4):
        logits, state, attn = model.decode_step(prev, state, memory)
        assert torch.allclose(attn.sum(-1), torch.ones(3), atol=1e-6)
        for i, n in enumerate(lens.tolist()):
            assert torch.all(attn[i, n:] == 0.0)
            assert torch.all(attn[i, :n] > 0)
        prev = logits.argmax(-1)


def test_padding_does_not_change_results(arch):
    """A sentence decodes the same alone as in a padded batch (packing + masking work)."""
    model = tiny_model(arch)
    src, lens = padded_batch([7, 3])
    tgt = torch.randint(4, 19, (2, 5))
    together = model(src, lens, tgt)
    alone = model(src[1:, :3], lens[1:], tgt[1:])
    assert torch.allclose(together[1], alone[0], atol=1e-5)


def test_zero_ratio_feeds_predictions():
    """Ratio 0: each step's input is the previous argmax, not the gold token."""
    model = tiny_model("bahdanau")
    src, lens = padded_batch([4])
    tgt_a = torch.tensor([[2, 5, 6, 7, 3]])
    tgt_b = torch.tensor([[2, 9, 10, 11, 3]])
    assert torch.equal(model(src, lens, tgt_a, 0.0), model(src, lens, tgt_b, 0.0))
    assert not torch.equal(model(src, lens, tgt_a, 1.0), model(src, lens, tgt_b, 1.0))


def test_tied_embeddings_share_the_matrix():
    model = tiny_model("luong", tie_embeddings=True)
    assert model.decoder.out.embedding.weight is model.decoder.embedding.weight
