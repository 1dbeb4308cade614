"""The one rollout loop: N dreams stepped under an action source, real frames reinjected on a schedule.

:class:`Rollout` is one step of it: the engine dreams the next frame of every
slot, then the slots due for a real frame (a :class:`~wham_gym.reinjection.Reinjection`:
source + schedule) get it. It counts each slot's steps since its reset, which the
schedule and the env's time limit read. :func:`run` loops it ``T`` steps and keeps
what the caller asks for. Everything that dreams more than one step goes through
here: the envs (one :meth:`Rollout.step` per ``env.step``), ``wham-gym dream``,
the drift and fidelity measurements and the throughput benchmark.

Action sources for :func:`run`: an array (N, T, 16) or (T, 16) of controller vectors,
or a callable ``source(t, frames)`` getting the step index and the newest frames
(numpy (N, H, W, 3), or None when frames are not decoded) and returning (N, 16), or
None to let the model act (WHAM's behaviour policy). A reinjection source that
drives actions (replay) overrides both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from . import controller
from .engine import DreamEngine, StepResult
from .prompts import fit_frames
from .reinjection import Reinjection, default_schedule


@dataclass
class RolloutStep:
    """One step of N dreams (tensors on the engine's device, frames at the model's size)."""

    dreamt: StepResult  # what the model dreamt, before any reinjection
    tokens: torch.Tensor  # (N, tokens_per_image): the newest frame now in the context (real where reinjected)
    frames: torch.Tensor | None  # (N, H, W, 3) uint8 matching ``tokens``; None when not decoded
    actions: torch.Tensor  # (N, 16) the actions taken (the source's, the caller's or the model's own)
    steps: torch.Tensor  # (N,) long: steps since each slot's reset, this one included
    reinjected: torch.Tensor  # (N,) bool: a real frame replaced the dream this step
    real_terminated: torch.Tensor  # (N,) bool: the real episode behind the dream ended (lockstep, replay)
    real_truncated: torch.Tensor  # (N,) bool


class Rollout:
    """Steps a :class:`DreamEngine`'s N slots, reinjecting real frames when ``reinjection`` says so.

    ``reinjection.schedule=None`` takes the model card's recommended schedule.
    """

    def __init__(self, engine: DreamEngine, reinjection: Reinjection | None = None):
        self.engine = engine
        self.model = engine.model
        self.device = engine.device
        if reinjection is not None and reinjection.schedule is None:
            reinjection = replace(reinjection, schedule=default_schedule(self.model))
        self.reinjection = reinjection
        self.steps = torch.zeros(engine.num_envs, dtype=torch.long, device=self.device)
        self._size = (self.model.config.frame_height, self.model.config.frame_width)

    @property
    def num_envs(self) -> int:
        return self.engine.num_envs

    def reset(self, env_ids=None, *, frames=None, tokens=None, actions=None, seeds=None) -> None:
        """Prompt slots ``env_ids`` (None: all) as :meth:`DreamEngine.reset` does; their step count restarts."""
        self.engine.reset(env_ids, frames=frames, tokens=tokens, actions=actions, seeds=seeds)
        if env_ids is None:
            self.steps.zero_()
        else:
            self.steps[torch.as_tensor(env_ids, device=self.device)] = 0

    def step(self, actions: torch.Tensor | None, *, decode: bool = True, predict_actions: bool = False,
             checked: bool = False) -> RolloutStep:
        """Dream one step for every slot with ``actions`` (N, 16) on the engine's device (None: the model acts).

        ``checked=True``: the caller validated the actions and clipped them to the controller's
        Box at its boundary (the env, :func:`run`); else the engine does, once.
        """
        source = self.reinjection.source if self.reinjection is not None else None
        if source is not None and source.drives_actions:  # replay: the recording's actions drive the dream
            actions, checked = torch.as_tensor(source.actions(), device=self.device), False
        acting = actions is None
        if acting:  # the model's action at each newest frame, sampled once: step(None) takes exactly it
            actions = self.engine.predict_actions()
        res = self.engine.step(None if acting else actions, decode=decode, predict_actions=predict_actions,
                               checked=checked or acting)
        self.steps += 1
        no = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        step = RolloutStep(dreamt=res, tokens=res.tokens, frames=res.frames, actions=actions, steps=self.steps.clone(),
                           reinjected=no, real_terminated=no, real_truncated=no)
        return self._reinject(step) if source is not None else step

    def _reinject(self, step: RolloutStep) -> RolloutStep:
        """Advance the real source; swap the newest frame (or the window) of the slots due for a real one."""
        source, schedule = self.reinjection.source, self.reinjection.schedule
        taken = step.actions.numpy(force=True)
        term, trunc = (torch.as_tensor(x, device=self.device) for x in source.advance(taken))
        due = schedule.due(step.steps, step.dreamt.nll)
        step = replace(step, reinjected=due, real_terminated=term, real_truncated=trunc)
        if not bool(due.any()):
            return step
        ids = due.nonzero().squeeze(1)
        if self.reinjection.window:  # the game's recent frames replace the whole window: (n, k, H, W, 3)
            window = source.window_frames(ids.cpu().numpy(), int(self.engine.n_frames[ids].min()))
        else:  # the newest frame only: (n, 1, H, W, 3)
            window = source.frames(ids.cpu().numpy(), step.tokens[ids])[:, None]
        window = fit_frames(window, self._size, True, "reinjected frames")
        window_tokens = self.model.encode_frames(window.reshape(-1, *window.shape[-3:]))
        window_tokens = window_tokens.reshape(len(window), window.shape[1], -1)
        self.engine.replace_frames(ids, tokens=window_tokens)
        tokens = step.tokens.clone()
        tokens[ids] = window_tokens[:, -1]
        frames = step.frames
        if frames is not None:
            frames = frames.clone()
            frames[ids] = torch.as_tensor(window[:, -1], device=self.device)
        return replace(step, tokens=tokens, frames=frames)


@dataclass
class Trajectory:
    """T steps of N dreams, host-side; step t is what followed action t."""

    tokens: np.ndarray  # (N, T, tokens_per_image) the newest frame after each step (real where reinjected)
    frames: np.ndarray | None  # (N, T, H, W, 3) the dreamt frames (before reinjection), when kept
    actions: np.ndarray  # (N, T, 16) the actions taken (the model's own where it acted)
    predicted: np.ndarray | None  # (N, T, 16) the model's action at each step's start frame, when predicted
    nll: np.ndarray  # (N, T)
    entropy: np.ndarray  # (N, T)
    reinjected: np.ndarray  # (N, T) bool
    seconds: np.ndarray  # (T,) wall-clock seconds of each step (host copies included: one sync per step)

    @property
    def steps(self) -> int:
        return int(self.tokens.shape[1])


ActionSource = Callable[[int, "np.ndarray | None"], "np.ndarray | torch.Tensor | None"]


def _as_actions(a, n: int, device) -> torch.Tensor:
    """A step's actions from an action source, validated and clipped to the controller's Box (run's boundary)."""
    a = torch.as_tensor(np.asarray(a, np.float32) if not torch.is_tensor(a) else a, dtype=torch.float32,
                        device=device)
    if tuple(a.shape) != (n, 16):
        raise ValueError(f"actions: expected ({n}, 16) controller vectors per step, got {tuple(a.shape)}")
    controller.validate_actions(a, "actions")
    return controller.clip_actions(a)


def run(rollout: Rollout, steps: int, actions: np.ndarray | ActionSource, *, decode: bool = True, keep_frames: bool = True,
        predict: bool = False, start_frames: np.ndarray | None = None, progress: bool = False,
        desc: str = "dreaming") -> Trajectory:
    """Step ``rollout`` ``steps`` times under ``actions`` (see the module docstring) and collect the results.

    ``predict``: also sample the model's own action at every frame (16 more tokens per step),
    kept in ``predicted`` beside the actions given. ``keep_frames=False`` decodes (when
    ``decode``) but leaves the frames on the device, for timing. ``start_frames`` (N, H, W, 3):
    what a callable source sees at step 0 (the prompts' last frames).
    """
    N = rollout.num_envs
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    table = None
    if not callable(actions):
        table = np.asarray(actions, np.float32)
        if table.ndim == 2:
            table = np.broadcast_to(table, (N, *table.shape))
        if table.ndim != 3 or table.shape[0] != N or table.shape[1] < steps or table.shape[2] != 16:
            raise ValueError(f"actions: expected an array ({N}, >= {steps}, 16) or ({steps}, 16), got {table.shape}")
    engine = rollout.engine
    last = start_frames
    out = {k: [] for k in ("tokens", "frames", "actions", "predicted", "nll", "entropy", "reinjected", "seconds")}
    for t in tqdm(range(steps), desc=desc, unit="step", disable=not progress, leave=False):
        t0 = time.perf_counter()
        a = table[:, t] if table is not None else actions(t, last)
        if predict:  # the model's action at each slot's newest frame, sampled once (kept from the last step)
            out["predicted"].append(engine.predict_actions().numpy(force=True))
        r = rollout.step(None if a is None else _as_actions(a, N, rollout.device), decode=decode,
                         predict_actions=predict, checked=True)
        out["actions"].append(r.actions.numpy(force=True))
        out["tokens"].append(r.tokens.numpy(force=True))
        out["nll"].append(r.dreamt.nll.float().numpy(force=True))
        out["entropy"].append(r.dreamt.entropy.float().numpy(force=True))
        out["reinjected"].append(r.reinjected.numpy(force=True))
        if decode and (keep_frames or table is None):
            last = r.frames.numpy(force=True)
            if keep_frames:
                out["frames"].append(r.dreamt.frames.numpy(force=True))
        out["seconds"].append(time.perf_counter() - t0)
    stack = lambda k: np.stack(out[k], 1) if out[k] else None  # noqa: E731
    return Trajectory(tokens=stack("tokens"), frames=stack("frames"), actions=stack("actions"),
                      predicted=stack("predicted"), nll=stack("nll"), entropy=stack("entropy"),
                      reinjected=stack("reinjected"), seconds=np.array(out["seconds"]))
