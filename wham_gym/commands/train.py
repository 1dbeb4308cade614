"""``wham-gym train``: tokenizer, world model, reward model, or the whole recipe at once."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("train", help="train WHAM-architecture models on recorded episodes",
                       description="Train on episodes in WHAM's dataset format (wham-gym record output, WHAM's "
                                   "sample .npz). Every stage checkpoints into RUN_DIR and a rerun resumes.")
    stages = p.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for name, help_ in (("all", "tokenizer, world model and reward model, then write one model directory"),
                        ("tokenizer", "the ViT-VQGAN image tokenizer only"),
                        ("world-model", "the GPT, given a trained tokenizer run"),
                        ("reward", "the reward/termination model, given a trained tokenizer run")):
        s = stages.add_parser(name, help=help_)
        s.add_argument("--data", required=True, nargs="+", metavar="PATH",
                       help="episodes (.npz) or folders of them; several recordings of one scenario may be given")
        s.add_argument("--run-dir", required=True, help="folder for checkpoints and caches (resumable)")
        if name == "all":
            s.add_argument("--out", required=True, help="model directory to write (config.json + safetensors)")
            s.add_argument("--overwrite", action="store_true")
        s.add_argument("--device", default="cuda" if _cuda() else "cpu")
        s.add_argument("--scale", type=float, default=1.0, help="multiply every stage's step count (quick trials)")
        s.add_argument("--name", default=None, help="model name written in its config and card (default: the "
                       "--out folder's name, e.g. runs/m1 -> m1; never the shipped model's wham-doom-small)")
        s.add_argument("--recipe", default=None, metavar="NAME|CARD",
                       help="a named recipe (default, take_cover), or the recipe a model card.json records (or a "
                            "model directory holding one), e.g. wham_gym/assets/default to reproduce the default")
        s.add_argument("--from-model", default=None, metavar="MODEL",
                       help="start the run from this trained model's weights (a name such as take_cover, or a model "
                            "directory; its card's recipe unless --recipe is given), e.g. to continue it on new play")
        s.add_argument("--more-steps", type=int, default=0, metavar="N",
                       help="train the GPT N steps more than the recipe says (with --from-model: continue it; its "
                            "learning-rate schedule stretches to the new total)")
        s.add_argument("--no-progress", action="store_true")
        s.set_defaults(func=run_train)
    s = stages.add_parser("calibrate-hazard", help="fit a hazard termination's offset so dreams end as often as "
                          "the recording's episodes (wham_gym.train.hazard)")
    s.add_argument("--model", required=True, help="model directory whose reward model is a hazard")
    s.add_argument("--data", required=True, help="the recording to match (its manifest's policy and lengths)")
    s.add_argument("--num-envs", type=int, default=16)
    s.add_argument("--steps", type=int, default=250, help="dream steps (the horizon of the fit)")
    s.add_argument("--temperature", type=float, default=0.9,
                   help="the dream temperature to fit for (the offset holds at that temperature)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="cuda" if _cuda() else "cpu")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(func=run_calibrate)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_train(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from pathlib import Path

    from ..model import SHIPPED, resolve_device
    from ..train.recipe import (Recipe, load_recipe, reward_stage, run_recipe, seed_run_dir, tokenizer_stage,
                                world_model_stage)

    resolve_device(args.device)  # a clear one-line error for --device cuda on a CPU-only torch
    if args.more_steps < 0:
        raise SystemExit(f"--more-steps: expected a number of GPT steps >= 0, got {args.more_steps}")
    source = None
    if args.from_model:
        source = SHIPPED.get(args.from_model, Path(args.from_model))
        if not (source / "card.json").is_file():
            raise SystemExit(f"--from-model: expected a shipped model ({', '.join(SHIPPED)}) or a model directory "
                             f"with a card.json (written by wham-gym train), got {args.from_model!r}")
    spec = args.recipe or (str(source) if source else None)
    recipe = load_recipe(spec) if spec else Recipe()
    if args.more_steps:
        wm = recipe.world_model_train
        recipe = replace(recipe, world_model_train=replace(wm, steps=wm.steps + args.more_steps))
    # Without --name the model is named after --out (a card's recipe names the model it came from).
    recipe = replace(recipe, name=args.name or None)
    recipe = recipe.scaled(args.scale) if args.scale != 1.0 else recipe
    progress = not args.no_progress
    run = Path(args.run_dir)
    args.data = args.data[0] if len(args.data) == 1 else args.data  # one folder keeps its manifest's name
    if source is not None:
        seeded = seed_run_dir(source, run, recipe)
        print(f"{run}: started from {source} ({', '.join(f'{k} at step {v}' for k, v in seeded.items()) or 'every stage already had checkpoints'})")
    if args.stage == "all":
        out = run_recipe(args.data, run, args.out, recipe, device=args.device, progress=progress, overwrite=args.overwrite)
        print(f"wrote {out}")
        return 0
    model = tokenizer_stage(args.data, run, recipe, args.device, progress)
    if args.stage == "world-model":
        world_model_stage(model, args.data, run, recipe, args.device, progress)
    elif args.stage == "reward":
        reward_stage(model, args.data, run, recipe, args.device, progress)
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    import json

    from ..model import load_model, resolve_device
    from ..train.hazard import calibrate_hazard, write_hazard_offset

    model = load_model(args.model, device=resolve_device(args.device))
    if not args.temperature > 0:
        raise SystemExit(f"--temperature must be > 0, got {args.temperature}")
    report = calibrate_hazard(model, args.data, num_envs=args.num_envs, steps=args.steps, seed=args.seed,
                              temperature=args.temperature, progress=not args.no_progress)
    write_hazard_offset(args.model, report)
    print(json.dumps(report))
    return 0

