"""``wham-gym demo``: a short batched dream with the default model, written to disk.

The README's main job. Several dreams advance together in one DreamEngine from the
model's prompt frames, driven by the persistent exploration policy; frames go out as
PNGs with the actions as CSV.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import numpy as np
import torch


def register(sub) -> None:
    p = sub.add_parser("demo", help="dream a few rollouts with the default model and write PNG frames",
                       description="Dream NUM rollouts of STEPS frames in one batch and write "
                                   "OUT/env<k>/frame_<t>.png, OUT/sheet.png and OUT/actions.csv.")
    p.add_argument("--model", default="default", help="preset, .ckpt or model directory (default: default)")
    p.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    p.add_argument("--steps", type=int, default=20, help="frames to dream per rollout (default: 20)")
    p.add_argument("--num", type=int, default=4, help="rollouts dreamt in parallel (default: 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .. import controller
    from ..engine import DreamEngine
    from ..games.explore import ExplorePolicy
    from ..model import load_model
    from ..prompts import make_prompt_bank

    if args.steps < 1 or args.num < 1:
        raise ValueError(f"--steps and --num must be >= 1, got {args.steps} and {args.num}")
    out = Path(args.out)
    if out.exists():
        if not args.overwrite:
            raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
        shutil.rmtree(out)
    model = load_model(args.model, device=args.device)
    c = model.config
    engine = DreamEngine(model, args.num, seed=args.seed)
    # Real frames from the prompt episodes the model ships (a gray frame for presets), one window each.
    prompts = make_prompt_bank(None, model).sample(np.random.default_rng(args.seed), args.num, engine.window,
                                                   size=(c.frame_height, c.frame_width))
    P = min(len(p.frames) for p in prompts)
    engine.reset(None, frames=np.stack([p.frames[-P:] for p in prompts]),
                 actions=np.stack([p.actions[len(p.actions) - (P - 1):] for p in prompts]) if P > 1 else None)
    policies = [ExplorePolicy(seed=args.seed + k) for k in range(args.num)]
    frames = [engine.model.decode_tokens(engine.images[:, -1]).cpu().numpy()]
    actions = []
    for _ in tqdm(range(args.steps), desc="dreaming", unit="step"):
        a = np.stack([p.act(f, {}) for p, f in zip(policies, frames[-1])])
        actions.append(controller.quantize(a))
        frames.append(engine.step(a).frames.cpu().numpy())
    _write(out, np.stack(frames, 1), np.stack(actions, 1))
    print(f"wrote {args.num} dreams of {args.steps} frames ({c.frame_width}x{c.frame_height}) to {out}/")
    return 0


def _write(out: Path, frames: np.ndarray, actions: np.ndarray) -> None:
    """frames (K, T+1, H, W, 3): prompt frame then dreamt ones; actions (K, T, 16)."""
    from PIL import Image

    from ..controller import ACTION_NAMES

    K, T1 = frames.shape[:2]
    for k in range(K):
        (out / f"env{k}").mkdir(parents=True)
        for t in range(T1):
            Image.fromarray(frames[k, t]).save(out / f"env{k}" / f"frame_{t:04d}.png")
    cols = min(T1, 10)
    step = max(1, T1 // cols)
    rows = [np.concatenate(list(frames[k, ::step][:cols]), axis=1) for k in range(K)]
    Image.fromarray(np.concatenate(rows, axis=0)).save(out / "sheet.png")
    with open(out / "actions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["env", "step", *ACTION_NAMES])
        for k in range(K):
            for t in range(actions.shape[1]):
                w.writerow([k, t, *[f"{v:g}" for v in actions[k, t]]])
