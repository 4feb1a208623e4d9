"""Gradient saliency for models without attention (lstm, gru).

For output step t with chosen token y_t, the saliency of source position j is the L2 norm
of d logit_t[y_t] / d e_j (e_j: the source embedding), normalized so each row sums to 1.
It answers "how much would nudging source token j move this output's score" -- it is
not attention, and the app labels it so."""
from __future__ import annotations

import numpy as np
import torch

from .models import Seq2Seq
from .vocab import SOS_ID


def gradient_saliency(model: Seq2Seq, src_ids: list[int], step_tokens: list[int]) -> np.ndarray:
    """[len(step_tokens), len(src_ids)] saliency rows for one sentence.

    One batched forward/backward: the sentence is repeated once per output step and row t
    back-propagates only its own score, so the rows' gradients don't mix. Uses
    torch.autograd.grad, so no parameter's .grad is touched (safe on shared cached models)."""
    T, S = len(step_tokens), len(src_ids)
    if T == 0 or S == 0:
        return np.zeros((T, S), dtype=np.float32)
    device = next(model.parameters()).device
    src = torch.tensor([src_ids] * T, device=device)                       # [T, S]
    src_lens = torch.full((T,), S, dtype=torch.long)
    tgt = torch.tensor([[SOS_ID, *step_tokens]] * T, device=device)        # [T, T+1]
    with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):   # cuDNN RNN backward needs train mode
        embedded = model.encoder.embed(src).detach().requires_grad_(True)  # [T, S, E]
        memory, state = model.encode(src, src_lens, src_embedded=embedded)
        logits = []
        for t in range(T):                                                 # teacher-forced on the output
            step_logits, state, _ = model.decode_step(tgt[:, t], state, memory)
            logits.append(step_logits)
        logits = torch.stack(logits, 1)                                    # [T, T, V]
        rows = torch.arange(T, device=device)
        chosen = logits[rows, rows, tgt[0, 1:]]                            # [T]: row t's own step-t score
        (grad,) = torch.autograd.grad(chosen.sum(), embedded)              # [T, S, E]
    sal = grad.norm(dim=-1)                                                # [T, S]
    sal = sal / sal.sum(-1, keepdim=True).clamp(min=1e-12)
    return sal.detach().cpu().numpy().astype(np.float32)
