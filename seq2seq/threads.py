"""Intra-op thread counts for one thread only.

torch.set_num_threads(n) sets the calling thread's OpenMP count and also the process
default that every thread started later takes on its first torch call (Streamlit starts
a thread per script run), so a server that called it for one job would slow every
later visitor. `set_this_threads_count` changes the calling thread alone.

Two thread counts matter: OpenMP's (torch's own kernels) and MKL's, which runs torch's
float32 matmuls on the CPU. torch.set_num_threads sets MKL's count for the whole process,
and MKL opens a team of that size from whatever thread calls it, whatever that thread's
OpenMP count: two training streams of "one thread" each still ran every float32 matmul
on 2 threads each (4 busy threads on 2 cores; a 2048-square product took the 2-thread
time in such a thread, 0.16 s against 0.27 s on one). MKL's thread-local count
(MKL_Set_Num_Threads_Local, exported by libtorch_cpu) overrides the process count for
the calling thread. (On the AVX2 EPYC the streams' speed moved within the noise with
the fix, 1.03x bahdanau and 0.95x gru over 8 alternating rounds; the lab's thread and
each stream now keep to the one core they are meant to.)"""
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


@functools.lru_cache(maxsize=1)
def torch_cpu_library():
    """torch's CPU library (it exports the MKL it is linked with), or None."""
    try:
        return ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def _mkl_local():
    """MKL's per-thread count setter from torch's library, or None (a build without MKL)."""
    try:
        fn = torch_cpu_library().MKL_Set_Num_Threads_Local   # the C entry point (lower case: the Fortran one)
    except AttributeError:                                   # no library (None) or no MKL in it
        return None
    fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
    return fn


def set_this_threads_count(n: int) -> bool:
    """Make torch use `n` intra-op threads in the calling thread only, in its own kernels
    (OpenMP) and in MKL's matmuls: other threads, and threads started later, keep the
    process default. False (and nothing changed) when torch has no OpenMP."""
    torch.get_num_threads()            # this thread's first torch call: it takes the default now, not later
    lib = _openmp()
    if lib is None:
        return False
    lib.omp_set_num_threads(int(n))
    mkl = _mkl_local()
    if mkl is not None:
        mkl(int(n))
    return True
