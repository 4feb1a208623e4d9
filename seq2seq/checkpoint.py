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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import TASKS, ModelConfig, TrainConfig
from .errors import CheckpointError
from .models import Seq2Seq, build_model, count_params
from .text import TOKENIZERS
from .vocab import Vocab

FORMAT_VERSION = 1
WEIGHTS, CARD, VOCAB = "model.safetensors", "card.json", "vocab.json"
REQUIRED_CARD_FIELDS = ("format_version", "name", "task", "arch", "config", "params",
                        "teacher_forcing", "metrics", "history", "provenance", "files",
                        "tokenizers")
CARD_FIELD_TYPES = {"name": str, "task": str, "arch": str, "config": dict, "params": int, "teacher_forcing": dict,
                    "metrics": dict, "history": list, "provenance": dict, "files": dict, "tokenizers": dict}
WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int8": torch.int8}
REQUIRED_PROVENANCE = ("device", "device_name", "torch_version", "git_commit", "trained_at",
                       "wall_seconds", "seed", "data")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    """Push a file (or a directory's entries) to disk, so a power cut after a rename
    cannot leave a name pointing at missing data."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return                      # e.g. directories on Windows: best effort
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj) -> None:
    _atomic_write_bytes(Path(path), (json.dumps(obj, indent=1, ensure_ascii=False) + "\n").encode())


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


def quantize_int8(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Matrices as int8 with one float32 scale per row (max |row| / 127); vectors float16.
    The round trip loses at most half a step (scale / 2) per value."""
    out = {}
    for name, t in tensors.items():
        t = t.detach().cpu()
        if not t.is_floating_point():
            out[name] = t
        elif t.dim() >= 2:
            rows = t.float().reshape(t.size(0), -1)                          # [R, C]
            scale = (rows.abs().amax(1, keepdim=True) / 127.0).clamp_min(1e-12)   # [R, 1]
            out[name] = torch.round(rows / scale).clamp(-127, 127).to(torch.int8).reshape(t.shape)
            out[name + INT8_SCALE_SUFFIX] = scale
        else:
            out[name] = t.to(torch.float16)
    return out


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


def save_weights(model: torch.nn.Module, path: Path, dtype: torch.dtype = torch.float32) -> None:
    """dtype float32, float16 or int8 (matrices int8 with a per-row scale, see quantize_int8)."""
    if dtype == torch.int8:
        tensors = {k: v.contiguous() for k, v in quantize_int8(unique_state_dict(model)).items()}
    else:
        tensors = {k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
                   for k, v in unique_state_dict(model).items()}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.chmod(tmp, 0o644)   # save_file creates 0600; the app may run as another user
    _fsync(tmp)
    os.replace(tmp, path)


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


def save_checkpoint(out_dir: str | os.PathLike, model: Seq2Seq, src_vocab: Vocab, tgt_vocab: Vocab,
                    card: dict, half: bool = False, weights_dtype: str | None = None) -> dict:
    """Write weights, vocabularies and card into `out_dir`; returns the card written.

    `card` holds the descriptive fields (name, task, metrics, history, provenance, ...);
    format, config, params and file hashes are filled in here. The directory is replaced
    as a whole (see the module docstring); other files in it are carried over."""
    out = Path(out_dir)
    if out.is_symlink():
        out = out.resolve()         # swap the directory the link points at, keep the link
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is not a directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp.mkdir()
    try:
        dtype = weights_dtype or ("float16" if half else "float32")
        card = _write_checkpoint_files(tmp, model, src_vocab, tgt_vocab, card, dtype)
        if out.is_dir():
            _carry_over_extra_files(out, tmp)
        _swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)   # gone already unless the save failed
    return card


def _write_checkpoint_files(out: Path, model: Seq2Seq, src_vocab: Vocab, tgt_vocab: Vocab,
                            card: dict, dtype: str) -> dict:
    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weights dtype must be one of {sorted(WEIGHT_DTYPES)}, got {dtype!r}")
    save_weights(model, out / WEIGHTS, WEIGHT_DTYPES[dtype])
    atomic_write_json(out / VOCAB, {"src": src_vocab.to_list(), "tgt": tgt_vocab.to_list()})
    card = dict(card)
    card.update({
        "format_version": FORMAT_VERSION,
        "arch": model.cfg.arch,
        "config": model.cfg.to_dict(),
        "params": count_params(model),
        "weights_dtype": dtype,
        "files": {WEIGHTS: {"sha256": sha256_file(out / WEIGHTS), "bytes": (out / WEIGHTS).stat().st_size},
                  VOCAB: {"sha256": sha256_file(out / VOCAB), "bytes": (out / VOCAB).stat().st_size}},
    })
    card["weights_sha256"] = card["files"][WEIGHTS]["sha256"]
    atomic_write_json(out / CARD, card)
    _fsync(out)
    return card


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and ".tmp" in name


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


def _carry_over_extra_files(old: Path, new: Path) -> None:
    """Files someone put beside the checkpoint (notes, figures) survive a re-save."""
    for entry in old.iterdir():
        if entry.name in (WEIGHTS, VOCAB, CARD) or _is_temporary(entry.name) or (new / entry.name).exists():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, new / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, new / entry.name, follow_symlinks=False)


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished `tmp` to `out`. POSIX cannot rename onto a non-empty directory,
    so an existing `out` is first renamed aside, and put back if the second rename fails."""
    if not out.exists():
        os.replace(tmp, out)
    else:
        aside = out.with_name(f".{out.name}.tmp{os.getpid()}.old")
        os.replace(out, aside)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(aside, out)
            raise
        shutil.rmtree(aside, ignore_errors=True)
    _fsync(out.parent)


@dataclass
class LoadedCheckpoint:
    path: Path
    card: dict
    model: Seq2Seq
    src_vocab: Vocab
    tgt_vocab: Vocab

    @property
    def name(self) -> str:
        return self.card["name"]

    @property
    def task(self) -> str:
        return self.card["task"]

    @property
    def train_config(self) -> TrainConfig | None:
        tc = self.card.get("train_config")
        return TrainConfig.from_dict(tc) if tc else None


def read_card(ckpt_dir: str | os.PathLike) -> dict:
    """Parse and validate card.json alone (cheap: no weights read)."""
    d = Path(ckpt_dir)
    card_path = d / CARD
    if not d.is_dir():
        raise CheckpointError(f"{d}: checkpoint directory not found")
    if not card_path.is_file():
        raise CheckpointError(f"{card_path}: missing (a checkpoint directory needs {CARD}, "
                              f"{WEIGHTS} and {VOCAB})")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{card_path}: not valid JSON ({e}); the file is corrupt or truncated") from e
    if not isinstance(card, dict):
        raise CheckpointError(f"{card_path}: expected a JSON object")
    version = card.get("format_version")
    if not isinstance(version, int):
        raise CheckpointError(f"{card_path}: no integer format_version")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{card_path}: format_version {version} is newer than this code "
                              f"reads ({FORMAT_VERSION}); update attention-lab")
    missing = [k for k in REQUIRED_CARD_FIELDS if k not in card]
    if missing:
        raise CheckpointError(f"{card_path}: missing fields {missing}")
    wrong = [f"{k} (expected {t.__name__})" for k, t in CARD_FIELD_TYPES.items() if not isinstance(card[k], t)]
    if wrong:
        raise CheckpointError(f"{card_path}: fields of the wrong type: {', '.join(wrong)}")
    if card["task"] not in TASKS:
        raise CheckpointError(f"{card_path}: unknown task {card['task']!r}")
    if set(card["tokenizers"]) != {"src", "tgt"} or not all(t in TOKENIZERS for t in card["tokenizers"].values()):
        raise CheckpointError(f"{card_path}: tokenizers must name src and tgt from {TOKENIZERS}")
    prov_missing = [k for k in REQUIRED_PROVENANCE if k not in card["provenance"]]
    if prov_missing:
        raise CheckpointError(f"{card_path}: provenance lacks {prov_missing}")
    for fname in (WEIGHTS, VOCAB):
        entry = card["files"].get(fname)
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) \
                or not isinstance(entry.get("bytes", 0), int):
            raise CheckpointError(f"{card_path}: no sha256 recorded for {fname}")
    try:
        ModelConfig.from_dict(card["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{card_path}: config cannot build a model: {e}") from e
    return card


def _verified(path: Path, card: dict) -> Path:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    expected = card["files"][path.name]
    size = path.stat().st_size
    if "bytes" in expected and size != expected["bytes"]:
        raise CheckpointError(f"{path}: {size} bytes, the card records {expected['bytes']}: "
                              f"the file is truncated or was replaced")
    if sha256_file(path) != expected["sha256"]:
        raise CheckpointError(f"{path}: sha256 does not match the card: the file is corrupt, "
                              f"tampered with, or belongs to another checkpoint")
    return path


def load_checkpoint(ckpt_dir: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Verify and load a checkpoint directory; the model comes back in eval mode, float32."""
    d = Path(ckpt_dir)
    card = read_card(d)
    cfg = ModelConfig.from_dict(card["config"])
    vocab_path = _verified(d / VOCAB, card)
    try:
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
        src_vocab, tgt_vocab = Vocab(vocab["src"]), Vocab(vocab["tgt"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{vocab_path}: not a valid vocabulary file ({e})") from e
    if (len(src_vocab), len(tgt_vocab)) != (cfg.src_vocab_size, cfg.tgt_vocab_size):
        raise CheckpointError(f"{vocab_path}: vocabulary sizes {len(src_vocab)}/{len(tgt_vocab)} "
                              f"do not match the card's config {cfg.src_vocab_size}/{cfg.tgt_vocab_size}")
    weights_path = _verified(d / WEIGHTS, card)
    model = build_model(cfg)
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({e})") from e
    if card.get("weights_dtype") == "int8":
        tensors = dequantize_int8(tensors)
    expected = unique_state_dict(model)
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
