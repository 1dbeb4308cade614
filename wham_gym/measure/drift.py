"""Drift: how dreams depart from the real game with horizon, under each reinjection schedule.

Rollouts start from real windows of recorded episodes and are driven by the
recorded actions, so the recording is the ground truth at every step. Each
dreamt frame is scored before any reinjection replaces it (a reinjected step
is not counted as a perfect frame), and each schedule's cost is its
reinjections per 100 steps. All schedules see the same starts and seeds.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..engine import DreamEngine
from ..atomic import atomic_write
from .fidelity import real_windows
from .metrics import psnr, ssim
from ..prompts import fit_frames
from ..reinjection import Reinjection, ReplaySource, RetrievalSource, Schedule
from ..rollout import Rollout, run


@dataclass
class Policy:
    """A reinjection schedule and where its real frames come from: ``"replay"`` or ``"retrieval"``."""

    name: str
    schedule: Schedule
    source: str = "replay"


def default_policies(nll_above: float) -> list[Policy]:
    return [Policy("off", Schedule()), *[Policy(f"every {k}", Schedule(every=k)) for k in (5, 10, 20, 50)],
            Policy("retrieval every 10", Schedule(every=10), "retrieval"),
            Policy(f"nll > {nll_above:.3g}", Schedule(nll_above=nll_above)),
            Policy(f"every 20 or nll > {nll_above:.3g}", Schedule(every=20, nll_above=nll_above))]


@torch.no_grad()
def measure(model, episodes, policies: list[Policy], horizon: int = 100, num: int = 8, seed: int = 0,
            bank: RetrievalSource | None = None, progress: bool = True, windows=None,
            decoding: str = "exact", engine_kwargs: dict | None = None, each: bool = False) -> list[dict]:
    """Rows of (policy, horizon, psnr, ssim, nll, reinjections_per_100) averaged over ``num`` rollouts.

    ``each``: rows also hold ``psnr_each`` / ``ssim_each``, one value per rollout (for paired comparisons of
    two modes on the same windows).

    The truth is ``num`` random stretches of ``episodes``, or ``windows`` = (frames, actions)
    as :func:`~wham_gym.measure.fidelity.live_windows` plays them in a live game.
    ``engine_kwargs``: more :class:`DreamEngine` settings (e.g. ``refresh_every``).
    """
    W = model.config.seq_len - 1
    frames, actions = windows if windows is not None else real_windows(episodes, W, horizon, num, seed)
    num = len(frames)
    frames = fit_frames(frames, (model.config.frame_height, model.config.frame_width), where="real frames")
    rows = []
    truth = frames[:, W:W + horizon]  # the real frame at each horizon, scored against the dream's
    real_t = torch.from_numpy(truth).permute(0, 1, 4, 2, 3)
    for policy in policies:
        if policy.source == "retrieval" and bank is None:
            raise ValueError(f"policy {policy.name!r} needs a retrieval bank")
        replay = ReplaySource.from_windows(frames, actions, start=W - 1)  # drives the recorded actions
        source = replay if policy.source == "replay" else bank
        roll = Rollout(DreamEngine(model, num, seed=seed, decoding=decoding, **(engine_kwargs or {})),
                       Reinjection(source, policy.schedule))
        roll.reset(None, frames=frames[:, :W], actions=actions[:, :W - 1])
        traj = run(roll, horizon, actions[:, W - 1:], progress=progress, desc=policy.name)
        dream_t = torch.from_numpy(traj.frames).permute(0, 1, 4, 2, 3)
        cost = 100.0 * float(traj.reinjected.sum()) / (num * horizon)
        for h in range(1, horizon + 1):  # each dreamt frame scored before any reinjection replaced it
            p_h, s_h = psnr(dream_t[:, h - 1], real_t[:, h - 1]), ssim(dream_t[:, h - 1], real_t[:, h - 1])
            rows.append({"policy": policy.name, "horizon": h, "psnr": float(p_h.mean()), "ssim": float(s_h.mean()),
                         "nll": float(traj.nll[:, h - 1].mean()), "reinjections_per_100": cost})
            if each:
                rows[-1].update(psnr_each=p_h.tolist(), ssim_each=s_h.tolist())
    return rows


def uncertainty_threshold(rows: list[dict]) -> float:
    """The 80th percentile of the free-running ("off") per-step NLL: the model's own "unsure" line."""
    return float(np.percentile([r["nll"] for r in rows if r["policy"] == "off"], 80))


def measure_all(model, episodes, parts: Path | None = None, settings: dict | None = None, **kw) -> list[dict]:
    """Every default policy: "off" first, whose 80th-percentile NLL is the uncertainty threshold.

    Each policy's rows are kept in ``parts`` as it finishes, so a run interrupted
    after hours resumes at the next policy; ``settings`` (whatever defines the
    measurement) must match the kept ones, or the kept rows are discarded.
    """
    kept: dict[str, list[dict]] = {}
    if parts is not None:
        parts.mkdir(parents=True, exist_ok=True)
        key = json.dumps(settings or {}, sort_keys=True)
        stamp = parts / "settings.json"
        if stamp.exists() and stamp.read_text() == key:
            kept = {f.stem: json.loads(f.read_text()) for f in parts.glob("policy_*.json")}
        else:
            for f in parts.glob("policy_*.json"):
                f.unlink()
            atomic_write(stamp, lambda f: f.write(key), binary=False)

    def run(i: int, policy: Policy) -> list[dict]:
        if f"policy_{i}" in kept:
            print(f"{policy.name}: kept from an earlier run ({parts})")
            return kept[f"policy_{i}"]
        rows = measure(model, episodes, [policy], **kw)
        if parts is not None:
            atomic_write(parts / f"policy_{i}.json", lambda f: json.dump(rows, f), binary=False)
        return rows

    rows = run(0, default_policies(0)[0])
    for i, policy in enumerate(default_policies(uncertainty_threshold(rows))[1:], start=1):
        rows += run(i, policy)
    return rows


def write(rows: list[dict], out: Path, name: str) -> list[Path]:
    """CSV of every row, and a PNG of PSNR/SSIM against horizon per policy (when matplotlib is installed)."""
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / f"drift_{name}.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the plot (pip install matplotlib)")
        return [csv_path]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for policy in dict.fromkeys(r["policy"] for r in rows):
        sel = [r for r in rows if r["policy"] == policy]
        label = f"{policy} ({sel[0]['reinjections_per_100']:.0f}/100)"
        for ax, key in zip(axes, ("psnr", "ssim")):
            ax.plot([r["horizon"] for r in sel], [r[key] for r in sel], label=label)
    for ax, key in zip(axes, ("PSNR (dB)", "SSIM")):
        ax.set_xlabel("horizon (steps)")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"dream vs real, {name} (legend: reinjections per 100 steps)")
    fig.tight_layout()
    png = out / f"drift_{name}.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return [csv_path, png]


def summary(rows: list[dict], horizons=(1, 10, 50, 100, 200)) -> str:
    """A markdown table: PSNR/SSIM (mean over a window of 5 steps ending at each horizon) per policy."""
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    H = max(r["horizon"] for r in rows)
    hs = [h for h in horizons if h <= H]
    lines = ["| policy | reinj./100 | " + " | ".join(f"h={h}" for h in hs) + " |",
             "|---|---:|" + "---:|" * len(hs)]
    for p in policies:
        sel = {r["horizon"]: r for r in rows if r["policy"] == p}
        cells = []
        for h in hs:
            win = [sel[k] for k in range(max(1, h - 4), h + 1)]
            cells.append(f"{np.mean([r['psnr'] for r in win]):.1f} / {np.mean([r['ssim'] for r in win]):.2f}")
        lines.append(f"| {p} | {sel[1]['reinjections_per_100']:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
