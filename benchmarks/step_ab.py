"""Engine steps in this checkout against a git revision, in any engine modes, interleaved in one run.

Machines shared with others (a 2-core VM) drift by 10-20 % from one minute to the next, so
two speeds measured minutes apart say little about a change. This script checks the base
revision out into a temporary git worktree (or reads an exported tree, ``--base-dir``, where no
git history travels) and times the same engine steps (full windows,
``wham_gym.measure.benchmark.run_engine``, on ``--device``) for every arm, alternating fresh
subprocesses ABAB..., and reports each arm's median and its ratio to the first arm per N.

    python benchmarks/step_ab.py --base HEAD~1 --model take_cover --num-envs 16,32,64 --repeats 3
    python benchmarks/step_ab.py --base . --base-decoding exact --decoding diagonal   # two decodings, one tree
    python benchmarks/step_ab.py --base . --compile --model default    # the compiled decode pass against eager
    python benchmarks/step_ab.py --base d3f2a57 --model default --decode \\
        --arms base:exact,this:exact,this:exact+compile,this:diagonal+r5     # more than two arms, one run

An arm is TREE:MODE, TREE ``base`` (the ``--base`` revision) or ``this``, MODE an engine mode
(``wham_gym.measure.benchmark.parse_mode``: DECODING[+rK][+compile]); ratios are against the first arm.
A tree older than the engine's ``decoding`` / ``engine_kwargs`` arguments runs its plain exact mode.
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

from wham_gym.measure.benchmark import parse_mode

ROOT = Path(__file__).resolve().parents[1]

# Runs in each tree; prints {N: env-steps per second}.
_CHILD = r"""
import json, sys, torch
torch.set_num_threads({threads})
from wham_gym.measure.benchmark import run_engine
from wham_gym.model import load_model
model = load_model({model!r}, device={device!r})
# the plain exact mode passes no mode arguments, so trees older than them run too
mode = {{"decoding": {decoding!r}, "engine_kwargs": {kwargs!r}}}
if mode == {{"decoding": "exact", "engine_kwargs": {{}}}}:
    mode = {{}}
out = {{}}
for n in {ns!r}:
    # warm-up: the compile, and a whole refresh cycle so the timed steps hold re-prefills as in the long run
    k = {kwargs!r}.get("refresh_every", 1)
    s = run_engine(model, n, -(-{steps} // k) * k, warmup=max(2, k), decode={decode}, **mode)
    # every step does the same work: the median step; with a kept cache (refresh K) steps differ, so the
    # mean over whole refresh cycles (one re-prefill per K steps, as in the long run)
    out[n] = n / float(sorted(s)[len(s) // 2] if k == 1 else sum(s) / len(s))
print("RESULT " + json.dumps(out))
"""


def time_tree(tree: Path, args, ns: list[int], mode: str) -> dict[int, float]:
    decoding, kwargs = parse_mode(mode)
    code = _CHILD.format(threads=args.threads, model=args.model, ns=ns, steps=args.steps, decode=args.decode,
                         decoding=decoding, kwargs=kwargs, device=args.device)
    # the tree first; what PYTHONPATH held before (e.g. carried wheels) after it
    path = os.pathsep.join(x for x in (str(tree), os.environ.get("PYTHONPATH", "")) if x)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return {int(k): v for k, v in json.loads(line[len("RESULT "):]).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="HEAD", help="git revision to compare this checkout (its working tree) with; "
                                                   "'.': this checkout itself (to compare decodings)")
    ap.add_argument("--base-dir", type=Path, default=None,
                    help="a directory holding the base's wham_gym/ (e.g. `git archive REV wham_gym | tar -x -C DIR`), "
                         "instead of a worktree of --base: where no git history travels")
    ap.add_argument("--model", default="take_cover")
    ap.add_argument("--num-envs", default="16,32,64")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per N and run (their median is kept; "
                                                                 "with +rK whole refresh cycles, their mean)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each arm, alternating")
    ap.add_argument("--decoding", default="exact", help="this checkout's decoding")
    ap.add_argument("--base-decoding", default=None, help="the base's decoding (default: --decoding)")
    ap.add_argument("--compile", action="store_true", help="this checkout's engine compiles its decode pass")
    ap.add_argument("--decode", action="store_true", help="decode frames to pixels too")
    ap.add_argument("--device", default="cpu", help="the engines' device (cpu or cuda)")
    ap.add_argument("--arms", default=None, help="comma-separated TREE:MODE (TREE base or this), timed in turn; "
                                                 "default: base:BASE_DECODING and this:DECODING[+compile]")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    ns = [int(n) for n in args.num_envs.split(",")]
    if args.arms:
        arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    else:
        arms = [f"base:{args.base_decoding or args.decoding}",
                f"this:{args.decoding}" + ("+compile" if args.compile else "")]
    for arm in arms:
        tree_name, _, mode = arm.partition(":")
        try:
            parse_mode(mode)
        except ValueError as exc:
            ap.error(f"--arms {arm!r}: {exc}")
        if tree_name not in ("base", "this") or arms.count(arm) > 1:
            ap.error(f"--arms: expected distinct TREE:MODE with TREE base or this, got {arm!r}")
    if args.base_dir is not None:
        if not (args.base_dir / "wham_gym" / "__init__.py").is_file():
            ap.error(f"--base-dir: expected a directory holding wham_gym/__init__.py, got {args.base_dir}")
        tree = args.base_dir.resolve()
    else:
        tree = ROOT if args.base == "." else Path(tempfile.mkdtemp(prefix="step_ab_")) / "base"
    worktree = args.base_dir is None and tree != ROOT
    if worktree and any(a.startswith("base:") for a in arms):
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), args.base], cwd=ROOT, check=True)
    try:
        runs = {arm: [] for arm in arms}
        for r in range(args.repeats):
            for arm in arms:
                tree_name, _, mode = arm.partition(":")
                runs[arm].append(time_tree(tree if tree_name == "base" else ROOT, args, ns, mode))
                print(f"run {r + 1}/{args.repeats} {arm}: " + ", ".join(f"N={n} {v:.1f}" for n, v in
                                                                        runs[arm][-1].items()), flush=True)
    finally:
        if worktree and tree.exists():
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
        if worktree:
            shutil.rmtree(tree.parent, ignore_errors=True)
    med = {n: {arm: float(np.median([x[n] for x in runs[arm]])) for arm in arms} for n in ns}
    rows = []
    for n in ns:
        rows.append({"num_envs": n, "env_steps_per_s": {a: round(v, 2) for a, v in med[n].items()},
                     "ratio": {a: round(v / med[n][arms[0]], 2) for a, v in med[n].items()}})
        print(rows[-1])
    best = {arm: max(med[n][arm] for n in ns) for arm in arms}
    best_ratio = {a: round(v / best[arms[0]], 2) for a, v in best.items()}
    print("best N:", {a: round(v, 2) for a, v in best.items()}, "ratio of bests:", best_ratio)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD" if args.base == "." else args.base], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    base = str(args.base_dir) if args.base_dir is not None else f"{args.base} ({commit})"
    result = {"date": str(date.today()), "base": base, "model": args.model,
              "threads": args.threads, "device": args.device, "arms": arms, "decode_frames": args.decode,
              "best": {a: round(v, 2) for a, v in best.items()}, "ratio_of_bests": best_ratio,
              "steps": args.steps, "repeats": args.repeats, "cpu": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "rows": rows, "runs": runs}
    if args.out:
        from wham_gym.atomic import atomic_write
        atomic_write(args.out, lambda f: f.write(json.dumps(result, indent=1)), binary=False)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
