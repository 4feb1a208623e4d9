"""Training steps split across the CPU's cores ("streams").

A decoder step is a handful of small matrix products ([128, 320] x [320, 960] for
translate-bahdanau) that two OpenMP threads share badly: measured on the 2-core EPYC, the
fast path ran 1.4-1.8x the tutorial loop with both threads on one batch, and 2.5-3.1x with
the batch cut in two halves, each half's forward and backward on its own thread with one
intra-op thread (PyTorch releases the GIL inside its ops, and the backward runs in C++).

The split changes neither the loss nor the gradient: the batch loss is the mean over its
target tokens, so each part's mean loss is weighted by its share of the tokens, and each
part's gradients are added in part order on the calling thread (the same sum whichever
thread finishes first). What could depend on thread timing is kept out of the threads:
the teacher-forcing coins are drawn for the whole batch before the split (so the
tutorials' one-coin-per-step rule still holds across parts), and each part draws its
dropout masks from its own generator, seeded from the state of torch's global generator on
the calling thread, which it does not advance (models/kernels.py DropoutRandomness). A run
is as reproducible as with one stream, but its dropout masks are other ones; the parity
tests compare the two without dropout."""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import torch

from .config import TrainConfig
from .data import Batch
from .distributed import current_dist
from .models import Seq2Seq
from .threads import set_this_threads_count

MIN_ROWS_PER_STREAM = 32   # below this a part's matmuls are too small for a thread of their own


def stream_seed() -> int:
    """A seed for this batch's stream generators, read from torch's global generator state
    without advancing it: the coins of later batches are then those one stream draws (the
    same run when there is no dropout), and a resumed run, whose generator state is
    restored, seeds the same masks."""
    state = torch.get_rng_state().numpy().tobytes()
    return int.from_bytes(hashlib.blake2b(state, digest_size=8).digest(), "little") >> 1


def default_streams(device: torch.device, batch_size: int, threads: int | None = None) -> int:
    """Streams for `--streams auto`: one per intra-op thread on the CPU (at most one per
    MIN_ROWS_PER_STREAM rows of a batch); one on a GPU, whose kernels are already parallel."""
    if torch.device(device).type != "cpu":
        return 1
    threads = torch.get_num_threads() if threads is None else threads
    return max(1, min(threads, batch_size // MIN_ROWS_PER_STREAM))


def training_streams(cfg: TrainConfig, device) -> int:
    """The streams a training run uses: --streams, or default_streams for 0; one under
    torchrun, where every rank is a process of its own."""
    if current_dist().enabled:
        return 1
    return cfg.streams or default_streams(device, cfg.batch_size)


class TrainingStreams:
    """loss_and_backward over `streams` parts of each batch (1: the batch as it is, on the
    calling thread). Owns its threads: close() when done, or use it as a context manager."""

    def __init__(self, model: Seq2Seq, streams: int = 1):
        if streams < 1:
            raise ValueError(f"streams must be at least 1, got {streams}")
        self.model, self.streams = model, int(streams)
        self._pool = (ThreadPoolExecutor(self.streams, initializer=set_this_threads_count, initargs=(1,),
                                         thread_name_prefix="seq2seq-stream") if self.streams > 1 else None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def loss_and_backward(self, net, batch: Batch, teacher_forcing: float, coin: str, **loss_kw):
        """The batch's mean loss per target token (detached) and its target tokens, with the
        gradient of that loss in every parameter's .grad (added to what is there).
        net: the callable that gives (loss, tokens) for one stream (Seq2Seq.loss, or the
        DistributedDataParallel wrapper, which takes one stream only)."""
        parts = batch.split(self.streams) if self._pool is not None else [batch]
        if len(parts) == 1:
            loss, n_tokens = net(batch.src, batch.src_lens, batch.tgt, teacher_forcing=teacher_forcing,
                                 coin=coin, **loss_kw)
            loss.backward()
            return loss.detach(), n_tokens
        model = self.model
        coins = model.draw_coins(batch.tgt, teacher_forcing, coin)                  # [B, T-1] or None
        seed = stream_seed()
        total = sum(p.n_target_tokens for p in parts)
        params = [p for p in model.parameters() if p.requires_grad]

        def run(i: int):
            part = parts[i]
            part_coins = None if coins is None else coins[i::len(parts), : part.tgt.size(1) - 1]
            with model.dropout_randomness.use(torch.Generator().manual_seed(seed + i)):
                loss, n_tokens = model.loss(part.src, part.src_lens, part.tgt, teacher_forcing=teacher_forcing,
                                            coins=part_coins, coin=coin, **loss_kw)
            grads = torch.autograd.grad(loss * (n_tokens / total), params, allow_unused=True)
            return loss.detach() * n_tokens, grads

        results = list(self._pool.map(run, range(len(parts))))
        for j, p in enumerate(params):
            grads = [r[1][j] for r in results if r[1][j] is not None]
            if not grads:
                continue
            g = grads[0]
            for other in grads[1:]:
                g = g + other
            p.grad = g if p.grad is None else p.grad + g
        return sum(r[0] for r in results) / total, total
