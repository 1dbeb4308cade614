"""``RayVectorEnv``: a WHAMVectorEnv whose N slots are spread over Ray actors, each with its own engine and device.

Same interface as :class:`~wham_gym.env.WHAMVectorEnv` (Gymnasium ``VectorEnv``,
autoreset modes, reinjection, prompt banks, ``render``), so training code changes
one constructor; ``wham_gym.sb3.WHAMVecEnv(env=RayVectorEnv(..., autoreset_mode="same_step"))``
gives SB3 the same. Slots are split into contiguous blocks, block k on actor k
(a :class:`~wham_gym.cluster.shard.Shard`). A step sends each actor its block of
actions and gathers the results in one round of remote calls; observations come
back as numpy (same-node results are read from Ray's shared-memory object store).

Determinism: this driver holds the env's one Generator and draws every reset's
prompts and sampling seeds in the order a local env with the same N draws them,
then sends each actor its part; sampling is counter-based per slot, so on CPU the
same seed and actions give the same observations (tokens and frames, bit for bit),
terminations and infos as a local ``WHAMVectorEnv(N)`` whatever the number of actors
(tested). Floats that come out of batched matmuls (a learned reward, NLL, entropy)
agree to float32 rounding only: a CPU matmul rounds the last bit differently at
another batch size. The same rounding reaches the logits, so a token drawn within
about 1e-7 of a tie could in principle differ over very long rollouts (never seen in
the tests). Reinjection sources that start episodes (replay, lockstep) draw on the
actor from a Generator the driver seeds: deterministic, but not the local env's stream.

Faults: every remote call has a timeout (``timeout_s``). An actor that dies or does
not answer is killed and, with ``on_failure="restart"`` (default), replaced by a new
one whose slots start new episodes: the step returns them ``truncated`` with
``info["restarted"]`` set (under SAME_STEP the last frame before the fault is in
``final_obs``; under NEXT_STEP and DISABLED it is the observation returned, and
NEXT_STEP resets them at the next step). ``on_failure="raise"`` raises
:class:`ActorFailure` instead. A failed reset of a whole actor is retried with the
same draws, so it gives what the failed one would have.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .. import controller
from ..autoreset import parse_mode
from ..engine import DreamEngine
from ..env import WHAMVectorEnv, prompt_parts, reset_arguments
from ..reinjection import Reinjection
from ..rollout import Rollout
from ._ray import ensure_initialized
from .infos import concat, merge_infos, put_rows, rows
from .shard import Draws, ReinjectionFor, Shard

FAILURE_MODES = ("restart", "raise")


class ActorFailure(RuntimeError):
    """An actor of a RayVectorEnv died or stopped answering, and was not (or could not be) restarted."""


class RayVectorEnv(VectorEnv):
    """N WHAM dreams spread over Ray actors, as one Gymnasium vector env.

    Args:
        num_envs, model, and every keyword :class:`~wham_gym.env.WHAMVectorEnv` takes (prompts,
            obs_mode, autoreset_mode, max_episode_steps, reward_fn, termination_fn, sampling and
            decoding settings...): the same meaning; each actor builds its env from them. ``model`` is
            loaded on each actor (a name, or a path every node can read), or a built model sent to them.
        reinjection: a :class:`~wham_gym.reinjection.Reinjection` whose source serves any slots
            (``RetrievalSource``), or a callable ``slots -> Reinjection`` run on each actor with the global
            slot indices it holds (for per-slot sources: ``ReplaySource``, ``LockstepSource``).
        num_actors: actors to spread the slots over (default: one per GPU in the cluster, else 1).
        num_cpus, num_gpus: Ray resources per actor (``num_gpus`` default: 1 when the cluster has GPUs
            and no ``device="cpu"`` is asked, else 0). An actor given a GPU runs its engine there.
        actor_options: more ``ActorClass.options(...)`` (``scheduling_strategy="SPREAD"``, resources...).
        threads: torch threads per actor (default: ``num_cpus``, at least 1).
        address: Ray to connect to when this process is not connected yet (``"host:port"``, ``"auto"``;
            default Ray's: ``RAY_ADDRESS``, else a new local instance). Call ``ray.init(...)`` yourself for more.
        timeout_s: how long a step or reset waits for an actor before it counts as failed.
        startup_timeout_s: how long actors may take to start (loading the model).
        on_failure: ``"restart"`` (default) or ``"raise"``; ``max_restarts`` restarts per actor, then raise.
    """

    metadata = WHAMVectorEnv.metadata

    def __init__(self, num_envs: int = 1, model="default", *, num_actors: int | None = None, num_cpus: float = 1,
                 num_gpus: float | None = None, actor_options: dict | None = None, threads: int | None = None,
                 address: str | None = None, timeout_s: float = 300.0, startup_timeout_s: float = 900.0,
                 on_failure: str = "restart", max_restarts: int = 3, autoreset_mode=AutoresetMode.NEXT_STEP,
                 return_torch: bool = False, render_mode: str | None = None, reinjection=None, **env_kwargs):
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if isinstance(model, (DreamEngine, Rollout)):
            raise ValueError(f"model: a {type(model).__name__} lives in this process; pass the model (a name, a path "
                             "every node can read, or a built model) and the engine settings as keywords instead")
        if on_failure not in FAILURE_MODES:
            raise ValueError(f"on_failure: expected one of {FAILURE_MODES}, got {on_failure!r}")
        if isinstance(reinjection, Reinjection) and hasattr(reinjection.source, "num_envs"):
            raise ValueError(f"reinjection: a {type(reinjection.source).__name__} serves a fixed set of envs; pass a "
                             "callable slots -> Reinjection, run on each actor for the slots it holds")
        self.ray = ray = ensure_initialized(address)
        self.num_envs = N = int(num_envs)
        self.autoreset_mode = parse_mode(autoreset_mode)
        self.return_torch, self.render_mode = bool(return_torch), render_mode
        self.timeout_s, self.on_failure, self.max_restarts = float(timeout_s), on_failure, int(max_restarts)

        gpus_in_cluster = ray.cluster_resources().get("GPU", 0)
        if num_gpus is None:
            num_gpus = 1 if gpus_in_cluster >= 1 and str(env_kwargs.get("device") or "cuda") != "cpu" else 0
        if num_actors is None:
            num_actors = max(1, int(gpus_in_cluster // num_gpus)) if num_gpus else 1
        if not isinstance(num_actors, (int, np.integer)) or not 1 <= num_actors <= N:
            raise ValueError(f"num_actors must be an int in [1, num_envs={N}], got {num_actors!r}")
        self.slots = [s for s in np.array_split(np.arange(N), int(num_actors))]  # contiguous blocks
        self._sizes = [len(s) for s in self.slots]
        self._options = {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_restarts": 0, **(actor_options or {})}
        self._threads = int(threads or max(1, int(num_cpus)))
        self._factory = reinjection if reinjection is not None and not isinstance(reinjection, Reinjection) else None
        # Stored once in the object store, not copied per actor (a built model can be gigabytes).
        self._env_kwargs = ray.put(dict(env_kwargs, model=model, autoreset_mode=self.autoreset_mode,
                                        reinjection=None if self._factory else reinjection,
                                        render_mode=render_mode, return_torch=False))
        self.restarts = [0] * len(self.slots)
        self._actors: list[Any] = [None] * len(self.slots)
        self._started = False
        try:
            for k in range(len(self.slots)):
                self._actors[k] = self._spawn(k)
            found = self._gather({k: a.describe.remote() for k, a in enumerate(self._actors)}, startup_timeout_s)
            failed = {k: v for k, v in found.items() if isinstance(v, BaseException)}
            if failed:
                k, exc = next(iter(failed.items()))
                if isinstance(exc, TimeoutError):
                    raise ActorFailure(f"actor {k} did not start within {startup_timeout_s:.0f} s: each actor needs "
                                       f"{self._options['num_cpus']} CPU and {self._options['num_gpus']} GPU free "
                                       "in the cluster (see `ray status`)") from exc
                raise ActorFailure(f"actor {k} failed to start: {exc}\nEverything sent to the actors (model, "
                                   "reward_fn, termination_fn, reinjection) must be importable there: installed "
                                   "modules, or functions defined in __main__ / lambdas (pickled by value)") from exc
        except BaseException:
            self._kill_all()
            raise
        self.actors_info = [found[k] for k in range(len(self.slots))]
        d = self.actors_info[0]
        self.single_observation_space, self.single_action_space = d["single_observation_space"], d["single_action_space"]
        self.observation_space = batch_space(self.single_observation_space, N)
        self.action_space = batch_space(self.single_action_space, N)
        self.metadata = {**d["metadata"], "autoreset_mode": self.autoreset_mode}
        self.prompt_bank, self.prompt_frames, self.model_size = d["prompt_bank"], d["prompt_frames"], d["model_size"]
        self.resize_prompts, self._source_starts = d["resize_prompts"], d["source_starts"]
        self.obs_mode = env_kwargs.get("obs_mode", "pixels")
        self.device = torch.device("cpu")  # where this driver's outputs are (return_torch)
        self._pending = np.zeros(N, bool)  # NEXT_STEP: slots the next step resets (mirrors each shard's)
        self._steps = np.zeros(N, np.int64)  # steps in each slot's episode (for infos of untouched shards)
        self._obs = None  # the observation last returned, host-side
        self._warned_clip = False

    # ------------------------------------------------------------------ actors
    def _spawn(self, k: int):
        actor_cls = self.ray.remote(Shard)
        per_slot = ReinjectionFor(self._factory, self.slots[k]) if self._factory else None
        return actor_cls.options(**self._options).remote(self._sizes[k], self._env_kwargs, self._threads, per_slot)

    def _gather(self, refs: dict[int, Any], timeout_s: float | None = None) -> dict[int, Any]:
        """Results by actor; an actor that died or did not answer in time gives its exception instead.

        Exceptions raised by our code inside an actor (bad input, a bug) are raised here as they are.
        """
        ray = self.ray
        timeout = self.timeout_s if timeout_s is None else timeout_s
        _, late = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout)
        late = set(late)
        out: dict[int, Any] = {}
        for k, ref in refs.items():
            if ref in late:
                out[k] = TimeoutError(f"no answer within {timeout:.0f} s (timeout_s)")
                continue
            try:
                out[k] = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:  # raised by the env's own code: not a fault
                raise exc.as_instanceof_cause() from None
            except ray.exceptions.RayError as exc:  # the actor or its node died, or its object was lost
                out[k] = exc
        return out

    def _check_alive(self) -> None:
        lost = [k for k, a in enumerate(self._actors) if a is None]
        if lost:
            raise ActorFailure(f"{self._describe_actor(lost[0])} was lost to an earlier failure (or close()); this "
                               "env cannot continue: close it and build a new one")

    def _describe_actor(self, k: int) -> str:
        s = self.slots[k]
        return f"actor {k} (slots {s[0]}-{s[-1]})"

    def _replace(self, k: int, exc: BaseException, during: str, draws: Draws | None = None):
        """Kill actor k and start a new one whose slots are all reset (``draws``, else fresh ones); its reset."""
        self._kill(k)
        if self.on_failure == "raise":
            raise ActorFailure(f"{self._describe_actor(k)} failed during {during}: {exc!r}. Its dreams are lost; "
                               "RayVectorEnv(on_failure='restart') restarts failed actors instead") from exc
        while True:
            self.restarts[k] += 1
            if self.restarts[k] > self.max_restarts:
                raise ActorFailure(f"{self._describe_actor(k)} failed {self.restarts[k]} times (last during {during}: "
                                   f"{exc!r}); max_restarts={self.max_restarts} reached") from exc
            warnings.warn(f"RayVectorEnv: {self._describe_actor(k)} failed during {during} ({exc!r}); restarting it "
                          f"(restart {self.restarts[k]} of at most {self.max_restarts})", RuntimeWarning, stacklevel=3)
            self._actors[k] = self._spawn(k)
            if draws is None:
                draws = self._draw(self.slots[k], None)[k]
            result = self._gather({k: self._actors[k].reset.remote(draws, None, None)}, max(self.timeout_s, 900.0))[k]
            if not isinstance(result, BaseException):
                return result
            exc, during = result, "its restart"
            self._kill(k)

    def _kill(self, k: int) -> None:
        actor, self._actors[k] = self._actors[k], None
        if actor is not None:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # already gone
                pass

    def _kill_all(self) -> None:
        for k in range(len(self._actors)):
            self._kill(k)

    # ------------------------------------------------------------------ draws
    def _draw(self, ids: np.ndarray, prompt) -> dict[int, Draws]:
        """Draw prompts and seeds for global slots ``ids`` (ascending) as a local env would; split by actor."""
        rng = self.np_random
        n = len(ids)
        prompts = None
        source_seeds = {}
        if prompt is None and self._source_starts:
            source_seeds = {k: int(rng.integers(0, 2**63)) for k, s in enumerate(self.slots) if np.isin(ids, s).any()}
        elif prompt is None:
            prompts = self.prompt_bank.sample(rng, n, self.prompt_frames, size=self.model_size,
                                              resize=self.resize_prompts, option="env")
        seeds = rng.integers(0, 2**62, size=n)
        out = {}
        for k, s in enumerate(self.slots):
            sel = np.flatnonzero((ids >= s[0]) & (ids <= s[-1]))
            if len(sel):
                out[k] = Draws(ids=ids[sel] - s[0], seeds=seeds[sel],
                               prompts=None if prompts is None else [prompts[j] for j in sel],
                               source_seed=source_seeds.get(k))
        return out

    # ------------------------------------------------------------------ reset
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """As :meth:`WHAMVectorEnv.reset`: all slots, or ``options["reset_mask"]``; ``options["prompt"]``."""
        mask, prompt = reset_arguments(self, seed, options)
        self._check_alive()
        if mask is not None:
            mask = self._check_mask(mask)
        ids = np.arange(self.num_envs) if mask is None else np.flatnonzero(mask)
        per_slot = _per_slot_prompts(prompt, len(ids))
        draws = self._draw(ids, prompt)
        refs = {}
        for k, d in draws.items():
            sel = np.flatnonzero(np.isin(ids, self.slots[k]))
            p = prompt if per_slot is None else (per_slot[0][sel], None if per_slot[1] is None else per_slot[1][sel])
            local_mask = None if mask is None else mask[self.slots[k]]
            refs[k] = self._actors[k].reset.remote(d, local_mask, p)
        results = self._gather(refs)
        for k, r in results.items():
            if isinstance(r, BaseException):  # a whole-actor reset is retried with the same draws
                results[k] = self._replace(k, r, "reset", draws[k] if mask is None or mask[self.slots[k]].all() else None)
        parts_obs, parts_info = [], []
        for k, s in enumerate(self.slots):
            if k in results:
                obs_k, info_k = results[k]
            else:  # untouched actor: what it showed, and its steps
                obs_k = rows(self._obs, s)
                info_k = {"step": self._steps[s].copy(), "_step": np.zeros(len(s), bool),
                          "reinjected": np.zeros(len(s), bool), "_reinjected": np.zeros(len(s), bool)}
            parts_obs.append(obs_k)
            parts_info.append(info_k)
        obs, info = concat(parts_obs), merge_infos(parts_info, self._sizes)
        self._pending[ids] = False
        self._steps = np.asarray(info["step"]).copy()
        self._obs = obs
        self._started = True
        return self._out(obs), self._out(info)

    def _check_mask(self, mask) -> np.ndarray:
        if torch.is_tensor(mask):
            mask = mask.numpy(force=True)
        if not isinstance(mask, np.ndarray) or mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
            raise ValueError(f"options['reset_mask']: expected a bool array of shape ({self.num_envs},), "
                             f"got {type(mask).__name__} {getattr(mask, 'shape', None)} {getattr(mask, 'dtype', None)}")
        if not mask.any():
            raise ValueError("options['reset_mask']: must select at least one env")
        if not self._started and not mask.all():
            raise ValueError("options['reset_mask']: the first reset must reset every env")
        return mask

    # ------------------------------------------------------------------ step
    def step(self, actions):
        """Advance every dream one step with ``actions`` (N, 16): one round of remote calls (two under SAME_STEP
        when some slot finished: its reset is drawn after the step)."""
        if not self._started:
            raise RuntimeError("step: call reset() first")
        self._check_alive()
        a = self._check_actions(actions)
        mode = self.autoreset_mode
        draws = self._draw(np.flatnonzero(self._pending), None) if mode == AutoresetMode.NEXT_STEP and \
            self._pending.any() else {}
        refs = {k: actor.step.remote(a[s], draws.get(k)) for k, (actor, s) in enumerate(zip(self._actors, self.slots))}
        results = self._gather(refs)
        failed = {k: r for k, r in results.items() if isinstance(r, BaseException)}

        if mode != AutoresetMode.SAME_STEP and any(len(results[k][1]) for k in results if k not in failed):
            raise RuntimeError("RayVectorEnv: an actor deferred resets outside SAME_STEP; the driver's NEXT_STEP "
                               "bookkeeping diverged from the actor's (a bug in wham_gym.cluster)")
        if mode == AutoresetMode.SAME_STEP:  # the slots that finished: drawn now, reset in a second round
            deferred = np.concatenate([self.slots[k][results[k][1]] for k in results if k not in failed])
            if len(deferred):
                later = self._draw(np.sort(deferred), None)
                done = self._gather({k: self._actors[k].finish_resets.remote(d) for k, d in later.items()})
                for k, r in done.items():
                    if isinstance(r, BaseException):
                        failed[k] = r
                        continue
                    step_k = results[k][0]
                    obs_k = _writable(step_k[0])  # arrays read from the object store are read-only
                    put_rows(obs_k, later[k].ids, r)
                    results[k] = ((obs_k, *step_k[1:]), results[k][1])

        parts = []
        prev = self._obs
        for k, s in enumerate(self.slots):
            if k in failed:
                parts.append(self._restarted_part(k, failed[k], rows(prev, s)))
            else:
                parts.append(results[k][0])
        obs = concat([p[0] for p in parts])
        reward = np.concatenate([p[1] for p in parts])
        terminated = np.concatenate([p[2] for p in parts])
        truncated = np.concatenate([p[3] for p in parts])
        info = merge_infos([p[4] for p in parts], self._sizes)
        if mode == AutoresetMode.NEXT_STEP:
            self._pending = terminated | truncated
        self._steps = np.asarray(info["step"]).copy()
        self._obs = obs
        return self._out(obs), self._out(reward), self._out(terminated), self._out(truncated), self._out(info)

    def _restarted_part(self, k: int, exc: BaseException, last_obs):
        """Actor k failed this step: restart it; its slots' step result (truncated, ``info["restarted"]``)."""
        n = self._sizes[k]
        obs_new, info = self._replace(k, exc, "step")
        ones, zeros = np.ones(n, bool), np.zeros(n, bool)
        info = {**info, "restarted": ones, "_restarted": ones}
        mode = self.autoreset_mode
        if mode == AutoresetMode.SAME_STEP:  # the new episode's first frame; the last one before the fault is final
            final_obs = np.full(n, None, dtype=object)
            for i in range(n):
                final_obs[i] = rows(last_obs, i)
            info.update(final_obs=final_obs, _final_obs=ones, final_info={"restarted": ones, "_restarted": ones},
                        _final_info=ones)
            obs = obs_new
        else:  # the episode ends at the last frame it showed; NEXT_STEP resets it at the next step
            obs = last_obs
            if mode == AutoresetMode.NEXT_STEP:
                self._gather({k: self._actors[k].mark_pending.remote(np.arange(n))})
        return obs, np.zeros(n, np.float32), zeros, ones, info

    def _check_actions(self, actions) -> np.ndarray:
        a = actions.numpy(force=True) if torch.is_tensor(actions) else np.asarray(actions)
        if a.dtype.kind not in "fiub":
            raise ValueError(f"actions: expected numbers, got dtype {a.dtype}")
        a = np.ascontiguousarray(a, dtype=np.float32)
        if a.shape != (self.num_envs, controller.ACTION_DIM):
            raise ValueError(f"actions: expected shape ({self.num_envs}, {controller.ACTION_DIM}), one controller "
                             f"vector (12 buttons then 4 sticks) per env, got {a.shape}")
        bad = ~np.isfinite(a)
        if bad.any():
            env, dim = (int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"actions: env {env}, dimension {dim} ({controller.ACTION_NAMES[dim]}) is "
                             f"{a[env, dim]}; actions must be finite")
        low, high = controller.ACTION_LOW, controller.ACTION_HIGH
        if not self._warned_clip and ((a < low) | (a > high)).any():
            warnings.warn("actions outside the controller Box are clipped (buttons to [0, 1], sticks to [-1, 1]); "
                          "this warning is shown once", stacklevel=3)
            self._warned_clip = True
        return np.minimum(np.maximum(a, low), high).astype(np.float32)

    # ------------------------------------------------------------------ outputs, rendering, attributes
    def _out(self, x):
        if isinstance(x, dict):
            return {k: self._out(v) for k, v in x.items()}
        if self.return_torch and isinstance(x, np.ndarray) and x.dtype != object:
            return torch.from_numpy(x)
        return x

    def current_frames(self) -> torch.Tensor:
        """The frames now shown, (N, 180, 300, 3) uint8 on the CPU (decoded on the actors in tokens mode)."""
        if not self._started:
            raise RuntimeError("render: call reset() first")
        parts = self._gather({k: a.frames.remote() for k, a in enumerate(self._actors)})
        for k, r in parts.items():
            if isinstance(r, BaseException):
                raise ActorFailure(f"{self._describe_actor(k)} failed while rendering: {r!r}") from r
        return torch.from_numpy(np.concatenate([parts[k] for k in range(len(self.slots))]))

    def render(self) -> tuple[np.ndarray, ...] | None:
        """The frame each env now shows, a tuple of N (180, 300, 3) uint8 arrays (Gymnasium's vector convention)."""
        if self.render_mode is None:
            warnings.warn("render() called without a render_mode; pass render_mode='rgb_array'")
            return None
        return tuple(self.current_frames().numpy())

    def call(self, name: str, *args, **kwargs) -> list:
        """Call method ``name`` of every actor's env; one result per actor."""
        out = self._gather({k: a.call.remote(name, *args, **kwargs) for k, a in enumerate(self._actors)})
        return [out[k] for k in range(len(self.slots))]

    def close_extras(self, **kwargs) -> None:
        alive = {k: a.close.remote() for k, a in enumerate(self._actors) if a is not None}
        if alive:
            self._gather(alive, min(self.timeout_s, 60.0))  # lockstep games shut down; failures are moot now
        self._kill_all()


def _per_slot_prompts(prompt, n: int):
    """``options["prompt"]`` with one prompt per slot reset: (frames (n, P, H, W, 3), actions or None); else None."""
    parts = prompt_parts(prompt)
    if parts is None:
        return None  # no prompt, or one the actors refuse with the env's own error
    frames, actions = parts
    frames = np.asarray(frames)
    if frames.ndim != 5 or frames.shape[0] != n:
        return None  # one prompt for every slot: sent as it is
    return frames, None if actions is None else np.asarray(actions)


def _writable(obs):
    if isinstance(obs, dict):
        return {k: np.array(v) for k, v in obs.items()}
    return np.array(obs)
