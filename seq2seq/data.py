"""Data: the Multi30k reader, the reversal generator, and length-bucketed batches."""
from __future__ import annotations

import gzip
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import DataError
from .vocab import EOS_ID, PAD_ID, SOS_ID

MULTI30K_URL = "https://github.com/multi30k/dataset (data/task1/raw)"
# split name -> file stem in the release
MULTI30K_SPLITS = {"train": "train", "val": "val", "test2016": "test_2016_flickr"}
MULTI30K_SIZES = {"train": 29000, "val": 1014, "test2016": 1000}


def _split_paths(data_dir: Path, split: str) -> dict[str, Path | None]:
    stem = MULTI30K_SPLITS[split]
    found = {}
    for lang in ("de", "en"):
        found[lang] = next((p for p in (data_dir / f"{stem}.{lang}.gz", data_dir / f"{stem}.{lang}")
                            if p.is_file()), None)
    return found


def read_multi30k(data_dir: str | os.PathLike, split: str) -> tuple[list[str], list[str]]:
    """Raw (German, English) sentence lists of one split, line-aligned.

    Reads `{stem}.de[.gz]` and `{stem}.en[.gz]` from `data_dir`."""
    if split not in MULTI30K_SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {list(MULTI30K_SPLITS)}")
    data_dir = Path(data_dir)
    paths = _split_paths(data_dir, split)
    missing = [lang for lang, p in paths.items() if p is None]
    if missing:
        stem = MULTI30K_SPLITS[split]
        expected = ", ".join(f"{stem}.{lang}.gz (or {stem}.{lang})" for lang in missing)
        raise DataError(
            f"Multi30k {split} data not found in {data_dir.resolve()}: expected {expected}. "
            f"Pass --data-dir pointing at the Multi30k task-1 release files "
            f"(train, val, test_2016_flickr; .de/.en, gzipped or plain), "
            f"published at {MULTI30K_URL}.")
    lines = {}
    for lang, path in paths.items():
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rt", encoding="utf-8") as f:
                lines[lang] = [line.rstrip("\n").rstrip("\r") for line in f]
        except (OSError, UnicodeDecodeError, EOFError) as e:
            raise DataError(f"cannot read {path}: {e}") from e
    if len(lines["de"]) != len(lines["en"]):
        raise DataError(f"{paths['de']} has {len(lines['de'])} lines but {paths['en']} has "
                        f"{len(lines['en'])}: the files are not aligned")
    return lines["de"], lines["en"]


def tokenized_multi30k(data_dir: str | os.PathLike | None, cache: str | os.PathLike | None = None,
                       splits=tuple(MULTI30K_SPLITS)) -> dict[str, dict[str, list]]:
    """split -> {"de": token lists, "en": token lists, "en_raw": English sentences}, with
    lowercased spaCy tokens (the raw English is what standard sacreBLEU scores against).

    With `cache`, tokens are read from that JSON(.gz) file when it exists; splits it lacks
    are computed from `data_dir` and added to it (a cache written by a one-split command
    serves a training later). A machine without spaCy trains from the cache."""
    cached: dict = {}
    if cache is not None and Path(cache).is_file():
        with gzip.open(cache, "rt", encoding="utf-8") as f:
            cached = json.load(f)
    missing = [s for s in splits if s not in cached]
    if not missing:
        return {s: cached[s] for s in splits}
    if data_dir is None:
        raise DataError("no --data-dir given and no token cache found" if not cached else
                        f"token cache {cache} lacks splits {missing} and no --data-dir was given to add them")
    from .text import tokenize

    for s in missing:
        de, en = read_multi30k(data_dir, s)
        cached[s] = {"de": [tokenize(x, "spacy:de") for x in de],
                     "en": [tokenize(x, "spacy:en") for x in en], "en_raw": en}
    if cache is not None:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{cache}.tmp{os.getpid()}")
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            json.dump(cached, f)
        os.replace(tmp, cache)
    return {s: cached[s] for s in splits}


def generate_reversal(n: int, min_len: int, max_len: int, seed: int, alphabet: str) -> list[list[str]]:
    """`n` random character sequences, lengths uniform in [min_len, max_len], seeded.

    No leading, trailing or doubled spaces: the tokenizer removes those from typed text,
    so the model never needs to learn them."""
    rng = random.Random(seed)
    non_space = alphabet.replace(" ", "")
    seqs = []
    for _ in range(n):
        length = rng.randint(min_len, max_len)
        seq = []
        for i in range(length):
            ch = rng.choice(alphabet)
            if ch == " " and (i == 0 or i == length - 1 or seq[-1] == " "):
                ch = rng.choice(non_space)
            seq.append(ch)
        seqs.append(seq)
    return seqs


@dataclass
class Batch:
    src: torch.Tensor        # [B, S] source ids, padded with PAD_ID
    src_lens: torch.Tensor   # [B] true source lengths (CPU, int64)
    tgt: torch.Tensor        # [B, T] <sos> y1 .. yn <eos>, padded
    index: list[int]         # positions of these examples in the dataset

    def to(self, device) -> "Batch":
        return Batch(self.src.to(device, non_blocking=True), self.src_lens,
                     self.tgt.to(device, non_blocking=True), self.index)

    @property
    def n_target_tokens(self) -> int:
        """Predicted tokens (everything after <sos> that is not padding)."""
        return int((self.tgt[:, 1:] != PAD_ID).sum())

    def split(self, parts: int) -> list["Batch"]:
        """`parts` batches of every parts-th row (rows i, i + parts, ...: a length-sorted batch
        splits into parts of about equal work), each cut to its own longest source and target.
        Fewer parts when the batch has fewer rows."""
        out = []
        for i in range(min(parts, self.src.size(0))):
            rows = torch.arange(i, self.src.size(0), parts)
            lens = self.src_lens[rows]
            tgt = self.tgt.index_select(0, rows.to(self.tgt.device))
            tgt_len = int((tgt != PAD_ID).sum(1).max())
            out.append(Batch(self.src.index_select(0, rows.to(self.src.device))[:, : int(lens.max())], lens,
                             tgt[:, :tgt_len], [self.index[r] for r in rows.tolist()]))
        return out


def pad_ids(seqs: list[list[int]], pad: int = PAD_ID) -> torch.Tensor:
    longest = max(len(s) for s in seqs)
    out = torch.full((len(seqs), longest), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def collate(src: list[list[int]], tgt: list[list[int]], index: list[int]) -> Batch:
    """Source ids without specials; target ids get <sos> ... <eos>."""
    src = [s if s else [PAD_ID] for s in src]  # an empty source still needs one position
    return Batch(pad_ids(src), torch.tensor([len(s) for s in src], dtype=torch.long),
                 pad_ids([[SOS_ID, *t, EOS_ID] for t in tgt]), index)


def bucketed_batches(lengths: list[int], batch_size: int, shuffle: bool, seed: int = 0,
                     bucket_factor: int = 50) -> list[list[int]]:
    """Index lists grouped by length so batches carry little padding.

    Shuffled: examples are shuffled, cut into pools of `bucket_factor` batches, sorted by
    length inside each pool, batched, and the batch order shuffled (the order depends on
    `seed` only, so a resumed run sees the same batches)."""
    idx = list(range(len(lengths)))
    if not shuffle:
        idx.sort(key=lambda i: lengths[i])
        return [idx[i: i + batch_size] for i in range(0, len(idx), batch_size)]
    rng = random.Random(seed)
    rng.shuffle(idx)
    pool = batch_size * bucket_factor
    batches = []
    for p in range(0, len(idx), pool):
        chunk = sorted(idx[p: p + pool], key=lambda i: lengths[i])
        batches += [chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


class PairDataset:
    """Encoded (source ids, target ids) pairs with length-bucketed batching."""

    def __init__(self, src: list[list[int]], tgt: list[list[int]]):
        assert len(src) == len(tgt)
        self.src, self.tgt = src, tgt

    def __len__(self) -> int:
        return len(self.src)

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0):
        for index in bucketed_batches([len(s) for s in self.src], batch_size, shuffle, seed):
            yield collate([self.src[i] for i in index], [self.tgt[i] for i in index], index)
