"""Real games on Ray actors as one stable-baselines3 ``VecEnv``: SubprocVecEnv, across a cluster.

Each actor holds a group of the envs in an SB3 ``DummyVecEnv``; a step sends each
group its actions and gathers the results in one round of remote calls. Seeds and
reset options go to each env as SB3 gives them (``seed(s)``: env i gets ``s + i``
whichever actor holds it), so with the same policy the episodes are those of a
``DummyVecEnv``/``SubprocVecEnv`` over the same env functions; ``agents.evaluate``
uses it for evaluation in the real game (``Evaluator(ray=True)``).

Env functions must be importable on the workers (``functools.partial(gymnasium.make,
"wham_gym:wham_gym/Doom-v0", ...)`` is). A remote call that fails or does not answer
within ``timeout_s`` raises :class:`~wham_gym.cluster.vector.ActorFailure`: an
evaluation is rerun, not patched.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from ._ray import ensure_initialized
from .infos import concat
from .vector import ActorFailure


class GameGroup:
    """The actor: some of the envs, in a DummyVecEnv."""

    def __init__(self, env_fns: list[Callable]):
        self.venv = DummyVecEnv(env_fns)

    def spaces(self):
        return self.venv.observation_space, self.venv.action_space, self.venv.render_mode

    def reset(self, seeds: list, options: list):
        self.venv._seeds, self.venv._options = list(seeds), list(options)
        obs = self.venv.reset()
        return obs, self.venv.reset_infos

    def step(self, actions: np.ndarray):
        return self.venv.step(actions)

    def get_attr(self, name: str, indices: list[int]):
        return self.venv.get_attr(name, indices)

    def set_attr(self, name: str, value, indices: list[int]) -> None:
        self.venv.set_attr(name, value, indices)

    def env_method(self, name: str, args, kwargs, indices: list[int]):
        return self.venv.env_method(name, *args, indices=indices, **kwargs)

    def env_is_wrapped(self, wrapper_class, indices: list[int]):
        return self.venv.env_is_wrapped(wrapper_class, indices)

    def get_images(self):
        return self.venv.get_images()

    def close(self) -> None:
        self.venv.close()


class RayGamesVecEnv(VecEnv):
    """``len(env_fns)`` envs spread over ``num_actors`` Ray actors (default: one per env), as an SB3 VecEnv.

    ``num_cpus`` and ``actor_options`` are each actor's Ray options; ``address`` as for
    :class:`~wham_gym.cluster.vector.RayVectorEnv`.
    """

    def __init__(self, env_fns: Sequence[Callable], num_actors: int | None = None, *, num_cpus: float = 1,
                 actor_options: dict | None = None, timeout_s: float = 300.0, address: str | None = None):
        self.ray = ray = ensure_initialized(address)
        n = len(env_fns)
        if n < 1:
            raise ValueError("env_fns: need at least one env function")
        num_actors = n if num_actors is None else int(num_actors)
        if not 1 <= num_actors <= n:
            raise ValueError(f"num_actors must lie in [1, {n}] (the number of envs), got {num_actors}")
        self.timeout_s = float(timeout_s)
        self.groups = np.array_split(np.arange(n), num_actors)
        cls = ray.remote(GameGroup).options(num_cpus=num_cpus, max_restarts=0, **(actor_options or {}))
        self.actors = [cls.remote([env_fns[i] for i in g]) for g in self.groups]
        self._refs: list | None = None
        try:
            obs_space, act_space, render_mode = self._all([a.spaces.remote() for a in self.actors], "starting")[0]
        except BaseException:
            self._kill()
            raise
        self.render_mode = render_mode
        super().__init__(n, obs_space, act_space)

    def _all(self, refs: list, during: str) -> list:
        """Every actor's answer, or ActorFailure naming the first that died or did not answer in time."""
        ray = self.ray
        _, late = ray.wait(refs, num_returns=len(refs), timeout=self.timeout_s)
        if late:
            k = refs.index(late[0])
            raise ActorFailure(f"game actor {k} (envs {self.groups[k].tolist()}) gave no answer within "
                               f"{self.timeout_s:.0f} s while {during}")
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as exc:  # raised by the game's own code
            raise exc.as_instanceof_cause() from None
        except ray.exceptions.RayError as exc:
            raise ActorFailure(f"a game actor died while {during}: {exc}") from exc

    def reset(self):
        refs = [a.reset.remote([self._seeds[i] for i in g], [self._options[i] for i in g])
                for a, g in zip(self.actors, self.groups)]
        parts = self._all(refs, "resetting")
        self.reset_infos = [info for _, infos in parts for info in infos]
        self._reset_seeds()
        self._reset_options()
        return concat([obs for obs, _ in parts])

    def step_async(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions)
        self._refs = [a.step.remote(actions[g]) for a, g in zip(self.actors, self.groups)]

    def step_wait(self):
        refs, self._refs = self._refs, None
        parts = self._all(refs, "stepping")
        obs = concat([p[0] for p in parts])
        return (obs, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]),
                [info for p in parts for info in p[3]])

    def _by_actor(self, indices: VecEnvIndices):
        """(actor k, its local indices) for the global ``indices``, in the order asked."""
        for i in self._get_indices(indices):
            k = next(k for k, g in enumerate(self.groups) if g[0] <= i <= g[-1])
            yield k, int(i - self.groups[k][0])

    def _per_env(self, method: str, indices: VecEnvIndices, *args) -> list[Any]:
        pairs = list(self._by_actor(indices))
        refs = [getattr(self.actors[k], method).remote(*args, [j]) for k, j in pairs]
        return [r[0] if isinstance(r, list) else r for r in self._all(refs, method)]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._per_env("get_attr", indices, attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._per_env("set_attr", indices, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        return self._per_env("env_method", indices, method_name, method_args, method_kwargs)

    def env_is_wrapped(self, wrapper_class, indices: VecEnvIndices = None) -> list[bool]:
        return self._per_env("env_is_wrapped", indices, wrapper_class)

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [img for part in self._all([a.get_images.remote() for a in self.actors], "rendering") for img in part]

    def close(self) -> None:
        try:
            self._all([a.close.remote() for a in self.actors], "closing")
        except Exception:  # closing what already failed
            pass
        self._kill()

    def _kill(self) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a, no_restart=True)
            except Exception:
                pass
        self.actors = []
