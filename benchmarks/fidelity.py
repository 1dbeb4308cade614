"""Fidelity report of a trained model against the real game (issue 6).

    python benchmarks/fidelity.py --model wham_gym/assets/default --data data/dtc [--num 16]

Uses the held-out episodes (the same hash split as training), prints a table and
writes benchmarks/results/fidelity_<model>.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch


def main(argv=None) -> int:
    from wham_gym import load_model
    from wham_gym.data.reader import load_episode
    from wham_gym.fidelity import action_following, rollout_fidelity
    from wham_gym.train.data import frame_bank, split_sources, tokenize_episodes
    from wham_gym.train.reward import evaluate_reward_model, transitions
    from wham_gym.train.tokenizer import evaluate_tokenizer

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="the episodes the model was trained on (held-out split is used)")
    p.add_argument("--num", type=int, default=16, help="rollouts per horizon")
    p.add_argument("--scenario", default="defend_the_center")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    model = load_model(args.model)
    _, val = split_sources(args.data)
    report = {"model": args.model, "card_name": model.card.get("name"), "held_out_episodes": len(val)}
    report["tokenizer"] = evaluate_tokenizer(model.tokenizer, frame_bank(val, 512, seed=args.seed))
    episodes = [load_episode(s) for s in val]
    report["rollout"] = rollout_fidelity(model, episodes, num=args.num, seed=args.seed)
    report["action_following"] = action_following(model, scenario=args.scenario, seed=args.seed)
    if model.reward_model is not None:
        with tempfile.TemporaryDirectory() as cache:  # tokens are a by-product, not a result
            tr = transitions(tokenize_episodes(model, val, cache, progress=False))
        report["reward_model"] = evaluate_reward_model(model.reward_model, tr, model.device)

    out = Path(args.out) / f"fidelity_{Path(args.model).name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    t = report["tokenizer"]
    print(f"tokenizer reconstruction: PSNR {t['psnr']:.2f} dB, SSIM {t['ssim']:.3f}, codes used {t['codes_used']:.1%}")
    print("| horizon | PSNR (dB) | SSIM |\n|---:|---:|---:|")
    for h, m in report["rollout"].items():
        print(f"| {h} | {m['psnr']:.2f} | {m['ssim']:.3f} |")
    a = report["action_following"]
    print(f"turning (right stick x = +1): game {a['game_px_per_step']:.1f} px/step, dream {a['dream_px_per_step']:.1f} px/step")
    if "reward_model" in report:
        r = report["reward_model"]
        print(f"reward model: precision {r['reward_precision']:.2f}, recall {r['reward_recall']:.2f}; "
              f"termination precision {r['term_precision']:.2f}, recall {r['term_recall']:.2f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
