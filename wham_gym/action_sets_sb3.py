"""Action sets over stable-baselines3 VecEnvs: ``VecDiscreteActions`` and ``VecAxesActions``.

SB3 VecEnvs are not Gymnasium vector envs, so :class:`~wham_gym.action_sets.DiscreteVectorActions`
cannot wrap :class:`wham_gym.sb3.WHAMVecEnv` (or a ``VecMonitor`` over it). These wrap any SB3
VecEnv whose action space is the 16-dim controller Box: N dreams in one ``WHAMVecEnv``, or N
games in a ``DummyVecEnv``/``SubprocVecEnv`` of ``DoomEnv``, so one policy acts the same in both.
(For games, ``DummyVecEnv([lambda: DiscreteActions(DoomEnv(...))])`` is equivalent.)
"""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from . import controller
from .action_sets import ActionSet, action_set_for


def _resolve(action_set, venv: VecEnv) -> ActionSet:
    """``action_set`` as given, or derived from the world behind ``venv`` (a dream's model card, a game's scenario)."""
    if action_set is not None:
        return action_set_for(action_set)
    for attr in ("scenario", "engine"):  # a game's scenario (Dummy/SubprocVecEnv), a WHAMVecEnv's engine
        try:
            return action_set_for(venv.get_attr(attr, indices=[0])[0])
        except AttributeError:
            continue
    raise ValueError("no action set given and none can be derived from this VecEnv (neither a WHAM dream nor a "
                     "Doom game); pass action_set=")


def _check_controller_box(venv: VecEnv, who: str) -> None:
    space = venv.action_space
    if getattr(space, "shape", None) != (controller.ACTION_DIM,) or not hasattr(space, "low"):
        raise ValueError(f"{who} wraps a VecEnv whose action space is the 16-dim controller Box, got {space}")


class VecDiscreteActions(VecEnvWrapper):
    """SB3 ``Discrete(n)`` over an action set's presets; ``action_set`` None derives it from the world."""

    def __init__(self, venv: VecEnv, action_set: ActionSet | str | None = None):
        _check_controller_box(venv, "VecDiscreteActions")
        self.action_set = _resolve(action_set, venv)
        super().__init__(venv, action_space=self.action_set.discrete_space())

    def step_async(self, actions) -> None:
        a = np.asarray(actions)
        if a.shape not in ((self.num_envs,), (self.num_envs, 1)):
            raise ValueError(f"VecDiscreteActions: expected {self.num_envs} preset indices, got shape {a.shape}")
        self.venv.step_async(self.action_set.to_controller(a.reshape(self.num_envs)))

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        return self.venv.step_wait()


class VecAxesActions(VecEnvWrapper):
    """SB3 ``Box`` over an action set's axes (clipped; other controller dims 0), for SAC or PPO."""

    def __init__(self, venv: VecEnv, action_set: ActionSet | str | None = None):
        _check_controller_box(venv, "VecAxesActions")
        self.action_set = _resolve(action_set, venv)
        super().__init__(venv, action_space=self.action_set.axes_space())

    def step_async(self, actions) -> None:
        out = self.action_set.axes_to_controller(np.asarray(actions))
        if out.shape != (self.num_envs, controller.ACTION_DIM):
            raise ValueError(f"VecAxesActions: expected actions of shape ({self.num_envs}, "
                             f"{len(self.action_set.axes)}), got {np.shape(actions)}")
        self.venv.step_async(out)

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        return self.venv.step_wait()
