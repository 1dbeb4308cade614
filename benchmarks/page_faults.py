"""A dream step's page faults and speed under three heap setups, alternating fresh processes in one run.

    python benchmarks/page_faults.py --model default --num-envs 8 --decode --compile
    python benchmarks/page_faults.py --model take_cover --num-envs 64 --decode --compile --out results.json

Setups (``wham_gym/memory.py``):
- ``glibc``: glibc's defaults (``WHAM_GYM_MALLOC=0``): blocks above the mmap threshold are fresh mappings, faulted
  in again every step;
- ``kept``: what an engine sets up by default, freed blocks kept in the heap, KV caches and the heap's next GiB
  advised onto huge pages;
- ``kept+hugetlb``: that, and glibc's own huge pages for every allocation (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``,
  read by glibc at process start, so only for users who set it). The results of 2026-12-05 in RESULTS.md were
  taken before the heap's GiB was advised (commit 6a71e1d), when this setup still added 4-5 %.

Each process dreams full windows (as ``wham_gym.measure.benchmark.run_engine`` does), warms up 3 steps, and over
the timed steps reads the median step's speed, and minor page faults and kernel CPU time per step (``getrusage``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np

from wham_gym.atomic import atomic_write

ROOT = Path(__file__).resolve().parents[1]
SETUPS = {
    "glibc": {"WHAM_GYM_MALLOC": "0"},
    "kept": {},
    "kept+hugetlb": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
}

_CHILD = r"""
import json, resource, numpy as np, torch
torch.set_num_threads({threads})
from wham_gym import memory
from wham_gym.engine import DreamEngine
from wham_gym.measure.benchmark import full_window_prompt, random_actions
from wham_gym.model import load_model
from wham_gym.rollout import Rollout, run
model = load_model({model!r})
roll = Rollout(DreamEngine(model, {n}, seed=0, compile={compile}))
tokens, acts = full_window_prompt(model, {n}, 0)
roll.reset(None, tokens=tokens, actions=acts)
rng = np.random.default_rng(1)
actions = torch.stack([random_actions(rng, {n}) for _ in range(3 + {steps})], 1).numpy()
run(roll, 3, actions, decode={decode}, keep_frames=False)  # warm-up (and the compile)
r0 = resource.getrusage(resource.RUSAGE_SELF)
s = run(roll, {steps}, actions[:, 3:], decode={decode}, keep_frames=False).seconds
r1 = resource.getrusage(resource.RUSAGE_SELF)
print("RESULT " + json.dumps({{"frames_per_s": {n} / float(np.median(s)),
                              "minor_faults_per_step": (r1.ru_minflt - r0.ru_minflt) / {steps},
                              "sys_s_per_step": (r1.ru_stime - r0.ru_stime) / {steps},
                              "heap_kept": memory.keep_freed_memory()}}))
"""


def run_setup(args, setup: str) -> dict:
    code = _CHILD.format(threads=args.threads, model=args.model, n=args.num_envs, steps=args.steps,
                         decode=args.decode, compile=args.compile)
    env = {k: v for k, v in os.environ.items() if k not in ("WHAM_GYM_MALLOC", "GLIBC_TUNABLES")}
    env.update(OMP_NUM_THREADS=str(args.threads), **SETUPS[setup])
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--num-envs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--decode", action="store_true", help="decode frames to pixels too")
    ap.add_argument("--compile", action="store_true", help="the compiled exact path")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    runs = {s: [] for s in SETUPS}
    for r in range(args.repeats):
        for setup in SETUPS:
            runs[setup].append(run_setup(args, setup))
            x = runs[setup][-1]
            print(f"run {r + 1}/{args.repeats} {setup}: {x['frames_per_s']:.2f} env-frames/s, "
                  f"{x['minor_faults_per_step']:.0f} faults/step, {x['sys_s_per_step']:.3f} s kernel/step", flush=True)
    base = float(np.median([x["frames_per_s"] for x in runs["glibc"]]))
    summary = {}
    for setup, xs in runs.items():
        med = {k: float(np.median([x[k] for x in xs])) for k in ("frames_per_s", "minor_faults_per_step",
                                                                 "sys_s_per_step")}
        summary[setup] = {**med, "ratio": med["frames_per_s"] / base, "heap_kept": xs[0]["heap_kept"]}
        print(f"{setup:>13}: {med['frames_per_s']:.2f} env-frames/s ({med['frames_per_s'] / base:.2f}x), "
              f"{med['minor_faults_per_step']:.0f} faults/step, {med['sys_s_per_step']:.3f} s kernel/step")
    if args.out:
        import torch

        meta = {"date": date.today().isoformat(), "python": platform.python_version(), "torch": torch.__version__,
                "cpu": platform.processor() or platform.machine(), "args": {k: str(v) for k, v in vars(args).items()}}
        atomic_write(args.out, lambda f: json.dump({"meta": meta, "summary": summary, "runs": runs}, f, indent=1),
                     binary=False)


if __name__ == "__main__":
    main()
