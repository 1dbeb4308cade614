"""The dream as agents train in it, one engine against shards: env-steps/s of N dreams in one process with T torch
threads, and of the same N split over K one-thread engines in child processes (``wham_gym.sb3.sharded_dreams``).

Agents on ``--observe latent`` read image tokens, so no frame is decoded: ``obs_mode="tokens"``, the model card's
ends (``--ends NAME``: one of its named alternatives), random presets of take_cover's set (left stick x in
{-1, 0, 1}), SB3's SAME_STEP autoreset. Variants alternate round by round (each keeps its best), so drift on a
shared machine hits them alike.

    python benchmarks/dream_shards.py --model take_cover --ends motion-only --num-envs 16,32,64 --shards 2 \\
        --out benchmarks/results/dream_shards.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date

import numpy as np
import torch

from wham_gym import load_model
from wham_gym.atomic import atomic_write
from wham_gym.sb3 import WHAMVecEnv, sharded_dreams


def presets(n: int, steps: int, seed: int = 0) -> np.ndarray:
    actions = np.zeros((steps, n, 16), np.float32)
    actions[..., 12] = np.random.default_rng(seed).choice([-1.0, 0.0, 1.0], (steps, n))
    return actions


def bench(model, n: int, shards: int, steps: int, warmup: int, rounds: int, kwargs: dict) -> dict:
    variants = {"one engine": WHAMVecEnv(n, model, **kwargs),
                f"{shards} shards": sharded_dreams(n, model, shards, **kwargs)}
    actions = presets(n, warmup + steps)
    best = {}
    try:
        for venv in variants.values():
            venv.seed(0)
            venv.reset()
            for a in actions[:warmup]:  # fill the context windows
                venv.step(a)
        for _ in range(rounds):
            for name, venv in variants.items():
                t = time.perf_counter()
                for a in actions[warmup:]:
                    venv.step(a)
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
    finally:
        for venv in variants.values():
            venv.close()
    rate = {name: n * steps / sec for name, sec in best.items()}
    one, sharded = rate["one engine"], rate[f"{shards} shards"]
    return {"num_envs": n, "one_engine": round(one, 1), "sharded": round(sharded, 1), "ratio": round(sharded / one, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="take_cover")
    p.add_argument("--ends", default=None, help="one of the card's named ends (default: its default ends)")
    p.add_argument("--num-envs", default="16,32,64")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch threads of the one engine (shards: 1 each)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    kwargs = dict(obs_mode="tokens", ends=args.ends, max_episode_steps=600)
    rows = []
    print(f"model={args.model} ends={args.ends or 'card default'} one engine: {args.threads} threads; "
          f"{args.shards} shards: 1 thread each; {args.steps} steps, best of {args.rounds}")
    for n in (int(x) for x in args.num_envs.split(",")):
        rows.append(bench(model, n, args.shards, args.steps, args.warmup, args.rounds, kwargs))
        r = rows[-1]
        print(f"N={n}: one engine {r['one_engine']} env-steps/s, {args.shards} shards {r['sharded']} "
              f"({r['ratio']}x)", flush=True)
    if args.out:
        meta = dict(model=args.model, ends=args.ends, threads=args.threads, shards=args.shards, steps=args.steps,
                    rounds=args.rounds, torch=torch.__version__, date=date.today().isoformat(),
                    machine=platform.processor() or platform.machine())
        atomic_write(args.out, lambda f: json.dump({"meta": meta, "results": rows}, f, indent=1), binary=False)


if __name__ == "__main__":
    main()
