"""Inside one decoder step: the attention arithmetic recomputed from the model's weights.

For output step t (1 = the first), the decoder is replayed on the tokens it chose up to
t-1, and step t is then rebuilt from the weight matrices with the pure functions below:

    bahdanau   e_i = v^T tanh(W s + U h_i + b), s the previous decoder state (the query)
    luong      e_i = h_t^T W_a h_i, h_t the state after this step's GRU update
    both       a = softmax(e) over the real source tokens (padding excluded: weight 0)
               c = sum_i a_i h_i, each token contributing a_i h_i
               the output layer reads [GRU output; c; input] (bahdanau) or the
               attentional state tanh(W_c [c; h_t]) (luong), and gives the top-k.
    lstm, gru  no attention: the context is the encoder's final state, the same at every
               step (gru feeds it to every step and the output; lstm only starts from it).

The recomputed weights equal the decoder's own attention row (within 1e-6) and the top-k
its candidates at that step (tests/test_step_detail.py). Everything returned is plain
numbers and lists, for a page to draw (seq2seq/figures.py) or the CLI to print."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch

from .decoding import next_token_logprobs
from .errors import InputError
from .models import Seq2Seq
from .vocab import SOS_ID


# ------------------------------------------------------------------ pure attention arithmetic
def additive_energies(query: torch.Tensor, enc_outputs: torch.Tensor, w_query: torch.Tensor,
                      w_key: torch.Tensor, b_key: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bahdanau's energies e_i = v^T tanh(W_q s + W_k h_i + b_k).

    query s [B, Hq], enc_outputs h [B, S, Hm], w_query [A, Hq], w_key [A, Hm], b_key [A],
    v [1, A] -> energies [B, S] (padding positions too: they are excluded by the softmax)."""
    projected_query = query @ w_query.T                                   # [B, A]
    projected_keys = enc_outputs @ w_key.T + b_key                        # [B, S, A]
    return torch.tanh(projected_keys + projected_query.unsqueeze(1)) @ v.squeeze(0)  # [B, S]


def general_scores(query: torch.Tensor, enc_outputs: torch.Tensor, w_a: torch.Tensor) -> torch.Tensor:
    """Luong's "general" scores e_i = h_t^T W_a h_i.

    query h_t [B, Hq], enc_outputs h [B, S, Hm], w_a [Hq, Hm] -> [B, S]."""
    keys = enc_outputs @ w_a.T                                            # [B, S, Hq]
    return (keys * query.unsqueeze(1)).sum(-1)                            # [B, S]


def attention_weights(energies: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the real source positions: energies [B, S], mask [B, S] (True = real)
    -> weights [B, S], exactly 0 at padding, each row summing to 1."""
    return torch.softmax(energies.masked_fill(~mask, float("-inf")), dim=-1)


def weighted_context(weights: torch.Tensor, enc_outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """c = sum_i a_i h_i. weights [B, S], enc_outputs [B, S, Hm] -> context [B, Hm] and
    each position's contribution a_i h_i [B, S, Hm] (they add up to the context)."""
    contributions = weights.unsqueeze(-1) * enc_outputs                   # [B, S, Hm]
    return contributions.sum(1), contributions


def contribution_along_context(contributions: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """How much of the context's length each position supplies: a_i h_i . c / |c|.
    contributions [B, S, Hm], context [B, Hm] -> [B, S]; the row sums to |c|."""
    unit = context / context.norm(dim=-1, keepdim=True).clamp(min=1e-12)  # [B, Hm]
    return (contributions * unit.unsqueeze(1)).sum(-1)                    # [B, S]


def luong_attentional_state(context: torch.Tensor, query: torch.Tensor, w_combine: torch.Tensor) -> torch.Tensor:
    """h~ = tanh(W_c [c; h_t]). context [B, Hm], query [B, H], w_combine [H, Hm + H] -> [B, H]."""
    return torch.tanh(torch.cat([context, query], -1) @ w_combine.T)


# ------------------------------------------------------------------ one step of a model
@dataclass
class StepDetail:
    """Step `step` of one decoded sentence, rebuilt from the weights (one sentence: S real tokens)."""
    step: int                              # 1-based output step
    arch: str
    input_id: int                          # the id fed to this step (<sos> first, then the previous output)
    chosen_id: int                         # the id the decoder wrote at this step
    energies: np.ndarray | None            # [S] attention energies; None without attention
    weights: np.ndarray | None             # [S] softmax of the energies over the real tokens
    included: np.ndarray                   # [S] True at real source tokens (False: padding, excluded)
    query_label: str                       # what the attention query is
    query_norm: float | None
    context_label: str
    context: np.ndarray                    # [Hc] the context vector
    context_norm: float
    contributions: np.ndarray | None       # [S] a_i h_i . c/|c|, summing to |c|
    contribution_norms: np.ndarray | None  # [S] |a_i h_i|
    output_reads_label: str                # what the output layer reads
    output_reads: np.ndarray               # [D] that vector
    state_norm: float                      # the decoder state after this step (top layer)
    input_norm: float                      # the embedded input token
    topk_ids: list[int] = field(default_factory=list)
    topk_probs: list[float] = field(default_factory=list)
    fixed_context: bool = False            # lstm, gru: the same context at every step

    def to_json(self, itos: list[str]) -> dict:
        """The CLI's `step_detail`: one energy and one weight per source token (unrounded, so
        they can be checked against the decoder's alignment row)."""
        def floats(a):
            return None if a is None else [float(x) for x in a]

        out = {"step": self.step, "input_token": itos[self.input_id], "token": itos[self.chosen_id],
               "energies": floats(self.energies), "weights": floats(self.weights),
               "context_norm": self.context_norm, "context": self.context_label,
               "contributions": floats(self.contributions), "output_reads": self.output_reads_label,
               "state_norm": self.state_norm,
               "topk": [[itos[i], round(p, 6)] for i, p in zip(self.topk_ids, self.topk_probs)]}
        if self.fixed_context:
            out["note"] = ("no attention: the context is the encoder's final state, the same at every step; "
                           "energies and weights do not exist for this model")
        return out


def _replay(model: Seq2Seq, src_ids: list[int], step_tokens: list[int], step: int):
    """Encode and feed the decoder its own outputs up to step-1: memory, the state before
    `step`, the id fed at `step`, and the encoder's starting state."""
    device = next(model.parameters()).device
    src = torch.tensor([src_ids], device=device)                          # [1, S]
    memory, state = model.encode(src, torch.tensor([len(src_ids)]))
    start = state
    prev = torch.tensor([SOS_ID], device=device)
    for t in range(step - 1):
        _, state, _ = model.decoder.step_features(prev, state, memory)
        prev = torch.tensor([step_tokens[t]], device=device)
    return memory, state, prev, start


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().cpu().numpy()


def explain_step(model: Seq2Seq, src_ids: list[int], step_tokens: list[int], step: int,
                 topk: int = 5) -> StepDetail:
    """Step `step` (1-based) of the decoding that wrote `step_tokens` (ids per step, <eos>
    included if it ended) from `src_ids`, rebuilt from the weights. The replay of the
    earlier steps runs on the path decoding runs on (the model's inference mode, where it
    has one), so the state it reaches is the decoder's; the step itself is recomputed here."""
    inference = model.inference() if hasattr(model, "inference") else contextlib.nullcontext()
    with inference, torch.no_grad():
        return _explain_step(model, src_ids, step_tokens, step, topk)


def _explain_step(model: Seq2Seq, src_ids: list[int], step_tokens: list[int], step: int, topk: int) -> StepDetail:
    if not 1 <= step <= len(step_tokens):
        raise InputError(f"step {step} is out of range: the decoder took {len(step_tokens)} step(s)")
    if not src_ids:
        raise InputError("no source tokens")
    arch, dec = model.cfg.arch, model.decoder
    memory, state, prev, start = _replay(model, src_ids, step_tokens, step)
    x = dec.embed(prev)                                                   # [1, E]
    S = len(src_ids)
    included = memory.mask[0].cpu().numpy().astype(bool)
    energies = weights = contrib = contrib_norms = query = None
    if arch == "bahdanau":
        att = dec.attention
        query = state["h"][:, -1]                                         # [1, H] the previous state s
        enc = memory.outputs.double()                                     # [1, S, Hm]
        e = additive_energies(query.double(), enc, att.w_query.weight.double(), att.w_key.weight.double(),
                              att.w_key.bias.double(), att.v.weight.double())            # [1, S]
        a = attention_weights(e, memory.mask)                             # [1, S]
        context, parts = weighted_context(a, enc)                         # [1, Hm], [1, S, Hm]
        ctx32 = context.float()
        out, h = dec.rnn_step(torch.cat([x, ctx32], -1), state["h"])     # [1, H]
        reads = torch.cat([out, ctx32, x], -1)                            # [1, H + Hm + E]
        query_label, context_label = "s, the previous decoder state", "sum of a_i h_i (attention-weighted encoder outputs)"
        reads_label = "[GRU output; context; input embedding]"
        new_state = h[:, -1]
    elif arch == "luong":
        query, h = dec.rnn_step(torch.cat([x, state["feed"]], -1), state["h"])   # [1, H] h_t
        enc = memory.outputs.double()
        e = general_scores(query.double(), enc, dec.attention.w_a.weight.double())   # [1, S]
        a = attention_weights(e, memory.mask)
        context, parts = weighted_context(a, enc)
        reads = luong_attentional_state(context, query.double(), dec.combine.weight.double()).float()  # [1, H]
        query_label, context_label = "h_t, the decoder state after this step's GRU update", \
            "sum of a_i h_i (attention-weighted encoder outputs)"
        reads_label = "the attentional state tanh(W_c [c; h_t]), also fed to the next step"
        new_state = h[:, -1]
    elif arch == "gru":
        context = memory.context                                          # [1, H] z
        out, h = dec.rnn_step(torch.cat([x, context], -1), state["h"])
        reads = torch.cat([x, out, context], -1)                          # [1, E + H + H]
        query_label, context_label = "", "z, the encoder's final state (fed to every step and to the output)"
        reads_label = "[input embedding; GRU output; z]"
        new_state = h[:, -1]
    else:  # lstm
        context = start["h"][:, -1]                                       # [1, H] encoder's final top h
        out, new, _ = dec.features(x, state, memory)
        reads = out                                                       # [1, H]
        query_label, context_label = "", "the encoder's final state (h of the top layer), the decoder's starting state"
        reads_label = "the LSTM output"
        new_state = new["h"][:, -1]
    if arch in ("bahdanau", "luong"):
        energies = _np(e[0])
        weights = _np(a[0])
        contrib = _np(contribution_along_context(parts, context)[0])
        contrib_norms = _np(parts[0].norm(dim=-1))
    logp = next_token_logprobs(dec.out(reads.float()))[0]                 # [V]
    k = min(topk, logp.numel())
    top_p, top_i = logp.topk(k)
    return StepDetail(
        step=step, arch=arch, input_id=int(prev[0]), chosen_id=int(step_tokens[step - 1]),
        energies=energies, weights=weights, included=included[:S],
        query_label=query_label, query_norm=None if query is None else float(query.norm()),
        context_label=context_label, context=_np(context[0]), context_norm=float(context[0].double().norm()),
        contributions=contrib, contribution_norms=contrib_norms,
        output_reads_label=reads_label, output_reads=_np(reads[0]),
        state_norm=float(new_state.norm()), input_norm=float(x.norm()),
        topk_ids=top_i.tolist(), topk_probs=top_p.exp().tolist(),
        fixed_context=arch in ("lstm", "gru"))


@torch.no_grad()
def padded_step_energies(model: Seq2Seq, prev: torch.Tensor, state: dict,
                         memory) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Batched: energies [B, S] and weights [B, S] of one step for a padded batch (the
    padding positions' energies are computed, their weights are 0). For tests and for
    showing padding as excluded; None without attention. `state` is the state before the
    step; `prev` [B] the ids fed."""
    arch, dec = model.cfg.arch, model.decoder
    if arch == "bahdanau":
        att = dec.attention
        e = additive_energies(state["h"][:, -1], memory.outputs, att.w_query.weight, att.w_key.weight,
                              att.w_key.bias, att.v.weight)
    elif arch == "luong":
        query, _ = dec.rnn_step(torch.cat([dec.embed(prev), state["feed"]], -1), state["h"])
        e = general_scores(query, memory.outputs, dec.attention.w_a.weight)
    else:
        return None
    return e, attention_weights(e, memory.mask)
