"""Configuration dataclasses: everything needed to rebuild a model or rerun training.

They are plain dataclasses so they round-trip through the checkpoint card (JSON).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields

from .presets import ARCHS, TASKS, TRAIN_SEED


def _from_dict(cls, data: dict):
    """Build a dataclass from a dict, refusing unknown keys (a newer card) loudly."""
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**data)


@dataclass
class ModelConfig:
    arch: str = "bahdanau"
    src_vocab_size: int = 0
    tgt_vocab_size: int = 0
    emb_dim: int = 256
    hidden_dim: int = 512
    n_layers: int = 1           # encoder and decoder layers (lstm uses 2 by default)
    dropout: float = 0.3
    attn_dim: int = 256          # additive-attention projection size (bahdanau)
    tie_embeddings: bool = False  # output projection shares the target embedding matrix
    pad_id: int = 0
    max_src_len: int = 100       # longer inputs are truncated (and the caller is told)
    max_out_len: int = 100       # decoding stops here if <eos> never comes

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")

    @property
    def has_attention(self) -> bool:
        return self.arch in ("bahdanau", "luong")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        return _from_dict(cls, data)


# "token": a coin for every sequence at every step (the engine's rule, Bengio et al. 2015);
# "step": one coin per step shared by the whole batch (the PyTorch tutorials' rule).
COIN_GRANULARITIES = ("token", "step")


@dataclass
class TeacherForcingConfig:
    """Teacher-forcing policy. See seq2seq.schedules for the formulas."""
    kind: str = "constant"       # constant | linear | exponential | inverse_sigmoid
    ratio: float = 1.0           # constant: probability of feeding the gold token
    k: float = 1.0               # linear: start value; exponential: base; inverse_sigmoid: k
    c: float = 0.0               # linear: decrease per training batch
    eps_min: float = 0.0         # linear: floor
    coin: str = "token"          # token: one coin per sequence and step; step: one per step for the batch

    def __post_init__(self):
        if self.coin not in COIN_GRANULARITIES:
            raise ValueError(f"teacher-forcing coin {self.coin!r}; expected one of {COIN_GRANULARITIES}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TeacherForcingConfig":
        return _from_dict(cls, data)


@dataclass
class TrainConfig:
    task: str = "translate"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    lr_decay: float = 1.0         # lr times this after an epoch without validation improvement (1: off)
    weight_decay: float = 0.0
    clip: float = 1.0
    label_smoothing: float = 0.0
    patience: int = 3             # early stopping: epochs without validation improvement
    seed: int = TRAIN_SEED
    min_freq: int = 2             # vocabulary cut (translation; words only)
    src_bpe: int = 0              # translation: byte-pair merges for the source side (0: whole words)
    # reversal task
    reverse_min_len: int = 1
    reverse_max_len: int = 20
    reverse_train_size: int = 20000   # fresh sequences per epoch
    reverse_val_size: int = 1000
    reverse_eval_n: int = 200     # fresh sequences per length for the card's exact match by length 1-60
    max_minutes: float = 0.0      # stop after this much wall time (0: no limit)
    eval_beam: int = 1            # translation: the beam width tried beside greedy for the card's final metrics
    amp: bool = True              # mixed precision (bf16) when on CUDA
    half_weights: bool = False    # store weights as float16 in model.safetensors
    fast_path: bool = True        # Seq2Seq.loss's fast path (False: the plain step loop, same values)
    cpu_bf16: bool = False        # fast path's matmuls in bf16 on CPUs with native bf16 (elsewhere float32)
    ema_decay: float = 0.0        # validate, keep and ship an exponential moving average of the weights (0: off)
    streams: int = 0              # CPU: each batch split across this many threads (streams.py; 0: one per thread)
    init_from: str = ""           # start from this checkpoint's weights (init_from.py; "": random initialization)
    teacher_forcing: TeacherForcingConfig = field(default_factory=TeacherForcingConfig)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if isinstance(self.teacher_forcing, dict):
            self.teacher_forcing = TeacherForcingConfig.from_dict(self.teacher_forcing)
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"the weight-averaging decay must be in [0, 1), got {self.ema_decay}")
        if self.reverse_eval_n < 1:
            raise ValueError(f"the card's evaluation needs at least 1 sequence per length, got {self.reverse_eval_n}")
        if self.streams < 0:
            raise ValueError(f"streams must be 0 (one per CPU thread) or more, got {self.streams}")
        if self.cpu_bf16 and not self.fast_path:
            raise ValueError("bf16 training on the CPU is a mode of the fast path: drop the plain loop or cpu_bf16")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        return _from_dict(cls, data)


@dataclass(frozen=True)
class Decoding:
    """How a corpus is decoded, as a card's metrics record it: beam width (1 = greedy),
    beam search's length exponent, its coverage penalty weight (GNMT's beta; attention
    models), and whether <unk> may be output."""
    beam: int = 1
    alpha: float = 1.0
    no_unk: bool = False
    coverage: float = 0.0

    def __post_init__(self):
        if self.beam < 1 or self.alpha < 0 or self.coverage < 0:
            raise ValueError(f"beam must be >= 1, alpha and coverage >= 0, got beam {self.beam}, "
                             f"alpha {self.alpha}, coverage {self.coverage}")
        if self.beam == 1:                  # width 1 is greedy whatever the exponent and the penalty
            object.__setattr__(self, "alpha", 1.0)
            object.__setattr__(self, "coverage", 0.0)

    @property
    def key(self) -> str:
        """by_decoding's name: "beam5", "beam10-alpha0.8", "beam10-alpha0.8-cov0.2-nounk"."""
        return (f"beam{self.beam}" + ("" if self.alpha == 1.0 else f"-alpha{self.alpha:g}")
                + (f"-cov{self.coverage:g}" if self.coverage else "") + ("-nounk" if self.no_unk else ""))

    @property
    def label(self) -> str:
        """For people: "greedy", "beam 10", "beam 10, α 0.8, coverage 0.2, no <unk>"."""
        parts = ["greedy" if self.beam == 1 else f"beam {self.beam}"]
        if self.alpha != 1.0:
            parts.append(f"α {self.alpha:g}")
        if self.coverage:
            parts.append(f"coverage {self.coverage:g}")
        if self.no_unk:
            parts.append("no <unk>")
        return ", ".join(parts)

    def card_entry(self) -> dict:
        """metrics[SPLIT]["decoding"]: no_unk and coverage only where set (older cards have
        no such keys)."""
        return {"beam": self.beam, "alpha": self.alpha if self.beam > 1 else None,
                **({"coverage": self.coverage} if self.coverage else {}),
                **({"no_unk": True} if self.no_unk else {})}

    @classmethod
    def from_card(cls, entry: dict | None) -> "Decoding":
        entry = entry or {}
        return cls(int(entry.get("beam") or 1), float(entry.get("alpha") or 1.0), bool(entry.get("no_unk", False)),
                   float(entry.get("coverage") or 0.0))

    @classmethod
    def from_key(cls, key: str) -> "Decoding":
        """The inverse of `key`: "beam10-alpha0.8-cov0.2-nounk" -> Decoding(10, 0.8, True, 0.2).
        ValueError on anything else."""
        m = re.fullmatch(r"beam(\d+)(?:-alpha([\d.]+))?(?:-cov([\d.]+))?(-nounk)?", key)
        if m is None:
            raise ValueError(f"not a decoding key: {key!r}")
        return cls(int(m[1]), float(m[2] or 1.0), bool(m[4]), float(m[3] or 0.0))

    @classmethod
    def parse_list(cls, text: str) -> list["Decoding"]:
        """"1,5,10:0.8,10:0.8:cov0.2:no-unk" -> one Decoding each: beam, beam:alpha, then
        optionally :covB (coverage weight B) and :no-unk to forbid <unk>. ValueError on
        anything else."""
        out = []
        for part in text.split(","):
            fields = part.strip().split(":")
            no_unk = fields[-1] == "no-unk"
            if no_unk:
                fields.pop()
            coverage = 0.0
            if len(fields) > 1 and fields[-1].startswith("cov"):
                coverage = float(fields.pop()[3:])
            if not 1 <= len(fields) <= 2:
                raise ValueError(f"{part.strip()!r}: expected beam or beam:alpha, optionally :covB and :no-unk")
            out.append(cls(int(fields[0]), float(fields[1]) if len(fields) == 2 else 1.0, no_unk, coverage))
        return out
