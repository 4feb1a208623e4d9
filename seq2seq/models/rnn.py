"""nn.LSTM / nn.GRU with the dropout between their layers drawn like every other dropout.

nn.LSTM(num_layers > 1, dropout=p) draws its between-layer masks from torch's global
generator inside one C++ call, so no caller can say where they come from. In training,
`run_rnn` runs such an RNN a layer at a time, through the same ATen kernels and the
module's own weights, with `kernels.dropout` on every layer's output but the last (nn.LSTM's
equations) and the mask from the model's DropoutRandomness: training's streams then stay
deterministic (seq2seq/streams.py). Everything else goes to the module unchanged."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import _VF
from torch.nn.utils.rnn import PackedSequence

from .deferred import DeferredLinear
from .kernels import DropoutRandomness, dropout, gru_update


def run_rnn(rnn: nn.RNNBase, x, hx, randomness: DropoutRandomness):
    """rnn(x, hx): x a batch-first [B, T, In] tensor or a PackedSequence; hx as the module
    takes it (None, h [L * dirs, B, H], or (h, c) for an LSTM). Returns what the module returns."""
    if not (rnn.training and rnn.num_layers > 1 and rnn.dropout > 0 and torch.is_grad_enabled()):
        return rnn(x, hx)
    lstm = isinstance(rnn, nn.LSTM)
    if not lstm and not isinstance(rnn, nn.GRU):
        return rnn(x, hx)
    if getattr(rnn, "proj_size", 0):
        raise ValueError("run_rnn: LSTMs with projections are not supported")
    dirs = 2 if rnn.bidirectional else 1
    packed = isinstance(x, PackedSequence)
    data = x.data if packed else x
    if hx is None:
        batch = int(x.batch_sizes[0]) if packed else x.size(0 if rnn.batch_first else 1)
        zeros = data.new_zeros(rnn.num_layers * dirs, batch, rnn.hidden_size)
        hx = (zeros, zeros.clone()) if lstm else zeros
    elif packed and x.sorted_indices is not None:       # nn.RNNBase.permute_hidden
        hx = tuple(h.index_select(1, x.sorted_indices) for h in hx) if lstm else hx.index_select(1, x.sorted_indices)
    per_layer = len(rnn._flat_weights) // rnn.num_layers
    generator = randomness.generator()
    finals = []
    for layer in range(rnn.num_layers):
        weights = rnn._flat_weights[layer * per_layer:(layer + 1) * per_layer]
        rows = slice(layer * dirs, (layer + 1) * dirs)
        h0 = tuple(h[rows] for h in hx) if lstm else hx[rows]
        cell = _VF.lstm if lstm else _VF.gru
        if packed:
            out = cell(data, x.batch_sizes, h0, weights, rnn.bias, 1, 0.0, True, rnn.bidirectional)
        else:
            out = cell(data, h0, weights, rnn.bias, 1, 0.0, True, rnn.bidirectional, rnn.batch_first)
        data, final = out[0], out[1:]                    # final: (h,) or (h, c), [dirs, B, H] each
        finals.append(final)
        if layer + 1 < rnn.num_layers:
            data = dropout(data, rnn.dropout, generator)
    final = tuple(torch.cat([f[i] for f in finals], 0) for i in range(len(finals[0])))   # [L * dirs, B, H]
    if packed and x.unsorted_indices is not None:
        final = tuple(h.index_select(1, x.unsorted_indices) for h in final)
    output = PackedSequence(data, x.batch_sizes, x.sorted_indices, x.unsorted_indices) if packed else data
    return output, (final if lstm else final[0])


def gru_layer_deferred(gi: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, h: torch.Tensor,
                       mask: torch.Tensor | None = None, reverse: bool = False):
    """One GRU layer and direction for training's fast path, nn.GRU's equations: the input
    projection gi [B, S, 3H] of all steps (bias included) comes in, each step does only
    W_hh h and the gates, and W_hh's gradient is one matmul after the loop (deferred.py).
    On the CPU nn.GRU's backward makes a [3H, B] x [B, H] weight gradient at every step.
    mask [B, S, 1] True at real positions (None: all real): padding keeps h and outputs 0,
    so a reverse pass starts at each sequence's last real token, as packing gives it.
    h [B, H] the initial state. Returns outputs [B, S, H] and the final h [B, H]."""
    hh = DeferredLinear(w_hh)
    gi_steps = gi.unbind(1)                    # one stack in backward, not a [B, S, 3H] add per step
    mask_steps = None if mask is None else mask.unbind(1)
    S = gi.size(1)
    out = [None] * S
    for t in (range(S - 1, -1, -1) if reverse else range(S)):
        new = gru_update(gi_steps[t], hh(h).to(h.dtype) + b_hh, h)       # [B, H]
        out[t] = new
        h = new if mask is None else torch.where(mask_steps[t], new, h)
    outputs = torch.stack(out, 1)                                        # [B, S, H]
    return (outputs if mask is None else outputs * mask), h


def rnn_layer_steps(cell: str, gi_steps: tuple, w_hh: torch.Tensor, b_hh: torch.Tensor | None,
                    h: torch.Tensor, c: torch.Tensor | None = None) -> list[torch.Tensor]:
    """One LSTM or GRU layer for training's fast path, on rows that drop out as their
    sequences end: gi_steps[t] [n_t, G] is the input projection of step t's rows (for an
    LSTM both biases included; for a GRU b_ih only, b_hh given apart), the batch's first
    n_t rows, n_t non-increasing; h (and c for an LSTM) [B, H] the initial state. Returns
    each step's output [n_t, H]. nn.LSTM's / nn.GRU's equations; W_hh's gradient is one
    matmul after the loop (deferred.py). (Packed nn.LSTM is slower than the padded call on
    the CPU; this loop also leaves the padding out.)"""
    hh = DeferredLinear(w_hh)
    out = []
    for gi in gi_steps:
        n = gi.size(0)
        if n < h.size(0):                      # rows that ended: a prefix view
            h = h[:n]
            c = None if c is None else c[:n]
        gh = hh(h).to(h.dtype)                                           # [n, G]
        if cell == "gru":
            h = gru_update(gi, gh + b_hh, h)                                 # [n, H]
        else:
            i, f, g, o = (gi.to(h.dtype) + gh).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        out.append(h)
    return out
