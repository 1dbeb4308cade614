"""How much of a take_cover death can the last frames foretell? A classifier's AUC, on tokens and on pixels.

The dream's termination reads what the world model sees: the image tokens of the last frames and the actions
taken. On agents' real play the GPT's own end probability ranks the deaths poorly (AUC 0.72-0.74,
benchmarks/results/end_risk_on_agents_play.json). Is that the GPT, or is the death not in the frames? Here a
classifier of "this step ends the episode" is trained directly, on real frames only, from

- ``tokens``: the K last frames' image tokens (the model's tokenizer) and the K last actions, embedded, an MLP;
- ``pixels``: the K last frames as 45x75 grayscale (4x4 mean-pooled) and the K last actions, a small CNN
  (what a tokenizer with more tokens could give at best).

Each recording's episodes are split once (20 % held out; 30 % for the ``--new`` recordings), the same split for
both views. Two training sets: the ``--blind`` recordings only, and the blind plus the ``--agents`` recordings.
Scores: AUC on the held-out episodes of each blind and agent recording, and on *every* episode of the ``--new``
recordings (agents no classifier saw: whether a termination learned from some agents' deaths ranks the next
agent's). With ``--view tokens`` a third row trains on everything and scores the new recordings' held-out part.

    python benchmarks/death_signal.py --view tokens --model take_cover --data-root data \\
        --out benchmarks/results/death_signal_tokens.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wham_gym.atomic import atomic_write  # noqa: E402
from wham_gym.train.reward import probability_metrics  # noqa: E402

BLIND = ["take_cover", "take_cover_jitter", "take_cover_sweep", "take_cover_still"]
AGENTS = ["take_cover_agent_s0_sampled", "take_cover_agent_s0_argmax", "take_cover_agent_s1_sampled",
          "take_cover_agent_s1_argmax"]
NEW = ["take_cover_agent_realrep4_argmax", "take_cover_agent_dreamrep4_argmax"]


def token_episodes(model_spec: str, folders: list[Path], cache: Path) -> list[list[tuple]]:
    """Per folder: (tokens (T, n) int64, action ids (T, 16) int64, terminated (T,)) per episode, real steps only."""
    from wham_gym import load_model
    from wham_gym.train.data import tokenize_episodes

    model = load_model(model_spec)
    out = []
    for folder in folders:
        eps = tokenize_episodes(model, sorted(str(p) for p in folder.glob("*.npz")), cache, end_frame="black",
                                progress=False)
        rows = []
        for e in eps:
            n = len(e.terminated) - (1 if e.ended else 0)  # the appended end frame is not a real step
            rows.append((e.tokens[:n].astype(np.int64), e.action_ids[:n].astype(np.int64), e.terminated[:n]))
        out.append(rows)
    return out


def pixel_episodes(folders: list[Path]) -> list[list[tuple]]:
    """Per folder: (frames (T, 45, 75) uint8 gray, actions (T, 16) float32, terminated (T,)) per episode."""
    out = []
    for folder in folders:
        rows = []
        for path in sorted(folder.glob("*.npz")):
            with np.load(path) as z:
                im = z["images"].astype(np.float32)  # (T, 3, 180, 300)
                gray = im.mean(1).reshape(len(im), 45, 4, 75, 4).mean((2, 4)).astype(np.uint8)
                rows.append((gray, z["actions"].astype(np.float32), z["terminated"].astype(bool)))
        out.append(rows)
    return out


def windows(episodes: list[tuple], k: int, neg_keep: float = 1.0, rng=None):
    """Every step's K last frames and actions (the first repeated before the start) and whether it ended."""
    xs, acts, ys = [], [], []
    for frames, actions, term in episodes:
        f = np.concatenate([np.repeat(frames[:1], k - 1, 0), frames])
        a = np.concatenate([np.repeat(actions[:1], k - 1, 0), actions])
        for t in range(len(term)):
            if not term[t] and neg_keep < 1 and rng.random() > neg_keep:
                continue  # fewer of the common case, to train faster (AUC does not depend on the class ratio)
            xs.append(f[t:t + k])
            acts.append(a[t:t + k])
            ys.append(term[t])
    return (torch.from_numpy(np.array(xs)), torch.from_numpy(np.array(acts)),
            torch.from_numpy(np.array(ys, np.float32)))


class TokenHead(nn.Module):
    def __init__(self, k: int, tokens: int, dim: int = 8, hidden: int = 256):
        super().__init__()
        self.tokens, self.actions = nn.Embedding(1024, dim), nn.Embedding(512, dim)
        self.mlp = nn.Sequential(nn.Linear(k * (tokens + 16) * dim, hidden), nn.GELU(), nn.Dropout(0.2),
                                 nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, x, a):
        return self.mlp(torch.cat([self.tokens(x).flatten(1), self.actions(a).flatten(1)], 1)).squeeze(-1)


class PixelHead(nn.Module):
    def __init__(self, k: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(k, 32, 5, 2, 2), nn.GELU(), nn.Conv2d(32, 64, 3, 2, 1), nn.GELU(),
                                  nn.Conv2d(64, 64, 3, 2, 1), nn.GELU(), nn.AdaptiveAvgPool2d((3, 5)), nn.Flatten())
        self.mlp = nn.Sequential(nn.Linear(64 * 15 + k * 16, 256), nn.GELU(), nn.Dropout(0.2), nn.Linear(256, 1))

    def forward(self, x, a):
        return self.mlp(torch.cat([self.conv(x.float() / 255), a.flatten(1)], 1)).squeeze(-1)


def fit_and_score(view: str, k: int, train: list[tuple], tests: dict, epochs: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    if view == "pixels":
        x, a, y = windows(train, k, 0.3, np.random.default_rng(1))
        head, batch = PixelHead(k), 256
    else:
        x, a, y = windows(train, k)
        head, batch = TokenHead(k, x.shape[2]), 512
    opt = torch.optim.AdamW(head.parameters(), 1e-3, weight_decay=1e-2)
    start = time.perf_counter()
    for _ in range(epochs):
        head.train()
        perm = torch.randperm(len(y))
        for i in range(0, len(y), batch):
            b = perm[i:i + batch]
            loss = nn.functional.binary_cross_entropy_with_logits(head(x[b], a[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    head.eval()
    scores = {}
    for name, episodes in tests.items():
        tx, ta, ty = windows(episodes, k)
        with torch.no_grad():
            p = torch.cat([torch.sigmoid(head(tx[i:i + 2048], ta[i:i + 2048])) for i in range(0, len(ty), 2048)])
        auc = probability_metrics(p.numpy(), ty.numpy())["term_auc"]  # ties share their rank
        scores[name] = {"auc": round(auc, 3), "q": round(float(p.mean()), 4),
                        "game": round(float(ty.mean()), 4), "steps": int(len(ty))}
    return {"train_windows": int(len(y)), "seconds": round(time.perf_counter() - start, 1), "scores": scores}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--view", choices=("tokens", "pixels"), required=True)
    ap.add_argument("--model", default="take_cover", help="the tokenizer's model (--view tokens)")
    ap.add_argument("--data-root", default="data", help="the folder holding the recordings named below")
    ap.add_argument("--blind", nargs="+", default=BLIND)
    ap.add_argument("--agents", nargs="+", default=AGENTS)
    ap.add_argument("--new", nargs="+", default=NEW)
    ap.add_argument("--k", type=int, default=4, help="frames and actions read")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--cache", default="runs/death-signal-token-cache")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.blind + args.agents + args.new
    folders = [Path(args.data_root) / n for n in names]
    missing = [str(f) for f in folders if not any(f.glob("*.npz"))]
    if missing:
        ap.error(f"no episodes (.npz) in {', '.join(missing)}; record them (agents/RESULTS.md has the commands)")
    loaded = (token_episodes(args.model, folders, Path(args.cache)) if args.view == "tokens"
              else pixel_episodes(folders))
    eps = dict(zip(names, loaded))
    rng = np.random.default_rng(0)
    train, held = {}, {}
    for name in names:  # one split, in this order, so both views hold out the same episodes
        idx = rng.permutation(len(eps[name]))
        cut = int(len(idx) * (0.3 if name in args.new else 0.2))
        held[name] = [eps[name][i] for i in idx[:cut]]
        train[name] = [eps[name][i] for i in idx[cut:]]
    tests = {**{n: held[n] for n in args.blind}, "agents (held out)": sum((held[n] for n in args.agents), []),
             **{f"{n} (all)": eps[n] for n in args.new}}
    rows = {
        "blind only": fit_and_score(args.view, args.k, sum((train[n] for n in args.blind), []), tests, args.epochs),
        "blind + agents": fit_and_score(args.view, args.k, sum((train[n] for n in args.blind + args.agents), []),
                                        tests, args.epochs),
    }
    if args.view == "tokens":
        rows["everything"] = fit_and_score(args.view, args.k, sum((train[n] for n in names), []),
                                           {f"{n} (held out)": held[n] for n in args.new}, args.epochs)
    result = {"view": args.view, "k": args.k, "epochs": args.epochs, "model": args.model, "rows": rows,
              "device": f"CPU ({platform.processor() or platform.machine()}), {args.threads} threads",
              "torch": torch.__version__, "date": date.today().isoformat()}
    atomic_write(args.out, lambda f: f.write(json.dumps(result, indent=2) + "\n"), binary=False)
    for label, row in rows.items():
        print(label, {n: s["auc"] for n, s in row["scores"].items()})
    return result


if __name__ == "__main__":
    main()
