"""One Ray actor's part of a distributed vector env: a :class:`WHAMVectorEnv` over some of the slots.

The driver (:class:`~wham_gym.cluster.vector.RayVectorEnv`) owns the one random
Generator, as a local env does: it draws every reset's prompts and sampling seeds
in the order a local env with the same N would, and sends each shard its part
(:class:`Draws`). A shard's env never draws for itself, so slot k dreams exactly
what slot k of the local env dreams. Everything else (engine step, reward and
termination, truncation, NEXT_STEP autoreset, infos) is the stock env's code.

SAME_STEP is the one autoreset the driver cannot draw for in advance: which slots
finish is known only after the step. The shard then returns the step with those
slots' reset observations missing (:meth:`Shard.step` reports them in ``deferred``),
and the driver draws for the finished slots of all shards and sends the draws in a
second call (:meth:`Shard.finish_resets`), only on steps where some slot finished.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..autoreset import put
from ..env import WHAMVectorEnv
from ..prompts import WHAM_SIZE, Prompt, PromptBank
from ..reinjection import Reinjection


@dataclass
class Draws:
    """What a reset of some slots takes from the driver's Generator (local slot ids, ascending)."""

    ids: np.ndarray  # (n,) int: the shard's local slot indices
    seeds: np.ndarray  # (n,) the slots' sampling seeds
    prompts: list[Prompt] | None  # the prompts drawn from the bank; None: options["prompt"] or the source's
    source_seed: int | None = None  # seeds the Generator a reinjection source that starts episodes draws from


class ShardEnv(WHAMVectorEnv):
    """A WHAMVectorEnv whose resets take the driver's draws instead of drawing from its own Generator."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.draws: Draws | None = None  # set by the actor before each call that may reset slots
        self.deferred = np.zeros(0, np.int64)  # SAME_STEP slots whose reset awaits the driver's draws

    def _reset_slots(self, ids: torch.Tensor, prompt=None, autoreset: bool = False) -> torch.Tensor:
        d, self.draws = self.draws, None
        local = ids.cpu().numpy()
        if d is None or not np.array_equal(d.ids, local):
            raise RuntimeError(f"shard: slots {local.tolist()} reset but the driver drew for "
                               f"{None if d is None else d.ids.tolist()}; the driver's autoreset bookkeeping "
                               "diverged from the shard's (a bug in wham_gym.cluster)")
        if prompt is not None:
            prompts = self._option_prompts(prompt, len(local))
        elif d.prompts is None:  # replay / lockstep: the source draws from a Generator the driver seeded
            prompts = self._source_prompts(ids, np.random.default_rng(d.source_seed), autoreset)
        else:
            prompts = d.prompts
        return self._start_slots(ids, prompts, d.seeds)

    def _reset_obs(self, ids):
        if self.draws is not None:  # NEXT_STEP: the draws came with the step
            return super()._reset_obs(ids)
        # SAME_STEP: leave the finished slots as they are until finish_resets brings their draws.
        self.deferred = ids.cpu().numpy()
        frames = torch.zeros((len(ids), *WHAM_SIZE, 3), dtype=torch.uint8, device=self.device)
        return {"tokens": self.engine.images[ids, -1], "pixels": frames if self._decode else None}


class ReinjectionFor:
    """Builds, on the actor, the Reinjection for the slots it holds: ``factory(slots)``."""

    def __init__(self, factory, slots: np.ndarray):
        self.factory, self.slots = factory, np.asarray(slots)

    def build(self) -> Reinjection:
        made = self.factory(self.slots)
        if not isinstance(made, Reinjection):
            raise ValueError(f"reinjection factory: expected it to return a Reinjection, got {type(made).__name__}")
        return made


class Shard:
    """The actor: builds its env on its own device and answers the driver's calls (numpy in, numpy out).

    Args:
        num_slots: the slots this shard holds.
        env_kwargs: :class:`WHAMVectorEnv` arguments (the same for every shard; ``autoreset_mode`` included).
        threads: torch threads (Ray gives the actor ``num_cpus`` cores; more threads than that oversubscribe).
        reinjection_for: builds this shard's reinjection from a per-slot factory (else ``env_kwargs``' own).
    """

    def __init__(self, num_slots: int, env_kwargs: dict, threads: int = 1, reinjection_for: ReinjectionFor | None = None):
        torch.set_num_threads(max(1, int(threads)))
        kwargs = dict(env_kwargs)
        if reinjection_for is not None:  # per-slot sources are built here, for our slots
            kwargs["reinjection"] = reinjection_for.build()
        if kwargs.get("device") is None:  # the GPU Ray assigned, else the CPU
            kwargs["device"] = "cuda" if torch.cuda.is_available() else "cpu"
        self.env = ShardEnv(num_slots, **kwargs)

    def describe(self) -> dict:
        """What the driver mirrors: spaces, prompt bank, sizes, and where this actor runs."""
        import ray  # this runs inside a Ray worker

        env = self.env
        return {"single_observation_space": env.single_observation_space,
                "single_action_space": env.single_action_space, "metadata": env.metadata,
                "prompt_bank": PromptBank(env.prompt_bank.episodes, env.prompt_bank.cache_size),  # not its cache
                "prompt_frames": env.prompt_frames, "model_size": env.model_size,
                "resize_prompts": env.resize_prompts, "device": str(env.device),
                "source_starts": env.reinjection is not None and env.reinjection.source.starts_episodes,
                "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    def reset(self, draws: Draws, mask: np.ndarray | None, prompt=None):
        self.env.draws = draws
        options = {} if mask is None else {"reset_mask": mask}
        if prompt is not None:
            options["prompt"] = prompt
        return self.env.reset(options=options)

    def step(self, actions: np.ndarray, draws: Draws | None):
        """One env step; ``draws`` for the slots NEXT_STEP resets in it. Returns the step and the deferred slots."""
        self.env.draws, self.env.deferred = draws, np.zeros(0, np.int64)
        out = self.env.step(np.array(actions))  # writable: arrays from Ray's object store are read-only
        if self.env.draws is not None:
            raise RuntimeError("shard: the driver drew for NEXT_STEP resets the shard did not make (a bug in "
                               "wham_gym.cluster)")
        return out, self.env.deferred

    def finish_resets(self, draws: Draws):
        """SAME_STEP: reset the slots deferred in the last step; their reset observations (n, ...)."""
        env = self.env
        ids = torch.as_tensor(draws.ids, device=env.device)
        env.draws = draws
        rows = WHAMVectorEnv._reset_obs(env, ids)
        put(env._obs, ids, rows)  # what render() shows
        return env._present(rows)

    def mark_pending(self, ids: np.ndarray) -> None:
        """NEXT_STEP: these slots reset in the next step (after the driver restarted this actor)."""
        self.env.autoreset.pending[torch.as_tensor(ids, device=self.env.device)] = True

    def frames(self) -> np.ndarray:
        return self.env.current_frames().numpy(force=True)

    def get(self, name: str):
        return getattr(self.env, name)

    def call(self, name: str, *args, **kwargs):
        return getattr(self.env, name)(*args, **kwargs)

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        self.env.close()
