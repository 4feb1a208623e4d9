"""Exposure bias, made visible: the same input decoded teacher-forced and free-running.

Teacher-forced: at every step the decoder is fed the gold previous token (as in training
with ratio 1), and we record what it would write (its argmax). Free-running: it is fed its
own previous output (greedy decoding, as at test time). The two agree until the
free-running decoder makes its first mistake; after that it reads a prefix it never saw in
training, and errors tend to compound."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .alignment import first_divergence
from .decoding import greedy_decode
from .errors import InputError
from .models import Seq2Seq
from .text import tokenize
from .vocab import EOS, EOS_ID, SOS_ID, UNK_ID

if TYPE_CHECKING:
    from .translate import SourceInput, Translator

SPACE_MARK = "␣"     # spaces shown so a person can see them in a table


@dataclass
class Replay:
    gold: list[str]               # reference tokens, then <eos>
    forced: list[str]             # teacher-forced argmax at each gold step
    forced_prob: list[float]      # its probability
    forced_gold_prob: list[float]  # probability given to the gold token (teacher-forced)
    free: list[str]               # free-running greedy output, with <eos> if the model ended
    free_prob: list[float]        # probability of each free-running token
    divergence: int | None        # first step (0-based) where free-running leaves the gold sequence
    forced_errors: list[int]      # steps where even the teacher-forced argmax is wrong
    free_gold_prob: list[float] = field(default_factory=list)  # probability of the gold token, own prefix

    @property
    def free_matches(self) -> bool:
        return self.divergence is None


@torch.inference_mode()
def teacher_forced_steps(model: Seq2Seq, src_ids: list[int], gold_ids: list[int]):
    """Feed <sos>, gold_1, ..., gold_n; return per step (argmax id, its prob, prob of the
    gold token), for n + 1 steps (the last one should predict <eos>)."""
    device = next(model.parameters()).device
    src = torch.tensor([src_ids], dtype=torch.long, device=device)            # [1, S]
    src_lens = torch.tensor([len(src_ids)], dtype=torch.long)                 # [1]
    memory, state = model.encode(src, src_lens)
    targets = list(gold_ids) + [EOS_ID]
    prev = torch.tensor([SOS_ID], dtype=torch.long, device=device)           # [1]
    out = []
    for target in targets:
        logits, state, _ = model.decode_step(prev, state, memory)             # [1, V]
        probs = F.softmax(logits.float(), -1)[0]                              # [V]
        best = int(probs.argmax())
        out.append((best, float(probs[best]), float(probs[target])))
        prev = torch.tensor([target], dtype=torch.long, device=device)       # gold, whatever it predicted
    return out


@torch.inference_mode()
def free_running_gold_probs(model: Seq2Seq, src_ids: list[int], gold_ids: list[int],
                            free_ids: list[int]) -> list[float]:
    """Feed the model its own greedy output `free_ids` (as free-running decoding wrote it)
    and record, at each step t, the probability it gives gold token t (then <eos>): how
    much of the reference it still believes in once its own prefix has gone astray. One
    value per free-running step, up to the gold length plus <eos>."""
    device = next(model.parameters()).device
    src = torch.tensor([src_ids], dtype=torch.long, device=device)            # [1, S]
    memory, state = model.encode(src, torch.tensor([len(src_ids)], dtype=torch.long))
    targets = list(gold_ids) + [EOS_ID]
    inputs = [SOS_ID] + list(free_ids)
    out = []
    for t in range(min(len(targets), len(free_ids))):
        prev = torch.tensor([inputs[t]], dtype=torch.long, device=device)     # its own token
        logits, state, _ = model.decode_step(prev, state, memory)             # [1, V]
        out.append(float(F.softmax(logits.float(), -1)[0, targets[t]]))
    return out


def replay(model: Seq2Seq, src_ids: list[int], gold_ids: list[int], itos: list[str],
           max_extra: int = 10) -> Replay:
    """Both decodings of one input. The free-running decoder may run `max_extra` steps
    past the gold length before it is cut off. The model is only read (eval mode, no
    gradients), so a shared cached model is safe to use."""
    forced = teacher_forced_steps(model, src_ids, gold_ids)
    device = next(model.parameters()).device
    src = torch.tensor([src_ids], dtype=torch.long, device=device)
    hyp = greedy_decode(model, src, torch.tensor([len(src_ids)]), max_len=len(gold_ids) + 1 + max_extra, topk=1)[0]
    gold = [itos[i] for i in gold_ids] + [EOS]
    free = [itos[i] for i in hyp.step_tokens]
    forced_tokens = [itos[i] for i, _, _ in forced]
    return Replay(gold=gold, forced=forced_tokens, forced_prob=[p for _, p, _ in forced],
                  forced_gold_prob=[g for _, _, g in forced], free=free, free_prob=list(hyp.step_probs),
                  divergence=first_divergence(free, gold),
                  forced_errors=[t for t, (f, g) in enumerate(zip(forced_tokens, gold)) if f != g],
                  free_gold_prob=free_running_gold_probs(model, src_ids, gold_ids, hyp.step_tokens))


def replay_text(translator: Translator, text: str, reference: str | None = None) -> tuple[SourceInput, Replay]:
    """Replay one typed input with a loaded model: (the prepared source, its Replay).

    `reference` None: a reversal model, whose gold output is the reversed input. Otherwise the
    reference translation, tokenized as the model's targets are and cut to what it can write.
    Raises InputError for text the model cannot read or an empty reference."""
    source = translator.prepare(text)                   # raises InputError on bad text
    if reference is None:
        gold_ids = list(reversed(source.ids))
    else:
        if not reference.strip():
            raise InputError("type the reference translation to compare against")
        gold_tokens = tokenize(reference, translator.tgt_tokenizer)[: translator.cfg.max_out_len - 1]
        if not gold_tokens:
            raise InputError("nothing left to read in the reference after tokenizing")
        gold_ids = translator.ckpt.tgt_vocab.encode(gold_tokens)
    return source, replay(translator.model, source.ids, gold_ids, translator.ckpt.tgt_vocab.itos)


def replay_tokens(translator: Translator, source_tokens: list[str],
                  reference_tokens: list[str]) -> tuple[SourceInput, Replay]:
    """Replay an input that is already tokenized (a corpus file's test sentence: the tokens
    the model read when it was evaluated), with its reference tokens, without tokenizing
    either again: (the prepared source, its Replay). The source is cut to max_src_len tokens
    and the reference to what the model can write, as replay_text does. Raises InputError
    for an empty source or reference."""
    from .translate import SourceInput

    tokens = translator.ckpt.src_vocab.segment([str(t) for t in source_tokens if str(t).strip()])
    if not tokens:
        raise InputError("the sentence is empty: nothing to replay")
    gold_tokens = [str(t) for t in reference_tokens if str(t).strip()][: translator.cfg.max_out_len - 1]
    if not gold_tokens:
        raise InputError("the reference translation is empty: nothing to compare against")
    n = len(tokens)
    tokens = tokens[: translator.cfg.max_src_len]
    ids = translator.ckpt.src_vocab.encode(tokens)
    source = SourceInput(tokens, ids, [i == UNK_ID for i in ids], n > len(tokens), n)
    gold_ids = translator.ckpt.tgt_vocab.encode(gold_tokens)
    return source, replay(translator.model, ids, gold_ids, translator.ckpt.tgt_vocab.itos)


def visible(token: str) -> str:
    """A token as plain text in a table: spaces made visible (never markup)."""
    return SPACE_MARK if token == " " else token


def replay_rows(r: Replay) -> list[dict]:
    """One row per step: the gold token, the teacher-forced guess, the free-running token."""
    rows = []
    for t in range(max(len(r.gold), len(r.free))):
        gold = r.gold[t] if t < len(r.gold) else ""
        free = r.free[t] if t < len(r.free) else ""
        forced = r.forced[t] if t < len(r.forced) else ""
        if r.divergence is not None and t == r.divergence:
            note = "free-running diverges here"
        elif r.divergence is not None and t > r.divergence:
            note = "after divergence (own prefix)"
        else:
            note = ""
        rows.append({
            "step": t + 1,
            "gold": visible(gold),
            "teacher-forced argmax": visible(forced),
            "p(gold | gold prefix)": round(r.forced_gold_prob[t], 4) if t < len(r.forced_gold_prob) else None,
            "free-running": visible(free),
            "p(free token)": round(r.free_prob[t], 4) if t < len(r.free_prob) else None,
            "p(gold | own prefix)": round(r.free_gold_prob[t], 4) if t < len(r.free_gold_prob) else None,
            "forced ok": (forced == gold) if t < len(r.forced) else None,
            "free ok": (free == gold) if t < len(r.free) and t < len(r.gold) else False,
            "note": note,
        })
    return rows
