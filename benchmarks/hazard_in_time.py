"""A hazard step by step: dreams under a policy (never ended) against the game's episodes under it.

N dreams from the model's prompts and the game's episodes (fresh starts, fixed seeds) play the same blind
policy; at each step k the model's hazard (its raw probability, the dream offset not applied) is read on the
dreamt frames and on the game's frames of the episodes still alive. Where the two curves part shows what the
world model leaves out: danger that builds up in the game and not in the dream, or the reverse.

    python benchmarks/hazard_in_time.py --model runs/tc-v10/model --policy still \\
        --out benchmarks/results/hazard_in_time_still.json
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
from wham_gym.rewards import NeverTerminate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a model whose reward model is a frame-only hazard")
    ap.add_argument("--policy", default="still", help="a recording policy: still, jitter, strafe, sweep")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--num-envs", type=int, default=32, help="dreams, and game episodes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    net = model.reward_model
    if net is None or net.config.termination != "hazard" or net.config.reads_action:
        raise SystemExit(f"{args.model}: expected a frame-only hazard (termination 'hazard', reads_action False)")

    n, K = args.num_envs, args.steps
    env = WHAMVectorEnv(n, model, obs_mode="tokens", termination_fn=NeverTerminate(), max_episode_steps=K + 1)
    policies = [make_policy(args.policy, seed=i) for i in range(n)]
    obs, _ = env.reset(seed=0)
    dream = []
    for _ in range(K):
        dream.append(net.hazard(torch.as_tensor(obs).long().reshape(n, -1)).numpy())
        obs, *_ = env.step(np.stack([p.act(None) for p in policies]))
    env.close()
    game = [[] for _ in range(K)]
    card = model.card or {}
    g = gym.make("wham_gym/Doom-v0", scenario=card.get("scenario") or "take_cover", max_steps=K + 1,
                 **(card.get("game_kwargs") or {}))
    try:
        for i in range(n):
            actor = make_policy(args.policy, seed=10_000 + i)
            o, _ = g.reset(seed=10_000 + i)
            frames = []
            for _ in range(K):
                frames.append(o)
                o, _, term, trunc, _ = g.step(actor.act(o))
                if term or trunc:
                    break
            with torch.no_grad():
                p = net.hazard(model.encode_frames(np.stack(frames)).long()).numpy()
            for k, v in enumerate(p):
                game[k].append(float(v))
    finally:
        g.close()
    rows = [{"step": k, "dream": float(np.mean(dream[k])), "game": float(np.mean(game[k])) if game[k] else None,
             "game_alive": len(game[k])} for k in range(K)]
    for r in rows[::4]:
        print(f"step {r['step']:3d}: dream {r['dream']:.4f}  game {r['game'] or float('nan'):.4f} ({r['game_alive']} alive)")
    report = {"model": args.model, "policy": args.policy, "date": date.today().isoformat(), "torch": torch.__version__,
              "device": f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
              "dreams": n, "game_episodes": n, "per_step": rows}
    atomic_write(args.out, lambda f: json.dump(report, f, indent=2), binary=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
