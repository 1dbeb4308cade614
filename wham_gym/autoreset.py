"""Gymnasium 1.x vector autoreset as one small part: what a vector step does to slots whose episode ended.

An :class:`Autoreset` holds the mode and, for NEXT_STEP, which slots are due to
reset. The env calls :meth:`Autoreset.step` once per vector step, after the step's
observation, reward, terminated and truncated are known; it restarts slots through
the env's ``restart`` hook and returns what the step hands back:

  * NEXT_STEP: a slot done at step t is restarted during step t+1, which returns its
    reset observation with reward 0, terminated = truncated = False and the reset
    info (the env's ``info`` hook says which slots stepped). Its draw at t+1 is dropped.
  * SAME_STEP: a slot done at step t is restarted within step t; the step returns the
    reset observation and puts the final one in ``info["final_obs"]`` (an object
    array, None where not done) and the final step's info in ``info["final_info"]``,
    with ``_final_obs`` / ``_final_info`` masks.
  * DISABLED: nothing restarts; the caller resets slots with ``reset_mask``.

Observations here are the env's internal dict of batched tensors (a value may be
None: pixels that were never decoded), written row by row with :func:`put`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

Obs = dict[str, "torch.Tensor | None"]


def parse_mode(mode) -> AutoresetMode:
    """An AutoresetMode from itself or its name or value, any case, underscores optional ("same_step", "SameStep")."""
    if isinstance(mode, AutoresetMode):
        return mode
    for m in AutoresetMode:
        if str(mode).replace("_", "").lower() in (m.value.lower(), m.name.replace("_", "").lower()):
            return m
    raise ValueError(f"autoreset_mode: expected one of {[m.name for m in AutoresetMode]}, got {mode!r}")


def put(obs: Obs, ids: torch.Tensor, rows: Obs) -> None:
    """Write ``rows`` (one per slot in ``ids``) into ``obs`` in place; parts ``obs`` lacks (None) stay None."""
    for k, v in rows.items():
        if obs[k] is not None:
            obs[k][ids] = v


def row(batch, j: int):
    """Env ``j``'s observation out of a batch: an array/tensor, or a dict of them (``obs_mode="both"``)."""
    return {k: v[j] for k, v in batch.items()} if isinstance(batch, dict) else batch[j]


class Autoreset:
    """The autoreset of ``num_envs`` slots in ``mode`` (an AutoresetMode or its name).

    ``pending`` (NEXT_STEP) marks the slots that restart in the next step; :meth:`reset`
    clears it for slots the caller reset by hand.
    """

    def __init__(self, mode, num_envs: int, device=None):
        self.mode = parse_mode(mode)
        self.pending = torch.zeros(num_envs, dtype=torch.bool, device=device)

    def reset(self, ids) -> None:
        """Slots ``ids`` were just reset by ``env.reset``: nothing is due for them any more."""
        self.pending[ids] = False

    def step(self, obs: Obs, reward: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor, *,
             info: Callable[[torch.Tensor | None], dict], restart: Callable[[torch.Tensor], Obs],
             present: Callable[[Obs], object]):
        """Apply the mode to one vector step; returns (obs, reward, terminated, truncated, info).

        ``obs`` holds fresh tensors, written in place for restarted slots. The env's hooks:
        ``info(stepped)`` the step's info, where slots outside the mask ``stepped`` (None: all
        stepped) just restarted and get the reset info; ``restart(ids)`` restarts slots and returns
        their reset observations (rows like ``obs``); ``present(obs)`` the observation as the caller
        sees it (SAME_STEP's ``final_obs``).
        """
        if self.mode == AutoresetMode.NEXT_STEP:
            reset, stepped = self.pending, None
            if bool(reset.any()):
                ids = reset.nonzero().squeeze(1)
                put(obs, ids, restart(ids))
                stepped = ~reset  # their step is the reset: no reward, not done, the reset info
                reward, terminated, truncated = reward * stepped, terminated & stepped, truncated & stepped
            self.pending = terminated | truncated
            return obs, reward, terminated, truncated, info(stepped)

        if self.mode == AutoresetMode.SAME_STEP:
            done = terminated | truncated
            if bool(done.any()):
                ids = done.nonzero().squeeze(1)
                final = present({k: None if v is None else v[ids] for k, v in obs.items()})  # one host copy
                final_obs = np.full(len(done), None, dtype=object)  # per-env observations, as Gymnasium's
                for j, i in enumerate(ids.tolist()):
                    final_obs[i] = row(final, j)
                final_info = {k: (v & done if k.startswith("_") else v) for k, v in info(None).items()}
                put(obs, ids, restart(ids))
                out = info(~done)
                out.update(final_info=final_info, _final_info=done, final_obs=final_obs, _final_obs=done)
                return obs, reward, terminated, truncated, out

        return obs, reward, terminated, truncated, info(None)
