"""stable-baselines3 adapter: one :class:`~wham_gym.env.WHAMVectorEnv` as an SB3 ``VecEnv``.

SB3 resets finished envs within the step that ends them, so the vector env runs
with ``AutoresetMode.SAME_STEP``; a finished env's info carries
``terminal_observation`` and ``TimeLimit.truncated`` like SB3's own VecEnvs, and
its reset info goes to ``reset_infos``. All N dreams live in one engine, so
``get_attr``/``set_attr``/``env_method`` reach that one vector env (a getter or
method result is repeated for each index asked). :class:`ConcatVecEnv` joins several
(an ensemble of dreams, envs split across world models) into one. :class:`ProcessVecEnv` runs one in a
child process, and :func:`sharded_dreams` joins several such shards: on a small CPU two one-thread engines
of N/2 dreams outrun one two-thread engine of N (the decode loop's small ops scale badly across threads).

Replay buffers: SB3's SAC default (1M transitions) would need about 324 GB at
180x300x3 frames (observation and next observation each). :func:`make_sac`
sizes the buffer to :data:`REPLAY_BUDGET_BYTES` (2 GiB) unless told otherwise.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from functools import partial
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from .env import WHAMVectorEnv

REPLAY_BUDGET_BYTES = 2 * 1024**3
WORKER_START_TIMEOUT = 300  # seconds for a ProcessVecEnv's child to import torch and build its env


class WHAMVecEnv(VecEnv):
    """N WHAM dreams as an SB3 VecEnv.

    Args:
        num_envs, model, **kwargs: passed to :class:`WHAMVectorEnv` (with SAME_STEP autoreset and numpy outputs).
        env: an existing WHAMVectorEnv to wrap instead (it must use SAME_STEP and numpy outputs).
    """

    def __init__(self, num_envs: int = 1, model="default", *, env: WHAMVectorEnv | None = None, **kwargs):
        if env is None:
            env = WHAMVectorEnv(num_envs, model, autoreset_mode=AutoresetMode.SAME_STEP, return_torch=False, **kwargs)
        elif env.autoreset_mode != AutoresetMode.SAME_STEP or env.return_torch:
            raise ValueError("WHAMVecEnv needs a WHAMVectorEnv with autoreset_mode=SAME_STEP and return_torch=False, "
                             f"got {env.autoreset_mode.name} and return_torch={env.return_torch}")
        self.venv = env
        self._actions: np.ndarray | None = None
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)

    def reset(self):
        seed = next((s for s in self._seeds if s is not None), None)  # one seed; slots derive theirs from it
        options = next((o for o in self._options if o), None)
        obs, info = self.venv.reset(seed=seed, options=options)
        self.reset_infos = _split(info, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        obs, reward, terminated, truncated, info = self.venv.step(self._actions)
        dones = terminated | truncated
        infos = _split(info, self.num_envs)
        if dones.any():
            finals = _split(info["final_info"], self.num_envs)
            for i in np.flatnonzero(dones):
                self.reset_infos[i] = infos[i]
                infos[i] = {**finals[i], "terminal_observation": info["final_obs"][i],
                            "TimeLimit.truncated": bool(truncated[i] and not terminated[i])}
        return obs, reward.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        return list(self.venv.current_frames().numpy(force=True))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


class ConcatVecEnv(VecEnv):
    """Several SB3 VecEnvs with the same spaces as one: envs ``0..n0-1`` are the first's, then the second's, ...

    For an ensemble of dreams (N envs split across world models), so one policy is trained against every model's
    errors at once rather than exploiting one model's (each part steps its own batched engine in turn).
    """

    def __init__(self, parts: Sequence[VecEnv]):
        parts = list(parts)
        if not parts:
            raise ValueError("ConcatVecEnv needs at least one VecEnv")
        first = parts[0]
        for i, p in enumerate(parts[1:], 1):
            if p.observation_space != first.observation_space or p.action_space != first.action_space:
                raise ValueError(f"ConcatVecEnv: part {i} has observation space {p.observation_space} and action "
                                 f"space {p.action_space}, part 0 has {first.observation_space} and "
                                 f"{first.action_space}; the parts must agree")
        self.parts = parts
        self.starts = np.cumsum([0] + [p.num_envs for p in parts])
        super().__init__(int(self.starts[-1]), first.observation_space, first.action_space)

    def _locate(self, indices: VecEnvIndices) -> list[tuple[VecEnv, int]]:
        """(part, its local index) for each of the global ``indices``, in their order."""
        out = []
        for i in self._get_indices(indices):
            k = int(np.searchsorted(self.starts, i, side="right")) - 1
            out.append((self.parts[k], int(i - self.starts[k])))
        return out

    def _concat(self, values: list):
        if isinstance(values[0], dict):
            return {k: np.concatenate([v[k] for v in values]) for k in values[0]}
        return np.concatenate(values)

    def seed(self, seed: int | None = None) -> Sequence[None | int]:
        # each part derives its envs' seeds from its own: offset by where it starts, so no two envs share one
        return [s for p, start in zip(self.parts, self.starts)
                for s in p.seed(None if seed is None else seed + int(start))]

    def reset(self):
        obs = self._concat([p.reset() for p in self.parts])
        self.reset_infos = [info for p in self.parts for info in p.reset_infos]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        for p, a, b in zip(self.parts, self.starts[:-1], self.starts[1:]):
            p.step_async(actions[a:b])

    def step_wait(self):
        results = [p.step_wait() for p in self.parts]
        self.reset_infos = [info for p in self.parts for info in p.reset_infos]
        obs, rew, dones, infos = zip(*results)
        return self._concat(list(obs)), np.concatenate(rew), np.concatenate(dones), [i for x in infos for i in x]

    def close(self) -> None:
        for p in self.parts:
            p.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [image for p in self.parts for image in p.get_images()]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [p.get_attr(attr_name, [i])[0] for p, i in self._locate(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        for p, i in self._locate(indices):
            p.set_attr(attr_name, value, [i])

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        return [p.env_method(method_name, *method_args, indices=[i], **method_kwargs)[0]
                for p, i in self._locate(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [p.env_is_wrapped(wrapper_class, [i])[0] for p, i in self._locate(indices)]


class ProcessVecEnv(VecEnv):
    """A VecEnv built and stepped in a child process with its own torch threads (and its own GIL).

    ``factory`` (picklable: a module-level function or a ``functools.partial`` of one) builds the VecEnv in the
    child. ``step_async`` only sends the actions, so several ProcessVecEnvs in a :class:`ConcatVecEnv` step at
    the same time; everything else waits for the child's answer. An error in the child is raised here with its
    traceback.
    """

    def __init__(self, factory: Callable[[], VecEnv], threads: int = 1, start_method: str = "spawn"):
        ctx = mp.get_context(start_method)
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child, factory, threads), daemon=True)
        self._process.start()
        child.close()
        self._closed = False
        num_envs, observation_space, action_space = self._answer(WORKER_START_TIMEOUT)
        super().__init__(num_envs, observation_space, action_space)

    def _answer(self, timeout: float | None = None):
        if not self._conn.poll(timeout):
            self._process.terminate()
            raise RuntimeError(f"ProcessVecEnv: the child built nothing in {timeout} s")
        try:
            status, value = self._conn.recv()
        except EOFError:
            self._process.join(timeout=5)
            raise RuntimeError(f"ProcessVecEnv: the child process exited (code {self._process.exitcode}) "
                               "without answering") from None
        if status == "error":
            raise RuntimeError(f"ProcessVecEnv: the child process failed:\n{value}")
        return value

    def _call(self, command: str, *args):
        self._conn.send((command, args))
        return self._answer()

    def seed(self, seed: int | None = None) -> Sequence[None | int]:
        return self._call("seed", seed)

    def set_options(self, options=None) -> None:
        self._call("set_options", options)

    def reset(self):
        obs, self.reset_infos = self._call("reset")
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._conn.send(("step", (actions,)))

    def step_wait(self):
        obs, reward, dones, infos, self.reset_infos = self._answer()
        return obs, reward, dones, infos

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._call("close")
        except (EOFError, BrokenPipeError, RuntimeError):
            pass  # the child is gone already
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.terminate()

    def get_images(self) -> Sequence[np.ndarray | None]:
        return self._call("get_images")

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._call("get_attr", attr_name, indices)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._call("set_attr", attr_name, value, indices)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        return self._call("env_method", method_name, method_args, indices, method_kwargs)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return self._call("env_is_wrapped", wrapper_class, indices)


def _serve(conn, factory, threads: int) -> None:
    """A ProcessVecEnv's child: build the VecEnv, then answer commands until ``close``."""
    import torch

    torch.set_num_threads(threads)
    try:
        venv = factory()
        conn.send(("ok", (venv.num_envs, venv.observation_space, venv.action_space)))
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    commands = {
        "seed": venv.seed, "set_options": venv.set_options, "get_images": venv.get_images,
        "reset": lambda: (venv.reset(), venv.reset_infos),
        "step": lambda a: (*venv.step(a), venv.reset_infos),
        "get_attr": lambda name, idx: venv.get_attr(name, idx),
        "set_attr": lambda name, value, idx: venv.set_attr(name, value, idx),
        "env_method": lambda name, args, idx, kwargs: venv.env_method(name, *args, indices=idx, **kwargs),
        "env_is_wrapped": lambda cls, idx: venv.env_is_wrapped(cls, idx),
    }
    while True:
        try:
            command, args = conn.recv()
        except EOFError:  # the parent is gone
            venv.close()
            return
        if command == "close":
            venv.close()
            conn.send(("ok", None))
            return
        try:
            conn.send(("ok", commands[command](*args)))
        except Exception:
            conn.send(("error", traceback.format_exc()))


def split_envs(num_envs: int, parts: int) -> list[int]:
    """Envs per part (shard, or model of an ensemble): as even as can be, the first parts taking the remainder."""
    return [num_envs // parts + (i < num_envs % parts) for i in range(parts)]


def sharded_dreams(num_envs: int, model, shards: int, threads: int = 1, **kwargs) -> VecEnv:
    """``num_envs`` dreams as ``shards`` :class:`WHAMVecEnv` s, each in a child process with ``threads`` torch
    threads, joined into one VecEnv (envs split as evenly as can be, the first shards taking the remainder).

    ``model``: a name or path (each child loads it) or a loaded model (pickled to each child); ``kwargs`` go to
    each WHAMVecEnv and must be picklable (a prompt bank is; build reinjection sources in the child instead).
    Each shard seeds its engine from ``seed + its first env`` (:class:`ConcatVecEnv`), so its dreams' random
    streams differ from one engine's of ``num_envs``: the same distribution, other draws.
    """
    if not 1 <= shards <= num_envs:
        raise ValueError(f"shards: expected 1 to num_envs ({num_envs}), got {shards}")
    return ConcatVecEnv([ProcessVecEnv(partial(WHAMVecEnv, n, model, **kwargs), threads)
                         for n in split_envs(num_envs, shards)])


def _split(info: dict, n: int) -> list[dict]:
    """Gymnasium's batched info (arrays + ``_key`` masks) -> SB3's list of per-env dicts."""
    out: list[dict] = [{} for _ in range(n)]
    for key, value in info.items():
        if key.startswith("_") or key in ("final_obs", "final_info"):
            continue
        for i in np.flatnonzero(info.get("_" + key, np.ones(n, bool))):
            out[i][key] = value[i]
    return out


def replay_buffer_size(observation_space: gym.Space, budget_bytes: int = REPLAY_BUDGET_BYTES) -> int:
    """Transitions that fit ``budget_bytes`` when each stores an observation and a next observation."""
    per = sum(int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize for s in _leaves(observation_space))
    return max(1, budget_bytes // (2 * per))


def _leaves(space: gym.Space):
    if isinstance(space, gym.spaces.Dict):
        for s in space.spaces.values():
            yield from _leaves(s)
    else:
        yield space


def make_sac(env, policy: str = "CnnPolicy", buffer_size: int | None = None, **kwargs):
    """SB3 SAC with a replay buffer that fits :data:`REPLAY_BUDGET_BYTES` (SB3's 1M default would not)."""
    from stable_baselines3 import SAC

    size = buffer_size or replay_buffer_size(env.observation_space)
    return SAC(policy, env, buffer_size=size, **kwargs)
