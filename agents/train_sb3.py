"""Train PPO or SAC (CnnPolicy) in the dream or in the real game; evaluate in both as it learns.

The dream is ``wham_gym/WHAM-v0``'s vector env (N dreams, one batched engine) with the
model's learned reward and termination; the real game is ``wham_gym/Doom-v0`` on the same
scenario. Both sit behind the same wrappers (:mod:`agents.wrappers`), so a policy trained
in one runs unchanged in the other. Episodes are capped at ``--max-episode-steps`` in both.

    python -m agents.train_sb3 --algo ppo --world dream --steps 100000 --num-envs 8
    python -m agents.train_sb3 --algo ppo --world dream --reinjection retrieval --retrieval-bank data/dtc
    python -m agents.train_sb3 --algo ppo --world real --out runs/agents/ppo-real

Outputs (see :mod:`agents.runs`): SB3's CSV log (+ TensorBoard when installed), eval.jsonl,
checkpoints, final.zip and result.json in ``--out``. Run the same command again to resume
from the latest checkpoint (or to extend a finished run with a larger ``--steps``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file: make the agents package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stable_baselines3 import PPO, SAC  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402
from stable_baselines3.common.logger import configure  # noqa: E402

from agents.evaluate import EVAL_SEED, WORLDS, Evaluator  # noqa: E402
from wham_gym.action_sets import action_set_for  # noqa: E402
from wham_gym.prompts import PromptBank  # noqa: E402
from wham_gym.rewards import TokenRewardModel, parse_end_risk  # noqa: E402
from wham_gym.threads import parse_threads, set_threads  # noqa: E402
from agents.runs import RunDir, dream_settings, load_replay, wrapping_from_config  # noqa: E402
from agents.wrappers import (DEFAULT_MAX_STEPS, DEFAULT_SCENARIO, OBSERVATIONS, REINJECT_EVERY,  # noqa: E402
                             RETRIEVAL_FRAMES, check_game, make_dream_venv, make_real_venv, lockstep_reinjection,
                             parse_obs_size, retrieval_reinjection)

ALGOS = {"ppo": PPO, "sac": SAC}
# Per-algorithm defaults for a small CPU budget: PPO updates every n_steps x num_envs steps
# (1024 with 8 envs); SAC updates every vector step once learning_starts transitions are in.
DEFAULTS = {"ppo": dict(learning_rate=2.5e-4, batch_size=256), "sac": dict(learning_rate=3e-4, batch_size=64)}


def dream_ends(text: str) -> str:
    """--dream-ends: one of the built-in ways a dream ends, or card:NAME (an alternative the model's card offers)."""
    if text in ("sampled", "expected", "drawn", "risk") or (text.startswith("card:") and len(text) > 5):
        return text
    raise argparse.ArgumentTypeError(f"expected sampled, expected, drawn, risk or card:NAME (e.g. card:motion-only), "
                                     f"got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m agents.train_sb3", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--algo", choices=sorted(ALGOS), default="ppo")
    ap.add_argument("--world", choices=WORLDS, default="dream", help="where the agent trains")
    ap.add_argument("--model", default="default", help="world model: a preset, a model directory or a checkpoint")
    ap.add_argument("--ensemble", nargs="+", default=None, metavar="MODEL",
                    help="more world models (sharing --model's tokenizer) to train in: the --num-envs dreams are "
                         "split across --model and these, each with its own card's ends, so the policy cannot "
                         "exploit one model's errors (evaluation dreams stay --model's)")
    ap.add_argument("--scenario", default=DEFAULT_SCENARIO, help="Doom scenario of the real game (the model's)")
    ap.add_argument("--action-set", default=None,
                    help="act through a named action set (wham_gym.action_sets, e.g. take_cover: Discrete none/left/"
                         "right) instead of the 16-dim controller Box; with --algo sac (or --action-axes) a small "
                         "Box over the set's axes (take_cover: left stick x)")
    ap.add_argument("--action-axes", action="store_true",
                    help="with --action-set: a Box over the set's axes instead of Discrete presets (SAC: always)")
    ap.add_argument("--steps", type=int, default=100_000, help="total env steps (transitions) to train for")
    ap.add_argument("--num-envs", type=int, default=8, help="parallel envs (dreams share one batched engine)")
    ap.add_argument("--max-episode-steps", type=int, default=DEFAULT_MAX_STEPS, help="episode cap in both worlds")
    g = ap.add_argument_group("observations and actions")
    g.add_argument("--obs-size", default="72x120", help="HxW to downscale frames to, or 'full' (180x300)")
    g.add_argument("--frame-stack", type=int, default=4, help="frames stacked per observation (1: none)")
    g.add_argument("--grayscale", action="store_true", help="one gray channel per frame instead of RGB")
    g.add_argument("--action-repeat", type=int, default=1, metavar="K",
                   help="hold each decision for K steps of the world, rewards summed (--steps counts decisions)")
    g.add_argument("--action-history", type=int, default=0, metavar="K",
                   help="--observe latent: the agent's own last K decisions appended to its observation (memory of "
                        "which way it has been going; 0: none)")
    g.add_argument("--hud", action="store_true", help="the real game draws Doom's status bar (as the take_cover "
                   "model's data was recorded: a dream run checks the model's card agrees)")
    g.add_argument("--tokenizer-view", action="store_true",
                   help="the real game's frames pass through the world model's tokenizer (encode, decode), so both "
                        "worlds look alike to the agent")
    g.add_argument("--observe", choices=OBSERVATIONS, default="pixels",
                   help="pixels: frames (CnnPolicy); latent: each frame as the world model's quantised latent grid "
                        "(the tokenizer's codebook rows of its image tokens; MlpPolicy), in the dream without "
                        "decoding pixels and in the real game by encoding its frames")
    g.add_argument("--reward-scale", type=float, default=1.0,
                   help="multiply the reward the agent learns from (returns are reported unscaled); "
                        "take_cover pays ~3.5 tics per step, 0.1 keeps PPO's value loss small")
    g = ap.add_argument_group("the dream (its engine settings, also for dream evaluations)")
    g.add_argument("--temperature", type=float, default=0.9, help="sampling temperature of the dream")
    g.add_argument("--decoding", choices=("exact", "diagonal", "speculative"), default="exact",
                   help="exact: a frame's tokens one per pass (WHAM's); diagonal: one anti-diagonal per pass "
                        "(approximate); speculative: exact's tokens, drafts from the previous frame verified "
                        "several a pass")
    g.add_argument("--refresh-every", type=int, default=1,
                   help="re-prefill the context every K steps (1: exact; K > 1 keeps the KV cache between)")
    g.add_argument("--context-steps", type=int, default=None, help="frames of context (default: the model's)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the dream's prefill and decode passes: exact decoding's tokens, ~20 s of "
                        "compiling, then 1.2-1.3x the take_cover dream's speed on a 2-core CPU")
    g.add_argument("--dream-ends", type=dream_ends, default="sampled",
                   metavar="{sampled,expected,drawn,risk,card:NAME}",
                   help="how training dreams end: sampled (the model's termination: the ends its card recommends, "
                        "card['ends'], else its learned hazard, which ends a step with its probability, as deaths "
                        "come in the game), expected (dreams never end; each step's "
                        "reward r pays the expected cost of dying, r * (1 - hazard / (1 - gamma)); evaluations "
                        "sample), or drawn (a dream ends when the world model draws its end frame, the GPT's own "
                        "death given the context and the action; for models trained with end frames; "
                        "evaluation dreams end the same way), or risk (a dream ends with a sharpened form of the "
                        "world model's probability of drawing its end frame, --end-risk; the frames are drawn "
                        "given the episode goes on; evaluation dreams the same), or card:NAME (the alternative "
                        "ends the model's card offers by that name, card['ends_options'], e.g. the shipped "
                        "take_cover model's card:motion-only; evaluation dreams the same)")
    g.add_argument("--ends-in-expectation", action="store_true",
                   help="train on the risk or motion ends (the card's, risk or card:NAME) in expectation: training "
                        "dreams never end by them and each step's reward r becomes r * (1 - q * H), q the step's "
                        "end probability, H = action-repeat / (1 - gamma) the steps a death forfeits "
                        "(rewards.ExpectedEnds); evaluation dreams sample their ends")
    g.add_argument("--end-risk", default=None, metavar="SHARPNESS,CENTER",
                   help="--dream-ends risk: q = sigmoid(SHARPNESS * (logit p - logit CENTER)) for the GPT's end "
                        "probability p (1,0.5: q = p; fit them with benchmarks/end_risk.py); default 1,0.5; replaces "
                        "the card's ends, a motion term included (benchmarks/end_motion.py)")
    g.add_argument("--dream-horizon", type=int, default=None, metavar="H",
                   help="cut training dreams after H steps (a time limit: PPO bootstraps the rest from its value, "
                        "as IRIS, DIAMOND and Dreamer imagine 15-20 steps from real starts), so the agent learns "
                        "from the short runs a world model dreams well rather than long ones that drift; best with "
                        "--dream-starts (default: --max-episode-steps; evaluations always run whole episodes)")
    g.add_argument("--dream-starts", nargs="+", default=None, metavar="PATH",
                   help="recorded episodes (.npz files or folders) whose random windows start the training dreams, "
                        "as IRIS and DIAMOND start theirs from the data: the agent meets mid-episode states (a "
                        "fireball already in flight) that a dream from an episode's opening reaches rarely "
                        "(default: the model's prompts, episode openings; evaluation dreams always start there)")
    g = ap.add_argument_group("reinjection (dream training only)")
    g.add_argument("--reinjection", choices=("none", "retrieval", "lockstep"), default="none",
                   help="retrieval: swap the dream's frame for the nearest real frame of a bank; lockstep: a "
                        "real game per dream env, stepped with the same actions, whose frame is swapped in "
                        "and whose episode ends end the dream's")
    g.add_argument("--reinject-every", type=int, default=REINJECT_EVERY, help="reinject every K steps of an episode")
    g.add_argument("--reinject-nll", type=float, default=None, help="also reinject when the frame's NLL exceeds this")
    g.add_argument("--retrieval-bank", nargs="+", default=None,
                   help="recorded episodes (.npz files or folders) for the bank (default: the model's prompts)")
    g.add_argument("--retrieval-frames", type=int, default=RETRIEVAL_FRAMES, help="frames in the bank at most")
    g = ap.add_argument_group("evaluation")
    g.add_argument("--eval-every", type=int, default=10_000, help="evaluate every N env steps (0: only at the end)")
    g.add_argument("--eval-episodes", type=int, default=10, help="real-game episodes at each periodic evaluation")
    g.add_argument("--dream-eval-episodes", type=int, default=None,
                   help="dream episodes at each periodic evaluation (default: --eval-episodes); dreams are ~100x "
                        "slower than the game on CPU")
    g.add_argument("--final-episodes", type=int, default=20, help="real-game episodes in the final evaluation")
    g.add_argument("--final-dream-episodes", type=int, default=None,
                   help="dream episodes in the final evaluation (default: --final-episodes)")
    g.add_argument("--eval-worlds", default="real,dream", help="comma-separated worlds to evaluate in")
    g.add_argument("--eval-envs", type=int, default=10, help="envs per evaluation (dreams batch: more is faster)")
    g.add_argument("--eval-seed", type=int, default=EVAL_SEED, help="seed of the evaluation episodes")
    g.add_argument("--stochastic-eval", action="store_true", help="sample actions in evaluation (default: the mean)")
    g = ap.add_argument_group("algorithm")
    g.add_argument("--learning-rate", type=float, default=None, help="default: PPO 2.5e-4, SAC 3e-4")
    g.add_argument("--batch-size", type=int, default=None, help="default: PPO 256 (at most one rollout), SAC 64")
    g.add_argument("--gamma", type=float, default=0.99)
    g.add_argument("--features-dim", type=int, default=256, help="NatureCNN output features")
    g.add_argument("--pi-layers", type=int, default=2,
                   help="--observe latent: hidden layers of the policy's MLP (the value's keeps 2); 0 is a linear "
                        "policy, World Models' controller, too small to learn a dream's particular errors")
    g.add_argument("--n-steps", type=int, default=128, help="PPO: steps per env per rollout")
    g.add_argument("--n-epochs", type=int, default=4, help="PPO: epochs per rollout")
    g.add_argument("--ent-coef", type=float, default=0.01, help="PPO: entropy bonus")
    g.add_argument("--clip-range", type=float, default=0.1, help="PPO")
    g.add_argument("--buffer-size", type=int, default=None, help="SAC: transitions (default: what fits 2 GiB)")
    g.add_argument("--learning-starts", type=int, default=1000, help="SAC: transitions before updates start")
    g.add_argument("--gradient-steps", type=int, default=-1,
                   help="SAC: gradient steps per vector step (-1: one per transition, i.e. --num-envs)")
    g = ap.add_argument_group("run")
    g.add_argument("--out", default=None, help="run directory (default: runs/agents/<algo>-<world>[-retrieval])")
    g.add_argument("--checkpoint-every", type=int, default=None, help="env steps between checkpoints "
                   "(default: --eval-every, else 10000)")
    g.add_argument("--keep-checkpoints", type=int, default=3)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (policy and world model)")
    g.add_argument("--threads", type=parse_threads, default=None,
                   help="torch CPU threads: a positive int, or auto (default): the cores the load leaves free")
    g.add_argument("--subproc", action="store_true", help="real games in worker processes")
    g.add_argument("--dream-shards", type=int, default=1, metavar="K",
                   help="run the training dreams as K one-thread engines in worker processes (on 2 CPU cores K = 2 "
                        "steps ~1.25x faster than one two-thread engine; the card's ends only, no ensemble or "
                        "reinjection; other random draws than one engine's)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--log-stdout", action="store_true", help="also print SB3's log tables")
    return ap


def make_config(args: argparse.Namespace) -> dict:
    """Validated, JSON-able settings of the run (what config.json stores)."""
    def positive(name, value, zero_ok=False):
        if value is None or value < (0 if zero_ok else 1):
            raise ValueError(f"--{name.replace('_', '-')} must be {'>= 0' if zero_ok else '>= 1'}, got {value}")

    for name in ("steps", "num_envs", "max_episode_steps", "frame_stack", "eval_episodes", "final_episodes",
                 "eval_envs", "features_dim", "n_steps", "n_epochs", "keep_checkpoints", "action_repeat"):
        positive(name, getattr(args, name))
    positive("eval_every", args.eval_every, zero_ok=True)
    positive("pi_layers", args.pi_layers, zero_ok=True)
    positive("action_history", args.action_history, zero_ok=True)
    if args.action_history and args.observe != "latent":
        raise ValueError(f"--action-history appends to the flat latent an MLP reads; got --observe {args.observe} "
                         "(use --observe latent, or leave --action-history at 0)")
    if args.pi_layers != 2 and args.observe != "latent":
        raise ValueError(f"--pi-layers sets the MLP that reads --observe latent; got --observe {args.observe} "
                         "(pixels go through a CNN: leave --pi-layers at 2)")
    if args.dream_eval_episodes is None:
        args.dream_eval_episodes = args.eval_episodes
    if args.final_dream_episodes is None:
        args.final_dream_episodes = args.final_episodes
    positive("dream_eval_episodes", args.dream_eval_episodes)
    positive("final_dream_episodes", args.final_dream_episodes)
    obs_size = parse_obs_size(args.obs_size)
    if args.action_set is not None:
        action_set = action_set_for(args.action_set)  # an unknown name: the error lists the known sets
        # SAC needs a Box: it acts through the set's axes (what the set offers for continuous control)
        args.action_axes = args.action_axes or args.algo == "sac"
        if args.action_axes and not action_set.axes:
            raise ValueError(f"--action-set {args.action_set} has no axes for a Box (needed by --algo sac and "
                             "--action-axes); use --algo ppo with its Discrete presets, or a set with axes")
    elif args.action_axes:
        raise ValueError("--action-axes acts through an action set's axes: give --action-set too")
    if args.gradient_steps == 0 or args.gradient_steps < -1:
        raise ValueError(f"--gradient-steps must be >= 1, or -1 (one per transition), got {args.gradient_steps}")
    if args.dream_ends != "sampled" and args.world != "dream":
        raise ValueError(f"--dream-ends {args.dream_ends} applies to dream training; got --world {args.world}")
    if args.end_risk is not None and args.dream_ends != "risk":
        raise ValueError(f"--end-risk applies to --dream-ends risk; got --dream-ends {args.dream_ends}")
    args.end_risk = parse_end_risk(args.end_risk) if args.dream_ends == "risk" else None
    if args.ends_in_expectation and (args.world != "dream" or args.dream_ends in ("expected", "drawn")):
        raise ValueError("--ends-in-expectation takes a dream's risk or motion ends (its card's, --dream-ends risk "
                         f"or card:NAME) in expectation; got --world {args.world} --dream-ends {args.dream_ends} "
                         "(--dream-ends expected does this for a learned hazard)")
    if args.dream_horizon is not None:
        if args.world != "dream":
            raise ValueError(f"--dream-horizon applies to dream training; got --world {args.world}")
        if not 1 <= args.dream_horizon <= args.max_episode_steps:
            raise ValueError(f"--dream-horizon must lie in [1, --max-episode-steps = {args.max_episode_steps}], "
                             f"got {args.dream_horizon}")
    if args.dream_starts is not None and args.world != "dream":
        raise ValueError(f"--dream-starts applies to dream training; got --world {args.world}")
    for path in args.dream_starts or ():
        if not os.path.exists(path):
            raise ValueError(f"--dream-starts: {path} does not exist; expected recorded episodes (.npz files or "
                             "folders of them, as `wham-gym record` writes)")
    if args.ensemble is not None:
        if args.world != "dream":
            raise ValueError(f"--ensemble applies to dream training; got --world {args.world}")
        if args.num_envs < 1 + len(args.ensemble):
            raise ValueError(f"--ensemble: {1 + len(args.ensemble)} world models need --num-envs >= "
                             f"{1 + len(args.ensemble)} (one env each at least), got {args.num_envs}")
        args.ensemble = [str(m) for m in args.ensemble]
    if args.reinjection != "none" and args.world != "dream":
        raise ValueError(f"--reinjection {args.reinjection} applies to dream training; got --world {args.world}")
    if args.dream_shards != 1:
        if args.world != "dream" or not 1 <= args.dream_shards <= args.num_envs:
            raise ValueError(f"--dream-shards applies to dream training, from 1 to --num-envs ({args.num_envs}); "
                             f"got {args.dream_shards} with --world {args.world}")
        card_ends = args.dream_ends == "sampled" or args.dream_ends.startswith("card:")
        if args.ensemble or args.reinjection != "none" or not card_ends:
            raise ValueError("--dream-shards runs the card's ends (default or card:NAME) without --ensemble or "
                             "--reinjection; drop those or --dream-shards")
    worlds = [w for w in args.eval_worlds.split(",") if w]
    if set(worlds) - set(WORLDS):
        raise ValueError(f"--eval-worlds: expected a comma-separated subset of {WORLDS}, got {args.eval_worlds!r}")
    cfg = {k: v for k, v in vars(args).items()}
    cfg.update(obs_size="full" if obs_size is None else f"{obs_size[0]}x{obs_size[1]}", eval_worlds=worlds,
               model=str(args.model))
    for k, v in DEFAULTS[args.algo].items():
        if cfg[k] is None:
            cfg[k] = v
    if args.algo == "ppo":
        cfg["batch_size"] = min(cfg["batch_size"], args.n_steps * args.num_envs)
    cfg["checkpoint_every"] = args.checkpoint_every or args.eval_every or 10_000
    suffix = "-" + args.reinjection if args.reinjection != "none" else ""
    cfg["out"] = args.out or os.path.join("runs", "agents", f"{args.algo}-{args.world}{suffix}")
    cfg["game_kwargs"] = {"render_hud": True} if cfg.pop("hud") else {}
    for k in ("no_progress", "log_stdout", "threads", "subproc"):  # how to run, not what
        cfg.pop(k)
    return cfg


def resolve_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def device_name(device: str) -> str:
    """The accelerator in words (for result files)."""
    d = torch.device(device)
    if d.type == "cuda":
        return torch.cuda.get_device_name(d)
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def make_algo(cfg: dict, venv, device: str):
    """A fresh PPO / SAC with the run's hyper-parameters."""
    if cfg.get("observe", "pixels") == "latent":  # a small grid of code vectors: an MLP reads it whole
        width = cfg["features_dim"]
        critic = "qf" if cfg["algo"] == "sac" else "vf"
        policy, policy_kwargs = "MlpPolicy", dict(net_arch={"pi": [width] * cfg.get("pi_layers", 2),
                                                            critic: [width, width]})
    else:
        policy, policy_kwargs = "CnnPolicy", dict(features_extractor_kwargs=dict(features_dim=cfg["features_dim"]))
    common = dict(learning_rate=cfg["learning_rate"], batch_size=cfg["batch_size"], gamma=cfg["gamma"],
                  seed=cfg["seed"], device=device, verbose=0, policy_kwargs=policy_kwargs)
    if cfg["algo"] == "ppo":
        return PPO(policy, venv, n_steps=cfg["n_steps"], n_epochs=cfg["n_epochs"], ent_coef=cfg["ent_coef"],
                   clip_range=cfg["clip_range"], gae_lambda=0.95, **common)
    from wham_gym.sb3 import make_sac

    return make_sac(venv, policy, buffer_size=cfg["buffer_size"], learning_starts=cfg["learning_starts"],
                    gradient_steps=cfg.get("gradient_steps", 1), **common)


def make_train_venv(cfg: dict, world_model, subprocess: bool = False, ensemble=()):
    """The envs the agent trains in: N games, or N dreams of ``world_model`` (split across it and the loaded
    ``ensemble`` models when given)."""
    wrapping = wrapping_from_config(cfg)
    if cfg["world"] == "real":
        return make_real_venv(cfg["scenario"], cfg["num_envs"], wrapping, max_steps=cfg["max_episode_steps"],
                              seed=cfg["seed"], subprocess=subprocess, game_kwargs=cfg["game_kwargs"],
                              model=world_model)
    reinjection = None
    if cfg["reinjection"] == "retrieval":
        reinjection = retrieval_reinjection(world_model, cfg["retrieval_bank"], cfg["retrieval_frames"],
                                            cfg["reinject_every"], cfg["reinject_nll"], seed=cfg["seed"])
    elif cfg["reinjection"] == "lockstep":
        reinjection = lockstep_reinjection(cfg["scenario"], cfg["num_envs"], cfg["max_episode_steps"],
                                           cfg["reinject_every"], cfg["reinject_nll"], game_kwargs=cfg["game_kwargs"])
    extra = {}
    if cfg["dream_ends"] == "expected":  # make_config always sets it
        if world_model.reward_model is None:
            raise ValueError("--dream-ends expected needs a world model with a learned termination hazard; "
                             f"{cfg['model']} has no reward model")
        reward_fn, termination_fn = TokenRewardModel(world_model.reward_model).expected_ends(1 / (1 - cfg["gamma"]))
        extra = dict(reward_fn=reward_fn, termination_fn=termination_fn)
    if cfg.get("ends_in_expectation"):
        extra["expected_ends"] = cfg["action_repeat"] / (1 - cfg["gamma"])  # world steps of reward a death costs
    if cfg.get("dream_starts"):
        extra["prompts"] = PromptBank.from_paths(cfg["dream_starts"])  # make_config checked that they exist
    horizon = cfg.get("dream_horizon") or cfg["max_episode_steps"]
    return make_dream_venv(world_model, cfg["num_envs"], wrapping, max_episode_steps=horizon,
                           reinjection=reinjection, seed=cfg["seed"], ensemble=ensemble, **dream_settings(cfg),
                           shards=cfg.get("dream_shards", 1), **extra)


class Periodic(BaseCallback):
    """Evaluates, checkpoints and draws the progress bar as env steps pass; keeps the run's wall-clock."""

    def __init__(self, run: RunDir, cfg: dict, evaluator: Evaluator, state: dict, progress: bool):
        super().__init__()
        self.run, self.cfg, self.evaluator, self.state = run, cfg, evaluator, state
        self.wrapping = wrapping_from_config(cfg)
        self.clock = time.perf_counter()
        self.bar = None
        self.progress = progress
        self.saved_at = state["timesteps"]

    @staticmethod
    def _next(n: int, every: int) -> int:
        return (n // every + 1) * every if every else float("inf")

    def tick(self) -> None:
        now = time.perf_counter()
        self.state["wall_s"] += now - self.clock
        self.clock = now
        self.state["timesteps"] = int(self.model.num_timesteps)

    def _on_training_start(self) -> None:
        from tqdm import tqdm

        n = int(self.model.num_timesteps)
        self.bar = tqdm(total=self.cfg["steps"], initial=n, unit="step", disable=not self.progress,
                        desc=f"{self.cfg['algo']} in {self.cfg['world']}", dynamic_ncols=True)
        self.next_eval = self._next(n, self.cfg["eval_every"])
        self.next_ckpt = self._next(n, self.cfg["checkpoint_every"])
        if self.cfg["eval_every"] and n == 0 and not self.run.eval_entries():
            if self.progress:
                worlds = " and ".join(self.cfg["eval_worlds"])
                tqdm.write(f"evaluating the untrained policy in the {worlds} first (where the learning curves "
                           "start; --eval-every 0 skips periodic evaluations)")
            self.evaluate()  # the untrained policy: where the learning curves start

    def _on_step(self) -> bool:
        n = int(self.model.num_timesteps)
        self.bar.update(n - self.bar.n)
        if n >= self.next_eval:
            self.evaluate()
            self.next_eval = self._next(n, self.cfg["eval_every"])
        if n >= self.next_ckpt:
            self.checkpoint()
            self.next_ckpt = self._next(n, self.cfg["checkpoint_every"])
        return True

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def evaluate(self, final: bool = False) -> dict:
        """A periodic evaluation (a point of the learning curves), or the final one."""
        self.tick()
        cfg, start = self.cfg, time.perf_counter()
        episodes = ({"real": cfg["final_episodes"], "dream": cfg["final_dream_episodes"]} if final
                    else {"real": cfg["eval_episodes"], "dream": cfg["dream_eval_episodes"]})
        out = {w: self.evaluator.run(self.model, w, episodes[w], self.wrapping,
                                     deterministic=not cfg["stochastic_eval"], progress=self.progress)
               for w in cfg["eval_worlds"]}
        for w, r in out.items():
            self.logger.record(f"eval/{w}_return", r["mean"])
            self.logger.record(f"eval/{w}_return_std", r["std"])
        self.tick()
        self.state["eval_s"] += time.perf_counter() - start
        if not final:
            self.run.append_eval({"timesteps": self.state["timesteps"], "wall_s": round(self.state["wall_s"], 3),
                                  **out})
        return out

    def checkpoint(self, force: bool = False) -> None:
        self.tick()
        if not force and self.saved_at == self.state["timesteps"] and self.run.latest_checkpoint():
            return
        state = {k: round(v, 3) if isinstance(v, float) else v for k, v in self.state.items()}
        self.run.save_checkpoint(self.model, state, keep=self.cfg["keep_checkpoints"], replay=self.cfg["algo"] == "sac")
        self.saved_at = self.state["timesteps"]


def train(argv=None) -> dict:
    """Run (or resume, or extend) one training run; returns its result (also in ``<out>/result.json``)."""
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        cfg = make_config(args)
        run = RunDir(cfg["out"])
        run.check_config(cfg)
    except ValueError as exc:
        ap.error(str(exc))
    done = run.read_result()
    if done and done["timesteps"] >= cfg["steps"] and os.path.exists(run.file("final.zip")):
        print(f"{run.path}: already trained for {done['timesteps']} steps (result.json); nothing to do")
        return done
    set_threads(args.threads)
    device = resolve_device(args.device)

    from wham_gym import load_model

    needs_model = (cfg["world"] == "dream" or "dream" in cfg["eval_worlds"] or cfg["tokenizer_view"]
                   or cfg["observe"] == "latent")
    world_model = load_model(cfg["model"], device=device) if needs_model else None
    ensemble = [load_model(m, device=device) for m in cfg.get("ensemble") or ()]
    if cfg["world"] == "dream" or cfg["tokenizer_view"] or cfg["observe"] == "latent":
        try:
            for m in [world_model, *ensemble]:
                check_game(m, cfg["game_kwargs"])  # both worlds must look alike
        except ValueError as exc:
            ap.error(str(exc))
    try:
        venv = make_train_venv(cfg, world_model, args.subproc, ensemble)
    except ValueError as exc:  # settings the model cannot serve (e.g. --dream-ends expected without a hazard)
        ap.error(str(exc))
    cls = ALGOS[cfg["algo"]]
    latest = run.latest_checkpoint()
    if latest:
        steps, zip_path, state = latest
        algo = cls.load(zip_path, env=venv, device=device)
        replay = zip_path[:-4] + ".replay.npz"
        if cfg["algo"] == "sac" and os.path.exists(replay):
            load_replay(algo.replay_buffer, replay)
        algo.set_random_seed(cfg["seed"] + steps)  # fresh env starts, not a replay of the first segment's
        print(f"{run.path}: resuming from {zip_path} ({steps} steps)")
    else:
        algo, state = make_algo(cfg, venv, device), {"timesteps": 0, "wall_s": 0.0, "eval_s": 0.0}
    state = {"timesteps": int(state["timesteps"]), "wall_s": float(state["wall_s"]), "eval_s": float(state["eval_s"])}
    run.start_segment(state["timesteps"])
    run.write_config(cfg)
    formats = ["csv"] + (["stdout"] if args.log_stdout else [])
    if importlib.util.find_spec("tensorboard") is not None:
        formats.append("tensorboard")
    algo.set_logger(configure(run.path, formats))

    evaluator = Evaluator(world_model, cfg["scenario"], cfg["max_episode_steps"], num_envs=cfg["eval_envs"],
                          seed=cfg["eval_seed"], subprocess=args.subproc, game_kwargs=cfg["game_kwargs"],
                          dream_kwargs=dream_settings(cfg))
    cb = Periodic(run, cfg, evaluator, state, progress=not args.no_progress)
    try:
        remaining = cfg["steps"] - state["timesteps"]
        if remaining > 0:
            try:
                algo.learn(remaining, callback=cb, reset_num_timesteps=False)
            except KeyboardInterrupt:
                cb.checkpoint()  # long jobs resume from here
                raise
        else:
            cb.init_callback(algo)
        # Forced: a step's callback runs before SAC stores that step's transitions; now the buffer is complete.
        cb.checkpoint(force=True)
        run.save_final(algo)
        final = cb.evaluate(final=True)
        algo.logger.record("time/total_timesteps", cb.state["timesteps"])
        algo.logger.dump(cb.state["timesteps"])  # the final evaluation's row in the CSV log
    finally:
        evaluator.close()
        venv.close()
    s = cb.state
    result = {"algo": cfg["algo"], "world": cfg["world"], "reinjection": cfg["reinjection"],
              "timesteps": s["timesteps"], "wall_s": round(s["wall_s"], 3), "eval_wall_s": round(s["eval_s"], 3),
              "train_wall_s": round(s["wall_s"] - s["eval_s"], 3),
              "train_steps_per_s": round(s["timesteps"] / max(s["wall_s"] - s["eval_s"], 1e-9), 2),
              "device": device_name(device), **{w: final[w] for w in cfg["eval_worlds"]}, "config": cfg}
    run.write_result(result)
    summary = ", ".join(f"{w} {final[w]['mean']:.2f} ± {final[w]['std']:.2f}" for w in cfg["eval_worlds"])
    print(f"{run.path}: {s['timesteps']} steps in {s['wall_s']:.0f} s; final return {summary}")
    return result


def main(argv=None) -> None:
    train(argv)


if __name__ == "__main__":
    main()
