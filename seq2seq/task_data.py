"""The data a training run reads: vocabularies, tokenizers, validation set, and the
training examples of each epoch (fixed for translation, fresh every epoch for reversal)."""
from __future__ import annotations

from dataclasses import dataclass

from .config import TrainConfig
from .data import MULTI30K_SPLITS, PairDataset, generate_reversal, tokenized_multi30k
from .presets import REVERSE_VAL_SEED_OFFSET
from .subword import BytePairEncoder, learn_merges
from .text import REVERSE_ALPHABET
from .vocab import Vocab

SAMPLE_INPUT = {"translate": "Ein Mann fährt mit dem Fahrrad die Straße entlang.",
                "reverse": "hello world 2026"}


@dataclass
class TaskData:
    src_vocab: Vocab
    tgt_vocab: Vocab
    tokenizers: dict
    val: PairDataset
    val_text: dict | None          # translation: tokens and raw references for BLEU
    train_fixed: PairDataset | None  # translation: the fixed training set
    data_note: str

    def train_for_epoch(self, cfg: TrainConfig, epoch: int) -> PairDataset:
        if self.train_fixed is not None:
            return self.train_fixed
        # reversal: fresh sequences every epoch, seeded by (seed, epoch)
        seqs = generate_reversal(cfg.reverse_train_size, cfg.reverse_min_len, cfg.reverse_max_len,
                                 cfg.seed * 1000 + epoch, REVERSE_ALPHABET)
        ids = [self.src_vocab.encode(s) for s in seqs]
        return PairDataset(ids, [list(reversed(s)) for s in ids])


def source_vocab(train_de: list[list[str]], cfg: TrainConfig) -> Vocab:
    """Whole words seen min_freq times; or, with cfg.src_bpe merges, every byte-pair piece
    of the training words (pieces come from merges of pairs seen at least twice, so the
    word cut has nothing left to remove)."""
    if not cfg.src_bpe:
        return Vocab.build(train_de, cfg.min_freq)
    merges = learn_merges(train_de, cfg.src_bpe)
    pieces = BytePairEncoder(merges)
    built = Vocab.build((pieces.segment(s) for s in train_de), 1)
    return Vocab(built.itos, merges)


def load_task_data(cfg: TrainConfig, data_dir: str | None, cache: str | None) -> TaskData:
    if cfg.task == "reverse":
        vocab = Vocab.from_alphabet(REVERSE_ALPHABET)
        seqs = generate_reversal(cfg.reverse_val_size, cfg.reverse_min_len, cfg.reverse_max_len,
                                 cfg.seed + REVERSE_VAL_SEED_OFFSET, REVERSE_ALPHABET)
        ids = [vocab.encode(s) for s in seqs]
        note = (f"generated reversal sequences over {REVERSE_ALPHABET!r}, lengths "
                f"{cfg.reverse_min_len}-{cfg.reverse_max_len}, {cfg.reverse_train_size} fresh per epoch")
        return TaskData(vocab, vocab, {"src": "chars", "tgt": "chars"},
                        PairDataset(ids, [list(reversed(s)) for s in ids]), None, None, note)
    data = tokenized_multi30k(data_dir, cache, splits=tuple(MULTI30K_SPLITS))
    src_vocab = source_vocab(data["train"]["de"], cfg)
    tgt_vocab = Vocab.build(data["train"]["en"], cfg.min_freq)

    def encode(split):
        return PairDataset([src_vocab.encode_words(s) for s in data[split]["de"]],
                           [tgt_vocab.encode(t) for t in data[split]["en"]])

    source = (f"source in byte-pair pieces ({cfg.src_bpe} merges learned on train, every piece kept), "
              if cfg.src_bpe else "")
    note = (f"Multi30k task 1 de->en (train 29000 / val 1014 / test2016 1000), lowercased spaCy "
            f"blank tokenizers, {source}vocab min_freq {cfg.min_freq}{' (target)' if cfg.src_bpe else ''}")
    return TaskData(src_vocab, tgt_vocab, {"src": "spacy:de", "tgt": "spacy:en"}, encode("val"),
                    data, encode("train"), note)
