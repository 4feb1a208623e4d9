"""One command, one report: how fast the app answers and the models train, measured
against the way the well-known PyTorch seq2seq tutorials do it, in the same run.

    python -m seq2seq.bench [--device cpu|cuda] [--json] [--quick]

1. Decoding `translate-bahdanau` on all of test 2016 on the CPU: (a) the tutorial way, one
   sentence at a time with a Python loop over steps; (b) ours, batched greedy; (c) ours,
   batched beam search width 5. (a) and (b) must give identical translations (checked).
   Also the achieved GFLOP/s of (b) (analytic matmul count) beside the machine's own
   float32 matrix-multiply rate measured in the same run.
2. The app's answer time: one Translate interaction (tokenize, decode, build and serialize
   the figures) over 50 varied inputs; the cold start of `streamlit run` to the first
   heatmap drawn in a real browser; the app process's peak memory with every shipped
   checkpoint loaded.
3. Training throughput (target tokens/s) for each architecture: ours (length-bucketed,
   packed, bf16 autocast on CUDA, teacher-forced fast paths) against a plain loop (random
   batches of 128, no packing, float32, per-step Python teacher forcing at 0.5).

Warm-up runs are excluded and stated; each timing is repeated and its spread reported."""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .card import Card
from .checkpoint import load_checkpoint
from .config import ModelConfig
from .data import PairDataset, tokenized_multi30k
from .evaluate import decode_corpus, decode_workers
from .models import Seq2Seq, build_model
from .models.kernels import onednn_linear_available
from .models.output import cpu_has_native_bf16
from .presets import DATA_DIR
from .streams import TrainingStreams, default_streams
from .vocab import EOS_ID, PAD_ID, SOS_ID

ROOT = Path(__file__).resolve().parents[1]


def summary(times: list[float], result, warmup: int) -> dict:
    """Seconds of timed runs -> median and spread, with the last run's result."""
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "runs": len(times), "warmup_runs": warmup, "result": result}


def timed(fn, repeats: int, warmup: int = 1) -> dict:
    """Run fn warmup + repeats times; seconds of the timed runs and the last result."""
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return summary(times, result, warmup)


# ------------------------------------------------------------------ 1. decoding
def tutorial_greedy(model: Seq2Seq, src_ids: list[int], max_len: int) -> list[int]:
    """The tutorials' translate_sentence (bentrevett/pytorch-seq2seq), step for step: a
    batch of one, `torch.no_grad()` around the encoder and each decoder step, the
    attention row stored at every step, `.item()` on the argmax of the logits. ((b) never
    emits <pad> or <sos>; a model that ranked one first would show up as a mismatch.)"""
    model.eval()
    src_tensor = torch.LongTensor(src_ids).unsqueeze(0)                # [1, S]
    with torch.no_grad():
        memory, state = model.encode(src_tensor, torch.LongTensor([len(src_ids)]))
    trg_indexes = [SOS_ID]
    attentions = torch.zeros(max_len, 1, len(src_ids))
    for i in range(max_len):
        trg_tensor = torch.LongTensor([trg_indexes[-1]])
        with torch.no_grad():
            logits, state, attention = model.decode_step(trg_tensor, state, memory)
        if attention is not None:
            attentions[i] = attention
        pred_token = logits.argmax(1).item()
        trg_indexes.append(pred_token)
        if pred_token == EOS_ID:
            break
    return [t for t in trg_indexes[1:] if t != EOS_ID]


def decode_flops(cfg: ModelConfig, src_tokens: int, steps: int, sentences: int, mean_src: float) -> float:
    """Analytic floating-point operations (2 per multiply-add) of the matmuls in decoding."""
    E, H, A, V, L = cfg.emb_dim, cfg.hidden_dim, cfg.attn_dim, cfg.tgt_vocab_size, cfg.n_layers
    gates = 4 if cfg.arch == "lstm" else 3
    dirs = 2 if cfg.arch in ("bahdanau", "luong") else 1
    Hm = H * dirs
    enc = sum(2 * gates * H * ((E if l == 0 else Hm) + H) * dirs for l in range(L)) * src_tokens

    def out_layer(in_dim):
        return 2 * in_dim * E + 2 * E * V if cfg.tie_embeddings else 2 * in_dim * V

    def rnn(in_dim):
        return sum(2 * gates * H * ((in_dim if l == 0 else H) + H) for l in range(L))

    S = mean_src
    if cfg.arch == "lstm":
        step = rnn(E) + out_layer(H)
    elif cfg.arch == "gru":
        step = rnn(E + Hm) + out_layer(E + H + Hm)
    elif cfg.arch == "bahdanau":
        enc += 2 * Hm * A * src_tokens                                    # keys, once per input
        step = 2 * H * A + S * 2 * A + 2 * S * Hm + rnn(E + Hm) + out_layer(H + Hm + E)
    else:
        enc += 2 * Hm * H * src_tokens
        step = rnn(E + H) + 2 * S * H + 2 * S * Hm + 2 * (Hm + H) * H + out_layer(H)
    return float(enc + step * steps)


def matmul_peak_gflops(device: torch.device, n: int = 2048, repeats: int = 5,
                       dtype: torch.dtype = torch.float32, onednn: bool = False) -> float:
    """The machine's own rate for an n x n product: torch's matmul, or (onednn) oneDNN with
    a packed weight, which is what decoding uses on the CPU (models/kernels.py)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    if onednn:
        packed = torch.ops.mkldnn._reorder_linear_weight(b, None)

    def run():
        c = torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], "") if onednn else a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        return c

    t = timed(run, repeats, warmup=2)["min_s"]
    return 2 * n ** 3 / t / 1e9


# Batch sizes chosen by measurement on 2 cores: small enough that two threads share the
# length-sorted batches evenly, large enough for efficient matmuls.
GREEDY_BATCH = 256   # (b): sentences per batch
BEAM_BATCH = 128     # (c): rows per batch, beams included (25 sentences at width 5)


def bench_decoding(ck_path: Path, data, quick: bool, repeats: int) -> dict:
    ck = load_checkpoint(ck_path, "cpu")
    model = ck.model
    test = data["test2016"]
    sentences = test["de"][:50] if quick else test["de"]
    sources = [ck.src_vocab.encode_words(s, model.cfg.max_src_len) for s in sentences]
    max_len = model.cfg.max_out_len
    cpu = torch.device("cpu")
    workers = decode_workers(cpu, len(sources))

    def run_loop():   # (a) runs torch's standard ops, as the tutorials do (no inference mode)
        return [tutorial_greedy(model, s, max_len) for s in sources]

    def run_greedy():
        return decode_corpus(model, sources, cpu, beam=1, batch_size=GREEDY_BATCH)

    # (a) and (b) are timed alternately, so both see the same machine load (a shared
    # 2-core machine drifts by 10-20% over minutes); the speed-up is the median of the
    # per-pair ratios. Warm-up: 20 sentences of (a), one run of (b), not timed.
    for s in sources[:20]:
        tutorial_greedy(model, s, max_len)
    run_greedy()
    loop_times, greedy_times, identical = [], [], True
    for _ in range(1 if quick else repeats):
        a = timed(run_loop, 1, warmup=0)
        b = timed(run_greedy, 1, warmup=0)
        loop_times.append(a["median_s"])
        greedy_times.append(b["median_s"])
        identical = identical and a["result"] == b["result"]
    loop, greedy = summary(loop_times, a["result"], 0), summary(greedy_times, b["result"], 1)
    ratios = [la / gr for la, gr in zip(loop_times, greedy_times)]
    beam = timed(lambda: decode_corpus(model, sources, cpu, beam=5, batch_size=BEAM_BATCH),
                 max(1, repeats // 2), warmup=1)
    n_src = sum(len(s) for s in sources)
    steps = sum(len(o) + 1 for o in greedy["result"])
    flops = decode_flops(model.cfg, n_src, steps, len(sources), n_src / len(sources))
    bf16 = cpu_has_native_bf16()
    return {
        "checkpoint": str(ck_path), "sentences": len(sources), "threads": torch.get_num_threads(),
        "workers": workers, "batch_sentences": GREEDY_BATCH, "beam_batch_rows": BEAM_BATCH,
        "output_argmax": "bf16 scores + exact float32 rescoring (proven)" if bf16 else "float32",
        "loop_s": round(loop["median_s"], 3), "loop_spread_s": [round(loop["min_s"], 3), round(loop["max_s"], 3)],
        "greedy_s": round(greedy["median_s"], 3),
        "greedy_spread_s": [round(greedy["min_s"], 3), round(greedy["max_s"], 3)],
        "beam5_s": round(beam["median_s"], 3), "beam5_spread_s": [round(beam["min_s"], 3), round(beam["max_s"], 3)],
        "loop_sentences_per_s": round(len(sources) / loop["median_s"], 1),
        "greedy_sentences_per_s": round(len(sources) / greedy["median_s"], 1),
        "beam5_sentences_per_s": round(len(sources) / beam["median_s"], 1),
        "speedup_greedy": round(statistics.median(ratios), 2), "loop_runs": len(ratios),
        "speedup_greedy_spread": [round(min(ratios), 2), round(max(ratios), 2)],
        "speedup_beam5": round(loop["median_s"] / beam["median_s"], 2),
        "loop_equals_greedy": identical,
        "gflops": round(flops / greedy["median_s"] / 1e9, 2),
        "matmul_torch_gflops": round(matmul_peak_gflops(cpu), 1),
        "matmul_peak_gflops": round(max(matmul_peak_gflops(cpu), matmul_peak_gflops(cpu, onednn=True)
                                        if onednn_linear_available() else 0.0), 1),
        "matmul_peak_bf16_gflops": round(matmul_peak_gflops(cpu, dtype=torch.bfloat16), 1) if bf16 else None,
        "timing": f"(a) and (b) timed alternately, {loop['runs']} runs each after a warm-up (20 sentences of (a), "
                  f"one run of (b)); (b)/(a) is the median of the per-pair ratios; (c): median of {beam['runs']} "
                  "after 1 warm-up",
    }


# ------------------------------------------------------------------ 2. the app
APP_INPUTS = [
    "Ein Mann fährt mit dem Fahrrad die Straße entlang.", "Zwei Hunde spielen im Schnee.",
    "Eine Frau mit einem roten Hut liest ein Buch im Park.", "Kinder spielen Fußball auf einer grünen Wiese.",
    "Ein kleines Mädchen isst ein Eis.", "Ein Mann.", "Hunde!", "Der Mann und die Frau tanzen auf der Straße, "
    "und der Hund schaut zu, während die Kinder lachen und die Sonne scheint.",
]


def bench_app_interaction(ck_path: Path, data, quick: bool) -> dict:
    import importlib.util

    missing = [m for m in ("spacy", "plotly") if importlib.util.find_spec(m) is None]
    if missing:  # e.g. a GPU machine that trains from cached token ids
        return {"p50_ms": None, "p95_ms": None, "inputs": 0,
                "note": f"{', '.join(missing)} not installed: app timings skipped"}
    from . import figures
    from .translate import Translator

    tr = Translator.load(ck_path, "cpu")
    inputs = (APP_INPUTS + [" ".join(s) for s in data["test2016"]["de"][:60]])[: 10 if quick else 50]

    def interaction(text):
        r = tr.translate(text, beam=1, topk=5)
        heat = figures.alignment_heatmap(r.source.tokens, r.output_tokens, r.alignment, kind=r.alignment_kind,
                                         source_unknown=r.source.unknown)
        steps = figures.step_figure(r.source.tokens, r.steps, r.step_alignment, kind=r.alignment_kind)
        csv = figures.alignment_csv(r.source.tokens, r.output_tokens, r.alignment)
        return len(heat.to_json()) + len(steps.to_json()) + len(csv)   # Streamlit sends the JSON

    interaction(inputs[0])  # warm-up: first call builds caches
    times = []
    for text in inputs:
        t0 = time.perf_counter()
        interaction(text)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"p50_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 1),
            "max_ms": round(times[-1], 1), "inputs": len(times), "decoding": "greedy",
            "what": "tokenize + decode + heatmap and step figures built and serialized to JSON + CSV"}


def _launcher():
    """tools.serve (outside this package: the engine imports neither Streamlit nor Playwright),
    imported only when the browser part runs."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tools import serve

    return serve


def bench_app_server(quick: bool, cold_starts: int = 3) -> dict:
    """Cold start to the first heatmap in a real browser (a fresh server each time: median
    and spread of `cold_starts`), and peak memory with every model loaded (last server)."""
    serve = _launcher()
    if serve.chromium_path() is None:
        return {"cold_start_s": None, "peak_rss_mib": None, "note": "no chromium: browser timings skipped"}
    times, out = [], {}
    n = 1 if quick else cold_starts
    for i in range(n):
        seconds, rss = _cold_start(serve, load_everything=(i == n - 1))
        times.append(seconds)
        if rss is not None:
            out["peak_rss_mib"] = rss
    out["cold_start_s"] = round(statistics.median(times), 2)
    out["cold_start_spread_s"] = [round(min(times), 2), round(max(times), 2)]
    out["cold_start_runs"] = len(times)
    out["cold_start_what"] = ("`streamlit run` started -> heatmap title drawn in Chromium (a fresh server and a "
                              "fresh browser each run, the browser opened before the clock starts, as a "
                              "visitor's is); the first page imports torch and spaCy")
    return out


def _cold_start(serve, load_everything: bool) -> tuple[float, float | None]:
    with serve.chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        t0 = time.perf_counter()
        with serve.streamlit_server(cwd=ROOT) as server:   # returns once it answers HTTP 200 (polled every 50 ms)
            url = server.url
            page.goto(f"{url}/translate?text=Zwei+Hunde+spielen+im+Schnee.", wait_until="domcontentloaded")
            page.get_by_text("Attention: where the decoder looked").first.wait_for(timeout=120_000)
            seconds = time.perf_counter() - t0
            rss = None
            if load_everything:
                # load every shipped checkpoint: the compare page runs all models of a task
                for task in ("translate", "reverse"):
                    page.goto(f"{url}/compare?task={task}&text=ein+hund", wait_until="domcontentloaded")
                    page.wait_for_timeout(1000)
                    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                                           timeout=120_000)
                status = Path(f"/proc/{server.pid}/status").read_text()
                hwm = [line for line in status.splitlines() if line.startswith("VmHWM")]
                rss = round(int(hwm[0].split()[1]) / 1024, 1) if hwm else None
        return seconds, rss


# ------------------------------------------------------------------ 3. training throughput
def tutorial_train_step(model: Seq2Seq, batch, optimizer, ratio: float = 0.5) -> int:
    """The tutorials' loop: padded RNN (no packing), float32, the output layer at every
    step, one coin per step for the whole batch."""
    src, tgt = batch.src, batch.tgt
    memory, state = model.encode(src, batch.src_lens, pack=False)
    prev, outputs = tgt[:, 0], []
    for t in range(1, tgt.size(1)):
        logits, state, _ = model.decode_step(prev, state, memory)
        outputs.append(logits)
        prev = tgt[:, t] if random.random() < ratio else logits.argmax(-1)
    logits = torch.stack(outputs, 1)
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt[:, 1:].reshape(-1), ignore_index=PAD_ID)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return int((tgt[:, 1:] != PAD_ID).sum())


def our_train_step(model: Seq2Seq, batch, optimizer, ratio: float = 1.0, precision: str = "float32",
                   streams: TrainingStreams | None = None) -> int:
    """What seq2seq.train runs: the fast path (Seq2Seq.loss), coins per token and sequence,
    each batch split across `streams` (streams.py; None: one); precision "bf16" is its
    --cpu-bf16 mode."""
    streams = streams or TrainingStreams(model, 1)
    optimizer.zero_grad(set_to_none=True)
    _, n_tokens = streams.loss_and_backward(model.loss, batch, ratio, "token", precision=precision)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return n_tokens


def training_precisions(device) -> tuple[str, ...]:
    """Ours is timed in float32 everywhere, and in bf16 (--cpu-bf16) on CPUs with native bf16."""
    return ("float32", "bf16") if device.type == "cpu" and cpu_has_native_bf16() else ("float32",)


def train_flops(cfg: ModelConfig, src_tokens: int, steps: int, mean_src: float) -> float:
    """Analytic matmul FLOPs of one training batch, forward and backward (backward counted
    as twice the forward): decoding's count with every step's output layer."""
    return 3 * decode_flops(cfg, src_tokens, steps, 0, mean_src)


def cpu_description() -> dict:
    from .train_card import cpu_model_name
    return {"model": cpu_model_name(), "isa": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": cpu_has_native_bf16(), "threads": torch.get_num_threads()}


def _train_model(cfg: ModelConfig, device, ours: bool = True):
    """A model and its optimizer: the training command's (fused Adam) for ours, the
    tutorials' plain Adam for the baseline."""
    from .trainer import build_optimizer

    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    return model, (build_optimizer(model, 1e-3) if ours else torch.optim.Adam(model.parameters(), lr=1e-3))


def _time_steps(step, batches, device) -> float:
    """Seconds for `step` over `batches` (after the caller's warm-up)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for b in batches:
        step(b)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def bench_arch_training(cfg: ModelConfig, batches: list, device, repeats: int, warmup: int = 2) -> dict:
    """Ours (in each of `training_precisions`) against the tutorials' loop on the same
    batches, timed in rotation (one model and optimizer per way, each warmed up on `warmup`
    batches first), at ratio 1.0 and at scheduled-sampling ratio 0.5. Speed-ups: the median
    of the per-round ratios."""
    warm, timed_batches = batches[:warmup], batches[warmup:]
    tokens = sum(b.n_target_tokens for b in timed_batches)
    n_streams = default_streams(device, batches[0].src.size(0))      # as seq2seq.train picks them
    pools: list[TrainingStreams] = []
    out = {"streams": n_streams}
    for label, ratio in (("tf", 1.0), ("ss", 0.5)):
        ways = {}
        for way in ("baseline",) + training_precisions(device):
            model, opt = _train_model(cfg, device, ours=way != "baseline")
            random.seed(0)
            streams = TrainingStreams(model, n_streams)
            pools.append(streams)
            step = (lambda b, m=model, o=opt: tutorial_train_step(m, b, o, ratio)) if way == "baseline" else \
                (lambda b, m=model, o=opt, p=way, s=streams: our_train_step(m, b, o, ratio, p, s))
            for b in warm:
                step(b)
            ways[way] = step
        times = {way: [] for way in ways}
        for _ in range(repeats):
            for way in ways:
                times[way].append(_time_steps(ways[way], timed_batches, device))
        out[label] = {"baseline_tokens_per_s": tokens / statistics.median(times["baseline"])}
        for way in ways:
            if way == "baseline":
                continue
            ratios = [b / o for b, o in zip(times["baseline"], times[way])]
            out[label][way] = {"tokens_per_s": tokens / statistics.median(times[way]),
                               "speedup": statistics.median(ratios),
                               "speedup_spread": [round(min(ratios), 2), round(max(ratios), 2)],
                               "seconds": statistics.median(times[way])}
    for pool in pools:
        pool.close()
    return out


def epoch_seconds(cfg: ModelConfig, ds: PairDataset, device, precision: str = "float32") -> float:
    """One full epoch of Multi30k with the training command's path (ratio 1.0)."""
    model, opt = _train_model(cfg, device)
    batches = [b.to(device) for b in ds.batches(128, shuffle=True, seed=2)]
    with TrainingStreams(model, default_streams(device, 128)) as streams:
        return _time_steps(lambda b: our_train_step(model, b, opt, 1.0, precision, streams), batches, device)


def bench_training(data, device: torch.device, quick: bool, repeats: int = 3) -> dict:
    from .presets import ARCHS
    from .vocab import Vocab

    src_vocab = Vocab.build(data["train"]["de"], 2)
    tgt_vocab = Vocab.build(data["train"]["en"], 2)
    src = [src_vocab.encode(s) for s in data["train"]["de"]]
    tgt = [tgt_vocab.encode(t) for t in data["train"]["en"]]
    ds = PairDataset(src, tgt)
    n_batches, warmup = (1, 0) if quick else ((40 if device.type == "cuda" else 10), 2)
    # the same length-bucketed batches for both ways: the comparison is of the training step
    batches = [b.to(device) for b in list(ds.batches(128, shuffle=True, seed=1))[: n_batches + warmup]]
    epoch_tokens = sum(len(t) + 1 for t in tgt)
    peak = matmul_peak_gflops(device, n=1024 if quick else 2048)
    out = {"device": device.type, "cpu": cpu_description(), "batches_timed": n_batches, "batch_size": 128,
           "repeats": 1 if quick else repeats, "matmul_peak_gflops": round(peak, 1),
           "precisions": list(training_precisions(device)),
           "timing": f"ours ({' and '.join(training_precisions(device))}) and the tutorial loop (float32) on the "
                     f"same batches, timed in rotation after {warmup} warm-up batches each; speed-up: median of "
                     "the per-round ratios"}
    if "bf16" in out["precisions"]:
        out["matmul_peak_bf16_gflops"] = round(matmul_peak_gflops(device, n=1024 if quick else 2048,
                                                                  dtype=torch.bfloat16), 1)
    for arch in ARCHS:
        shipped = ROOT / "checkpoints" / f"translate-{arch}"
        cfg = Card.load(shipped).model_config if (shipped / "card.json").exists() else ModelConfig(arch=arch)
        cfg.src_vocab_size, cfg.tgt_vocab_size = len(src_vocab), len(tgt_vocab)
        r = bench_arch_training(cfg, batches, device, 1 if quick else repeats, warmup)
        timed = batches[warmup:]
        tokens = sum(b.n_target_tokens for b in timed)
        src_tokens = int(sum(b.src_lens.sum() for b in timed))
        steps = sum(b.tgt.size(0) * (b.tgt.size(1) - 1) for b in timed)
        mean_src = src_tokens / sum(b.src.size(0) for b in timed)
        flops = train_flops(cfg, src_tokens, steps, mean_src)
        # ours steps only the rows whose target goes on (and scores only real tokens): at equal
        # GFLOP/s its speed-up would be this FLOP ratio; the rest is the rate each way reaches
        real_flops = train_flops(cfg, src_tokens, tokens, mean_src)
        baseline_s = tokens / r["tf"]["baseline_tokens_per_s"]
        best = training_precisions(device)[-1]      # what --cpu-bf16 trains in here (float32 without native bf16)
        tf, ss = r["tf"][best], r["ss"][best]
        row = {"precision": best,
               "tokens_per_s": round(tf["tokens_per_s"], 1),
               "baseline_tokens_per_s": round(r["tf"]["baseline_tokens_per_s"], 1),
               "speedup": round(tf["speedup"], 2), "speedup_spread": tf["speedup_spread"],
               "ss_tokens_per_s": round(ss["tokens_per_s"], 1),
               "ss_baseline_tokens_per_s": round(r["ss"]["baseline_tokens_per_s"], 1),
               "ss_speedup": round(ss["speedup"], 2), "ss_speedup_spread": ss["speedup_spread"],
               "gflops": round(flops / tf["seconds"] / 1e9, 1),
               "flop_ratio": round(flops / real_flops, 2),
               "own_gflops": round(real_flops / tf["seconds"] / 1e9, 1),
               "baseline_gflops": round(flops / baseline_s / 1e9, 1),
               # what ours would reach with every one of its FLOPs at the big-product peak: a bound
               "peak_bound_speedup": round(baseline_s / (real_flops / (1e9 * (
                   out["matmul_peak_bf16_gflops"] if best == "bf16" else peak))), 2),
               "params": sum(p.numel() for p in build_model(cfg).parameters()), "streams": r["streams"]}
        if best != "float32":           # the float32 fast path beside it
            f32, f32_ss = r["tf"]["float32"], r["ss"]["float32"]
            row.update(float32_tokens_per_s=round(f32["tokens_per_s"], 1), float32_speedup=round(f32["speedup"], 2),
                       float32_ss_speedup=round(f32_ss["speedup"], 2),
                       float32_gflops=round(flops / f32["seconds"] / 1e9, 1))
        if quick:
            row["epoch_s"] = round(epoch_tokens / tf["tokens_per_s"], 1)
            row["epoch_s_measured"] = False
        else:
            row["epoch_s"] = round(epoch_seconds(cfg, ds, device, best), 1)
            row["epoch_s_measured"] = True
        out[arch] = row
    return out


def flatten(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def _spread(d: dict, way: str) -> str:
    lo, hi = d.get(f"{way}_spread_s") or (None, None)
    return "" if lo is None else f"{lo}–{hi}"


def target_checks(report: dict) -> list[dict]:
    """The issues' targets beside what this run measured (None: not measurable here), for
    the sections the run has."""
    from .presets import ARCHS
    rows = []
    d, a, t = report.get("decode"), report.get("app"), report.get("train")
    if d:
        spread = d.get("speedup_greedy_spread") or ["", ""]
        rows += [("(b) at least 10 times faster than (a)",
                  f"{d['speedup_greedy']}× (median of {d.get('loop_runs', 1)} alternating pairs; spread "
                  f"{spread[0]}–{spread[1]}×)", d["speedup_greedy"] >= 10),
                 ("(b) whole test set under 3 s", f"{d['greedy_s']} s", d["greedy_s"] < 3),
                 ("(c) beam 5 under 15 s", f"{d['beam5_s']} s", d["beam5_s"] < 15)]
    if a:
        rows += [("app answer p95 under 150 ms (greedy, CPU)", f"{a.get('p95_ms')} ms",
                  None if a.get("p95_ms") is None else a["p95_ms"] < 150),
                 ("cold start to first heatmap under 5 s", f"{a.get('cold_start_s')} s",
                  None if a.get("cold_start_s") is None else a["cold_start_s"] < 5)]
    if t:
        archs = [k for k in ARCHS if k in t]
        rows += [("training at ratio 1.0: at least 3 times the tutorial loop, every architecture",
                  ", ".join(f"{k} {t[k]['speedup']}×" for k in archs), all(t[k]["speedup"] >= 3 for k in archs)),
                 ("training at ratio 0.5 (scheduled sampling): at least 2 times, every architecture",
                  ", ".join(f"{k} {t[k]['ss_speedup']}×" for k in archs if "ss_speedup" in t[k]),
                  all(t[k]["ss_speedup"] >= 2 for k in archs if "ss_speedup" in t[k])
                  if any("ss_speedup" in t[k] for k in archs) else None)]
    return [{"target": w, "measured": m, "met": ok} for w, m, ok in rows]


def targets_markdown(checks: list[dict], quick: bool) -> list[str]:
    lines = ["", "Targets" + (" (a --quick run: reduced inputs, not comparable with them)" if quick else "") + ":", "",
             "| target | measured | met |", "| --- | --- | --- |"]
    for c in checks:
        met = {True: "yes", False: "**no**", None: "not measurable on this machine"}[c["met"]]
        lines.append(f"| {c['target']} | {c['measured']} | {met} |")
    return lines


def decoding_markdown(report: dict) -> str:
    """The decoding and app part of the README's Performance section."""
    d, a = report["decode"], report["app"]
    lines = [f"Measured by `python -m seq2seq.bench` on {report['machine']} ({report['when']}).", "",
             f"Decoding `translate-bahdanau`, {d['sentences']} sentences of test 2016, CPU, {d['threads']} threads "
             f"({d['timing']}):", "",
             "| way | seconds (median) | spread | sentences/s | vs tutorial loop |", "| --- | --- | --- | --- | --- |",
             f"| (a) tutorial: one sentence at a time, Python loop | {d['loop_s']} | {_spread(d, 'loop')} | "
             f"{d['loop_sentences_per_s']} | 1.0× |",
             f"| (b) ours: batched greedy | {d['greedy_s']} | {_spread(d, 'greedy')} | {d['greedy_sentences_per_s']} | "
             f"{d['speedup_greedy']}× |",
             f"| (c) ours: batched beam search, width 5 | {d['beam5_s']} | {_spread(d, 'beam5')} | "
             f"{d['beam5_sentences_per_s']} | {d['speedup_beam5']}× |",
             "", f"(a) and (b) give identical translations: {d['loop_equals_greedy']}. (a) is the tutorials' "
             "`translate_sentence` step for step (batch of one, `torch.no_grad()` per step, attention stored, "
             f"`.item()`). (b) decodes length-sorted batches of {d.get('batch_sentences')} sentences on "
             f"{d.get('workers')} threads; its output-layer argmax: {d.get('output_argmax', 'float32')}. "
             f"(b) runs at {d['gflops']} GFLOP/s (analytic matmul count, the output layer counted as float32) "
             f"against {d['matmul_peak_gflops']} GFLOP/s for a 2048² float32 matrix product on the same machine "
             f"in the same run (oneDNN with a packed weight; torch's own matmul: {d.get('matmul_torch_gflops')})"
             + (f"; {d['matmul_peak_bf16_gflops']} GFLOP/s in bfloat16" if d.get("matmul_peak_bf16_gflops") else "")
             + ".", "",
             (f"App answer time (one Translate interaction, greedy, {a['inputs']} inputs): p50 {a['p50_ms']} ms, "
              f"p95 {a['p95_ms']} ms." if a.get("p50_ms") is not None else f"App answer time: {a.get('note')}.")
             + " Cold start of `streamlit run` to the first heatmap in Chromium: "
             f"{a.get('cold_start_s')} s (median of {a.get('cold_start_runs')}, spread "
             f"{a.get('cold_start_spread_s')}, a fresh server each time). Peak memory of the app process with "
             f"every checkpoint loaded: {a.get('peak_rss_mib')} MiB."]
    checks = [c for c in target_checks(report) if not c["target"].startswith("training")]
    return "\n".join(lines + targets_markdown(checks, report.get("quick")))


def training_markdown(report: dict) -> str:
    """The training part of the README's Performance section."""
    t = report["train"]
    cpu = t.get("cpu") or {}
    bf16 = "bf16" in t.get("precisions", [])
    streams = max([t[a].get("streams", 1) for a in ("lstm", "gru", "bahdanau", "luong") if a in t] or [1])
    peaks = f"{t.get('matmul_peak_gflops')} GFLOP/s float32" + (
        f", {t.get('matmul_peak_bf16_gflops')} GFLOP/s bf16" if t.get("matmul_peak_bf16_gflops") else "")
    lines = [f"Measured by `python -m seq2seq.bench --only train` on {report['machine']} ({report['when']}).", "",
             f"Training throughput on {t['device']} ({cpu.get('model', '')}"
             + (f", {cpu['isa']}" if cpu.get("isa") else "") + f", native bf16: {cpu.get('native_bf16')}; "
             f"target tokens/s, {t['batches_timed']} batches of 128; {t.get('timing', '')}; matrix-multiply peak in "
             f"the same run: {peaks}). \"Ours\" is " + ("the fast path with `--cpu-bf16` (bf16 matmuls; this CPU "
             "has native bf16), the float32 fast path beside it" if bf16 else "the float32 fast path (this CPU has "
             "no native bf16, so `--cpu-bf16` trains in float32 here)")
             + (f", each batch split across {streams} streams (threads with one core each, `--streams`, "
                "seq2seq/streams.py)" if streams > 1 else "") + ":", "",
             "| arch | ours, ratio 1.0 | tutorial loop, 1.0 | speed-up | ours, ratio 0.5 | tutorial loop, 0.5 | "
             "speed-up | GFLOP/s (ratio 1.0) | FLOPs: tutorial / ours | GFLOP/s on own FLOPs: ours / tutorial "
             "| bound: ours at the peak | one epoch |" + (" float32 fast path: speed-up 1.0 / 0.5 |" if bf16 else ""),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if bf16 else "")]
    for arch in ("lstm", "gru", "bahdanau", "luong"):
        if arch in t:
            r = t[arch]
            epoch = f"{r.get('epoch_s')} s" + ("" if r.get("epoch_s_measured") else " (estimate)")
            lines.append(f"| {arch} | {r['tokens_per_s']:,.0f} | {r['baseline_tokens_per_s']:,.0f} | {r['speedup']}× "
                         f"({r['speedup_spread'][0]}–{r['speedup_spread'][1]}) | {r.get('ss_tokens_per_s', 0):,.0f} | "
                         f"{r.get('ss_baseline_tokens_per_s', 0):,.0f} | {r.get('ss_speedup')}× | {r.get('gflops')} | "
                         f"{r.get('flop_ratio', '')}× | {r.get('own_gflops', '')} / {r.get('baseline_gflops', '')} | "
                         f"{r.get('peak_bound_speedup', '')}× | {epoch} |"
                         + (f" {r.get('float32_speedup')}× / {r.get('float32_ss_speedup')}× |" if bf16 else ""))
    lines += ["", "GFLOP/s: analytic matmul count, forward and backward, of the tutorial loop's work (every "
              "row at every step of the padded batch); \"FLOPs: tutorial / ours\": that count over ours, which "
              "steps only the rows whose target goes on, so the speed-up at ratio 1.0 is that ratio times the "
              "ratio of the rates each way reaches on its own FLOPs (the next two figures). \"Bound\": the "
              "speed-up ours would have at ratio 1.0 if every one of its FLOPs ran at the matrix-multiply peak "
              "above (a 2048² product; the decoder's products are [64, H] × [H, 3H] and smaller), in the "
              "precision ours trains in here."]
    checks = [c for c in target_checks(report) if c["target"].startswith("training")]
    return "\n".join(lines + targets_markdown(checks, report.get("quick")))


MARKERS = {"decode": ("<!-- bench:start -->", "<!-- bench:end -->", decoding_markdown),
           "train": ("<!-- bench-train:start -->", "<!-- bench-train:end -->", training_markdown)}


def write_readme(path: Path, report: dict) -> None:
    """Replace the README's marked blocks for the sections this run measured."""
    import re
    text = path.read_text()
    for section, (start, end, render) in MARKERS.items():
        if section in report and (section != "decode" or "app" in report):
            block = f"{start}\n{render(report)}\n{end}"
            text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    path.write_text(text)


def markdown_report(report: dict) -> str:
    return "\n\n".join(render(report) for section, (_, _, render) in MARKERS.items()
                       if section in report and (section != "decode" or "app" in report))




def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m seq2seq.bench", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="device for the training benchmark (decoding is always CPU)")
    p.add_argument("--data-dir", default=DATA_DIR)
    p.add_argument("--cache", default=None)
    p.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "translate-bahdanau"))
    p.add_argument("--json", action="store_true")
    p.add_argument("--quick", action="store_true", help="reduced run for CI")
    p.add_argument("--no-browser", action="store_true", help="skip cold start / peak memory")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per measurement (decoding and training)")
    p.add_argument("--only", nargs="+", choices=("decode", "app", "train"),
                   help="run only these sections (JSON out; --write needs all three)")
    p.add_argument("--write", default=None, help="replace the README's bench section with the report")
    args = p.parse_args(argv)
    data = tokenized_multi30k(args.data_dir, args.cache)
    ck = Path(args.checkpoint)
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
              "when": time.strftime("%Y-%m-%d"), "quick": args.quick}
    sections = set(args.only or ("decode", "app", "train"))
    if "decode" in sections:
        report["decode"] = bench_decoding(ck, data, args.quick, 1 if args.quick else args.repeats)
    if "app" in sections:
        report["app"] = bench_app_interaction(ck, data, args.quick)
        if not args.no_browser:
            report["app"].update(bench_app_server(args.quick))
    if "train" in sections:
        report["train"] = bench_training(data, torch.device(args.device), args.quick, args.repeats)
    if args.device == "cuda" and "train" in report:
        report["train"]["device_name"] = torch.cuda.get_device_name()
    report["targets"] = target_checks(report)
    if args.write:
        write_readme(Path(args.write), report)
    print(json.dumps(report) if args.json else markdown_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
