"""Per-sentence statistics of a translation model over a whole split, in a compact file
shipped beside the checkpoint (the app's "Test set" page reads it; no data needed there).

    python -m seq2seq.corpus CHECKPOINT --data-dir DIR [--cache FILE] --split test2016 --out FILE

With --out CHECKPOINT/corpus-SPLIT.json (the default) the file's sha256 and size go into the
checkpoint's card ("files"), and `read_corpus_file` refuses a file that does not match.

Decoding: the card's choice for the split's metrics (metrics[SPLIT]["decoding"], e.g. beam 5,
alpha 1), with the same batches as `python -m seq2seq.evaluate`, so the outputs are the ones
the card's BLEU was measured on. The file records the decoding and the command line.

Statistics per sentence (A is the output x source attention matrix, rows over the real
source tokens; the <eos> step is excluded everywhere, so A is exactly the matrix the
Translate page draws, one row per output token):
  bleu          sacrebleu.sentence_bleu in the tutorial form of seq2seq/evaluate.py: lowercased
                spaCy tokens joined by spaces, tokenize="none", smoothing "exp", effective order;
  entropy       mean over output tokens of H_t = -sum_i A[t, i] ln A[t, i] (nats; 0 ln 0 = 0);
                null for an empty output;
  monotonicity  share of steps t >= 2 whose argmax source position is >= the previous
                step's (first maximum on ties); null with fewer than 2 output tokens;
  coverage      coverage_j = sum_t A[t, j]: stored as counts and source positions (0-based)
                of tokens under 0.2 ("possibly dropped") and over 2.0 ("attended repeatedly");
  length_ratio  output tokens / source tokens (the tokens the model read).
Models without attention (lstm, gru) have bleu and length_ratio only; their attention
columns are null. Numbers are rounded to 4 decimals."""
from __future__ import annotations

import json
import math
import os
import shlex
import sys
from pathlib import Path

import numpy as np

from .alignment import average_ranks, reads_pieces, word_columns
from .cli import ArgumentParser, device_arg, run_main
from .config import Decoding
from .errors import CheckpointError, Seq2SeqError
from .subword import join_pieces

FORMAT_VERSION = 1
KIND = "attention-lab corpus statistics"
MAX_BYTES = 1 << 20                    # the shipped file stays under 1 MiB
DROPPED_BELOW, REPEATED_ABOVE = 0.2, 2.0
DIGITS = 4
ATTENTION_COLUMNS = ("entropy", "monotonicity", "dropped", "dropped_positions", "repeated",
                     "repeated_positions")
COLUMNS = ("source", "output", "reference", "bleu", "length_ratio", *ATTENTION_COLUMNS)
DEFINITIONS = {
    "bleu": "sacrebleu sentence BLEU, tutorial form: lowercased spaCy tokens joined by spaces, "
            "tokenize none, smoothing exp, effective order",
    "entropy": "mean over output tokens (the <eos> step excluded) of -sum_i a_i ln a_i over the real "
               "source tokens, in nats",
    "monotonicity": "share of output steps t >= 2 whose attention argmax source position is >= the "
                    "previous step's",
    "coverage": f"total attention a source token received over the output tokens; under {DROPPED_BELOW} "
                f"possibly dropped, over {REPEATED_ABOVE} attended repeatedly (positions 0-based)",
    "length_ratio": "output tokens / source tokens",
}


class CorpusFileMissing(Seq2SeqError):
    """No corpus file beside the checkpoint (the message says which command makes it)."""


def corpus_filename(split: str) -> str:
    return f"corpus-{split}.json"


def make_command(ckpt_dir: str | os.PathLike, split: str = "test2016",
                 data_dir: str = "../shared/data/multi30k") -> str:
    """The command that makes a checkpoint's corpus file (paths relative to the working
    directory where possible)."""
    d = Path(ckpt_dir)
    try:
        d = d.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        pass
    return shlex.join(["python", "-m", "seq2seq.corpus", str(d), "--data-dir", data_dir, "--split", split,
                       "--out", str(d / corpus_filename(split))])


# ------------------------------------------------------------------ statistics (pure)
def _r(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), DIGITS)


def attention_entropy(A: np.ndarray) -> float | None:
    """Mean over rows of -sum a ln a (0 ln 0 = 0); None for no rows."""
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] == 0:
        return None
    logs = np.log(np.where(A > 0, A, 1.0))
    return float((-(A * logs).sum(axis=1)).mean())


def monotonicity(A: np.ndarray) -> float | None:
    """Share of rows t >= 2 (1-based) whose argmax is >= row t-1's; None with under 2 rows."""
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] < 2 or A.shape[1] == 0:
        return None
    am = A.argmax(axis=1)
    return float((am[1:] >= am[:-1]).mean())


def coverage(A: np.ndarray, n_src: int) -> np.ndarray:
    """coverage_j = sum_t A[t, j], one value per source token (zeros for an empty output)."""
    A = np.asarray(A, dtype=np.float64).reshape(-1, n_src)
    return A.sum(axis=0)


def sentence_statistics(attention: np.ndarray | None, n_src: int, n_out: int) -> dict:
    """The attention statistics of one sentence; `attention` [n_out, n_src] has one row per
    output token (no <eos> row), or None for a model without attention."""
    out = {"length_ratio": _r(n_out / n_src) if n_src else None}
    if attention is None:
        return {**out, **{k: None for k in ATTENTION_COLUMNS}}
    A = np.asarray(attention, dtype=np.float64)[:n_out, :n_src]
    cov = coverage(A, n_src)
    dropped = [int(j) for j in np.flatnonzero(cov < DROPPED_BELOW)]
    repeated = [int(j) for j in np.flatnonzero(cov > REPEATED_ABOVE)]
    return {**out, "entropy": _r(attention_entropy(A)), "monotonicity": _r(monotonicity(A)),
            "dropped": len(dropped), "dropped_positions": dropped,
            "repeated": len(repeated), "repeated_positions": repeated}


def sentence_bleu_metric():
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize="none", effective_order=True)   # what sacrebleu.sentence_bleu uses, untokenized


def sentence_bleus(hyps: list[list[str]], refs: list[list[str]]) -> tuple[list[float], str]:
    """Sentence BLEU of each (hypothesis, reference) token list pair, and the metric's signature."""
    metric = sentence_bleu_metric()
    scores = [float(metric.sentence_score(" ".join(h), [" ".join(r)]).score) for h, r in zip(hyps, refs)]
    return scores, str(metric.get_signature())


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    return None if denom == 0 else float((dx * dy).sum() / denom)


def correlation(xs, ys) -> dict:
    """Pearson r and Spearman rho (Pearson of average ranks) over the pairs where both values
    are numbers; None where undefined (under 2 pairs, or a constant side)."""
    pairs = [(float(x), float(y)) for x, y in zip(xs, ys)
             if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))]
    if len(pairs) < 2:
        return {"pearson": None, "spearman": None, "n": len(pairs)}
    x, y = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    return {"pearson": _pearson(x, y), "spearman": _pearson(average_ranks(x), average_ranks(y)), "n": len(pairs)}


# ------------------------------------------------------------------ decoding a split
def decode_with_attention(model, sources: list[list[int]], device, decoding: Decoding = Decoding(),
                          batch_size: int = 128) -> list:
    """Hypotheses (tokens and attention) for every source, in input order. The batches are
    those of evaluate.decode_corpus (sorted by length, batch_size // beam sentences), so the
    outputs are the ones the card's BLEU was measured on."""
    import torch

    from .data import collate
    from .decoding import beam_search, greedy_decode

    model.eval()
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    beam = decoding.beam
    bs = max(1, batch_size // beam)
    out = [None] * len(sources)
    with torch.inference_mode():
        for start in range(0, len(order), bs):
            idx = order[start: start + bs]
            batch = collate([sources[i] for i in idx], [[] for _ in idx], idx)
            if beam == 1:
                hyps = greedy_decode(model, batch.src.to(device), batch.src_lens, topk=1, no_unk=decoding.no_unk)
            else:
                hyps = beam_search(model, batch.src.to(device), batch.src_lens, beam=beam, alpha=decoding.alpha,
                                   coverage=decoding.coverage, topk=1, no_unk=decoding.no_unk)
            for i, h in zip(idx, hyps):
                out[i] = h
    return out


def corpus_statistics(ck, split_data: dict, split: str, device, command: str) -> dict:
    """The corpus file's content for a loaded translation checkpoint and one tokenized split
    ({"de": token lists, "en": token lists, ...})."""
    from .evaluate import bleu_scores

    if ck.task != "translate":
        raise Seq2SeqError(f"{ck.path}: corpus statistics are for translation checkpoints; "
                           f"this one is a {ck.task!r} model")
    decoding = Decoding.from_card(ck.card.get("metrics", {}).get(split, {}).get("decoding"))
    src_tok = [ck.src_vocab.segment(s)[: ck.model.cfg.max_src_len] for s in split_data["de"]]   # the model's tokens
    refs = split_data["en"]
    hyps = decode_with_attention(ck.model, [ck.src_vocab.encode(s) for s in src_tok], device, decoding)
    out_tok = [ck.tgt_vocab.decode(h.tokens) for h in hyps]
    has_attention = ck.model.cfg.has_attention
    columns = {k: [] for k in COLUMNS}
    for s, o, r, h in zip(src_tok, out_tok, refs, hyps):
        attention = h.attention if has_attention else None
        if attention is not None and reads_pieces(s):
            # a model reading byte-pair pieces: its attention per word (the pieces' weights summed), so
            # the statistics and the dropped/repeated positions are about the words a person reads
            _, attention, _ = word_columns(s, np.asarray(attention, dtype=np.float64)[:, :len(s)])
        words = join_pieces(s)
        columns["source"].append(" ".join(words))          # the Translate page's text re-reads these words
        columns["output"].append(" ".join(o))
        columns["reference"].append(" ".join(r))
        stats = sentence_statistics(attention, len(words), len(o))
        for k, v in stats.items():
            columns[k].append(v)
    bleus, signature = sentence_bleus(out_tok, refs)
    columns["bleu"] = [_r(b) for b in bleus]
    if not has_attention:
        for k in ATTENTION_COLUMNS:
            columns[k] = None
    corpus_bleu = bleu_scores(out_tok, refs, split_data.get("en_raw") or [" ".join(r) for r in refs])["bleu"]
    return {
        "format_version": FORMAT_VERSION, "kind": KIND, "checkpoint": ck.name, "arch": ck.model.cfg.arch,
        "weights_sha256": ck.card["files"]["model.safetensors"]["sha256"], "split": split,
        "sentences": len(src_tok), "attention": bool(has_attention),
        "decoding": {**decoding.card_entry(), "label": decoding.label},
        "command": command, "device": str(device),
        "corpus_bleu": corpus_bleu, "card_bleu": ck.card.get("metrics", {}).get(split, {}).get("bleu"),
        "sentence_bleu_signature": signature,
        "thresholds": {"dropped_below": DROPPED_BELOW, "repeated_above": REPEATED_ABOVE},
        "definitions": DEFINITIONS, "columns": columns,
    }


def dumps_corpus(obj: dict) -> bytes:
    """Compact but line-oriented JSON: one line per field, one line per column."""
    def one(v) -> str:
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))

    lines = []
    for k, v in obj.items():
        if k == "columns":
            inner = ",\n".join(f"  {one(c)}:{one(vals)}" for c, vals in v.items())
            lines.append(f" {one(k)}:{{\n{inner}\n }}")
        else:
            lines.append(f" {one(k)}:{one(v)}")
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode("utf-8")


def record_in_card(ckpt_dir: Path, path: Path, weights_sha256: str):
    """Put the file's sha256 and size into the card's "files" (card written atomically)."""
    from .checkpoint import WEIGHTS, read_card

    card = read_card(ckpt_dir)                      # fresh: the card on disk now
    if card.files[WEIGHTS]["sha256"] != weights_sha256:
        raise CheckpointError(f"{ckpt_dir}: the weights changed while the statistics were computed; run again")
    if path.parent.resolve() != Path(ckpt_dir).resolve():
        raise ValueError(f"{path} is not beside the checkpoint {ckpt_dir}")
    card = card.with_file(ckpt_dir, path.name)
    card.save(ckpt_dir)
    return card


# ------------------------------------------------------------------ reading (the page)
def read_corpus_file(ckpt_dir: str | os.PathLike, split: str = "test2016") -> dict:
    """The verified corpus file of a checkpoint. Raises CorpusFileMissing when there is none
    (the message names the command), CheckpointError when it is not the file the card
    records (tampered, truncated, stale) or not for these weights."""
    from .checkpoint import WEIGHTS, read_card, verify_file

    d = Path(ckpt_dir)
    card = read_card(d)
    name = corpus_filename(split)
    path = d / name
    listed = name in card["files"]
    if not path.is_file():
        if listed:
            raise CheckpointError(f"{path}: missing, but the card records it; make it again with: "
                                  f"{make_command(d, split)}")
        raise CorpusFileMissing(f"no {split} statistics for {d.name} yet; make them with: {make_command(d, split)}")
    if not listed:
        raise CheckpointError(f"{path}: not recorded in the card (made elsewhere, or the checkpoint was saved "
                              f"again since), so it cannot be verified; make it again with: {make_command(d, split)}")
    if not isinstance(card["files"][name], dict) or not isinstance(card["files"][name].get("sha256"), str):
        raise CheckpointError(f"{d / 'card.json'}: no sha256 recorded for {name}")
    verify_file(path, card)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise CheckpointError(f"{path}: not an attention-lab corpus statistics file")
    if not isinstance(data.get("format_version"), int) or data["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {data.get('format_version')!r} is not one this code "
                              f"reads ({FORMAT_VERSION})")
    if data.get("weights_sha256") != card["files"][WEIGHTS]["sha256"]:
        raise CheckpointError(f"{path}: computed for other weights than this checkpoint's; make it again with: "
                              f"{make_command(d, split)}")
    cols, n = data.get("columns"), data.get("sentences")
    if not isinstance(cols, dict) or not isinstance(n, int) or any(
            k not in cols or (cols[k] is not None and (not isinstance(cols[k], list) or len(cols[k]) != n))
            for k in COLUMNS):
        raise CheckpointError(f"{path}: the columns are missing or of unequal length")
    return data


# ------------------------------------------------------------------ tables for the page (pure)
STATISTICS = {  # column -> label
    "bleu": "sentence BLEU", "entropy": "attention entropy (nats)", "monotonicity": "monotonicity",
    "dropped": "tokens possibly dropped", "repeated": "tokens attended repeatedly",
    "length_ratio": "length ratio (output / source)",
}
ORDERS = {  # label -> (column, ascending)
    "worst BLEU": ("bleu", True),
    "least monotone": ("monotonicity", True),
    "most words possibly dropped": ("dropped", False),
    "most words attended repeatedly": ("repeated", False),
}


def _words_at(source: str, positions) -> str:
    if not positions:
        return ""
    tokens = source.split(" ")
    return " · ".join(tokens[j] for j in positions if 0 <= j < len(tokens))


def corpus_frame(data: dict):
    """A corpus file -> one row per sentence (numbers NaN where a statistic does not apply)."""
    import pandas as pd

    cols, n = data["columns"], data["sentences"]

    def col(k):
        v = cols.get(k)
        return [float("nan") if x is None else x for x in v] if v is not None else [float("nan")] * n

    df = pd.DataFrame({
        "sentence": range(1, n + 1), "source": cols["source"], "output": cols["output"],
        "reference": cols["reference"],
        **{k: pd.array(col(k), dtype="float64") for k in STATISTICS},
        "dropped words": [_words_at(s, p) for s, p in zip(cols["source"], cols.get("dropped_positions") or [[]] * n)],
        "repeated words": [_words_at(s, p) for s, p in zip(cols["source"], cols.get("repeated_positions") or [[]] * n)],
    })
    return df


def sorted_rows(df, order: str):
    """Rows in the order named by ORDERS (sentence number breaks ties; NaN last)."""
    column, ascending = ORDERS[order]
    return df.sort_values([column, "sentence"], ascending=[ascending, True], na_position="last", kind="mergesort")


def long_frame(frames: dict, statistic: str):
    """{model: corpus_frame} -> tidy (model, value) rows of one statistic, NaN dropped."""
    import pandas as pd

    parts = [pd.DataFrame({"model": name, "value": f[statistic].astype(float)}) for name, f in frames.items()]
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"model": [], "value": []})
    return out.dropna(subset=["value"]).reset_index(drop=True)


def summary(df) -> dict:
    """Means of every statistic (None where it does not apply)."""
    out = {}
    for k in STATISTICS:
        v = df[k].astype(float)
        out[k] = None if v.isna().all() else float(v.mean())
    return out


# ------------------------------------------------------------------ command line
def main(argv=None) -> int:
    import torch

    from .checkpoint import load_checkpoint
    from .data import MULTI30K_SPLITS, tokenized_multi30k

    argv = list(sys.argv[1:] if argv is None else argv)
    p = ArgumentParser(prog="python -m seq2seq.corpus",
                       description="Per-sentence BLEU and attention statistics of a translation checkpoint "
                                   "over a split, into a compact JSON file.")
    p.add_argument("checkpoint")
    p.add_argument("--data-dir", default="../shared/data/multi30k", help="Multi30k release files")
    p.add_argument("--cache", default=None, help="token cache (JSON.gz) to read instead of tokenizing")
    p.add_argument("--split", choices=[s for s in MULTI30K_SPLITS if s != "train"], default="test2016")
    p.add_argument("--out", default=None, help="output file (default: CHECKPOINT/corpus-SPLIT.json, "
                                               "which is also recorded in the card)")
    p.add_argument("--device", default="cpu", type=device_arg)
    p.add_argument("--json", action="store_true", help="print the file's content on stdout")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    ck = load_checkpoint(args.checkpoint, device)
    out = Path(args.out) if args.out else ck.path / corpus_filename(args.split)
    split = tokenized_multi30k(args.data_dir, args.cache, splits=(args.split,))[args.split]
    command = shlex.join(["python", "-m", "seq2seq.corpus", *argv])
    data = corpus_statistics(ck, split, args.split, device, command)
    blob = dumps_corpus(data)
    if len(blob) > MAX_BYTES:
        raise Seq2SeqError(f"the statistics file would be {len(blob)} bytes, over the {MAX_BYTES}-byte limit")
    out.parent.mkdir(parents=True, exist_ok=True)
    from .atomic import atomic_write_bytes

    atomic_write_bytes(out, blob, mode=0o644)
    in_card = out.resolve().parent == ck.path.resolve() and out.name == corpus_filename(args.split)
    if in_card:
        record_in_card(ck.path, out, data["weights_sha256"])
    if args.json:
        print(blob.decode("utf-8"), end="")
    else:
        means = summary(corpus_frame(data))
        parts = [f"{k} {v:.3f}" for k, v in means.items() if v is not None]
        print(f"{ck.name} {args.split}: {data['sentences']} sentences, {data['decoding']['label']}, corpus BLEU "
              f"{data['corpus_bleu']} (card {data['card_bleu']}); means: {', '.join(parts)}; wrote {out} "
              f"({len(blob)} bytes)" + ("; recorded in the card" if in_card else ""))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
