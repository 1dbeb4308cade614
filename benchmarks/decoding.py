"""Exact against approximate dreaming, in one run: engine speed, and fidelity against the live game.

A mode is a decoding (``exact``, ``diagonal``, ``speculative``), optionally with ``+rK``: the engine's
``refresh_every=K`` (the window's keys and values kept for K steps, only the new frame appended, instead of
re-prefilling the whole window every step). The first mode is the one the others are measured against.

Speed: env-frames/s of engine steps with full windows (frames decoded) at each N.
Fidelity: the same live games (played now by the exploration policy, as ``wham-gym drift --live``),
the same prompts, actions and seeds for every mode; PSNR/SSIM of the dreamt frames against the
game's at each horizon, no reinjection; and the action-following probes (turn / walk) with their
discrimination (which of the game's probe continuations each dreamt one is closest to).

    python benchmarks/decoding.py --model default --scenario defend_the_center --num-envs 8,16 \\
        --windows 8 --horizon 10 --out benchmarks/results/decoding_default.json
    python benchmarks/decoding.py --modes exact,diagonal,exact+r5,diagonal+r5 ...
    python benchmarks/decoding.py --num-envs none --windows 32 --modes exact,diagonal+r5   # fidelity only
    python benchmarks/decoding.py --num-envs none --windows 0 --probe-seeds 0,1,2,3 ...     # the probes only

Each mode's PSNR/SSIM is also compared with the first mode's window by window (the same games, prompts,
actions and seeds): the mean paired difference and its 95 % interval at every horizon, ``paired`` in the output.
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
from wham_gym.measure.benchmark import parse_mode, run_engine
from wham_gym.measure.drift import Policy, measure
from wham_gym.measure.fidelity import action_following, live_windows
from wham_gym.measure.metrics import ci95
from wham_gym.model import load_model
from wham_gym.reinjection import Schedule


def speed(model, n: int, steps: int, decoding: str, kw: dict) -> float:
    """env-frames/s of engine steps with full windows, frames decoded (warm-up: one step, or a whole refresh
    cycle so that the timed steps hold as many re-prefills as appends in the long run)."""
    return n * steps / float(np.sum(run_engine(model, n, steps, warmup=kw.get("refresh_every", 1), decode=True,
                                               decoding=decoding, engine_kwargs=kw)))


def paired(a, b) -> dict:
    """Mean of a - b over the same windows, with its 95 % interval (finite values only: +inf PSNR of equal frames
    has no difference)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    return {"mean": round(float(d.mean()), 3), "ci95": [round(x, 3) for x in ci95(d)], "windows": int(d.size)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--scenario", default="defend_the_center")
    ap.add_argument("--num-envs", default="8,16", help="comma-separated N for the speed table; 'none': fidelity only")
    ap.add_argument("--modes", default="exact,diagonal",
                    help="comma-separated DECODING[+rK]; the first is the reference of the speed-ups")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per N and mode (with +rK: a multiple of K "
                                                         "times its re-prefills fairly)")
    ap.add_argument("--windows", type=int, default=8, help="live windows scored for PSNR/SSIM; 0: the probes only")
    ap.add_argument("--horizon", type=int, default=10)
    ap.add_argument("--probe-seeds", default="0,1")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    try:
        modes = {m: parse_mode(m) for m in args.modes.split(",") if m}  # mode -> (decoding, engine settings)
    except ValueError as exc:
        ap.error(str(exc))
    if not modes:
        ap.error("--modes: give at least one mode")
    first = next(iter(modes))
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model)
    result = {"date": str(date.today()), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "cpu": platform.processor() or platform.machine(), "model": model.config.name,
              "scenario": args.scenario, "windows": args.windows, "probe_seeds": args.probe_seeds, "speed": [],
              "fidelity": {}, "paired": {}, "probes": {}}
    for n in [] if args.num_envs == "none" else map(int, args.num_envs.split(",")):
        row = {"num_envs": n, **{m: round(speed(model, n, args.steps, *modes[m]), 3) for m in modes}}
        row["speedup"] = {m: round(row[m] / row[first], 2) for m in modes if m != first}
        result["speed"].append(row)
        print(row, flush=True)
    W = model.config.seq_len - 1
    windows = live_windows(lambda: gym.make("wham_gym/Doom-v0", scenario=args.scenario), W, args.horizon,
                           args.windows, seed=0) if args.windows else None
    seeds = tuple(map(int, args.probe_seeds.split(",")))
    reference = {}  # the first mode's rows, with per-window values, by horizon
    for m, (d, kw) in modes.items():
        rows = [] if windows is None else measure(  # --windows 0: the probes only
            model, None, [Policy("off", Schedule())], horizon=args.horizon, num=args.windows, windows=windows,
            progress=False, decoding=d, engine_kwargs=kw, each=True)
        result["fidelity"][m] = {r["horizon"]: {"psnr": round(r["psnr"], 3), "ssim": round(r["ssim"], 4)}
                                 for r in rows}
        if m == first:
            reference = {r["horizon"]: r for r in rows}
        else:  # this mode minus the first, window by window
            result["paired"][m] = {r["horizon"]: {k: paired(r[f"{k}_each"], reference[r["horizon"]][f"{k}_each"])
                                                  for k in ("psnr", "ssim")} for r in rows}
        probes = action_following(model, scenario=args.scenario, seeds=seeds, decoding=d, engine_kwargs=kw)
        conf = np.asarray(probes["psnr_dream_vs_game"])  # probe x game continuation, mean PSNR
        result["probes"][m] = {"discrimination": probes["discrimination"], "per_step": probes["per_step"],
                               "recognised_per_start": probes["recognised_per_start"],
                               "psnr_own_probe": round(float(np.diag(conf).mean()), 3),
                               "psnr_dream_vs_game": probes["psnr_dream_vs_game"]}
        print(m, result["fidelity"][m].get(1), result["fidelity"][m].get(args.horizon),
              {k: v for k, v in result["probes"][m].items() if k != "psnr_dream_vs_game"}, flush=True)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        atomic_write(args.out, lambda f: f.write(text), binary=False)


if __name__ == "__main__":
    main()
