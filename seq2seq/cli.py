"""Command-line plumbing shared by `python -m seq2seq.{train,translate,evaluate}`.

Whatever goes wrong, a command answers with ONE line on stderr and an exit status,
never a traceback:

    2    bad arguments, bad input, a bad checkpoint, missing or unreadable files
    1    anything unexpected (a bug); SEQ2SEQ_TRACEBACK=1 shows the traceback
    130  interrupted (Ctrl-C)

Use:
    p = ArgumentParser(prog="python -m seq2seq.translate", ...)
    ...
    if __name__ == "__main__":
        sys.exit(run_main(main))
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
from typing import Callable, Sequence

from .errors import Seq2SeqError

USAGE_ERROR, UNEXPECTED_ERROR, INTERRUPTED = 2, 1, 130


def one_line(text) -> str:
    """`text` with every run of whitespace (newlines too) folded into one space."""
    return " ".join(str(text).split())


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line ('PROG: error: MESSAGE (see --help)') and
    exit status 2, instead of the usage block plus the error line."""

    def error(self, message: str):
        self.exit(USAGE_ERROR, f"{self.prog}: error: {one_line(message)} (see --help)\n")


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Call `main(argv)` and turn whatever escapes it into one line on stderr + a status."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return INTERRUPTED
    except (Seq2SeqError, OSError) as e:
        # the project's own errors carry a message meant for a person; OSError names the file
        print(f"error: {one_line(e) or type(e).__name__}", file=sys.stderr)
        return USAGE_ERROR
    except Exception as e:  # noqa: BLE001 - the last line of defence against a traceback
        if os.environ.get("SEQ2SEQ_TRACEBACK"):
            traceback.print_exc()
        print(f"error: unexpected {type(e).__name__}: {one_line(e)} (a bug; set SEQ2SEQ_TRACEBACK=1 "
              f"to see the traceback)", file=sys.stderr)
        return UNEXPECTED_ERROR


# ------------------------------------------------------------------ argparse types
# A bad value becomes a one-line usage error naming the option, before anything loads.

def _whole_number(text: str, minimum: int, rule: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < minimum:
        raise argparse.ArgumentTypeError(f"{rule}, got {n}")
    return n


def positive_int(text: str) -> int:
    return _whole_number(text, 1, "must be at least 1")


def non_negative_int(text: str) -> int:
    return _whole_number(text, 0, "must be 0 or more")


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return value


def device_arg(text: str) -> str:
    """--device: cpu, cuda or cuda:N, checked against this machine."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; expected cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"unsupported device {text!r}; expected cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r} asked for, but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r} asked for, but this machine has "
                                             f"{torch.cuda.device_count()} CUDA device(s)")
    return text


def device_or_auto_arg(text: str) -> str:
    """--device for training: auto (CUDA when present) or what device_arg accepts."""
    return text if text == "auto" else device_arg(text)
