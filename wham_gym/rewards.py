"""Reward and termination for dreamed steps: batched torch callables, called once per vector step.

A reward function takes a :class:`StepContext` and returns a float tensor (N,);
a termination function returns a bool tensor (N,). Both run on the engine's
device and should stay there (no ``.item()``/``.cpu()``). A callable may declare
``needs_frames = False`` when it reads only tokens, so a ``tokens`` observation
mode can skip decoding; callables without that attribute are given frames.

A learned reward/termination model implements :class:`LearnedRewardModel`;
:class:`TokenRewardModel` adapts the one wham-gym trains (``wham-gym train``),
which envs use by default when their model ships one.

:class:`EpisodeSignals` is the env's part that turns a step into reward,
terminated and truncated: these callables (or their defaults), the time limit,
and the end of a real episode behind the dream.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .controller import to_wham
from .model.vocab import action_tokens
from .position import PositionProbe


@dataclass
class StepContext:
    """What reward and termination functions see after one vector step (all tensors on the engine's device).

    ``steps`` counts the steps of the current episode including this one (1 after the first).
    ``frames`` are at the observation size (180x300) or None when nothing asked for them.
    """

    tokens: torch.Tensor  # (N, tokens_per_image) long: the new frames' image tokens
    prev_tokens: torch.Tensor  # (N, tokens_per_image) long: the frames the actions were taken at
    frames: torch.Tensor | None  # (N, 180, 300, 3) uint8
    actions: torch.Tensor  # (N, 16) float32 controller vectors, clipped to the Box
    steps: torch.Tensor  # (N,) long
    nll: torch.Tensor  # (N,) the model's uncertainty about the frame it drew
    entropy: torch.Tensor  # (N,)
    cache: dict[Any, Any] = field(default_factory=dict)  # lets one model serve reward and termination in one pass
    # (N,) float64 uniforms in [0, 1), one per slot and step, for signals that are sampled (a termination hazard);
    # None: such a signal draws from torch's global generator.
    uniform: torch.Tensor | None = None
    # (N,) float64: the probability the new frame had of starting with the token a termination watches (one that
    # declares ``first_token``; the env has the engine report it); None when nothing watches one.
    first_token_prob: torch.Tensor | None = None

    @property
    def num_envs(self) -> int:
        return int(self.tokens.shape[0])


RewardFn = Callable[[StepContext], torch.Tensor]
TerminationFn = Callable[[StepContext], torch.Tensor]


def needs_frames(fn) -> bool:
    return bool(getattr(fn, "needs_frames", True))


class ZeroReward:
    """Reward 0 everywhere (the default: a dream has no score until a reward model is given)."""

    needs_frames = False

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        return torch.zeros(ctx.num_envs, dtype=torch.float32, device=ctx.tokens.device)


class NeverTerminate:
    """No episode ends by itself (the default; truncation at ``max_episode_steps`` still applies)."""

    needs_frames = False

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        return torch.zeros(ctx.num_envs, dtype=torch.bool, device=ctx.tokens.device)


class EndFrameTermination:
    """An episode ends when the world model draws its end frame.

    A model trained with ``Recipe(end_frame="black")`` saw a black frame after every death in its data, so its
    GPT learned P(next frame is the end | the last frames, the action): a death hazard that reads motion
    over the whole context and the action taken, which a hazard on one frame cannot (take_cover: 0.37 on the
    game's last frame before a death under "none", 0.20 / 0.26 under a strafe, 0.008 ten steps earlier;
    benchmarks/RESULTS.md). The dream's own decoding samples it; this reads what was drawn: a step ends when at
    least ``share`` of the new frame's image tokens are the end frame's.
    """

    needs_frames = False

    def __init__(self, model, share: float = 0.5):
        if not 0 < share <= 1:
            raise ValueError(f"share: expected a fraction in (0, 1], got {share}")
        recipe = (getattr(model, "card", None) or {}).get("recipe") or {}
        if recipe.get("end_frame") != "black":
            raise ValueError(f"{recipe.get('name') or 'this model'}: its recipe has end_frame "
                             f"{recipe.get('end_frame')!r}, so it never learned to draw an end frame and its dreams "
                             "would not end; train with Recipe(end_frame='black'), or end dreams by its termination")
        c = model.config
        black = np.zeros((1, c.frame_height, c.frame_width, 3), np.uint8)
        with torch.no_grad():
            self.end_tokens = model.encode_frames(black).reshape(-1).long()
        self.share = float(share)

    def drawn(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, tokens_per_image) image tokens -> (N,) bool: these frames are the end frame."""
        if self.end_tokens.device != tokens.device:  # once, on the first call from the engine's device
            self.end_tokens = self.end_tokens.to(tokens.device)
        return (tokens == self.end_tokens).float().mean(1) >= self.share

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        return self.drawn(ctx.tokens)


class Motion:
    """EndRiskTermination's memory: how far the player moved over the last ``lag`` steps, read off the frames.

    A :class:`~wham_gym.position.PositionProbe` reads each step's frame (the one the action was taken at, so a
    step that ends an episode is scored as on a recording, whose last frame has no successor); each slot keeps
    its last ``lag + 1`` readings, filled with the first one when an episode starts (``ctx.steps == 1``). The
    termination's log-odds gain ``weight * log1p(moved / scale)``: a negative weight makes a player who keeps
    moving safer, as take_cover's fireballs, aimed where the player stood ~1.5 s before, make him.

    ``max_step`` (map units; None: off) makes the track an odometer that skips jumps: a reading that moved more
    than ``max_step`` since the last one adds nothing to it. Why: a dream sometimes redraws the player elsewhere
    in one step (held at a wall with the end token banned, it draws him mid-room), which the plain reading counts
    as motion and an agent can learn to cause. On real take_cover frames the probe's reading moves > 120 units in
    0.1-0.3 % of steps (the game's largest true step is 69), in dreams in 0.5-2.3 % (agents/RESULTS.md).
    """

    def __init__(self, probe, lag: int = 15, scale: float = 50.0, weight: float = 0.0,
                 max_step: float | None = None):
        if not (isinstance(lag, int) and lag >= 1):
            raise ValueError(f"motion lag: expected a whole number of steps >= 1, got {lag!r}")
        if not scale > 0:
            raise ValueError(f"motion scale: expected a positive distance, got {scale!r}")
        if max_step is not None and not max_step > 0:
            raise ValueError(f"motion max_step: expected a positive distance in map units (or None: no limit), "
                             f"got {max_step!r}")
        self.probe, self.lag, self.scale, self.weight = probe, lag, float(scale), float(weight)
        self.max_step = None if max_step is None else float(max_step)
        self._history: torch.Tensor | None = None  # (N, lag + 1) track positions, oldest first
        self._last: torch.Tensor | None = None  # (N,) the last raw reading: the odometer's reference

    def log_odds(self, moved: torch.Tensor) -> torch.Tensor:
        return self.weight * torch.log1p(moved / self.scale)

    def track(self, ctx: StepContext) -> torch.Tensor:
        """Push this step's reading; -> (N,) float64 distance between it and the one ``lag`` steps before."""
        y = self.probe(ctx.prev_tokens).double()
        h = self._history
        if h is None or h.shape[0] != y.shape[0] or h.device != y.device:
            h = y[:, None].repeat(1, self.lag + 1)
        else:
            started = (ctx.steps == 1).to(y.device)
            at = y if self.max_step is None else h[:, -1] + self._skip_jumps(y - self._last)
            h = torch.where(started[:, None], y[:, None], torch.cat([h[:, 1:], at[:, None]], 1))
        self._history, self._last = h, y
        return (h[:, -1] - h[:, 0]).abs()

    def _skip_jumps(self, delta: torch.Tensor) -> torch.Tensor:
        return torch.where(delta.abs() > self.max_step, torch.zeros_like(delta), delta)

    def displacements(self, readings) -> np.ndarray:
        """One episode's probe readings (T,) -> (T,) the distance :meth:`track` reports at each of its steps
        (step t: from the track ``lag`` steps before, or at the episode's start, to the track at t). The fits
        read recorded episodes through it, so a dream and a fit see the same odometer."""
        y = np.asarray(readings, np.float64)
        if y.ndim != 1:
            raise ValueError(f"Motion.displacements: expected one episode's readings (T,), got shape {y.shape}")
        track = y
        if self.max_step is not None and len(y) > 1:
            d = np.diff(y)
            track = y[0] + np.concatenate(([0.0], np.cumsum(np.where(np.abs(d) > self.max_step, 0.0, d))))
        t = np.arange(len(y))
        return np.abs(track - track[np.maximum(t - self.lag, 0)])

    def card(self, probe_file: str) -> dict:
        out = {"probe": probe_file, "lag": self.lag, "scale": self.scale, "weight": self.weight}
        return out if self.max_step is None else {**out, "max_step": self.max_step}


class EndRiskTermination:
    """An episode ends with a sharpened form of the world model's own probability of drawing its end frame now.

    :class:`EndFrameTermination` lets the dream's decoding sample the end frame: a death at exactly the GPT's
    P(end | last frames, action). On take_cover that probability is too soft where a death is certain (0.37 on the
    game's last frame before a fireball hits a still player) and too high where none comes (0.01-0.05 a step
    elsewhere, the dream's background of deaths): a still player lives 72 dream steps against 44 in the game, and
    an agent learns to stand still. Here the engine reports that probability p every step (the end frame's first
    token, which no game frame starts with) and bans the token, so the frame drawn is the next frame given the
    episode goes on; the step ends with probability

        q = sigmoid(sharpness * (logit(p) - logit(center)))

    drawn from the step's signal uniform. ``sharpness=1, center=0.5`` is q = p: the drawn ends' rate. A sharpness
    above 1 pushes p above ``center`` toward a certain death and p below it toward none, keeping the GPT's ranking
    of danger; the two are fitted to the game's episode lengths under blind policies (benchmarks/end_risk.py).
    """

    needs_frames = False
    ban_first_token = True  # the env asks the engine not to draw it: the end is decided here

    def __init__(self, model, sharpness: float = 1.0, center: float = 0.5, motion: "Motion | None" = None):
        if not sharpness > 0:
            raise ValueError(f"sharpness: expected a positive number, got {sharpness!r}")
        if not 0 < center < 1:
            raise ValueError(f"center: expected a probability in (0, 1), got {center!r}")
        self.first_token = int(EndFrameTermination(model).end_tokens[0])  # refuses models without end frames
        self.sharpness, self.center = float(sharpness), float(center)
        self._center_logit = math.log(self.center / (1 - self.center))
        self.motion = motion

    def probability(self, p: torch.Tensor, moved: torch.Tensor | None = None) -> torch.Tensor:
        """The GPT's end probability p (N,) -> this termination's q (N,) float64; ``moved`` (N,): how far the
        player moved over the motion term's lag (required with one, ignored without)."""
        p = p.double().clamp(1e-12, 1 - 1e-12)
        z = self.sharpness * (torch.logit(p) - self._center_logit)
        if self.motion is not None:
            if moved is None:
                raise ValueError("this EndRiskTermination has a motion term: pass moved, the displacement over "
                                 f"its lag of {self.motion.lag} steps")
            z = z + self.motion.log_odds(moved.double())
        return torch.sigmoid(z)

    def step_probability(self, ctx: StepContext) -> torch.Tensor:
        """This step's q (N,) float64; pushes the step's reading into the motion term (once per step)."""
        if ctx.first_token_prob is None:
            raise ValueError("EndRiskTermination reads the engine's first-token probability: step it in a "
                             "WHAMVectorEnv (which has the engine watch its first_token), or call "
                             "engine.watch_first_token(term.first_token, ban=True) and pass first_token_prob")
        moved = self.motion.track(ctx) if self.motion is not None else None
        return self.probability(ctx.first_token_prob, moved)

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        q = self.step_probability(ctx)
        u = ctx.uniform if ctx.uniform is not None else torch.rand(q.shape, dtype=torch.float64, device=q.device)
        return u.to(q.device) < q


class MotionTermination(EndRiskTermination):
    """An episode ends by how far the player moved alone: q = sigmoid(bias + w * log1p(moved / scale)).

    Why without the GPT's end probability: agents trained in a dream ended by it learn to make the GPT draw fewer
    fireballs (a tc-m2 agent's end probability in its dreams is 0.0025 a step where the game-trained agent's is
    0.012-0.024; agents/RESULTS.md), a world-model error no fit to real frames can see. Where the player has been
    is read off the dreamt frames too, but only through the position probe, which an agent cannot talk into
    fewer fireballs. The end frame's first token is banned as in :class:`EndRiskTermination`, so the frames drawn
    are the episode's next ones; its probability is not read.
    """

    def __init__(self, model, bias: float, motion: Motion):
        if not isinstance(motion, Motion):
            raise ValueError(f"MotionTermination ends by a Motion term; got {motion!r}")
        if not math.isfinite(bias):
            raise ValueError(f"bias: expected a finite log-odds, got {bias!r}")
        super().__init__(model, motion=motion)  # the banned first token and __call__; sharpness, center unread
        self.bias = float(bias)

    def probability(self, p: torch.Tensor | None, moved: torch.Tensor | None = None) -> torch.Tensor:
        """``moved`` (N,) -> q (N,) float64; ``p`` is ignored (kept for EndRiskTermination's signature)."""
        if moved is None:
            raise ValueError(f"MotionTermination: pass moved, the displacement over {self.motion.lag} steps")
        return torch.sigmoid(self.bias + self.motion.log_odds(moved.double()))


class ExpectedEnds:
    """Risk or motion ends in expectation, for training in the dream: the termination to hand the env (it never
    ends an episode; the cap still truncates) with :attr:`reward`, the reward to hand it.

    Each step's reward r becomes ``r * (1 - q * horizon)``: q is the step's end probability under ``termination``
    (an :class:`EndRiskTermination` or :class:`MotionTermination`, read every step, its end token still banned)
    and ``horizon`` the steps of reward a death forfeits (``action_repeat / (1 - gamma)`` for a discounted learner
    deciding every ``action_repeat`` steps). To first order in q that is the sampled dream's expected return, with
    one drawn end per ~100 steps replaced by a graded cost every step (Dreamer weighs imagined returns by its
    continue head for the same reason). Why: PPO's value function explained nothing of the sampled motion ends'
    returns (explained variance ~0 over a whole run) and its policy stayed near uniform, so which preset its argmax
    picked changed from seed to seed (agents/RESULTS.md). :class:`LearnedRewardModel.expected_ends` does the same
    for a learned hazard.
    """

    needs_frames = False

    def __init__(self, termination: EndRiskTermination, reward_fn: RewardFn, horizon: float):
        if not isinstance(termination, EndRiskTermination):
            raise ValueError("expected ends read a risk or motion termination's end probability every step "
                             f"(EndRiskTermination, MotionTermination); got {termination!r}: give the dream "
                             "such ends (a card's risk or motion ends, or --dream-ends risk), or sample its ends")
        if not horizon > 0:
            raise ValueError(f"horizon: expected a positive number of steps, got {horizon!r}")
        self.termination, self.reward_fn, self.horizon = termination, reward_fn, float(horizon)
        self.first_token, self.ban_first_token = termination.first_token, True  # the env has the engine ban it

        def reward(ctx: StepContext) -> torch.Tensor:
            q = self.termination.step_probability(ctx)  # once a step: it pushes the motion term's reading
            return self.reward_fn(ctx).float() * (1.0 - q.float() * self.horizon)

        reward.needs_frames = needs_frames(reward_fn) or needs_frames(termination)  # it reads both
        self.reward = reward

    def __call__(self, ctx: StepContext) -> torch.Tensor:
        return torch.zeros(ctx.num_envs, dtype=torch.bool, device=ctx.tokens.device)


def parse_end_risk(text: str | None, flag: str = "--end-risk") -> list[float]:
    """'SHARPNESS,CENTER' -> [sharpness, center] for :class:`EndRiskTermination` (None: [1.0, 0.5], the drawn
    ends' rate), checked here; ``flag`` names the option in the error."""
    if text is None:
        return [1.0, 0.5]
    try:
        sharpness, center = (float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"{flag}: expected SHARPNESS,CENTER (two numbers, e.g. 3,0.2), got {text!r}") from None
    if not sharpness > 0 or not 0 < center < 1:
        raise ValueError(f"{flag}: expected a sharpness > 0 and a center in (0, 1), got {text!r}")
    return [sharpness, center]


def fit_end_risk(p, ended, iterations: int = 50) -> tuple[float, float]:
    """The (sharpness, center) under which :class:`EndRiskTermination` is calibrated on real transitions.

    ``p`` (M,): the GPT's end probability teacher-forced on recorded steps; ``ended`` (M,) bool: that step ended
    the episode. Maximum likelihood of ``ended ~ Bernoulli(sigmoid(a * logit p + b))`` by Newton's method (a
    two-parameter logistic regression), returned as ``sharpness = a``, ``center = sigmoid(-b / a)``. A fit to
    dreamt episode lengths (benchmarks/end_risk.py's grid) can pick a sharpness far above this one, which makes
    the states the GPT finds least dangerous nearly immortal (q ~ p**sharpness); fitted here, q is right on the
    real frames of every recording given, whatever the policy that played them.
    """
    a, b = _fit_logistic(p, ended, [], iterations)
    return a, 1 / (1 + math.exp(b / a))


def fit_motion_ends(ended, moved, scale: float = 50.0, iterations: int = 50) -> tuple[float, float]:
    """:class:`MotionTermination`'s (bias, weight), maximum likelihood on real transitions: ``ended`` (M,) bool,
    ``moved`` (M,) the probe's displacement over the motion lag before each step."""
    return _fit_logistic(None, ended, [_motion_feature(moved, ended, scale, "fit_motion_ends")], iterations)


def fit_end_risk_motion(p, ended, moved, scale: float = 50.0, iterations: int = 50) -> tuple[float, float, float]:
    """:func:`fit_end_risk` with :class:`Motion`'s term: ``moved`` (M,) is how far the player moved over the
    motion lag before each step (as the probe reads it, so its error is in the fit). -> (sharpness, center,
    weight): ``center`` is the p at which a player who did not move ends with probability 1/2."""
    a, b, weight = _fit_logistic(p, ended, [_motion_feature(moved, p, scale, "fit_end_risk_motion")], iterations)
    return a, 1 / (1 + math.exp(b / a)), weight


def _motion_feature(moved, beside, scale: float, fn: str) -> np.ndarray:
    """:class:`Motion`'s log1p(moved / scale) for the fits, ``moved`` checked against the array it sits beside."""
    moved = np.asarray(moved, np.float64)
    if moved.shape != np.shape(beside) or not np.isfinite(moved).all() or (moved < 0).any():
        raise ValueError(f"{fn}: expected moved (M,) finite distances >= 0 beside {np.shape(beside)}, "
                         f"got {moved.shape}")
    return np.log1p(moved / scale)


def _fit_logistic(p, ended, extra: list, iterations: int) -> tuple[float, ...]:
    """Newton's method for ended ~ Bernoulli(sigmoid(a * logit p + b + sum_k w_k * extra_k)) -> (a, b, *w);
    with ``p`` None, the model without its term -> (b, *w)."""
    y = np.asarray(ended, np.float64)
    if p is not None:
        p = np.clip(np.asarray(p, np.float64), 1e-12, 1 - 1e-12)
    if (p is not None and p.shape != y.shape) or y.ndim != 1:
        raise ValueError(f"fit_end_risk: expected p and ended of one shape (M,), got {np.shape(p)} and {y.shape}")
    if not 0 < y.sum() < len(y):
        raise ValueError(f"fit_end_risk: expected both ended and continued steps, got {int(y.sum())} ends in {len(y)}")
    x = np.stack(([np.log(p / (1 - p))] if p is not None else []) + [np.ones_like(y), *extra], 1)
    w = np.zeros(x.shape[1])
    if p is not None:
        w[0] = 1.0
    for _ in range(iterations):
        q = 1 / (1 + np.exp(-(x @ w)))
        hessian = (x * (q * (1 - q))[:, None]).T @ x + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hessian, x.T @ (y - q))
        w = w + step
        if np.abs(step).max() < 1e-10:
            break
    if p is not None and not w[0] > 0:
        raise ValueError(f"fit_end_risk: the ends do not rise with p (slope {w[0]:.3g}); the GPT's end probability "
                         "does not rank these steps, so no sharpened form of it can end them")
    return tuple(float(v) for v in w)


def card_ends(model, option: str | None = None) -> dict | None:
    """The ends a model's card recommends (``card["ends"]``), or with ``option`` the named alternative it also
    offers (``card["ends_options"][option]``, e.g. the shipped take_cover model's ``"motion-only"``); None when
    the card names no default ends. An option the card lacks is a ValueError naming those it has."""
    card = getattr(model, "card", None) or {}
    if option is None:
        return card.get("ends") or None
    options = card.get("ends_options") or {}
    if option not in options:
        have = ", ".join(repr(k) for k in options) or "none"
        raise ValueError(f"ends {option!r}: this model's card offers no such ends (its options: {have}); fit and "
                         "name some with benchmarks/end_motion.py --write-card ... --option NAME, or use its "
                         "default ends (no option)")
    return options[option]


def card_termination(model, option: str | None = None):
    """The termination a model's card recommends for its dreams (:func:`card_ends`), or None.

    ``{"kind": "risk", "sharpness": S, "center": C}``: :class:`EndRiskTermination` with the (S, C) fitted to the
    game (benchmarks/end_risk.py), and with ``"motion": {"probe": FILE, "lag": L, "scale": S, "weight": W}`` (and
    optionally ``"max_step": M``) its :class:`Motion` term, the probe read from FILE beside the card;
    ``{"kind": "motion", "bias": B, "motion": {...}}``: :class:`MotionTermination` (the motion term alone);
    ``{"kind": "drawn"}``: :class:`EndFrameTermination`. None when the card names none (and no ``option``): the
    env then ends dreams by the model's learned reward model, if it ships one.
    """
    ends = card_ends(model, option)
    if not ends:
        return None
    where = "card.json's ends" + (f"_options[{option!r}]" if option is not None else "")
    kind = ends.get("kind") if isinstance(ends, dict) else None
    if kind in ("risk", "motion"):
        motion = None
        if ends.get("motion"):
            m = ends["motion"]
            if not getattr(model, "model_dir", None):
                raise ValueError(f"this model's {where} has a motion term reading {m.get('probe')!r}, a file "
                                 "beside the card, but the model was not loaded from a directory")
            probe = PositionProbe.load(os.path.join(model.model_dir, m["probe"]))
            motion = Motion(probe, int(m["lag"]), float(m["scale"]), float(m["weight"]), m.get("max_step"))
        if kind == "motion":
            if motion is None:
                raise ValueError(f"this model's {where} is {ends!r}: kind 'motion' needs its 'motion' term")
            return MotionTermination(model, float(ends["bias"]), motion)
        return EndRiskTermination(model, ends["sharpness"], ends["center"], motion)
    if kind == "drawn":
        return EndFrameTermination(model)
    raise ValueError(f"this model's {where} is {ends!r}: expected {{'kind': 'risk', 'sharpness': S, "
                     "'center': C}}, {'kind': 'motion', 'bias': B, 'motion': {...}} or {'kind': 'drawn'}; "
                     "fix the card, or pass termination_fn to the env")


class LearnedRewardModel(ABC):
    """A model predicting reward and termination from a dreamed step; one forward pass serves both.

    Subclasses implement :meth:`predict`; ``model.reward`` and ``model.termination``
    are the callables to hand the env. ``uses_frames`` says whether :meth:`predict`
    reads frames (decoding needed) or only tokens.
    """

    uses_frames: bool = False
    termination_threshold: float = 0.5
    # True: the termination probability is a per-step hazard, and the step ends with that probability
    # (drawn from ``ctx.uniform``) rather than when it passes the threshold.
    sampled_termination: bool = False

    @abstractmethod
    def predict(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        """A step's context (frames are None unless ``uses_frames``) -> reward (N,) float, termination probability (N,)."""

    def _predicted(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        if self not in ctx.cache:
            ctx.cache[self] = self.predict(ctx)
        return ctx.cache[self]

    @property
    def reward(self) -> RewardFn:
        def reward(ctx: StepContext) -> torch.Tensor:
            return self._predicted(ctx)[0].float()

        reward.needs_frames = self.uses_frames
        return reward

    @property
    def termination(self) -> TerminationFn:
        def termination(ctx: StepContext) -> torch.Tensor:
            p = self._predicted(ctx)[1]
            if not self.sampled_termination:
                return p >= self.termination_threshold
            u = ctx.uniform if ctx.uniform is not None else torch.rand(p.shape, device=p.device)
            return u.to(p.device) < p

        termination.needs_frames = self.uses_frames
        return termination

    def expected_ends(self, horizon: float) -> tuple[RewardFn, TerminationFn]:
        """A hazard's ends in expectation, for training in the dream: (reward_fn, termination_fn).

        Episodes never end by themselves (the cap still truncates), and each step's reward r becomes
        ``r * (1 - p * horizon)``: p is the step's hazard and ``horizon`` the steps of reward a death
        forfeits (``1 / (1 - gamma)`` for a discounted learner). To first order in p that is the expected
        return of the sampled dream, with one sampled end per ~100 steps replaced by a graded cost every
        step (Dreamer weighs imagined returns by its continue head for the same reason).
        """
        if not self.sampled_termination:
            raise ValueError("expected ends need a termination hazard (a reward model trained with "
                             "termination='hazard'); this one classifies end frames")
        if not horizon > 0:
            raise ValueError(f"horizon: expected a positive number of steps, got {horizon!r}")

        def reward(ctx: StepContext) -> torch.Tensor:
            r, p = self._predicted(ctx)
            return r.float() * (1.0 - p.float() * horizon)

        reward.needs_frames = self.uses_frames
        return reward, NeverTerminate()


class TokenRewardModel(LearnedRewardModel):
    """wham-gym's trained reward model (:class:`~wham_gym.model.reward_model.RewardModel`) as env callables.

    It reads the tokens of the frame before and after each action, so pixel
    decoding is never needed for it.
    """

    uses_frames = False

    def __init__(self, net: torch.nn.Module):
        self.net = net
        self.sampled_termination = getattr(getattr(net, "config", None), "termination", "end_frame") == "hazard"

    def predict(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            reward, logit = self.net(ctx.prev_tokens, action_tokens(to_wham(ctx.actions)), ctx.tokens)
        if self.sampled_termination:
            logit = logit + self.net.config.hazard_offset  # its calibration to dreamt frames
        return reward.float(), torch.sigmoid(logit.float())


class EpisodeSignals:
    """Reward, terminated and truncated of each vector step: the env's episode signals as one part.

    Args:
        reward_fn, termination_fn: batched callables on a :class:`StepContext`; None: the learned
            reward model's when ``reward_model`` is given (a model's shipped net), else zero reward
            and no termination.
        max_episode_steps: truncate an episode after this many steps (None: never).
        reward_model: the :class:`~wham_gym.model.reward_model.RewardModel` the world model ships, or None.

    The three settings are plain attributes: changing one takes effect at the next step.
    """

    def __init__(self, reward_fn: RewardFn | None = None, termination_fn: TerminationFn | None = None,
                 max_episode_steps: int | None = None, reward_model: torch.nn.Module | None = None):
        if max_episode_steps is not None and (not isinstance(max_episode_steps, (int, np.integer)) or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps: expected a positive int or None, got {max_episode_steps!r}")
        if reward_model is not None:  # one wrapper, so reward and termination share its forward pass
            learned = TokenRewardModel(reward_model)
            reward_fn = reward_fn or learned.reward
            termination_fn = termination_fn or learned.termination
        self.reward_fn = reward_fn or ZeroReward()
        self.termination_fn = termination_fn or NeverTerminate()
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)

    @property
    def needs_frames(self) -> bool:
        """Whether either callable reads frames (else a ``tokens`` env need not decode)."""
        return needs_frames(self.reward_fn) or needs_frames(self.termination_fn)

    def __call__(self, ctx: StepContext, real_terminated: torch.Tensor, real_truncated: torch.Tensor):
        """(reward float, terminated bool, truncated bool), each (N,) on the tokens' device.

        ``real_terminated`` / ``real_truncated``: the real episode behind a slot's dream (replay,
        lockstep) ended, which ends the dream's episode too.
        """
        reward = _checked(self.reward_fn(ctx), ctx, "reward_fn").float()
        terminated = _checked(self.termination_fn(ctx), ctx, "termination_fn").bool() | real_terminated
        if self.max_episode_steps:
            truncated = ctx.steps >= self.max_episode_steps
        else:
            truncated = torch.zeros_like(terminated)
        return reward, terminated, truncated | real_truncated


def _checked(x, ctx: StepContext, name: str) -> torch.Tensor:
    """A user callable's output, checked once here: a tensor (N,), moved to the engine's device."""
    if not torch.is_tensor(x) or tuple(x.shape) != (ctx.num_envs,):
        raise ValueError(f"{name} must return a torch tensor of shape ({ctx.num_envs},), "
                         f"got {type(x).__name__} {tuple(getattr(x, 'shape', ()))}")
    return x.to(ctx.tokens.device)
