"""The distribution layer's cost: env-steps/s of RayVectorEnv (1 and 2 actors) against the local WHAMVectorEnv.

At each total N the three variants dream the same slots with the same model and the
same cores: the local env with T torch threads, one Ray actor with T threads, two
actors with T/2 each. They are timed in alternating rounds (best round kept), so that
load from other processes hits all three alike. Separately, the transport alone: a
remote call that returns N observations' worth of numpy frames (no model), gathered
and concatenated as RayVectorEnv does, per actor count: what one step costs on top of
dreaming, whatever the model.

Then a projection (computed, not measured) for 8 GPUs x K nodes with an official-size
model: each GPU an actor at the per-device bandwidth floor of benchmarks/RESULTS.md,
plus the per-step overhead measured here, plus the bytes every step brings to the
driver over its network link.

    python benchmarks/cluster.py --model default --num-envs 8,16 --steps 3 --rounds 2 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from wham_gym.atomic import atomic_write
from wham_gym.cluster import RayVectorEnv
from wham_gym.env import WHAMVectorEnv

FRAME_BYTES = 180 * 300 * 3
# Per-device floors (env-frames/s, computed in benchmarks/RESULTS.md "Throughput (issue 3)": H100, bf16):
FLOORS = {"wham-1.6b": {8: 3.98, 64: 5.10}, "wham-200m": {8: 15.5, 64: 17.6}}


def actions(rng, n):
    a = rng.uniform(-1, 1, (n, 16)).astype(np.float32)
    a[:, :12] = rng.random((n, 12)) < 0.3
    return a


def time_steps(env, steps: int, rng) -> float:
    t = time.perf_counter()
    for _ in range(steps):
        env.step(actions(rng, env.num_envs))
    return time.perf_counter() - t


def bench_envs(model: str, n: int, steps: int, rounds: int, threads: int, seed: int = 0,
               obs_mode: str = "frames") -> dict:
    torch.set_num_threads(threads)
    half = max(1, threads // 2)
    variants = {
        "local": WHAMVectorEnv(n, model, obs_mode=obs_mode),
        "ray_1_actor": RayVectorEnv(n, model, num_actors=1, num_cpus=threads, threads=threads, obs_mode=obs_mode),
        "ray_2_actors": RayVectorEnv(n, model, num_actors=2, num_cpus=half, threads=half, obs_mode=obs_mode),
    }
    rng = np.random.default_rng(seed)
    try:
        for env in variants.values():  # prompts fill the window: one warm-up step each
            env.reset(seed=seed)
            env.step(actions(rng, n))
        best = {k: float("inf") for k in variants}
        for _ in range(rounds):
            for name, env in variants.items():
                best[name] = min(best[name], time_steps(env, steps, rng) / steps)
    finally:
        for env in variants.values():
            env.close()
    out = {"N": n, **{f"{k}_steps_per_s": 1 / v for k, v in best.items()},
           **{f"{k}_s_per_step": v for k, v in best.items()}}
    for k in ("ray_1_actor", "ray_2_actors"):
        out[f"{k}_overhead"] = best[k] / best["local"] - 1
    return out


class Echo:
    """An actor that returns ``n`` observations' worth of frames: the transport with no model behind it."""

    def __init__(self, n: int):
        self.frames = np.random.default_rng(0).integers(0, 256, (n, 180, 300, 3), dtype=np.uint8)

    def step(self, a):
        return self.frames, np.zeros(len(self.frames), np.float32), {"step": np.zeros(len(self.frames), np.int64)}


def bench_transport(ray, n: int, actors: int, calls: int = 30) -> dict:
    echo = ray.remote(Echo).options(num_cpus=0.1)
    parts = np.array_split(np.arange(n), actors)
    hs = [echo.remote(len(p)) for p in parts]
    a = np.zeros((n, 16), np.float32)
    ray.get([h.step.remote(a[p]) for h, p in zip(hs, parts)])  # started
    timings = {}
    for joined in (False, True):  # frames left where Ray put them (zero-copy views) vs copied into one array
        t = time.perf_counter()
        for _ in range(calls):
            got = ray.get([h.step.remote(a[p]) for h, p in zip(hs, parts)])
            if joined:
                np.concatenate([g[0] for g in got])
        timings[joined] = (time.perf_counter() - t) / calls
    for h in hs:
        ray.kill(h)
    return {"N": n, "actors": actors, "ms_per_step": 1000 * timings[True], "ms_without_concat": 1000 * timings[False],
            "MB_per_step": n * FRAME_BYTES / 2**20}


def projection(fixed_ms: float, per_frame_ms: float, link_gbit: float = 10.0) -> list[dict]:
    """8 GPUs x K nodes, one actor per GPU at its floor; the driver pays the measured overhead per step and
    receives every frame over its link."""
    rows = []
    for model, floors in FLOORS.items():
        for per_gpu_n, floor in floors.items():
            step_s = per_gpu_n / floor  # one engine step of a GPU's slots at the floor
            for nodes in (1, 4, 16, 64):
                actors = 8 * nodes
                n = actors * per_gpu_n
                overhead_s = (fixed_ms * actors + per_frame_ms * n) / 1000  # the driver's share, serial
                link_s = n * FRAME_BYTES * 8 / (link_gbit * 1e9)  # every frame crosses the driver's NIC
                total = step_s + max(overhead_s, link_s)
                rows.append({"model": model, "N_per_gpu": per_gpu_n, "nodes": nodes, "gpus": actors,
                             "floor_per_gpu": floor, "ideal": actors * floor, "projected": n / total,
                             "efficiency": step_s / total})
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--num-envs", default="8,16")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--obs-mode", choices=("frames", "tokens"), default="frames",
                    help="what the envs return: decoded frames, or image tokens (what a latent-view agent reads)")
    ap.add_argument("--no-transport", action="store_true", help="the envs only: skip the transport and projection")
    ap.add_argument("--out", default="benchmarks/results/cluster.json")
    args = ap.parse_args(argv)
    import ray

    # Logical CPUs for every variant at once (they run one at a time); a small object store.
    ray.init(address="local", num_cpus=2 * args.threads + 1, include_dashboard=False,
             object_store_memory=400 * 2**20, log_to_driver=False)
    load = os.getloadavg()
    try:
        sizes = [int(x) for x in args.num_envs.split(",")]
        envs = [bench_envs(args.model, n, args.steps, args.rounds, args.threads, obs_mode=args.obs_mode)
                for n in sizes]
        transport = [] if args.no_transport else [bench_transport(ray, n, k) for n in sizes for k in (1, 2, 8)]
    finally:
        ray.shutdown()
    result = {
        "device": platform.processor() or platform.machine(), "cores": os.cpu_count(), "threads": args.threads,
        "torch": torch.__version__, "ray": ray.__version__, "date": time.strftime("%Y-%m-%d"),
        "load_before": load, "load_after": os.getloadavg(), "model": args.model, "obs_mode": args.obs_mode,
        "envs": envs,
    }
    if transport:
        # Fixed cost per actor and per frame from the transport rows (least squares over actors and N).
        X = np.array([[t["actors"], t["N"]] for t in transport], float)
        y = np.array([t["ms_per_step"] for t in transport])
        fixed_ms, per_frame_ms = (float(v) for v in np.linalg.lstsq(X, y, rcond=None)[0])
        result.update(transport=transport, fixed_ms_per_actor=fixed_ms, ms_per_frame=per_frame_ms,
                      projection=projection(max(fixed_ms, 0.0), max(per_frame_ms, 0.0)))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    atomic_write(args.out, lambda f: json.dump(result, f, indent=1), binary=False)
    print(json.dumps({k: result[k] for k in ("envs", "transport", "fixed_ms_per_actor", "ms_per_frame",
                                             "load_before", "load_after") if k in result}, indent=1))
    return result


if __name__ == "__main__":
    main()
