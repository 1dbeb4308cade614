"""How faithful a trained model is to the real game (issue 6's fidelity report).

- tokenizer reconstruction PSNR/SSIM on held-out frames;
- rollouts: prompted with real frames, driven by the recorded actions, compared with
  the recorded continuation (the game replayed with the same actions from the same
  start) at chosen horizons; horizon 1 is next-frame prediction;
- action following: the horizontal image shift per step while turning, in game and dream;
- the reward model's precision/recall on held-out transitions.
"""

from __future__ import annotations

import numpy as np
import torch

from .engine import DreamEngine
from .metrics import psnr, ssim


def _chw(frames) -> torch.Tensor:
    """(N, H, W, 3) -> (N, 3, H, W)."""
    return torch.as_tensor(frames).permute(0, 3, 1, 2)


def real_windows(episodes, window: int, horizon: int, num: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``num`` random stretches of ``window + horizon`` recorded steps: frames (num, L, H, W, 3), actions (num, L, 16)."""
    rng = np.random.default_rng(seed)
    usable = [e for e in episodes if len(e) >= window + horizon]
    if not usable:
        raise ValueError(f"no episode has the {window + horizon} frames a rollout to horizon {horizon} needs")
    picks = [usable[i] for i in rng.integers(len(usable), size=num)]
    starts = [int(rng.integers(len(e) - window - horizon + 1)) for e in picks]
    L = window + horizon
    return (np.stack([e.frames()[s:s + L] for e, s in zip(picks, starts)]),
            np.stack([e.actions[s:s + L] for e, s in zip(picks, starts)]))


def live_windows(make_env, window: int, horizon: int, num: int, seed: int,
                 max_tries: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`real_windows`, but played now in a real game by the exploration policy.

    Episode k is played from ``reset(seed=seed + k)`` with ``ExplorePolicy(seed + k)``
    acting on the real frames, so every schedule measured against these windows faces the
    same game. Episodes that end before ``window + horizon`` frames are replaced by the
    next seed (at most ``max_tries`` episodes in all, default 4·num).
    """
    from . import controller
    from .games.explore import ExplorePolicy

    L = window + horizon
    max_tries = max_tries or 4 * num
    frames, actions = [], []
    env = make_env()
    try:
        for k in range(max_tries):
            if len(frames) == num:
                break
            policy = ExplorePolicy(seed=seed + k)
            obs, info = env.reset(seed=seed + k)
            fs, acts = [obs], []
            while len(fs) < L:
                a = controller.quantize(policy.act(obs, info))
                obs, _, terminated, truncated, info = env.step(a)
                acts.append(a)
                if terminated or truncated:
                    break
                fs.append(obs)
            if len(fs) == L:
                acts.append(np.zeros_like(acts[-1]))  # the last frame's action is never used
                frames.append(np.stack(fs))
                actions.append(np.stack(acts))
    finally:
        env.close()
    if len(frames) < num:
        raise ValueError(f"only {len(frames)} of {max_tries} games lasted the {L} steps a rollout to horizon "
                         f"{horizon} needs; lower --horizon or --num")
    return np.stack(frames), np.stack(actions).astype(np.float32)


@torch.no_grad()
def rollout_fidelity(model, episodes, horizons=(1, 10, 30, 60), num: int = 16, seed: int = 0,
                     temperature: float = 0.9) -> dict[int, dict[str, float]]:
    """PSNR/SSIM of dreamt frames against the recorded ones at each horizon, over ``num`` rollouts.

    ``episodes``: Episode objects (wham_gym.data). Each rollout starts at a random point of
    an episode long enough for the window plus the largest horizon.
    """
    H = max(horizons)
    eng = DreamEngine(model, num, temperature=temperature, seed=seed)
    W = eng.window
    frames, actions = real_windows(episodes, W, H, num, seed)
    eng.reset(None, frames=frames[:, :W], actions=actions[:, :W - 1])
    out: dict[int, dict[str, float]] = {}
    for h in range(1, H + 1):
        res = eng.step(actions[:, W - 2 + h])
        if h in horizons:
            real = _chw(frames[:, W - 1 + h])
            dream = _chw(res.frames.cpu())
            out[h] = {"psnr": float(psnr(dream, real).mean()), "ssim": float(ssim(dream, real).mean())}
    return out


def horizontal_shift(a: np.ndarray, b: np.ndarray, max_shift: int = 150, min_overlap: int = 100) -> float:
    """Pixels the view moved left between frames a and b (positive: content moved left, i.e. a right turn).

    The shift minimising the mean squared difference of the two frames' upper parts (walls
    and sky; the weapon and floor near the player don't move with the view), in grayscale.
    """
    def band(f):
        g = f[: int(f.shape[0] * 0.6)].astype(np.float64).mean(axis=2)
        return g - g.mean()

    ga, gb = band(a), band(b)
    width = ga.shape[1]
    best, best_err = 0, np.inf
    for s in range(-max_shift, max_shift + 1):
        if width - abs(s) < min_overlap:
            continue
        x, y = (ga[:, s:], gb[:, :width - s]) if s >= 0 else (ga[:, :s], gb[:, -s:])
        err = np.mean((x - y) ** 2)
        if err < best_err:
            best, best_err = s, err
    return float(best)


@torch.no_grad()
def action_following(model, scenario: str = "defend_the_center", steps: int = 10, seed: int = 0,
                     turn: float = 1.0) -> dict[str, float]:
    """Mean horizontal shift per step with right stick x = ``turn``, in the game and in the dream from the same start."""
    import gymnasium as gym

    env = gym.make("wham_gym/Doom-v0", scenario=scenario)
    obs, _ = env.reset(seed=seed)
    still = np.zeros(16, np.float32)
    frames, acts = [obs], []
    for _ in range(model.config.seq_len - 2):  # a real prompt window, standing still
        obs, *_ = env.step(still)
        frames.append(obs)
        acts.append(still)
    a = still.copy()
    a[14] = turn
    real = [frames[-1]]
    for _ in range(steps):
        obs, *_ = env.step(a)
        real.append(obs)
    env.close()
    eng = DreamEngine(model, 1, seed=seed)
    eng.reset(None, frames=np.stack(frames)[None], actions=np.stack(acts)[None])
    dream = [frames[-1]] + [eng.step(a[None]).frames[0].cpu().numpy() for _ in range(steps)]
    shift = lambda seq: float(np.mean([horizontal_shift(x, y) for x, y in zip(seq[:-1], seq[1:])]))  # noqa: E731
    return {"game_px_per_step": shift(real), "dream_px_per_step": shift(dream)}
