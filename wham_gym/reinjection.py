"""Real-frame reinjection: when to swap a dream's newest frame for a real one, and where real frames come from.

A :class:`Schedule` decides per env and step (every K steps, on uncertainty, or
both). A source supplies real frames for the envs due:

- :class:`ReplaySource`: a recorded episode per env; its recorded actions drive
  the dream (the agent's actions are ignored: for evaluation and benchmarks);
- :class:`RetrievalSource`: a bank of real frames tokenized once; the frame whose
  tokens agree most with the dream's current frame replaces it (exact when the
  dream's frame is in the bank), searched in chunks on the device.

- :class:`LockstepSource`: a live real env per dream env (e.g. ``wham_gym/Doom-v0``),
  stepped with the agent's actions in worker processes; its frame is the truth and
  its episode end ends the dream's.

Every source answers the same questions, so the env has one code path:
``starts_episodes`` (resets draw prompts from it: ``start``), ``drives_actions`` (its
``actions`` replace the agent's), ``advance`` and ``frames``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .data.windows import sample_windows


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
    starts_episodes = True

    def __init__(self, episodes, num_envs: int):
        self.episodes = [e for e in episodes if len(e) >= 2]
        if not self.episodes:
            raise ValueError("ReplaySource needs at least one episode of 2 or more frames")
        self.num_envs = num_envs
        self.episode = np.zeros(num_envs, np.int64)
        self.t = np.zeros(num_envs, np.int64)  # index of the frame the dream's newest frame stands for

    @classmethod
    def from_windows(cls, frames: np.ndarray, actions: np.ndarray, start: int) -> "ReplaySource":
        """Env i replays window i: ``frames`` (N, L, H, W, 3), ``actions`` (N, L, 16); its newest frame is ``start``."""
        source = cls([_Window(f, a) for f, a in zip(frames, actions)], len(frames))
        source.episode[:] = np.arange(len(frames))
        source.t[:] = start
        return source

    def start(self, env_ids: np.ndarray, rng: np.random.Generator, prompt_frames: int, autoreset: bool = False):
        """Choose an episode and start for each env; returns (frames (n, P, H, W, 3), actions (n, P-1, 16))."""
        frames, actions = [], []
        # A window of the prompt plus the frame after it, so every replayed step has a truth.
        lengths = [len(e) for e in self.episodes]
        picks = zip(env_ids, *sample_windows(lengths, prompt_frames + 1, len(env_ids), rng, allow_short=True))
        for i, e, s, size in picks:
            ep, P = self.episodes[e], int(size) - 1
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

    def advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Move every env one frame on; returns (terminated, truncated) (N,) bool: truncated when the recording ends."""
        self.t += 1
        ended = np.array([t + 1 >= len(self.episodes[e]) for e, t in zip(self.episode, self.t)])
        return np.zeros_like(ended), ended

    def frames(self, env_ids: np.ndarray, dream_tokens=None) -> np.ndarray:
        """(n, H, W, 3): the real frames at the envs' current steps."""
        return np.stack([self.episodes[self.episode[i]].images[self._clamp(self.episode[i], self.t[i])].transpose(1, 2, 0)
                         for i in env_ids])


class _Window:
    """A stretch of real frames (L, H, W, 3) and actions (L, 16), read like an Episode."""

    def __init__(self, frames: np.ndarray, actions: np.ndarray):
        self._frames, self.actions = frames, actions
        self.images = frames.transpose(0, 3, 1, 2)  # Episode's channels-first view

    def __len__(self) -> int:
        return len(self._frames)

    def frames(self) -> np.ndarray:
        return self._frames


class RetrievalSource:
    """Nearest real frame by image-token agreement, over a bank tokenized once.

    The bank keeps tokens in the smallest integer type that holds the vocabulary (int16
    for WHAM's), 270 bytes per frame at 135 tokens: 1M frames fit in ~270 MB. Raw frames
    are kept only if given and ``keep_frames``; a tokens-only bank (:meth:`from_tokens`, or
    ``keep_frames=False``) reinjects the bank's tokens and shows their decoding. The
    search runs over ``chunk`` bank frames at a time on the bank's device, so memory stays
    bounded (``n × chunk × tokens`` comparisons per chunk) at any bank size.
    """

    drives_actions = False
    starts_episodes = False

    def __init__(self, model, frames: np.ndarray, chunk: int = 65536, batch: int = 64, keep_frames: bool = True):
        """``frames`` (M, H, W, 3) uint8 at the model's frame size."""
        if len(frames) == 0:
            raise ValueError("RetrievalSource needs at least one frame")
        tokens = torch.cat([model.encode_frames(frames[i:i + batch]) for i in range(0, len(frames), batch)])
        self._init(model, tokens, frames if keep_frames else None, chunk)

    @classmethod
    def from_tokens(cls, model, tokens, chunk: int = 65536) -> "RetrievalSource":
        """A bank of already-tokenized frames (M, tokens_per_image), e.g. a training run's token cache."""
        tokens = torch.as_tensor(tokens)
        if tokens.ndim != 2 or tokens.shape[1] != model.config.tokens_per_image or len(tokens) == 0:
            raise ValueError(f"bank tokens must be (M >= 1, {model.config.tokens_per_image}), got {tuple(tokens.shape)}")
        self = cls.__new__(cls)
        self._init(model, tokens, None, chunk)
        return self

    def _init(self, model, tokens: torch.Tensor, frames, chunk: int) -> None:
        vocab = model.config.image_vocab_size
        dtype = torch.int16 if vocab <= 2**15 else torch.int32
        self.model, self.chunk, self.frames_bank = model, int(chunk), frames
        self.tokens = tokens.to(device=model.device, dtype=dtype)

    def __len__(self) -> int:
        return len(self.tokens)

    def nearest(self, query: torch.Tensor) -> torch.Tensor:
        """(n, tokens_per_image) dream tokens -> (n,) index of the bank frame sharing the most tokens (first on ties)."""
        query = query.to(device=self.tokens.device, dtype=self.tokens.dtype)
        best = torch.full((len(query),), -1, dtype=torch.long, device=query.device)
        best_score = torch.full((len(query),), -1, dtype=torch.long, device=query.device)
        for start in range(0, len(self.tokens), self.chunk):
            bank = self.tokens[start:start + self.chunk]
            score = (bank[None, :, :] == query[:, None, :]).sum(-1, dtype=torch.int16)  # int16: half the time of int64
            s, i = score.max(1)
            s = s.long()
            better = s > best_score
            best = torch.where(better, i + start, best)
            best_score = torch.where(better, s, best_score)
        return best

    def frames_for(self, query: torch.Tensor) -> np.ndarray:
        idx = self.nearest(query)
        if self.frames_bank is not None:
            return self.frames_bank[idx.cpu().numpy()]
        return self.model.decode_tokens(self.tokens[idx].long()).cpu().numpy()

    def advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        no = np.zeros(len(actions), bool)
        return no, no

    def frames(self, env_ids: np.ndarray, dream_tokens: torch.Tensor) -> np.ndarray:
        """(n, H, W, 3): the bank frames nearest to the dream's frames of ``env_ids``."""
        return self.frames_for(dream_tokens)


class LockstepSource:
    """A real Gymnasium env per dream env, stepped with the same actions (worker processes by default).

    The real vector env autoresets the way the dream env does (NEXT_STEP, SAME_STEP or
    DISABLED), so a dream episode and its game episode start and end together: resets prompt
    the dream with the game's first frame, and the game's ``terminated``/``truncated`` end the
    dream's episode. Under SAME_STEP the game's last frame (its ``final_obs``) is the one
    reinjected at the step that ends it, and the new episode's first frame prompts the reset.
    A dream episode that ends on its own (learned termination, time limit) restarts from the
    game's current frame while the game plays on.
    """

    drives_actions = False
    starts_episodes = True

    def __init__(self, env_fns, asynchronous: bool = True, history: int = 9):
        from collections import deque

        self.env_fns, self.asynchronous = list(env_fns), asynchronous
        self.num_envs = len(self.env_fns)
        self.envs = None
        self.obs: np.ndarray | None = None
        # The game's frames since its dream episode began, for whole-window reinjection.
        self.history = [deque(maxlen=history) for _ in range(self.num_envs)]

    def window_frames(self, env_ids: np.ndarray, k: int) -> np.ndarray:
        """(n, k', H, W, 3): the newest k' = min(k, frames every env has) real frames of ``env_ids``."""
        k = min(k, *(len(self.history[i]) for i in env_ids))
        return np.stack([np.stack(list(self.history[i])[-k:]) for i in env_ids])

    def bind(self, autoreset_mode) -> None:
        """Build the real vector env with the dream env's autoreset mode (called by the env)."""
        from gymnasium.vector import AsyncVectorEnv, SyncVectorEnv

        cls = AsyncVectorEnv if self.asynchronous else SyncVectorEnv
        self.envs = cls(self.env_fns, autoreset_mode=autoreset_mode)
        self.autoreset_mode = autoreset_mode

    def start(self, env_ids: np.ndarray, rng: np.random.Generator, prompt_frames: int, autoreset: bool = False):
        if self.envs is None:
            raise RuntimeError("LockstepSource is not bound to an env: pass it to WHAMVectorEnv(reinjection=...)")
        if not autoreset:  # an explicit reset; an autoreset happened inside the real env's last step
            from gymnasium.vector import AutoresetMode

            mask = np.zeros(self.num_envs, bool)
            mask[env_ids] = True
            seeds = [int(s) for s in rng.integers(0, 2**31, self.num_envs)]
            if mask.all():
                self.obs, _ = self.envs.reset(seed=seeds)
            elif self.autoreset_mode in (AutoresetMode.DISABLED, AutoresetMode.SAME_STEP):
                obs, _ = self.envs.reset(seed=seeds, options={"reset_mask": mask})
                self.obs = np.where(mask[:, None, None, None], obs, self.obs)
            else:  # NEXT_STEP would reset the rest of the games a step late
                raise ValueError("with LockstepSource, reset a subset of envs only in DISABLED or SAME_STEP autoreset mode")
            self.step_obs = self.obs
        for i in env_ids:
            self.history[i].clear()
            self.history[i].append(self.obs[i])
        return self.obs[env_ids][:, None], np.zeros((len(env_ids), 0, 16), np.float32)

    def advance(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.obs, _, terminated, truncated, info = self.envs.step(np.asarray(actions, np.float32))
        self.step_obs = self.obs  # the frame each game shows after this step
        if "_final_obs" in info and info["_final_obs"].any():  # SAME_STEP: games that ended already reset
            self.step_obs = self.obs.copy()
            for i in np.flatnonzero(info["_final_obs"]):
                self.step_obs[i] = info["final_obs"][i]
        for h, f in zip(self.history, self.step_obs):
            h.append(f)
        return np.asarray(terminated, bool), np.asarray(truncated, bool)

    def frames(self, env_ids: np.ndarray, dream_tokens=None) -> np.ndarray:
        return self.step_obs[env_ids]

    def close(self) -> None:
        if self.envs is not None:
            self.envs.close()


@dataclass
class Reinjection:
    """What a WHAM env reinjects (``source``) and when (``schedule``): ``WHAMVectorEnv(..., reinjection=...)``.

    ``schedule=None`` takes the model's default (:func:`default_schedule`). ``window=True``
    replaces the whole context window with the game's recent frames, not just the newest
    (sources with ``window_frames``: lockstep).
    """

    source: ReplaySource | RetrievalSource | LockstepSource
    schedule: Schedule | None = None
    window: bool = False

    def __post_init__(self):
        if self.window and not hasattr(self.source, "window_frames"):
            raise ValueError(f"window=True needs a source that keeps real history (LockstepSource), "
                             f"got {type(self.source).__name__}")


FALLBACK_SCHEDULE = Schedule(every=10)


def default_schedule(model) -> Schedule:
    """The schedule a model's card recommends (``card["reinjection"]``: ``every`` and ``nll_above``), else every 10.

    An NLL threshold means something only for the model it was measured on, so it lives in
    the card: ``wham-gym drift`` reports the free-running NLL percentiles it is chosen from.
    """
    rec = (getattr(model, "card", None) or {}).get("reinjection")
    if not rec:
        return FALLBACK_SCHEDULE
    return Schedule(every=int(rec.get("every", 0)), nll_above=rec.get("nll_above"))
