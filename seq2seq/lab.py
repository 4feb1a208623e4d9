"""The live lab: train a tiny reversal model in this process, write nothing, and measure it.

The Teacher forcing page runs this while other visitors' sessions decode in the same
process, so the run must not change anyone else's torch settings.

Threads: `torch.set_num_threads(n)` sets the calling thread's OpenMP team size *and* a
process-wide default that every thread started afterwards takes on its first torch call
(Streamlit starts a fresh thread for each script run). Checked: after `set_num_threads(1)`
in one thread, a thread started later reports 1 (threads already running keep theirs)
until some thread sets it again. So the lab never calls it: training runs in a worker
thread of its own, which sets only its own team sizes (`omp_set_num_threads` and MKL's
thread-local count, both per-thread settings: threads.py); tests/test_lab.py checks that
other threads, old and new, keep the default. The callbacks still run in the calling
thread, so a page can draw from them."""
from __future__ import annotations

import queue
import threading
import time
from typing import Callable

import torch

from .config import ModelConfig, TrainConfig
from .presets import EVAL_SEED, LAB_MODEL, LAB_TRAINING
from .schedules import describe
from .threads import set_this_threads_count

LAB_THREADS = 1   # a model this small gains nothing from more; on a busy machine extra threads fight (10x slower)


# ------------------------------------------------------------------ pure: the run's settings
def lab_configs(arch: str, kind: str, ratio: float, epochs: int, train_size: int, max_len: int,
                seed: int) -> tuple[ModelConfig, TrainConfig]:
    """A tiny reversal run (sizes from presets.LAB_MODEL / LAB_TRAINING). `kind` "constant"
    uses `ratio`; a decay ("linear", "exponential", "inverse_sigmoid") is fitted to go from
    ~1 to ~0 over the run's batches."""
    from .sweep import batches_per_epoch, constant_setting, decay_setting

    batch = LAB_TRAINING["batch_size"]
    total = batches_per_epoch(train_size, batch) * epochs
    tf = constant_setting(ratio).tf if kind == "constant" else decay_setting(kind, total).tf
    model_cfg = ModelConfig(arch=arch, **LAB_MODEL)
    cfg = TrainConfig(task="reverse", epochs=epochs, batch_size=batch, lr=LAB_TRAINING["lr"], patience=0, seed=seed,
                      reverse_min_len=1, reverse_max_len=max_len, reverse_train_size=train_size,
                      reverse_val_size=LAB_TRAINING["val_size"], amp=False, teacher_forcing=tf)
    return model_cfg, cfg


# ------------------------------------------------------------------ the run
class LabStopped(Exception):
    """Raised inside the worker when the caller went away (a callback raised)."""


def _train_and_measure(model_cfg: ModelConfig, cfg: TrainConfig, on_batch, on_epoch, eval_n: int) -> dict:
    from .evaluate import evaluate_reversal, mean_over
    from .train import load_task_data, train

    cpu = torch.device("cpu")
    data = load_task_data(cfg, None, None)
    model, card = train(model_cfg, cfg, None, data, cpu, name="live-lab", progress=False,
                        on_batch=on_batch, on_epoch=on_epoch, final_eval=False)
    rev = evaluate_reversal(model, data.src_vocab, range(1, cfg.reverse_max_len + 1), eval_n, EVAL_SEED, cpu)
    return {"history": card["history"], "exact_match": mean_over(rev["exact_match_by_length"], 1, cfg.reverse_max_len),
            "exact_match_by_length": rev["exact_match_by_length"], "policy": describe(cfg.teacher_forcing),
            "arch": model_cfg.arch, "max_len": cfg.reverse_max_len, "eval_n": eval_n,
            "threads": torch.get_num_threads()}


def run_lab(model_cfg: ModelConfig, cfg: TrainConfig, on_batch: Callable[[dict], None] | None = None,
            on_epoch: Callable[[dict], None] | None = None, threads: int = LAB_THREADS,
            eval_n: int = LAB_TRAINING["eval_n"]) -> dict:
    """Train (writing nothing) and measure exact match on `eval_n` fresh sequences per length.

    Returns {history, exact_match, exact_match_by_length, policy, arch, max_len, eval_n,
    threads (what the training thread used), seconds}. Training runs in a worker thread with
    `threads` intra-op threads; the caller's and the process's torch settings are untouched.
    `on_batch` (train's {epoch, batch, batches, step, loss, ratio}) and `on_epoch` (each
    history row) are called in the calling thread. If one raises, training stops at its next
    report and the exception is raised here; errors in training are raised here too."""
    t0 = time.perf_counter()
    events: queue.Queue = queue.Queue()
    stop = threading.Event()

    def report(kind: str):
        def post(payload: dict) -> None:
            if stop.is_set():
                raise LabStopped()
            events.put((kind, payload))
        return post

    def work() -> None:
        try:
            set_this_threads_count(threads)
            events.put(("done", _train_and_measure(model_cfg, cfg, report("batch"), report("epoch"), eval_n)))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            events.put(("error", e))

    worker = threading.Thread(target=work, name="seq2seq-lab", daemon=True)
    worker.start()
    try:
        while True:
            kind, payload = events.get()
            if kind == "batch":
                if on_batch is not None:
                    on_batch(payload)
            elif kind == "epoch":
                if on_epoch is not None:
                    on_epoch(payload)
            elif kind == "error":
                raise payload
            else:
                payload["seconds"] = round(time.perf_counter() - t0, 1)
                return payload
    finally:
        stop.set()                     # a callback raised (e.g. the page reran): the worker stops at its next report
        worker.join(timeout=60)
