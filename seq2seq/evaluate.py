"""Evaluation: loss and perplexity, corpus BLEU in two forms, and the reversal task's
exact match and edit distance by length.

    python -m seq2seq.evaluate CHECKPOINT [--data-dir DIR] [--split val|test2016] [--beam K] [--json]
    python -m seq2seq.evaluate checkpoints/reverse-bahdanau [--lengths 1-30] [--json]

BLEU forms:
  bleu       the form the PyTorch seq2seq tutorials report: lowercased spaCy tokens joined
             by spaces, sacrebleu with tokenize="none";
  sacrebleu  standard sacreBLEU (13a, case-sensitive) on detokenized output (first letter
             capitalized) against the raw reference sentences.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from .cli import ArgumentParser, device_arg, non_negative_float, positive_int, run_main
from .data import PairDataset, collate, generate_reversal, tokenized_multi30k
from .config import Decoding
from .decoding import beam_search, greedy_decode
from .errors import Seq2SeqError
from .models import Seq2Seq
from .presets import DATA_DIR, EVAL_SEED
from .threads import set_this_threads_count
from .text import REVERSE_ALPHABET, display_text
from .vocab import EOS_ID, PAD_ID, Vocab


def teacher_forced_loss(model: Seq2Seq, dataset: PairDataset, device, batch_size: int = 256,
                        amp: bool = False) -> float:
    """Mean cross-entropy per target token with gold inputs (no label smoothing), on the
    model's inference path (the fast loss path inside Seq2Seq.inference; equal to the
    autograd path's within 1e-4, tests/test_parity.py)."""
    model.eval()
    total, tokens = 0.0, 0
    with model.inference():
        for batch in dataset.batches(batch_size):
            batch = batch.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
                loss, n = model.loss(batch.src, batch.src_lens, batch.tgt, teacher_forcing=1.0)
            total += float(loss) * n
            tokens += n
    return total / max(tokens, 1)


def ppl(loss: float) -> float:
    return math.exp(min(loss, 50.0))


def decode_workers(device, n_batches: int) -> int:
    """Threads for decoding a corpus: on the CPU, one per intra-op thread, each running its
    own batches single-threaded. A decoder step is many small ops; with one stream, the
    second core idles while Python dispatches them. Two streams overlap one's dispatch
    with the other's arithmetic (measured: about 10% faster on 2 cores)."""
    if torch.device(device).type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), n_batches))


def decode_corpus(model: Seq2Seq, sources: list[list[int]], device, beam: int = 1,
                  batch_size: int = 128, alpha: float = 1.0, max_len: int | None = None,
                  workers: int | None = None, no_unk: bool = False, coverage: float = 0.0) -> list[list[int]]:
    """Output ids (no <eos>) for every source, in input order; batches sorted by length.
    no_unk: <unk> is never output (decoding.banned_ids); coverage: beam search's coverage
    penalty weight (attention models, beam 2 or more).

    workers: decoding threads (see decode_workers; None picks). The ids do not depend on
    it: each batch is decoded the same way whichever thread takes it."""
    model.eval()
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[list[int] | None] = [None] * len(sources)
    bs = max(1, batch_size // beam)
    # longest batches first, so the last batches to finish are the short ones
    batches = [order[start: start + bs] for start in range(0, len(order), bs)][::-1]

    def decode_batch(idx: list[int]) -> None:
        batch = collate([sources[i] for i in idx], [[] for _ in idx], idx)
        with model.inference():                    # per worker thread: the mode is per thread
            hyps = decode_ids(batch)
        for i, h in zip(idx, hyps):
            out[i] = h.tokens

    def decode_ids(batch):
        if beam == 1:  # tokens only: no softmax, top-k or attention records
            return greedy_decode(model, batch.src.to(device), batch.src_lens, max_len=max_len, details=False,
                                 no_unk=no_unk)
        return beam_search(model, batch.src.to(device), batch.src_lens, beam=beam, alpha=alpha,
                           coverage=coverage, max_len=max_len, topk=1, no_unk=no_unk)

    n_workers = decode_workers(device, len(batches)) if workers is None else max(1, min(workers, len(batches)))
    if n_workers == 1:
        for idx in batches:
            decode_batch(idx)
        return out
    # each worker one intra-op thread, set for that thread alone (threads.py)
    with ThreadPoolExecutor(n_workers, initializer=set_this_threads_count, initargs=(1,)) as pool:
        list(pool.map(decode_batch, batches))          # re-raises a worker's exception
    return out


def bleu_scores(hyp_tokens: list[list[str]], ref_tokens: list[list[str]], ref_raw: list[str]) -> dict:
    import sacrebleu

    tutorial = sacrebleu.corpus_bleu([" ".join(h) for h in hyp_tokens], [[" ".join(r) for r in ref_tokens]],
                                     tokenize="none", force=True)  # tokenized on purpose: the tutorials' form
    standard_metric = sacrebleu.metrics.BLEU()  # 13a tokenization, case-sensitive
    standard = standard_metric.corpus_score([display_text(h, "spacy:en") for h in hyp_tokens], [ref_raw])
    return {"bleu": round(tutorial.score, 2), "sacrebleu": round(standard.score, 2),
            "sacrebleu_signature": str(standard_metric.get_signature())}


def encode_sources(model: Seq2Seq, src_vocab: Vocab, src_tok: list[list[str]]) -> list[list[int]]:
    return [src_vocab.encode_words(s, model.cfg.max_src_len) for s in src_tok]


def split_loss(model: Seq2Seq, sources: list[list[int]], tgt_vocab: Vocab, tgt_tok: list[list[str]],
               device) -> float:
    """A split's teacher-forced loss, its sources encoded (it does not depend on the decoding)."""
    return teacher_forced_loss(model, PairDataset(sources, [tgt_vocab.encode(t) for t in tgt_tok]), device)


def evaluate_translation(model: Seq2Seq, src_vocab: Vocab, tgt_vocab: Vocab, src_tok: list[list[str]],
                         tgt_tok: list[list[str]], ref_raw: list[str], device, decoding: Decoding = Decoding(),
                         batch_size: int = 128, loss: float | None = None,
                         sources: list[list[int]] | None = None) -> dict:
    """loss and sources: the split's teacher-forced loss (split_loss) and encoded sources
    (encode_sources), where the caller has them already (several decodings of one split)."""
    if sources is None:
        sources = encode_sources(model, src_vocab, src_tok)
    if loss is None:
        loss = split_loss(model, sources, tgt_vocab, tgt_tok, device)
    t0 = time.perf_counter()
    outs = decode_corpus(model, sources, device, beam=decoding.beam, alpha=decoding.alpha, batch_size=batch_size,
                         no_unk=decoding.no_unk, coverage=decoding.coverage)
    seconds = time.perf_counter() - t0
    hyps = [tgt_vocab.decode(o) for o in outs]
    return {"loss": round(loss, 4), "ppl": round(ppl(loss), 2), **bleu_scores(hyps, tgt_tok, ref_raw),
            "decoding": decoding.card_entry(),
            "decode_seconds": round(seconds, 2), "sentences": len(sources),
            "samples": [{"hyp": " ".join(h), "ref": " ".join(r)} for h, r in zip(hyps[:3], tgt_tok[:3])]}


def choose_decoding(model: Seq2Seq, src_vocab: Vocab, tgt_vocab: Vocab, splits: dict, device,
                    decodings: list[Decoding]) -> dict:
    """Every decoding on val and test 2016; the one with the best val BLEU (a tie: the
    first in the list) is each split's reported result (test 2016 never takes part in the
    choice), the others stay beside it in by_decoding. splits: {"val": ..., "test2016": ...}
    as tokenized_multi30k gives them."""
    metrics = {}
    for split in ("val", "test2016"):
        t = splits[split]
        sources = encode_sources(model, src_vocab, t["de"])
        loss = split_loss(model, sources, tgt_vocab, t["en"], device)
        metrics[split] = {d: evaluate_translation(model, src_vocab, tgt_vocab, t["de"], t["en"], t["en_raw"],
                                                  device, d, loss=loss, sources=sources)
                          for d in dict.fromkeys(decodings)}
    chosen = max(metrics["val"], key=lambda d: metrics["val"][d]["bleu"])
    return {split: {**runs[chosen], "chosen_on": "val bleu",
                    "by_decoding": {d.key: {k: r[k] for k in ("bleu", "sacrebleu", "decode_seconds")}
                                    for d, r in runs.items()}}
            for split, runs in metrics.items()}


def decodings_arg(text: str) -> list[Decoding]:
    try:
        return Decoding.parse_list(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected decodings like 1,5,10:0.8,10:0.8:cov0.2:no-unk (beam, "
                                         f"beam:alpha, optionally :covB and :no-unk; beams >= 1, alphas and "
                                         f"coverage weights >= 0), got {text!r}: {e}")


def edit_distance(a: list, b: list) -> int:
    """Levenshtein distance of one pair, the plain dynamic programme (edit_distances'
    reference)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def edit_distances(hyps: list[list[int]], refs: list[list[int]]) -> np.ndarray:
    """Levenshtein distance of each (hyp, ref) pair, all pairs at once: one numpy row update
    per hyp position instead of a Python loop per cell (a card's reversal evaluation has
    12,000 pairs of up to 60 tokens). Row i of the table is
    cur[j] = min(prev[j] + 1, prev[j-1] + (a_i != b_j), cur[j-1] + 1); the last term is a
    running minimum: cur[j] = j + min over k <= j of (t[k] - k), t being the first two."""
    n = len(hyps)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    la = np.array([len(h) for h in hyps])
    lb = np.array([len(r) for r in refs])
    a = np.full((n, max(la.max(), 1)), -1, dtype=np.int64)            # [N, La], -1 and -2 pads never match
    b = np.full((n, max(lb.max(), 1)), -2, dtype=np.int64)            # [N, Lb]
    for k, (h, r) in enumerate(zip(hyps, refs)):
        a[k, :len(h)] = h
        b[k, :len(r)] = r
    cols = np.arange(b.shape[1] + 1)                                   # [Lb + 1]
    prev = np.broadcast_to(cols, (n, cols.size)).copy()                # [N, Lb + 1], row 0
    out = np.where(la == 0, lb, 0)
    for i in range(1, a.shape[1] + 1):
        t = np.empty_like(prev)
        t[:, 0] = i
        t[:, 1:] = np.minimum(prev[:, 1:] + 1, prev[:, :-1] + (a[:, i - 1:i] != b))
        prev = np.minimum.accumulate(t - cols, axis=1) + cols
        done = la == i
        out[done] = prev[done, lb[done]]
    return out


def evaluate_reversal(model: Seq2Seq, vocab: Vocab, lengths: range, n_per_length: int, seed: int,
                      device, beam: int = 1) -> dict:
    """Exact match, normalized edit distance and accuracy by output position, per length,
    on fresh seeded sequences (`seed` differs from the training seeds)."""
    em, ned, pos_hits, pos_total = {}, {}, {}, {}
    for n in lengths:
        seqs = generate_reversal(n_per_length, n, n, seed + 7919 * n, REVERSE_ALPHABET)
        sources = [vocab.encode(s) for s in seqs]
        outs = decode_corpus(model, sources, device, beam=beam, max_len=max(2 * n + 5, 10))
        targets = [list(reversed(s)) for s in sources]
        em[str(n)] = round(sum(o == t for o, t in zip(outs, targets)) / len(seqs), 4)
        dist = edit_distances(outs, targets)
        ned[str(n)] = round(sum(float(d) / max(len(o), len(t)) for d, o, t in zip(dist, outs, targets))
                            / len(seqs), 4)
        for o, t in zip(outs, targets):
            for p, tok in enumerate(t):
                pos_total[p] = pos_total.get(p, 0) + 1
                pos_hits[p] = pos_hits.get(p, 0) + (p < len(o) and o[p] == tok)
    return {"exact_match_by_length": em, "edit_distance_by_length": ned,
            "accuracy_by_position": {str(p + 1): round(pos_hits[p] / pos_total[p], 4) for p in sorted(pos_total)},
            "n_per_length": n_per_length, "eval_seed": seed, "decoding": {"beam": beam}}


def teacher_forced_position_accuracy(model: Seq2Seq, sources: list[list[int]], targets: list[list[int]],
                                     device, batch_size: int = 256) -> dict[str, float]:
    """Share of references whose token at output position p (1-based) the teacher-forced
    argmax matches: the decoder is fed the gold prefix, as in training at ratio 1. The
    positions are the reference's tokens (not its <eos>), as in the free-running count of
    `evaluate_reversal` and `sweep.position_accuracy`, so the two curves compare."""
    model.eval()
    hits: torch.Tensor | None = None
    total: torch.Tensor | None = None
    with model.inference(), torch.inference_mode():
        for batch in PairDataset(sources, targets).batches(batch_size):
            batch = batch.to(device)
            pred = model(batch.src, batch.src_lens, batch.tgt).argmax(-1)      # [B, T-1]
            gold = batch.tgt[:, 1:]                                            # [B, T-1]
            real = (gold != PAD_ID) & (gold != EOS_ID)
            h, n = ((pred == gold) & real).sum(0).cpu(), real.sum(0).cpu()      # [T-1] each
            if hits is None:
                hits, total = h, n
            else:
                width = max(hits.numel(), h.numel())
                hits = F.pad(hits, (0, width - hits.numel())) + F.pad(h, (0, width - h.numel()))
                total = F.pad(total, (0, width - total.numel())) + F.pad(n, (0, width - n.numel()))
    if hits is None:
        return {}
    return {str(p + 1): round(int(hits[p]) / int(total[p]), 4) for p in range(hits.numel()) if int(total[p])}


SOURCE_LENGTH_BUCKETS = ((1, 8), (9, 12), (13, 16), (17, 20), (21, None))   # Multi30k: mean about 12


def bucket_label(lo: int, hi: int | None) -> str:
    return f"{lo}-{hi}" if hi is not None else f"{lo}+"


def bleu_by_source_length(hyp_tokens: list[list[str]], ref_tokens: list[list[str]], ref_raw: list[str],
                          source_lengths: list[int], buckets=SOURCE_LENGTH_BUCKETS) -> dict[str, dict]:
    """Corpus BLEU (both forms) of the sentences whose source length falls in each bucket,
    with the bucket's sentence count; empty buckets are left out."""
    out = {}
    for lo, hi in buckets:
        idx = [i for i, n in enumerate(source_lengths) if n >= lo and (hi is None or n <= hi)]
        if idx:
            scores = bleu_scores([hyp_tokens[i] for i in idx], [ref_tokens[i] for i in idx],
                                 [ref_raw[i] for i in idx])
            out[bucket_label(lo, hi)] = {"bleu": scores["bleu"], "sacrebleu": scores["sacrebleu"],
                                         "sentences": len(idx)}
    return out


def mean_over(by_length: dict, lo: int, hi: int) -> float:
    vals = [v for k, v in by_length.items() if lo <= int(k) <= hi]
    return round(sum(vals) / len(vals), 4) if vals else float("nan")


def update_card_metrics(ck, updates: dict) -> None:
    """Replace the card's metric entries named in `updates` (e.g. {"test2016": ...}), and
    its sample with what these weights write; the weights are untouched."""
    from dataclasses import replace

    from .translate import Translator

    card = ck.card
    metrics = {**card.metrics, **updates}
    sample = card.sample
    if sample:
        out = Translator(ck).translate(sample["input"], beam=sample.get("beam", 1))
        sample = {**sample, "output": out.text, "output_tokens": out.output_tokens}
    replace(card, metrics=metrics, sample=sample).save(ck.path)


def _parse_lengths(text: str) -> range:
    try:
        lo, _, hi = text.partition("-")
        lo, hi = int(lo), int(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a range like 1-30, got {text!r}")
    if not 1 <= lo <= hi <= 200:
        raise argparse.ArgumentTypeError(f"lengths must satisfy 1 <= lo <= hi <= 200, got {text!r}")
    return range(lo, hi + 1)


def main(argv=None) -> int:
    from .checkpoint import load_checkpoint

    p = ArgumentParser(prog="python -m seq2seq.evaluate",
                                description="Recompute a checkpoint's metrics.")
    p.add_argument("checkpoint")
    p.add_argument("--data-dir", default=DATA_DIR, help="Multi30k release files (translation)")
    p.add_argument("--cache", default=None, help="token cache (JSON.gz) to read instead of tokenizing")
    p.add_argument("--split", choices=["val", "test2016"], default="test2016")
    p.add_argument("--beam", type=positive_int, default=None, help="beam width (default: the card's decoding)")
    p.add_argument("--alpha", type=non_negative_float, default=None, help="length-normalization exponent")
    p.add_argument("--coverage", type=non_negative_float, default=None,
                   help="translation: beam search's coverage penalty weight (attention models; default: the card's)")
    p.add_argument("--no-unk", choices=["yes", "no"], default=None,
                   help="translation: forbid <unk> in the output (default: the card's decoding)")
    p.add_argument("--lengths", type=_parse_lengths, default=_parse_lengths("1-30"), help="reversal: e.g. 1-30")
    p.add_argument("--n-per-length", type=positive_int, default=None, help="reversal: sequences per length")
    p.add_argument("--device", default="cpu", type=device_arg)
    p.add_argument("--json", action="store_true")
    p.add_argument("--choose-decoding", type=decodings_arg, metavar="BEAMS",
                   help="translation: evaluate these decodings (e.g. 1,5,10,10:0.8,10:0.8:cov0.2:no-unk as beam or "
                        "beam:alpha, :covB a coverage penalty of weight B, :no-unk forbidding <unk> in the output) "
                        "on val "
                        "and test 2016 and report the one with the best val BLEU on both, as training's card does; "
                        "with --update-card, write them into the card")
    p.add_argument("--update-card", action="store_true",
                   help="write the recomputed metrics (and the sample) into the card: for a checkpoint whose "
                        "card was measured before its weights were rounded to float16")
    args = p.parse_args(argv)
    try:
        device = torch.device(args.device)
        ck = load_checkpoint(args.checkpoint, device)
        card_metrics = ck.card.metrics
        if ck.task == "translate" and args.choose_decoding:
            splits = tokenized_multi30k(args.data_dir, args.cache, splits=("val", "test2016"))
            chosen = choose_decoding(ck.model, ck.src_vocab, ck.tgt_vocab, splits, device, args.choose_decoding)
            result = {"checkpoint": str(ck.path), **chosen}
            dec = Decoding.from_card(chosen["val"]["decoding"])
            summary = (f"{ck.name}: chosen on val BLEU: {dec.label}"
                       + "".join(f"; {split} BLEU {chosen[split]['bleu']}, sacreBLEU {chosen[split]['sacrebleu']}, "
                                 f"PPL {chosen[split]['ppl']} (" + ", ".join(f"{k} {v['bleu']}" for k, v in
                                                                             chosen[split]["by_decoding"].items()) + ")"
                                 for split in ("val", "test2016")))
            updates = chosen
        elif ck.task == "translate":
            recorded = card_metrics.get(args.split, {})
            card_dec = Decoding.from_card(recorded.get("decoding"))
            dec = Decoding(args.beam or card_dec.beam, card_dec.alpha if args.alpha is None else args.alpha,
                           card_dec.no_unk if args.no_unk is None else args.no_unk == "yes",
                           card_dec.coverage if args.coverage is None else args.coverage)
            split = tokenized_multi30k(args.data_dir, args.cache, splits=(args.split,))[args.split]
            result = evaluate_translation(ck.model, ck.src_vocab, ck.tgt_vocab, split["de"], split["en"],
                                          split["en_raw"], device, dec)
            result = {"checkpoint": str(ck.path), "split": args.split, **result,
                      "card": {k: recorded.get(k) for k in ("bleu", "sacrebleu", "ppl")}}
            summary = (f"{ck.name} {args.split}: BLEU {result['bleu']} (tutorial form), sacreBLEU "
                       f"{result['sacrebleu']}, PPL {result['ppl']}, {dec.label}; card: {result['card']}")
            keep = {k: v for k, v in recorded.items() if k in ("chosen_on",)}
            updates = {args.split: {**{k: v for k, v in result.items() if k not in ("checkpoint", "split", "card")},
                                    **keep}}
        else:
            recorded = card_metrics.get("reversal", {})
            n = args.n_per_length or recorded.get("n_per_length", 200)
            seed = recorded.get("eval_seed", EVAL_SEED)
            beam = args.beam or recorded.get("decoding", {}).get("beam", 1)
            result = evaluate_reversal(ck.model, ck.src_vocab, args.lengths, n, seed, device, beam)
            result = {"checkpoint": str(ck.path), **result}
            em = result["exact_match_by_length"]
            summary = (f"{ck.name}: exact match {mean_over(em, 1, 10):.4f} on lengths 1-10, "
                       f"{mean_over(em, 1, 20):.4f} on 1-20, {mean_over(em, 21, 30):.4f} on 21-30")
            rev = {k: v for k, v in result.items() if k != "checkpoint"}
            updates = {"reversal": rev, **{f"exact_match_{lo}_{hi}": mean_over(em, lo, hi)
                                           for lo, hi in ((1, 10), (1, 20), (21, 30), (1, 40), (41, 60))
                                           if str(hi) in em or hi in em}}
        if args.update_card:
            update_card_metrics(ck, updates)
    except Seq2SeqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, ensure_ascii=False) if args.json else summary)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
