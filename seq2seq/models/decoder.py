"""Decoders: one per architecture, all with the same two methods.

    prepare(enc_outputs, enc_final, mask) -> (Memory, state)   once per input
    step(prev [B], state, memory) -> (logits [B, V], state, attention [B, S] | None)

Each architecture writes `step_features`, which stops before the output layer; `step`
adds the output layer, and `step_argmax` its exact greedy argmax (output.py).

A state is a dict of batch-first tensors, so beam search can reorder any decoder's
state with one `index_select` on dim 0."""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn as nn

from ..config import ModelConfig
from .attention import AdditiveAttention, GeneralAttention
from .kernels import PackedLinears, gru_update
from .output import OutputLayer

State = dict  # name -> batch-first tensor


@dataclass
class Memory:
    """What the decoder reads from the encoder at every step."""
    mask: torch.Tensor                     # [B, S] True at real source positions
    outputs: torch.Tensor | None = None    # [B, S, Hm] encoder outputs (attention models)
    keys: torch.Tensor | None = None       # [B, S, A] attention keys, computed once per input
    context: torch.Tensor | None = None    # [B, H] fixed context vector (Cho et al.)

    def index_select(self, idx: torch.Tensor) -> "Memory":
        """Rows `idx` of every tensor (beam search expands and reorders the batch)."""
        return Memory(**{f.name: None if getattr(self, f.name) is None
                         else getattr(self, f.name).index_select(0, idx) for f in fields(self)})


def reorder_state(state: State, idx: torch.Tensor) -> State:
    return {k: v.index_select(0, idx) for k, v in state.items()}


def _to_rnn(h: torch.Tensor) -> torch.Tensor:
    return h.transpose(0, 1).contiguous()         # [B, L, H] -> [L, B, H]


def _from_rnn(h: torch.Tensor) -> torch.Tensor:
    return h.transpose(0, 1)                      # [L, B, H] -> [B, L, H]


class DecoderBase(nn.Module):
    def __init__(self, cfg: ModelConfig, rnn_cls, rnn_in: int, out_in: int):
        super().__init__()
        self.embedding = nn.Embedding(cfg.tgt_vocab_size, cfg.emb_dim, padding_idx=cfg.pad_id)
        self.rnn = rnn_cls(rnn_in, cfg.hidden_dim, cfg.n_layers, batch_first=True,
                           dropout=cfg.dropout if cfg.n_layers > 1 else 0.0)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = OutputLayer(out_in, cfg.tgt_vocab_size, self.embedding, cfg.tie_embeddings)
        self.n_layers = cfg.n_layers
        self.kernels = PackedLinears()
        if cfg.tie_embeddings:
            # N(0, 1) rows would make the tied output layer's first logits huge (loss ~15):
            # scale so initial logits are O(1).
            with torch.no_grad():
                nn.init.normal_(self.embedding.weight, 0.0, cfg.emb_dim ** -0.5)
                self.embedding.weight[cfg.pad_id].zero_()

    def step(self, prev, state, memory):
        feats, state, attn = self.step_features(prev, state, memory)
        return self.out(self.dropout(feats)), state, attn                # [B, V]

    def step_argmax(self, prev, state, memory, exclude: tuple[int, ...]):
        # greedy decoding's step: ids [B] of the argmax logits, without all of them in float32
        feats, state, attn = self.step_features(prev, state, memory)
        return self.out.argmax(self.dropout(feats), exclude), state, attn

    def rnn_step(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One GRU step: x [B, In], h [B, L, H] -> top-layer output [B, H], new h [B, L, H].
        A one-layer GRU skips nn.GRU's per-call sequence set-up and transposes: decoding
        runs the cell with oneDNN's packed matmuls (kernels.py), anything else through
        torch.gru_cell (the same arithmetic as nn.GRU: bitwise equal results)."""
        if self.n_layers == 1 and isinstance(self.rnn, nn.GRU):
            r, h0 = self.rnn, h[:, 0]
            if self.kernels.applies(x):
                h1 = gru_update(self.kernels.linear(x, r.weight_ih_l0, r.bias_ih_l0),    # [B, 3H]
                                self.kernels.linear(h0, r.weight_hh_l0, r.bias_hh_l0), h0)
            else:
                h1 = torch.gru_cell(x, h0, r.weight_ih_l0, r.weight_hh_l0, r.bias_ih_l0, r.bias_hh_l0)
            return h1, h1.unsqueeze(1)
        out, h = self.rnn(x.unsqueeze(1), _to_rnn(h))
        return out.squeeze(1), _from_rnn(h)

    def embed(self, prev: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.embedding(prev))   # [B] -> [B, E]  (or [B, T] -> [B, T, E])

    # Optional: all steps at once when every input is the gold token (ratio 1.0).
    teacher_forced = None


class SutskeverDecoder(DecoderBase):
    """lstm: the encoder's final (h, c) is the only link to the source."""

    def __init__(self, cfg: ModelConfig, enc_dim: int):
        super().__init__(cfg, nn.LSTM, cfg.emb_dim, cfg.hidden_dim)

    def prepare(self, enc_outputs, enc_final, mask):
        h, c = enc_final                                       # [L, B, H] each
        return Memory(mask=mask), {"h": _from_rnn(h), "c": _from_rnn(c)}

    def step_features(self, prev, state, memory):
        x = self.embed(prev).unsqueeze(1)                      # [B, 1, E]
        out, (h, c) = self.rnn(x, (_to_rnn(state["h"]), _to_rnn(state["c"])))
        return out.squeeze(1), {"h": _from_rnn(h), "c": _from_rnn(c)}, None  # [B, H]

    def teacher_forced(self, tgt_in, state, memory):
        x = self.embed(tgt_in)                                 # [B, T, E]
        out, _ = self.rnn(x, (_to_rnn(state["h"]), _to_rnn(state["c"])))
        return self.out(self.dropout(out))                     # [B, T, V]


class ChoDecoder(DecoderBase):
    """gru: the context vector z (encoder's last hidden) enters every step and the output."""

    def __init__(self, cfg: ModelConfig, enc_dim: int):
        super().__init__(cfg, nn.GRU, cfg.emb_dim + enc_dim, cfg.emb_dim + cfg.hidden_dim + enc_dim)

    def prepare(self, enc_outputs, enc_final, mask):
        z = enc_final[-1]                                      # [B, H] top layer
        return Memory(mask=mask, context=z), {"h": _from_rnn(enc_final)}

    def step_features(self, prev, state, memory):
        x = self.embed(prev)                                   # [B, E]
        z = memory.context                                     # [B, H]
        out, h = self.rnn_step(torch.cat([x, z], -1), state["h"])
        feats = torch.cat([x, out, z], -1)                     # [B, E + H + H]
        return feats, {"h": h}, None

    def teacher_forced(self, tgt_in, state, memory):
        x = self.embed(tgt_in)                                 # [B, T, E]
        z = memory.context.unsqueeze(1).expand(-1, x.size(1), -1)  # [B, T, H]
        out, _ = self.rnn(torch.cat([x, z], -1), _to_rnn(state["h"]))
        return self.out(self.dropout(torch.cat([x, out, z], -1)))  # [B, T, V]


class _BridgedAttentionDecoder(DecoderBase):
    """Shared by the attention decoders: a bi-directional encoder's last forward and
    backward states, through a tanh layer, start every decoder layer."""

    def __init__(self, cfg, enc_dim, rnn_in, out_in):
        super().__init__(cfg, nn.GRU, rnn_in, out_in)
        self.bridge = nn.Linear(enc_dim, cfg.hidden_dim)

    def initial_hidden(self, enc_final):
        top = torch.cat([enc_final[-2], enc_final[-1]], -1)       # [B, 2H] forward ; backward
        h0 = torch.tanh(self.bridge(top))                          # [B, H]
        return h0.unsqueeze(1).expand(-1, self.n_layers, -1).contiguous()  # [B, L, H]


class BahdanauDecoder(_BridgedAttentionDecoder):
    """bahdanau: attention with the previous hidden state as query, before the GRU step."""

    def __init__(self, cfg: ModelConfig, enc_dim: int):
        super().__init__(cfg, enc_dim, cfg.emb_dim + enc_dim, cfg.hidden_dim + enc_dim + cfg.emb_dim)
        self.attention = AdditiveAttention(cfg.hidden_dim, enc_dim, cfg.attn_dim)

    def prepare(self, enc_outputs, enc_final, mask):
        memory = Memory(mask=mask, outputs=enc_outputs, keys=self.attention.precompute(enc_outputs))
        return memory, {"h": self.initial_hidden(enc_final)}

    def step_features(self, prev, state, memory):
        x = self.embed(prev)                                       # [B, E]
        h = state["h"]                                             # [B, L, H]
        context, attn = self.attention(h[:, -1], memory.keys, memory.outputs, memory.mask)
        out, h = self.rnn_step(torch.cat([x, context], -1), h)
        feats = torch.cat([out, context, x], -1)                   # [B, H + Hm + E]
        return feats, {"h": h}, attn


class LuongDecoder(_BridgedAttentionDecoder):
    """luong: GRU step first, then "general" attention with the new hidden state as query;
    the attentional state h~ = tanh(W_c [c; h]) gives the output and is fed to the next
    step (input feeding)."""

    def __init__(self, cfg: ModelConfig, enc_dim: int):
        super().__init__(cfg, enc_dim, cfg.emb_dim + cfg.hidden_dim, cfg.hidden_dim)
        self.attention = GeneralAttention(cfg.hidden_dim, enc_dim)
        self.combine = nn.Linear(enc_dim + cfg.hidden_dim, cfg.hidden_dim, bias=False)

    def prepare(self, enc_outputs, enc_final, mask):
        memory = Memory(mask=mask, outputs=enc_outputs, keys=self.attention.precompute(enc_outputs))
        h = self.initial_hidden(enc_final)
        return memory, {"h": h, "feed": torch.zeros_like(h[:, -1])}

    def step_features(self, prev, state, memory):
        x = self.embed(prev)                                       # [B, E]
        query, h = self.rnn_step(torch.cat([x, state["feed"]], -1), state["h"])  # [B, H]
        context, attn = self.attention(query, memory.keys, memory.outputs, memory.mask)
        combined = self.kernels.linear(torch.cat([context, query], -1), self.combine.weight)
        attentional = torch.tanh(combined)                         # [B, H]
        return attentional, {"h": h, "feed": attentional}, attn


DECODERS = {"lstm": SutskeverDecoder, "gru": ChoDecoder,
            "bahdanau": BahdanauDecoder, "luong": LuongDecoder}
