"""Speculative against exact decoding, in one run: acceptance, forward passes per step, and speed (A/B/A/B).

N dreams of a model start from real prompts of its card and are driven by a random policy over its
action set's presets (take_cover: left stick x in {-1, 0, 1}), the same prompts, actions and seeds
for every variant. Speculative decoding must give exact decoding's tokens (checked here too); what
it changes is the number of forward passes. The variants run interleaved (exact, k=4, k=8, ...,
then again), each from a fresh engine, so a machine whose load drifts biases none of them.

    OMP_NUM_THREADS=1 python benchmarks/speculative.py --model take_cover --num-envs 16,32 \\
        --out benchmarks/results/speculative_take_cover.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date

import numpy as np
import torch

from wham_gym.action_sets import action_set_for
from wham_gym.atomic import atomic_write
from wham_gym.engine import DreamEngine
from wham_gym.model import load_model
from wham_gym.prompts import default_prompt_bank


def run(model, frames, acts, policy, decoding: str, block: int, decode: bool, seed: int, **sampling) -> dict:
    """One rollout: per-step seconds, passes, drafted / accepted tokens, and the tokens (for the check)."""
    N = frames.shape[0]
    eng = DreamEngine(model, N, seed=seed, decoding=decoding, verify_block=block, **sampling)
    eng.reset(None, frames=frames, actions=acts)
    out = {"seconds": [], "passes": [], "slot_passes": [], "drafted": 0, "accepted": 0, "tokens": []}
    for a in policy:
        t0 = time.perf_counter()
        res = eng.step(a, decode=decode, checked=True)
        out["seconds"].append(time.perf_counter() - t0)
        out["passes"].append(eng.last_passes)
        out["tokens"].append(res.tokens)
        if decoding == "speculative":
            out["drafted"] += int(eng.last_drafted.sum())
            out["accepted"] += int(eng.last_accepted.sum())
            # A slot needs 1 + (tokens_per_image - 1 - its accepted drafts) passes; the step takes its slowest's.
            out["slot_passes"].append(float((model.config.tokens_per_image - eng.last_accepted).float().mean()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="take_cover")
    ap.add_argument("--num-envs", default="16,32")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--blocks", default="4,8,16", help="verify_block values (tokens fed per pass)")
    ap.add_argument("--repeats", type=int, default=2, help="rounds of the interleaved A/B runs")
    ap.add_argument("--temperature", type=float, default=0.9)
    ap.add_argument("--deterministic", action="store_true")
    ap.add_argument("--tokens-only", action="store_true", help="do not decode frames")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    presets = action_set_for(model)
    bank = default_prompt_bank(model)
    blocks = [int(b) for b in args.blocks.split(",")]
    sampling = dict(temperature=args.temperature, deterministic=args.deterministic)
    result = {"date": str(date.today()), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "cpu": platform.processor() or platform.machine(), "model": args.model,
              "tokens_per_image": model.config.tokens_per_image, "action_set": presets.name, "steps": args.steps,
              "sampling": sampling, "decode": not args.tokens_only, "rows": []}
    for n in map(int, args.num_envs.split(",")):
        rng = np.random.default_rng(args.seed)
        prompts = bank.sample(rng, n, model.config.seq_len - 1)
        frames = np.stack([p.frames for p in prompts])
        acts = np.stack([p.actions for p in prompts])
        policy = presets.vectors[rng.integers(len(presets), size=(args.steps, n))]  # (steps, N, 16)
        variants = [("exact", 1)] + [("speculative", b) for b in blocks]
        runs = {v: [] for v in variants}
        run(model, frames, acts, policy[:1], "exact", 1, not args.tokens_only, args.seed, **sampling)  # warm-up
        for r in range(args.repeats):
            for v in variants:
                runs[v].append(run(model, frames, acts, policy, *v, not args.tokens_only, args.seed, **sampling))
                print(n, v, r, f"{n * args.steps / sum(runs[v][-1]['seconds']):.2f} env-steps/s", flush=True)
        exact_tokens = runs[("exact", 1)][0]["tokens"]
        for v, rs in runs.items():
            sec = [sum(x["seconds"]) for x in rs]
            passes = np.array(rs[0]["passes"])
            same = all(torch.equal(a, b) for x in rs for a, b in zip(x["tokens"], exact_tokens))
            row = {"num_envs": n, "decoding": v[0], "verify_block": v[1] if v[0] == "speculative" else None,
                   "env_steps_per_s": [round(n * args.steps / s, 3) for s in sec],
                   "passes_per_step": round(float(passes.mean()), 2),
                   "passes_first_step": int(passes[0]), "passes_later_steps": round(float(passes[1:].mean()), 2),
                   "tokens_equal_exact": same}
            if v[0] == "speculative":
                row["acceptance"] = round(rs[0]["accepted"] / max(rs[0]["drafted"], 1), 3)
                row["slot_passes_per_step"] = round(float(np.mean(rs[0]["slot_passes"])), 2)  # were slots alone
            result["rows"].append(row)
            print(json.dumps(row), flush=True)
        base = np.mean(next(r for r in result["rows"] if r["num_envs"] == n and r["decoding"] == "exact")
                       ["env_steps_per_s"])
        for r in result["rows"]:
            if r["num_envs"] == n:
                r["speedup"] = round(float(np.mean(r["env_steps_per_s"]) / base), 2)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        atomic_write(args.out, lambda f: f.write(text), binary=False)


if __name__ == "__main__":
    main()
