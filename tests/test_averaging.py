"""--ema: the exponential moving average of the weights (seq2seq/averaging.py) and how
training validates, keeps, resumes and ships it."""
import pytest
import torch

from seq2seq.averaging import WeightAverage
from seq2seq.checkpoint import load_checkpoint
from seq2seq.config import ModelConfig, TrainConfig
from seq2seq.train import load_task_data, train


def test_the_average_follows_the_warmed_up_decay():
    model = torch.nn.Linear(3, 2)
    tied = torch.nn.Sequential(model, model)                  # a shared module counts once
    avg = WeightAverage(tied, 0.99)
    assert len(avg.params) == 2
    w0 = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    avg.update()                                               # d_0 = min(0.99, 1/10) = 0.1
    assert torch.allclose(avg.average[0], 0.1 * w0 + 0.9 * (w0 + 1.0))
    assert avg.current_decay() == pytest.approx(2 / 11)
    for _ in range(5000):
        avg.updates += 1
    assert avg.current_decay() == 0.99
    with pytest.raises(ValueError):
        WeightAverage(model, 1.0)


def test_swapping_in_restores_the_raw_weights_bit_for_bit():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    avg = WeightAverage(model, 0.9)
    with torch.no_grad():
        model.weight.mul_(3.0)
    avg.update()
    raw = model.weight.detach().clone()
    with avg.swapped_in():
        assert torch.equal(model.weight, avg.average[0])
    assert torch.equal(model.weight, raw)
    state = avg.state_tensors()
    fresh = WeightAverage(model, 0.9)
    assert fresh.load_state_tensors(state) and fresh.updates == 1
    assert torch.equal(fresh.average[0], avg.average[0])
    assert not WeightAverage(model, 0.9).load_state_tensors({})


def _small(epochs, ema):
    mc = ModelConfig(arch="bahdanau", emb_dim=16, hidden_dim=32, attn_dim=16, dropout=0.1,
                     max_src_len=20, max_out_len=20)
    tc = TrainConfig(task="reverse", epochs=epochs, batch_size=64, lr=3e-3, patience=0, seed=5,
                     reverse_max_len=6, reverse_train_size=640, reverse_val_size=64, ema_decay=ema)
    return mc, tc


def test_training_ships_the_average_and_resumes_it(tmp_path, single_thread):
    mc, tc = _small(3, 0.95)
    data = load_task_data(tc, None, None)
    _, full = train(mc, tc, tmp_path / "full", data, torch.device("cpu"), state_dir=tmp_path / "s1",
                    progress=False, final_eval=False)
    mc, tc = _small(2, 0.95)
    train(mc, tc, tmp_path / "part", data, torch.device("cpu"), state_dir=tmp_path / "s2", progress=False,
          final_eval=False)
    mc, tc = _small(3, 0.95)
    _, resumed = train(mc, tc, tmp_path / "part", data, torch.device("cpu"), state_dir=tmp_path / "s2",
                       resume=True, progress=False, final_eval=False)
    mc, tc = _small(3, 0.0)
    _, raw = train(mc, tc, None, data, torch.device("cpu"), progress=False, final_eval=False)
    assert full["train_config"]["ema_decay"] == 0.95
    # the same updates, so the same training losses; validated on other weights
    assert [h["train_loss"] for h in full["history"]] == pytest.approx([h["train_loss"] for h in raw["history"]],
                                                                       rel=1e-5)
    assert [h["val_loss"] for h in full["history"]] != [h["val_loss"] for h in raw["history"]]
    # resuming restored the average: the third epoch validates the same weights as the straight run
    assert resumed["history"][2]["val_loss"] == pytest.approx(full["history"][2]["val_loss"], rel=1e-4, abs=1e-4)
    a, b = load_checkpoint(tmp_path / "full").model, load_checkpoint(tmp_path / "part").model
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-5), name
