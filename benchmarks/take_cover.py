"""A take_cover world model against issue 21's targets, in one run.

- termination: precision/recall of the model's learned termination on held-out real episodes'
  transitions (with the recipe's end frames), and its reward error;
- episode ends in the dream: N dreams driven by a recording policy (``--policies``: strafe, the data
  policy, and jitter / sweep, the same presets held 1 / 12 steps, or still), episodes ended by the learned
  termination only, against the same policy's episodes in the game (mean length in steps); with more
  than two policies, the Spearman correlation of the dream's and the game's lengths across them (does the
  dream rank blind policies as the game does: the least an agent trained in it needs); for a hazard, also
  the length it expects on the game's own frames, which separates the termination's error from the world
  model's;
- action following: strafe left / right / still from the same real start in game and dream
  (horizontal shift per step, and which game continuation each dream is closest to);
- speed: env-steps/s of the batched engine at each N, frames decoded, exact and diagonal decoding
  (from random-token prompts, where speculative decoding's drafts rarely hold: benchmarks/speculative.py
  measures that one from the card's real prompts).

    python benchmarks/take_cover.py --model runs/take_cover/model --data data/take_cover \\
        --out benchmarks/results/take_cover.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import date

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

import wham_gym  # noqa: F401  (registers the envs)
from wham_gym.atomic import atomic_write
from wham_gym.controller import to_wham
from wham_gym.env import WHAMVectorEnv
from wham_gym.games.explore import make_policy
from wham_gym.measure.benchmark import run_engine
from wham_gym.measure.fidelity import STRAFE_PROBES, action_following
from wham_gym.measure.metrics import rank_correlation
from wham_gym.model import load_model
from wham_gym.rewards import EndFrameTermination
from wham_gym.model.vocab import action_tokens
from wham_gym.train.data import split_sources, tokenize_episodes
from wham_gym.train.reward import evaluate_reward_model, transitions


def termination(model, data, cache) -> dict:
    """The learned reward/termination on every held-out transition (end frames as the recipe trained)."""
    end_frame = (model.card.get("recipe") or {}).get("end_frame")
    _, val = split_sources(data)
    tr = transitions(tokenize_episodes(model, val, cache, progress=False, end_frame=end_frame))
    out = evaluate_reward_model(model.reward_model, tr, "cpu")
    out.update(episodes=len(val), transitions=len(tr["reward"]), terminations=int(tr["term"].sum()),
               mean_reward=float(tr["reward"].mean()), end_frame=end_frame)
    return out


def game_lengths(scenario: str, game_kwargs: dict, episodes: int, max_steps: int, seed: int,
                 policy: str = "strafe", model=None) -> tuple[np.ndarray, float | None]:
    """Episode lengths (steps) of a recording policy in the game and, with a ``model`` whose termination is a
    hazard, the episode length that hazard expects on the game's own frames (1 / its mean probability over every
    step played; its dream offset not applied): the termination alone, apart from the frames the world model
    draws. Near the game's length for every policy, the hazard ranks them right; a dream that does not is the
    world model's doing."""
    env = gym.make("wham_gym/Doom-v0", scenario=scenario, max_steps=max_steps, **game_kwargs)
    rm = getattr(model, "reward_model", None)
    hazard = rm is not None and rm.config.termination == "hazard"
    lengths, probs = [], []
    try:
        for i in tqdm(range(episodes), desc="game episodes", leave=False):
            actor = make_policy(policy, seed=seed + i)
            obs, info = env.reset(seed=seed + i)
            frames, actions = [], []
            for t in range(1, max_steps + 1):
                action = actor.act(obs)
                frames.append(obs), actions.append(action)
                obs, _, term, trunc, info = env.step(action)
                if term or trunc:
                    break
            lengths.append(t)
            if hazard:
                with torch.no_grad():
                    tokens = model.encode_frames(np.stack(frames)).long()
                act = action_tokens(to_wham(torch.from_numpy(np.stack(actions)))) if rm.config.reads_action else None
                probs.append(rm.hazard(tokens, act).numpy())
    finally:
        env.close()
    return np.array(lengths), (1 / float(np.concatenate(probs).mean()) if hazard else None)


def dream_lengths(model, num_envs: int, episodes: int, max_steps: int, seed: int, policy: str = "strafe",
                  **engine) -> dict:
    """Episode lengths (steps) and per-step rewards of a recording policy in N dreams, ended by the learned
    termination (or the cap). ``engine``: decoding, refresh_every, context_steps of the dream.

    Each dream contributes its first ``ceil(episodes / N)`` episodes, and the run waits for the last of them:
    taking the first ``episodes`` episodes to end, whichever dream they come from, would favour short ones
    (long episodes are still running when the count is reached; with 2 episodes per dream that halved the mean).
    """
    env = WHAMVectorEnv(num_envs, model, max_episode_steps=max_steps, obs_mode="tokens", **engine)
    policies = [make_policy(policy, seed=seed + i) for i in range(num_envs)]
    quota = -(-episodes // num_envs)
    ended = [[] for _ in range(num_envs)]  # (length, capped) of each dream's episodes, in order
    rewards = []
    obs, info = env.reset(seed=seed)
    start = time.perf_counter()
    steps = 0
    with tqdm(total=quota * num_envs, desc="dream episodes", leave=False) as bar:
        while min(map(len, ended)) < quota:
            actions = np.stack([p.act(None) for p in policies])
            obs, rew, term, trunc, info = env.step(actions)
            steps += num_envs
            counting = np.array([len(e) < quota for e in ended])
            rewards.append(rew[counting])
            for i in np.flatnonzero((term | trunc) & counting):
                ended[i].append((int(info["step"][i]), bool(trunc[i])))
                bar.update(1)
    seconds = time.perf_counter() - start
    env.close()
    kept = [e for per_dream in ended for e in per_dream][:episodes]  # dream-major: the choice ignores lengths
    return {"lengths": [n for n, _ in kept], "capped": sum(c for _, c in kept),
            "mean_reward": float(np.concatenate(rewards).mean()), "env_steps_per_s": steps / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="the model's recording (held-out episodes by its split)")
    ap.add_argument("--episodes", type=int, default=64, help="episodes in game and dream")
    ap.add_argument("--max-steps", type=int, default=600)
    ap.add_argument("--num-envs", default="16,32", help="N for the speed table")
    ap.add_argument("--speed-steps", type=int, default=8)
    ap.add_argument("--dream-envs", type=int, default=16)
    ap.add_argument("--decoding", choices=("exact", "diagonal", "speculative"), default="exact",
                    help="decoding of the dream-episode run and the probes (speculative: exact's tokens, fewer passes)")
    ap.add_argument("--refresh-every", type=int, default=1, help="the dream's KV refresh period (1: exact)")
    ap.add_argument("--context-steps", type=int, default=None, help="the dream's context (default: the model's)")
    ap.add_argument("--policies", default="strafe", help="comma-separated recording policies for the episode "
                    "ends: strafe (the data policy), jitter, sweep, still")
    ap.add_argument("--probe-seeds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: termination, ends, dream (the "
                    "ends' dreams: game and hazard only), probes, speed")
    ap.add_argument("--ends", choices=("model", "drawn"), default="model",
                    help="how dreams end: the model's termination (its hazard or end-frame classifier), or drawn: "
                         "when the world model draws its end frame (rewards.EndFrameTermination)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    engine = dict(decoding=args.decoding, refresh_every=args.refresh_every, context_steps=args.context_steps)
    model = load_model(args.model, device="cpu")
    card = model.card or {}
    scenario, game_kwargs = card.get("scenario") or "take_cover", card.get("game_kwargs") or {}
    report = {"model": args.model, "date": date.today().isoformat(), "torch": torch.__version__,
              "device": f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
              "dream": engine, "ends": args.ends, "tokens_per_image": model.config.tokens_per_image,
              "parameters": model.num_parameters()}
    if "termination" not in skip:
        with tempfile.TemporaryDirectory() as cache:
            report["termination"] = termination(model, args.data, cache)
        print("termination", json.dumps(report["termination"]), flush=True)
    if "ends" not in skip:
        report["episode_ends"] = {}
        for policy in args.policies.split(","):
            game, hazard_length = game_lengths(scenario, game_kwargs, args.episodes, args.max_steps,
                                               args.seed + 10_000, policy, model)
            report["episode_ends"][policy] = {
                "game": {"mean": float(game.mean()), "std": float(game.std()), "episodes": len(game)},
                "hazard_on_game_frames": hazard_length}
            if "dream" not in skip:
                ends = {"termination_fn": EndFrameTermination(model)} if args.ends == "drawn" else {}
                dream = dream_lengths(model, args.dream_envs, args.episodes, args.max_steps, args.seed, policy,
                                      **engine, **ends)
                report["episode_ends"][policy].update(
                    dream={"mean": float(np.mean(dream["lengths"])), "std": float(np.std(dream["lengths"])),
                           "episodes": len(dream["lengths"]), "capped": dream["capped"],
                           "mean_reward_per_step": dream["mean_reward"],
                           "env_steps_per_s": dream["env_steps_per_s"]},
                    ratio=float(np.mean(dream["lengths"]) / game.mean()))
            print("episode ends", policy, json.dumps(report["episode_ends"][policy]), flush=True)
        ends = report["episode_ends"]
        if len(ends) > 2 and "dream" not in skip:  # does the dream rank the policies as the game does (two: +-1)
            report["episode_ends_rank_correlation"] = rank_correlation([e["dream"]["mean"] for e in ends.values()],
                                                                       [e["game"]["mean"] for e in ends.values()])
            print("rank correlation of dream and game lengths", report["episode_ends_rank_correlation"], flush=True)
        if len(ends) > 2 and all(e["hazard_on_game_frames"] for e in ends.values()):  # the termination alone
            report["hazard_rank_correlation"] = rank_correlation([e["hazard_on_game_frames"] for e in ends.values()],
                                                                 [e["game"]["mean"] for e in ends.values()])
            print("rank correlation of the hazard's lengths on game frames and the game's",
                  report["hazard_rank_correlation"], flush=True)
    if "probes" not in skip:
        probes = action_following(model, scenario, steps=10, seeds=tuple(range(args.probe_seeds)),
                                  probes=STRAFE_PROBES, env_kwargs=game_kwargs,
                                  decoding=args.decoding,
                                  engine_kwargs=dict(refresh_every=args.refresh_every,
                                                     context_steps=args.context_steps))
        report["action_following"] = probes
        print("probes", json.dumps(probes["per_step"]), "discrimination", probes["discrimination"], flush=True)
    if "speed" not in skip:
        speed = {}
        for n in [int(v) for v in args.num_envs.split(",")]:
            for decoding in ("exact", "diagonal"):
                sec = run_engine(model, n, args.speed_steps, warmup=1, decode=True, decoding=decoding)
                speed[f"{decoding} N={n}"] = n * len(sec) / float(np.sum(sec))
                print(f"speed {decoding} N={n}: {speed[f'{decoding} N={n}']:.1f} env-steps/s", flush=True)
        report["speed"] = speed
    atomic_write(args.out, lambda f: json.dump(report, f, indent=2), binary=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
