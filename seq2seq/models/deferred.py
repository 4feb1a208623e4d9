"""Gradients deferred past the decoder loop, for the operands every training step reuses.

Each step of training's decoder loop multiplies per-step tensors with operands that are
the same at every step: the recurrent weight W_hh, the attention query weight, the
encoder outputs a context averages, the target embedding (for the tokens the model fed
itself). Autograd gives such an operand a gradient at every step: one small product per
step (a [out, B] x [B, in] matmul, or for the encoder outputs an outer product of the
size of the whole memory) plus an accumulation of the operand's full size; the
embedding's dense backward even zero-fills a [V, E] gradient at every step. Here a step's
backward computes only the gradient of its per-step input and keeps what the operand's
gradient needs; the operand's gradient is then one product over all steps at once.

How it hooks into autograd: `DeferredOperand` runs the operand through `_Anchor`, whose
output is a 0-d tensor that every step's Function takes as an input and sends a zero
gradient. Autograd runs a node after all its consumers, so the anchor's backward runs
once, after every step's, and returns the operand's gradient made from the kept records.
Records are per forward call: each training stream (streams.py) has its own.

Used only by training's fast path (decoder.train_features); decoding and the plain path
use the standard ops. Same values up to summation order (tests/test_deferred.py)."""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F


class _Anchor(torch.autograd.Function):
    """operand -> a 0-d zero; backward: the operand's gradient from the steps' records."""

    @staticmethod
    def forward(ctx, operand, records: list, reduce: Callable):
        ctx.records, ctx.reduce = records, reduce
        return operand.new_zeros(())

    @staticmethod
    def backward(ctx, _):
        grad = ctx.reduce(ctx.records) if ctx.records else None
        ctx.records.clear()
        return grad, None, None


class _Step(torch.autograd.Function):
    """One step's use of a deferred operand: y = kind.product(operand, x). Backward keeps
    (x, dy) for the operand's gradient and returns only x's, kind.input_grad(operand, dy)."""

    @staticmethod
    def forward(ctx, operand, anchor, records, kind, x):
        x = kind.prepare(x, operand)
        ctx.save_for_backward(operand, x)
        ctx.records, ctx.kind = records, kind
        return kind.product(operand, x)

    @staticmethod
    def backward(ctx, dy):
        operand, x = ctx.saved_tensors
        dy = dy.to(operand.dtype) if ctx.kind.cast else dy
        ctx.records.append((x, dy))
        return None, dy.new_zeros(()), None, None, ctx.kind.input_grad(operand, dy)


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype autocast gives t's matmuls (bf16 under --cpu-bf16), else t's own."""
    kind = t.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else t.dtype


class DeferredOperand:
    """An operand every step uses, its gradient deferred (see above). A subclass says what a
    step computes (`product`), the per-step input's gradient (`input_grad`) and the
    operand's gradient from all steps' (x, dy) records (`reduce`). With `cast` the operand
    is cast once to the dtype its products run in (bf16 under autocast) and each step's
    input to it."""

    cast = True

    def __init__(self, operand: torch.Tensor):
        self.value = operand.detach().to(compute_dtype(operand) if self.cast else operand.dtype)
        self.records: list = []
        # the anchor keeps `records` and a reduce function, not this object: no reference
        # cycle through the autograd graph, which Python's collector cannot see into
        self.anchor = (_Anchor.apply(operand, self.records, self.reducer())
                       if operand.requires_grad and torch.is_grad_enabled() else None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.anchor is None:                  # no gradient wanted: the forward only
            return self.product(self.value, self.prepare(x, self.value))
        return _Step.apply(self.value, self.anchor, self.records, type(self), x)

    @classmethod
    def prepare(cls, x, operand):
        return x.to(operand.dtype) if cls.cast else x

    @staticmethod
    def product(operand, x):
        raise NotImplementedError

    @staticmethod
    def input_grad(operand, dy):
        raise NotImplementedError

    def reducer(self) -> Callable[[list], torch.Tensor]:
        """records [(x, dy) per step] -> the operand's gradient."""
        return self.reduce

    @staticmethod
    def reduce(records):
        raise NotImplementedError


class DeferredLinear(DeferredOperand):
    """x [..., in] -> x W^T [..., out] at every step; dW = sum over steps and rows of
    dy^T x, one [out, N] x [N, in] matmul after the loop."""

    @staticmethod
    def product(w, x):
        return F.linear(x, w)

    @staticmethod
    def input_grad(w, dy):
        return dy @ w                                                          # dx [..., in]

    @staticmethod
    def reduce(records):
        xs = torch.cat([x.reshape(-1, x.size(-1)) for x, _ in records])         # [N, in]
        dys = torch.cat([dy.reshape(-1, dy.size(-1)) for _, dy in records])    # [N, out]
        return dys.t() @ xs                                                    # [out, in]


class DeferredWeightedSum(DeferredOperand):
    """a [n, S] -> sum_i a_i M_i [n, D] for a memory M [B, S, D] (a context, or the encoder
    outputs already multiplied by a weight), n <= B: a step's rows are the batch's first n
    (training's loop drops rows that ended). dM = A^T dY, one [B, S, T] x [B, T, D] bmm
    after the loop (rows absent from a step count zero), in place of an outer product of
    M's size at every step.
    A step's da = M dy runs as a row times M^T (a transposed view, no copy): bmm's
    matrix-times-column form is ~10x slower on the CPU in float32 (~1.3x in bf16)."""

    @staticmethod
    def product(m, a):
        return torch.bmm(a.unsqueeze(1), m[:a.size(0)]).squeeze(1)

    @staticmethod
    def input_grad(m, dy):
        return torch.bmm(dy.unsqueeze(1), m[:dy.size(0)].transpose(1, 2)).squeeze(1)   # da [n, S]

    def reducer(self):                       # records (a [n, S], dy [n, D])
        return functools.partial(_memory_grad, self.value.size(0), False)


class DeferredScores(DeferredOperand):
    """q [n, H] -> K q [n, S] (Luong's scores against precomputed keys K [B, S, H], a step's
    rows the batch's first n); dK = dS^T Q, one bmm after the loop. The scores run as a row
    times K^T (a transposed view; see DeferredWeightedSum)."""

    @staticmethod
    def product(k, q):
        return torch.bmm(q.unsqueeze(1), k[:q.size(0)].transpose(1, 2)).squeeze(1)   # [n, S]

    @staticmethod
    def input_grad(k, ds):
        return torch.bmm(ds.unsqueeze(1), k[:ds.size(0)]).squeeze(1)                 # dq [n, H]

    def reducer(self):                       # records (q [n, H], ds [n, S])
        return functools.partial(_memory_grad, self.value.size(0), True)


def _memory_grad(rows, swapped, records):
    """The gradient of a memory [B, S, D] that every step read with weights w [n, S] and
    whose result got the gradient g [n, D]: sum over steps of w^T g per row, one
    [B, S, T] x [B, T, D] bmm (rows absent from a step count zero). records: (w, g) per
    step, or (g, w) when `swapped` (Luong's scores keep the query first)."""
    pairs = [r[::-1] for r in records] if swapped else records
    w = torch.stack([_rows(w, rows) for w, _ in pairs], 2)                       # [B, S, T]
    g = torch.stack([_rows(g, rows) for _, g in pairs], 1)                       # [B, T, D]
    return torch.bmm(w, g)                                                       # [B, S, D]


def _rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """x [n, ...] -> [rows, ...], zeros below (a step's absent rows)."""
    return x if x.size(0) == rows else F.pad(x, (0, 0) * (x.dim() - 1) + (0, rows - x.size(0)))


class DeferredEmbedding(DeferredOperand):
    """ids [B] -> rows of an embedding [V, E] (in its own dtype: a lookup is no matmul);
    the gradient is one index_add over all steps' rows (the padding row gets none, as
    nn.Embedding's padding_idx)."""

    cast = False

    def __init__(self, weight: torch.Tensor, padding_idx: int | None):
        self.padding_idx, self.shape = padding_idx, weight.shape
        super().__init__(weight)

    @staticmethod
    def product(w, ids):
        return F.embedding(ids, w)

    @staticmethod
    def input_grad(w, dy):
        return None                                                            # ids: no gradient

    def reducer(self):
        return functools.partial(_embedding_grad, self.shape, self.padding_idx)


def _embedding_grad(shape, padding_idx, records):
    ids = torch.cat([ids.reshape(-1) for ids, _ in records])
    dy = torch.cat([dy.reshape(-1, dy.size(-1)) for _, dy in records])
    if padding_idx is not None:
        keep = ids != padding_idx
        ids, dy = ids[keep], dy[keep]
    return torch.zeros(shape, dtype=dy.dtype, device=dy.device).index_add_(0, ids, dy)
