"""Where the player stands, read off one frame's image tokens: a linear probe to a recorded game variable.

Why a dream needs it: take_cover's fireballs fly at where the player stood about 1.5 s (15 steps) before they
hit, so whether a step is deadly depends on how far the player moved in the last 15 steps; the shipped world
models see 4 frames (0.4 s). On the six take_cover recordings' real frames the displacement over 15 steps ranks
the game's deaths better than the GPT's own end probability does on purposeful play (agents/RESULTS.md).
:class:`~wham_gym.rewards.EndRiskTermination` keeps the probe's reading of each dreamt frame and adds that
displacement to its log-odds (``motion``).

The probe is a sum of one learned number per (token slot, codebook index) plus a bias, fitted by least
squares on recorded frames and their game variable: on take_cover's room (position_y spans 16-752) it reads
a held-out frame's position to ~30 map units (one strafing step is ~35). It is read on the engine's device in
one gather, so a termination can call it every step without a host sync.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save as safetensors_bytes
from tqdm.auto import trange

from .atomic import atomic_write

PROBE_FILE = "position.safetensors"


class PositionProbe:
    """(N, slots) image tokens -> (N,) float32 estimate of the game variable ``variable``."""

    def __init__(self, weight: torch.Tensor, bias: float, variable: str = "position_y"):
        if weight.ndim != 2:
            raise ValueError(f"PositionProbe: expected a (slots, vocab) weight, got shape {tuple(weight.shape)}")
        self.weight = weight.float().contiguous()
        self.bias = float(bias)
        self.variable = variable
        self._rows = torch.arange(self.slots)  # each slot's row of the table, for the one gather a call makes

    @property
    def slots(self) -> int:
        return int(self.weight.shape[0])

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 2 or tokens.shape[1] != self.slots:
            raise ValueError(f"PositionProbe: expected (N, {self.slots}) image tokens, got {tuple(tokens.shape)}")
        if self.weight.device != tokens.device:  # once, on the first call from the engine's device
            self.weight, self._rows = self.weight.to(tokens.device), self._rows.to(tokens.device)
        return self.weight[self._rows, tokens.long()].sum(1) + self.bias

    def save(self, path: str | os.PathLike) -> None:
        tensors = {"weight": self.weight.cpu(), "bias": torch.tensor([self.bias])}
        atomic_write(path, lambda f: f.write(safetensors_bytes(tensors, metadata={"variable": self.variable})))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PositionProbe":
        with safe_open(os.fspath(path), "pt") as f:
            variable = (f.metadata() or {}).get("variable", "position_y")
        t = load_file(os.fspath(path))
        if set(t) != {"weight", "bias"}:
            raise ValueError(f"{path}: expected a position probe (tensors weight, bias), got {sorted(t)}")
        return cls(t["weight"], float(t["bias"][0]), variable)


def fit_position_probe(tokens: np.ndarray, values: np.ndarray, vocab_size: int, *, steps: int = 600,
                       batch: int = 8192, l2: float = 1e-3, seed: int = 0, variable: str = "position_y",
                       progress: bool = False) -> PositionProbe:
    """Least squares (Adam on minibatches, a small L2 on the table) of ``values`` (M,) on ``tokens`` (M, slots)."""
    tokens = np.asarray(tokens)
    values = np.asarray(values, np.float32)
    if tokens.ndim != 2 or values.shape != (len(tokens),):
        raise ValueError(f"fit_position_probe: expected tokens (M, slots) and values (M,), got {tokens.shape} and "
                         f"{values.shape}")
    if len(tokens) < 2 or not np.isfinite(values).all():
        raise ValueError(f"fit_position_probe: expected at least two frames with finite values, got {len(tokens)}")
    if tokens.min() < 0 or tokens.max() >= vocab_size:
        raise ValueError(f"fit_position_probe: tokens must lie in [0, {vocab_size}), got "
                         f"{tokens.min()}..{tokens.max()}")
    g = torch.Generator().manual_seed(seed)
    slots = tokens.shape[1]
    flat = torch.from_numpy(tokens.astype(np.int64)) + torch.arange(slots) * vocab_size
    y = torch.from_numpy(values)
    weight = torch.zeros(slots * vocab_size, requires_grad=True)
    bias = torch.tensor(float(y.mean()), requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=0.5)  # a table of sums: large steps are stable
    for _ in trange(steps, desc="position probe", disable=not progress, leave=False):
        sel = torch.randint(len(flat), (min(batch, len(flat)),), generator=g)
        loss = ((weight[flat[sel]].sum(1) + bias - y[sel]) ** 2).mean() + l2 * (weight ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return PositionProbe(weight.detach().view(slots, vocab_size), float(bias.detach()), variable)
