"""``wham-gym dream`` and ``wham-gym demo``: dream rollouts from a prompt and write frames, videos and actions.

``dream`` exposes every choice (:func:`wham_gym.dream.dream` and
:func:`wham_gym.dream.export.export_dream` are the same job as Python functions);
``demo`` is the README's main job: four rollouts with the default model from the
prompts it ships, driven by the exploration policy.
"""

from __future__ import annotations

import argparse

import torch


def _common(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument("--model", default="default", help="preset, official .ckpt or model directory (default: default)")
    p.add_argument("--out", default=out, help=f"output folder (default: {out})")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sampling and the random policy (default: 0)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def register(sub) -> None:
    p = sub.add_parser(
        "dream", help="dream rollouts from a prompt and write PNG frames, GIF/MP4, actions.csv and a summary figure",
        description="Dream NUM rollouts of STEPS frames from one prompt in one batch. Frame 0 is the prompt's "
                    "last real frame. Writes OUT/dream_<k>/{frames,dream.gif,dream.mp4,summary.png}, "
                    "OUT/actions.csv, OUT/dream.npz and OUT/dream.json.")
    _common(p, "dream_output")
    p.add_argument("--prompt", nargs="+", default=None, metavar="P",
                   help="a dataset .npz, a recorded episode, a Demonstrator folder, or PNG files in order "
                        "(default: the prompts the model ships, one drawn under --seed)")
    p.add_argument("--start", type=int, default=None, help="index of the first prompt frame in the episode (default: 0)")
    p.add_argument("--context", type=int, default=None,
                   help="prompt frames (default: the model's window, 9 for WHAM's 10-step context)")
    p.add_argument("--steps", type=int, default=20, help="frames to dream (default: 20 = 2 s at 10 Hz)")
    p.add_argument("--actions", default="random",
                   help="actions.csv/.json, random (exploration policy), model (the model acts), "
                        "fixed:NAME=V,... (e.g. fixed:right_stick_x=1) or replay (the prompt episode's own; "
                        "renders the real continuation beside the dream) (default: random)")
    p.add_argument("--num", type=int, default=1, help="rollouts dreamt in parallel in one batch (default: 1)")
    p.add_argument("--temperature", type=float, default=0.9, help="sampling temperature (default: WHAM's 0.9)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--decoding", choices=("exact", "diagonal", "speculative"), default="exact",
                   help="exact (WHAM's order, default), diagonal (a frame's tokens one anti-diagonal per pass: "
                        "faster, approximate) or speculative (exact's tokens, fewer passes: drafts from the "
                        "previous frame, kept where the model's own draws confirm them)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the prefill and decode passes (same tokens; ~20 s of compiling first; "
                        "1.1-1.3x on a 2-core CPU, where it pays on runs longer than a few minutes; meant for GPUs)")
    p.add_argument("--upscale", type=int, nargs="*", default=[], metavar="S",
                   help="also write Lanczos-upscaled frames, e.g. --upscale 2 4; videos use the largest")
    p.add_argument("--playback-fps", type=int, default=10,
                   help="video frame rate, a multiple of 10; 30 fills in frames by cross-fading "
                        "(an approximation: the in-between frames are blends, not dreamt) (default: 10)")
    p.add_argument("--no-gif", action="store_true", help="skip the GIF")
    p.add_argument("--no-mp4", action="store_true", help="skip the MP4")
    p.add_argument("--no-summary", action="store_true", help="skip the summary figure")
    p.add_argument("--no-predicted", action="store_true",
                   help="do not sample the model's own action at each frame (saves 16 tokens per step)")
    p.add_argument("--resize-prompt", action="store_true", help="resize prompt frames of other sizes to the model's")
    p.set_defaults(func=run_dream)

    d = sub.add_parser("demo", help="dream a few rollouts with the default model and write frames and videos",
                       description="Dream NUM rollouts of STEPS frames with the default model from a prompt it "
                                   "ships, driven by the exploration policy, through `wham-gym dream`.")
    _common(d, "demo_output")
    d.add_argument("--steps", type=int, default=20, help="frames to dream per rollout (default: 20)")
    d.add_argument("--num", type=int, default=4, help="rollouts dreamt in parallel (default: 4)")
    d.set_defaults(func=run_demo)


def run_dream(args: argparse.Namespace) -> int:
    from ..dream.run import dream
    from ..dream.export import export_dream
    from ..model import load_model

    _check_out(args)
    model = load_model(args.model, device=args.device)
    result = dream(model, args.prompt, steps=args.steps, actions=args.actions, num=args.num, seed=args.seed,
                   context=args.context, start=args.start, predict=not args.no_predicted,
                   resize_prompt=args.resize_prompt, temperature=args.temperature, top_k=args.top_k,
                   top_p=args.top_p, decoding=args.decoding, compile=args.compile)
    out = export_dream(result, args.out, upscale_factors=args.upscale, gif=not args.no_gif, mp4=not args.no_mp4,
                       summary=not args.no_summary, playback_fps=args.playback_fps, overwrite=args.overwrite)
    _report(result, out)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from ..dream.run import dream
    from ..dream.export import export_dream
    from ..model import load_model

    _check_out(args)
    model = load_model(args.model, device=args.device)
    result = dream(model, None, steps=args.steps, actions="random", num=args.num, seed=args.seed)
    out = export_dream(result, args.out, upscale_factors=[2], overwrite=args.overwrite)
    _report(result, out)
    return 0


def _check_out(args) -> None:
    """Fail before loading anything if the output folder is taken."""
    from pathlib import Path

    if Path(args.out).exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it, or choose another --out")


def _report(result, out) -> None:
    from pathlib import Path

    i = result.info
    h, w = result.frames.shape[2:4]
    print(f"dreamt {i['num']} rollout(s) of {i['steps']} frames ({w}x{h}) with {i['model']} "
          f"at {i['env_frames_per_s']} env-frames/s on {i['device']}; actions: {i['actions']}")
    # What is on disk, not what was asked for (--no-gif/--no-mp4/--no-summary, or no video writer installed).
    per_dream = ", ".join(sorted(p.name for p in (Path(out) / "dream_0").iterdir()))
    top = ", ".join(sorted(p.name for p in Path(out).iterdir() if p.is_file()))
    print(f"wrote {out}/ (dream_<k>/{{{per_dream}}}; {top})")
