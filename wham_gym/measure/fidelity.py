"""How faithful a trained model is to the real game (issue 6's fidelity report).

- tokenizer reconstruction PSNR/SSIM on held-out frames;
- rollouts: prompted with real frames, driven by the recorded actions, compared with
  the recorded continuation (the game replayed with the same actions from the same
  start) at chosen horizons; horizon 1 is next-frame prediction;
- action following: from the same start, game and dream take probe actions (walk, turn);
  the image shift (turning) and magnification (walking) per step, and whether each dreamt
  continuation is closest to the game's under the same action;
- the reward model's precision/recall on held-out transitions.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import controller
from ..data.windows import sample_windows
from ..engine import DreamEngine
from ..rollout import Rollout, run
from .metrics import psnr, ssim
from ..games.explore import ExplorePolicy


def _chw(frames) -> torch.Tensor:
    """(N, H, W, 3) -> (N, 3, H, W)."""
    return torch.as_tensor(frames).permute(0, 3, 1, 2)


def real_windows(episodes, window: int, horizon: int, num: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``num`` random stretches of ``window + horizon`` recorded steps: frames (num, L, H, W, 3), actions (num, L, 16)."""
    L = window + horizon
    try:
        which, starts, _ = sample_windows([len(e) for e in episodes], L, num, np.random.default_rng(seed))
    except ValueError:
        raise ValueError(f"no episode has the {L} frames a rollout to horizon {horizon} needs") from None
    picks = [episodes[i] for i in which]
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
    roll = Rollout(DreamEngine(model, num, temperature=temperature, seed=seed))
    W = roll.engine.window
    frames, actions = real_windows(episodes, W, H, num, seed)
    roll.reset(None, frames=frames[:, :W], actions=actions[:, :W - 1])
    dreamt = run(roll, H, actions[:, W - 1:]).frames
    out: dict[int, dict[str, float]] = {}
    for h in sorted(horizons):
        real, dream = _chw(frames[:, W - 1 + h]), _chw(dreamt[:, h - 1])
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


def zoom_factor(a: np.ndarray, b: np.ndarray, scales: np.ndarray | None = None) -> float:
    """How much frame b's content is magnified about the image centre relative to a (>1: moved forward).

    The scale minimising the mean squared difference, in grayscale, over the central
    region every candidate scale can see, above the weapon (which does not scale).
    """
    scales = np.linspace(0.7, 1.6, 91) if scales is None else np.asarray(scales, np.float64)
    ga = torch.from_numpy(a.astype(np.float32).mean(axis=2))[None, None]
    gb = torch.from_numpy(b.astype(np.float32).mean(axis=2))
    h, w = gb.shape
    ys, xs = torch.linspace(-1, 1, h), torch.linspace(-1, 1, w)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    inner = float(scales.min())
    # Pixels of b whose source in a lies inside a for every scale; rows below 70 % hold the weapon.
    keep = (yy.abs() <= inner) & (xx.abs() <= inner) & (yy <= 0.4)
    s = torch.from_numpy(scales).float()[:, None, None]
    grid = torch.stack([xx / s, yy / s], dim=-1)  # b's pixel at r came from a's pixel at r / scale
    warped = torch.nn.functional.grid_sample(ga.expand(len(scales), 1, h, w), grid, align_corners=True)[:, 0]
    diff = (warped - gb)[:, keep]
    err = (diff - diff.mean(dim=1, keepdim=True)).pow(2).mean(dim=1)  # blind to a uniform brightness change
    return float(scales[int(err.argmin())])


# The probe actions of the action-following test: (name, controller index, stick value).
WALK, TURN = controller.index_of("left_stick_y"), controller.index_of("right_stick_x")
# Turning at right stick x = -/+0.375, bin middles (3 deg/tic in Doom, about 35 px a step): -/+0.5 bins
# asymmetrically, to -0.375 and +0.625, so before 2026-12-01 the left probe turned slower than the right.
# (At 5 deg/tic the shift estimator below aliases on the maze's repeating textures.)
PROBES = (("still", None, 0.0), ("forward", WALK, -1.0), ("backward", WALK, 1.0),
          ("turn left", TURN, -0.375), ("turn right", TURN, 0.375))
# take_cover's actions: strafing at full stick (left stick x = -/+1) shifts the far wall sideways.
STRAFE = controller.index_of("left_stick_x")
STRAFE_PROBES = (("still", None, 0.0), ("strafe left", STRAFE, -1.0), ("strafe right", STRAFE, 1.0))
SIDEWAYS = (TURN, STRAFE)  # probes measured by horizontal shift; the others by zoom


def _probe_action(index, value) -> np.ndarray:
    a = np.zeros(16, np.float32)
    if index is not None:
        a[index] = value
    return a


def _game_rollouts(scenario: str, seed: int, prompt_steps: int, steps: int, probes=PROBES,
                   env_kwargs: dict | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """The prompt (standing still) and each probe's continuation, all from the same start of the game."""
    import gymnasium as gym

    env = gym.make("wham_gym/Doom-v0", scenario=scenario, **(env_kwargs or {}))
    still, runs = _probe_action(None, 0.0), []
    try:
        for _, index, value in probes:
            obs, _ = env.reset(seed=seed)  # the game is deterministic: every probe starts from the same state
            prompt = [obs] + [env.step(still)[0] for _ in range(prompt_steps - 1)]
            a = _probe_action(index, value)
            runs.append(np.stack([prompt[-1]] + [env.step(a)[0] for _ in range(steps)]))
    finally:
        env.close()
    return np.stack(prompt), runs


@torch.no_grad()
def action_following(model, scenario: str = "my_way_home", steps: int = 10, seeds=(0, 1, 2, 3),
                     keep_frames: bool = False, decoding: str = "exact", probes=PROBES,
                     env_kwargs: dict | None = None, engine_kwargs: dict | None = None) -> dict:
    """Does the dream answer the controller like the game does?

    From each start (a game seed, then a real prompt window of standing still), the game
    and the dream each take every probe action (still, forward, backward, turn left,
    turn right) for ``steps`` steps. Reported, averaged over the starts:

    - the horizontal image shift per step while turning and the magnification per step
      while walking, in game and dream;
    - discrimination: for each probe, which of the game's continuations the dream's is
      closest to (mean PSNR over the steps, averaged over the starts); accuracy 1/len(PROBES)
      is chance, and a dream that ignores actions scores about that;
    - recognised_per_start: [probes recognised, decisions], the same decided start by start
      (len(PROBES) x starts decisions: a count with a binomial error, where discrimination
      moves in steps of 1/len(PROBES)).

    ``keep_frames`` adds the first start's frames, ``game`` and ``dream`` (probe, step, H, W, 3),
    for a picture. ``probes``: :data:`PROBES` (walk, turn) or :data:`STRAFE_PROBES` (take_cover);
    ``env_kwargs`` go to the game (e.g. ``render_hud``, as the model's data was recorded; the shift is
    measured on the frames' upper part, above a status bar). ``engine_kwargs`` go to the dream's
    :class:`DreamEngine` (e.g. ``refresh_every``, ``context_steps``).
    """
    k = len(probes)
    confusion = np.zeros((k, k))
    hits = 0  # probes recognised start by start (each start's own closest game continuation)
    moves = {name: {"game": [], "dream": []} for name, *_ in probes}
    kept = {}
    actions = np.stack([_probe_action(i, v) for _, i, v in probes])
    for seed in seeds:
        prompt, game = _game_rollouts(scenario, seed, model.config.seq_len - 1, steps, probes, env_kwargs)
        roll = Rollout(DreamEngine(model, k, seed=seed, decoding=decoding, **(engine_kwargs or {})))
        roll.reset(None, frames=np.repeat(prompt[None], k, 0), actions=np.zeros((k, len(prompt), 16), np.float32))
        dreamt = run(roll, steps, np.repeat(actions[:, None], steps, 1)).frames
        dream = np.concatenate([np.repeat(prompt[None, -1:], k, 0), dreamt], 1)  # (k, steps + 1, H, W, 3)
        if keep_frames and not kept:
            kept = {"game": np.stack(game), "dream": dream}
        start = np.zeros((k, k))
        for i, (name, index, _) in enumerate(probes):
            for j in range(k):
                start[i, j] = psnr(_chw(dream[i, 1:]), _chw(game[j][1:])).mean().item()
        confusion += start / len(seeds)
        hits += int((start.argmax(axis=1) == np.arange(k)).sum())
        for i, (name, index, _) in enumerate(probes):
            measure = horizontal_shift if index in SIDEWAYS else zoom_factor
            for src, seq in (("game", game[i]), ("dream", dream[i])):
                moves[name][src].append(np.mean([measure(x, y) for x, y in zip(seq[:-1], seq[1:])]))
    per_step = {name: {src: float(np.mean(v)) for src, v in m.items()} for name, m in moves.items()}
    return {"scenario": scenario, "steps": steps, "starts": len(seeds), "probes": [p[0] for p in probes],
            "per_step": per_step, "psnr_dream_vs_game": confusion.round(3).tolist(),
            "discrimination": float(np.mean(confusion.argmax(axis=1) == np.arange(k))),
            "recognised_per_start": [hits, k * len(seeds)], **kept}
