"""What a teacher-forcing sweep found, in numbers and in plain words, computed from its
results file (seq2seq.sweep), never typed by hand: the Teacher forcing page and the
README's results section (seq2seq.report) both read it from here.

`policy_summary` gives, per arch and policy, the final free-running test metric over
seeds (n, mean, sample standard deviation, min, max). `findings` turns it into sentences:
which policy won by mean, by how much against constant 1, whether that gap is larger than
the seed spread, and whether the tutorials' rule (ratio 0.5, one coin per step for the
whole batch) differs from constant 0.5 (one coin per token) beyond the spread.

The spread rule (SPREAD_RULE): a difference between two policies' means counts as beyond
the seed spread when it is larger than the wider of their two min-max ranges over seeds;
with one seed a policy's spread is unknown, and nothing is claimed. Works on format 1
files too (no coin, tutorials' rule or teacher-forced fields there)."""
from __future__ import annotations

import math
import statistics
from pathlib import Path

from .sweep import BASELINE, SWEEPS, TUTORIALS_RULE

PER_TOKEN_TWIN = "constant 0.5"         # the same ratio with the engine's coin
METRIC_LABELS = {"exact_match": "exact match", "bleu": "BLEU"}
COIN_LABELS = {"token": "one per token", "step": "one per step for the batch"}
COIN_CAPTION = ("Coin: the engine flips one coin per token (for every sequence and every step) to choose the gold "
                "or the predicted input; the tutorials' rule 0.5 flips one per step for the whole batch, as the "
                "PyTorch tutorials do, so at a step either every sequence is fed the gold token or none is.")
SPREAD_RULE = ("Rule used for the seed spread: a difference between two policies' means counts as beyond the "
               "spread when it is larger than the wider of their two min–max ranges over seeds; with one seed a "
               "policy's spread is unknown.")


# ------------------------------------------------------------------ the file's vocabulary
def metric_key(results: dict) -> str:
    """The final free-running test metric's key in each run's "final" (exact_match or bleu)."""
    return results.get("metric") or ("bleu" if results.get("task") == "translate" else "exact_match")


def metric_label(results: dict) -> str:
    return METRIC_LABELS.get(metric_key(results), "score")


def format_value(results: dict, value: float | None, signed: bool = False) -> str:
    """A metric value as the findings write it: exact match (a share) to 4 decimals (the
    reversal sweep's attention runs differ by 1-5 sequences in 10,000), BLEU to 2."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    digits = 2 if metric_key(results) == "bleu" else 4
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def planned_runs(results: dict) -> int | None:
    """How many runs the sweep plans: every setting for every arch and seed, plus the
    second pass's extra seeds (constant 1 and the best scheduled policy), counted before
    that pass has chosen its policy too. None where the file does not say."""
    try:
        archs = len(results.get("archs") or [None])
        n = len(results["settings"]) * archs * len(results["seeds"])
    except (KeyError, TypeError):
        return None
    extra = results.get("extra_seeds") or {}
    if extra:
        return n + len(extra.get("settings", ())) * len(extra.get("seeds", ())) * archs
    return n + 2 * int((results.get("options") or {}).get("extra_seeds") or 0) * archs


def _scheduled(tf: dict) -> bool:
    """As sweep.Setting.scheduled: mixes gold and predicted inputs at some point."""
    return not (tf.get("kind", "constant") == "constant" and float(tf.get("ratio", 1.0)) in (0.0, 1.0))


def setting_info(results: dict) -> dict[str, dict]:
    """label -> {coin, scheduled, tutorials_rule, rank} for every policy of the file (its
    settings in order, then any run's setting not listed). Format 1 files lack the coin,
    scheduled and tutorials_rule fields: they are worked out from the teacher-forcing config."""
    out: dict[str, dict] = {}

    def add(label: str, entry: dict, tf: dict) -> None:
        coin = entry.get("coin") or tf.get("coin") or "token"
        out[label] = {"coin": coin, "scheduled": bool(entry.get("scheduled", _scheduled(tf))),
                      "tutorials_rule": bool(entry.get("tutorials_rule", label == TUTORIALS_RULE)),
                      "rank": len(out)}

    for s in results.get("settings", []):
        add(s["label"], s, s.get("teacher_forcing") or {})
    for r in results.get("runs", []):
        if r["setting"] not in out:
            add(r["setting"], {}, r.get("teacher_forcing") or {})
    return out


def policy_order(results: dict) -> list[str]:
    return list(setting_info(results))


def run_value(results: dict, run: dict) -> float | None:
    """A run's final free-running test metric; None for a failed or unfinished run."""
    if run.get("error"):
        return None
    value = (run.get("final") or {}).get(metric_key(results))
    if not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


# ------------------------------------------------------------------ per policy
def policy_summary(results: dict) -> list[dict]:
    """Per arch (in the file's order) and policy (in the settings' order) with at least one
    finished run: {arch, strategy, coin, tutorials_rule, scheduled, seeds (n), seed_list,
    mean, std (sample, n - 1; None with one seed), min, max, range (max - min), failed}."""
    info = setting_info(results)
    values: dict[tuple[str, str], list[tuple[int, float]]] = {}
    failed: dict[tuple[str, str], int] = {}
    archs: list[str] = list(results.get("archs") or [])
    for r in results.get("runs", []):
        if r["arch"] not in archs:
            archs.append(r["arch"])
        key = (r["arch"], r["setting"])
        v = run_value(results, r)
        if v is None:
            failed[key] = failed.get(key, 0) + 1
        else:
            values.setdefault(key, []).append((r["seed"], v))
    rows = []
    for arch in archs:
        for label, meta in info.items():
            got = values.get((arch, label))
            if not got:
                continue
            vals = [v for _, v in got]
            rows.append({"arch": arch, "strategy": label, "coin": meta["coin"],
                         "tutorials_rule": meta["tutorials_rule"], "scheduled": meta["scheduled"],
                         "seeds": len(vals), "seed_list": sorted(s for s, _ in got),
                         "mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else None,
                         "min": min(vals), "max": max(vals), "range": max(vals) - min(vals),
                         "failed": failed.get((arch, label), 0)})
    return rows


def compare(a: dict, b: dict) -> dict:
    """Two policy_summary rows: {gap (a's mean - b's), spread (the wider min-max range, None
    when either has one seed), beyond (|gap| > spread; None when the spread is unknown)}."""
    gap = a["mean"] - b["mean"]
    if a["seeds"] < 2 or b["seeds"] < 2:
        return {"gap": gap, "spread": None, "beyond": None}
    spread = max(a["range"], b["range"])
    return {"gap": gap, "spread": spread, "beyond": abs(gap) > spread + 1e-12}


# ------------------------------------------------------------------ in words
def _seeds(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def _spread_clause(results: dict, a: dict, b: dict) -> str:
    c = compare(a, b)
    if c["spread"] is None:
        few = [x["strategy"] for x in (a, b) if x["seeds"] < 2]
        return (f"with one seed for {' and '.join(few)} the seed spread is unknown, so this cannot be told "
                "apart from seed noise")
    spread = format_value(results, c["spread"])
    if c["beyond"]:
        return f"larger than the seed spread (the wider min–max range of the two is {spread})"
    return f"not larger than the seed spread (the wider min–max range of the two is {spread}), so it may be seed noise"


def _arch_findings(results: dict, rows: list[dict], prefix: str) -> list[str]:
    fmt = lambda v: format_value(results, v)  # noqa: E731
    label = metric_label(results)
    by = {r["strategy"]: r for r in rows}
    ranked = sorted(rows, key=lambda r: -r["mean"])          # stable: ties keep the settings' order
    best = ranked[0]
    ties = [r["strategy"] for r in ranked[1:] if abs(r["mean"] - best["mean"]) <= 1e-12]
    out = [f"{prefix}Best policy by mean free-running test {label}: {best['strategy']} ({fmt(best['mean'])} over "
           f"{_seeds(best['seeds'])})" + (f", tied with {', '.join(ties)}" if ties else "") + "."]
    base = by.get(BASELINE)
    if base is None:
        out.append(f"{prefix}There is no {BASELINE} run to compare with.")
    elif best is not base:
        c = compare(best, base)
        if abs(c["gap"]) <= 1e-12:
            out.append(f"{prefix}{best['strategy']} ties with {BASELINE} ({fmt(base['mean'])} over "
                       f"{_seeds(base['seeds'])}): no gap to weigh against the seed spread.")
        else:
            out.append(f"{prefix}{best['strategy']} beats {BASELINE} ({fmt(base['mean'])} over "
                       f"{_seeds(base['seeds'])}) by {fmt(c['gap'])}: {_spread_clause(results, best, base)}.")
    elif ties:
        out.append(f"{prefix}{BASELINE} (teacher forcing throughout) shares the best mean with {', '.join(ties)}: "
                   "no gap to weigh against the seed spread.")
    elif len(ranked) > 1:
        runner = ranked[1]
        c = compare(base, runner)
        out.append(f"{prefix}{BASELINE} (teacher forcing throughout) is the best policy; the runner-up, "
                   f"{runner['strategy']} ({fmt(runner['mean'])} over {_seeds(runner['seeds'])}), is "
                   f"{fmt(c['gap'])} behind: {_spread_clause(results, base, runner)}.")
    tutorial = next((r for r in rows if r["tutorials_rule"]), None)
    twin = by.get(PER_TOKEN_TWIN)
    if tutorial is not None and twin is None:
        out.append(f"{prefix}There is no {PER_TOKEN_TWIN} run to set the tutorials' rule against.")
    elif tutorial is not None:
        c = compare(tutorial, twin)
        # a gap that rounds to zero where it is printed reads "the same", not "higher by 0.0000"
        shown_gap = fmt(abs(c["gap"]))
        if shown_gap == fmt(0.0):
            how, amount = "the same to the digits shown", ""
        else:
            how, amount = ("higher" if c["gap"] > 0 else "lower"), f" by {shown_gap}"
        if c["spread"] is None:
            few = " and ".join(x["strategy"] for x in (tutorial, twin) if x["seeds"] < 2)
            verdict = (f"; with one seed for {few} the seed spread is unknown, so whether the coin granularity "
                       "matters cannot be told")
        elif c["beyond"]:
            verdict = (f", beyond the seed spread (the wider min–max range of the two is {fmt(c['spread'])}): "
                       "the coin granularity made a difference")
        else:
            verdict = (f", within the seed spread (the wider min–max range of the two is {fmt(c['spread'])}): "
                       "no difference from the coin granularity that the seeds can show")
        out.append(f"{prefix}The tutorials' rule (ratio 0.5, one coin per step for the whole batch) scored "
                   f"{fmt(tutorial['mean'])} over {_seeds(tutorial['seeds'])} against {fmt(twin['mean'])} over "
                   f"{_seeds(twin['seeds'])} for {PER_TOKEN_TWIN} (one coin per token): {how}{amount}{verdict}.")
    return out


def findings(results: dict) -> list[str]:
    """The sweep's findings in plain words, from `policy_summary` (one block per arch,
    each sentence prefixed with the arch when the sweep has several), then SPREAD_RULE."""
    rows = policy_summary(results)
    if not rows:
        return ["No run of this sweep has finished yet, so there is nothing to compare."]
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    out = []
    for arch in archs:
        prefix = f"{arch}: " if len(archs) > 1 else ""
        out += _arch_findings(results, [r for r in rows if r["arch"] == arch], prefix)
    if not any(meta["tutorials_rule"] for meta in setting_info(results).values()):
        older = results.get("format_version", 1) < 2
        out.append("This file has no tutorials' rule runs" + (" (its format predates them)" if older else "")
                   + ", so one coin per step cannot be set against one per token.")
    out.append(SPREAD_RULE)
    return out


# ------------------------------------------------------------------ files
def sweep_files(folder: str | Path) -> dict[str, Path]:
    """sweep name -> results file in `folder` (<name>.json, hidden files skipped), the
    reversal first, then the translation, then any other in name order."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    found = {p.stem: p for p in sorted(folder.glob("*.json")) if not p.name.startswith(".")}
    rank = {name: i for i, name in enumerate(SWEEPS)}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))
