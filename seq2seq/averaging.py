"""An exponential moving average of a model's weights (Polyak averaging), for `--ema`.

    average <- d * average + (1 - d) * weights      after every optimizer step

The averaged weights are what training validates, keeps as the best, snapshots and ships;
the optimizer goes on updating the raw weights. Averaging the last few thousand updates
smooths out the noise of the final steps of SGD and tends to generalize a little better
(as checkpoint averaging does in NMT). The decay is warmed up, d_t = min(d, (1+t)/(10+t)),
so the first updates are not held back by the random initialization."""
from __future__ import annotations

import contextlib

import torch

PREFIX = "ema."      # the averaged tensors' names in a training state


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the averaging decay must be in (0, 1), got {decay}")
        self.decay, self.updates = decay, 0
        self.params = _unique_params(model)
        self.average = [p.detach().clone() for p in self.params]

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Fold the model's current weights into the average (after an optimizer step)."""
        d = self.current_decay()
        torch._foreach_lerp_(self.average, [p.detach() for p in self.params], 1.0 - d)
        self.updates += 1

    @contextlib.contextmanager
    def swapped_in(self):
        """The averaged weights in the model for the duration (validation, saving), the raw
        ones back afterwards, bit for bit."""
        raw = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, a in zip(self.params, self.average):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, r in zip(self.params, raw):
                    p.copy_(r)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"{PREFIX}{i}": a.detach().cpu().clone() for i, a in enumerate(self.average)}
        out[f"{PREFIX}updates"] = torch.tensor(self.updates)
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> bool:
        """Restore from a training state; False when the state has no average (a run
        started without --ema: the average starts from the current weights)."""
        if f"{PREFIX}updates" not in tensors:
            return False
        with torch.no_grad():
            for i, a in enumerate(self.average):
                a.copy_(tensors[f"{PREFIX}{i}"])
        self.updates = int(tensors[f"{PREFIX}updates"])
        return True


def _unique_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Trainable parameters, tied ones once."""
    seen, out = set(), []
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out
