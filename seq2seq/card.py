"""The checkpoint card (`card.json`): one typed record of what a checkpoint is, how it
was trained and what it measured. Every writer and reader of card.json goes through
`Card`: `Card.load(dir)` parses and validates, `card.save(dir)` writes atomically,
`Card.from_dict` / `to_dict` are the JSON round trip.

A card read from disk keeps fields this version does not know (`extra`) and writes
them back, so a re-save by older code loses nothing. For code that reads a card like
the JSON it is, `card["name"]` and `card.get("sample")` read the same fields."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .atomic import atomic_write_json
from .config import TASKS, ModelConfig, TrainConfig
from .errors import CheckpointError
from .text import TOKENIZERS

FORMAT_VERSION = 1
CARD = "card.json"
WEIGHTS, VOCAB = "model.safetensors", "vocab.json"
REQUIRED_PROVENANCE = ("device", "device_name", "torch_version", "git_commit", "trained_at",
                       "wall_seconds", "seed", "data")
WEIGHT_DTYPES = ("float32", "float16", "int8", "int4")


@dataclass
class Card:
    # what the checkpoint is and how it was made (written by training)
    name: str
    task: str
    tokenizers: dict                     # {"src": ..., "tgt": ...}, names from text.TOKENIZERS
    teacher_forcing: dict                # the policy, its description and the coin rule
    metrics: dict                        # per split (translation) or by length (reversal)
    history: list                        # one row per epoch
    provenance: dict                     # device, CPU/GPU name, threads, wall seconds, ...
    description: str = ""
    train_config: dict | None = None     # TrainConfig.to_dict()
    stopped: str = ""                    # why training stopped
    sample: dict | None = None           # an input and the output recorded at save time
    snapshot: dict | None = None         # snapshots only: step, epoch, metric then (snapshots.py)
    # filled in by checkpoint.save_checkpoint
    format_version: int = FORMAT_VERSION
    arch: str = ""
    config: dict = field(default_factory=dict)     # ModelConfig.to_dict()
    params: int = 0
    weights_dtype: str = "float32"
    files: dict = field(default_factory=dict)      # file name -> {"sha256", "bytes"}
    weights_sha256: str = ""
    extra: dict = field(default_factory=dict)      # fields this version does not know

    # ---------------------------------------------------------------- typed views
    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.config)

    @property
    def training(self) -> TrainConfig | None:
        return TrainConfig.from_dict(self.train_config) if self.train_config else None

    def split_metrics(self, split: str) -> dict:
        """metrics[split] or {} (e.g. a card trained without final evaluation)."""
        m = self.metrics.get(split)
        return m if isinstance(m, dict) else {}

    def shipped_bytes(self) -> int:
        """Bytes of the files the card lists (what the checkpoint costs on disk); a file
        shared with the parent checkpoint (a snapshot's vocabulary, "in") is not counted."""
        return sum(int(f.get("bytes", 0)) for f in self.files.values() if isinstance(f, dict) and not f.get("in"))

    # ---------------------------------------------------------------- JSON round trip
    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        d = {k: v for k, v in d.items() if v is not None or k in ("train_config", "sample")}
        if d.get("snapshot") is None:
            d.pop("snapshot", None)
        return {**self.extra, **json.loads(json.dumps(d))}

    @classmethod
    def from_dict(cls, data: Any, where: str = CARD) -> "Card":
        """Validate the JSON object of a card and build it; CheckpointError names `where`."""
        if not isinstance(data, dict):
            raise CheckpointError(f"{where}: expected a JSON object")
        version = data.get("format_version")
        if not isinstance(version, int):
            raise CheckpointError(f"{where}: no integer format_version")
        if version > FORMAT_VERSION:
            raise CheckpointError(f"{where}: format_version {version} is newer than this code "
                                  f"reads ({FORMAT_VERSION}); update attention-lab")
        known = {f.name for f in fields(cls)} - {"extra"}
        required = ("format_version", "name", "task", "arch", "config", "params", "teacher_forcing",
                    "metrics", "history", "provenance", "files", "tokenizers")
        missing = [k for k in required if k not in data]
        if missing:
            raise CheckpointError(f"{where}: missing fields {missing}")
        card = cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})
        card.validate(where)
        return card

    def validate(self, where: str = CARD) -> None:
        """Types and cross-field rules; raises CheckpointError naming `where`."""
        types = {"name": str, "task": str, "arch": str, "config": dict, "params": int, "teacher_forcing": dict,
                 "metrics": dict, "history": list, "provenance": dict, "files": dict, "tokenizers": dict}
        wrong = [f"{k} (expected {t.__name__})" for k, t in types.items() if not isinstance(getattr(self, k), t)]
        if wrong:
            raise CheckpointError(f"{where}: fields of the wrong type: {', '.join(wrong)}")
        if self.task not in TASKS:
            raise CheckpointError(f"{where}: unknown task {self.task!r}")
        if set(self.tokenizers) != {"src", "tgt"} or not all(t in TOKENIZERS for t in self.tokenizers.values()):
            raise CheckpointError(f"{where}: tokenizers must name src and tgt from {TOKENIZERS}")
        prov_missing = [k for k in REQUIRED_PROVENANCE if k not in self.provenance]
        if prov_missing:
            raise CheckpointError(f"{where}: provenance lacks {prov_missing}")
        if self.weights_dtype not in WEIGHT_DTYPES:
            raise CheckpointError(f"{where}: weights_dtype {self.weights_dtype!r} is not one of {WEIGHT_DTYPES}")
        for fname in (WEIGHTS, VOCAB):
            entry = self.files.get(fname)
            if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) \
                    or not isinstance(entry.get("bytes", 0), int):
                raise CheckpointError(f"{where}: no sha256 recorded for {fname}")
        try:
            ModelConfig.from_dict(self.config)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{where}: config cannot build a model: {e}") from e

    # ---------------------------------------------------------------- disk
    @classmethod
    def load(cls, ckpt_dir: str | os.PathLike) -> "Card":
        """Parse and validate DIR/card.json (cheap: no weights read)."""
        d = Path(ckpt_dir)
        path = d / CARD
        if not d.is_dir():
            raise CheckpointError(f"{d}: checkpoint directory not found")
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (a checkpoint directory needs {CARD}, {WEIGHTS} and {VOCAB})")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: not valid JSON ({e}); the file is corrupt or truncated") from e
        return cls.from_dict(data, str(path))

    def save(self, ckpt_dir: str | os.PathLike) -> Path:
        """Write DIR/card.json atomically (the other files are the caller's)."""
        self.validate(str(Path(ckpt_dir) / CARD))
        path = Path(ckpt_dir) / CARD
        atomic_write_json(path, self.to_dict())
        return path

    def with_file(self, ckpt_dir: str | os.PathLike, name: str) -> "Card":
        """This card with DIR/NAME's sha256 and size recorded in `files` (a file added
        beside the checkpoint, such as corpus statistics)."""
        from .atomic import sha256_file
        path = Path(ckpt_dir) / name
        files = dict(self.files, **{name: {"sha256": sha256_file(path), "bytes": path.stat().st_size}})
        return Card(**{**{f.name: getattr(self, f.name) for f in fields(self)}, "files": files})

    # ---------------------------------------------------------------- read like the JSON
    def __getitem__(self, key: str):
        if key in self.extra:
            return self.extra[key]
        if key in {f.name for f in fields(self)} - {"extra"}:
            return getattr(self, key)
        raise KeyError(key)

    def get(self, key: str, default=None):
        try:
            value = self[key]
        except KeyError:
            return default
        return default if value is None else value

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None


__all__ = ["Card", "CARD", "FORMAT_VERSION", "REQUIRED_PROVENANCE", "VOCAB", "WEIGHTS", "WEIGHT_DTYPES"]
