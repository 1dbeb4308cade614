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
from datetime import date
from unittest import mock

import numpy as np
import torch

from wham_gym.engine import DreamEngine
from wham_gym.measure.benchmark import run_engine
from wham_gym.model import load_model


def seconds_per_step(model, n: int, steps: int, masked: bool) -> float:
    # masked: the old path, an (N, L, L) mask even when every window is full.
    with mock.patch.object(DreamEngine, "_causal_prefill", not masked):
        return float(np.mean(run_engine(model, n, steps, warmup=1, decode=True)))


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
            masked, causal = (seconds_per_step(model, n, args.steps, m) for m in (True, False))
            rows.append({"threads": threads, "num_envs": n, "masked_s_per_step": round(masked, 3),
                         "causal_s_per_step": round(causal, 3), "masked_env_frames_per_s": round(n / masked, 2),
                         "causal_env_frames_per_s": round(n / causal, 2), "speedup": round(masked / causal, 2)})
            print(rows[-1], flush=True)
    print(json.dumps({"date": str(date.today()), "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
                      "model": args.model, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
