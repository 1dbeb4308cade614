"""Record real-game episodes played by a trained agent: the data of the iterative loop.

World Models' step 4 (and DreamerV1's data loop): collect with the current controller, retrain the world
model on what it did, retrain the controller. An agent trained in a dream does what the dream rewards; its
own episodes in the game show the world model the consequences it got wrong.

    python -m agents.collect --policy runs/agents/ppo-dream-take_cover-latent --episodes 100 \\
        --out data/take_cover_agent1

The recorder of :mod:`wham_gym.games.recorder` plays the game and writes the episodes (same files, manifest
and resume as ``wham-gym record``; the manifest names the agent). The agent sees each frame exactly as in
training: the frames go through its run's wrapper stack (:func:`agents.wrappers.wrap`) over a one-slot
:class:`FeedVecEnv`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv

if __package__ in (None, ""):  # run as a file: make the agents package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wham_gym import controller  # noqa: E402
from wham_gym.prompts import WHAM_SIZE  # noqa: E402

from agents.evaluate import load_policy  # noqa: E402
from agents.wrappers import wrap  # noqa: E402


class FeedVecEnv(VecEnv):
    """One slot whose observation is set from outside and whose (controller) action is kept.

    It lets a game loop that is not an SB3 env (the recorder's) drive a wrapper stack built for SB3 envs:
    set ``frame``, take the stack's observation, predict, ``step_async`` the prediction down the stack, and
    read the controller vector it became in ``action``.
    """

    def __init__(self):
        super().__init__(1, spaces.Box(0, 255, (*WHAM_SIZE, 3), np.uint8), controller.action_space())
        self.frame: np.ndarray | None = None
        self.action: np.ndarray | None = None

    def _obs(self) -> np.ndarray:
        if self.frame is None:
            raise RuntimeError("FeedVecEnv: set .frame before reading an observation")
        return np.asarray(self.frame, np.uint8)[None].copy()

    def reset(self):
        return self._obs()

    def step_async(self, actions) -> None:
        self.action = np.asarray(actions, np.float32).reshape(1, -1)[0]

    def step_wait(self):  # the game loop outside ends episodes; the stack never sees a done
        return self._obs(), np.zeros(1, np.float32), np.zeros(1, bool), [{}]

    def close(self) -> None:
        pass

    def get_attr(self, attr_name, indices=None):
        return [None]

    def set_attr(self, attr_name, value, indices=None) -> None:
        pass

    def env_method(self, method_name, *args, indices=None, **kwargs):
        return [None]

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False]


class AgentActor:
    """A trained SB3 agent as a recorder policy: ``act(frame, info)`` -> controller vector, ``reset(seed)``."""

    def __init__(self, agent, wrapping, model, deterministic: bool, seed: int | None = None):
        self.agent, self.deterministic = agent, deterministic
        self.feed = FeedVecEnv()
        # The recorder steps one frame at a time, so the actor holds a decision for the run's action_repeat
        # frames itself (the stack then sees every action_repeat-th frame, as VecActionRepeat shows it in training).
        self.repeat, self.held = wrapping.action_repeat, 0
        self.venv = wrap(self.feed, replace(wrapping, action_repeat=1), model)
        self.reset(seed)

    def reset(self, seed: int | None = None) -> None:
        self.fresh = True
        if seed is not None:  # SB3 samples with torch's global generator
            torch.manual_seed(seed)

    def act(self, frame: np.ndarray, info=None) -> np.ndarray:
        if not self.fresh and self.held < self.repeat:
            self.held += 1
            return self.feed.action
        self.held = 1
        self.feed.frame = frame
        obs = self.venv.reset() if self.fresh else self.venv.step_wait()[0]
        self.fresh = False
        action, _ = self.agent.predict(obs, deterministic=self.deterministic)
        self.venv.step_async(action)  # mapped down the stack (e.g. a preset index -> its controller vector)
        return self.feed.action


class AgentMaker:
    """Makes :class:`AgentActor` s over one loaded agent (the recorder asks for one per episode)."""

    def __init__(self, policy_path: str, deterministic: bool = True, model=None, device: str = "cpu"):
        from wham_gym import load_model

        self.agent, self.wrapping, self.config = load_policy(policy_path, device=device)
        needs_model = self.wrapping.observe == "latent" or self.wrapping.tokenizer_view
        spec = model if model is not None else self.config.get("model")
        self.model = load_model(spec, device=device) if needs_model else None
        self.deterministic = deterministic
        self.name = f"agent:{Path(policy_path).name}:{'argmax' if deterministic else 'sampled'}"

    def __call__(self, seed: int | None = None) -> AgentActor:
        return AgentActor(self.agent, self.wrapping, self.model, self.deterministic, seed)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m agents.collect", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--policy", required=True, help="a run directory (or model .zip) of agents.train_sb3")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--out", required=True, help="recording folder (reruns resume)")
    ap.add_argument("--max-steps", type=int, default=600, help="steps per episode cap at 10 Hz")
    ap.add_argument("--seed", type=int, default=0, help="base seed of the games and the agent's sampling")
    ap.add_argument("--stochastic", action="store_true", help="sample the agent's actions instead of the argmax")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the agent and the tokenizer)")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv=None) -> dict:
    from wham_gym.games.recorder import record

    ap = build_parser()
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    maker = AgentMaker(args.policy, deterministic=not args.stochastic)
    scenario = maker.config.get("scenario")
    if not scenario:
        ap.error(f"{args.policy}: its config names no scenario")
    manifest = record(args.out, scenario, args.episodes, policy=maker, workers=1, max_steps=args.max_steps,
                      seed=args.seed, env_kwargs=maker.config.get("game_kwargs") or {}, progress=not args.no_progress)
    print(f"{args.out}: {manifest['total_episodes']} episodes, {manifest['total_frames']} frames")
    return manifest


if __name__ == "__main__":
    main()
