"""Attributions: how much each source token matters to each output token, computed on the
model, to set beside attention (which only says where the decoder looked).

For output token t (the id y_t the decoder wrote, fed its own earlier outputs) the score is
f_t = log p(y_t | y_<t, source). Per source position j, with e_j its embedding:

    grad_input            (d f_t / d e_j) . e_j            (gradient x input)
    integrated_gradients  e_j . mean over k of d f_t / d e_j at (k + 1/2)/m . e, for a zero
                          embedding baseline and m >= 20 steps (midpoint rule); the row sums
                          to about f_t(e) - f_t(0) (completeness)
    occlusion             f_t(source) - f_t(source with token j replaced by <unk>): the drop
                          in the output token's log-probability
    saliency              |d logit_t[y_t] / d e_j|, rows normalized to sum to 1 (the app's
                          heatmap for lstm / gru; `gradient_saliency`)

Attention and an attribution are compared on the size of the attribution (either sign):
per output row the Spearman rank correlation, and whether the most-attended source token
is also the most important one. `ablate_attention` decodes again with uniform attention,
or with the most-attended source token masked out of attention, to show what attention
changes in the output.

Cost is bounded: past MAX_ATTRIBUTION_TOKENS source tokens (or output tokens) only the first
ones are computed, and the report says so. Gradients come from torch.autograd.grad, so no
parameter's .grad is touched (safe on shared cached models)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F

from .alignment import average_ranks
from .decoding import greedy_decode, token_diff  # noqa: F401  (token_diff: re-exported)
from .models import Memory, Seq2Seq
from .vocab import SOS_ID, UNK_ID

ATTRIBUTION_METHODS = ("grad_input", "integrated_gradients", "occlusion")
METHOD_LABELS = {"grad_input": "gradient × input", "integrated_gradients": "integrated gradients",
                 "occlusion": "occlusion (<unk>)", "saliency": "gradient saliency"}
MAX_ATTRIBUTION_TOKENS = 40      # source tokens (columns) and output tokens (rows) computed at most
IG_STEPS = 32                    # integrated gradients' steps (at least MIN_IG_STEPS)
MIN_IG_STEPS = 20
MAX_ROWS_PER_PASS = 512          # rows of one batched forward/backward (integrated gradients)


# ------------------------------------------------------------------ the model's scores
def _no_cudnn():
    return torch.backends.cudnn.flags(enabled=False)   # cuDNN's RNN backward needs train mode


def _device(model: Seq2Seq):
    return next(model.parameters()).device


def teacher_forced_scores(model: Seq2Seq, embedded: torch.Tensor, out_ids: list[int],
                          target_step: torch.Tensor) -> torch.Tensor:
    """f = log p(y_t | y_<t, source) for each row at its own step t.

    embedded [N, S, E] the source embeddings (all S positions real); out_ids [T] the output
    ids the decoder is fed (after <sos>) and scored on; target_step [N] each row's step t,
    ascending. Rows leave the batch once scored, so a row costs only its own steps.
    -> [N], differentiable with respect to `embedded`."""
    device = embedded.device
    N, S = embedded.shape[:2]
    src = torch.zeros(N, S, dtype=torch.long, device=device)             # only its shape is read
    memory, state = model.encode(src, torch.full((N,), S, dtype=torch.long), src_embedded=embedded)
    out = torch.tensor(out_ids, dtype=torch.long, device=device)
    rows = torch.arange(N, device=device)                                # original row of each live row
    scores = [None] * N
    prev = torch.full((N,), SOS_ID, dtype=torch.long, device=device)
    last = int(target_step.max())
    steps = target_step.to(device)
    for t in range(last + 1):
        feats, state, _ = model.decoder.step_features(prev, state, memory)   # [n, D]
        here = (steps[rows] == t).nonzero().squeeze(1)                     # live rows scored now
        if len(here):
            logp = F.log_softmax(model.decoder.out(feats.index_select(0, here)).float(), -1)   # [h, V]
            chosen = logp[:, out[t]]                                       # [h]
            for i, r in enumerate(rows[here].tolist()):
                scores[r] = chosen[i]
        if t == last:
            break
        keep = (steps[rows] > t).nonzero().squeeze(1)
        rows, memory = rows[keep], memory.index_select(keep)
        state = {k: v.index_select(0, keep) for k, v in state.items()}
        prev = out[t].expand(len(rows))
    return torch.stack(scores)                                           # [N]


@torch.no_grad()
def all_step_log_probs(model: Seq2Seq, src: torch.Tensor, out_ids: list[int]) -> torch.Tensor:
    """src [N, S] (all positions real), teacher-forced on out_ids [T] -> [N, T]: each row's
    log p(y_t | y_<t, source) at every step."""
    device = src.device
    N = src.size(0)
    tgt = torch.tensor([[SOS_ID, *out_ids]] * N, device=device)          # [N, T + 1]
    logits = model(src, torch.full((N,), src.size(1), dtype=torch.long), tgt)   # [N, T, V]
    logp = F.log_softmax(logits.float(), -1)
    return logp.gather(2, tgt[:, 1:].unsqueeze(-1)).squeeze(-1)          # [N, T]


def _row_gradients(model: Seq2Seq, src_ids: list[int], out_ids: list[int], scales: list[float]):
    """Gradients of every row's score f_t with the source embeddings scaled by each of
    `scales`: -> embeddings e [S, E], gradients [len(scales), T, S, E], scores [len(scales), T]."""
    device = _device(model)
    T, S = len(out_ids), len(src_ids)
    src = torch.tensor([src_ids], device=device)
    e = model.encoder.embed(src)[0].detach()                             # [S, E]
    grads, scores = [], []
    per_pass = max(1, MAX_ROWS_PER_PASS // T)
    for start in range(0, len(scales), per_pass):
        chunk = torch.tensor(scales[start: start + per_pass], device=device, dtype=e.dtype)   # [c]
        with torch.enable_grad(), _no_cudnn():
            x = (chunk.view(-1, 1, 1, 1) * e).expand(-1, T, S, -1).reshape(-1, S, e.size(-1))  # [c*T, S, E]
            x = x.detach().requires_grad_(True)
            target = torch.arange(T, device=device).repeat(len(chunk))   # row r of each block: step r
            order = target.argsort(stable=True)
            f = teacher_forced_scores(model, x.index_select(0, order), out_ids, target[order])
            f = torch.empty_like(f).scatter_(0, order, f)                # back to the block order
            (g,) = torch.autograd.grad(f.sum(), x)                       # [c*T, S, E]
        grads.append(g.detach().view(len(chunk), T, S, -1))
        scores.append(f.detach().view(len(chunk), T))
    return e, torch.cat(grads), torch.cat(scores)


def grad_input(model: Seq2Seq, src_ids: list[int], out_ids: list[int]) -> np.ndarray:
    """Gradient x input, [T, S]: (d f_t / d e_j) . e_j."""
    if not out_ids or not src_ids:
        return np.zeros((len(out_ids), len(src_ids)), dtype=np.float32)
    e, g, _ = _row_gradients(model, src_ids, out_ids, [1.0])
    return (g[0] * e).sum(-1).cpu().numpy().astype(np.float32)           # [T, S]


def integrated_gradients(model: Seq2Seq, src_ids: list[int], out_ids: list[int], steps: int = IG_STEPS,
                         return_completeness: bool = False):
    """Integrated gradients from a zero-embedding baseline, [T, S] (midpoint rule, `steps`
    >= 20). return_completeness: also [T] f_t(e) - f_t(0), what each row should sum to."""
    if steps < MIN_IG_STEPS:
        raise ValueError(f"integrated gradients need at least {MIN_IG_STEPS} steps, got {steps}")
    T, S = len(out_ids), len(src_ids)
    if not T or not S:
        out = np.zeros((T, S), dtype=np.float32)
        return (out, np.zeros(T, dtype=np.float32)) if return_completeness else out
    alphas = [(k + 0.5) / steps for k in range(steps)]
    e, g, _ = _row_gradients(model, src_ids, out_ids, alphas)
    ig = (g.mean(0) * e).sum(-1).cpu().numpy().astype(np.float32)       # [T, S]
    if not return_completeness:
        return ig
    _, _, ends = _row_gradients(model, src_ids, out_ids, [1.0, 0.0])     # f(e), f(0)
    return ig, (ends[0] - ends[1]).cpu().numpy().astype(np.float32)


def occlusion(model: Seq2Seq, src_ids: list[int], out_ids: list[int], positions: int | None = None) -> np.ndarray:
    """[T, P]: the drop in log p(y_t) when source token j (j < P = positions, default all)
    is replaced by <unk>. One batched teacher-forced pass over P + 1 sources."""
    S = len(src_ids)
    P = S if positions is None else min(positions, S)
    if not out_ids or not S:
        return np.zeros((len(out_ids), P), dtype=np.float32)
    device = _device(model)
    src = torch.tensor([src_ids] * (P + 1), device=device)               # row 0: the sentence itself
    src[torch.arange(1, P + 1), torch.arange(P)] = UNK_ID
    with _no_cudnn():
        lp = all_step_log_probs(model, src, out_ids)                     # [P + 1, T]
    return (lp[0:1] - lp[1:]).T.cpu().numpy().astype(np.float32)         # [T, P]


def gradient_saliency(model: Seq2Seq, src_ids: list[int], step_tokens: list[int]) -> np.ndarray:
    """[len(step_tokens), len(src_ids)] saliency rows for one sentence: the L2 norm of
    d logit_t[y_t] / d e_j, normalized so each row sums to 1. It answers "how much would
    nudging source token j move this output's score" -- it is not attention.

    One batched forward/backward: the sentence is repeated once per output step and row t
    back-propagates only its own score, so the rows' gradients don't mix."""
    T, S = len(step_tokens), len(src_ids)
    if T == 0 or S == 0:
        return np.zeros((T, S), dtype=np.float32)
    device = _device(model)
    src = torch.tensor([src_ids] * T, device=device)                       # [T, S]
    src_lens = torch.full((T,), S, dtype=torch.long)
    tgt = torch.tensor([[SOS_ID, *step_tokens]] * T, device=device)        # [T, T+1]
    with torch.enable_grad(), _no_cudnn():
        embedded = model.encoder.embed(src).detach().requires_grad_(True)  # [T, S, E]
        memory, state = model.encode(src, src_lens, src_embedded=embedded)
        logits = []
        for t in range(T):                                                 # teacher-forced on the output
            step_logits, state, _ = model.decode_step(tgt[:, t], state, memory)
            logits.append(step_logits)
        logits = torch.stack(logits, 1)                                    # [T, T, V]
        rows = torch.arange(T, device=device)
        chosen = logits[rows, rows, tgt[0, 1:]]                            # [T]: row t's own step-t score
        (grad,) = torch.autograd.grad(chosen.sum(), embedded)              # [T, S, E]
    sal = grad.norm(dim=-1)                                                # [T, S]
    sal = sal / sal.sum(-1, keepdim=True).clamp(min=1e-12)
    return sal.detach().cpu().numpy().astype(np.float32)


# ------------------------------------------------------------------ comparing with attention
def spearman(a, b) -> float:
    """Spearman's rank correlation of two equal-length vectors (average ranks for ties);
    NaN when either is constant or shorter than 2."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    ra, rb = average_ranks(a) - (len(a) + 1) / 2, average_ranks(b) - (len(b) + 1) / 2
    r = float((ra * rb).sum() / np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return max(-1.0, min(1.0, r))


def agreement(attention: np.ndarray, attribution: np.ndarray) -> tuple[list[float], list[bool]]:
    """Per output row (attention [T, P], attribution [T, P]): the Spearman correlation of the
    attention weights with the attribution's size |a|, and whether the two argmaxes agree."""
    attention, size = np.asarray(attention, dtype=float), np.abs(np.asarray(attribution, dtype=float))
    rho = [spearman(attention[t], size[t]) for t in range(len(attention))]
    same = [bool(size.shape[1]) and int(attention[t].argmax()) == int(size[t].argmax()) for t in range(len(attention))]
    return rho, same


def agreement_summary(method: str, rho: list[float], same: list[bool]) -> dict:
    """Per sentence: the mean correlation (rows where it is defined), the share of rows whose
    attention argmax is the attribution argmax, and the two in plain words."""
    defined = [r for r in rho if np.isfinite(r)]
    mean = float(np.mean(defined)) if defined else float("nan")
    share = float(np.mean(same)) if same else float("nan")
    label = METHOD_LABELS.get(method, method)
    if not defined:
        text = f"Attention and {label} cannot be compared here (every row has a single or constant value)."
    else:
        strength = ("strongly" if mean >= 0.7 else "moderately" if mean >= 0.4 else "weakly" if mean >= 0.1
                    else "hardly at all" if mean > -0.1 else "in opposite directions")
        text = (f"Attention and {label} agree {strength}: mean Spearman correlation {mean:.2f} over "
                f"{len(defined)} output token(s). The most-attended source token is also the most important "
                f"one by {label} in {sum(same)} of {len(same)} rows ({share:.0%}).")
    return {"mean_spearman": mean, "argmax_agreement": share, "rows": len(rho), "text": text}


@dataclass
class AttributionReport:
    method: str
    matrix: np.ndarray                          # [rows, columns]: output tokens x source tokens computed
    n_output: int                               # output tokens of the sentence
    n_source: int                               # source tokens of the sentence
    spearman_with_attention: list[float] | None = None   # per row; None without attention
    argmax_agrees: list[bool] | None = None
    summary: dict | None = None
    note: str | None = None                     # set when the cost bound cut the sentence

    @property
    def bounded(self) -> bool:
        return self.matrix.shape != (self.n_output, self.n_source)

    def to_json(self) -> dict:
        out = {"method": self.method, "matrix": np.round(self.matrix.astype(float), 6).tolist(),
               "rows": int(self.matrix.shape[0]), "columns": int(self.matrix.shape[1])}
        if self.spearman_with_attention is not None:
            out["spearman_with_attention"] = [None if not np.isfinite(r) else round(r, 6)
                                              for r in self.spearman_with_attention]
            out["argmax_agrees"] = self.argmax_agrees
            out["summary"] = {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                              for k, v in self.summary.items()}
        if self.note:
            out["note"] = self.note
        return out


def bound_note(n_output: int, n_source: int, limit: int = MAX_ATTRIBUTION_TOKENS) -> str | None:
    parts = []
    if n_source > limit:
        parts.append(f"the first {limit} of {n_source} source tokens")
    if n_output > limit:
        parts.append(f"the first {limit} of {n_output} output tokens")
    if not parts:
        return None
    return f"Attributions cost grows with the sentence: computed for {' and '.join(parts)} only."


def compute_attribution(model: Seq2Seq, src_ids: list[int], out_ids: list[int], method: str,
                        ig_steps: int = IG_STEPS, limit: int = MAX_ATTRIBUTION_TOKENS) -> np.ndarray:
    """[min(T, limit), min(S, limit)] attributions of `method` (the model still reads the
    whole source; only the first `limit` positions and output tokens are computed)."""
    rows, cols = out_ids[:limit], min(len(src_ids), limit)
    if method == "grad_input":
        return grad_input(model, src_ids, rows)[:, :cols]
    if method == "integrated_gradients":
        return integrated_gradients(model, src_ids, rows, steps=ig_steps)[:, :cols]
    if method == "occlusion":
        return occlusion(model, src_ids, rows, positions=cols)
    if method == "saliency":
        return gradient_saliency(model, src_ids, rows)[:, :cols]
    raise ValueError(f"unknown attribution method {method!r}; expected one of {ATTRIBUTION_METHODS}")


def attribution_report(model: Seq2Seq, src_ids: list[int], out_ids: list[int], method: str,
                       attention: np.ndarray | None = None, ig_steps: int = IG_STEPS,
                       limit: int = MAX_ATTRIBUTION_TOKENS) -> AttributionReport:
    """The attribution of `method` for every output token (out_ids: without <eos>) and,
    given the decoder's attention [T, S] (attention models), its agreement with it."""
    matrix = compute_attribution(model, src_ids, out_ids, method, ig_steps, limit)
    report = AttributionReport(method, matrix, len(out_ids), len(src_ids),
                               note=bound_note(len(out_ids), len(src_ids), limit))
    if attention is not None:
        att = np.asarray(attention)[: matrix.shape[0], : matrix.shape[1]]
        rho, same = agreement(att, matrix)
        report.spearman_with_attention, report.argmax_agrees = rho, same
        report.summary = agreement_summary(method, rho, same)
    return report


# ------------------------------------------------------------------ ablating attention
class _EditedMemory:
    """A model whose encoder memory is edited before decoding; the decoder untouched. Only
    `encode` differs: everything else (decoding steps, config, the inference path) is the
    wrapped model's, so decoding.greedy_decode runs on it as on the model."""

    def __init__(self, model: Seq2Seq, edit):
        self.model, self.edit = model, edit

    def __getattr__(self, name):
        return getattr(self.model, name)

    def encode(self, src, src_lens, *args, **kw):
        memory, state = self.model.encode(src, src_lens, *args, **kw)
        return self.edit(memory), state


def uniform_keys(memory: Memory) -> Memory:
    """Every real position given the same attention key (their mean): each scorer then gives
    every real token the same energy, so the weights are exactly uniform over them (padding
    still 0), while the context is still built from the real encoder outputs."""
    mask = memory.mask.unsqueeze(-1).to(memory.keys.dtype)               # [B, S, 1]
    mean = (memory.keys * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)  # [B, 1, A]
    values = {f.name: getattr(memory, f.name) for f in fields(memory)}
    values["keys"] = mean.expand_as(memory.keys).contiguous()
    return Memory(**values)


def mask_position(memory: Memory, position: int) -> Memory:
    """Source `position` excluded from attention (weight 0 at every step); the encoder still read it."""
    values = {f.name: getattr(memory, f.name) for f in fields(memory)}
    mask = memory.mask.clone()
    mask[:, position] = False
    values["mask"] = mask
    return Memory(**values)


@dataclass
class Ablation:
    mode: str                                  # "uniform" or "mask_top"
    output_ids: list[int]                      # what the decoder wrote (without <eos>)
    masked_position: int | None = None         # mask_top: the source position masked
    description: str = ""
    attention: np.ndarray | None = field(default=None, repr=False)   # [len(output_ids), S]

    def diff(self, normal_ids: list[int], itos: list[str]) -> list[dict]:
        """token_diff of the normal output against this one (op, reference = normal, other = ablated)."""
        return token_diff([itos[i] for i in normal_ids], [itos[i] for i in self.output_ids])

    def changed(self, normal_ids: list[int]) -> bool:
        return list(normal_ids) != self.output_ids


def most_attended_position(attention: np.ndarray) -> int:
    """The source position with the most attention summed over the output steps."""
    return int(np.asarray(attention).sum(0).argmax())


def ablate_attention(model: Seq2Seq, src_ids: list[int], mode: str, attention: np.ndarray | None = None,
                     max_len: int | None = None) -> Ablation:
    """Decode `src_ids` greedily again with attention ablated. mode "uniform": weights 1/S on
    every source token at every step. mode "mask_top": the source token with the most
    attention in `attention` [T, S] (the normal decoding's) masked out of attention."""
    if not model.has_attention:
        raise ValueError("ablating attention needs an attention model")
    S = len(src_ids)
    if mode == "uniform":
        edit, position, what = uniform_keys, None, "every source token weighted equally (1/S) at every step"
    elif mode == "mask_top":
        if attention is None or not np.asarray(attention).size:
            raise ValueError("mask_top needs the normal decoding's attention")
        if S < 2:
            raise ValueError("masking needs at least two source tokens (one must stay readable)")
        position = most_attended_position(attention)
        edit = lambda m: mask_position(m, position)  # noqa: E731
        what = f"source token #{position} (the most attended) masked out of attention"
    else:
        raise ValueError(f"unknown ablation {mode!r}; expected uniform or mask_top")
    device = _device(model)
    src = torch.tensor([src_ids], device=device)
    (hyp,) = greedy_decode(_EditedMemory(model, edit), src, torch.tensor([S]), max_len=max_len, topk=1)
    return Ablation(mode, list(hyp.tokens), position, what,
                    None if hyp.attention is None else hyp.attention[: len(hyp.tokens)])
