"""``wham-gym drift``: PSNR/SSIM of dream vs real against horizon, for each reinjection schedule."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..atomic import atomic_write


def register(sub) -> None:
    p = sub.add_parser("drift", help="measure drift against horizon with and without reinjection",
                       description="Rollouts from real windows of recorded episodes, driven by the recorded "
                                   "actions: reinjection off, every K in {5, 10, 20, 50}, retrieval every 10, "
                                   "and uncertainty-triggered (NLL above the no-reinjection run's 80th "
                                   "percentile). Writes OUT/drift_<model>.csv and .png and prints a table. "
                                   "Each finished schedule is kept, so an interrupted run resumes.")
    p.add_argument("--model", default="default")
    p.add_argument("--data", help="recorded episodes; the held-out split (as in training) is used")
    p.add_argument("--live", action="store_true",
                   help="play the truth now in ViZDoom (exploration policy on the real frames) instead of "
                        "replaying --data; the retrieval bank comes from --data if given, else from other games")
    p.add_argument("--scenario", default=None, help="ViZDoom scenario for --live (default: the one the model "
                                                   "card names, else defend_the_center)")
    p.add_argument("--horizon", type=int, default=200)
    p.add_argument("--num", type=int, default=8, help="rollouts per schedule")
    p.add_argument("--bank-frames", type=int, default=5000, help="training frames in the retrieval bank")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--set-default", metavar="SCHEDULE", default=None,
                   help="write the schedule envs use by default into the model directory's card.json: "
                        "'every K', 'nll' (above this run's 80th-percentile NLL), or 'every K or nll'")
    p.set_defaults(func=run_drift)


def run_drift(args: argparse.Namespace) -> int:
    import numpy as np

    from ..data.reader import load_episode
    from ..measure.drift import measure_all, summary, uncertainty_threshold, write
    from ..model import load_model
    from ..reinjection import RetrievalSource
    from ..train.data import frame_bank, split_sources

    if not args.live and not args.data:
        raise ValueError("give recorded episodes with --data, or --live to play the game now")
    model = load_model(args.model)
    if args.set_default is not None:
        recommendation(args.set_default, 0.0)  # a malformed spec fails now, not after the run
        card_file(model)
    episodes, windows = None, None
    if args.data:
        train, val = split_sources(args.data)
        episodes = [load_episode(s) for s in val]
        bank_frames = frame_bank(train, args.bank_frames, seed=args.seed).transpose(0, 2, 3, 1)
    if args.live:
        from functools import partial

        from ..measure.fidelity import live_windows
        from ..games.doom import DoomEnv

        scenario = args.scenario or model.card.get("scenario") or "defend_the_center"
        make_env = partial(DoomEnv, scenario=scenario)
        W = model.config.seq_len - 1
        windows = live_windows(make_env, W, args.horizon, args.num, args.seed)
        if not args.data:  # other games (seeds far from the measured ones), 100 frames each
            games = -(-args.bank_frames // 100)
            bank_frames = live_windows(make_env, 1, 99, games, args.seed + 100_000)[0].reshape(-1, 180, 300, 3)
            bank_frames = bank_frames[: args.bank_frames]
    bank = RetrievalSource(model, np.ascontiguousarray(bank_frames))
    name = model.card.get("name", Path(args.model).name)
    settings = {k: getattr(args, k) for k in ("model", "data", "live", "scenario", "horizon", "num",
                                              "bank_frames", "seed")}
    rows = measure_all(model, episodes, Path(args.out) / f".drift_{name}.parts", settings,
                       horizon=args.horizon, num=args.num, seed=args.seed, bank=bank, windows=windows)
    for path in write(rows, Path(args.out), name):
        print(f"wrote {path}")
    print(summary(rows))
    if args.set_default is not None:
        rec = recommendation(args.set_default, uncertainty_threshold(rows))
        path = card_file(model)
        card = json.loads(path.read_text())
        card["reinjection"] = {**rec, "measured": f"wham-gym drift, horizon {args.horizon}, {args.num} rollouts"}
        atomic_write(path, lambda f: json.dump(card, f, indent=2), binary=False)
        print(f"wrote the default schedule {rec} to {path}")
    return 0


def recommendation(spec: str, threshold: float) -> dict:
    """``card["reinjection"]`` for ``'every K'``, ``'nll'`` or ``'every K or nll'`` (``nll`` = ``threshold``)."""
    rec: dict = {}
    for part in (p.strip() for p in spec.split(" or ")):
        words = part.split()
        if words == ["nll"] and "nll_above" not in rec:
            rec["nll_above"] = round(threshold, 4)
        elif len(words) == 2 and words[0] == "every" and words[1].isdigit() and int(words[1]) > 0 and "every" not in rec:
            rec["every"] = int(words[1])
        else:
            raise ValueError(f"--set-default: expected 'every K', 'nll' or 'every K or nll', got {spec!r}")
    return rec


def card_file(model) -> Path:
    model_dir = getattr(model, "model_dir", None)
    if model_dir is None:
        raise ValueError("--set-default writes the model directory's card.json; this model has no directory "
                         "(convert an official checkpoint with `wham-gym convert` first)")
    return Path(model_dir) / "card.json"

