"""Fit EndRiskTermination's sharpness and center to the game's episode lengths under blind policies.

A dream whose engine bans the end frame's first token and reports its probability p every step
(``DreamEngine.watch_first_token``) is the world model's dream *given the episode goes on*: its frames do not
depend on how the end is later decided. So one set of dreams per blind policy (still, jitter, strafe) gives,
for any (sharpness, center), the expected episode length E[L] = sum_t prod_{k<t} (1 - q_k), with
q = sigmoid(sharpness * (logit p - logit center)) (:class:`~wham_gym.rewards.EndRiskTermination`). The game's
lengths under the same policies are played here too; the fit minimises the squared log ratio of the two
over the policies, and the table shows how each setting ranks them.

    python benchmarks/end_risk.py --model runs/tc-w4/model --out benchmarks/results/end_risk_w4.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import date
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from take_cover import game_lengths  # noqa: E402  (benchmarks/take_cover.py: the game's side, shared)

from wham_gym.atomic import atomic_write  # noqa: E402
from wham_gym.env import WHAMVectorEnv  # noqa: E402
from wham_gym.games.explore import make_policy  # noqa: E402
from wham_gym.model import load_model  # noqa: E402
from wham_gym.rewards import EndRiskTermination  # noqa: E402


class Recorder(EndRiskTermination):
    """Ends nothing; keeps each step's end probability p (the engine watches and bans the end token for it)."""

    def __init__(self, model):
        super().__init__(model)
        self.p: list[np.ndarray] = []

    def __call__(self, ctx):
        self.p.append(ctx.first_token_prob.numpy(force=True))
        return torch.zeros(ctx.num_envs, dtype=torch.bool, device=ctx.tokens.device)


def dream_end_probs(model, policies: list[str], per_policy: int, horizon: int, seed: int, temperature: float):
    """(len(policies) * per_policy, horizon) end probabilities of dreams that never end, policy-major."""
    rec = Recorder(model)
    n = len(policies) * per_policy
    env = WHAMVectorEnv(n, model, obs_mode="tokens", termination_fn=rec, max_episode_steps=horizon + 1,
                        temperature=temperature)
    actors = [make_policy(name, seed=seed + i) for name in policies for i in range(per_policy)]
    env.reset(seed=seed)
    for _ in tqdm(range(horizon), desc="dream steps", leave=False):
        env.step(np.stack([a.act(None) for a in actors]))
    env.close()
    return np.stack(rec.p, 1)


def alive_after(model, p: np.ndarray, sharpness: float = 1.0, center: float = 0.5) -> np.ndarray:
    """(n, H) recorded end probabilities -> (n, H) P(alive after step t) under EndRiskTermination(sharpness, center)."""
    q = EndRiskTermination(model, sharpness, center).probability(torch.from_numpy(p)).numpy()
    return np.cumprod(1 - q, axis=1)


def expected_length(alive: np.ndarray) -> np.ndarray:
    """(n, H) P(alive after step t) -> (n,) expected episode length in steps, capped at H."""
    return 1 + alive[:, :-1].sum(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a model trained with black end frames")
    ap.add_argument("--policies", default="still,jitter,strafe")
    ap.add_argument("--per-policy", type=int, default=16, help="dreams per policy")
    ap.add_argument("--game-episodes", type=int, default=48, help="game episodes per policy")
    ap.add_argument("--horizon", type=int, default=300, help="dream steps (both worlds' lengths are capped here)")
    ap.add_argument("--temperature", type=float, default=0.9)
    ap.add_argument("--sharpness", default="1,1.5,2,3,4,6")
    ap.add_argument("--centers", default="0.03,0.05,0.08,0.12,0.2,0.3,0.5")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    card = model.card or {}
    policies = args.policies.split(",")
    H = args.horizon

    game = {}
    for name in policies:
        lengths, _ = game_lengths(card.get("scenario") or "take_cover", card.get("game_kwargs") or {},
                                  args.game_episodes, 600, 20_000, name)
        game[name] = float(np.minimum(lengths, H).mean())
    p = dream_end_probs(model, policies, args.per_policy, H, args.seed, args.temperature)
    by_policy = {name: p[i * args.per_policy:(i + 1) * args.per_policy] for i, name in enumerate(policies)}

    grid = []
    for s in (float(x) for x in args.sharpness.split(",")):
        for c in (float(x) for x in args.centers.split(",")):
            lengths = {name: float(expected_length(alive_after(model, v, s, c)).mean()) for name, v in by_policy.items()}
            err = float(np.mean([np.log(lengths[k] / game[k]) ** 2 for k in policies]))
            grid.append({"sharpness": s, "center": c, "dream": lengths, "rms_log_ratio": err ** 0.5})
    grid.sort(key=lambda g: g["rms_log_ratio"])
    report = {"model": args.model, "date": date.today().isoformat(), "torch": torch.__version__,
              "device": f"CPU ({platform.processor() or platform.machine()}, {args.threads} threads)",
              "temperature": args.temperature, "horizon": H, "per_policy": args.per_policy,
              "game_episodes": args.game_episodes, "game": game,
              "p_quantiles": {name: np.quantile(v, [0.5, 0.9, 0.99, 0.999]).tolist() for name, v in by_policy.items()},
              "drawn_rate": {name: float(expected_length(np.cumprod(1 - v, 1)).mean()) for name, v in by_policy.items()},
              "grid": grid}
    print("game (capped at", H, "):", {k: round(v, 1) for k, v in game.items()})
    print("q = p (the drawn ends' rate):", {k: round(v, 1) for k, v in report["drawn_rate"].items()})
    for g in grid[:8]:
        print(f"sharpness {g['sharpness']:4.1f} center {g['center']:.2f}: "
              + " ".join(f"{k} {v:6.1f}" for k, v in g["dream"].items()) + f"  rms log ratio {g['rms_log_ratio']:.3f}")
    atomic_write(args.out, lambda f: json.dump(report, f, indent=2), binary=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
