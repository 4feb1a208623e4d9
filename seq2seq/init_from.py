"""Start a training run from a trained checkpoint's weights (`--init-from CKPT`).

A continuation ("fine-tune") of a converged model: same architecture, sizes and
vocabularies, fresh optimizer and schedule, its own seed, so its data order and dropout
masks differ from the parent's. Its card says where it started (`provenance.init_from`:
the parent's name, weights sha256, epochs, wall seconds and machine), so the cost of the
whole model is on record, not only the last stage's."""
from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import load_checkpoint, read_card, vocab_file_bytes
from .config import ModelConfig
from .errors import Seq2SeqError
from .snapshots import best_row

ARCH_FIELDS = ("arch", "emb_dim", "hidden_dim", "n_layers", "attn_dim", "tie_embeddings",
               "src_vocab_size", "tgt_vocab_size")      # what must match for the weights to fit
PARENT_PROVENANCE = ("trained_at", "wall_seconds", "epochs_run", "stopped", "cpu_model", "device_name",
                     "cpu_threads", "git_commit", "seed", "mixed_precision")


def model_config_from(path: str | Path, dropout: float | None = None) -> ModelConfig:
    """The parent's model config (the sizes a continuation must keep); dropout may change."""
    cfg = read_card(path).model_config
    if dropout is not None:
        cfg.dropout = dropout
    return cfg


def parent_summary(card, best_epoch: int | None = None) -> dict:
    """What a continuation's card records of the checkpoint it started from (with, nested,
    what that one continued from)."""
    prov = card.provenance
    out = {"name": card.name, "weights_sha256": card.weights_sha256,
           **{k: prov[k] for k in PARENT_PROVENANCE if k in prov}}
    if best_epoch is not None:
        out["best_epoch"] = best_epoch
    if "init_from" in prov:
        out["init_from"] = prov["init_from"]
    return out


def chain(entry: dict | None) -> list[dict]:
    """An `init_from` record and the ones nested in it: the runs before a continuation, latest first."""
    out = []
    while entry:
        out.append(entry)
        entry = entry.get("init_from")
    return out


def lineage(card) -> list[dict]:
    """The training runs behind a checkpoint's weights, latest first: its own provenance (with
    its weights_sha256), then each run it continued from, as its card records them."""
    return [dict(card.provenance, weights_sha256=card.weights_sha256), *chain(card.provenance.get("init_from"))]


def model_differences(theirs: ModelConfig, ours: ModelConfig) -> list[str]:
    """The fields that keep one model's weights from fitting the other, as "field theirs (ours)"."""
    a, b = theirs.to_dict(), ours.to_dict()
    return [f"{k} {a.get(k)} (this run's {b.get(k)})" for k in ARCH_FIELDS if a.get(k) != b.get(k)]


def load_initial_weights(model: torch.nn.Module, model_cfg: ModelConfig, src_vocab, tgt_vocab,
                         path: str | Path) -> dict:
    """Copy a verified checkpoint's weights into `model`; returns the parent's summary.
    Refuses a parent whose architecture, sizes or vocabularies differ from this run's."""
    parent = load_checkpoint(path)
    differ = model_differences(parent.card.model_config, model_cfg)
    if differ:
        raise Seq2SeqError(f"--init-from {path}: the checkpoint's model differs from this run's: {', '.join(differ)} "
                           f"(other vocabulary settings or data?)")
    if vocab_file_bytes(parent.src_vocab, parent.tgt_vocab) != vocab_file_bytes(src_vocab, tgt_vocab):
        raise Seq2SeqError(f"--init-from {path}: its vocabularies differ from the ones this run built "
                           f"(other --min-freq, --src-bpe or data?)")
    with torch.no_grad():
        model.load_state_dict(parent.model.state_dict())
    return parent_summary(parent.card, best_row(parent.card.history).get("epoch"))
