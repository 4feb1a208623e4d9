"""Run a checkpoint on text: the Python API the app uses, and a command line.

    python -m seq2seq.translate CHECKPOINT "text" [--beam K] [--prefix TEXT] [--json]
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

import numpy as np
import torch

from .checkpoint import LoadedCheckpoint, load_checkpoint
from .cli import ArgumentParser, run_main
from .data import collate
from .decoding import Hypothesis, decode
from .errors import InputError, Seq2SeqError
from .saliency import gradient_saliency
from .text import display_text, tokenize
from .vocab import UNK_ID

MAX_BEAM = 10


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

    def to_json(self) -> dict:
        return {
            "source_tokens": self.source.tokens,
            "source_unknown": self.source.unknown,
            "truncated": self.source.truncated,
            "output_tokens": self.output_tokens,
            "text": self.text,
            "alignment": np.round(self.alignment, 6).tolist(),
            "alignment_kind": self.alignment_kind,
            "steps": self.steps,
            "log_prob": self.log_prob,
            "score": self.score,
            "finished": self.finished,
            "beam": self.beam,
        }


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
        tokens = tokenize(text, self.src_tokenizer)
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
        return Translation(src, out_tokens, self.display_text(out_tokens), step_align[: len(out_tokens)], kind, steps,
                           hyp.log_prob, hyp.score, hyp.finished, beam, step_align, hyp.beam_tree)

    def translate(self, text: str, beam: int = 1, prefix: str | None = None, topk: int = 5,
                  alpha: float = 1.0, return_tree: bool = False) -> Translation:
        return self.translate_batch([text], beam, [prefix], topk, alpha, return_tree)[0]

    def translate_batch(self, texts: list[str], beam: int = 1, prefixes: list[str | None] | None = None,
                        topk: int = 5, alpha: float = 1.0, return_tree: bool = False) -> list[Translation]:
        if not 1 <= int(beam) <= MAX_BEAM:
            raise InputError(f"beam width must be between 1 and {MAX_BEAM}, got {beam}")
        sources = [self.prepare(t) for t in texts]
        prefix = [self.prefix_ids(p) for p in (prefixes or [None] * len(texts))]
        batch = collate([s.ids for s in sources], [[] for _ in sources], list(range(len(sources))))
        hyps = decode(self.model, batch.src.to(self.device), batch.src_lens, beam=int(beam), topk=topk,
                      alpha=alpha, prefix=prefix if any(prefix) else None, return_tree=return_tree)
        return [self._finish(s, h, int(beam)) for s, h in zip(sources, hyps)]


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m seq2seq.translate", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", help="checkpoint directory, e.g. checkpoints/translate-bahdanau")
    p.add_argument("text", help="the sentence to translate (or the sequence to reverse)")
    p.add_argument("--beam", type=int, default=1, help=f"beam width, 1 (greedy) to {MAX_BEAM}")
    p.add_argument("--prefix", default=None, help="force the output to start with these words")
    p.add_argument("--topk", type=int, default=5, help="candidates listed per step in --json")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = p.parse_args(argv)
    try:
        torch.set_grad_enabled(False)
        tr = Translator.load(args.checkpoint)
        result = tr.translate(args.text, beam=args.beam, prefix=args.prefix, topk=max(1, args.topk))
    except Seq2SeqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False))
    else:
        if result.source.truncated:
            print(f"note: input truncated to {len(result.source.tokens)} of {result.source.n_tokens} tokens",
                  file=sys.stderr)
        print(result.text)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
