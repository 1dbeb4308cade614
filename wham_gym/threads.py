"""Torch's intra-op thread count: the cores other processes leave free, not every core.

Torch starts with one thread per core. On a machine other jobs share, more threads than free cores
make the engine's many small ops wait on each other: on our 2-core CPUs the demo dreamt 0.44
env-frames/s with torch's default threads under load against 5.4 with one thread, and the test suite
took 759 s against 227 s (benchmarks/RESULTS.md, "torch threads under load"). The rule: the cores this process may
run on, less the whole cores the 1-minute load average says others keep busy, shared among
``processes`` cooperating processes (pytest-xdist's workers), at least one each, at most torch's
default. ``wham-gym --threads N`` and ``python -m agents.* --threads N`` override it.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads(processes: int = 1, cap: int | None = None) -> int:
    """Threads for each of ``processes`` processes: the free cores shared out, >= 1, <= ``cap``."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    try:
        busy = int(os.getloadavg()[0])  # whole cores others keep busy (our own process is not running yet)
    except (AttributeError, OSError):
        busy = 0
    free = max(1, available_cores() - busy)
    threads = max(1, free // processes)
    return min(threads, cap) if cap else threads


def parse_threads(text) -> int | None:
    """``--threads``: a positive int, or ``auto`` (None: :func:`default_threads` decides)."""
    if text is None or str(text).strip().lower() == "auto":
        return None
    try:
        n = int(text)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise ValueError(f"--threads: expected a positive int or 'auto', got {text!r}")
    return n


def set_threads(threads: int | None = None, processes: int = 1) -> int:
    """Set torch's intra-op threads to ``threads`` (None: :func:`default_threads`); returns the count set."""
    import torch

    n = threads or default_threads(processes, cap=torch.get_num_threads())
    torch.set_num_threads(n)
    return n
