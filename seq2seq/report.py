"""Build the README's results section from the checkpoint cards and the teacher-forcing
sweep files (never typed by hand).

    python -m seq2seq.report [--checkpoints checkpoints] [--sweeps checkpoints/sweeps] [--write README.md]

With --write, the text between the markers <!-- results:start --> and
<!-- results:end --> is replaced; otherwise the section is printed. Each sweep file present
(reverse.json, translate.json) adds its per-policy table (mean, min-max and std of the
final free-running test metric over seeds) and its findings in words
(seq2seq.sweep_findings)."""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import replace
from pathlib import Path

from .card import Card
from .checkpoint import list_checkpoints, read_card
from .config import Decoding
from .errors import CheckpointError, Seq2SeqError
from .init_from import chain, lineage
from .subword import source_units

START, END = "<!-- results:start -->", "<!-- results:end -->"

# bentrevett/pytorch-seq2seq, Multi30k de->en, test 2016, BLEU on lowercased spaCy tokens
TUTORIAL_REFERENCE = [
    {"name": "tutorial 1: LSTM (Sutskever)", "arch": "lstm", "params": 13.9e6, "ppl": 43.8, "bleu": 13.8},
    {"name": "tutorial 2: GRU (Cho)", "arch": "gru", "params": 14.2e6, "ppl": 37.5, "bleu": 20.6},
    {"name": "tutorial 3: GRU + Bahdanau attention", "arch": "bahdanau", "params": 20.5e6, "ppl": 25.6, "bleu": 28.3},
]


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def _fmt_params(n) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def _bleu(value) -> str:
    """Two decimals, as the cards record them (40.20 must not read as 40.2, nor 39.95 as 40.0)."""
    return f"{value:.2f}" if isinstance(value, (int, float)) else "-"


def _fmt_size(n) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def training_runs(card: Card) -> list[dict]:
    """The training runs behind a checkpoint's weights, first to last, each once: one for a
    plain run; the parent's (and the runs it continued) and its own for a continuation
    (`train --init-from`); for a soup (`seq2seq.soup`), the runs its first ingredient
    continued (its card's provenance is that ingredient's), then each ingredient's."""
    soup = card.extra.get("soup")
    runs = ([*chain(card.provenance.get("init_from"))[::-1], *soup["ingredients"]] if soup
            else lineage(card)[::-1])
    once = {run["weights_sha256"]: run for run in runs}
    return [dict(run, continued=bool(run.get("init_from"))) for run in once.values()]


def _where(p: dict) -> str:
    where = p.get("cpu_model") or p.get("device_name", "?")
    return where + (f", {p['cpu_threads']} thread{'s' if p['cpu_threads'] != 1 else ''}" if p.get("cpu_threads")
                    else "")


def _device(card: Card) -> str:
    places = list(dict.fromkeys(_where(r) for r in training_runs(card)))
    return f"{card.provenance['device']} ({'; '.join(places)})"


def _training(card: Card) -> str:
    runs = training_runs(card)
    if len(runs) == 1:
        epochs = card.provenance.get("epochs_run", len(card.history))
        return f"{card.provenance['wall_seconds'] / 60:.1f} min, {epochs} epochs"
    parts = [f"{r.get('wall_seconds', 0) / 60:.1f} min{' continued' if r['continued'] else ''} "
             f"({r.get('epochs_run', '?')} epochs)" for r in runs]
    return " + ".join(parts) + (", weights averaged" if card.extra.get("soup") else "")


def rows(root: Path) -> tuple[list[dict], list[str]]:
    out, problems = [], []
    for d in list_checkpoints(root):
        try:
            card = read_card(d)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        out.append({"dir": d, "card": card, "bytes": dir_size(d)})
    return out, problems


def translation_table(items) -> str:
    lines = ["| model | params | size on disk | German read as | BLEU (tutorial form) | sacreBLEU | "
             "test PPL (teacher-forced) | decoding | trained on | training | stopped |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for it in items:
        c: Card = it["card"]
        m = c.split_metrics("test2016")
        dec_s = Decoding.from_card(m.get("decoding")).label
        source = source_units(c.tokenizers.get("src"), c.train_config)
        lines.append(f"| `{c.name}` | {_fmt_params(c.params)} | {_fmt_size(it['bytes'])} | {source} | {_bleu(m.get('bleu'))} | "
                     f"{_bleu(m.get('sacrebleu'))} | {m.get('ppl', '-')} | {dec_s} | {_device(c)} | {_training(c)} | "
                     f"{c.stopped or '-'} |")
    for ref in TUTORIAL_REFERENCE:
        lines.append(f"| {ref['name']} (reference) | {_fmt_params(ref['params'])} | - | - | {ref['bleu']} | - | "
                     f"{ref['ppl']} (free-running, not comparable) | greedy | GPU | - | - |")
    return "\n".join(lines)


REVERSAL_SPANS = ((1, 10), (1, 20), (21, 30), (1, 40), (41, 60))


def reversal_note(cards) -> str:
    """What the reversal cards' exact match measures, read from the cards (fresh sequences
    per length, the lengths each model was trained on), so no page or README states it by
    hand: the shipped models once moved from lengths 1-20 to 1-40 and a typed caption did not."""
    groups: dict[tuple, list[str]] = {}
    for card in cards:
        tc = card.train_config or {}
        n = (card.metrics.get("reversal") or {}).get("n_per_length")
        groups.setdefault((n, tc.get("reverse_min_len"), tc.get("reverse_max_len")), []).append(card.name)

    def trained(lo, hi):
        if lo is None or hi is None:
            return "training lengths not recorded"
        return f"trained on lengths {lo}–{hi}"

    def fresh(n):
        return f"{n} fresh sequences per length" if n else "fresh sequences per length (how many is not recorded)"

    if not groups:
        return ""
    if len(groups) == 1:
        (n, lo, hi), names = next(iter(groups.items()))
        return f"Exact match on {fresh(n)}; {'the model was' if len(names) == 1 else 'the models were'} " \
               f"{trained(lo, hi)}."
    return "Exact match on " + "; ".join(f"{fresh(n)} for {', '.join(names)} ({trained(lo, hi)})"
                                         for (n, lo, hi), names in groups.items()) + "."


def coverage_measured(metrics: dict) -> str:
    """What the coverage penalty did to this model's validation BLEU, from the decodings its
    card records (`evaluate --choose-decoding` with :covB entries), each beside the same
    decoding without the penalty; "" where the card measured none. For the Beam search page,
    so a visitor moving the slider knows what the penalty does to this model on a corpus."""
    val = (metrics or {}).get("val") or {}
    runs = val.get("by_decoding") or {}
    parts = []
    for key, result in runs.items():
        try:
            dec = Decoding.from_key(key)
        except ValueError:
            continue
        without = replace(dec, coverage=0.0)
        plain = runs.get(without.key)
        if dec.coverage and plain:
            parts.append(f"{without.label}: BLEU {plain['bleu']:.2f} without the penalty, {result['bleu']:.2f} "
                         f"with β = {dec.coverage:g}")
    if not parts:
        return ""
    return f"Measured on the {val.get('sentences', 0):,} validation sentences: " + "; ".join(parts) + "."


def reversal_table(items) -> str:
    spans = " | ".join(f"{lo}-{hi}" for lo, hi in REVERSAL_SPANS)
    lines = [f"| model | params | size on disk | trained on lengths | exact match {spans} | trained on | training |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in REVERSAL_SPANS) + " | --- | --- |"]
    pct = lambda v: f"{100 * v:.1f}%" if isinstance(v, (int, float)) else "-"  # noqa: E731
    for it in items:
        c: Card = it["card"]
        tc = c.train_config or {}
        trained = f"{tc.get('reverse_min_len', '?')}-{tc.get('reverse_max_len', '?')}"
        cells = " | ".join(pct(c.metrics.get(f"exact_match_{lo}_{hi}")) for lo, hi in REVERSAL_SPANS)
        lines.append(f"| `{c.name}` | {_fmt_params(c.params)} | {_fmt_size(it['bytes'])} | {trained} | {cells} | "
                     f"{_device(c)} | {_training(c)} |")
    return "\n".join(lines)


SWEEP_TITLES = {"reverse": "reversal", "translate": "translation (Multi30k, test 2016)"}


def sweep_table(results: dict) -> str:
    """One row per arch and policy: seeds, mean, min–max and sample std of the final
    free-running test metric (the tutorials' rule's coin marked)."""
    from .sweep_findings import COIN_LABELS, format_value, metric_label, policy_summary

    fmt = lambda v: "-" if v is None else format_value(results, v)  # noqa: E731
    lines = [f"| arch | policy | coin | seeds | mean {metric_label(results)} | min–max | std |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in policy_summary(results):
        policy = f"**{r['strategy']}**" if r["tutorials_rule"] else r["strategy"]
        lines.append(f"| {r['arch']} | {policy} | {COIN_LABELS.get(r['coin'], r['coin'])} | {r['seeds']} | "
                     f"{fmt(r['mean'])} | {fmt(r['min'])}–{fmt(r['max'])} | {fmt(r['std'])} |")
    return "\n".join(lines)


def sweep_block(name: str, results: dict) -> str:
    """A sweep file's headline: how it was made, its table and its findings."""
    from .sweep_findings import findings, metric_label, planned_runs

    made = "the full sweep" if results.get("scale") == "full" else (results.get("note") or "a reduced sweep")
    planned = planned_runs(results)
    done = "" if results.get("complete", True) else (f" of {planned}" if planned else "") + ", not finished yet"
    head = (f"Teacher forcing sweep, {SWEEP_TITLES.get(name, name)} (`{name}.json`, {len(results['runs'])} runs"
            f"{done}; {made}). Final free-running test {metric_label(results)} over seeds:")
    return "\n\n".join([head, sweep_table(results), "\n".join(f"- {line}" for line in findings(results))])


def sweep_section(folder: Path) -> str:
    """Every sweep file in `folder` (reversal first), or "" when there is none."""
    from .sweep import load_results
    from .sweep_findings import sweep_files

    parts = []
    for name, path in sweep_files(folder).items():
        try:
            parts.append(sweep_block(name, load_results(path)))
        except Seq2SeqError as e:
            parts.append(f"Teacher forcing sweep `{path.name}`: not readable ({e}).")
    return "\n\n".join(parts)


def build(root: Path, sweeps: Path | None = None) -> str:
    items, problems = rows(root)
    parts = []
    tr = [i for i in items if i["card"].task == "translate"]
    rv = [i for i in items if i["card"].task == "reverse"]
    if tr:
        parts.append("Translation, Multi30k German → English, test 2016:\n\n" + translation_table(tr))
    if rv:
        parts.append(f"Reversal. {reversal_note([i['card'] for i in rv])}\n\n" + reversal_table(rv))
    sweep_text = sweep_section(Path(sweeps) if sweeps is not None else Path(root) / "sweeps")
    if sweep_text:
        parts.append(sweep_text)
    if problems:
        parts.append("Unreadable checkpoints: " + "; ".join(problems))
    parts.append("_Generated by `python -m seq2seq.report --write README.md` from the checkpoint cards"
                 + (" and the sweep files" if sweep_text else "") + "._")
    return "\n\n".join(parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m seq2seq.report", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoints", default="checkpoints")
    p.add_argument("--sweeps", default=None, help="folder of sweep results files (default: CHECKPOINTS/sweeps)")
    p.add_argument("--write", default=None, help="file whose results section is replaced")
    args = p.parse_args(argv)
    table = build(Path(args.checkpoints), Path(args.sweeps) if args.sweeps else None)
    if not args.write:
        print(table)
        return 0
    path = Path(args.write)
    text = path.read_text(encoding="utf-8")
    if START not in text or END not in text:
        print(f"error: {path} has no {START} ... {END} markers", file=sys.stderr)
        return 2
    new = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: f"{START}\n{table}\n{END}", text, flags=re.S)
    path.write_text(new, encoding="utf-8")
    print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
