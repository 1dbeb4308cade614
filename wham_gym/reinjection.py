"""Real-frame reinjection: when to swap a dream's newest frame for a real one, and where real frames come from.

A :class:`Schedule` decides per env and step (every K steps, on uncertainty, or
both). A source supplies real frames for the envs due:

- :class:`ReplaySource`: a recorded episode per env; its recorded actions drive
  the dream (the agent's actions are ignored: for evaluation and benchmarks);
- :class:`RetrievalSource`: a bank of real frames tokenized once; the frame whose
  tokens agree most with the dream's current frame replaces it (exact when the
  dream's frame is in the bank), searched in chunks on the device.

Lockstep reinjection from a live game (a real env per dream env, in worker
processes) is not built yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Schedule:
    """Reinject every ``every`` steps of an episode (0: never) and/or when the step's NLL exceeds ``nll_above``."""

    every: int = 0
    nll_above: float | None = None

    def __post_init__(self):
        if self.every < 0:
            raise ValueError(f"every must be >= 0 (0 = never), got {self.every}")

    def due(self, steps: torch.Tensor, nll: torch.Tensor) -> torch.Tensor:
        """(N,) bool: which envs reinject after this step (``steps`` counts the episode's steps so far)."""
        due = torch.zeros_like(steps, dtype=torch.bool)
        if self.every:
            due |= (steps % self.every) == 0
        if self.nll_above is not None:
            due |= nll > self.nll_above
        return due


class ReplaySource:
    """Each env replays a recorded episode: its frames are the truth and its actions drive the dream."""

    drives_actions = True

    def __init__(self, episodes, num_envs: int):
        self.episodes = [e for e in episodes if len(e) >= 2]
        if not self.episodes:
            raise ValueError("ReplaySource needs at least one episode of 2 or more frames")
        self.num_envs = num_envs
        self.episode = np.zeros(num_envs, np.int64)
        self.t = np.zeros(num_envs, np.int64)  # index of the frame the dream's newest frame stands for

    def start(self, env_ids: np.ndarray, rng: np.random.Generator, prompt_frames: int):
        """Choose an episode and start for each env; returns (frames (n, P, H, W, 3), actions (n, P-1, 16))."""
        frames, actions = [], []
        for i in env_ids:
            e = int(rng.integers(len(self.episodes)))
            ep = self.episodes[e]
            P = min(prompt_frames, len(ep) - 1)
            s = int(rng.integers(len(ep) - P))
            self.episode[i], self.t[i] = e, s + P - 1
            frames.append(ep.frames()[s:s + P])
            actions.append(ep.actions[s:s + P - 1])
        P = min(len(f) for f in frames)
        return np.stack([f[-P:] for f in frames]), np.stack([a[len(a) - (P - 1):] for a in actions])

    def actions(self) -> np.ndarray:
        """(N, 16): the recorded action at each env's current frame."""
        return np.stack([self.episodes[e].actions[self._clamp(e, t)] for e, t in zip(self.episode, self.t)])

    def _clamp(self, e: int, t: int) -> int:
        # An env past its recording's end is being reset this step; its value is discarded.
        return min(int(t), len(self.episodes[e]) - 1)

    def advance(self) -> np.ndarray:
        """Move every env one frame on; returns (N,) bool: the recording ended (no next action)."""
        self.t += 1
        return np.array([t + 1 >= len(self.episodes[e]) for e, t in zip(self.episode, self.t)])

    def frames(self, env_ids: np.ndarray) -> np.ndarray:
        """(n, H, W, 3): the real frames at the envs' current steps."""
        return np.stack([self.episodes[self.episode[i]].images[self._clamp(self.episode[i], self.t[i])].transpose(1, 2, 0)
                         for i in env_ids])


class RetrievalSource:
    """Nearest real frame by image-token agreement, over a bank tokenized once."""

    drives_actions = False

    def __init__(self, model, frames: np.ndarray, chunk: int = 65536, batch: int = 64):
        """``frames`` (M, H, W, 3) uint8 at the model's frame size."""
        if len(frames) == 0:
            raise ValueError("RetrievalSource needs at least one frame")
        self.chunk = chunk
        self.tokens = torch.cat([model.encode_frames(frames[i:i + batch]) for i in range(0, len(frames), batch)])
        self.frames_bank = frames

    def nearest(self, query: torch.Tensor) -> torch.Tensor:
        """(n, tokens_per_image) dream tokens -> (n,) index of the bank frame sharing the most tokens (first on ties)."""
        query = query.to(self.tokens.device)
        best = torch.full((len(query),), -1, dtype=torch.long, device=query.device)
        best_score = torch.full((len(query),), -1, dtype=torch.long, device=query.device)
        for start in range(0, len(self.tokens), self.chunk):
            bank = self.tokens[start:start + self.chunk]
            score = (bank[None, :, :] == query[:, None, :]).sum(-1)
            s, i = score.max(1)
            better = s > best_score
            best = torch.where(better, i + start, best)
            best_score = torch.where(better, s, best_score)
        return best

    def frames_for(self, query: torch.Tensor) -> np.ndarray:
        return self.frames_bank[self.nearest(query).cpu().numpy()]


@dataclass
class Reinjection:
    """What a WHAM env reinjects (``source``) and when (``schedule``): ``WHAMVectorEnv(..., reinjection=...)``."""

    source: ReplaySource | RetrievalSource
    schedule: Schedule
