"""The output layer (features -> vocabulary logits) and a fast, exact greedy argmax.

The last matmul of every decoder step, [B, D] x [D, V], is the largest one in decoding.
`OutputLayer.argmax` finds the float32 argmax of the logits without computing all of
them in float32: it scores the whole vocabulary in bfloat16 (several times faster on
CPUs with native bf16 dot products), and with a rounding-error bound on those scores
keeps only the ids whose exact logit could still beat the bf16 leader's (usually one to
three), which it rescores exactly in float32. Rows where the bound can't rule out the
rest of the vocabulary are recomputed in float32 in full. So the chosen ids are the
float32 argmax's, not an approximation of it."""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from .kernels import PackedLinears, weight_key

BF16_UNIT_ROUNDOFF = 2.0 ** -8        # bfloat16 keeps 8 significant bits
FP32_UNIT_ROUNDOFF = 2.0 ** -24


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX); elsewhere
    bf16 matmuls are emulated and slower than float32, so the fast path is not taken."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def logit_error_bound(features: torch.Tensor, weight_row_norm_max: torch.Tensor,
                      approx: torch.Tensor, bias_abs_max: float = 0.0) -> torch.Tensor:
    """Upper bound on |bf16 logit - exact logit| for every token of each row.

    features [B, D]; approx [B] the bf16 logits (as float32) the bound is applied to.
    Each product e_k w_k loses at most (2u + u^2)|e_k||w_k| to rounding both factors to
    bf16 (u = 2^-8); the float32 sum adds at most D u32 sum|e_k w_k| (any summation order);
    sum |e_k||w_k| <= ||e|| ||w|| (Cauchy-Schwarz); the bf16 result itself is rounded, which
    moves it by at most |approx - bias| u / (1 - u) <= (|approx| + max|bias|) u / (1 - u).
    The exact float32 rescoring has the same D u32 slack again, counted twice over.
    approx + bound grows with approx, so applied to a block's largest logit it bounds them all."""
    u, d = BF16_UNIT_ROUNDOFF, features.size(-1)
    norm = features.norm(dim=-1)                                   # [B]
    if approx.dim() > norm.dim():
        norm = norm.unsqueeze(-1)                                  # against [B, V] logits
    product_and_sum = (2 * u + u * u + 3 * d * FP32_UNIT_ROUNDOFF) * norm * weight_row_norm_max
    return product_and_sum + (approx.abs() + bias_abs_max) * (u / (1 - u))


class OutputLayer(nn.Module):
    """Features -> vocabulary logits; with `tied`, through the target embedding matrix."""

    BLOCK = 128         # argmax: ids per block of the two-stage candidate search
    BLOCKS_KEPT = 2     # argmax: the best blocks, whose ids are checked one by one
    FAST_MIN_ROWS = 64  # argmax: below this many rows the fixed cost of the bf16 path loses

    def __init__(self, in_dim: int, vocab_size: int, embedding: nn.Embedding, tied: bool):
        super().__init__()
        self.tied = tied
        if tied:
            self.proj = nn.Linear(in_dim, embedding.embedding_dim)
            self.embedding = embedding            # shared weight [V, E]
        else:
            self.proj = nn.Linear(in_dim, vocab_size)
        self.kernels = PackedLinears()            # float32 products through oneDNN (kernels.py)
        self._bf16_cache = None                   # (weight version key, bf16 weight, max row norm)

    def final_operands(self, x):
        """The last matmul's operands: logits = h @ weight.T (+ bias)."""
        if self.tied:
            h = self.kernels.linear(x, self.proj.weight, self.proj.bias)
            return h, self.embedding.weight, None                 # h [.., E], weight [V, E]
        return x, self.proj.weight, self.proj.bias                # h [.., in], weight [V, in]

    def forward(self, x):
        h, weight, bias = self.final_operands(x)
        return self.kernels.linear(h, weight, bias)               # [.., D] -> [.., V]

    def _bf16_weight(self, weight: torch.Tensor):
        # The optimizer updates weights in place, which bumps their version counter:
        # the bf16 copy is rebuilt after any training step.
        key = weight_key(weight)
        if self._bf16_cache is None or self._bf16_cache[0] != key:
            w = weight.detach()
            pad = -w.size(0) % self.BLOCK                 # zero rows up to whole blocks
            w16 = F.pad(w, (0, 0, 0, pad)).to(torch.bfloat16)
            self._bf16_cache = (key, w16, w.float().norm(dim=-1).max())
        return self._bf16_cache[1], self._bf16_cache[2]

    @torch.no_grad()
    def argmax(self, x: torch.Tensor, exclude: tuple[int, ...], fast: bool | None = None) -> torch.Tensor:
        """[B, in] features -> [B] ids of the float32 argmax logit, `exclude` ids never
        chosen. The one greedy choice of every decoding path (greedy_choice below for
        logits already computed). fast=None: the bf16 path inside the model's inference
        mode, on CPUs with native bf16, for FAST_MIN_ROWS rows or more (see the module
        doc); fast=True/False forces a path (tests)."""
        h, weight, bias = self.final_operands(x)
        h = h.float()
        if fast is None:
            fast = self.kernels.mode.active() and self.bf16_scoring_pays(h.size(0), h.device)
        V = weight.size(0)
        exclude = torch.tensor(exclude, dtype=torch.long, device=h.device)
        if not fast or V <= (self.BLOCKS_KEPT + 1) * self.BLOCK:
            return self._exact_argmax(h, weight, bias, exclude)
        w16, w_norm_max = self._bf16_weight(weight)
        B, Vp = h.size(0), w16.size(0)
        approx = F.linear(h.to(torch.bfloat16), w16).float()                      # [B, Vp]
        if bias is not None:
            approx[:, :V] += bias   # the bias is exact in both; only the dot products differ
        approx[:, V:] = float("-inf")                                              # padding rows
        approx.index_fill_(1, exclude, float("-inf"))
        bias_abs_max = 0.0 if bias is None else float(bias.abs().max())

        def upper(a):   # [B, n] bf16 logits -> bounds their exact values can't exceed
            return a + logit_error_bound(h, w_norm_max, a, bias_abs_max)

        # The bf16 leader's exact logit is at least `floor`; only ids whose exact logit can
        # reach it compete. Blocks (of BLOCK ids) first, because scanning all V per row in
        # anything but a plain max is slow on the CPU: the best blocks, then ids inside.
        blocks = approx.view(B, Vp // self.BLOCK, self.BLOCK)                      # [B, nb, BLOCK]
        bvals, bids = blocks.amax(-1).topk(self.BLOCKS_KEPT + 1, -1)                # [B, kept + 1]
        lead = bvals[:, 0]
        floor = lead - logit_error_bound(h, w_norm_max, lead, bias_abs_max)         # [B]
        inside = blocks.gather(1, bids[:, :self.BLOCKS_KEPT, None].expand(-1, -1, self.BLOCK))
        inside = inside.reshape(B, -1)                                              # [B, kept * BLOCK]
        compete = torch.isfinite(inside) & (upper(inside) >= floor.unsqueeze(1))   # usually 1-3 per row
        row, pos = compete.nonzero(as_tuple=True)                                   # ragged candidates
        ids = bids[row, pos // self.BLOCK] * self.BLOCK + pos % self.BLOCK
        exact = (weight.index_select(0, ids) * h.index_select(0, row)).sum(-1)     # [n] float32 logits
        if bias is not None:
            exact += bias[ids]
        # per row, the best exact logit; ties go to the lowest id, as argmax does
        best = torch.full((B,), float("-inf"), device=h.device).scatter_reduce(0, row, exact, "amax")
        top = exact == best[row]
        chosen = torch.full((B,), V, dtype=torch.long, device=h.device).scatter_reduce(
            0, row[top], ids[top], "amin")
        # the blocks left out are out only if even their best id can't reach the floor
        unsure = upper(bvals[:, self.BLOCKS_KEPT]) >= floor
        if bool(unsure.any()):
            rows = unsure.nonzero().squeeze(1)
            chosen[rows] = self._exact_argmax(h[rows], weight, bias, exclude)
        return chosen

    def bf16_scoring_pays(self, rows: int, device: torch.device) -> bool:
        """Whether argmax's bf16 scoring is faster than float32 for this many rows."""
        weight = self.embedding.weight if self.tied else self.proj.weight
        return (device.type == "cpu" and weight.dtype == torch.float32 and rows >= self.FAST_MIN_ROWS
                and cpu_has_native_bf16())

    def training_argmax(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in] -> [B] ids for training's sampled steps (no gradient): the float32
        argmax, through the bf16 scoring wherever it pays (it is exact, so the ids are
        those of the plain path; outside inference mode the features come from PyTorch's
        standard ops)."""
        return self.argmax(x.detach(), exclude=(), fast=self.bf16_scoring_pays(x.size(0), x.device))

    def _exact_argmax(self, h, weight, bias, exclude):
        return greedy_choice(self.kernels.linear(h, weight, bias), exclude)        # [B, V] -> [B]


def greedy_choice(logits: torch.Tensor, exclude) -> torch.Tensor:
    """[B, V] logits -> [B] argmax ids, never an id of `exclude` (ties: the lowest id).
    Writes -inf into those columns of `logits`, which must be a fresh tensor."""
    exclude = torch.as_tensor(exclude, dtype=torch.long, device=logits.device)
    logits.index_fill_(-1, exclude, float("-inf"))
    return logits.argmax(-1)
