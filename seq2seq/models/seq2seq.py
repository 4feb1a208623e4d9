"""The one Seq2Seq interface shared by every architecture."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..config import ModelConfig
from .decoder import DECODERS, Memory, State
from .encoder import RNNEncoder

# arch -> (encoder cell, bidirectional encoder)
ENCODERS = {"lstm": ("lstm", False), "gru": ("gru", False),
            "bahdanau": ("gru", True), "luong": ("gru", True)}


class Seq2Seq(nn.Module):
    """encode once, then decode step by step (or all at once when teacher-forced).

    Architectures differ only in their encoder settings and decoder part; training and
    decoding code is shared."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        cell, bidirectional = ENCODERS[cfg.arch]
        self.encoder = RNNEncoder(cell, cfg.src_vocab_size, cfg.emb_dim, cfg.hidden_dim,
                                  cfg.n_layers, cfg.dropout, bidirectional, cfg.pad_id)
        self.decoder = DECODERS[cfg.arch](cfg, self.encoder.out_dim)

    @property
    def fast_kernels(self) -> bool:
        """Decoding matmuls through oneDNN with packed weights (models/kernels.py)."""
        return all(m.kernels.enabled for m in self.modules() if hasattr(m, "kernels"))

    @fast_kernels.setter
    def fast_kernels(self, enabled: bool) -> None:
        for m in self.modules():
            if hasattr(m, "kernels"):
                m.kernels.enabled = enabled

    @property
    def has_attention(self) -> bool:
        return self.cfg.has_attention

    def encode(self, src, src_lens, src_embedded=None, pack: bool = True) -> tuple[Memory, State]:
        # src [B, S], src_lens [B] -> memory for the decoder and its first state
        positions = torch.arange(src.size(1), device=src.device)
        mask = positions.unsqueeze(0) < src_lens.to(src.device).unsqueeze(1)   # [B, S]
        outputs, final = self.encoder(src, src_lens, src_embedded, pack=pack)
        return self.decoder.prepare(outputs, final, mask)

    def decode_step(self, prev, state, memory):
        # prev [B] -> logits [B, V], next state, attention [B, S] or None
        return self.decoder.step(prev, state, memory)

    def decode_step_argmax(self, prev, state, memory, exclude: tuple[int, ...]):
        # prev [B] -> ids [B] of the float32 argmax logits (never `exclude`), next state, attention
        return self.decoder.step_argmax(prev, state, memory, exclude)

    def forward(self, src, src_lens, tgt, teacher_forcing: float = 1.0):
        """Logits [B, T-1, V] predicting tgt[:, 1:].

        teacher_forcing: probability that step t+1 is fed the gold token tgt[:, t];
        the coin is flipped per sequence and per step, else the argmax is fed."""
        memory, state = self.encode(src, src_lens)
        tgt_in = tgt[:, :-1]                                               # [B, T-1]
        if teacher_forcing >= 1.0 and self.decoder.teacher_forced is not None:
            return self.decoder.teacher_forced(tgt_in, state, memory)
        steps = []
        prev = tgt_in[:, 0]
        for t in range(tgt_in.size(1)):
            logits, state, _ = self.decoder.step(prev, state, memory)      # [B, V]
            steps.append(logits)
            if t + 1 == tgt_in.size(1):
                break
            gold = tgt_in[:, t + 1]
            if teacher_forcing >= 1.0:
                prev = gold
            else:
                predicted = logits.argmax(-1)
                if teacher_forcing <= 0.0:
                    prev = predicted
                else:
                    coin = torch.rand(gold.shape, device=gold.device) < teacher_forcing
                    prev = torch.where(coin, gold, predicted)
        return torch.stack(steps, 1)                                       # [B, T-1, V]


def build_model(cfg: ModelConfig) -> Seq2Seq:
    return Seq2Seq(cfg)


def count_params(model: nn.Module) -> int:
    """Trainable parameters, shared (tied) tensors counted once."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total
