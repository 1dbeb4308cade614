"""Fidelity report of a trained model against the real game (issue 6).

    python benchmarks/fidelity.py --model wham_gym/assets/default --data data/dtc [--num 16]
    python benchmarks/fidelity.py --model MODEL --data data/mwh --scenario my_way_home

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
    from wham_gym.measure.fidelity import action_following, rollout_fidelity
    from wham_gym.train.data import frame_bank, split_sources, tokenize_episodes
    from wham_gym.train.reward import evaluate_reward_model, transitions
    from wham_gym.train.tokenizer import evaluate_tokenizer

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="the episodes the model was trained on (held-out split is used)")
    p.add_argument("--num", type=int, default=16, help="rollouts per horizon")
    p.add_argument("--scenario", default=None,
                   help="game for the action-following probes (default: the one the model was trained on)")
    p.add_argument("--starts", type=int, default=4, help="game starts for the action-following probes")
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
    scenario = args.scenario or model.card.get("scenario") or "my_way_home"
    following = action_following(model, scenario=scenario, seeds=range(args.seed, args.seed + args.starts),
                                 keep_frames=True)
    report["action_following"] = {k: v for k, v in following.items() if k not in ("game", "dream")}
    if model.reward_model is not None:
        with tempfile.TemporaryDirectory() as cache:  # tokens are a by-product, not a result
            tr = transitions(tokenize_episodes(model, val, cache, progress=False))
        report["reward_model"] = evaluate_reward_model(model.reward_model, tr, model.device)

    out = Path(args.out) / f"fidelity_{Path(args.model).name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    probes_png = out.with_name(f"action_following_{Path(args.model).name}.png")
    probe_picture(following, probes_png)
    t = report["tokenizer"]
    print(f"tokenizer reconstruction: PSNR {t['psnr']:.2f} dB, SSIM {t['ssim']:.3f}, codes used {t['codes_used']:.1%}")
    print("| horizon | PSNR (dB) | SSIM |\n|---:|---:|---:|")
    for h, m in report["rollout"].items():
        print(f"| {h} | {m['psnr']:.2f} | {m['ssim']:.3f} |")
    a = report["action_following"]
    print(f"action following in {a['scenario']} ({a['starts']} starts x {a['steps']} steps): "
          f"discrimination {a['discrimination']:.0%} (chance {1 / len(a['probes']):.0%})")
    print("| probe | game per step | dream per step |\n|---|---:|---:|")
    for name, m in a["per_step"].items():
        unit = "px shift" if name.startswith("turn") else "x zoom"
        print(f"| {name} | {m['game']:.3g} {unit} | {m['dream']:.3g} {unit} |")
    if "reward_model" in report:
        r = report["reward_model"]
        print(f"reward model: precision {r['reward_precision']:.2f}, recall {r['reward_recall']:.2f}; "
              f"termination precision {r['term_precision']:.2f}, recall {r['term_recall']:.2f}")
    print(f"wrote {out} and {probes_png}")
    return 0


def probe_picture(following: dict, path: Path, every: int = 2) -> None:
    """One row per probe: the game's frames, then the dream's, every ``every`` steps from the start."""
    from PIL import Image, ImageDraw

    game, dream = following["game"], following["dream"]
    cols = range(0, game.shape[1], every)
    rows = [np.concatenate([np.concatenate([seq[i, t] for t in cols], 1) for seq in (game, dream)], 1)
            for i in range(len(game))]
    img = Image.fromarray(np.concatenate(rows, 0))
    draw = ImageDraw.Draw(img)
    h, w = game.shape[2:4]
    for i, name in enumerate(following["probes"]):
        draw.text((4, i * h + 4), f"game: {name}", fill=(255, 255, 0))
        draw.text((len(cols) * w + 4, i * h + 4), f"dream: {name}", fill=(255, 255, 0))
    img.resize((img.width // 2, img.height // 2), Image.BILINEAR).save(path)


if __name__ == "__main__":
    raise SystemExit(main())
