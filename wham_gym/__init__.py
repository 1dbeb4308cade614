"""wham-gym: WHAM world models as batched Gymnasium environments."""

from __future__ import annotations

from importlib import metadata as _metadata

from . import controller
from .engine import DreamEngine, StepResult
from .model import WHAMConfig, build_model, load_model

try:  # pyproject.toml is the one place the version is written
    __version__ = _metadata.version("wham-gym")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"


def _register_envs() -> None:
    from gymnasium.envs.registration import register, registry

    if "wham_gym/Doom-v0" not in registry:
        register(id="wham_gym/Doom-v0", entry_point="wham_gym.games.doom:DoomEnv")  # DoomEnv truncates itself
    if "wham_gym/WHAM-v0" not in registry:
        # 1000 steps = 100 s of game time at WHAM's 10 Hz.
        register(id="wham_gym/WHAM-v0", entry_point="wham_gym.env:WHAMEnv",
                 vector_entry_point="wham_gym.env:WHAMVectorEnv", max_episode_steps=1000)
    if "wham_gym/WHAM-Ray-v0" not in registry:  # the vector env over Ray actors (extra [ray]); make_vec only
        register(id="wham_gym/WHAM-Ray-v0", vector_entry_point="wham_gym.cluster:RayVectorEnv")


_register_envs()

__all__ = ["DreamEngine", "StepResult", "WHAMConfig", "build_model", "controller", "load_model", "__version__"]
