"""A hazard step by step: dreams under a policy (never ended) against the game's episodes under it.

N dreams from the model's prompts and the game's episodes (fresh starts, fixed seeds) play the same blind
policy; at each step k the model's hazard (its raw probability, the dream offset not applied) is read on the
dreamt frames and on the game's frames of the episodes still alive. Where the two curves part shows what the
world model leaves out: danger that builds up in the game and not in the dream, or the reverse.

With ``--prefix K`` the dreams start where the game's episodes are after K steps (the game's last frames and
actions as the prompt) and replay the game's own actions from there, so dream and game see the same state and the
same controls: whether fireballs already in flight reach a player in the dream tells a world model that cannot
carry danger from one that only does not start it. Both worlds also report the share of image tokens that change
from one step to the next: a dream that copies its last frame too often (or redraws too much) shows there.

    python benchmarks/hazard_in_time.py --model runs/tc-v10/model --policy still \\
        --out benchmarks/results/hazard_in_time_still.json
    python benchmarks/hazard_in_time.py --model runs/tc-v10/model --policy still --prefix 15 --steps 30 \\
        --out benchmarks/results/hazard_in_time_still_prefix15.json
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import date

import gymnasium as gym
import numpy as np
import torch

import wham_gym  # noqa: F401  (registers the envs)
from wham_gym.atomic import atomic_write
from wham_gym.env import WHAMVectorEnv
from wham_gym.games.explore import make_policy
from wham_gym.model import load_model
from wham_gym.model.reward_model import frame_hazard
from wham_gym.rewards import NeverTerminate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a model whose reward model is a frame-only hazard")
    ap.add_argument("--policy", default="still", help="a recording policy: still, jitter, strafe, sweep")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--num-envs", type=int, default=32, help="dreams, and game episodes")
    ap.add_argument("--prefix", type=int, default=0,
                    help="start the dreams from the game's episodes at this step, replaying the game's actions")
    ap.add_argument("--temperature", type=float, default=0.9, help="the dream's sampling temperature")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    net = frame_hazard(model)

    n, K, K0 = args.num_envs, args.steps, args.prefix
    card = model.card or {}
    g = gym.make("wham_gym/Doom-v0", scenario=card.get("scenario") or "take_cover", max_steps=K0 + K + 1,
                 **(card.get("game_kwargs") or {}))
    episodes = []  # (frames, actions) of each game episode, K0 + K steps at most
    try:
        for i in range(n):
            actor = make_policy(args.policy, seed=10_000 + i)
            o, _ = g.reset(seed=10_000 + i)
            frames, actions = [], []
            for _ in range(K0 + K):
                frames.append(o)
                actions.append(actor.act(o))
                o, _, term, trunc, _ = g.step(actions[-1])
                if term or trunc:
                    break
            episodes.append((np.stack(frames), np.stack(actions)))
    finally:
        g.close()
    game = [[] for _ in range(K)]
    game_change = [[] for _ in range(K)]  # the share of image tokens that differ from the last step's
    for frames, _ in episodes:
        if len(frames) <= K0:
            continue
        with torch.no_grad():
            tokens = model.encode_frames(frames[K0:]).long()
            p = net.hazard(tokens).numpy()
        tokens = tokens.reshape(len(tokens), -1).numpy()
        for k, v in enumerate(p):
            game[k].append(float(v))
            if k:
                game_change[k].append(float((tokens[k] != tokens[k - 1]).mean()))

    if K0:  # the dreams take over the game's episodes alive at step K0 and replay their actions
        alive = [e for e in episodes if len(e[0]) > K0]
        if not alive:
            raise SystemExit(f"no game episode lived {K0} steps; use a smaller --prefix")
        n_dream = len(alive)
    else:
        n_dream = n
        policies = [make_policy(args.policy, seed=i) for i in range(n)]
    env = WHAMVectorEnv(n_dream, model, obs_mode="tokens", termination_fn=NeverTerminate(), max_episode_steps=K + 1,
                        temperature=args.temperature)
    prompt = None
    if K0:
        first = max(0, K0 - env.prompt_frames + 1)  # the prompt: the game's last frames up to step K0
        prompt = (np.stack([f[first:K0 + 1] for f, _ in alive]), np.stack([a[first:K0] for _, a in alive]))
        plans = [a[K0:] for _, a in alive]
    obs, _ = env.reset(seed=0, options={"prompt": prompt} if prompt is not None else None)
    dream, dream_tokens = [], []
    for k in range(K):
        dream_tokens.append(torch.as_tensor(obs).long().reshape(n_dream, -1))
        dream.append(net.hazard(dream_tokens[-1]).numpy())
        if K0:  # an episode that ended in the game stands still in the dream from then on (no longer counted)
            act = np.stack([plan[k] if k < len(plan) else np.zeros_like(plan[0]) for plan in plans])
        else:
            act = np.stack([p.act(None) for p in policies])
        obs, *_ = env.step(act)
    env.close()
    dream_change = [[]] + [(b != a).float().mean(1).numpy() for a, b in zip(dream_tokens, dream_tokens[1:])]
    if K0:  # compare the same episodes: a dream counts at step k while its game episode is alive
        lives = lambda k: [j for j, (f, _) in enumerate(alive) if len(f) > K0 + k]  # noqa: E731
        dream = [[d[j] for j in lives(k)] for k, d in enumerate(dream)]
        dream_change = [[c[j] for j in lives(k)] if k else [] for k, c in enumerate(dream_change)]
    mean = lambda v: float(np.mean(v)) if len(v) else None  # noqa: E731
    rows = [{"step": K0 + k, "dream": mean(dream[k]), "game": mean(game[k]), "game_alive": len(game[k]),
             "dream_token_change": mean(dream_change[k]), "game_token_change": mean(game_change[k])} for k in range(K)]
    for r in rows[::4]:
        print(f"step {r['step']:3d}: dream {r['dream'] or float('nan'):.4f}  game {r['game'] or float('nan'):.4f} ({r['game_alive']} alive)")
    report = {"model": args.model, "policy": args.policy, "date": date.today().isoformat(), "torch": torch.__version__,
              "device": f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
              "prefix": K0, "temperature": args.temperature, "dreams": n_dream, "game_episodes": n,
              "token_change": {"dream": mean([c for r in rows if (c := r["dream_token_change"]) is not None]),
                               "game": mean([c for r in rows if (c := r["game_token_change"]) is not None])},
              "per_step": rows}
    print(f"image tokens changed per step: dream {report['token_change']['dream']:.3f}, "
          f"game {report['token_change']['game']:.3f}")
    atomic_write(args.out, lambda f: json.dump(report, f, indent=2), binary=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
