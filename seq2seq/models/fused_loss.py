"""The output layer's last matmul and the cross-entropy in one pass, a chunk of rows at a time.

    loss = mean_n CE(h_n W^T + b, y_n)   with label smoothing eps:
    CE = (1 - eps) (lse - z_y) + eps (lse - mean_v z_v),   lse = log sum_v exp z_v

Training's fast path scores every real target token of a batch at once: N ~ 2,000 rows
times a vocabulary of ~6,000. Done as three separate operations (matmul, log-softmax,
loss) the [N, V] logits, their log-softmax and the gradients of both each make a round
trip through memory, and on the CPU those passes cost as much as the matmuls. Here each
chunk of rows is scored, turned into its loss and into its gradient
dz = (softmax(z) - (1 - eps) onehot(y) - eps / V) / N while it is still in cache, and the
two gradient matmuls (dh = dz W, dW += dz^T h) run right away. The forward pass thus
computes the gradients; backward only scales them by the incoming gradient (the loss is a
scalar, so that is exact). The same idea as the "fused linear cross-entropy" kernels of
LLM training libraries, in plain torch ops.

matmul_dtype float32 gives the unfused result up to summation order (about 1e-6
relative; tests/test_fused_loss.py). bfloat16 runs the three matmuls in bf16 with float32
accumulation and keeps the softmax and the loss in float32: several times faster on CPUs
with native bf16 dot products (AVX512-BF16, AMX), slower elsewhere."""
from __future__ import annotations

import torch

CHUNK_ROWS = 128     # [128, V] float32 logits: ~3 MB at V = 6,000, what a core's caches hold best (measured 64-512)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, target, label_smoothing: float, matmul_dtype, chunk_rows: int,
                need_grad: bool):
        # h [N, D], weight [V, D], bias [V] or None, target [N] -> mean loss []
        N, V = h.size(0), weight.size(0)
        eps, low = float(label_smoothing), matmul_dtype != torch.float32
        dev = h.device
        w = weight.detach().to(matmul_dtype)                       # [V, D]
        hd = h.detach().to(matmul_dtype)                           # [N, D]
        # Passes over a chunk's [n, V] logits cost as much as its matmuls, so two of them are
        # replaced by sums of the operands, which are V / D times smaller (exact algebra):
        # the mean logit is h . mean_v(w_v) + mean(b), and the label-smoothing term every
        # dz entry loses, c = eps / (V N), is taken off dh and dW as a rank-1 correction
        # (dh -= c sum_v w_v, dW -= c 1 (sum_n h_n)^T) instead of off every entry.
        w_mean = w.float().mean(0) if eps else None                # [D]
        b_mean = bias.detach().float().mean() if eps and bias is not None else 0.0
        c = eps / (V * N)
        rows_max = min(chunk_rows, N)
        # One buffer per role, reused by every chunk: a fresh multi-MB tensor per chunk costs
        # page faults on the CPU comparable to the arithmetic.
        z_buf = torch.empty(rows_max, V, dtype=torch.float32, device=dev)          # logits, then dz
        z_low = torch.empty(rows_max, V, dtype=matmul_dtype, device=dev) if low else None
        if need_grad:
            grad_h = torch.empty(h.shape, dtype=torch.float32, device=dev)
            grad_b = None if bias is None else torch.zeros(V, dtype=torch.float32, device=dev)
            # float32: dW accumulates chunk by chunk in place; bf16: the chunks' dz are kept
            # and dW is one [V, N] x [N, D] product at the end (a bf16 product can't add into
            # a float32 result in place)
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=dev) if not low else None
            dz_all = torch.empty(N, V, dtype=matmul_dtype, device=dev) if low else None
        loss = torch.zeros((), dtype=torch.float32, device=dev)
        for start in range(0, N, chunk_rows):
            hc, yc = hd[start:start + chunk_rows], target[start:start + chunk_rows, None]   # [n, D], [n, 1]
            n = hc.size(0)
            z = z_buf[:n]                                          # [n, V]
            if low:
                torch.mm(hc, w.t(), out=z_low[:n])
                z.copy_(z_low[:n])
            else:
                torch.mm(hc, w.t(), out=z)
            if bias is not None:
                z += bias.detach()
            top = z.amax(-1, keepdim=True)                         # [n, 1]
            z -= top                                               # stable: lse below is relative to the max
            rows = (1 - eps) * z.gather(1, yc).neg_()              # [n, 1]
            if eps:                                                # mean_v z_v, from h
                z_mean = hc.float() @ w_mean + b_mean - top.squeeze(1)
                rows -= eps * z_mean.unsqueeze(1)
            p = z.exp_()                                           # z is not needed any more
            total = p.sum(-1, keepdim=True)                        # [n, 1]
            rows += total.log()                                    # (1-eps)(lse - z_y) + eps(lse - mean z)
            loss += rows.sum()
            if not need_grad:                                      # validation: the loss only
                continue
            # dz + c = (p - (1 - eps) total onehot(y)) / (total N): the target's entry taken
            # off in float32 before the scaling, so it keeps its digits in bf16 too
            p.scatter_add_(1, yc, total.mul(-(1 - eps)))
            scale = total.reciprocal_().mul_(1.0 / N)              # [n, 1]
            if grad_b is not None:
                grad_b += torch.mv(p.t(), scale.squeeze(1))
            if low:
                dz = dz_all[start:start + n]
                dz.copy_(p.mul_(scale))                            # (a bf16 out= in the mul is a slow mixed-dtype path)
                grad_h[start:start + n] = torch.mm(dz, w)          # [n, D]
            else:
                p.mul_(scale)
                torch.mm(p, w, out=grad_h[start:start + n])
                grad_w.addmm_(p.t(), hc)                           # [V, D]
        if not need_grad:
            return loss / N
        if low:
            grad_w = torch.mm(dz_all.t(), hd).float()              # [V, D]
        if eps:                                                    # the rank-1 corrections (see above)
            grad_h -= c * w.float().sum(0)
            grad_w -= c * hd.float().sum(0)
            if grad_b is not None:
                grad_b -= c * N
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (h.dtype, weight.dtype)
        return loss / N

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        return ((grad_h * grad_loss).to(h_dtype), (grad_w * grad_loss).to(w_dtype),
                None if grad_b is None else grad_b * grad_loss, None, None, None, None, None)


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, target: torch.Tensor,
                         label_smoothing: float = 0.0, matmul_dtype: torch.dtype = torch.float32,
                         chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """Mean cross-entropy of the logits h @ weight.T + bias against target, [N, D] -> [],
    equal to F.cross_entropy(F.linear(h, weight, bias), target, label_smoothing=...)
    without materializing the [N, V] logits (see the module doc). Every row counts:
    the caller passes real tokens only."""
    if h.dim() != 2 or target.shape != h.shape[:1]:
        raise ValueError(f"h [N, D] and target [N] expected, got {tuple(h.shape)} and {tuple(target.shape)}")
    if h.size(0) == 0:
        raise ValueError("no target tokens to score")
    need_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (h, weight, bias))   # else skip the gradient matmuls
    return _LinearCrossEntropy.apply(h, weight, bias, target, label_smoothing, matmul_dtype, chunk_rows, need_grad)
