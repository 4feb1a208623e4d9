"""Training state: everything `--resume` needs (weights, optimizer, step counter, random
states, history), saved after every epoch and committed atomically.

The state dir holds state.json and the tensor files it names. Tensor files are named by
their content (state-<sha256>.safetensors, best-<sha256>.safetensors) and written before
state.json is renamed into place: that one rename is the commit, so a run killed at any
moment leaves the previous complete state or the new one, never a mix. Files no longer
named by state.json are removed after the commit (or by the next save after a kill)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from .atomic import atomic_write_json, sha256_file, write_named_by_content
from .errors import Seq2SeqError

STATE_JSON = "state.json"
STATE_WEIGHTS = "state.safetensors"   # the fixed name states written before this scheme used
_STATE_FILE = re.compile(r"(state|best)(-[0-9a-f]{16})?\.safetensors|\.(state|best)\S*\.tmp\d+")


def _state_tensors(model, optimizer) -> dict[str, torch.Tensor]:
    """Weights, optimizer state and random states as one flat dict of CPU tensors."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone()   # clone: tied weights get separate copies
               for k, v in model.state_dict().items()}
    for pid, pstate in optimizer.state_dict()["state"].items():
        for key, val in pstate.items():
            tensors[f"optim.{pid}.{key}"] = (val if torch.is_tensor(val) else torch.tensor(val)).detach().cpu().clone()
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    return tensors


def apply_state(tensors: dict[str, torch.Tensor], info: dict, model, optimizer) -> None:
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, key = k.split(".", 2)
            opt_state.setdefault(int(pid), {})[key] = v
    # the saved hyper-parameters (lr after decays, betas), with this optimizer's choice of
    # implementation: a state saved by plain Adam resumes on the fused kernel and back
    how = ("fused", "foreach", "capturable", "differentiable")
    groups = [{**saved, **{k: now[k] for k in how if k in now}}
              for saved, now in zip(info["param_groups"], optimizer.param_groups)]
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    torch.set_rng_state(tensors["rng.cpu"])
    if torch.cuda.is_available():
        cuda_states = [tensors[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count()) if f"rng.cuda.{i}" in tensors]
        if cuda_states:
            torch.cuda.set_rng_state_all(cuda_states)


def _write_named_by_content(state_dir: Path, stem: str, tensors: dict[str, torch.Tensor]) -> tuple[str, str]:
    """Write `tensors` to STEM-<sha256 prefix>.safetensors (on disk before state.json
    names it); returns (file name, sha256)."""
    from safetensors.torch import save_file

    return write_named_by_content(state_dir, stem,
                                  lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp)))


def save_state(state_dir: Path, model, optimizer, info: dict,
               best_weights: dict[str, torch.Tensor] | None = None,
               extra: dict[str, torch.Tensor] | None = None) -> dict:
    """Everything --resume needs, committed atomically (see above). `best_weights`, when
    given, are stored too and named in info["best_weights_file"]; without them the best
    file `info` already names is kept. `extra`: more tensors for the state file (the
    weight average). Returns the info written."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    weights_file, digest = _write_named_by_content(state_dir, "state",
                                                   {**_state_tensors(model, optimizer), **(extra or {})})
    info = dict(info, param_groups=optimizer.state_dict()["param_groups"], weights_file=weights_file,
                weights_sha256=digest)
    if best_weights is not None:
        info["best_weights_file"] = _write_named_by_content(state_dir, "best", best_weights)[0]
    atomic_write_json(state_dir / STATE_JSON, info)          # the commit
    keep = {weights_file, Path(info.get("best_weights_file") or ".").name}
    for p in state_dir.iterdir():
        if p.name not in keep and _STATE_FILE.fullmatch(p.name):
            p.unlink(missing_ok=True)
    return info


def read_state_info(state_dir: Path) -> dict:
    path = Path(state_dir) / STATE_JSON
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Seq2SeqError(f"--resume: no saved state in {state_dir} ({STATE_JSON} missing)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Seq2SeqError(f"{path}: not valid JSON ({e}); cannot resume") from e
    if not isinstance(info, dict) or not {"epoch", "step", "history", "param_groups"} <= set(info):
        raise Seq2SeqError(f"{path}: not a training state written by seq2seq.train; cannot resume")
    return info


def read_state(state_dir: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The saved tensors and info, checked against each other."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    info = read_state_info(state_dir)
    weights = Path(state_dir) / Path(info.get("weights_file", STATE_WEIGHTS)).name
    if not weights.is_file() or sha256_file(weights) != info.get("weights_sha256"):
        raise Seq2SeqError(f"{weights}: missing or does not match {STATE_JSON}; cannot resume")
    try:
        return load_file(str(weights)), info
    except (SafetensorError, OSError, ValueError) as e:
        raise Seq2SeqError(f"{weights}: not a readable safetensors file ({e}); cannot resume") from e


def load_state(state_dir: Path, model, optimizer) -> dict:
    """Restore model, optimizer and random states from `state_dir`; returns the info."""
    tensors, info = read_state(state_dir)
    apply_state(tensors, info, model, optimizer)
    return info


def load_best_weights(state_dir: Path, info: dict) -> dict[str, torch.Tensor] | None:
    from safetensors.torch import load_file

    name = info.get("best_weights_file")
    path = Path(state_dir) / Path(name).name if name else None   # older states stored a path
    if path is None or not path.is_file():
        return None
    named = re.fullmatch(r"best-([0-9a-f]{16})\.safetensors", path.name)
    if named and not sha256_file(path).startswith(named.group(1)):
        raise Seq2SeqError(f"{path}: does not match its name (corrupt); cannot resume")
    return load_file(str(path))
