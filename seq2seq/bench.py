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
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .checkpoint import load_checkpoint
from .config import ModelConfig
from .data import PairDataset, collate, tokenized_multi30k
from .evaluate import decode_corpus, decode_workers
from .models import Seq2Seq, build_model
from .models.kernels import onednn_linear_available
from .models.output import cpu_has_native_bf16
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
    sentences = test["de"][:100] if quick else test["de"]
    sources = [ck.src_vocab.encode(s[: model.cfg.max_src_len]) for s in sentences]
    max_len = model.cfg.max_out_len
    cpu = torch.device("cpu")
    workers = decode_workers(cpu, len(sources))

    def run_loop():
        model.fast_kernels = False  # (a) runs torch's standard ops, as the tutorials do
        try:
            return [tutorial_greedy(model, s, max_len) for s in sources]
        finally:
            model.fast_kernels = True

    def run_greedy():
        return decode_corpus(model, sources, cpu, beam=1, batch_size=GREEDY_BATCH)

    # (a) and (b) are timed alternately, so both see the same machine load (a shared
    # 2-core machine drifts by 10-20% over minutes); the speed-up is the median of the
    # per-pair ratios. Warm-up: 20 sentences of (a), one run of (b), not timed.
    model.fast_kernels = False
    for s in sources[:20]:
        tutorial_greedy(model, s, max_len)
    model.fast_kernels = True
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


def bench_app_server(quick: bool, cold_starts: int = 3) -> dict:
    """Cold start to the first heatmap in a real browser (a fresh server each time: median
    and spread of `cold_starts`), and peak memory with every model loaded (last server)."""
    import shutil

    chromium = shutil.which("chromium")
    if not chromium:
        return {"cold_start_s": None, "peak_rss_mib": None, "note": "no chromium: browser timings skipped"}
    from playwright.sync_api import sync_playwright

    times, out = [], {}
    with sync_playwright() as p:
        n = 1 if quick else cold_starts
        for i in range(n):
            seconds, rss = _cold_start(p, chromium, load_everything=(i == n - 1))
            times.append(seconds)
            if rss is not None:
                out["peak_rss_mib"] = rss
    out["cold_start_s"] = round(statistics.median(times), 2)
    out["cold_start_spread_s"] = [round(min(times), 2), round(max(times), 2)]
    out["cold_start_runs"] = len(times)
    out["cold_start_what"] = ("`streamlit run` started -> heatmap title drawn in Chromium, a fresh server and "
                              "browser each run (the first page imports torch and spaCy)")
    return out


def _cold_start(p, chromium: str, load_everything: bool) -> tuple[float, float | None]:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.address", "127.0.0.1", "--server.port", str(port),
                             "--browser.gatherUsageStats", "false"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        while True:
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                break
            except OSError:
                if time.perf_counter() - t0 > 60:
                    raise RuntimeError("streamlit did not start in 60 s")
                time.sleep(0.05)
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
            status = Path(f"/proc/{proc.pid}/status").read_text()
            hwm = [line for line in status.splitlines() if line.startswith("VmHWM")]
            rss = round(int(hwm[0].split()[1]) / 1024, 1) if hwm else None
        browser.close()
        return seconds, rss
    finally:
        proc.terminate()
        proc.wait(10)


# ------------------------------------------------------------------ 3. training throughput
def tutorial_train_step(model: Seq2Seq, batch, optimizer, ratio: float = 0.5) -> int:
    """The tutorials' loop: padded RNN (no packing), float32, one coin per step for the whole batch."""
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


def our_train_step(model: Seq2Seq, batch, optimizer, amp: bool) -> int:
    with torch.autocast(batch.src.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(batch.src, batch.src_lens, batch.tgt, teacher_forcing=1.0)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), batch.tgt[:, 1:].reshape(-1),
                           ignore_index=PAD_ID)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return batch.n_target_tokens


def bench_training(data, device: torch.device, quick: bool) -> dict:
    from .vocab import Vocab

    src_vocab = Vocab.build(data["train"]["de"], 2)
    tgt_vocab = Vocab.build(data["train"]["en"], 2)
    src = [src_vocab.encode(s) for s in data["train"]["de"]]
    tgt = [tgt_vocab.encode(t) for t in data["train"]["en"]]
    ds = PairDataset(src, tgt)
    n_batches = 4 if quick else (40 if device.type == "cuda" else 12)
    out = {"device": device.type, "batches_timed": n_batches, "batch_size": 128}
    for arch in ("lstm", "gru", "bahdanau", "luong"):
        shipped = ROOT / "checkpoints" / f"translate-{arch}" / "card.json"
        cfg = ModelConfig.from_dict(json.loads(shipped.read_text())["config"]) if shipped.exists() \
            else ModelConfig(arch=arch)
        cfg.src_vocab_size, cfg.tgt_vocab_size = len(src_vocab), len(tgt_vocab)
        results = {}
        for way in ("baseline", "ours"):
            torch.manual_seed(0)
            random.seed(0)
            model = build_model(cfg).to(device).train()
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            if way == "ours":
                batches = list(ds.batches(128, shuffle=True, seed=1))
            else:  # random batches: no length grouping
                idx = list(range(len(ds)))
                random.Random(1).shuffle(idx)
                batches = [collate([src[i] for i in idx[j:j + 128]], [tgt[i] for i in idx[j:j + 128]],
                                   idx[j:j + 128]) for j in range(0, len(idx), 128)]
            batches = [b.to(device) for b in batches[: n_batches + 2]]
            step = (lambda b: tutorial_train_step(model, b, opt)) if way == "baseline" else \
                (lambda b: our_train_step(model, b, opt, amp=device.type == "cuda"))
            for b in batches[:2]:  # warm-up
                step(b)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            tokens = sum(step(b) for b in batches[2:])
            if device.type == "cuda":
                torch.cuda.synchronize()
            results[way] = tokens / (time.perf_counter() - t0)
        out[arch] = {"tokens_per_s": round(results["ours"], 1), "baseline_tokens_per_s": round(results["baseline"], 1),
                     "speedup": round(results["ours"] / results["baseline"], 2), "params": sum(p.numel() for p in model.parameters())}
    if "bahdanau" in out:
        out["bahdanau"]["epoch_s_estimate"] = round(sum(len(t) + 1 for t in tgt) / out["bahdanau"]["tokens_per_s"], 1)
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
    """The issue's targets beside what this run measured (None: not measurable here)."""
    d, a, t = report["decode"], report["app"], report["train"]
    gpu = t.get("device") == "cuda"
    rows = [
        ("(b) at least 10 times faster than (a)",
         f"{d['speedup_greedy']}× (median of {d.get('loop_runs', 1)} alternating pairs; spread "
         f"{(d.get('speedup_greedy_spread') or ['', ''])[0]}–{(d.get('speedup_greedy_spread') or ['', ''])[1]}×)",
         d["speedup_greedy"] >= 10),
        ("(b) whole test set under 3 s", f"{d['greedy_s']} s", d["greedy_s"] < 3),
        ("(c) beam 5 under 15 s", f"{d['beam5_s']} s", d["beam5_s"] < 15),
        ("app answer p95 under 150 ms (greedy, CPU)", f"{a['p95_ms']} ms",
         None if a.get("p95_ms") is None else a["p95_ms"] < 150),
        ("cold start to first heatmap under 5 s", f"{a.get('cold_start_s')} s",
         None if a.get("cold_start_s") is None else a["cold_start_s"] < 5),
        ("training: at least 3 times the baseline on a GPU",
         ", ".join(f"{k} {t[k]['speedup']}×" for k in ("lstm", "gru", "bahdanau", "luong") if k in t),
         all(t[k]["speedup"] >= 3 for k in ("lstm", "gru", "bahdanau", "luong") if k in t) if gpu else None),
        ("one bahdanau epoch under 10 s on an H100",
         f"{t.get('bahdanau', {}).get('epoch_s_estimate')} s (estimate) on {t.get('device_name', t.get('device'))}",
         (t["bahdanau"]["epoch_s_estimate"] < 10) if gpu and "H100" in t.get("device_name", "") else None),
    ]
    return [{"target": w, "measured": m, "met": ok} for w, m, ok in rows]


def markdown_report(report: dict) -> str:
    d, a, t = report["decode"], report["app"], report["train"]
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
             f"every checkpoint loaded: {a.get('peak_rss_mib')} MiB.", "",
             f"Training throughput on {t['device']} (target tokens/s, {t['batches_timed']} batches of 128 after 2 warm-up):",
             "", "| arch | ours | tutorial loop | speedup |", "| --- | --- | --- | --- |"]
    for arch in ("lstm", "gru", "bahdanau", "luong"):
        if arch in t:
            lines.append(f"| {arch} | {t[arch]['tokens_per_s']:,.0f} | {t[arch]['baseline_tokens_per_s']:,.0f} | {t[arch]['speedup']}× |")
    lines += ["", "Targets" + (" (a --quick run: reduced inputs, not comparable with them)" if report.get("quick") else "")
              + ":", "", "| target | measured | met |", "| --- | --- | --- |"]
    for c in report.get("targets") or target_checks(report):
        met = {True: "yes", False: "**no**", None: "not measurable on this machine"}[c["met"]]
        lines.append(f"| {c['target']} | {c['measured']} | {met} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m seq2seq.bench", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="device for the training benchmark (decoding is always CPU)")
    p.add_argument("--data-dir", default="../shared/data/multi30k")
    p.add_argument("--cache", default=None)
    p.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "translate-bahdanau"))
    p.add_argument("--json", action="store_true")
    p.add_argument("--quick", action="store_true", help="reduced run for CI")
    p.add_argument("--no-browser", action="store_true", help="skip cold start / peak memory")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--write", default=None, help="replace the README's bench section with the report")
    args = p.parse_args(argv)
    data = tokenized_multi30k(args.data_dir, args.cache)
    ck = Path(args.checkpoint)
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
              "when": time.strftime("%Y-%m-%d"), "quick": args.quick}
    report["decode"] = bench_decoding(ck, data, args.quick, 1 if args.quick else args.repeats)
    report["app"] = bench_app_interaction(ck, data, args.quick)
    if not args.no_browser:
        report["app"].update(bench_app_server(args.quick))
    report["train"] = bench_training(data, torch.device(args.device), args.quick)
    if args.device == "cuda":
        report["train"]["device_name"] = torch.cuda.get_device_name()
    report["targets"] = target_checks(report)
    if args.write:
        import re
        path = Path(args.write)
        text = path.read_text()
        start, end = "<!-- bench:start -->", "<!-- bench:end -->"
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n{markdown_report(report)}\n{end}",
                      text, flags=re.S)
        path.write_text(text)
    print(json.dumps(report) if args.json else markdown_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
