"""Greedy and beam search, batched. Every hypothesis carries its per-step attention and
top-k candidates, which is what the app draws.

Beam search ranks hypotheses by length-normalized log-probability,
score = log P(y) / len(y)**alpha, at every step and at the end. With a coverage weight
beta > 0 (attention models) the final ranking of the hypotheses the search kept adds GNMT's
coverage penalty (Wu et al., 2016), beta * sum_i log(min(c_i, 1)), c_i the attention source
token i has received over the hypothesis' steps: of the kept hypotheses, those that leave
source tokens unread rank lower. As in GNMT it rescores, it does not steer the search (see
_search for what steering did). alpha = 1 and beta = 0 is the plain length-normalized
search. A finished hypothesis stays in its beam with its score frozen. With width 1 the
ranking reduces to the argmax of the next-token distribution, so beam width 1 returns
exactly the greedy result.

The beam tree (return_tree) is everything the search kept, step by step; `slot_path` and
`slot_history` read a hypothesis back out of it, so callers never backtrack themselves."""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .models import Seq2Seq, inference_path, reorder_state
from .models.output import greedy_choice as output_greedy_choice
from .vocab import EOS_ID, PAD_ID, SOS_ID, UNK_ID

# ids no decoding ever outputs: training never targets <pad> or <sos>
NEVER_OUTPUT = (PAD_ID, SOS_ID)


def banned_ids(no_unk: bool = False) -> tuple[int, ...]:
    """The ids a search may not choose: never <pad> or <sos>; with no_unk, not <unk> either
    (the search takes the model's best real word there instead)."""
    return NEVER_OUTPUT + ((UNK_ID,) if no_unk else ())


@dataclass
class Hypothesis:
    tokens: list[int]                 # output ids, without <eos>
    log_prob: float                   # sum of the step log-probabilities (with <eos>)
    score: float                      # log_prob / n_steps**alpha
    finished: bool                    # True when the model ended with <eos>
    step_tokens: list[int]            # chosen id at each step: tokens (+ EOS_ID if finished)
    step_probs: list[float]           # probability of the chosen id at each step
    topk_ids: list[list[int]]         # per step, the k most likely ids ...
    topk_probs: list[list[float]]     # ... and their probabilities
    attention: np.ndarray | None      # [n_steps, S] over the real source tokens; None without attention
    beam_tree: list[dict] | None = field(default=None, repr=False)  # per step: the beams kept
    n_best: list["Hypothesis"] | None = field(default=None, repr=False)  # beam search: every final slot, best first
    beam_slot: int | None = None      # beam search: the final slot this hypothesis ends in


def next_token_logprobs(logits: torch.Tensor, banned: tuple[int, ...] = NEVER_OUTPUT) -> torch.Tensor:
    """[.., V] logits -> float32 log-probabilities of the next output token, -inf at the
    `banned` ids (the model's own distribution otherwise: the others are not renormalized)."""
    logp = F.log_softmax(logits.float(), -1)
    logp[..., list(banned)] = float("-inf")
    return logp


def greedy_choice(logits: torch.Tensor, banned: tuple[int, ...] = NEVER_OUTPUT) -> torch.Tensor:
    """[B, V] logits -> [B] argmax ids, never a `banned` one: the models' one greedy choice
    (models/output.py), which the tokens-only path also makes. The argmax of the logits is
    the argmax of the log-probabilities, so greedy choices need no softmax over V.
    Writes -inf into the banned columns of `logits` (a fresh tensor each step)."""
    return output_greedy_choice(logits, banned)


def _source_lengths(src_lens) -> list[int]:
    return [int(n) for n in src_lens]


def _prefix_tensor(prefix, batch: int, device):
    """Per-sequence forced prefixes -> ids [B, P] and lengths [B] (or None)."""
    if not prefix or not any(prefix):
        return None, None
    lens = torch.tensor([len(p) for p in prefix], device=device)
    ids = torch.full((batch, int(lens.max())), PAD_ID, dtype=torch.long, device=device)
    for i, p in enumerate(prefix):
        if p:
            ids[i, : len(p)] = torch.tensor(p, dtype=torch.long, device=device)
    return ids, lens


@inference_path
def greedy_decode(model: Seq2Seq, src, src_lens, max_len: int | None = None, topk: int = 5,
                  prefix: list[list[int]] | None = None, compact_at: float = 0.75,
                  details: bool = True, no_unk: bool = False) -> list[Hypothesis]:
    """Argmax at every step for a batch. src [B, S], src_lens [B].

    no_unk: never choose <unk> (the best other id instead; `banned_ids`).

    prefix: per sequence, ids forced as the first outputs (the model's probabilities for
    them are still recorded).

    details=False records only the chosen ids (what corpus BLEU needs): no softmax over the
    vocabulary, no top-k, no attention copies. The hypotheses then carry tokens and
    step_tokens; their log_prob and score are NaN and the per-step lists are empty.

    Sequences that have ended leave the batch: once the rows still writing fall to
    `compact_at` of the rows computed, the batch is compacted (memory and state keep only
    those rows), so a long batch costs about what its real output tokens cost."""
    device = src.device
    batch = src.size(0)
    max_len = max_len or model.cfg.max_out_len
    memory, state = model.encode(src, src_lens)
    forced, forced_lens = _prefix_tensor(prefix, batch, device)
    k = min(topk, model.cfg.tgt_vocab_size)
    active = torch.arange(batch, device=device)        # original row of each computed row
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    prev = torch.full((batch,), SOS_ID, dtype=torch.long, device=device)
    banned = banned_ids(no_unk)
    records = []                                       # per step: rows written and what they wrote
    for t in range(max_len):
        if details:
            logits, state, attn = model.decode_step(prev, state, memory)
            logp = next_token_logprobs(logits, banned)                 # [A, V]
            chosen = greedy_choice(logits, banned)                     # [A]
        else:  # the same ids without every logit in float32 (models/output.py)
            chosen, state, attn = model.decode_step_argmax(prev, state, memory, banned)
        if forced is not None and t < forced.size(1):
            chosen = torch.where(t < forced_lens[active], forced[active, t], chosen)
        live = ~done
        if details:
            top_p, top_i = logp.topk(k, -1)                            # [A, k]
            records.append((active[live], chosen[live], logp.gather(1, chosen[:, None]).squeeze(1)[live],
                            top_i[live], top_p[live], None if attn is None else attn[live]))
        else:
            records.append((active[live], chosen[live]))
        done = done | (chosen == EOS_ID)
        n_live = int((~done).sum())                                    # one sync per step
        if n_live == 0:
            break
        prev = chosen.masked_fill(done, PAD_ID)
        if n_live <= compact_at * len(active):
            keep = (~done).nonzero().squeeze(1)
            active, done, prev = active[keep], done[keep], prev[keep]
            memory, state = memory.index_select(keep), reorder_state(state, keep)
    # assemble [B, T] arrays from the per-step records, one transfer at the end
    T = len(records)
    toks = torch.full((batch, T), PAD_ID, dtype=torch.long)
    steps_written = torch.zeros(batch, dtype=torch.long)
    for t, (rows, tok, *_) in enumerate(records):
        rows = rows.cpu()
        toks[rows, t] = tok.cpu()
        steps_written[rows] += 1
    if not details:
        hyps = []
        for b, n in enumerate(steps_written.tolist()):
            steps = toks[b, :n].tolist()
            finished = bool(n and steps[-1] == EOS_ID)
            hyps.append(Hypothesis(
                tokens=steps[:-1] if finished else steps, log_prob=float("nan"), score=float("nan"),
                finished=finished, step_tokens=steps, step_probs=[], topk_ids=[], topk_probs=[],
                attention=None))
        return hyps
    logps = torch.zeros(batch, T)
    topi = torch.zeros(batch, T, k, dtype=torch.long)
    topp = torch.zeros(batch, T, k)
    attn_all = None if records[0][5] is None else np.zeros((batch, T, src.size(1)), dtype=np.float32)
    for t, (rows, _, lp, ti, tp, at) in enumerate(records):
        rows = rows.cpu()
        logps[rows, t] = lp.float().cpu()
        topi[rows, t], topp[rows, t] = ti.cpu(), tp.exp().float().cpu()
        if at is not None:
            attn_all[rows.numpy(), t] = at.float().cpu().numpy()
    hyps = []
    for b, src_len in enumerate(_source_lengths(src_lens)):
        n = int(steps_written[b])
        steps = toks[b, :n].tolist()
        finished = bool(n and steps[-1] == EOS_ID)
        lp = float(logps[b, :n].sum())
        hyps.append(Hypothesis(
            tokens=steps[:-1] if finished else steps, log_prob=lp, score=lp / max(n, 1),
            finished=finished, step_tokens=steps, step_probs=logps[b, :n].exp().tolist(),
            topk_ids=topi[b, :n].tolist(), topk_probs=topp[b, :n].tolist(),
            attention=None if attn_all is None else attn_all[b, :n, :src_len]))
    return hyps


COVERAGE_FLOOR = float(torch.finfo(torch.float32).tiny)   # keeps log(coverage) finite


def coverage_penalty(coverage: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GNMT's coverage term (Wu et al., 2016), before its weight beta:
    sum over the real source positions i of log(min(coverage_i, 1)), <= 0.

    coverage [.., S] the attention each source position has received so far (summed over
    the hypothesis' steps); mask [.., S] True at real positions -> [..]. A position never
    attended would give log 0: coverage is floored at the smallest normal float32."""
    logs = coverage.float().clamp(min=COVERAGE_FLOOR, max=1.0).log()              # [.., S]
    return (logs * mask).sum(-1)


def winner_slot(tree: list[dict]) -> int:
    """The final beam slot with the best score: the hypothesis beam search returns (ties:
    the first slot; empty slots, score -inf, never win)."""
    last = [s if math.isfinite(s) else -math.inf for s in tree[-1]["scores"]]
    return max(range(len(last)), key=lambda k: (last[k], -k))


def slot_path(tree: list[dict], slot: int) -> list[tuple[int, int]]:
    """(step, slot) of every node on the hypothesis in final `slot`, start to end. Steps
    where the hypothesis had already finished hold a frozen <pad> copy and are skipped."""
    path, j = [], slot
    for t in range(len(tree) - 1, -1, -1):
        if not tree[t]["finished"][j]:
            path.append((t, j))
        j = tree[t]["parents"][j]
    return path[::-1]


def slot_history(tree: list[dict], slot: int) -> list[int]:
    """Token ids of the hypothesis in final `slot`, start to end (with <eos> if it ended)."""
    return [tree[t]["tokens"][j] for t, j in slot_path(tree, slot)]


@dataclass
class BeamTrace:
    """Everything one batched beam search recorded, on the CPU, per sentence b, step t and
    slot k; the hypotheses and the beam tree are read back from it."""
    tok: torch.Tensor        # [B, T, K] token chosen into slot k at step t
    par: torch.Tensor        # [B, T, K] the slot it extends
    prob: torch.Tensor       # [B, T, K] its log-probability
    fin: torch.Tensor        # [B, T, K] the slot's hypothesis had already finished before step t
    topi: torch.Tensor       # [B, T, K, k] candidates of the slot's step (ids)
    topp: torch.Tensor       # [B, T, K, k] and their probabilities
    att: np.ndarray | None   # [B, T, K, S] attention, attention models only
    score: torch.Tensor      # [B, T, K] ranking score after step t (the last: the final one)
    cum: torch.Tensor        # [B, T, K] cumulative log-probability
    log_prob: torch.Tensor   # [B, K] final cumulative log-probability
    final: torch.Tensor      # [B, K] final ranking score
    winner: torch.Tensor     # [B] slot of the best hypothesis

    @property
    def steps(self) -> int:
        return self.tok.size(1)

    def hypothesis(self, b: int, slot: int, src_len: int) -> Hypothesis:
        """The hypothesis in final `slot` of sentence b, followed back through its parents."""
        path, j = [], slot                                               # (t, chosen beam, parent beam)
        for t in range(self.steps - 1, -1, -1):
            p = int(self.par[b, t, j])
            path.append((t, j, p))
            j = p
        path.reverse()
        path = [(t, j, p) for t, j, p in path if not self.fin[b, t, j]]  # drop frozen <pad> steps
        steps = [int(self.tok[b, t, j]) for t, j, p in path]
        done = bool(steps and steps[-1] == EOS_ID)
        return Hypothesis(
            tokens=steps[:-1] if done else steps,
            log_prob=float(self.log_prob[b, slot]), score=float(self.final[b, slot]),
            finished=done, step_tokens=steps,
            step_probs=[float(self.prob[b, t, j].exp()) for t, j, p in path],
            topk_ids=[self.topi[b, t, p].tolist() for t, j, p in path],
            topk_probs=[self.topp[b, t, p].tolist() for t, j, p in path],
            attention=None if self.att is None else np.stack([self.att[b, t, p, :src_len] for t, j, p in path])
            if path else np.zeros((0, src_len), dtype=np.float32),
            beam_slot=slot)

    def tree(self, b: int) -> list[dict]:
        return [{"tokens": self.tok[b, t].tolist(), "parents": self.par[b, t].tolist(),
                 "scores": self.score[b, t].tolist(), "log_probs": self.cum[b, t].tolist(),
                 "finished": self.fin[b, t].tolist()} for t in range(self.steps)]

    def ranked_slots(self, b: int) -> list[int]:
        """Every filled slot, best first; equal scores keep slot order, so the winner leads."""
        filled = [j for j in range(self.final.size(1)) if math.isfinite(float(self.final[b, j]))]
        return sorted(filled, key=lambda j: -float(self.final[b, j]))


@inference_path
def beam_search(model: Seq2Seq, src, src_lens, beam: int = 5, max_len: int | None = None,
                topk: int = 5, alpha: float = 1.0, coverage: float = 0.0,
                prefix: list[list[int]] | None = None, return_tree: bool = False,
                no_unk: bool = False) -> list[Hypothesis]:
    """Batched beam search with length normalization and an optional coverage penalty
    (see the module docstring). alpha: the length exponent; coverage: beta, the weight of
    GNMT's coverage term (attention models, width 2 or more; 0 leaves the ranking untouched);
    no_unk: no hypothesis is extended by <unk> (`banned_ids`).

    return_tree: each result also carries `beam_tree`, per step every slot's token, parent
    slot, score, cumulative log-probability and whether it had already finished, and
    `n_best`, the final hypotheses of every filled slot, best first (the first is the
    result itself)."""
    if beam < 1:
        raise ValueError("beam width must be at least 1")
    trace = _search(model, src, src_lens, beam, max_len or model.cfg.max_out_len, topk, alpha, coverage, prefix,
                    banned_ids(no_unk))
    hyps = []
    for b, src_len in enumerate(_source_lengths(src_lens)):
        hyp = trace.hypothesis(b, int(trace.winner[b]), src_len)
        if return_tree:
            hyp.beam_tree = trace.tree(b)
            hyp.n_best = [hyp if j == hyp.beam_slot else trace.hypothesis(b, j, src_len)
                          for j in trace.ranked_slots(b)]
        hyps.append(hyp)
    return hyps


def _search(model: Seq2Seq, src, src_lens, K: int, max_len: int, topk: int, alpha: float, coverage: float,
            prefix: list[list[int]] | None, banned: tuple[int, ...] = NEVER_OUTPUT) -> BeamTrace:
    """The search itself: K slots per sentence, every step's choices recorded."""
    # width 1 is greedy decoding whatever the knobs: one hypothesis, nothing to rescore
    use_coverage = bool(coverage) and model.has_attention and K > 1
    device = src.device
    batch, V = src.size(0), model.cfg.tgt_vocab_size
    memory, state = model.encode(src, src_lens)
    expand = torch.arange(batch, device=device).repeat_interleave(K)   # [B*K]
    memory, state = memory.index_select(expand), reorder_state(state, expand)
    forced, forced_lens = _prefix_tensor(prefix, batch, device)
    S = memory.mask.size(1)
    src_mask = memory.mask.view(batch, K, S).float()                   # [B, K, S]
    cov = torch.zeros(batch, K, S, device=device)                      # attention received so far

    scores = torch.full((batch, K), float("-inf"), device=device)
    scores[:, 0] = 0.0                                  # only the first beam is alive at start
    lengths = torch.zeros(batch, K, device=device)
    finished = torch.zeros(batch, K, dtype=torch.bool, device=device)
    prev = torch.full((batch * K,), SOS_ID, dtype=torch.long, device=device)
    k = min(topk, V)
    # a finished beam may only be extended by <pad> at no cost: its score stays frozen
    frozen = torch.full((V,), float("-inf"), device=device)
    frozen[PAD_ID] = 0.0
    hist = {name: [] for name in ("tok", "par", "prob", "topi", "topp", "att", "score", "fin", "cum")}
    batch_base = (torch.arange(batch, device=device) * K).unsqueeze(1)   # [B, 1]
    for t in range(max_len):
        logits, state, attn = model.decode_step(prev, state, memory)
        logp = next_token_logprobs(logits, banned).view(batch, K, V)   # [B, K, V]
        top_p, top_i = logp.topk(k, -1)                                  # [B, K, k] (before freezing)
        if forced is not None and t < forced.size(1):
            only = torch.full_like(logp, float("-inf"))
            only.scatter_(2, forced[:, t].view(batch, 1, 1).expand(batch, K, 1),
                          logp.gather(2, forced[:, t].view(batch, 1, 1).expand(batch, K, 1)))
            logp = torch.where((t < forced_lens).view(batch, 1, 1), only, logp)
        step_logp = torch.where(finished.unsqueeze(-1), frozen, logp)   # [B, K, V]
        cand = scores.unsqueeze(-1) + step_logp                          # [B, K, V]
        new_len = (lengths + (~finished).float()).clamp(min=1)           # [B, K]
        norm = cand / new_len.unsqueeze(-1) ** alpha
        if use_coverage:
            # every extension of slot k shares k's coverage after this step; finished ones keep theirs
            cov_next = cov + attn.view(batch, K, S).float() * (~finished).unsqueeze(-1).float()   # [B, K, S]
        best, flat = norm.view(batch, K * V).topk(K, -1)                 # [B, K]
        parent, token = flat // V, flat % V                              # [B, K]
        scores = cand.view(batch, K * V).gather(1, flat)
        lengths = new_len.gather(1, parent)
        if use_coverage:
            cov = cov_next.gather(1, parent.unsqueeze(-1).expand(-1, -1, S))
        was_finished = finished.gather(1, parent)
        finished = was_finished | (token == EOS_ID)
        rows = (batch_base + parent).view(-1)                            # [B*K] flat parent rows
        for name, value in (("tok", token), ("par", parent), ("topi", top_i), ("topp", top_p), ("score", best),
                            ("cum", scores), ("fin", was_finished),
                            ("prob", logp.view(batch * K, V)[rows, token.view(-1)].view(batch, K))):
            hist[name].append(value)
        if attn is not None:
            hist["att"].append(attn.view(batch, K, -1))
        state = reorder_state(state, rows)
        prev = token.view(-1).masked_fill(was_finished.view(-1), PAD_ID)
        if bool(finished.all()):
            break

    # the final ranking; without coverage written out as before (the same floats)
    final = scores / lengths.clamp(min=1) ** alpha                       # [B, K]
    if use_coverage:
        # GNMT's rescoring: the penalty ranks the hypotheses the search kept, it does not steer
        # the search. Applied at every step (open hypotheses paying for the source not read
        # yet) it rewarded spreading attention over the next word's probability, and with a
        # peaked attention (log of near-zero coverage) outputs turned to word salad:
        # translate-luong's val BLEU 39.0 -> 12.2 at beta 0.1. On finished hypotheses alone
        # during the search, ending ranked below going on and outputs ran to the length limit.
        final = final + coverage * coverage_penalty(cov, src_mask)       # [B, K]
        hist["score"][-1] = final                                        # the tree's last step ranks as the result

    def stacked(name):                                  # steps on dim 1: [B, T, K, ...]
        return torch.stack(hist[name], 1).cpu()

    return BeamTrace(tok=stacked("tok"), par=stacked("par"), prob=stacked("prob"), fin=stacked("fin"),
                     topi=stacked("topi"), topp=stacked("topp").exp(),
                     att=torch.stack(hist["att"], 1).float().cpu().numpy() if hist["att"] else None,
                     score=stacked("score"), cum=stacked("cum"), log_prob=scores.cpu(), final=final.cpu(),
                     winner=final.argmax(-1).cpu())


def token_diff(reference: list[str], other: list[str]) -> list[dict]:
    """Where two outputs differ, token by token: [{op, reference, other}], op one of equal,
    replace, delete (only in reference), insert (only in other); in order, covering both."""
    ops = difflib.SequenceMatcher(a=reference, b=other, autojunk=False).get_opcodes()
    return [{"op": op, "reference": reference[i1:i2], "other": other[j1:j2]} for op, i1, i2, j1, j2 in ops]


def decode(model: Seq2Seq, src, src_lens, beam: int = 1, **kw) -> list[Hypothesis]:
    """Greedy for width 1 (faster, same result: with one slot neither the length exponent
    nor the coverage penalty changes the ranking), beam search otherwise."""
    if beam == 1 and not kw.get("return_tree"):
        for name in ("alpha", "coverage", "return_tree"):
            kw.pop(name, None)
        return greedy_decode(model, src, src_lens, **kw)
    return beam_search(model, src, src_lens, beam=beam, **kw)
