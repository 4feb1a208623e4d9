"""The live lab (seq2seq.lab): its settings, and that training in one thread leaves every
other thread's torch thread count alone, the threads already running and the ones started
while it trains (the app's sessions are threads of one process; Streamlit starts a new
thread for each script run)."""
import threading
import time

import pytest
import torch

from seq2seq.decoding import greedy_decode
from seq2seq.lab import lab_configs, run_lab, set_this_threads_count
from seq2seq.presets import LAB_MODEL, LAB_TRAINING
from seq2seq.schedules import teacher_forcing_ratio

from conftest import tiny_model


def _in_new_thread(fn):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("value", fn()))
    t.start()
    t.join()
    return out["value"]


@pytest.fixture
def default_threads():
    """A process default of 2 threads (so a lab thread using 1 is told apart), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(before)


def test_lab_configs_use_the_presets_and_fit_decays_to_the_run():
    model_cfg, cfg = lab_configs("gru", "linear", 0.3, epochs=2, train_size=256, max_len=5, seed=7)
    assert model_cfg.arch == "gru"
    assert {k: getattr(model_cfg, k) for k in LAB_MODEL} == LAB_MODEL
    assert (cfg.task, cfg.epochs, cfg.batch_size, cfg.lr) == ("reverse", 2, LAB_TRAINING["batch_size"], LAB_TRAINING["lr"])
    assert (cfg.reverse_max_len, cfg.reverse_train_size, cfg.reverse_val_size) == (5, 256, LAB_TRAINING["val_size"])
    total = 2 * 256 // LAB_TRAINING["batch_size"]
    assert teacher_forcing_ratio(cfg.teacher_forcing, 0) == pytest.approx(1.0)
    assert teacher_forcing_ratio(cfg.teacher_forcing, total) < 0.05
    _, const = lab_configs("bahdanau", "constant", 0.3, epochs=1, train_size=256, max_len=5, seed=7)
    assert teacher_forcing_ratio(const.teacher_forcing, 0) == teacher_forcing_ratio(const.teacher_forcing, 99) == 0.3


def test_torch_set_num_threads_leaks_to_threads_started_later_and_ours_does_not(default_threads):
    """Why the lab does not call torch.set_num_threads: it changes the default of later threads."""
    def torch_way():
        torch.set_num_threads(1)
        return torch.get_num_threads()

    assert _in_new_thread(torch_way) == 1
    assert _in_new_thread(torch.get_num_threads) == 1          # a later thread inherits it ...
    assert torch.get_num_threads() == default_threads            # ... this (running) thread does not
    torch.set_num_threads(default_threads)

    def our_way():
        if not set_this_threads_count(1):
            pytest.skip("torch without OpenMP")
        return torch.get_num_threads()

    assert _in_new_thread(our_way) == 1
    assert _in_new_thread(torch.get_num_threads) == default_threads
    assert torch.get_num_threads() == default_threads


def _mkl_threads() -> int | None:
    """MKL's thread count for the calling thread (its local setting, else the process's)."""
    from seq2seq.threads import torch_cpu_library
    try:
        return int(torch_cpu_library().MKL_Get_Max_Threads())
    except AttributeError:
        return None


def test_our_way_also_sets_mkls_count_for_the_calling_thread_only(default_threads):
    """torch's float32 matmuls on the CPU are MKL's, which opens a team of the process's
    count whatever the thread's OpenMP count: a one-thread training stream still multiplied
    on 2 threads. set_this_threads_count sets MKL's count too, for the calling thread."""
    if _mkl_threads() is None or not torch.backends.mkl.is_available():
        pytest.skip("torch without MKL")
    assert _mkl_threads() == default_threads

    def our_way():
        set_this_threads_count(1)
        return _mkl_threads()

    assert _in_new_thread(our_way) == 1
    assert _in_new_thread(_mkl_threads) == default_threads       # a later thread: the process's
    assert _mkl_threads() == default_threads


def test_lab_training_leaves_other_threads_thread_counts_unchanged(default_threads):
    """A lab training in one thread while another thread decodes: the decoding thread's
    torch.get_num_threads() is the same before, during and after; a thread started during the
    training gets the process default too; the lab itself trained on one thread."""
    model_cfg, cfg = lab_configs("gru", "inverse_sigmoid", 1.0, epochs=2, train_size=640, max_len=4, seed=1)
    model = tiny_model("bahdanau")
    src, lens = torch.randint(4, 23, (4, 7)), torch.tensor([7, 6, 5, 3])
    started, lab_done = threading.Event(), threading.Event()
    seen = {"decoder": [], "late": [], "during": 0}

    def on_batch(info):
        started.set()
        time.sleep(0.05)                                      # keep the lab going while the decoder works

    def decoder():
        seen["decoder"].append(torch.get_num_threads())       # before: the lab has not started
        started.wait(60)
        while not lab_done.is_set():
            greedy_decode(model, src, lens, max_len=8)
            seen["during"] += 1
            seen["decoder"].append(torch.get_num_threads())  # during
        seen["decoder"].append(torch.get_num_threads())      # after

    def late_starter():                                       # a new session thread while the lab trains
        started.wait(60)
        seen["late"].append(_in_new_thread(torch.get_num_threads))

    result = {}

    def lab():
        try:
            result["lab"] = run_lab(model_cfg, cfg, on_batch=on_batch)
        finally:
            lab_done.set()

    threads = [threading.Thread(target=f) for f in (decoder, late_starter, lab)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert "lab" in result and 0 <= result["lab"]["exact_match"] <= 1
    assert result["lab"]["threads"] == 1                     # the training thread used its own setting
    assert seen["during"] >= 1                               # the decoder did decode while the lab trained
    assert seen["decoder"] and set(seen["decoder"]) == {default_threads}
    assert seen["late"] == [default_threads]
    assert torch.get_num_threads() == default_threads
    assert _in_new_thread(torch.get_num_threads) == default_threads


def test_a_failing_callback_stops_the_lab_and_is_raised():
    model_cfg, cfg = lab_configs("gru", "constant", 1.0, epochs=3, train_size=640, max_len=4, seed=1)
    calls = []

    def on_batch(info):
        calls.append(info["step"])
        raise KeyboardInterrupt("the page went away")        # what Streamlit's rerun looks like: a BaseException

    before = {t.name for t in threading.enumerate()}
    with pytest.raises(KeyboardInterrupt):
        run_lab(model_cfg, cfg, on_batch=on_batch)
    assert calls == [1]                                      # called once, then training stopped
    assert not [t for t in threading.enumerate() if t.name == "seq2seq-lab" and t.name not in before]
