"""Does a termination hazard rank the recording policies as the game does? Its body shared with the reward or not.

One model's tokenizer encodes every episode of several recordings (one recording policy each); the last
20 % of each recording's episodes are held out. Three hazards read the frame alone (``reads_action=False``,
the recipe's small size) and train the same steps on the rest:

- ``shared``: one body for reward and termination, the class-weighted reward regression beside the hazard's
  cross-entropy (what `train/reward.py` did before ``separate_termination``);
- ``own body``: the same losses, termination on a body of its own (what it does now);
- ``hazard only``: one body, no reward loss (the bound: nothing else shapes the features).

For each: the held-out AUC and, per recording, the episode length the hazard expects (1 / its mean
probability over the held-out steps) against the true mean length. Right ranks are what an agent in a
dream needs; the AUC alone does not show them.

    python benchmarks/hazard_body.py --model runs/tc-v10/model --data data/take_cover_still \\
        data/take_cover_jitter data/take_cover data/take_cover_sweep --out benchmarks/results/hazard_body.json
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from wham_gym.atomic import atomic_write
from wham_gym.data.episodes import read_episode
from wham_gym.measure.metrics import rank_correlation
from wham_gym.model import load_model
from wham_gym.model.reward_model import RewardModel, RewardModelConfig
from wham_gym.train.reward import HAZARD_SIZE, class_weights, probability_metrics

VARIANTS = {"shared": (False, 1.0), "own body": (True, 1.0), "hazard only": (False, 0.0)}  # separate, reward weight


def encode(model, folder: Path) -> list[dict]:
    out = []
    for f in tqdm(sorted(folder.glob("episode_*.npz")), desc=f"encode {folder.name}", leave=False):
        ep = read_episode(f)
        with torch.no_grad():
            tokens = model.encode_frames(ep.images.transpose(0, 2, 3, 1)).long()
        out.append({"tokens": tokens, "term": torch.from_numpy(ep.terminated.astype(np.float32)),
                    "reward": torch.from_numpy(ep.rewards.astype(np.float32))})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="whose tokenizer encodes the frames")
    ap.add_argument("--data", nargs="+", required=True, help="recordings, one policy each")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    train, held = [], {}
    for d in map(Path, args.data):
        eps = encode(model, d)
        n = int(0.8 * len(eps))
        train += eps[:n]
        held[d.name] = eps[n:]
    cat = {k: torch.cat([e[k] for e in train]) for k in ("tokens", "term", "reward")}
    _, w = class_weights(cat["reward"].numpy())
    w_reward = torch.from_numpy(w)
    no_action = torch.zeros(1, 16, dtype=torch.long)
    report = {"model": args.model, "date": date.today().isoformat(), "torch": torch.__version__,
              "device": f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
              "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "train_transitions": len(cat["term"]),
              "true_lengths": {k: float(sum(len(e["term"]) for e in v) / sum(float(e["term"].sum()) for e in v))
                               for k, v in held.items()},
              "variants": {}}
    for name, (separate, reward_weight) in VARIANTS.items():
        torch.manual_seed(0)
        net = RewardModel(RewardModelConfig(model.config.image_vocab_size, model.config.tokens_per_image,
                                            termination="hazard", reads_action=False,
                                            separate_termination=separate, **HAZARD_SIZE))
        opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.1)
        g = torch.Generator().manual_seed(0)
        for _ in tqdm(range(args.steps), desc=name, leave=False):
            i = torch.randint(0, len(cat["term"]), (args.batch_size,), generator=g)
            x = cat["tokens"][i]
            reward, logit = net(x, no_action.expand(len(i), -1), x)
            loss = (reward_weight * (w_reward[i] * (reward - cat["reward"][i]) ** 2).mean()
                    + F.binary_cross_entropy_with_logits(logit, cat["term"][i]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        row, ps, ts = {"expected_lengths": {}}, [], []
        with torch.no_grad():
            for rec, eps in held.items():
                x = torch.cat([e["tokens"] for e in eps])
                p = net.hazard(x).numpy()
                row["expected_lengths"][rec] = float(1 / p.mean())
                ps.append(p), ts.append(torch.cat([e["term"] for e in eps]).numpy() > 0.5)
        row.update(probability_metrics(np.concatenate(ps), np.concatenate(ts)))
        recs = list(held)
        row["rank_correlation"] = rank_correlation([row["expected_lengths"][r] for r in recs],
                                                   [report["true_lengths"][r] for r in recs])
        report["variants"][name] = row
        print(name, f"AUC {row['term_auc']:.3f}", {r: f"{v:.0f} (true {report['true_lengths'][r]:.0f})"
                                                   for r, v in row["expected_lengths"].items()},
              "rank correlation", row["rank_correlation"], flush=True)
    atomic_write(args.out, lambda f: json.dump(report, f, indent=2), binary=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
