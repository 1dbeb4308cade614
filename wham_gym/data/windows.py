"""The one window sampler: where in a set of episodes a stretch of consecutive steps is taken.

Prompts, replayed episodes, fidelity measurements and training all draw windows
here. Two weightings, for two jobs:

- ``per="episode"``: an episode uniformly, then a start uniformly inside it. Every
  episode is as likely whatever its length (prompts, replay, fidelity: a long
  recording does not crowd out the others).
- ``per="window"``: every full window equally likely, so every step of the data is
  as likely (training: an unbiased estimate of the loss over the data).

The draws are made in a fixed order from the caller's numpy Generator: all
episodes first, then one start per window.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

WEIGHTINGS = ("episode", "window")


def sample_windows(lengths: Sequence[int], length: int, n: int, rng: np.random.Generator, *,
                   per: str = "episode", allow_short: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` windows of ``length`` consecutive steps: (episode index, start, size) arrays of int64.

    ``lengths``: each episode's number of steps. ``allow_short`` (``per="episode"`` only): an
    episode shorter than ``length`` is drawn too and gives its whole self (``size`` < ``length``);
    otherwise only episodes of at least ``length`` steps are drawn, and ``size`` is ``length``.
    """
    if per not in WEIGHTINGS:
        raise ValueError(f"per: expected one of {WEIGHTINGS}, got {per!r}")
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if allow_short:  # lengths are read only for the episodes drawn: a lazy sequence stays lazy
        if per == "window":
            raise ValueError("allow_short applies to per='episode' only")
        if len(lengths) == 0:
            raise ValueError("no episodes to draw windows from")
        episodes = rng.integers(len(lengths), size=n).astype(np.int64)
    else:
        lengths = np.asarray(lengths, np.int64)
        eligible = np.flatnonzero(lengths >= length)
        if len(eligible) == 0:
            raise ValueError(f"no episode has the {length} steps a window needs "
                             f"(longest: {int(lengths.max()) if len(lengths) else 0})")
        if per == "window":
            which, starts = window_at(lengths, length, rng.integers(0, count_windows(lengths, length), n))
            return which, starts, np.full(n, length, np.int64)
        episodes = eligible[rng.integers(len(eligible), size=n)].astype(np.int64)
    totals = [int(lengths[int(e)]) for e in episodes]  # each drawn episode's length, read once
    sizes = np.minimum(totals, length).astype(np.int64)
    starts = np.array([int(rng.integers(T - P + 1)) for T, P in zip(totals, sizes)], np.int64)
    return episodes, starts, sizes


def count_windows(lengths: Sequence[int], length: int) -> int:
    """How many full windows of ``length`` steps the episodes hold (all starts, stride 1)."""
    return int(sum(max(int(T) - length + 1, 0) for T in lengths))


def window_at(lengths: Sequence[int], length: int, flat) -> tuple[np.ndarray, np.ndarray]:
    """(episode, start) of window number ``flat`` (array) in the order episode by episode, start by start."""
    counts = np.maximum(np.asarray(lengths, np.int64) - length + 1, 0)
    cum = np.cumsum(counts)
    flat = np.asarray(flat, np.int64)
    which = np.searchsorted(cum, flat, side="right")
    return which.astype(np.int64), (flat - np.concatenate([[0], cum])[which]).astype(np.int64)
