"""Checkpoints: a directory with `model.safetensors`, `vocab.json` and `card.json`.

Never pickle: weights are safetensors (a JSON header and raw tensor bytes, no code),
everything else is JSON. Loading verifies the card, the sha256 of every file the card
names, and that the tensors fit the model the card describes; anything off raises
CheckpointError with a message that names the file and what is wrong.

A save builds the whole new checkpoint in a hidden sibling directory (`.NAME.tmpPID`),
then swaps directories with two renames (old one aside, new one in). A reader, or a run
killed at any moment, sees the complete previous checkpoint, the complete new one, or
(between the two renames, microseconds) none; never a mix of files from two saves.
Hidden directories are not checkpoints: list_checkpoints skips them, and the next save
of the same checkpoint removes the ones a killed save left behind."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import (atomic_write_bytes, atomic_write_json, atomic_write_with, fsync_path, is_temporary,
                     sha256_file, swap_directory_into_place, temporary_sibling)
from .card import CARD, FORMAT_VERSION, VOCAB, WEIGHTS, Card
from .config import TrainConfig
from .errors import CheckpointError
from .models import Seq2Seq, build_model, count_params
from .vocab import Vocab

# name in the card -> what save_weights stores; int4 is packed two values to a byte (quantize_int4)
WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int8": torch.int8, "int4": torch.uint8}


def unique_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """state_dict without the second name of tied tensors (safetensors refuses shared memory)."""
    out, seen = {}, set()
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if key in seen:
            continue
        seen.add(key)
        out[name] = tensor
    return out


INT8_SCALE_SUFFIX = ".int8_scale"   # int8 weights: per-row float32 scale beside each matrix


def _quantize_matrices(tensors: dict[str, torch.Tensor], quantize_rows) -> dict[str, torch.Tensor]:
    """Every matrix through `quantize_rows(rows [R, C]) -> (stored, scale)` (the stored tensor
    under the matrix's name, the scale under name + its suffix); vectors float16; integer
    tensors unchanged."""
    out = {}
    for name, t in tensors.items():
        t = t.detach().cpu()
        if not t.is_floating_point():
            out[name] = t
        elif t.dim() >= 2:
            stored, (suffix, scale) = quantize_rows(t.float().reshape(t.size(0), -1))
            out[name] = stored.reshape(t.shape) if stored.dtype == torch.int8 else stored
            out[name + suffix] = scale
        else:
            out[name] = t.to(torch.float16)
    return out


def _int8_rows(rows: torch.Tensor):
    scale = (rows.abs().amax(1, keepdim=True) / 127.0).clamp_min(1e-12)            # [R, 1]
    return torch.round(rows / scale).clamp(-127, 127).to(torch.int8), (INT8_SCALE_SUFFIX, scale)


def quantize_int8(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Matrices as int8 with one float32 scale per row (max |row| / 127); vectors float16.
    The round trip loses at most half a step (scale / 2) per value."""
    return _quantize_matrices(tensors, _int8_rows)


def dequantize_int8(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of quantize_int8: float32 tensors under the model's names."""
    out = {}
    for name, t in tensors.items():
        if name.endswith(INT8_SCALE_SUFFIX):
            continue
        scale = tensors.get(name + INT8_SCALE_SUFFIX)
        if t.dtype == torch.int8 and scale is not None:
            out[name] = (t.float().reshape(t.size(0), -1) * scale.float()).reshape(t.shape)
        else:
            out[name] = t.float() if t.is_floating_point() else t
    return out


INT4_SCALE_SUFFIX = ".int4_scale"   # int4 weights: a float16 scale per group of INT4_GROUP values of a row
INT4_GROUP = 16                     # measured on translate-bahdanau's validation BLEU (greedy): float16
                                    # 36.72, int8 per row 36.67, int4 groups of 16: 36.46, of 32: 35.78


def _int4_rows(rows: torch.Tensor):
    padded = F.pad(rows, (0, -rows.size(1) % INT4_GROUP))                           # [R, Cp]
    groups = padded.reshape(rows.size(0), -1, INT4_GROUP)                           # [R, Cp/G, G]
    # the scale as stored (float16, never 0) is the one the values are rounded against
    scale = (groups.abs().amax(-1, keepdim=True) / 7.0).to(torch.float16).float().clamp_min(2.0 ** -14)
    q = (torch.round(groups / scale).clamp(-7, 7).to(torch.int16) + 8).reshape(rows.size(0), -1)   # 1..15
    packed = (q[:, 0::2] | (q[:, 1::2] << 4)).to(torch.uint8)                      # [R, Cp/2]
    return packed, (INT4_SCALE_SUFFIX, scale.squeeze(-1).to(torch.float16))         # scale [R, Cp/G]


def quantize_int4(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Matrices as 4-bit integers in -7..7, two to a byte (uint8 [R, ceil(C/G)*G/2], the
    first value in the low nibble), with one float16 scale per group of INT4_GROUP values
    of a row (max |group| / 7); vectors float16. Half the bytes of int8 for a series of
    snapshots; the round trip loses at most half a step (scale / 2) per value."""
    return _quantize_matrices(tensors, _int4_rows)


def dequantize_int4(tensors: dict[str, torch.Tensor], shapes: dict[str, tuple]) -> dict[str, torch.Tensor]:
    """The inverse of quantize_int4: float32 tensors under the model's names; `shapes`
    gives each packed matrix's shape (the model's own)."""
    out = {}
    for name, t in tensors.items():
        if name.endswith(INT4_SCALE_SUFFIX):
            continue
        scale = tensors.get(name + INT4_SCALE_SUFFIX)
        if t.dtype == torch.uint8 and scale is not None and name in shapes:
            packed = t.to(torch.int16)
            q = torch.stack([packed & 15, packed >> 4], -1).reshape(t.size(0), -1) - 8      # [R, Cp]
            groups = q.float().reshape(t.size(0), -1, INT4_GROUP) * scale.float().unsqueeze(-1)
            shape = tuple(shapes[name])
            cols = int(torch.tensor(shape[1:]).prod()) if len(shape) > 1 else 1
            if groups.numel() // t.size(0) < cols or t.size(0) != shape[0]:
                raise CheckpointError(f"int4 tensor {name}: {tuple(t.shape)} can't hold a {shape} matrix")
            out[name] = groups.reshape(t.size(0), -1)[:, :cols].reshape(shape).contiguous()
        else:
            out[name] = t.float() if t.is_floating_point() else t
    return out


def save_weights(model: torch.nn.Module, path: Path, dtype: torch.dtype = torch.float32) -> None:
    """dtype float32, float16, int8 (matrices int8 with a per-row scale, see quantize_int8)
    or uint8 for int4 (packed, with a scale per group of a row, see quantize_int4)."""
    if dtype in (torch.int8, torch.uint8):
        quantize = quantize_int8 if dtype == torch.int8 else quantize_int4
        tensors = {k: v.contiguous() for k, v in quantize(unique_state_dict(model)).items()}
    else:
        tensors = {k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
                   for k, v in unique_state_dict(model).items()}
    atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_provenance(device: torch.device) -> dict:
    if device.type == "cuda":
        return {"device": "cuda", "device_name": torch.cuda.get_device_name(device)}
    import platform
    return {"device": "cpu", "device_name": platform.processor() or platform.machine() or "cpu",
            "cpu_threads": torch.get_num_threads()}


def vocab_file_bytes(src_vocab: Vocab, tgt_vocab: Vocab) -> bytes:
    """vocab.json's exact content (what a shared vocabulary's sha256 is taken of). A source
    vocabulary of subword pieces adds its merges, in order, as "left right" strings
    (pieces never hold spaces); word vocabularies write exactly what they always did."""
    content = {"src": src_vocab.to_list(), "tgt": tgt_vocab.to_list()}
    if src_vocab.merges:
        content["src_merges"] = [f"{a} {b}" for a, b in src_vocab.merges]
    return (json.dumps(content, indent=1, ensure_ascii=False) + "\n").encode()


def _shared_folder(entry: dict, where: Path) -> Path | None:
    """The folder a card's vocab entry says holds the shared vocab.json ("in": "../.."), or
    None when the vocabulary is the checkpoint's own. Only parent folders are allowed."""
    shared = entry.get("in") if isinstance(entry, dict) else None
    if not shared:
        return None
    parts = Path(shared).parts
    if not parts or any(part != ".." for part in parts):
        raise CheckpointError(f"{where / CARD}: the vocabulary may only be shared with a parent folder, "
                              f"not {shared!r}")
    return where / shared


def save_checkpoint(out_dir: str | os.PathLike, model: Seq2Seq, src_vocab: Vocab, tgt_vocab: Vocab,
                    card: Card | dict, half: bool = False, weights_dtype: str | None = None,
                    shared_vocab: str | None = None) -> Card:
    """Write weights, vocabularies and card into `out_dir`; returns the card written.

    `card` holds the descriptive fields (name, task, metrics, history, provenance, ...),
    as a Card or a dict of them; format, config, params and file hashes are filled in
    here. The directory is replaced as a whole (see the module docstring); other files
    in it are carried over. `shared_vocab` ("../.." for a snapshot): no vocab.json of its
    own; the card records the sha256 of the one in that parent folder, which loading
    verifies like any file (the same vocabulary over a series of snapshots, stored once)."""
    out = Path(out_dir)
    if out.is_symlink():
        out = out.resolve()         # swap the directory the link points at, keep the link
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is not a directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out)
    tmp = temporary_sibling(out)
    tmp.mkdir()
    try:
        dtype = weights_dtype or ("float16" if half else "float32")
        card = _write_checkpoint_files(tmp, model, src_vocab, tgt_vocab, card, dtype, shared_vocab)
        if out.is_dir():
            _carry_over_extra_files(out, tmp, card)
        swap_directory_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)   # gone already unless the save failed
    return card


def _write_checkpoint_files(out: Path, model: Seq2Seq, src_vocab: Vocab, tgt_vocab: Vocab,
                            card: Card | dict, dtype: str, shared_vocab: str | None = None) -> Card:
    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weights dtype must be one of {sorted(WEIGHT_DTYPES)}, got {dtype!r}")
    save_weights(model, out / WEIGHTS, WEIGHT_DTYPES[dtype])
    vocab = vocab_file_bytes(src_vocab, tgt_vocab)
    if shared_vocab:
        vocab_entry = {"sha256": hashlib.sha256(vocab).hexdigest(), "bytes": len(vocab), "in": shared_vocab}
        _shared_folder(vocab_entry, out)                       # refuses anything but parent folders
    else:
        atomic_write_bytes(out / VOCAB, vocab)
        vocab_entry = {"sha256": sha256_file(out / VOCAB), "bytes": (out / VOCAB).stat().st_size}
    given = card.to_dict() if isinstance(card, Card) else dict(card)
    files = {name: entry for name, entry in (given.get("files") or {}).items() if name not in (WEIGHTS, VOCAB)}
    files.update({WEIGHTS: {"sha256": sha256_file(out / WEIGHTS), "bytes": (out / WEIGHTS).stat().st_size},
                  VOCAB: vocab_entry})
    given.update({"format_version": FORMAT_VERSION, "arch": model.cfg.arch, "config": model.cfg.to_dict(),
                  "params": count_params(model), "weights_dtype": dtype, "files": files,
                  "weights_sha256": files[WEIGHTS]["sha256"]})
    card = Card.from_dict(given, str(out / CARD))
    card.save(out)
    fsync_path(out)
    return card


def _remove_leftovers(out: Path) -> None:
    """Clear the hidden siblings a killed save of this checkpoint left behind (one writer
    at a time). A save killed between its two renames left the previous checkpoint aside:
    put it back first."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.tmp\d+(\.old)?")
    leftovers = sorted(p for p in out.parent.iterdir() if pattern.fullmatch(p.name))
    if not out.exists():
        aside = [p for p in leftovers if p.name.endswith(".old") and (p / CARD).is_file()]
        if aside:
            os.replace(aside[-1], out)
            leftovers.remove(aside[-1])
    for p in leftovers:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _carry_over_extra_files(old: Path, new: Path, card: Card) -> None:
    """Files someone put beside the checkpoint (notes, figures, snapshots) survive a
    re-save. A file that described the old weights (corpus statistics) comes along but
    is no longer listed in the new card, so readers that verify it refuse it until its
    command is run again."""
    for entry in old.iterdir():
        if entry.name in (WEIGHTS, VOCAB, CARD) or is_temporary(entry.name) or (new / entry.name).exists():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, new / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, new / entry.name, follow_symlinks=False)


@dataclass
class LoadedCheckpoint:
    path: Path
    card: Card
    model: Seq2Seq
    src_vocab: Vocab
    tgt_vocab: Vocab

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def task(self) -> str:
        return self.card.task

    @property
    def train_config(self) -> TrainConfig | None:
        return self.card.training


def read_card(ckpt_dir: str | os.PathLike) -> Card:
    """Parse and validate card.json alone (cheap: no weights read)."""
    return Card.load(ckpt_dir)


def verify_file(path: Path, card: Card) -> Path:
    """`path` exists and matches the size and sha256 the card records for its name."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    expected = card.files.get(path.name)
    if not isinstance(expected, dict):
        raise CheckpointError(f"{path}: the card records no sha256 for it")
    size = path.stat().st_size
    if "bytes" in expected and size != expected["bytes"]:
        raise CheckpointError(f"{path}: {size} bytes, the card records {expected['bytes']}: "
                              f"the file is truncated or was replaced")
    if sha256_file(path) != expected["sha256"]:
        raise CheckpointError(f"{path}: sha256 does not match the card: the file is corrupt, "
                              f"tampered with, or belongs to another checkpoint")
    return path


_verified = verify_file          # the name some callers use
_atomic_write_bytes = atomic_write_bytes


def load_checkpoint(ckpt_dir: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Verify and load a checkpoint directory; the model comes back in eval mode, float32."""
    d = Path(ckpt_dir)
    card = read_card(d)
    cfg = card.model_config
    vocab_path = verify_file((_shared_folder(card.files.get(VOCAB), d) or d) / VOCAB, card)
    try:
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
        merges = [m.split(" ") for m in vocab.get("src_merges", [])]
        src_vocab, tgt_vocab = Vocab(vocab["src"], merges), Vocab(vocab["tgt"])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{vocab_path}: not a valid vocabulary file ({e})") from e
    if (len(src_vocab), len(tgt_vocab)) != (cfg.src_vocab_size, cfg.tgt_vocab_size):
        raise CheckpointError(f"{vocab_path}: vocabulary sizes {len(src_vocab)}/{len(tgt_vocab)} "
                              f"do not match the card's config {cfg.src_vocab_size}/{cfg.tgt_vocab_size}")
    weights_path = verify_file(d / WEIGHTS, card)
    model = build_model(cfg)
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({e})") from e
    expected = unique_state_dict(model)
    if card.weights_dtype == "int8":
        tensors = dequantize_int8(tensors)
    elif card.weights_dtype == "int4":
        tensors = dequantize_int4(tensors, {k: tuple(v.shape) for k, v in expected.items()})
    if set(tensors) != set(expected):
        raise CheckpointError(f"{weights_path}: tensors do not match a {cfg.arch} model: "
                              f"missing {sorted(set(expected) - set(tensors))[:5]}, "
                              f"unexpected {sorted(set(tensors) - set(expected))[:5]}")
    for name, t in tensors.items():
        if tuple(t.shape) != tuple(expected[name].shape):
            raise CheckpointError(f"{weights_path}: tensor {name} has shape {tuple(t.shape)}, "
                                  f"the card's config needs {tuple(expected[name].shape)}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{weights_path}: tensor {name} holds NaN or infinity")
    with torch.no_grad():
        for name, t in tensors.items():
            expected[name].copy_(t)      # casts float16 storage to the model's float32
    model.to(device).eval()
    return LoadedCheckpoint(d, card, model, src_vocab, tgt_vocab)


def list_checkpoints(root: str | os.PathLike, task: str | None = None) -> list[Path]:
    """Checkpoint directories (those with a card.json) under `root`, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    # hidden directories are a save in progress, or what a killed one left behind
    for d in sorted(p for p in root.iterdir()
                    if p.is_dir() and not p.name.startswith(".") and (p / CARD).is_file()):
        if task is None or d.name.startswith(f"{task}-"):
            out.append(d)
    return out
