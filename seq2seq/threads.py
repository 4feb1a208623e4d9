"""Intra-op thread counts for one thread only.

torch.set_num_threads(n) sets the calling thread's OpenMP count and also the process
default that every thread started later takes on its first torch call (Streamlit starts
a thread per script run), so a server that called it for one job would slow every
later visitor. `set_this_threads_count` changes the calling thread alone."""
from __future__ import annotations

import ctypes
import functools
import glob
import os

import torch


@functools.lru_cache(maxsize=1)
def _openmp():
    """The OpenMP runtime torch uses (its omp_set_num_threads), or None if there is none."""
    candidates = [None] + sorted(glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "lib*omp*.so*")))
    for name in candidates:
        try:
            lib = ctypes.CDLL(name)
            lib.omp_set_num_threads.argtypes = [ctypes.c_int]
            return lib
        except (OSError, AttributeError):
            continue
    return None


def set_this_threads_count(n: int) -> bool:
    """Make torch use `n` intra-op threads in the calling thread only: other threads, and
    threads started later, keep the process default. False (and nothing changed) when
    torch has no OpenMP."""
    torch.get_num_threads()            # this thread's first torch call: it takes the default now, not later
    lib = _openmp()
    if lib is None:
        return False
    lib.omp_set_num_threads(int(n))
    return True
