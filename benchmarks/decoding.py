"""Exact against diagonal decoding, in one run: engine speed, and fidelity against the live game.

Speed: env-frames/s of engine steps with full windows (frames decoded) at each N.
Fidelity: the same live games (played now by the exploration policy, as ``wham-gym drift --live``),
the same prompts, actions and seeds for both decodings; PSNR/SSIM of the dreamt frames against the
game's at each horizon, no reinjection; and the action-following probes (turn / walk) with their
discrimination (which of the game's probe continuations each dreamt one is closest to).

    python benchmarks/decoding.py --model default --scenario defend_the_center --num-envs 8,16 \\
        --windows 8 --horizon 10 --out benchmarks/results/decoding_default.json
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import date

import gymnasium as gym
import numpy as np
import torch

import wham_gym  # noqa: F401  (registers wham_gym/Doom-v0)
from wham_gym.atomic import atomic_write
from wham_gym.measure.benchmark import run_engine
from wham_gym.measure.drift import Policy, measure
from wham_gym.measure.fidelity import action_following, live_windows
from wham_gym.model import load_model
from wham_gym.reinjection import Schedule

DECODINGS = ("exact", "diagonal")


def speed(model, n: int, steps: int, decoding: str) -> float:
    """env-frames/s of engine steps with full windows, frames decoded (one warm-up step)."""
    return n * steps / float(np.sum(run_engine(model, n, steps, warmup=1, decode=True, decoding=decoding)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--scenario", default="defend_the_center")
    ap.add_argument("--num-envs", default="8,16")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--horizon", type=int, default=10)
    ap.add_argument("--probe-seeds", default="0,1")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model)
    result = {"date": str(date.today()), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "cpu": platform.processor() or platform.machine(), "model": model.config.name,
              "scenario": args.scenario, "speed": [], "fidelity": {}, "probes": {}}
    for n in map(int, args.num_envs.split(",")):
        row = {"num_envs": n, **{d: round(speed(model, n, args.steps, d), 3) for d in DECODINGS}}
        row["speedup"] = round(row["diagonal"] / row["exact"], 2)
        result["speed"].append(row)
        print(row, flush=True)
    W = model.config.seq_len - 1
    windows = live_windows(lambda: gym.make("wham_gym/Doom-v0", scenario=args.scenario), W, args.horizon,
                           args.windows, seed=0)
    seeds = tuple(map(int, args.probe_seeds.split(",")))
    for d in DECODINGS:
        rows = measure(model, None, [Policy("off", Schedule())], horizon=args.horizon, num=args.windows,
                       windows=windows, progress=False, decoding=d)
        result["fidelity"][d] = {r["horizon"]: {"psnr": round(r["psnr"], 3), "ssim": round(r["ssim"], 4)}
                                 for r in rows}
        probes = action_following(model, scenario=args.scenario, seeds=seeds, decoding=d)
        result["probes"][d] = {"discrimination": probes["discrimination"], "per_step": probes["per_step"]}
        print(d, result["fidelity"][d][1], result["fidelity"][d][args.horizon], result["probes"][d], flush=True)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        atomic_write(args.out, lambda f: f.write(text), binary=False)


if __name__ == "__main__":
    main()
