"""Returns of a policy in the real game and in the dream.

A policy is anything with SB3's ``predict(obs, state, episode_start, deterministic) -> (actions, state)``:
an SB3 model, :class:`RandomAgent`, or :class:`BehaviourAgent` (WHAM's own predicted actions).
It acts through a :class:`~agents.wrappers.Wrapping` (an SB3 model through its run's; the two
agents here through :data:`~agents.wrappers.RAW`: full frames, controller actions).

Evaluation envs are seeded with one fixed seed per call, so every policy and every
evaluation of a run meets the same starts (Doom's episode seeds, the dream's prompts) for a given
number of envs: env i is seeded seed + i and plays its share of the episodes, so another number of
envs meets other starts (one take_cover policy: 800.9 over 100 episodes on 10 envs, 718.0 on 32).

    python -m agents.evaluate --policy runs/agents/ppo-dream --worlds real,dream --episodes 20
    python -m agents.evaluate --policy behaviour --model default --episodes 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import deque
from dataclasses import replace
from functools import partial
from pathlib import Path

import gymnasium as gym
import numpy as np
from tqdm import tqdm
import torch

if __package__ in (None, ""):  # run as a file: make the agents package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stable_baselines3.common.evaluation import evaluate_policy  # noqa: E402

from wham_gym import controller  # noqa: E402
from wham_gym.atomic import atomic_write  # noqa: E402
from wham_gym.action_sets import action_set_for  # noqa: E402
from wham_gym.engine import DreamEngine  # noqa: E402
from wham_gym.measure.metrics import ci95, rank_correlation  # noqa: E402,F401 (agents.compare and users use them here)
from wham_gym.prompts import fit_frames  # noqa: E402

from agents.runs import dream_settings  # noqa: E402
from agents.wrappers import (DEFAULT_MAX_STEPS, DEFAULT_SCENARIO, RAW, REINJECT_EVERY, RETRIEVAL_FRAMES,  # noqa: E402
                             Wrapping, make_dream_venv, make_real_venv, retrieval_reinjection, wrap)

WORLDS = ("real", "dream")
EVAL_SEED = 12345  # the same starts for every policy compared


class RandomAgent:
    """Uniform random controller vectors, or with ``action_set`` a uniformly random preset of that set each step."""

    wrapping = RAW

    def __init__(self, seed: int | None = None, action_set: str | None = None, action_repeat: int = 1):
        if action_set is None:
            self.space = controller.action_space(seed=seed)
        else:
            presets = action_set_for(action_set).presets
            self.space = gym.spaces.Discrete(len(presets), seed=seed)
            self.wrapping = Wrapping(obs_size=None, frame_stack=1, rescale=False, action_set=action_set)
        if action_repeat != 1:  # each random choice held for action_repeat steps (VecActionRepeat)
            self.wrapping = replace(self.wrapping, action_repeat=action_repeat)

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        return np.stack([self.space.sample() for _ in range(len(obs))]), None


class _BlindAgent:
    """A scripted policy over an action set's presets that reads no frame: its wrapping, and each env's count of
    steps into its episode (SB3's ``episode_start`` resets it)."""

    def __init__(self, action_set: str):
        self.wrapping = Wrapping(obs_size=None, frame_stack=1, rescale=False, action_set=action_set)
        self.steps: np.ndarray | None = None  # per env: steps into its episode

    def _advance(self, n: int, episode_start) -> np.ndarray:
        """Each env's steps into its episode at this step (0 where one starts); then counts the step."""
        if self.steps is None or len(self.steps) != n:
            self.steps = np.zeros(n, np.int64)
        if episode_start is not None:
            self.steps[np.asarray(episode_start, bool)] = 0
        now = self.steps.copy()
        self.steps += 1
        return now


class PaceAgent(_BlindAgent):
    """A scripted, blind pacer: the action set's "left" preset for ``hold`` steps, then "right" for ``hold``, and
    so on; each episode's first leg is half as long (it starts mid-room) and alternates in direction.

    It reads no frame. On take_cover the game-trained PPO with held actions learned this: it crosses the room wall
    to wall and turns at once (49 % of its steps within 50 units of a wall, where it almost never dies), and a
    pacer whose legs just span the room (``pace:26``) scores 1,032 tics, above that agent (agents/RESULTS.md).
    So it is a baseline for agents and a probe of the dream: a world model that rates it low does not know what
    a wall-to-wall crossing does to the fireballs' aim.
    """

    def __init__(self, hold: int, action_set: str | None):
        if hold < 1:
            raise ValueError(f"pace: expected a hold of at least 1 step (pace:H), got {hold}")
        if action_set is None:
            raise ValueError("pace: needs --action-set with 'left' and 'right' presets (e.g. take_cover)")
        presets = [p.name for p in action_set_for(action_set).presets]
        if not {"left", "right"} <= set(presets):
            raise ValueError(f"pace: action set {action_set!r} has presets {presets}; expected 'left' and 'right'")
        super().__init__(action_set)
        self.left, self.right = presets.index("left"), presets.index("right")
        self.hold = int(hold)
        self.episodes: np.ndarray | None = None  # per env: episodes begun, for the first leg's direction

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        n = len(obs)
        if self.episodes is None or len(self.episodes) != n:
            self.episodes = np.zeros(n, np.int64)
        if episode_start is not None:
            self.episodes += np.asarray(episode_start, bool)
        steps = self._advance(n, episode_start)
        # the leg index: 0 for the first half-leg, then one per ``hold`` steps; odd legs turn back
        leg = (steps + self.hold - self.hold // 2) // self.hold
        left = (leg % 2 == 0) == (self.episodes % 2 == 1)
        return np.where(left, self.left, self.right), None


class CycleAgent(_BlindAgent):
    """A scripted, blind rhythm over named presets: ``"fire*3,turn_right*2"`` fires three steps, turns right two,
    and again, from each episode's start. It reads no frame.

    On defend_the_center, PPO (in the game and in the default model's dream) learned such a rhythm: fire, fire,
    turn, turn; spinning on the spot while firing meets the monsters that close in from every side, and
    ``cycle:fire*3,turn_right*2`` outscores both agents (agents/RESULTS.md). A baseline as the pacer is on take_cover.
    """

    def __init__(self, pattern: str, action_set: str | None):
        if action_set is None:
            raise ValueError("cycle: needs --action-set, whose presets the pattern names (e.g. defend_the_center)")
        presets = [p.name for p in action_set_for(action_set).presets]
        steps: list[int] = []
        for part in pattern.split(","):
            name, _, times = part.strip().partition("*")
            if name not in presets or (times and not (times.isdigit() and int(times) >= 1)):
                raise ValueError(f"cycle: expected PRESET[*K],... with presets of {action_set!r} {presets} and K a "
                                 f"whole number >= 1, got {pattern!r}")
            steps += [presets.index(name)] * int(times or 1)
        super().__init__(action_set)
        self.pattern = np.array(steps, np.int64)

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        return self.pattern[self._advance(len(obs), episode_start) % len(self.pattern)], None


class BehaviourAgent:
    """WHAM's behaviour policy as an agent: the action the model predicts after the frames it was shown.

    Each of N slots keeps the last ``window`` frames it saw (tokenized once) and the actions
    it took between them. Every call re-prompts the engine with exactly that history
    (``reset(tokens=..., actions=...)``) and asks for the next action (``predict_actions``):
    one 16-token policy pass, no frame dreamt, so the model's context is what the agent saw
    (the real game's frames in the real game). The engine re-prefills the whole window each
    step anyway (``refresh_every=1``), so re-prompting costs nothing extra. The actions are
    sampled at the engine's temperature whatever ``deterministic`` says: the behaviour policy
    is a distribution over human play, and its argmax is not a policy anyone played.
    """

    wrapping = RAW

    def __init__(self, model, num_envs: int = 1, temperature: float = 0.9, seed: int = 0):
        self.engine = DreamEngine(model, num_envs, temperature=temperature, seed=seed)
        self.model = self.engine.model
        W = self.engine.window
        self.frames = [deque(maxlen=W) for _ in range(num_envs)]
        self.actions = [deque(maxlen=W - 1) for _ in range(num_envs)]
        self.last: np.ndarray | None = None

    @torch.no_grad()
    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        obs = np.asarray(obs)
        N = self.engine.num_envs
        if obs.shape[0] != N:
            raise ValueError(f"BehaviourAgent has {N} slots but got {obs.shape[0]} observations")
        size = (self.model.config.frame_height, self.model.config.frame_width)
        frames = torch.from_numpy(fit_frames(obs, size, True, "observation")).to(self.engine.device)
        tokens = self.model.encode_frames(frames)
        starts = np.ones(N, bool) if episode_start is None or self.last is None else np.asarray(episode_start, bool)
        for i in range(N):
            if starts[i]:
                self.frames[i].clear()
                self.actions[i].clear()
            else:
                self.actions[i].append(self.last[i])
            self.frames[i].append(tokens[i])
        lengths = np.array([len(f) for f in self.frames])
        for P in np.unique(lengths):  # one engine reset per history length
            ids = np.flatnonzero(lengths == P)
            frames = torch.stack([torch.stack(list(self.frames[i])) for i in ids])
            actions = np.stack([np.stack(self.actions[i]) for i in ids]) if P > 1 else None
            self.engine.reset(ids, tokens=frames, actions=actions)
        self.last = self.engine.predict_actions().cpu().numpy().astype(np.float32)
        return self.last.copy(), None


def summarize(returns, lengths, seconds: float) -> dict:
    returns, lengths = np.asarray(returns, float), np.asarray(lengths, int)
    return {"mean": float(returns.mean()), "std": float(returns.std()), "ci95": ci95(returns),
            "episodes": int(len(returns)),
            "returns": returns.tolist(), "lengths": lengths.tolist(), "mean_length": float(lengths.mean()),
            "steps": int(lengths.sum()), "seconds": round(seconds, 3)}


def run_episodes(policy, venv, episodes: int, *, seed: int | None = EVAL_SEED, deterministic: bool = True,
                 progress: str | None = None) -> dict:
    """Play ``episodes`` episodes (spread evenly over the envs, so short ones are not favoured); mean/std etc.

    ``progress``: a label, to show a progress bar of finished episodes (dream evaluations take minutes).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if seed is not None:
        venv.seed(seed)
    start = time.perf_counter()
    with tqdm(total=episodes, desc=progress, unit="episode", disable=progress is None, leave=False) as bar:
        def count(local_vars, _globals):  # SB3 calls this every step; episode_counts says how many ended
            bar.update(int(np.sum(local_vars["episode_counts"])) - bar.n)

        returns, lengths = evaluate_policy(policy, venv, n_eval_episodes=episodes, deterministic=deterministic,
                                           return_episode_rewards=True, warn=False, callback=count)
    return summarize(returns, lengths, time.perf_counter() - start)


class Evaluator:
    """Evaluation envs built once per (world, wrapping, size) and reused: Doom games and engines are slow to start.

    Args:
        model: the world model (loaded) for the dream; needed only for ``world="dream"``.
        scenario, max_steps: the real game's scenario and the episode cap in both worlds.
        num_envs: envs per evaluation (at most the episodes asked for).
        seed: the evaluation seed (see the module docstring).
        subprocess: real games in worker processes.
        ray: real games on Ray actors, one per game (extra ``[ray]``): True (this process's Ray, or a new
            local one), a cluster address, or a dict of :class:`~wham_gym.cluster.games.RayGamesVecEnv`
            options; the same episodes as in this process.
        game_kwargs: the real game's DoomEnv settings (e.g. ``{"render_hud": True}``), as the model saw it.
        dream_kwargs: the dream's engine settings (``temperature``, ``decoding``, ``refresh_every``, ...).
    """

    def __init__(self, model=None, scenario: str = DEFAULT_SCENARIO, max_steps: int = DEFAULT_MAX_STEPS,
                 num_envs: int = 10, seed: int = EVAL_SEED, subprocess: bool = False, ray=False,
                 game_kwargs: dict | None = None, dream_kwargs: dict | None = None):
        self.model, self.scenario, self.max_steps = model, scenario, max_steps
        self.dream_kwargs = dict(dream_kwargs or {})
        self.num_envs, self.seed, self.subprocess, self.ray = num_envs, seed, subprocess, ray
        self.game_kwargs = dict(game_kwargs or {})
        self._venvs: dict = {}

    def venv(self, world: str, wrapping: Wrapping, n: int):
        key = (world, wrapping, n)
        if key not in self._venvs:
            if world == "real" and self.ray:
                self._venvs[key] = ray_real_venv(self.scenario, n, wrapping, self.max_steps, self.ray,
                                                 self.game_kwargs, self.model)
            elif world == "real":
                self._venvs[key] = make_real_venv(self.scenario, n, wrapping, max_steps=self.max_steps,
                                                  subprocess=self.subprocess, game_kwargs=self.game_kwargs,
                                                  model=self.model)
            elif world == "dream":
                if self.model is None:
                    raise ValueError("evaluating in the dream needs a world model (Evaluator(model=...))")
                self._venvs[key] = make_dream_venv(self.model, n, wrapping, max_episode_steps=self.max_steps,
                                                   **self.dream_kwargs)
            else:
                raise ValueError(f"world: expected one of {WORLDS}, got {world!r}")
        return self._venvs[key]

    def run(self, policy, world: str, episodes: int, wrapping: Wrapping | None = None,
            deterministic: bool = True, progress: bool = False) -> dict:
        wrapping = wrapping or policy.wrapping
        n = min(self.num_envs, episodes)
        if isinstance(policy, BehaviourAgent) and policy.engine.num_envs != n:
            raise ValueError(f"BehaviourAgent needs one slot per eval env: {n} here, {policy.engine.num_envs} given")
        venv = self.venv(world, wrapping, n)
        return run_episodes(policy, venv, episodes, seed=self.seed, deterministic=deterministic,
                            progress=f"evaluating in the {world}" if progress else None)

    def close(self) -> None:
        for venv in self._venvs.values():
            venv.close()
        self._venvs.clear()


def ray_real_venv(scenario: str, num_envs: int, wrapping: Wrapping, max_steps: int, ray=True,
                  game_kwargs: dict | None = None, model=None):
    """``make_real_venv``'s games on Ray actors (one per game) behind the same wrappers: the same episodes.

    ``ray``: True, a cluster address, or a dict of RayGamesVecEnv options.
    """
    from wham_gym.cluster.games import RayGamesVecEnv

    options = dict(ray) if isinstance(ray, dict) else {"address": ray if isinstance(ray, str) else None}
    # gymnasium.make with a "module:id" is importable on any worker (agents/ need not be installed there).
    fns = [partial(gym.make, "wham_gym:wham_gym/Doom-v0", scenario=scenario, max_steps=max_steps,
                   **(game_kwargs or {})) for _ in range(num_envs)]
    return wrap(RayGamesVecEnv(fns, **options), wrapping, model)


def load_policy(path: str, device: str = "auto"):
    """An SB3 model from a run directory (final.zip, else its latest checkpoint) or a .zip beside a run's config.

    Returns (model, wrapping, config).
    """
    from stable_baselines3 import PPO, SAC

    from agents.runs import RunDir, wrapping_from_config

    p = Path(path)
    run = RunDir(p if p.is_dir() else (p.parent.parent if p.parent.name == "checkpoints" else p.parent))
    cfg = run.read_config()
    if cfg is None:
        raise ValueError(f"{path}: no config.json in {run.path}; give a run directory written by agents.train_sb3")
    if p.is_dir():
        latest = run.latest_checkpoint()
        zip_path = run.file("final.zip") if Path(run.file("final.zip")).exists() else latest and latest[1]
        if not zip_path:
            raise ValueError(f"{path}: the run has neither final.zip nor a checkpoint yet")
    else:
        zip_path = str(p)
    cls = {"ppo": PPO, "sac": SAC}[cfg["algo"]]
    return cls.load(zip_path, device=device), wrapping_from_config(cfg), cfg


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--policy", required=True,
                    help="random, behaviour, pace:H (left H steps, right H steps, ...; with --action-set), "
                    "cycle:PRESET*K,... (a blind rhythm of the action set's presets, e.g. cycle:fire*3,turn_right*2), "
                    "or a run directory / model .zip of agents.train_sb3")
    ap.add_argument("--worlds", default="real,dream", help="comma-separated: real, dream")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--model", default=None, help="world model for the dream and the behaviour policy (default: the "
                    "trained policy's, else the embedded default)")
    ap.add_argument("--action-set", default=None, help="random: a uniformly random preset of this action set "
                    "(e.g. take_cover) instead of a random controller vector")
    ap.add_argument("--action-repeat", type=int, default=1, metavar="K",
                    help="random: hold each random choice for K steps (a trained policy's run decides its own)")
    ap.add_argument("--scenario", default=DEFAULT_SCENARIO)
    ap.add_argument("--hud", action="store_true", help="the real game draws its status bar (as take_cover's model "
                    "was recorded; a trained policy's run settings decide by themselves)")
    ap.add_argument("--max-steps", type=int, default=DEFAULT_MAX_STEPS, help="episode cap in both worlds")
    ap.add_argument("--num-envs", type=int, default=10, help="envs per evaluation (dreams batch: more is faster)")
    ap.add_argument("--seed", type=int, default=EVAL_SEED)
    ap.add_argument("--stochastic", action="store_true", help="sample SB3 actions instead of the mean")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--retrieval-bank", nargs="+", default=None, metavar="REC",
                    help="the dream only: every --reinject-every steps swap its frame for the nearest real frame of "
                         "these recordings (as agents.train_sb3 --reinjection retrieval)")
    ap.add_argument("--retrieval-frames", type=int, default=RETRIEVAL_FRAMES, help="frames in the bank at most")
    ap.add_argument("--reinject-every", type=int, default=REINJECT_EVERY,
                    help="with --retrieval-bank: reinject every K steps")
    ap.add_argument("--ray", nargs="?", const=True, default=False, metavar="ADDRESS",
                    help="real games on Ray actors: this machine, or the cluster at ADDRESS (extra [ray])")
    ap.add_argument("--out", help="write the results as JSON here (else stdout)")
    return ap


def main(argv=None) -> dict:
    ap = build_parser()
    args = ap.parse_args(argv)
    worlds = [w for w in args.worlds.split(",") if w]
    if not worlds or set(worlds) - set(WORLDS):
        ap.error(f"--worlds: expected a comma-separated subset of {WORLDS}, got {args.worlds!r}")

    from wham_gym import load_model

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device.replace("auto", "cpu")
    game_kwargs = {"render_hud": True} if args.hud else {}
    policy_cfg = {}
    if args.retrieval_bank and "dream" not in worlds:
        ap.error(f"--retrieval-bank reinjects real frames into the dream; --worlds {args.worlds} has no dream")
    if args.action_repeat != 1 and args.policy != "random":
        ap.error(f"--action-repeat applies to --policy random (a trained run holds its actions as it was trained "
                 f"to); got --policy {args.policy}")
    if args.policy.startswith(("pace:", "cycle:")):  # scripted: checked before any model or game starts
        kind, _, spec = args.policy.partition(":")
        try:
            if kind == "pace" and not spec.isdigit():
                raise ValueError(f"--policy pace:H: expected a whole number of steps H, got {args.policy!r}")
            policy = PaceAgent(int(spec), args.action_set) if kind == "pace" else CycleAgent(spec, args.action_set)
        except ValueError as exc:
            ap.error(str(exc))
        wrapping = policy.wrapping
    elif args.policy not in ("random", "behaviour"):
        policy, wrapping, policy_cfg = load_policy(args.policy, device=args.device)
        game_kwargs = policy_cfg.get("game_kwargs") or game_kwargs  # the game the policy was trained and judged in
    needs_model = ("dream" in worlds or args.policy == "behaviour" or policy_cfg.get("tokenizer_view", False)
                   or policy_cfg.get("observe") == "latent")
    spec = args.model or policy_cfg.get("model") or "default"
    model = load_model(spec, device=device) if needs_model else None
    n = min(args.num_envs, args.episodes)
    if args.policy == "random":
        try:
            policy = RandomAgent(seed=args.seed, action_set=args.action_set, action_repeat=args.action_repeat)
        except ValueError as exc:
            ap.error(str(exc))
        wrapping = policy.wrapping
    elif args.policy == "behaviour":
        policy, wrapping = BehaviourAgent(model, n, seed=args.seed), RAW
    dream_kwargs = dream_settings(policy_cfg)
    if args.retrieval_bank:
        try:
            # the bank's frames drawn with a fixed seed: the same bank for every policy compared
            dream_kwargs["reinjection"] = retrieval_reinjection(model, args.retrieval_bank, args.retrieval_frames,
                                                                args.reinject_every, seed=0)
        except ValueError as exc:
            ap.error(str(exc))
    ev = Evaluator(model, args.scenario, args.max_steps, num_envs=n, seed=args.seed, ray=args.ray,
                   game_kwargs=game_kwargs, dream_kwargs=dream_kwargs)
    try:
        out = {w: ev.run(policy, w, args.episodes, wrapping, deterministic=not args.stochastic) for w in worlds}
    finally:
        ev.close()
    text = json.dumps(out, indent=2)
    if args.out:
        atomic_write(args.out, lambda f: f.write(text + "\n"), binary=False)
    else:
        print(text)
    return out


if __name__ == "__main__":
    main()
