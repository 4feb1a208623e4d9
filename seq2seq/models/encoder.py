"""Recurrent encoders over packed sequences."""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


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
        self.dropout = nn.Dropout(dropout)
        self.directions = 2 if bidirectional else 1
        self.out_dim = hidden_dim * self.directions

    def embed(self, src: torch.Tensor) -> torch.Tensor:
        return self.embedding(src)                                   # [B, S] -> [B, S, E]

    def forward(self, src, src_lens, embedded=None, pack: bool = True):
        # src [B, S]; src_lens [B] on CPU; embedded [B, S, E] replaces the lookup (saliency)
        if embedded is None:
            embedded = self.embed(src)
        x = self.dropout(embedded)
        if not pack:  # the tutorials' way (benchmark baseline): padding runs through the RNN
            return self.rnn(x)
        packed = pack_padded_sequence(x, src_lens.cpu(), batch_first=True, enforce_sorted=False)
        packed_out, final = self.rnn(packed)
        outputs, _ = pad_packed_sequence(packed_out, batch_first=True,
                                         total_length=src.size(1))  # [B, S, H * dirs]
        return outputs, final
