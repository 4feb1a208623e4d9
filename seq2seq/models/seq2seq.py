"""The one Seq2Seq interface shared by every architecture."""
from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig
from .decoder import DECODERS, Memory, State
from .encoder import RNNEncoder
from .fused_loss import linear_cross_entropy
from .kernels import DropoutRandomness, FastDropout, InferenceSwitch

# arch -> (encoder cell, bidirectional encoder)
PRECISIONS = ("float32", "bf16")   # Seq2Seq.loss's fast path

ENCODERS = {"lstm": ("lstm", False), "gru": ("gru", False),
            "bahdanau": ("gru", True), "luong": ("gru", True)}


class Seq2Seq(nn.Module):
    """encode once, then decode step by step (or all at once when teacher-forced).

    Architectures differ only in their encoder settings and decoder part; training and
    decoding code is shared."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        cell, bidirectional = ENCODERS[cfg.arch]
        self.encoder = RNNEncoder(cell, cfg.src_vocab_size, cfg.emb_dim, cfg.hidden_dim,
                                  cfg.n_layers, cfg.dropout, bidirectional, cfg.pad_id)
        self.decoder = DECODERS[cfg.arch](cfg, self.encoder.out_dim)

        # one inference switch for every part (models/kernels.py); off until inference()
        self.inference_switch = InferenceSwitch()
        # one source of dropout masks for every dropout (training's streams set it per thread)
        self.dropout_randomness = DropoutRandomness()
        for m in self.modules():
            if hasattr(m, "kernels"):
                m.kernels.mode = self.inference_switch
            if isinstance(m, FastDropout):
                m.randomness = self.dropout_randomness

    @contextlib.contextmanager
    def inference(self):
        """The fast CPU inference path, for decoding and evaluation: oneDNN matmuls with
        packed weights, the masked GRU encoder, the bf16-scored exact argmax (models/
        kernels.py, output.py), inside torch.inference_mode. The caller asks for it; it
        requires eval mode, since that path has no dropout. Outside it every op is
        PyTorch's standard one. Per thread: another thread's calls are not affected."""
        if self.training:
            raise RuntimeError("Seq2Seq.inference() needs eval mode (the fast path has no dropout): "
                               "call model.eval() first")
        token = self.inference_switch.enter()
        try:
            with torch.inference_mode():
                yield self
        finally:
            self.inference_switch.exit(token)

    @property
    def in_inference(self) -> bool:
        return self.inference_switch.active()

    @property
    def has_attention(self) -> bool:
        return self.cfg.has_attention

    def encode(self, src, src_lens, src_embedded=None, pack: bool = True,
               deferred: bool = False) -> tuple[Memory, State]:
        # src [B, S], src_lens [B] -> memory for the decoder and its first state.
        # deferred: training's fast path (weight gradients after the loop, deferred.py)
        positions = torch.arange(src.size(1), device=src.device)
        mask = positions.unsqueeze(0) < src_lens.to(src.device).unsqueeze(1)   # [B, S]
        outputs, final = self.encoder(src, src_lens, src_embedded, pack=pack, deferred=deferred)
        return self.decoder.prepare(outputs, final, mask)

    def decode_step(self, prev, state, memory):
        # prev [B] -> logits [B, V], next state, attention [B, S] or None
        return self.decoder.step(prev, state, memory)

    def decode_step_argmax(self, prev, state, memory, exclude: tuple[int, ...]):
        # prev [B] -> ids [B] of the float32 argmax logits (never `exclude`), next state, attention
        return self.decoder.step_argmax(prev, state, memory, exclude)

    @staticmethod
    def draw_coins(tgt: torch.Tensor, teacher_forcing: float, coin: str = "token") -> torch.Tensor | None:
        """The teacher-forcing coins of a batch: [B, T-1], True where step t is fed the gold
        token (column 0, the <sos> step, always True). coin "token": one coin per sequence
        and per step; "step": one coin per step for the whole batch (the tutorials' rule),
        so every row of a column is the same. None when every coin is heads (ratio 1)."""
        if teacher_forcing >= 1.0:
            return None
        if coin not in ("token", "step"):
            raise ValueError(f"coin {coin!r}; expected 'token' or 'step'")
        B, steps = tgt.size(0), tgt.size(1) - 1
        rows = B if coin == "token" else 1
        coins = (torch.rand(rows, steps, device=tgt.device) < teacher_forcing).expand(B, steps).clone()
        coins[:, 0] = True
        return coins

    def forward(self, src, src_lens, tgt, teacher_forcing: float = 1.0, coins: torch.Tensor | None = None,
                coin: str = "token"):
        """The plain path: logits [B, T-1, V] predicting tgt[:, 1:], one decoder step (and
        one output layer) at a time, as decoding runs it. The reference the fast path
        (`loss`) is tested against.

        teacher_forcing: probability that step t+1 is fed the gold token tgt[:, t];
        the coin is flipped per sequence and per step (`draw_coins`), else the argmax of
        the previous step's logits is fed. `coins` [B, T-1] fixes them."""
        if coins is None:
            coins = self.draw_coins(tgt, teacher_forcing, coin)
        memory, state = self.encode(src, src_lens)
        tgt_in = tgt[:, :-1]                                               # [B, T-1]
        steps = []
        prev = tgt_in[:, 0]
        for t in range(tgt_in.size(1)):
            logits, state, _ = self.decoder.step(prev, state, memory)      # [B, V]
            steps.append(logits)
            if t + 1 == tgt_in.size(1):
                break
            gold = tgt_in[:, t + 1]
            prev = gold if coins is None else torch.where(coins[:, t + 1], gold, logits.argmax(-1))
        return torch.stack(steps, 1)                                       # [B, T-1, V]

    def loss(self, src, src_lens, tgt, teacher_forcing: float = 1.0, coins: torch.Tensor | None = None,
             label_smoothing: float = 0.0, fast: bool = True, precision: str = "float32", coin: str = "token"):
        """Mean cross-entropy per target token (padding excluded) and the number of tokens.

        fast=True, training's path: the decoder loop keeps only what is sequential, on the
        rows whose target has not ended (decoder.train_features; the batch is sorted longest
        target first for it); the output layer and the loss then run once over the
        real (non-padding) target tokens of all steps, on the CPU fused into one chunked
        pass (models/fused_loss.py). fast=False: the plain step loop (`forward`). Same
        values either way (tests/test_train_fast.py).
        precision "bf16" (fast path, CPUs with native bf16: see train.py): the matmuls in
        bfloat16 with float32 accumulation, under torch.autocast; softmax, loss and the
        recurrent state updates stay float32. coin: the coins' granularity (`draw_coins`)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}; expected one of {PRECISIONS}")
        if coins is None:
            coins = self.draw_coins(tgt, teacher_forcing, coin)
        gold = tgt[:, 1:]                                                  # [B, T-1]
        keep = gold != self.cfg.pad_id
        n_tokens = int(keep.sum())
        if not fast:
            logits = self(src, src_lens, tgt, coins=coins)                 # [B, T-1, V]
            return F.cross_entropy(logits.float()[keep], gold[keep], label_smoothing=label_smoothing), n_tokens
        bf16 = precision == "bf16"
        # rows longest target first, so the decoder loop can drop each row when its target
        # ends (decoder.train_features); a batch's loss and gradients do not depend on its order
        steps = keep.sum(1)                                                # [B] real steps per row
        if not torch.equal(keep, torch.arange(keep.size(1), device=keep.device) < steps.unsqueeze(1)):
            raise ValueError("targets must be padded on the right only")
        order = torch.argsort(steps, descending=True, stable=True)
        src, tgt, steps = src[order], tgt[order], steps[order]
        src_lens = src_lens[order.to(src_lens.device)]
        coins = None if coins is None else coins[order]
        gold = tgt[:, 1:].t()[keep[order].t()]                             # [N] real tokens, step-major
        with torch.autocast(src.device.type, dtype=torch.bfloat16, enabled=bf16):
            memory, state = self.encode(src, src_lens, deferred=True)
            feats = self.decoder.train_features(tgt[:, :-1], state, memory, coins, steps)   # [N, D], step-major
            if feats.device.type != "cpu":     # GPUs: cuBLAS and the fused log-softmax kernel are fine as they are
                logits = self.decoder.out(feats)                           # [N, V]
                return F.cross_entropy(logits.float(), gold, label_smoothing=label_smoothing), n_tokens
            h, weight, bias = self.decoder.out.final_operands(feats)      # h [N, E or D]
        return linear_cross_entropy(h, weight, bias, gold, label_smoothing,
                                    torch.bfloat16 if bf16 else torch.float32), n_tokens


class TrainingLoss(nn.Module):
    """`Seq2Seq.loss` as a module's forward, so DistributedDataParallel can wrap it."""

    def __init__(self, model: Seq2Seq):
        super().__init__()
        self.model = model

    def forward(self, src, src_lens, tgt, **kwargs):
        return self.model.loss(src, src_lens, tgt, **kwargs)


def inference_path(fn):
    """Decorator for a decoding function whose first argument is the model: it runs without
    autograd, on the fast inference path when its caller is inside `model.inference()`,
    on PyTorch's standard ops otherwise (the plain path the parity tests compare with)."""
    @functools.wraps(fn)
    def run(model: Seq2Seq, *args, **kwargs):
        if getattr(model, "in_inference", False):     # duck-typed models (tests) have no switch
            return fn(model, *args, **kwargs)
        with torch.inference_mode():
            return fn(model, *args, **kwargs)
    return run


def build_model(cfg: ModelConfig) -> Seq2Seq:
    return Seq2Seq(cfg)


def count_params(model: nn.Module) -> int:
    """Trainable parameters, shared (tied) tensors counted once."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total
