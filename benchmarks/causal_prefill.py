"""The engine's prefill with plain causal attention (full windows) against the masked prefill, in one run.

Every step re-prefills each slot's window (WHAM's exact procedure). When every slot
holds a whole window from position 0 (the steady state), the engine now runs that
prefill as causal attention with no mask; this script times engine steps with full
windows both ways (the masked path forced by hand) on the same model and inputs.

    python benchmarks/causal_prefill.py --model default --num-envs 4,16 --threads 1,2 --steps 3
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date

import numpy as np
import torch

from wham_gym.engine import DreamEngine
from wham_gym.measure.benchmark import full_window_prompt, random_actions
from wham_gym.model import load_model


def time_steps(model, n: int, steps: int, masked: bool) -> float:
    eng = DreamEngine(model, n, seed=0)
    tokens, acts = full_window_prompt(model, n)
    eng.reset(None, tokens=tokens, actions=acts)
    if masked:  # the old path: build and read an (N, L, L) mask even when every window is full
        inputs = eng._inputs

        def masked_inputs(*a, **k):
            out = inputs(*a, **k)
            eng._uniform = False
            return out
        eng._inputs = masked_inputs
    rng = np.random.default_rng(1)
    eng.step(random_actions(rng, n))  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        eng.step(random_actions(rng, n))
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--num-envs", default="4,16")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    model = load_model(args.model)
    rows = []
    for threads in map(int, args.threads.split(",")):
        torch.set_num_threads(threads)
        for n in map(int, args.num_envs.split(",")):
            masked, causal = (time_steps(model, n, args.steps, m) for m in (True, False))
            rows.append({"threads": threads, "num_envs": n, "masked_s_per_step": round(masked, 3),
                         "causal_s_per_step": round(causal, 3), "masked_env_frames_per_s": round(n / masked, 2),
                         "causal_env_frames_per_s": round(n / causal, 2), "speedup": round(masked / causal, 2)})
            print(rows[-1], flush=True)
    print(json.dumps({"date": str(date.today()), "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
                      "model": args.model, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
