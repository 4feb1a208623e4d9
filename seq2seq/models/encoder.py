"""Recurrent encoders over packed sequences."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .kernels import FastDropout, PackedLinears, dropout, gru_update
from .rnn import gru_layer_deferred, run_rnn


class RNNEncoder(nn.Module):
    """Embedding -> dropout -> (bi-directional) LSTM or GRU, padding skipped by packing.

    Returns outputs [B, S, H * directions] (zeros at padding) and the final state as the
    RNN gives it: [L * directions, B, H] (a pair of them for an LSTM)."""

    def __init__(self, cell: str, vocab_size: int, emb_dim: int, hidden_dim: int, n_layers: int,
                 dropout: float, bidirectional: bool, pad_id: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=pad_id)
        rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn_cls(emb_dim, hidden_dim, n_layers, batch_first=True,
                           dropout=dropout if n_layers > 1 else 0.0, bidirectional=bidirectional)
        self.dropout = FastDropout(dropout)
        self.directions = 2 if bidirectional else 1
        self.out_dim = hidden_dim * self.directions
        self.cell = cell
        self.kernels = PackedLinears()

    def embed(self, src: torch.Tensor) -> torch.Tensor:
        return self.embedding(src)                                   # [B, S] -> [B, S, E]

    def forward(self, src, src_lens, embedded=None, pack: bool = True, deferred: bool = False):
        # src [B, S]; src_lens [B] on CPU; embedded [B, S, E] replaces the lookup (saliency).
        # deferred: training's fast path, a GRU's weight gradients made after the loop
        if embedded is None:
            embedded = self.embed(src)
        x = self.dropout(embedded)
        if not pack:  # the tutorials' way (benchmark baseline): padding runs through the RNN
            return self.rnn(x)
        if self.cell == "gru" and self.kernels.applies(x):
            return self._gru_masked(x, src_lens)
        if self.cell == "gru" and deferred and x.requires_grad:
            # under --cpu-bf16 its matmuls run in bf16 like the decoder's (nn.GRU would stay
            # float32 under autocast); gates and state in float32
            return self._gru_deferred(x, src_lens)
        packed = pack_padded_sequence(x, src_lens.cpu(), batch_first=True, enforce_sorted=False)
        packed_out, final = run_rnn(self.rnn, packed, None, self.dropout.randomness)
        outputs, _ = pad_packed_sequence(packed_out, batch_first=True,
                                         total_length=src.size(1))  # [B, S, H * dirs]
        return outputs, final

    def _gru_masked(self, x, src_lens):
        """The GRU for decoding: every direction of every layer as one input matmul over all
        steps, then per step one packed-weight matmul (kernels.py) and the gates, with a
        mask in place of packing. Same semantics as the packed nn.GRU: padding outputs 0,
        a backward pass starts at each sequence's last real token, final states as nn.GRU
        gives them ([L * dirs, B, H])."""
        def layer(x_in, w_ih, w_hh, b_ih, b_hh, mask, reverse):
            gi = self.kernels.linear(x_in, w_ih, b_ih)                          # [B, S, 3H]
            h = x_in.new_zeros(x_in.size(0), w_hh.size(1))                      # [B, H]
            out = [None] * x_in.size(1)
            for t in (range(len(out) - 1, -1, -1) if reverse else range(len(out))):
                out[t] = gru_update(gi[:, t], self.kernels.linear(h, w_hh, b_hh), h)  # [B, H]
                h = torch.where(mask[:, t], out[t], h)                          # padding keeps h
            return torch.stack(out, 1) * mask, h                                # [B, S, H], 0 at padding

        return self._gru_layers(x, src_lens, layer)

    def _gru_deferred(self, x, src_lens):
        """The GRU for training's fast path: the same masked layout as `_gru_masked`, every
        direction's input matmul over all steps at once, W_hh's gradient deferred
        (rnn.gru_layer_deferred); the dropout between layers as run_rnn draws it."""
        def layer(x_in, w_ih, w_hh, b_ih, b_hh, mask, reverse):
            h0 = x_in.new_zeros(x_in.size(0), w_hh.size(1), dtype=torch.float32)
            return gru_layer_deferred(F.linear(x_in, w_ih, b_ih), w_hh, b_hh, h0, mask, reverse=reverse)

        return self._gru_layers(x, src_lens, layer)

    def _gru_layers(self, x, src_lens, layer):
        """Every layer and direction of the GRU through `layer` (one layer-direction over a
        mask [B, S, 1] -> outputs [B, S, H], final h [B, H]); the dropout between layers as
        run_rnn draws it (training only). Returns outputs [B, S, H*dirs], finals [L*dirs, B, H]."""
        S = x.size(1)
        mask = (torch.arange(S, device=x.device).unsqueeze(0)
                < src_lens.to(x.device).unsqueeze(1)).unsqueeze(-1)       # [B, S, 1]
        finals, layer_in = [], x
        generator = self.dropout.randomness.generator()
        for n in range(self.rnn.num_layers):
            outs = []
            for direction in range(self.directions):
                sfx = f"_l{n}" + ("_reverse" if direction else "")
                out, h = layer(layer_in, *(getattr(self.rnn, w + sfx) for w in
                                           ("weight_ih", "weight_hh", "bias_ih", "bias_hh")),
                               mask, bool(direction))
                outs.append(out)
                finals.append(h)
            layer_in = torch.cat(outs, -1) if self.directions == 2 else outs[0]
            if n + 1 < self.rnn.num_layers and self.rnn.training and self.rnn.dropout > 0:
                layer_in = dropout(layer_in, self.rnn.dropout, generator)
        return layer_in, torch.stack(finals, 0)
