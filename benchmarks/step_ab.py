"""The engine's exact step in this checkout against a git revision, interleaved in one run.

Machines shared with others (a 2-core VM) drift by 10-20 % from one minute to the next, so
two speeds measured minutes apart say little about a change. This script checks the base
revision out into a temporary git worktree and times the same engine steps (full windows,
``wham_gym.measure.benchmark.run_engine``) in both trees, alternating fresh subprocesses
ABAB..., and reports each tree's median and their ratio per N.

    python benchmarks/step_ab.py --base HEAD~1 --model take_cover --num-envs 16,32,64 --repeats 3
    python benchmarks/step_ab.py --base . --base-decoding exact --decoding diagonal   # two decodings, one tree
    python benchmarks/step_ab.py --base . --compile --model default    # the compiled decode pass against eager
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# Runs in each tree; prints {N: env-steps per second}.
_CHILD = r"""
import json, sys, torch
torch.set_num_threads({threads})
from wham_gym.measure.benchmark import run_engine
from wham_gym.model import load_model
model = load_model({model!r})
out = {{}}
for n in {ns!r}:
    s = run_engine(model, n, {steps}, warmup=2, decode={decode}, decoding={decoding!r},
                   engine_kwargs={{"compile": {compile}}})  # the warm-up steps compile
    out[n] = n / float(sorted(s)[len(s) // 2])
print("RESULT " + json.dumps(out))
"""


def time_tree(tree: Path, args, ns: list[int], decoding: str, compile: bool = False) -> dict[int, float]:
    code = _CHILD.format(threads=args.threads, model=args.model, ns=ns, steps=args.steps, decode=args.decode,
                         decoding=decoding, compile=compile)
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return {int(k): v for k, v in json.loads(line[len("RESULT "):]).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="HEAD", help="git revision to compare this checkout (its working tree) with; "
                                                   "'.': this checkout itself (to compare decodings)")
    ap.add_argument("--model", default="take_cover")
    ap.add_argument("--num-envs", default="16,32,64")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per N and run (their median is kept)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each tree, alternating")
    ap.add_argument("--decoding", default="exact", help="this checkout's decoding")
    ap.add_argument("--base-decoding", default=None, help="the base's decoding (default: --decoding)")
    ap.add_argument("--compile", action="store_true", help="this checkout's engine compiles its decode pass")
    ap.add_argument("--decode", action="store_true", help="decode frames to pixels too")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    ns = [int(n) for n in args.num_envs.split(",")]
    base_decoding = args.base_decoding or args.decoding
    tree = ROOT if args.base == "." else Path(tempfile.mkdtemp(prefix="step_ab_")) / "base"
    if tree != ROOT:
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), args.base], cwd=ROOT, check=True)
    try:
        runs = {"base": [], "this": []}
        for r in range(args.repeats):
            for name, path, decoding, compile in (("base", tree, base_decoding, False),
                                                  ("this", ROOT, args.decoding, args.compile)):
                runs[name].append(time_tree(path, args, ns, decoding, compile))
                print(f"run {r + 1}/{args.repeats} {name}: " + ", ".join(f"N={n} {v:.1f}" for n, v in
                                                                         runs[name][-1].items()), flush=True)
    finally:
        if tree != ROOT:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
            shutil.rmtree(tree.parent, ignore_errors=True)
    rows = []
    for n in ns:
        b = float(np.median([x[n] for x in runs["base"]]))
        t = float(np.median([x[n] for x in runs["this"]]))
        rows.append({"num_envs": n, "base_env_steps_per_s": round(b, 1), "this_env_steps_per_s": round(t, 1),
                     "ratio": round(t / b, 2)})
        print(rows[-1])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD" if args.base == "." else args.base], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    result = {"date": str(date.today()), "base": f"{args.base} ({commit})", "model": args.model,
              "threads": args.threads, "decoding": args.decoding, "compile": args.compile,
              "base_decoding": base_decoding, "decode_frames": args.decode,
              "steps": args.steps, "repeats": args.repeats, "cpu": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "rows": rows, "runs": runs}
    if args.out:
        from wham_gym.atomic import atomic_write
        atomic_write(args.out, lambda f: f.write(json.dumps(result, indent=1)), binary=False)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
