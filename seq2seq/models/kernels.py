"""Float32 matmuls for decoding on the CPU: oneDNN with each weight packed once.

torch's float32 `F.linear` on the CPU goes to MKL. On the AMD EPYC (AVX-512) these
models are benchmarked on, MKL multiplied at 108 GFLOP/s per core while oneDNN, with
the weight reordered once into its blocked layout, reached 239 GFLOP/s on the same
2048-square product, and 2.1-2.3x on the decoder's own shapes (a batch of 16-256 rows
times the GRU, projection and attention weights). The product is float32 either way;
only the order of the additions differs (about 1e-6 relative), and a row's result does
not depend on the other rows of the batch.

Used only inside a model's inference mode (`Seq2Seq.inference()`, which the caller asks
for: eval mode, no autograd); training and anything else keep the standard ops."""
from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=1)
def onednn_linear_available() -> bool:
    """True when this torch build has oneDNN's prepacked linear (x86 and Arm CPU builds)."""
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(torch.ones(2, 2), None)
        torch.ops.mkldnn._linear_pointwise(torch.ones(1, 2), packed, None, "none", [], "")
        return True
    except (AttributeError, RuntimeError):
        return False


def weight_key(weight: torch.Tensor) -> tuple:
    """What identifies a weight's current values for a cache: its storage and, where torch
    tracks one, its version counter (bumped by every in-place update, such as an optimizer
    step). A weight created under inference_mode has no counter and cannot be updated in
    place outside it."""
    try:
        version = weight._version
    except RuntimeError:
        version = None
    return weight.data_ptr(), version, tuple(weight.shape), weight.dtype, weight.device


class InferenceSwitch:
    """Whether a model is inside its inference mode, per thread and per async context (a
    ContextVar): one visitor's decoding turns on no fast path in another thread computing
    gradients on the same shared model. One switch per model; every part reads it."""

    _ids = itertools.count()

    def __init__(self):
        self._var = contextvars.ContextVar(f"seq2seq-inference-{next(self._ids)}", default=False)

    def active(self) -> bool:
        return self._var.get()

    def enter(self):
        return self._var.set(True)

    def exit(self, token) -> None:
        self._var.reset(token)

    def __deepcopy__(self, memo):            # a copied model gets its own switch, off
        return InferenceSwitch()


class PackedLinears:
    """A module's cache of oneDNN-packed weights, and the linear that uses them.

    The packed path runs only while `mode` (the model's InferenceSwitch) is active; the
    model hands its switch to every part when it is built. A packed copy is rebuilt when
    its weight changes: the optimizer updates weights in place, which bumps their
    version counter."""

    def __init__(self, mode: InferenceSwitch | None = None):
        self.mode = mode or InferenceSwitch()
        self._packed: dict[int, tuple] = {}

    def __deepcopy__(self, memo):            # packed copies belong to the original's weights
        import copy
        return PackedLinears(copy.deepcopy(self.mode, memo))

    def applies(self, x: torch.Tensor) -> bool:
        return (self.mode.active() and x.device.type == "cpu"
                and x.dtype == torch.float32 and onednn_linear_available())

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """F.linear(x, weight, bias), through oneDNN when `applies(x)`. x [.., in] -> [.., out]."""
        if not self.applies(x) or weight.dtype != torch.float32:
            return F.linear(x, weight, bias)
        version = weight_key(weight)
        hit = self._packed.get(id(weight))
        if hit is None or hit[0] != version:
            hit = (version, torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None))
            self._packed[id(weight)] = hit
        lead = x.shape[:-1]
        out = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.size(-1)).contiguous(), hit[1],
                                                 None if bias is None else bias.detach(), "none", [], "")
        return out.view(*lead, out.size(-1))


def gru_update(gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """A GRU cell's gates, nn.GRU's equations: gi = W_ih x + b_ih and gh = W_hh h + b_hh,
    both [B, 3H] in (reset, update, new) order, h [B, H] -> the next h [B, H]. Under bf16
    autocast the projections come in bf16: they are converted to h's dtype first, since
    elementwise ops on mixed dtypes take a slow path on the CPU (5-10x)."""
    gi, gh = gi.to(h.dtype), gh.to(h.dtype)
    i_r, i_z, i_n = gi.chunk(3, 1)
    h_r, h_z, h_n = gh.chunk(3, 1)
    reset = torch.sigmoid(i_r + h_r)
    update = torch.sigmoid(i_z + h_z)
    new = torch.tanh(i_n + reset * h_n)
    return new + update * (h - new)                                    # (1 - z) n + z h


def tanh_via_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) = 2 sigmoid(2x) - 1 (within 2e-7 of torch.tanh). On the CPU, torch.tanh is
    several times slower than torch.sigmoid (0.69 against 0.07 ms for 640k values here).
    When x needs no gradient the chain runs in place on x, which must be a fresh tensor."""
    if x.requires_grad:
        return 2 * torch.sigmoid(2 * x) - 1
    return x.mul_(2).sigmoid_().mul_(2).sub_(1)


class DropoutRandomness:
    """Where a model's dropout masks come from: torch's global generator, or, inside
    `use(generator)`, that generator, for the calling thread (and async context) only.
    Training's streams (seq2seq/streams.py) give each stream its own seeded generator, so
    the masks, and the run, do not depend on how the threads interleave. One per model;
    every dropout reads it."""

    _ids = itertools.count()

    def __init__(self):
        self._var = contextvars.ContextVar(f"seq2seq-dropout-{next(self._ids)}", default=None)

    def generator(self) -> torch.Generator | None:
        return self._var.get()

    @contextlib.contextmanager
    def use(self, generator: torch.Generator):
        token = self._var.set(generator)
        try:
            yield
        finally:
            self._var.reset(token)

    def __deepcopy__(self, memo):            # a copied model draws from the global generator
        return DropoutRandomness()


def dropout(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training dropout with the mask drawn as uniform < keep: nn.Dropout's distribution,
    but on the CPU torch.rand is several times faster than the bernoulli_ nn.Dropout draws
    (2.2 vs 0.4 ms for a [128, 896] mask here)."""
    if p == 0.0:
        return x
    # the mask as floats 0 or 1/(1-p) from an in-place compare: multiplying by a bool
    # mask promotes it element by element, about twice as slow on the CPU
    scale = torch.rand(x.shape, device=x.device, generator=generator).ge_(p).mul_(1.0 / (1.0 - p))
    return x * scale.to(x.dtype)


class FastDropout(torch.nn.Module):
    """nn.Dropout through `dropout` above, its masks from the model's DropoutRandomness.
    Identity in eval mode."""

    def __init__(self, p: float = 0.5, randomness: DropoutRandomness | None = None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.randomness = randomness or DropoutRandomness()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return dropout(x, self.p, self.randomness.generator())

    def extra_repr(self) -> str:
        return f"p={self.p}"
