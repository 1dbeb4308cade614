"""How often the compiled engine's tokens part from eager decoding's over a long dream.

``compile=True`` computes the same function as eager decoding, but its kernels round differently, so now and
then a draw whose uniform lies within rounding of an edge of the inverse CDF comes out otherwise, and that slot's
dream goes its own way from there. Two engines, eager and compiled, same seed, same full-window prompts and
random controller actions, ``--steps`` steps of N slots, tokens only; for each slot the index of its first
differing token. Prints a line and writes JSON.

    python benchmarks/compiled_tokens.py --model take_cover --num-envs 16 --steps 40 \
        --out benchmarks/results/compiled_tokens_take_cover.json
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import date

import numpy as np
import torch

from wham_gym.atomic import atomic_write
from wham_gym.engine import DreamEngine
from wham_gym.measure.benchmark import full_window_prompt, random_actions
from wham_gym.model import load_model
from wham_gym.rollout import Rollout, run


def dream_tokens(model, num_envs: int, steps: int, compile: bool, seed: int) -> torch.Tensor:
    """(N, steps * tokens_per_image) image tokens of one engine's dream (the project's rollout loop)."""
    rollout = Rollout(DreamEngine(model, num_envs, seed=seed, compile=compile))
    tokens, actions = full_window_prompt(model, num_envs, seed)
    rollout.reset(None, tokens=tokens, actions=actions)
    rng = np.random.default_rng(seed + 1)
    table = torch.stack([random_actions(rng, num_envs) for _ in range(steps)], 1).numpy()
    return torch.from_numpy(run(rollout, steps, table, decode=False).tokens).reshape(num_envs, -1)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="take_cover")
    ap.add_argument("--num-envs", type=int, default=16)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    eager, compiled = (dream_tokens(model, args.num_envs, args.steps, c, args.seed) for c in (False, True))
    per_slot = eager.shape[1]
    first = [int(row.nonzero()[0]) if row.any() else None for row in eager != compiled]
    drawn = sum(per_slot if f is None else f + 1 for f in first)  # draws up to and including each first flip
    result = {"date": date.today().isoformat(), "model": args.model, "num_envs": args.num_envs, "steps": args.steps,
              "seed": args.seed, "threads": args.threads, "torch": torch.__version__, "cpu": platform.processor(),
              "tokens_per_slot": per_slot, "first_difference": first,
              "slots_parted": sum(f is not None for f in first), "draws_until_parted_or_end": drawn}
    at = sorted(f for f in first if f is not None)
    print(f"{args.model}: {result['slots_parted']} of {args.num_envs} slots parted from eager decoding within "
          f"{per_slot} tokens; {result['slots_parted']} differing draws in {drawn} (first at {at})")
    if args.out:
        atomic_write(args.out, lambda f: json.dump(result, f, indent=1), binary=False)
    return result


if __name__ == "__main__":
    main()
