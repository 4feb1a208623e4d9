"""How training's fast path scales to the CPU's cores: one stream, N thread streams, and
N processes side by side, on the bench's batches at the shipped size of ARCH.

    python -m tools.stream_scaling ARCH [--streams 2] [--ratio 1.0] [--batches 6] \\
        [--cache cache/multi30k-tokens.json.gz] [--data-dir ../shared/data/multi30k]

Prints the best of 3 rounds for: one stream on one core; N streams (threads, one core
each, seq2seq/streams.py) on the same batches; N processes, each training the full
batches on one core at the same time (the work of N batches per batch: their time is
what N perfectly independent workers would take for N times the work). Run it on quiet
cores: the figures are absolute seconds."""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def time_training(arch: str, streams: int, ratio: float, n_batches: int, data_dir: str, cache: str | None,
                  start_at: float | None = None) -> float:
    """Best of 3 rounds over n_batches batches of 128, after 2 warm-up batches; the rounds
    start at wall-clock time start_at where given (processes side by side start together)."""
    import torch
    sys.path.insert(0, str(ROOT))
    from seq2seq import bench
    from tools.ab_train import translate_setup

    torch.set_num_threads(streams)
    batches, cfg, precision = translate_setup(n_batches + 2, arch, data_dir, cache)
    model, opt = bench._train_model(cfg, torch.device("cpu"))
    with bench.TrainingStreams(model, streams) as st:
        for b in batches[:2]:
            bench.our_train_step(model, b, opt, ratio, precision, st)
        if start_at is not None:
            time.sleep(max(0.0, start_at - time.time()))
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for b in batches[2:]:
                bench.our_train_step(model, b, opt, ratio, precision, st)
            best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("arch", choices=["lstm", "gru", "bahdanau", "luong"])
    p.add_argument("--streams", type=int, default=2)
    p.add_argument("--ratio", type=float, default=1.0)
    p.add_argument("--batches", type=int, default=6)
    p.add_argument("--cache", default=None)
    p.add_argument("--data-dir", default="../shared/data/multi30k")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)   # a child: time N streams, print
    p.add_argument("--start-at", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    common = (args.arch, args.ratio, args.batches, args.data_dir, args.cache)
    if args.one is not None:
        print(time_training(args.arch, args.one, *common[1:], start_at=args.start_at))
        return
    child = [sys.executable, "-m", "tools.stream_scaling", args.arch, "--ratio", str(args.ratio),
             "--batches", str(args.batches), "--data-dir", args.data_dir] + (["--cache", args.cache] if args.cache else [])
    run = lambda n: float(subprocess.run(child + ["--one", str(n)], cwd=ROOT, check=True,
                                         capture_output=True, text=True).stdout.split()[-1])
    one, threads = run(1), run(args.streams)
    start_at = time.time() + 90          # after every process's data loading and warm-up
    procs = [subprocess.Popen(child + ["--one", "1", "--start-at", str(start_at)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
             for _ in range(args.streams)]
    side_by_side = [float(pr.communicate()[0].split()[-1]) for pr in procs]
    print(f"{args.arch} ratio {args.ratio}, {args.batches} batches of 128: one stream {one:.3f} s; "
          f"{args.streams} thread streams {threads:.3f} s ({one / threads:.2f}x); {args.streams} processes side by "
          f"side, each the full batches: {', '.join(f'{t:.3f}' for t in side_by_side)} s "
          f"(the same work as {args.streams} perfect streams in {max(side_by_side) / args.streams:.3f} s)")


if __name__ == "__main__":
    main()
