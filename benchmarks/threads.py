"""Torch threads under load: the engine's speed with 1 thread, every core, and ``auto`` (wham_gym/threads.py).

For 0, 1, 2 ... competing jobs (each a process multiplying matrices on one torch thread, as another
user's training would), started ``--settle`` seconds before so the 1-minute load average sees them,
each thread setting dreams ``--steps`` timed steps of N full windows in a fresh process (the model
loaded there, as ``wham-gym`` would), tokens only. Prints a table and writes JSON.

    python benchmarks/threads.py --model default --num-envs 8 --competitors 0,1,2 \
        --out benchmarks/results/threads_default.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date

from wham_gym.atomic import atomic_write

CHILD = """
import json, sys, time
from wham_gym.threads import parse_threads, set_threads
threads = set_threads(parse_threads(sys.argv[1]))
import numpy as np
import torch
from wham_gym.measure.benchmark import run_engine
from wham_gym.model import load_model
m = load_model(sys.argv[2])
n, steps = int(sys.argv[3]), int(sys.argv[4])
secs = run_engine(m, n, steps, warmup=1, decode=False)
print(json.dumps({"threads": threads, "env_frames_per_s": n * steps / sum(secs),
                  "load": __import__("os").getloadavg()[0]}))
"""

COMPETITOR = """
import torch
torch.set_num_threads(1)
a = torch.randn(512, 512)
while True:
    a = (a @ a).tanh()
"""


def measure(setting: str, args) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, setting, args.model, str(args.num_envs), str(args.steps)],
                         capture_output=True, text=True, timeout=args.timeout)
    if out.returncode:
        raise RuntimeError(f"threads {setting}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--steps", type=int, default=2, help="timed steps per measurement (after one warm-up)")
    p.add_argument("--competitors", default="0,1,2", help="comma-separated numbers of competing one-thread jobs")
    p.add_argument("--settings", default="1,all,auto", help="thread settings: ints, all (every core), auto")
    p.add_argument("--settle", type=float, default=75, help="seconds competitors run before measuring")
    p.add_argument("--timeout", type=float, default=900, help="seconds one measurement may take")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    settings = [str(cores) if s == "all" else s for s in args.settings.split(",")]
    rows = []
    for k in (int(c) for c in args.competitors.split(",")):
        procs = [subprocess.Popen([sys.executable, "-c", COMPETITOR]) for _ in range(k)]
        try:
            time.sleep(args.settle if k else 0)
            for s in settings:
                r = measure(s, args)
                rows.append({"competitors": k, "setting": s, **r})
                print(f"competitors {k}  threads {s:>4} ({r['threads']})  {r['env_frames_per_s']:.2f} env-frames/s  "
                      f"load {r['load']:.2f}", flush=True)
        finally:
            for q in procs:
                q.kill()
                q.wait()
        if k:
            time.sleep(args.settle)  # the next condition starts from a load average that has come down
    if args.out:
        import torch

        meta = {"model": args.model, "num_envs": args.num_envs, "steps": args.steps, "cores": cores,
                "torch": torch.__version__, "date": date.today().isoformat(), "settle_s": args.settle}
        atomic_write(args.out, lambda f: json.dump({"meta": meta, "rows": rows}, f, indent=2), binary=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
