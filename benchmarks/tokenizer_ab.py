"""Tokenizer A/B: train tokenizer variants on the same frames and measure what a dream needs them to keep.

Per variant, on held-out episodes: PSNR / SSIM / codes used (the trainer's validation), whether the status
bar's tokens tell the player's health (a lookup table from the bottom token row to the health class, fitted on
training frames; balanced accuracy: damaged vs. full, and four health bands), and how many of the bright
pixels above the status bar (take_cover's fireballs) survive encode + decode.

    python benchmarks/tokenizer_ab.py --data data/take_cover data/take_cover_jitter --steps 2000 \\
        --variant plain:0 --variant hard:1.0 --out runs/tok-ab

A variant is NAME:HARD_WEIGHT[:HARD_FRACTION[:CODE_DECAY:CODE_THRESHOLD]]; the rest is the take_cover recipe.
``--evaluate NAME=DIR`` measures an already trained tokenizer (DIR holds its checkpoints) beside them.
Results go to OUT/results.json (rewritten after each variant; a finished variant is not retrained).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from wham_gym.atomic import atomic_write
from wham_gym.data.reader import load_episode
from wham_gym.model.vit_vqgan import ViTVQGAN
from wham_gym.train.data import split_sources
from wham_gym.train.recipe import load_recipe
from wham_gym.train.tokenizer import evaluate_tokenizer, train_tokenizer
from wham_gym.train.trainer import latest_checkpoint, load_checkpoint

BRIGHT = 200  # luminance of a fireball's pixels (walls, floor and monsters stay below ~160)
BANDS = (100, 75, 50)  # health bands: 100, 75-99, 50-74, below 50


def health_class(h: np.ndarray, bands: bool) -> np.ndarray:
    if not bands:
        return (h < 100).astype(int)
    return np.digitize(-h, [-b + 0.5 for b in BANDS])  # 100 -> 0, 75..99 -> 1, 50..74 -> 2, <50 -> 3


def labelled_frames(sources, per_episode: int):
    """Frames and their health, ``per_episode`` evenly spaced from each episode (deaths included)."""
    images, health = [], []
    for s in sources:
        ep = load_episode(s)
        names = list(ep.game_variable_names)
        idx = np.unique(np.linspace(0, len(ep.images) - 1, per_episode).astype(int))
        images.append(ep.images[idx])
        health.append(ep.game_variables[idx, names.index("health")])
    return np.concatenate(images), np.concatenate(health)


@torch.no_grad()
def tokens_of(tok, frames, batch=64):
    return torch.cat([tok.encode(torch.from_numpy(frames[i:i + batch])) for i in range(0, len(frames), batch)]).numpy()


def balanced_accuracy(truth, pred) -> float:
    return float(np.mean([np.mean(pred[truth == c] == c) for c in np.unique(truth)]))


def health_probe(train_tokens, train_h, val_tokens, val_h, cols: int, bands: bool) -> float:
    """Balanced accuracy of the best one status-bar token -> health-class lookup table (fitted on training frames;
    a token unseen there: the majority class). One token, not the whole row: with most codes in use a row of 10
    tokens is nearly unique and a table over rows would only measure its own sparsity."""
    ytr, yva = health_class(train_h, bands), health_class(val_h, bands)
    majority = Counter(ytr).most_common(1)[0][0]
    best = 0.0
    for col in range(train_tokens.shape[1] - cols, train_tokens.shape[1]):
        table = defaultdict(Counter)
        for t, y in zip(train_tokens[:, col], ytr):
            table[t][y] += 1
        pred = np.array([table[t].most_common(1)[0][0] if t in table else majority for t in val_tokens[:, col]])
        best = max(best, balanced_accuracy(yva, pred))
    return best


@torch.no_grad()
def bright_recall(tok, frames, tokens, hud_rows: int) -> float:
    """Share of the bright pixels above the status bar that are still bright (> 150) once the frames' tokens
    (``tokens_of(tok, frames)``) are decoded."""
    kept = total = 0
    for i in range(0, len(frames), 64):
        x = torch.from_numpy(frames[i:i + 64])
        r = tok.decode(torch.from_numpy(tokens[i:i + 64]))
        lum = x[:, :, :-hud_rows].float().mean(1)
        lum_r = r[:, :, :-hud_rows].float().mean(1)
        mask = lum > BRIGHT
        total += int(mask.sum())
        kept += int((lum_r[mask] > 150).sum())
    return kept / max(total, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--recipe", default="take_cover")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--max-frames", type=int, default=None, help="the frame bank (default: the recipe's)")
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--evaluate", action="append", default=[], help="NAME=DIR: a trained tokenizer's checkpoints")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    train_src, val_src = split_sources(args.data)
    probe_train = labelled_frames(train_src[:: max(1, len(train_src) // 200)], 8)
    probe_val = labelled_frames(val_src, 8)
    hud_rows = recipe.tokenizer.height - (recipe.tokenizer.grid[0] - 1) * recipe.tokenizer.patch_size

    def measure(tok, row):
        tok.eval()
        row.update(evaluate_tokenizer(tok, probe_val[0]))
        ttr, tva = tokens_of(tok, probe_train[0]), tokens_of(tok, probe_val[0])
        row["health_damaged_bacc"] = health_probe(ttr, probe_train[1], tva, probe_val[1], tok.cols, bands=False)
        row["health_bands_bacc"] = health_probe(ttr, probe_train[1], tva, probe_val[1], tok.cols, bands=True)
        row["bright_recall"] = bright_recall(tok, probe_val[0], tva, hud_rows)
        row["probe_frames"] = [len(probe_train[0]), len(probe_val[0])]
        return row

    def save(name, row):
        results[name] = row
        atomic_write(results_path, lambda f: f.write(json.dumps(results, indent=1)), binary=False)
        print(name, row, flush=True)

    for spec in args.evaluate:
        name, path = spec.split("=", 1)
        tok = ViTVQGAN(recipe.tokenizer)
        stem = latest_checkpoint(Path(path))
        info = load_checkpoint(stem, tok, None, restore_rng=False)
        save(name, measure(tok, {"checkpoint": str(stem), "steps": info.get("step")}))
    for spec in args.variant:
        name, *vals = spec.split(":")
        weight = float(vals[0]) if vals else 0.0
        fraction = float(vals[1]) if len(vals) > 1 else recipe.hard_pixel_fraction
        decay, threshold = (float(vals[2]), float(vals[3])) if len(vals) > 3 else (recipe.code_decay, recipe.code_threshold)
        if name in results and results[name].get("steps") == args.steps:
            print(name, "done:", results[name])
            continue
        cfg = replace(recipe.tokenizer_train, steps=args.steps, validate_every=args.steps)
        t0 = time.time()
        tok, _ = train_tokenizer(args.data, out / name, recipe.tokenizer, cfg,
                                 max_frames=args.max_frames or recipe.max_frames, code_usage=(decay, threshold),
                                 hard_pixels=(weight, fraction), end_frame=recipe.end_frame)
        save(name, measure(tok, {"steps": args.steps, "hard_weight": weight, "hard_fraction": fraction,
                                 "code_decay": decay, "code_threshold": threshold,
                                 "train_s": round(time.time() - t0)}))


if __name__ == "__main__":
    main()
