"""Decoders: one per architecture, all with the same two methods.

    prepare(enc_outputs, enc_final, mask) -> (Memory, state)   once per input
    step(prev [B], state, memory) -> (logits [B, V], state, attention [B, S] | None)

Each architecture writes `features(x, state, memory, fast)`: one step from an embedded
input x [B, E], stopping before the output layer. `step` embeds the previous token and
adds the output layer, `step_argmax` its exact greedy argmax (output.py).

Training's fast path (`train_features`) runs the same `features` with everything that does
not depend on the previous step taken out of the loop: the gold tokens embedded at once,
their part of the RNN input projection as one matmul (`input_projection`, passed back in
as `pre`), and the output layer left to the caller, who applies it to all steps at once.
`teacher_forced_features` (lstm, gru) does a fully teacher-forced batch a layer at a time
(each layer's input projection one matmul over all steps).

A state is a dict of batch-first tensors, so beam search can reorder any decoder's
state with one `index_select` on dim 0."""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig
from .attention import AdditiveAttention, GeneralAttention
from .deferred import DeferredEmbedding, DeferredLinear, DeferredWeightedSum
from .kernels import FastDropout, PackedLinears, dropout, gru_update
from .output import OutputLayer
from .rnn import rnn_layer_steps, run_rnn

State = dict  # name -> batch-first tensor


@dataclass
class Memory:
    """What the decoder reads from the encoder at every step."""
    mask: torch.Tensor                     # [B, S] True at real source positions
    outputs: torch.Tensor | None = None    # [B, S, Hm] encoder outputs (attention models)
    keys: torch.Tensor | None = None       # [B, S, A] attention keys, computed once per input
    context: torch.Tensor | None = None    # [B, H] fixed context vector (Cho et al.)

    def prefix(self, n: int) -> "Memory":
        """The first n rows of every tensor (views): training's loop drops rows that ended."""
        return Memory(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[:n]
                         for f in fields(self)})

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
        self.dropout = FastDropout(cfg.dropout)
        self.out = OutputLayer(out_in, cfg.tgt_vocab_size, self.embedding, cfg.tie_embeddings)
        self.n_layers = cfg.n_layers
        self.kernels = PackedLinears()
        if cfg.tie_embeddings:
            # N(0, 1) rows would make the tied output layer's first logits huge (loss ~15):
            # scale so initial logits are O(1).
            with torch.no_grad():
                nn.init.normal_(self.embedding.weight, 0.0, cfg.emb_dim ** -0.5)
                self.embedding.weight[cfg.pad_id].zero_()

    def step_features(self, prev, state, memory):
        # prev [B] -> features [B, D] (before dropout and the output layer), state, attention
        return self.features(self.embed(prev), state, memory)

    def step(self, prev, state, memory):
        feats, state, attn = self.step_features(prev, state, memory)
        return self.out(self.dropout(feats)), state, attn                # [B, V]

    def step_argmax(self, prev, state, memory, exclude: tuple[int, ...]):
        # greedy decoding's step: ids [B] of the argmax logits, without all of them in float32
        feats, state, attn = self.step_features(prev, state, memory)
        return self.out.argmax(self.dropout(feats), exclude), state, attn

    # ---------------------------------------------------------------- training's fast path
    def splits_input_projection(self) -> bool:
        """A GRU's first-layer input matmul can be split: the embedding's part for all steps."""
        return isinstance(self.rnn, nn.GRU)

    def input_projection(self, x: torch.Tensor, consts: dict) -> torch.Tensor | None:
        """x [B, T, E] -> the embedding's part of the GRU input projection, bias included,
        [B, T, 3H] (the first layer's); None where the RNN is no GRU. `consts`:
        `batch_constants`, which hold the weight's columns sliced once per batch."""
        if not self.splits_input_projection():
            return None
        if x.dim() == 2:                      # one step's fed-back tokens [B, E] -> [B, 3H]
            return consts["emb_proj"](x) + self.rnn.bias_ih_l0
        return F.linear(x, consts["w_emb"], self.rnn.bias_ih_l0)

    def batch_constants(self, emb_dim: int, memory) -> dict:
        """What training's fast path computes once per batch for every step. Here: the GRU
        input weight's columns of the embedding and the columns after it, each sliced once
        (a slice taken at every step copies the weight, and zero-fills and adds a gradient
        of its full size, every step). Attention decoders add their attention's operands
        and what multiplies the context (see each). Per layer: W_hh, and above the first
        layer W_ih (`gru_from_projection`)."""
        consts = self.input_constants(emb_dim, memory)
        if consts:      # what every step multiplies, its gradient made once after the loop (deferred.py)
            r = self.rnn
            consts.update(hh=[DeferredLinear(getattr(r, f"weight_hh_l{l}")) for l in range(self.n_layers)],
                          ih=[None] + [DeferredLinear(getattr(r, f"weight_ih_l{l}")) for l in range(1, self.n_layers)],
                          emb_proj=DeferredLinear(consts["w_emb"]))
        return consts

    def input_constants(self, emb_dim: int, memory) -> dict:
        """The input weight's columns (embedding's, the rest) sliced once per batch."""
        if not self.splits_input_projection():
            return {}
        w = self.rnn.weight_ih_l0
        return {"w_emb": w[:, :emb_dim].contiguous(), "w_rest": w[:, emb_dim:].contiguous()}

    def train_features(self, tgt_in: torch.Tensor, state, memory, coins: torch.Tensor | None,
                       steps: torch.Tensor) -> torch.Tensor:
        """The features of every real target token after dropout, [N, D], step-major (all rows
        of step 0, then of step 1, ...), for the output layer to score at once.

        tgt_in [B, T] gold inputs (<sos> first); steps [B] how many steps of each row are
        real (its target length), rows sorted longest first, so the rows still running at
        step t are a prefix of the batch: the loop computes only those (the tutorials' loop
        runs every row to the longest target; ~30% of Multi30k's step-rows are padding).
        coins [B, T] True where step t is fed the gold token (column 0 unused: step 0 always
        gets <sos>), None for all gold. Where a coin says no, the step is fed the argmax of
        the previous step's logits, which only the no-grad exact argmax computes
        (output.py): the logits themselves come later."""
        T = tgt_in.size(1)
        running = torch.arange(T, device=steps.device).unsqueeze(1) < steps.unsqueeze(0)    # [T, B]
        counts = running.sum(1).tolist()                                   # rows at step t
        if coins is None and self.teacher_forced_features is not None:
            return self.dropout(self.teacher_forced_features(tgt_in, state, memory, running, counts))   # [N, D]
        x_gold = self.embed(tgt_in)                                     # [B, T, E]
        consts = self.batch_constants(x_gold.size(-1), memory)
        pre_gold = self.input_projection(x_gold, consts)                # [B, T, 3H] or None
        # per-step views by unbind: its backward is one stack, where indexing [:, t] would
        # zero-fill and add a whole [B, T, .] gradient at every step
        x_steps = x_gold.unbind(1)
        pre_steps = [None] * T if pre_gold is None else pre_gold.unbind(1)
        fed_back = None if coins is None else DeferredEmbedding(self.embedding.weight, self.embedding.padding_idx)
        feats, predicted, rows = [], None, tgt_in.size(0)
        for t, n in enumerate(counts):
            if n == 0:
                break
            if n < rows:                       # rows that ended drop out of the batch (a prefix view)
                rows, memory = n, memory.prefix(n)
                state = {k: v[:n] for k, v in state.items()}
            x, pre = x_steps[t][:n], None if pre_steps[t] is None else pre_steps[t][:n]
            if predicted is not None:
                gold = coins[:n, t].unsqueeze(1)                        # [n, 1]
                x_pred = self.dropout(fed_back(predicted[:n]))          # [n, E]
                x = torch.where(gold, x, x_pred)
                if pre is not None:
                    pre = torch.where(gold, pre, self.input_projection(x_pred, consts))
            f, state, _ = self.features(x, state, memory, None if pre is None else dict(consts, x_proj=pre))
            predicted = None
            if coins is not None:
                f = self.dropout(f)                                     # [n, D], as the logits see it
                if t + 1 < T and counts[t + 1]:
                    predicted = self.predictions_for_tails(f[:counts[t + 1]], coins[:counts[t + 1], t + 1])
            feats.append(f)
        if coins is None:                      # no step needed its logits: one dropout mask
            return self.dropout(torch.cat(feats, 0))                    # [N, D]
        return torch.cat(feats, 0)

    def predictions_for_tails(self, f: torch.Tensor, gold_next: torch.Tensor) -> torch.Tensor | None:
        """The argmax ids [B] the next step is fed where its coin is tails (gold_next [B]
        False), from features f [B, D]; None when every row gets the gold token. Only the
        tails rows are scored: the other rows' ids (0) are never read."""
        tails = ~gold_next
        n = int(tails.sum())
        if n == 0:
            return None
        if n == tails.numel():
            return self.out.training_argmax(f)
        rows = tails.nonzero().squeeze(1)
        predicted = torch.zeros(f.size(0), dtype=torch.long, device=f.device)
        predicted[rows] = self.out.training_argmax(f.detach().index_select(0, rows))
        return predicted

    def gru_from_projection(self, gi: torch.Tensor, h: torch.Tensor, fast: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Training's GRU step (nn.GRU's equations) whose first-layer input projection gi
        [B, 3H] (bias included) is known: h [B, L, H] -> top-layer output [B, H], new h
        [B, L, H]. `fast`: batch_constants, each layer's W_hh and the upper layers' W_ih
        with their gradients deferred; between layers dropout drawn as run_rnn draws it."""
        r, hs, inp = self.rnn, [], None
        for l in range(self.n_layers):
            h_l = h[:, l]
            # (bf16 products converted before the float32 biases: mixed-dtype adds are slow)
            g_in = gi if l == 0 else fast["ih"][l](inp).to(h_l.dtype) + getattr(r, f"bias_ih_l{l}")
            gh = fast["hh"][l](h_l).to(h_l.dtype) + getattr(r, f"bias_hh_l{l}")
            inp = gru_update(g_in, gh, h_l)                        # [B, H]
            hs.append(inp)
            if l + 1 < self.n_layers and r.training and r.dropout > 0:
                inp = dropout(inp, r.dropout, self.dropout.randomness.generator())
        return hs[-1], torch.stack(hs, 1) if len(hs) > 1 else hs[0].unsqueeze(1)

    def rnn_step(self, x: torch.Tensor, h: torch.Tensor, fast: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One GRU step: x [B, In], h [B, L, H] -> top-layer output [B, H], new h [B, L, H].
        A one-layer GRU skips nn.GRU's per-call sequence set-up and transposes: decoding
        runs the cell with oneDNN's packed matmuls (kernels.py), anything else through
        torch.gru_cell (the same arithmetic as nn.GRU: bitwise equal results).
        `fast` (training's fast path): x_proj, the projection of the embedding's columns
        (bias included), and rest_proj, the input weight's other columns (deferred.py); x
        then holds only the inputs those other columns multiply."""
        if fast is not None:
            gi = fast["x_proj"] if x.size(-1) == 0 else fast["x_proj"] + fast["rest_proj"](x)
            return self.gru_from_projection(gi, h, fast)
        if self.n_layers == 1 and isinstance(self.rnn, nn.GRU):
            r, h0 = self.rnn, h[:, 0]
            if self.kernels.applies(x):
                h1 = gru_update(self.kernels.linear(x, r.weight_ih_l0, r.bias_ih_l0),    # [B, 3H]
                                self.kernels.linear(h0, r.weight_hh_l0, r.bias_hh_l0), h0)
            else:
                h1 = torch.gru_cell(x, h0, r.weight_ih_l0, r.weight_hh_l0, r.bias_ih_l0, r.bias_hh_l0)
            return h1, h1.unsqueeze(1)
        out, h = self.run_rnn(x.unsqueeze(1), _to_rnn(h))
        return out.squeeze(1), _from_rnn(h)

    def run_rnn(self, x, hx):
        # the RNN, its between-layer dropout drawn like the others (models/rnn.py)
        return run_rnn(self.rnn, x, hx, self.dropout.randomness)

    def embed(self, prev: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.embedding(prev))   # [B] -> [B, E]  (or [B, T] -> [B, T, E])

    # Optional: (tgt_in, state, memory, running [T, B], counts) -> the features [N, D] of every
    # real step, step-major, when every input is gold (ratio 1.0); a layer at a time.
    teacher_forced_features = None


class SutskeverDecoder(DecoderBase):
    """lstm: the encoder's final (h, c) is the only link to the source."""

    def __init__(self, cfg: ModelConfig, enc_dim: int):
        super().__init__(cfg, nn.LSTM, cfg.emb_dim, cfg.hidden_dim)

    def prepare(self, enc_outputs, enc_final, mask):
        h, c = enc_final                                       # [L, B, H] each
        return Memory(mask=mask), {"h": _from_rnn(h), "c": _from_rnn(c)}

    def features(self, x, state, memory, fast=None):
        if fast is not None:
            return self.lstm_cells(x, state, fast)
        out, (h, c) = self.run_rnn(x.unsqueeze(1), (_to_rnn(state["h"]), _to_rnn(state["c"])))  # x [B, 1, E]
        return out.squeeze(1), {"h": _from_rnn(h), "c": _from_rnn(c)}, None  # [B, H]

    # training's step loop (ratio < 1): the LSTM as cells, nn.LSTM's equations, so the
    # embedding's part of the first layer's input projection comes for all gold steps at
    # once and every weight's gradient is made after the loop (deferred.py); one oneDNN
    # RNN call per step and layer costs more than the step's arithmetic at these sizes
    def splits_input_projection(self) -> bool:
        return True

    def batch_constants(self, emb_dim, memory):
        r = self.rnn
        return {"w_emb": r.weight_ih_l0, "bias": [getattr(r, f"bias_ih_l{l}") + getattr(r, f"bias_hh_l{l}")
                                                  for l in range(self.n_layers)],
                "ih": [DeferredLinear(getattr(r, f"weight_ih_l{l}")) for l in range(self.n_layers)],
                "hh": [DeferredLinear(getattr(r, f"weight_hh_l{l}")) for l in range(self.n_layers)]}

    def input_projection(self, x, consts):
        # x [B, T, E] gold, or [B, E] one step's fed-back tokens -> first layer's W_ih x (no bias)
        return consts["ih"][0](x) if x.dim() == 2 else F.linear(x, consts["w_emb"])

    def lstm_cells(self, x, state, fast):
        # x_proj [B, 4H]: the first layer's W_ih x; state h, c [B, L, H]
        inp, hs, cs = None, [], []
        generator = self.dropout.randomness.generator()
        for l in range(self.n_layers):
            h, c = state["h"][:, l], state["c"][:, l]
            ih = fast["x_proj"] if l == 0 else fast["ih"][l](inp)
            # [B, 4H] in float32 (bf16 projections converted: mixed-dtype ops are slow)
            gates = ih.to(h.dtype) + fast["hh"][l](h).to(h.dtype) + fast["bias"][l]
            i, f, g, o = gates.chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            hs.append(h)
            cs.append(c)
            inp = h
            if l + 1 < self.n_layers and self.rnn.training and self.rnn.dropout > 0:
                inp = dropout(h, self.rnn.dropout, generator)               # as run_rnn draws it
        return hs[-1], {"h": torch.stack(hs, 1), "c": torch.stack(cs, 1)}, None

    def teacher_forced_features(self, tgt_in, state, memory, running, counts):
        # a layer at a time over the real steps, step-major (see train_features)
        inp = step_major(self.embed(tgt_in), running)          # [N, E]
        r, generator = self.rnn, self.dropout.randomness.generator()
        for l in range(self.n_layers):
            gi = F.linear(inp, getattr(r, f"weight_ih_l{l}"),
                          getattr(r, f"bias_ih_l{l}") + getattr(r, f"bias_hh_l{l}"))          # [N, 4H]
            out = rnn_layer_steps("lstm", gi.split(counts), getattr(r, f"weight_hh_l{l}"), None,
                                  state["h"][:, l], state["c"][:, l])
            inp = torch.cat(out)                               # [N, H]
            if l + 1 < self.n_layers and r.training and r.dropout > 0:
                inp = dropout(inp, r.dropout, generator)       # as run_rnn draws it
        return inp


class ChoDecoder(DecoderBase):
    """gru: the context vector z (encoder's last hidden) enters every step and the output."""

    def __init__(self, cfg: ModelConfig, enc_dim: int):
        super().__init__(cfg, nn.GRU, cfg.emb_dim + enc_dim, cfg.emb_dim + cfg.hidden_dim + enc_dim)

    def prepare(self, enc_outputs, enc_final, mask):
        z = enc_final[-1]                                      # [B, H] top layer
        return Memory(mask=mask, context=z), {"h": _from_rnn(enc_final)}

    def input_constants(self, emb_dim, memory):
        consts = super().input_constants(emb_dim, memory)
        if consts:                                             # z's part of the input projection
            consts["z_proj"] = F.linear(memory.context, consts.pop("w_rest"))     # [B, 3H]
        return consts

    def input_projection(self, x, consts):
        # the context z is the same at every step: its part joins the embedding's
        pre = super().input_projection(x, consts)              # [B, T, 3H]
        if pre is None:
            return None
        z_proj = consts["z_proj"]                              # [B, 3H]
        # one step's rows are the batch's first ones (train_features drops rows that ended)
        return pre + (z_proj[:pre.size(0)] if pre.dim() == 2 else z_proj.unsqueeze(1))

    def features(self, x, state, memory, fast=None):
        z = memory.context                                     # [B, H]
        if fast is None:
            out, h = self.rnn_step(torch.cat([x, z], -1), state["h"])
        else:                                                  # z's part is in x_proj already
            out, h = self.gru_from_projection(fast["x_proj"], state["h"], fast)
        feats = torch.cat([x, out, z], -1)                     # [B, E + H + H]
        return feats, {"h": h}, None

    def teacher_forced_features(self, tgt_in, state, memory, running, counts):
        # a layer at a time over the real steps, step-major (see train_features): the
        # input matmul for all steps at once (z's part once per row), W_hh's gradient deferred
        x = self.embed(tgt_in)                                 # [B, T, E]
        z = memory.context.unsqueeze(1).expand(-1, x.size(1), -1)   # [B, T, H]
        gi = step_major(self.input_projection(x, self.input_constants(x.size(-1), memory)), running)  # [N, 3H]
        r, generator = self.rnn, self.dropout.randomness.generator()
        for l in range(self.n_layers):
            if l:                              # the layer below's outputs, dropout as run_rnn draws it
                if r.training and r.dropout > 0:
                    out = dropout(out, r.dropout, generator)
                gi = F.linear(out, getattr(r, f"weight_ih_l{l}"), getattr(r, f"bias_ih_l{l}"))    # [N, 3H]
            out = torch.cat(rnn_layer_steps("gru", gi.split(counts), getattr(r, f"weight_hh_l{l}"),
                                            getattr(r, f"bias_hh_l{l}"), state["h"][:, l]))      # [N, H]
        return torch.cat([step_major(x, running), out, step_major(z, running)], -1)   # [N, E + H + H]


def step_major(x: torch.Tensor, running: torch.Tensor) -> torch.Tensor:
    """x [B, T, ...] -> the running rows' entries [N, ...], step-major (step 0's rows, then
    step 1's, ...); running [T, B] True where row b runs step t. One gather, whose backward
    is one scatter (slices per step would each zero-fill a gradient of x's size)."""
    return x.transpose(0, 1)[running]


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

    def batch_constants(self, emb_dim, memory):
        consts = super().batch_constants(emb_dim, memory)
        if consts:
            # the GRU input weight's context columns meet each step's context, [B, Hm] x [Hm, 3H];
            # W_ctx c = sum_i a_i (W_ctx h_i) against a premultiplied [B, S, 3H] memory read it
            # twice a step: 1.4x slower at the reversal sizes (float32), no faster at translation's
            consts.update(ctx_proj=DeferredLinear(consts.pop("w_rest")), attention=self.attention.deferred(memory))
        return consts

    def features(self, x, state, memory, fast=None):
        h = state["h"]                                             # [B, L, H]
        context, attn = self.attention(h[:, -1], memory.keys, memory.outputs, memory.mask,
                                       None if fast is None else fast["attention"])
        if fast is None:
            out, h = self.rnn_step(torch.cat([x, context], -1), h)
        else:
            gi = fast["x_proj"] + fast["ctx_proj"](context)        # [B, 3H]
            out, h = self.gru_from_projection(gi, h, fast)
        feats = torch.cat([out, context.to(out.dtype), x.to(out.dtype)], -1)   # [B, H + Hm + E], one dtype
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

    def batch_constants(self, emb_dim, memory):
        consts = super().batch_constants(emb_dim, memory)
        if consts:
            # W_c c = sum_i a_i (W_c h_i): the encoder outputs premultiplied by W_c's context
            # columns, [B, S, H], so the step needs no context (1.09x faster than W_c c at translation's sizes)
            Hm = memory.outputs.size(-1)                           # combine = W_c [c; h]: c's part
            combined = F.linear(memory.outputs, self.combine.weight[:, :Hm])                # [B, S, H]
            consts.update(rest_proj=DeferredLinear(consts.pop("w_rest")),                  # the fed h~'s columns
                          memory_combined=DeferredWeightedSum(combined),
                          combine_query=DeferredLinear(self.combine.weight[:, Hm:]),       # [H, H]
                          attention=self.attention.deferred(memory, context=False))
        return consts

    def features(self, x, state, memory, fast=None):
        if fast is None:
            query, h = self.rnn_step(torch.cat([x, state["feed"]], -1), state["h"])  # [B, H]
        else:
            query, h = self.rnn_step(state["feed"], state["h"], fast=fast)
        context, attn = self.attention(query, memory.keys, memory.outputs, memory.mask,
                                       None if fast is None else fast["attention"])
        if fast is None:
            combined = self.kernels.linear(torch.cat([context, query], -1), self.combine.weight)
        else:                                                      # context is None here
            combined = fast["memory_combined"](attn) + fast["combine_query"](query)
        attentional = torch.tanh(combined)                         # [B, H]
        return attentional, {"h": h, "feed": attentional}, attn


DECODERS = {"lstm": SutskeverDecoder, "gru": ChoDecoder,
            "bahdanau": BahdanauDecoder, "luong": LuongDecoder}
