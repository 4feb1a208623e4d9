"""Teacher-forcing policies: a constant ratio and the decays of Bengio et al. (2015).

`i` counts training batches seen (0 for the first). The value is the probability of
feeding the gold previous token. By default the coin is flipped independently for every
sequence in the batch and at every time step (coin "token"); the tutorials' rule (coin
"step") flips one per step for the whole batch. On tails the model's own greedy
(argmax) prediction is fed."""
from __future__ import annotations

import math

from .config import TeacherForcingConfig

KINDS = ("constant", "linear", "exponential", "inverse_sigmoid")


def teacher_forcing_ratio(cfg: TeacherForcingConfig, i: int) -> float:
    if cfg.kind == "constant":
        value = cfg.ratio
    elif cfg.kind == "linear":
        value = max(cfg.eps_min, cfg.k - cfg.c * i)       # Bengio: eps_i = max(eps, k - c i)
    elif cfg.kind == "exponential":
        value = cfg.k ** i                                # eps_i = k^i, k < 1
    elif cfg.kind == "inverse_sigmoid":
        # eps_i = k / (k + exp(i / k)), k >= 1; exp overflows for huge i, where the value is 0
        value = cfg.k / (cfg.k + math.exp(i / cfg.k)) if i / cfg.k < 700 else 0.0
    else:
        raise ValueError(f"unknown teacher-forcing kind {cfg.kind!r}; expected one of {KINDS}")
    return float(min(1.0, max(0.0, value)))


def describe(cfg: TeacherForcingConfig) -> str:
    text = _describe_ratio(cfg)
    return text if cfg.coin == "token" else f"{text}, one coin per step for the whole batch"


def _describe_ratio(cfg: TeacherForcingConfig) -> str:
    if cfg.kind == "constant":
        return f"constant ratio {cfg.ratio:g}"
    if cfg.kind == "linear":
        return f"linear decay max({cfg.eps_min:g}, {cfg.k:g} - {cfg.c:g}*i)"
    if cfg.kind == "exponential":
        return f"exponential decay {cfg.k:g}^i"
    return f"inverse sigmoid decay {cfg.k:g}/({cfg.k:g}+exp(i/{cfg.k:g}))"


COIN_RULES = {
    "token": "coin flipped per time step and per sequence in the batch; "
             "on tails the model's argmax prediction is fed; i counts training batches",
    "step": "one coin per time step for the whole batch (the PyTorch tutorials' rule); "
            "on tails every sequence is fed the model's argmax prediction; i counts training batches",
}
