"""Calibrate a termination hazard to the dream: one log-odds offset so dreams end as often as the game.

A hazard model (:mod:`wham_gym.model.reward_model`, ``termination="hazard"``) is calibrated on real
frames, but it is sampled on dreamt ones, and dreamt frames drift toward what looks dangerous to it
(the world model draws the hits, seldom the end). Measured on take_cover v4: under the data policy the
hazard fires about 1.3x too often in the dream. One offset added to its logit fixes the *level*; what
the hazard responds to (health, a fireball close, the action) is left as trained.

The fit needs no episodes to end: N dreams run under the recording's policy with termination off,
the hazard's logits are kept, and the expected episode length for an offset ``b`` is the sum of the
survival probabilities ``prod_{s<t} (1 - sigmoid(logit_s + b))`` (the dream's frames do not depend on
whether an end was drawn before, so this is exact up to the horizon; past it the last steps' mean hazard
is extended geometrically). ``b`` is then bisected so that length equals the recording's mean episode
length. A policy other than the data's (e.g. a new preset every step) is the out-of-sample check.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..atomic import atomic_write
from ..controller import to_wham
from ..env import WHAMVectorEnv
from ..games.explore import BLIND, make_policy
from ..model.vocab import action_tokens
from ..rewards import StepContext


def dream_hazard_logits(model, policy: str, *, num_envs: int = 16, steps: int = 250, seed: int = 0,
                        temperature: float = 0.9, progress: bool = True) -> np.ndarray:
    """(steps, num_envs) hazard logits of never-ending dreams at ``temperature`` driven by a recording policy."""
    net = model.reward_model
    if net is None or net.config.termination != "hazard":
        raise ValueError("this model has no hazard reward model (train one with Recipe(termination='hazard'))")
    logits = []

    def never(ctx: StepContext) -> torch.Tensor:
        with torch.no_grad():
            logits.append(net(ctx.prev_tokens, action_tokens(to_wham(ctx.actions)), ctx.tokens)[1].float().cpu())
        return torch.zeros(ctx.num_envs, dtype=torch.bool, device=ctx.tokens.device)

    never.needs_frames = False
    env = WHAMVectorEnv(num_envs, model, max_episode_steps=None, obs_mode="tokens", termination_fn=never,
                        temperature=temperature)
    env.reset(seed=seed)
    policies = [make_policy(policy, seed=seed + i) for i in range(num_envs)]
    for _ in tqdm(range(steps), desc="hazard in the dream", disable=not progress, leave=False):
        env.step(np.stack([p.act(None) for p in policies]))
    env.close()
    return torch.stack(logits).numpy()


def expected_length(logits: np.ndarray, offset: float = 0.0, tail: int = 50) -> float:
    """Mean over dreams of the expected episode length (steps) if the hazard's logit were ``logits + offset``."""
    h = 1.0 / (1.0 + np.exp(-(np.asarray(logits, np.float64) + offset)))
    survival = np.cumprod(1.0 - h, axis=0)  # alive after each step
    steps = 1.0 + survival[:-1].sum(0)  # E[L] = sum over t >= 0 of P(alive after t steps)
    beyond = survival[-1] / h[-tail:].mean(0)  # past the horizon: geometric at the last steps' mean hazard
    return float((steps + beyond).mean())


def fit_offset(logits: np.ndarray, target: float, lo: float = -8.0, hi: float = 8.0) -> float:
    """The offset whose expected length is ``target`` (the length falls as the offset grows)."""
    if not expected_length(logits, hi) <= target <= expected_length(logits, lo):
        raise ValueError(f"no offset in [{lo}, {hi}] gives a mean episode length of {target:.1f} steps")
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expected_length(logits, mid) > target else (lo, mid)
    return (lo + hi) / 2


def recording_stats(data) -> tuple[str, float]:
    """(policy, mean episode length in steps) of a recording, from its manifest (the first of several)."""
    folder = Path(data if isinstance(data, (str, Path)) else data[0])
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        raise ValueError(f"{folder}: no manifest.json; calibrating a hazard needs a wham-gym recording (its policy "
                         "and episode lengths)")
    m = json.loads(manifest.read_text())
    return m["policy"], float(np.mean([e["frames"] for e in m["episodes"]]))


def calibration_unavailable(data) -> str | None:
    """Why a hazard cannot be calibrated against ``data`` (no manifest, a policy that looks), or None."""
    try:
        policy, _ = recording_stats(data)
    except ValueError as e:
        return str(e)
    if policy not in BLIND:
        return (f"the recording's policy {policy!r} looks at the game, which a dream cannot show it; calibrate "
                f"against a recording made with one of {', '.join(BLIND)}")
    return None


def calibrate_hazard(model, data, *, num_envs: int = 16, steps: int = 250, seed: int = 0,
                     temperature: float = 0.9, progress: bool = True) -> dict:
    """Fit the hazard offset of ``model`` to the recording ``data`` for dreams at ``temperature`` and set it on
    its reward model.

    Returns the report (also kept in the reward model's config as ``hazard_offset`` and ``hazard_temperature``).
    The offset holds for that temperature: a hotter dream's noisier frames look more dangerous to the hazard."""
    reason = calibration_unavailable(data)  # also checks the manifest recording_stats reads
    if reason:
        raise ValueError(reason)
    policy, target = recording_stats(data)
    logits = dream_hazard_logits(model, policy, num_envs=num_envs, steps=steps, seed=seed, temperature=temperature,
                                 progress=progress)
    offset = fit_offset(logits, target)
    model.reward_model.config.hazard_offset = offset
    model.reward_model.config.hazard_temperature = float(temperature)
    return {"policy": policy, "recorded_mean_length": target, "offset": offset, "temperature": float(temperature),
            "dream_mean_length_before": expected_length(logits),
            "dream_mean_length_after": expected_length(logits, offset),
            "num_envs": num_envs, "steps": steps, "seed": seed}


def write_hazard_offset(model_dir, report: dict) -> None:
    """Record a calibration in a model directory: the offset in reward.json, the report in card.json (each
    written atomically)."""
    fitted = {"hazard_offset": report["offset"], "hazard_temperature": report["temperature"]}
    for name, update in (("reward.json", lambda d: d.update(fitted)),
                         ("card.json", lambda d: d.update(hazard_calibration=report))):
        path = Path(model_dir) / name
        doc = json.loads(path.read_text())
        update(doc)
        atomic_write(path, lambda f, doc=doc: f.write(json.dumps(doc, indent=2)), binary=False)
