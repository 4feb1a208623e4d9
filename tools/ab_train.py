"""Training step speed of this working tree against an earlier commit, in one process.

    python -m tools.ab_train REV ARCH RATIO [--streams N] [--rounds 5] \\
        [--cache cache/multi30k-tokens.json.gz] [--data-dir ../shared/data/multi30k]
    python -m tools.ab_train REV ARCH RATIO --task reverse

The bench (seq2seq.bench) measures each way against the tutorial loop; on a shared VM
that loop's own speed moves by 20-30% between runs, more than most changes to our path.
This compares two versions of our path directly: REV's seq2seq/ is extracted with
`git archive` and imported beside this tree's under another name, both train the same
batches (the bench's batches, at the shipped size of ARCH, --cpu-bf16 where the CPU has
native bf16), timed in rotation after two warm-up batches each. Prints the best round of
each and the median of the per-round ratios (old / new: above 1 is faster now).
--task reverse: the reversal sweep's runs instead (its sizes and layers, float32, fresh
sequences of lengths 1-40, as seq2seq.sweep reverse trains them).
One stream uses one core (torch.set_num_threads(1)); N streams use N."""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_old(rev: str, into: Path):
    """REV's seq2seq package, importable as seq2seq_old (its imports are relative)."""
    tar = subprocess.run(["git", "archive", rev, "seq2seq"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=tar, check=True)
    (into / "seq2seq").rename(into / "seq2seq_old")
    sys.path.insert(0, str(into))
    return importlib.import_module("seq2seq_old.bench")


def translate_setup(n_batches: int, arch: str, data_dir: str, cache: str | None):
    """The bench's batches and the shipped size of translate-ARCH, bf16 where native."""
    import torch
    from seq2seq import bench
    from seq2seq.card import Card
    from seq2seq.data import PairDataset, tokenized_multi30k
    from seq2seq.vocab import Vocab

    data = tokenized_multi30k(data_dir, cache)
    src_vocab, tgt_vocab = Vocab.build(data["train"]["de"], 2), Vocab.build(data["train"]["en"], 2)
    ds = PairDataset([src_vocab.encode(s) for s in data["train"]["de"]],
                     [tgt_vocab.encode(t) for t in data["train"]["en"]])
    cfg = Card.load(ROOT / "checkpoints" / f"translate-{arch}").model_config
    cfg.src_vocab_size, cfg.tgt_vocab_size = len(src_vocab), len(tgt_vocab)
    return (list(ds.batches(128, shuffle=True, seed=1))[:n_batches], cfg,
            bench.training_precisions(torch.device("cpu"))[-1])


def reverse_setup(n_batches: int, arch: str):
    """The reversal sweep's sizes and layers for ARCH, float32, fresh sequences."""
    from seq2seq.config import ModelConfig
    from seq2seq.data import PairDataset, generate_reversal
    from seq2seq.presets import SWEEP_SIZES
    from seq2seq.text import REVERSE_ALPHABET
    from seq2seq.vocab import Vocab

    opts = SWEEP_SIZES["reverse"]
    vocab = Vocab.from_alphabet(REVERSE_ALPHABET)
    seqs = [vocab.encode(s) for s in generate_reversal(128 * n_batches, 1, opts["max_len"], 1, REVERSE_ALPHABET)]
    ds = PairDataset(seqs, [s[::-1] for s in seqs])
    cfg = ModelConfig(arch=arch, src_vocab_size=len(vocab), tgt_vocab_size=len(vocab), emb_dim=opts["emb"],
                      hidden_dim=opts["hidden"], attn_dim=opts["attn_dim"], dropout=opts["dropout"],
                      n_layers=dict(opts["layers"]).get(arch, 1), tie_embeddings=opts["tie"],
                      max_src_len=60, max_out_len=80)
    return list(ds.batches(opts["batch_size"], shuffle=True, seed=1))[:n_batches], cfg, "float32"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rev")
    p.add_argument("arch", choices=["lstm", "gru", "bahdanau", "luong"])
    p.add_argument("--task", choices=["translate", "reverse"], default="translate")
    p.add_argument("ratio", type=float)
    p.add_argument("--streams", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batches", type=int, default=6, help="timed batches of 128 per round")
    p.add_argument("--cache", default=None)
    p.add_argument("--data-dir", default="../shared/data/multi30k")
    args = p.parse_args(argv)

    import torch
    sys.path.insert(0, str(ROOT))
    from seq2seq import bench as new
    torch.set_num_threads(args.streams)
    with tempfile.TemporaryDirectory() as tmp:
        old = load_old(args.rev, Path(tmp))
        batches, cfg, precision = (reverse_setup(args.batches + 2, args.arch) if args.task == "reverse" else
                                   translate_setup(args.batches + 2, args.arch, args.data_dir, args.cache))
        ways = {}
        for name, mod in (("old", old), ("new", new)):
            model, opt = mod._train_model(cfg, torch.device("cpu"))
            streams = mod.TrainingStreams(model, args.streams)
            step = (lambda b, mod=mod, m=model, o=opt, s=streams:
                    mod.our_train_step(m, b, o, args.ratio, precision, s))
            for b in batches[:2]:
                step(b)
            ways[name] = step
        times = {k: [] for k in ways}
        for _ in range(args.rounds):
            for k, step in ways.items():
                t0 = time.perf_counter()
                for b in batches[2:]:
                    step(b)
                times[k].append(time.perf_counter() - t0)
    ratios = sorted(o / n for o, n in zip(times["old"], times["new"]))
    print(f"{args.task} {args.arch} ratio {args.ratio} ({precision}, {args.streams} stream(s)): best round old "
          f"{min(times['old']):.3f} s, new {min(times['new']):.3f} s; old/new median {ratios[len(ratios) // 2]:.3f} "
          f"(rounds {ratios[0]:.2f}-{ratios[-1]:.2f})")


if __name__ == "__main__":
    main()
