"""Attention scorers. Each one precomputes what depends only on the source once per
input (`keys`), then scores a query against it at every decoder step.

Padding is masked with -inf before the softmax, so padded positions get exactly 0."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .deferred import DeferredLinear, DeferredScores, DeferredWeightedSum
from .kernels import PackedLinears, tanh_via_sigmoid


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """scores [B, S], mask [B, S] (True = real token) -> weights [B, S], rows sum to 1."""
    scores = scores.float().masked_fill(~mask, float("-inf"))
    return F.softmax(scores, dim=-1)


class AdditiveAttention(nn.Module):
    """Bahdanau et al. (2015): score(s, h_j) = v^T tanh(W_q s + W_k h_j)."""

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int):
        super().__init__()
        self.w_query = nn.Linear(query_dim, attn_dim, bias=False)
        self.w_key = nn.Linear(key_dim, attn_dim)
        self.v = nn.Linear(attn_dim, 1, bias=False)
        self.kernels = PackedLinears()

    def precompute(self, memory: torch.Tensor) -> torch.Tensor:
        return self.kernels.linear(memory, self.w_key.weight, self.w_key.bias)  # [B, S, Hm] -> [B, S, A]

    def deferred(self, memory) -> dict:
        """Training's fast path: what every step multiplies, gradients deferred (deferred.py)."""
        return {"query": DeferredLinear(self.w_query.weight), "v": DeferredLinear(self.v.weight),
                "outputs": DeferredWeightedSum(memory.outputs)}

    def forward(self, query, keys, memory, mask, deferred: dict | None = None):
        # query [B, Hq], keys [B, S, A], memory [B, S, Hm], mask [B, S]
        if deferred is not None:
            energy = tanh_via_sigmoid(keys + deferred["query"](query).unsqueeze(1))   # [B, S, A]
            weights = masked_softmax(deferred["v"](energy).squeeze(-1), mask)          # [B, S]
            return deferred["outputs"](weights), weights                              # [B, Hm]
        q = self.kernels.linear(query, self.w_query.weight)                  # [B, A]
        energy = tanh_via_sigmoid(keys + q.unsqueeze(1))                      # [B, S, A]
        weights = masked_softmax(self.v(energy).squeeze(-1), mask)    # [B, S]
        context = torch.bmm(weights.unsqueeze(1).to(memory.dtype), memory).squeeze(1)  # [B, Hm]
        return context, weights


class GeneralAttention(nn.Module):
    """Luong et al. (2015), "general": score(h_t, h_s) = h_t^T W_a h_s."""

    def __init__(self, query_dim: int, key_dim: int):
        super().__init__()
        self.w_a = nn.Linear(key_dim, query_dim, bias=False)
        self.kernels = PackedLinears()

    def precompute(self, memory: torch.Tensor) -> torch.Tensor:
        return self.kernels.linear(memory, self.w_a.weight)        # [B, S, Hm] -> [B, S, Hq]

    def deferred(self, memory, context: bool = True) -> dict:
        """Training's fast path: what every step multiplies, gradients deferred (deferred.py).
        context=False: the caller needs only the weights (luong's fast path multiplies them
        with the encoder outputs already projected by W_c), and the context is None."""
        return {"keys": DeferredScores(memory.keys),
                **({"outputs": DeferredWeightedSum(memory.outputs)} if context else {})}

    def forward(self, query, keys, memory, mask, deferred: dict | None = None):
        # query [B, Hq], keys [B, S, Hq]
        if deferred is not None:
            weights = masked_softmax(deferred["keys"](query), mask)          # [B, S]
            context = deferred["outputs"](weights) if "outputs" in deferred else None   # [B, Hm]
            return context, weights
        scores = torch.bmm(keys, query.unsqueeze(2)).squeeze(2)     # [B, S]
        weights = masked_softmax(scores, mask)                      # [B, S]
        context = torch.bmm(weights.unsqueeze(1).to(memory.dtype), memory).squeeze(1)  # [B, Hm]
        return context, weights
