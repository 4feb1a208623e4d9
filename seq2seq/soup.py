"""Average the weights of translation checkpoints that share a start (a uniform "model
soup", Wortsman et al. 2022; for NMT, checkpoint averaging).

    python -m seq2seq.soup OUT PARENT CONTINUATION [...] --cache cache/multi30k-tokens.json.gz \
        [--data-dir ../shared/data/multi30k] [--decodings 1] [--name NAME]

The ingredients are a model and its continuations (`train --init-from`): weights that
started from one point stay in one basin, so their average is a model, often a slightly
better one; the average of independently initialized models is not (their hidden units
are permuted), so ingredients without a common start are refused. The soup is measured
like a trained checkpoint (val and test 2016; the decoding chosen on val BLEU among
--decodings) and its card records every ingredient (name, weights sha256, seed, epochs,
wall seconds, history) and the wall time of all their training together. Training
history and settings are the first ingredient's; the snapshots of OUT, if any, are kept."""
from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import torch

from .card import Card
from .checkpoint import git_commit, load_checkpoint, save_checkpoint, vocab_file_bytes
from .cli import ArgumentParser, run_main
from .config import Decoding
from .data import tokenized_multi30k
from .errors import Seq2SeqError
from .evaluate import choose_decoding, decodings_arg, update_card_metrics
from .init_from import lineage, model_differences
from .presets import DATA_DIR

INGREDIENT_PROVENANCE = ("trained_at", "wall_seconds", "epochs_run", "stopped", "seed", "cpu_model", "cpu_threads",
                         "mixed_precision", "git_commit")


def ancestry(card) -> list[str]:
    """The weights sha256 of a checkpoint and of every checkpoint it continued from."""
    return [run["weights_sha256"] for run in lineage(card)]


def check_ingredients(cks) -> None:
    """One task, one architecture and size, one vocabulary, and a common start."""
    if len(cks) < 2:
        raise Seq2SeqError("a soup needs at least two checkpoints")
    first = cks[0]
    if any(ck.task != "translate" for ck in cks):
        raise Seq2SeqError("soups are made of translation checkpoints")
    for ck in cks[1:]:
        differ = model_differences(ck.card.model_config, first.card.model_config)
        if differ:
            raise Seq2SeqError(f"{ck.path}: its model differs from {first.path}'s in {', '.join(differ)}")
        if vocab_file_bytes(ck.src_vocab, ck.tgt_vocab) != vocab_file_bytes(first.src_vocab, first.tgt_vocab):
            raise Seq2SeqError(f"{ck.path}: its vocabularies differ from {first.path}'s")
    common = set.intersection(*(set(ancestry(ck.card)) for ck in cks))
    if not common:
        raise Seq2SeqError("these checkpoints share no start (none continues another: train --init-from); "
                           "the average of separately initialized models is not a model")


def average_weights(models) -> dict[str, torch.Tensor]:
    """The uniform average of the models' float weights (float32 sums)."""
    states = [m.state_dict() for m in models]
    return {k: (sum(s[k].float() for s in states) / len(states)).to(states[0][k].dtype)
            if states[0][k].is_floating_point() else states[0][k] for k in states[0]}


def ingredient_entry(card) -> dict:
    prov = card.provenance
    return {"name": card.name, "weights_sha256": card.weights_sha256,
            **{k: prov[k] for k in INGREDIENT_PROVENANCE if k in prov},
            **({"init_from": prov["init_from"]["name"]} if prov.get("init_from") else {}),
            "lr": (card.train_config or {}).get("lr"), "val_bleu_greedy": card.split_metrics("val")
            .get("by_decoding", {}).get("beam1", {}).get("bleu"), "history": card.history}


def soup_card(cks, name: str, metrics: dict) -> dict:
    base = cks[0].card
    # each training run once, though several ingredients' records name it (their common start)
    runs = {run["weights_sha256"]: run for ck in cks for run in lineage(ck.card)}
    card = base.to_dict()
    for k in ("format_version", "arch", "config", "params", "weights_dtype", "files", "weights_sha256"):
        card.pop(k, None)          # save_checkpoint fills these in for the new weights
    card.update(
        name=name, metrics=metrics,
        description=f"{base.arch} encoder-decoder, translate task; the weights averaged over {len(cks)} runs "
                    f"from one start ({', '.join(ck.name for ck in cks)})",
        soup={"method": "uniform average of the weights", "made_at": dt.datetime.now(dt.timezone.utc)
              .isoformat(timespec="seconds"), "git_commit": git_commit(),
              "ingredients": [ingredient_entry(ck.card) for ck in cks]},
        provenance={**base.provenance,
                    "wall_seconds_total": round(sum(run.get("wall_seconds", 0.0) for run in runs.values()), 1),
                    "epochs_run_total": sum(run.get("epochs_run", 0) for run in runs.values())})
    return card


def end_series_with_soup(out, series_from, cks) -> dict:
    """OUT's snapshots: the series of `series_from` (the first run's training), its final
    point replaced by the soup, placed at the latest ingredient's best epoch (a continuation
    counts the steps and epochs of every run before its own)."""
    from .snapshots import continued_position, end_series, weights_position

    by_sha = {ck.card.weights_sha256: ck for ck in cks}
    series_sha = Card.load(series_from).weights_sha256

    def position(sha: str | None) -> tuple[int, float]:
        """Where the weights with this sha256 stand: the series' own end, or after their start."""
        if sha == series_sha:
            return weights_position(series_from)
        if sha not in by_sha:
            return 0, 0.0
        card = by_sha[sha].card
        return continued_position(position((card.provenance.get("init_from") or {}).get("weights_sha256")),
                                  card.history)

    step, epoch = max(position(sha) for sha in by_sha)
    return end_series(out, series_from, f"final (the average of {len(cks)} runs from one start, the latest at "
                                        f"epoch {epoch:g})", step, epoch)


def main(argv=None) -> int:
    p = ArgumentParser(prog="python -m seq2seq.soup", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="checkpoint directory to write")
    p.add_argument("ingredients", nargs="+", help="checkpoint directories (the first gives history and settings)")
    p.add_argument("--name", help="name in the card (default: OUT's folder name)")
    p.add_argument("--data-dir", default=DATA_DIR)
    p.add_argument("--cache", default=None, help="token cache (JSON.gz)")
    p.add_argument("--series-from", metavar="CKPT",
                   help="copy this checkpoint's snapshot series (the first ingredient's training) and end it with "
                        "the soup's weights")
    p.add_argument("--decodings", type=decodings_arg, default=[Decoding()],
                   help="decodings to choose among on val BLEU (as evaluate --choose-decoding; default greedy)")
    args = p.parse_args(argv)
    cks = [load_checkpoint(path) for path in args.ingredients]
    check_ingredients(cks)
    model = cks[0].model
    half = cks[0].card.weights_dtype == "float16"
    with torch.no_grad():
        for key, t in average_weights([ck.model for ck in cks]).items():
            # measured as stored: float16 rounding first, when the checkpoint stores float16
            model.state_dict()[key].copy_(t.half().float() if half and t.is_floating_point() else t)
    splits = tokenized_multi30k(args.data_dir, args.cache, splits=("val", "test2016"))
    metrics = choose_decoding(model, cks[0].src_vocab, cks[0].tgt_vocab, splits, torch.device("cpu"), args.decodings)
    card = soup_card(cks, args.name or Path(args.out).name, metrics)
    save_checkpoint(args.out, model, cks[0].src_vocab, cks[0].tgt_vocab, card, half=half)
    update_card_metrics(load_checkpoint(args.out), {})      # the sample these weights write
    if args.series_from:
        end_series_with_soup(args.out, args.series_from, cks)
    val, test = metrics["val"], metrics["test2016"]
    print(f"wrote {args.out}: val BLEU {val['bleu']}, test 2016 BLEU {test['bleu']} (sacreBLEU {test['sacrebleu']}, "
          f"PPL {test['ppl']}), {Decoding.from_card(val['decoding']).label}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
