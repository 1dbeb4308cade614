"""Env-layer overhead: env-steps/s of WHAMVectorEnv (numpy and torch outputs) against the raw DreamEngine.

For each N the three variants share one model and step the same way (decoded
frames, random controller vectors, no autoreset); each is warmed up until its
windows are full, then timed in alternating rounds, keeping each variant's best
round so that noise from other processes hits all three alike.

    python benchmarks/env_steps.py --model tiny --num-envs 1,4,16,32 --steps 20 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from wham_gym import load_model
from wham_gym.engine import DreamEngine
from wham_gym.env import WHAMVectorEnv


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def make_variants(model, n: int, seed: int):
    """name -> step(actions) callable; actions are numpy for the numpy env, device tensors otherwise."""
    engine = DreamEngine(model, n, seed=seed)
    engine.reset(None, frames=np.full((n, 1, model.config.frame_height, model.config.frame_width, 3), 128, np.uint8))
    env_np = WHAMVectorEnv(n, model)
    env_np.reset(seed=seed)
    env_t = WHAMVectorEnv(n, model, return_torch=True)
    env_t.reset(seed=seed)
    return {
        "engine": (lambda a: engine.step(a, decode=True), True),
        "env_numpy": (env_np.step, False),
        "env_torch": (env_t.step, True),
    }


def bench(model, n: int, steps: int, warmup: int, rounds: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    actions = rng.uniform(0, 1, (steps, n, 16)).astype(np.float32)
    actions[..., 12:] = actions[..., 12:] * 2 - 1
    as_torch = torch.from_numpy(actions).to(model.device)
    variants = make_variants(model, n, seed)
    for step, on_device in variants.values():  # fill every window (context_steps - 1 frames)
        for k in range(warmup):
            step(as_torch[k % steps] if on_device else actions[k % steps])
    best = {name: float("inf") for name in variants}
    for _ in range(rounds):
        for name, (step, on_device) in variants.items():
            sync(model.device)
            t = time.perf_counter()
            for k in range(steps):
                out = step(as_torch[k] if on_device else actions[k])
            if name == "env_numpy":
                assert isinstance(out[0], np.ndarray)
            sync(model.device)
            best[name] = min(best[name], time.perf_counter() - t)
    rate = {name: n * steps / sec for name, sec in best.items()}
    return {
        "num_envs": n,
        **{f"{name}_steps_per_s": round(r, 2) for name, r in rate.items()},
        "overhead_numpy_pct": round(100 * (best["env_numpy"] / best["engine"] - 1), 2),
        "overhead_torch_pct": round(100 * (best["env_torch"] / best["engine"] - 1), 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--num-envs", default="1,4,16,32")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, device=args.device)
    rows = []
    print(f"model={args.model} device={args.device} threads={torch.get_num_threads()} steps={args.steps} rounds={args.rounds}")
    print(f"{'N':>4} {'engine/s':>10} {'env np/s':>10} {'env torch/s':>12} {'ovh np %':>9} {'ovh torch %':>11}")
    for n in (int(x) for x in args.num_envs.split(",")):
        r = bench(model, n, args.steps, args.warmup, args.rounds)
        rows.append(r)
        print(f"{n:>4} {r['engine_steps_per_s']:>10.1f} {r['env_numpy_steps_per_s']:>10.1f} "
              f"{r['env_torch_steps_per_s']:>12.1f} {r['overhead_numpy_pct']:>9.2f} {r['overhead_torch_pct']:>11.2f}")
    if args.out:
        meta = dict(model=args.model, device=args.device, threads=torch.get_num_threads(), torch=torch.__version__,
                    machine=platform.processor() or platform.machine(), steps=args.steps, rounds=args.rounds)
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
