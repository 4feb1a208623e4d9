"""Run a checkpoint on text: the Python API the app uses, and a command line.

    python -m seq2seq.translate CHECKPOINT "text" [--beam K] [--alpha A] [--coverage B] [--no-unk]
        [--prefix TEXT] [--snapshot NN] [--json] [--step T]
        [--attribution {grad_input,integrated_gradients,occlusion}]

--snapshot NN decodes with snapshot NN of the checkpoint (`train --snapshots` makes them).
With --json, --step T adds `step_detail` (step T recomputed from the weights: energies,
weights, context, top-k; seq2seq/step_detail.py) and --attribution adds `attribution`
(an attribution matrix and, for attention models, its rank correlation with attention
per output token; seq2seq/attribution.py).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

import numpy as np
import torch

from .attribution import ATTRIBUTION_METHODS, attribution_report, gradient_saliency
from .checkpoint import LoadedCheckpoint, load_checkpoint
from .cli import ArgumentParser, finite_float, non_negative_int, one_line, positive_int, run_main
from .data import collate
from .decoding import Hypothesis, decode
from .errors import InputError, Seq2SeqError
from .snapshots import load_snapshot
from .step_detail import explain_step
from .text import display_text, tokenize
from .vocab import UNK_ID

MAX_BEAM = 10
MAX_ALPHA = 2.0          # length-normalization exponent: 0 (none) to 2
MAX_COVERAGE = 1.0       # GNMT coverage penalty weight beta: 0 (none) to 1


@dataclass
class SourceInput:
    tokens: list[str]          # lowercased tokens the model reads (after truncation)
    ids: list[int]
    unknown: list[bool]        # True where the token is not in the vocabulary (read as <unk>)
    truncated: bool            # True when the text had more than max_src_len tokens
    n_tokens: int              # tokens before truncation


@dataclass
class Translation:
    source: SourceInput
    output_tokens: list[str]           # without <eos>
    text: str                          # what a person reads
    alignment: np.ndarray              # [len(output_tokens), len(source.tokens)]
    alignment_kind: str                # "attention" or "saliency"
    steps: list[dict]                  # per decoder step: token, prob, topk; the last is <eos> if the model ended
    log_prob: float
    score: float                       # length-normalized log-probability
    finished: bool
    beam: int
    step_alignment: np.ndarray = field(repr=False, default=None)  # [len(steps), S]: rows for every step, <eos> too
    beam_tree: list[dict] | None = field(default=None, repr=False)
    step_tokens: list[int] = field(default_factory=list, repr=False)  # ids chosen at each step (<eos> too)
    n_best: list["RankedHypothesis"] | None = field(default=None, repr=False)  # beam with return_tree
    alpha: float = 1.0
    coverage: float = 0.0
    no_unk: bool = False               # decoded with <unk> forbidden

    def to_json(self) -> dict:
        return {
            "source_tokens": self.source.tokens,
            "source_unknown": self.source.unknown,
            "truncated": self.source.truncated,
            "output_tokens": self.output_tokens,
            "text": self.text,
            "alignment": np.round(np.asarray(self.alignment, dtype=float), 6).tolist(),
            "alignment_kind": self.alignment_kind,
            "steps": self.steps,
            "log_prob": self.log_prob,
            "score": self.score,
            "finished": self.finished,
            "beam": self.beam,
            "no_unk": self.no_unk,
        }


@dataclass
class RankedHypothesis:
    """One of beam search's final hypotheses, as a page shows it."""
    rank: int                          # 1 = the winner
    slot: int                          # final beam slot
    output_tokens: list[str]           # without <eos>
    text: str
    log_prob: float
    score: float                       # what beam search ranks by (length-normalized, + coverage)
    finished: bool
    attention: np.ndarray | None       # [len(output_tokens), S]; None without attention


def check_beam_settings(beam: int, alpha: float, coverage: float, has_attention: bool) -> None:
    """Raise InputError for settings out of range (what the CLI and the pages accept)."""
    if not 1 <= int(beam) <= MAX_BEAM:
        raise InputError(f"beam width must be between 1 and {MAX_BEAM}, got {beam}")
    if not 0.0 <= float(alpha) <= MAX_ALPHA:
        raise InputError(f"the length exponent alpha must be between 0 and {MAX_ALPHA:g}, got {alpha}")
    if not 0.0 <= float(coverage) <= MAX_COVERAGE:
        raise InputError(f"the coverage penalty beta must be between 0 and {MAX_COVERAGE:g}, got {coverage}")
    if coverage and not has_attention:
        raise InputError("the coverage penalty needs attention: this model (lstm or gru) has none")


class Translator:
    """A loaded checkpoint plus its tokenizers: text in, Translation out. Read-only, so one
    instance can serve many sessions at once."""

    def __init__(self, ckpt: LoadedCheckpoint):
        self.ckpt = ckpt
        self.model = ckpt.model
        self.src_tokenizer = ckpt.card["tokenizers"]["src"]
        self.tgt_tokenizer = ckpt.card["tokenizers"]["tgt"]
        self.device = next(self.model.parameters()).device

    @classmethod
    def load(cls, path, device: str | torch.device = "cpu") -> "Translator":
        return cls(load_checkpoint(path, device))

    @property
    def cfg(self):
        return self.model.cfg

    def prepare(self, text: str) -> SourceInput:
        tokens = self.ckpt.src_vocab.segment(tokenize(text, self.src_tokenizer))   # words, or their pieces
        if not tokens:
            raise InputError("the text is empty: type a sentence" if not str(text).strip()
                             else "nothing left to read after tokenizing the text")
        n = len(tokens)
        tokens = tokens[: self.cfg.max_src_len]
        ids = self.ckpt.src_vocab.encode(tokens)
        return SourceInput(tokens, ids, [i == UNK_ID for i in ids], n > len(tokens), n)

    def prefix_ids(self, prefix: str | None) -> list[int]:
        if not prefix or not prefix.strip():
            return []
        toks = tokenize(prefix, self.tgt_tokenizer)[: self.cfg.max_out_len - 1]
        return self.ckpt.tgt_vocab.encode(toks)

    def display_text(self, tokens: list[str]) -> str:
        return display_text(tokens, self.tgt_tokenizer)

    def _finish(self, src: SourceInput, hyp: Hypothesis, beam: int) -> Translation:
        itos = self.ckpt.tgt_vocab.itos
        out_tokens = [itos[i] for i in hyp.tokens]
        if hyp.attention is not None:
            step_align, kind = hyp.attention, "attention"
        else:
            step_align, kind = gradient_saliency(self.model, src.ids, hyp.step_tokens), "saliency"
        steps = [{"token": itos[tok], "prob": round(p, 6),
                  "topk": [[itos[i], round(q, 6)] for i, q in zip(ids, probs)]}
                 for tok, p, ids, probs in zip(hyp.step_tokens, hyp.step_probs, hyp.topk_ids, hyp.topk_probs)]
        n_best = None
        if hyp.n_best is not None:
            n_best = []
            for rank, h in enumerate(hyp.n_best, 1):
                toks = [itos[i] for i in h.tokens]
                n_best.append(RankedHypothesis(rank, h.beam_slot, toks, self.display_text(toks), h.log_prob, h.score,
                                               h.finished, None if h.attention is None else h.attention[: len(toks)]))
        return Translation(src, out_tokens, self.display_text(out_tokens), step_align[: len(out_tokens)], kind, steps,
                           hyp.log_prob, hyp.score, hyp.finished, beam, step_align, hyp.beam_tree,
                           list(hyp.step_tokens), n_best)

    def translate(self, text: str, beam: int = 1, prefix: str | None = None, topk: int = 5,
                  alpha: float = 1.0, return_tree: bool = False, coverage: float = 0.0,
                  no_unk: bool = False) -> Translation:
        return self.translate_batch([text], beam, [prefix], topk, alpha, return_tree, coverage, no_unk)[0]

    def translate_batch(self, texts: list[str], beam: int = 1, prefixes: list[str | None] | None = None,
                        topk: int = 5, alpha: float = 1.0, return_tree: bool = False,
                        coverage: float = 0.0, no_unk: bool = False) -> list[Translation]:
        """alpha, coverage: beam search's length exponent and coverage weight (ignored at width 1,
        where neither changes the ranking); no_unk: never output <unk> (the model's best other
        word there instead)."""
        check_beam_settings(beam, alpha, coverage, self.model.has_attention)
        sources = [self.prepare(t) for t in texts]
        prefix = [self.prefix_ids(p) for p in (prefixes or [None] * len(texts))]
        batch = collate([s.ids for s in sources], [[] for _ in sources], list(range(len(sources))))
        with self.model.inference():               # the fast CPU path (models/seq2seq.py)
            hyps = decode(self.model, batch.src.to(self.device), batch.src_lens, beam=int(beam), topk=topk,
                          alpha=float(alpha), coverage=float(coverage), prefix=prefix if any(prefix) else None,
                          return_tree=return_tree, no_unk=bool(no_unk))
        out = [self._finish(s, h, int(beam)) for s, h in zip(sources, hyps)]
        for t in out:
            t.alpha, t.coverage, t.no_unk = float(alpha), float(coverage), bool(no_unk)
        return out


def load_translator(checkpoint, snapshot: int | None = None, device="cpu") -> Translator:
    """The checkpoint, or its snapshot NN (seq2seq/snapshots.py)."""
    if snapshot is None:
        return Translator.load(checkpoint, device)
    return Translator(load_snapshot(checkpoint, snapshot, device))


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m seq2seq.translate", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", help="checkpoint directory, e.g. checkpoints/translate-bahdanau")
    p.add_argument("text", help="the sentence to translate (or the sequence to reverse)")
    p.add_argument("--beam", type=int, default=1, help=f"beam width, 1 (greedy) to {MAX_BEAM}")
    p.add_argument("--alpha", type=finite_float, default=1.0,
                   help=f"beam search's length-normalization exponent, 0 to {MAX_ALPHA:g} (default 1)")
    p.add_argument("--coverage", type=finite_float, default=0.0,
                   help=f"beam search's coverage penalty weight beta (GNMT), 0 to {MAX_COVERAGE:g} (default 0)")
    p.add_argument("--no-unk", action="store_true", help="never output <unk> (the model's best other word instead)")
    p.add_argument("--prefix", default=None, help="force the output to start with these words")
    p.add_argument("--snapshot", type=non_negative_int, default=None,
                   help="decode with snapshot NN of the checkpoint (made by `python -m seq2seq.train ... --snapshots`)")
    p.add_argument("--topk", type=int, default=5, help="candidates listed per step in --json")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--step", type=positive_int, default=None,
                   help="with --json: add `step_detail`, output step T (1 = the first) recomputed from the weights")
    p.add_argument("--attribution", choices=ATTRIBUTION_METHODS, default=None,
                   help="with --json: add `attribution`, source-token attributions for every output token")
    args = p.parse_args(argv)
    if (args.step is not None or args.attribution) and not args.json:
        p.error("--step and --attribution add fields to the JSON output: use them with --json")
    try:
        tr = load_translator(args.checkpoint, args.snapshot)
        result = tr.translate(args.text, beam=args.beam, prefix=args.prefix, topk=max(1, args.topk),
                              alpha=args.alpha, coverage=args.coverage, no_unk=args.no_unk)
        out = result.to_json() if args.json else None
        if args.step is not None:
            if args.step > len(result.steps):
                raise InputError(f"--step {args.step}: the decoder took {len(result.steps)} step(s) on this input")
            out["step_detail"] = explain_step(tr.model, result.source.ids, result.step_tokens, args.step,
                                              topk=max(1, args.topk)).to_json(tr.ckpt.tgt_vocab.itos)
        if args.attribution:
            out["attribution"] = attribution_report(tr.model, result.source.ids, result.step_tokens[: len(
                result.output_tokens)], args.attribution, attention=result.alignment
                if result.alignment_kind == "attention" else None).to_json()
    except Seq2SeqError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
    else:
        if result.source.truncated:
            print(f"note: input truncated to {len(result.source.tokens)} of {result.source.n_tokens} tokens",
                  file=sys.stderr)
        print(result.text)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
