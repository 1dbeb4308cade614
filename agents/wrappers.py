"""The two worlds an agent meets, behind identical wrappers so one policy runs in both.

    base VecEnv     N dreams in one WHAMVecEnv (one batched engine), or N Doom games (Dummy/SubprocVecEnv)
    VecMonitor      episode returns and lengths in the world's own reward, before any wrapper touches them
    VecActionRepeat (``action_repeat`` > 1) each decision held for K steps of the world, rewards summed
    VecTokenizerView  (real game, optional) frames encoded and decoded by the world model's tokenizer, so the
                    agent sees the game as the dream draws it
    VecLatentView   (``observe="latent"``, both worlds) each frame as the tokenizer's quantised latent grid: the
                    dream hands over image tokens (no pixels decoded), the real game frames (encoded here)
    VecRescaleAction  the agent acts in [-1, 1]^16; mapped onto the controller Box (buttons [0, 1], sticks [-1, 1])
    VecScaleReward  training reward times ``reward_scale`` (after VecMonitor: episode statistics stay in the world's unit)
    VecResize       (pixels) 180x300 frames downscaled (bilinear, antialiased) to ``obs_size``, optionally gray
    VecFrameStack   the last K frames (or latent grids) stacked on the channel axis (SB3's)
    VecActionHistory  (``action_history`` > 0, latent only) the agent's own last K decisions appended to the
                    flattened observation: which way it has been going, which a coarse latent shows late

SB3 adds ``VecTransposeImage`` (channel-first for its CNN) by itself, at training and at ``predict``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial
from typing import Sequence

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.vec_env import (DummyVecEnv, SubprocVecEnv, VecEnv, VecEnvWrapper, VecFrameStack,
                                              VecMonitor)

from wham_gym import controller
from wham_gym.prompts import WHAM_SIZE, default_prompt_bank, fit_frames
from wham_gym.reinjection import LockstepSource, Reinjection, RetrievalSource, Schedule
from wham_gym.rewards import EndFrameTermination, EndRiskTermination
from wham_gym.action_sets_sb3 import VecAxesActions, VecDiscreteActions
from wham_gym.sb3 import ConcatVecEnv, WHAMVecEnv, sharded_dreams, split_envs

DEFAULT_SCENARIO = "defend_the_center"  # what the default model was trained on (its card.json)
DEFAULT_MAX_STEPS = 300  # the default model's recordings were capped at 300 steps per episode
OBSERVATIONS = ("pixels", "latent")


def parse_obs_size(text: str | None) -> tuple[int, int] | None:
    """``"72x120"`` -> (72, 120) (height x width); ``None``, ``""``, ``"full"`` -> None (keep 180x300)."""
    if text is None or str(text).lower() in ("", "full", "none"):
        return None
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"obs size: expected HEIGHTxWIDTH such as 72x120 (or 'full'), got {text!r}") from None
    if not (1 <= h <= WHAM_SIZE[0] and 1 <= w <= WHAM_SIZE[1]):
        raise ValueError(f"obs size: {h}x{w} must lie within the frames' 180x300 (downscaling only)")
    return h, w


@dataclass(frozen=True)
class Wrapping:
    """What the agent sees and how it acts: downscale to ``obs_size`` (None: 180x300), stack ``frame_stack`` frames,
    ``rescale`` actions from [-1, 1], or act through ``action_set``'s presets (``Discrete(n)``) or, with
    ``action_axes``, a small ``Box`` over its axes (for SAC); ``grayscale``
    frames (one channel); ``reward_scale`` multiplies the reward the agent learns from (not the returns reported).
    :data:`RAW` is the bare world (full frames, controller actions)."""

    obs_size: tuple[int, int] | None = (72, 120)
    frame_stack: int = 4
    rescale: bool = True
    action_set: str | None = None  # a wham_gym.action_sets name: Discrete(n) over its presets instead of the Box
    action_axes: bool = False  # with action_set: a Box over the set's axes (other controller dims 0) instead
    grayscale: bool = False
    reward_scale: float = 1.0
    tokenizer_view: bool = False  # real game: frames through the world model's tokenizer (encode, then decode)
    observe: str = "pixels"  # or "latent": the tokenizer's quantised latent grid (rows, cols, E) in both worlds
    action_repeat: int = 1  # each decision held for this many steps of the world (VecActionRepeat)
    action_history: int = 0  # the agent's last K decisions appended to its observation (VecActionHistory)

    def __post_init__(self):
        if not isinstance(self.action_repeat, int) or self.action_repeat < 1:
            raise ValueError(f"action_repeat must be an int >= 1, got {self.action_repeat!r}")
        if self.observe not in OBSERVATIONS:
            raise ValueError(f"observe: expected one of {OBSERVATIONS}, got {self.observe!r}")
        if self.action_axes and self.action_set is None:
            raise ValueError("action_axes acts through an action set's axes: give action_set too")
        if not isinstance(self.frame_stack, int) or self.frame_stack < 1:
            raise ValueError(f"frame_stack must be an int >= 1, got {self.frame_stack!r}")
        if not isinstance(self.action_history, int) or self.action_history < 0:
            raise ValueError(f"action_history must be an int >= 0, got {self.action_history!r}")
        if self.action_history and self.observe != "latent":
            raise ValueError("action_history appends to a flat observation: it needs observe='latent' (a CNN reads "
                             f"pixels), got observe={self.observe!r}")
        if not (np.isfinite(self.reward_scale) and self.reward_scale > 0):
            raise ValueError(f"reward_scale must be a finite number > 0, got {self.reward_scale!r}")


RAW = Wrapping(obs_size=None, frame_stack=1, rescale=False)


class VecRescaleAction(VecEnvWrapper):
    """Agent actions in [-1, 1]^16 -> the controller Box, affinely per dimension (a button is pressed at >= 0).

    One symmetric Box suits PPO's Gaussian and SAC's tanh squashing alike; the controller's
    buttons live in [0, 1] and its sticks in [-1, 1] (unchanged by the map).
    """

    def __init__(self, venv: VecEnv):
        box = venv.action_space
        if not isinstance(box, spaces.Box) or box.shape != (controller.ACTION_DIM,):
            raise ValueError(f"VecRescaleAction wraps the 16-dim controller Box, got {box}")
        self.low, self.high = box.low.astype(np.float32), box.high.astype(np.float32)
        super().__init__(venv, action_space=spaces.Box(-1.0, 1.0, box.shape, np.float32))

    def to_controller(self, actions: np.ndarray) -> np.ndarray:
        a = np.clip(np.asarray(actions, np.float32), -1.0, 1.0)
        return self.low + (a + 1.0) * 0.5 * (self.high - self.low)

    def step_async(self, actions: np.ndarray) -> None:
        self.venv.step_async(self.to_controller(actions))

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        return self.venv.step_wait()


class VecActionRepeat(VecEnvWrapper):
    """Each action held for ``repeat`` steps of the world, the steps' rewards summed: the agent decides every
    ``repeat`` steps (Atari's frame skip, Mnih et al. 2015), so it cannot switch moves faster than that.

    Why here: a dream-trained take_cover agent switched strafe direction on 44 % of its steps (the game-trained
    one on 16 %); jittering in place is what a 4-frame-context dream over-rewards, and a held action cannot do it.

    Sits right above VecMonitor, so reported returns and lengths stay exact, counted in steps of the world. An
    env whose episode ends at a sub-step reports that end (done, its info with ``terminal_observation`` and
    VecMonitor's ``episode``); its next episode plays the rest of the repeat with the same action (the envs step
    as one batch), that reward is left out of the agent's (VecMonitor counts it in the new episode's return), and
    the observation returned is where the new episode then is. A second end within one repeat (an episode shorter
    than ``repeat`` steps) is not reported to the agent.
    """

    def __init__(self, venv: VecEnv, repeat: int):
        if not isinstance(repeat, int) or repeat < 1:
            raise ValueError(f"repeat must be an int >= 1, got {repeat!r}")
        self.repeat = repeat
        self.actions = None
        super().__init__(venv)

    def reset(self):
        return self.venv.reset()

    def step_async(self, actions):
        self.actions = actions
        self.venv.step_async(actions)

    def step_wait(self):
        obs, rew, dones, infos = self.venv.step_wait()
        total, ended, infos = np.asarray(rew, np.float64).copy(), np.asarray(dones, bool).copy(), list(infos)
        for _ in range(self.repeat - 1):
            self.venv.step_async(self.actions)
            obs, rew, dones, sub = self.venv.step_wait()
            total += np.where(ended, 0.0, rew)
            for i in np.flatnonzero(~ended):
                infos[i] = sub[i]  # the latest step's info; at an end, the end's
            ended |= np.asarray(dones, bool)
        return obs, total.astype(np.float32), ended, infos


class VecScaleReward(VecEnvWrapper):
    """The reward the agent learns from, times ``scale``. take_cover pays ~3.5 per step: unscaled, PPO's value
    loss (hundreds to thousands) swamps the policy's gradient in the shared CNN."""

    def __init__(self, venv: VecEnv, scale: float):
        self.scale = float(scale)
        super().__init__(venv)

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        obs, rew, dones, infos = self.venv.step_wait()
        return obs, (rew * self.scale).astype(np.float32), dones, infos


class VecActionHistory(VecEnvWrapper):
    """The agent's own last ``k`` decisions (one-hot for ``Discrete``, the values for a ``Box``; zeros before an
    episode's first) appended to its flattened observation, newest first.

    Why: wall-to-wall pacing is most of take_cover, and which way the player is going shows in a stack of coarse
    latent grids only once it has moved a token; a blind pacer needs nothing but this memory. Sits outermost (after
    the frame stack), so it sees one entry per decision; the same in both worlds, it adds no world knowledge.
    """

    def __init__(self, venv: VecEnv, k: int):
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"action history: k must be an int >= 1, got {k!r}")
        space, inner = venv.action_space, venv.observation_space
        self.one_hot = isinstance(space, spaces.Discrete)
        if self.one_hot:
            width, low, high = int(space.n), 0.0, 1.0
        elif isinstance(space, spaces.Box) and len(space.shape) == 1:
            width, low, high = space.shape[0], float(space.low.min()), float(space.high.max())
        else:
            raise ValueError(f"action history: expected a Discrete or 1-D Box action space, got {space}")
        if not isinstance(inner, spaces.Box):
            raise ValueError(f"action history appends to a Box observation, got {inner}")
        self.history = np.zeros((venv.num_envs, k, width), np.float32)

        def bound(inner_bound, value):
            return np.concatenate([np.broadcast_to(inner_bound, inner.shape).ravel(),
                                   np.full(k * width, value)]).astype(np.float32)

        super().__init__(venv, observation_space=spaces.Box(bound(inner.low, low), bound(inner.high, high)))

    def _with_history(self, obs: np.ndarray, history: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(obs, np.float32).reshape(len(obs), -1),
                               history.reshape(len(obs), -1)], axis=1)

    def reset(self):
        self.history[:] = 0.0
        return self._with_history(self.venv.reset(), self.history)

    def step_async(self, actions):
        a, width = np.asarray(actions), self.history.shape[2]
        if self.one_hot:
            encoded = np.eye(width, dtype=np.float32)[a.reshape(-1).astype(np.int64)]
        else:
            encoded = a.reshape(self.num_envs, width).astype(np.float32)
        self.history = np.concatenate([encoded[:, None], self.history[:, :-1]], axis=1)
        self.venv.step_async(actions)

    def step_wait(self):
        obs, rew, dones, infos = self.venv.step_wait()
        for i in np.flatnonzero(dones):
            terminal = infos[i].get("terminal_observation")
            if terminal is not None:  # the ended episode's last observation, with that episode's history
                infos[i]["terminal_observation"] = self._with_history(terminal[None], self.history[i:i + 1])[0]
            self.history[i] = 0.0
        return self._with_history(obs, self.history), rew, dones, infos


# ITU-R BT.601 luma, as cv2 / PIL convert RGB to gray
LUMA = torch.tensor([0.299, 0.587, 0.114])


def resize_frames(frames: np.ndarray, size: tuple[int, int] | None, grayscale: bool = False) -> np.ndarray:
    """(..., H, W, 3) uint8 -> (..., h, w, 3): bilinear with antialiasing (an area-like average when shrinking);
    ``size`` None keeps H x W. ``grayscale``: (..., h, w, 1), luma rounded to uint8."""
    lead = frames.shape[:-3]
    size = tuple(size) if size is not None else frames.shape[-3:-1]
    # uint8 in, uint8 out: torch's channels-last uint8 kernel is ~35x faster than going through float.
    x = torch.from_numpy(np.ascontiguousarray(frames)).reshape(-1, *frames.shape[-3:]).permute(0, 3, 1, 2)
    if x.shape[-2:] != size:
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    x = x.permute(0, 2, 3, 1)
    if grayscale:
        x = (x.float() @ LUMA).round_().clamp_(0, 255).to(torch.uint8).unsqueeze(-1)
    return np.ascontiguousarray(x.reshape(*lead, *size, x.shape[-1]).numpy())


class VecFrameMap(VecEnvWrapper):
    """Observations and ``terminal_observation`` passed through ``_frames`` ((N, H, W, C) -> (N, h, w, c))."""

    def _frames(self, frames: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def reset(self):
        return self._frames(self.venv.reset())

    def step_wait(self):
        obs, rew, dones, infos = self.venv.step_wait()
        for info in infos:
            if info.get("terminal_observation") is not None:
                info["terminal_observation"] = self._frames(info["terminal_observation"][None])[0]
        return self._frames(obs), rew, dones, infos


class VecResize(VecFrameMap):
    """Downscale observations (and ``terminal_observation``) to ``size`` = (height, width) (None: keep),
    optionally to one gray channel."""

    def __init__(self, venv: VecEnv, size: tuple[int, int] | None, grayscale: bool = False):
        self.size = tuple(size) if size is not None else tuple(venv.observation_space.shape[:2])
        self.grayscale = bool(grayscale)
        super().__init__(venv, observation_space=spaces.Box(0, 255, (*self.size, 1 if grayscale else 3), np.uint8))

    def _frames(self, frames):
        return resize_frames(frames, self.size, self.grayscale)


class VecTokenizerView(VecFrameMap):
    """Real frames (and ``terminal_observation``) encoded to image tokens and decoded again by ``model``'s tokenizer.

    An agent trained in a dream sees decoded frames only, with the tokenizer's blur and blocks; in the real game
    this wrapper shows it the game the same way (World Models' controller likewise saw the VAE's view of real
    frames). A tokenizer of another size than 180x300 gets the frames resized to its size and back.
    """

    def __init__(self, venv: VecEnv, model):
        self.model = model
        super().__init__(venv)

    @torch.no_grad()
    def _frames(self, frames: np.ndarray) -> np.ndarray:
        size = (self.model.config.frame_height, self.model.config.frame_width)
        tokens = self.model.encode_frames(fit_frames(frames, size, True, "tokenizer view"))
        out = self.model.tokenizer.decode(tokens, check=False).permute(0, 2, 3, 1).cpu().numpy()
        return out if size == WHAM_SIZE else resize_frames(out, WHAM_SIZE)


class VecLatentView(VecFrameMap):
    """Each observation as the world model's quantised latent: a frame's image tokens looked up in the tokenizer's
    codebook, a float grid (rows, cols, E) in token order (what the tokenizer's decoder reads).

    The dream's observations are image tokens already (``obs_mode="tokens"``: nothing is decoded to pixels, which
    is most of a cheap dream step's cost); the real game's frames are encoded here. Both worlds then give the agent
    the same thing, exactly: the quantised latent of a frame, as World Models' controller read its VAE's z.
    """

    def __init__(self, venv: VecEnv, model):
        tok = model.tokenizer
        self.model, self.tpi, self.grid = model, model.config.tokens_per_image, tok.grid
        self.size = (model.config.frame_height, model.config.frame_width)
        book = tok.codes(torch.arange(tok.vocab_size)[None])[0]  # (V, E)
        bound = float(book.abs().max())
        super().__init__(venv, observation_space=spaces.Box(-bound, bound, (*self.grid, book.shape[1]), np.float32))

    @torch.no_grad()
    def _frames(self, obs: np.ndarray) -> np.ndarray:
        tok = self.model.tokenizer
        obs = np.asarray(obs)
        if obs.ndim == 2 and obs.shape[1] == self.tpi:  # image tokens (N, tokens_per_image): a dream's
            tokens = torch.from_numpy(obs.astype(np.int64))
        elif obs.ndim == 4 and obs.dtype == np.uint8:  # frames (N, H, W, 3): the real game's
            tokens = self.model.encode_frames(fit_frames(obs, self.size, True, "latent view"))
        else:
            raise ValueError(f"latent view: expected image tokens (N, {self.tpi}) or uint8 frames (N, H, W, 3), "
                             f"got {obs.dtype} {obs.shape}")
        codes = tok.codes(tokens).float().cpu().numpy()
        return codes.reshape(len(obs), *self.grid, codes.shape[-1])


def wrap(venv: VecEnv, wrapping: Wrapping, model=None) -> VecEnv:
    """The wrapper stack of the module docstring, identical for both worlds (``model``: the world model whose
    tokenizer draws the real game with ``wrapping.tokenizer_view`` and gives both worlds' latent with
    ``observe="latent"``; dreams are drawn by it already)."""
    venv = VecMonitor(venv)
    if wrapping.action_repeat > 1:
        venv = VecActionRepeat(venv, wrapping.action_repeat)
    if wrapping.observe == "latent":
        if model is None:
            raise ValueError("observe='latent' reads the world model's tokenizer: pass model=")
        venv = VecLatentView(venv, model)
    elif wrapping.tokenizer_view and model is not None:
        venv = VecTokenizerView(venv, model)
    if wrapping.reward_scale != 1.0:
        venv = VecScaleReward(venv, wrapping.reward_scale)
    if wrapping.action_set is not None:
        venv = (VecAxesActions if wrapping.action_axes else VecDiscreteActions)(venv, wrapping.action_set)
    elif wrapping.rescale:
        venv = VecRescaleAction(venv)
    resize = wrapping.obs_size is not None and tuple(wrapping.obs_size) != WHAM_SIZE
    if wrapping.observe == "pixels" and (resize or wrapping.grayscale):
        venv = VecResize(venv, wrapping.obs_size, wrapping.grayscale)
    if wrapping.frame_stack > 1:
        venv = VecFrameStack(venv, wrapping.frame_stack, channels_order="last")
    if wrapping.action_history:
        venv = VecActionHistory(venv, wrapping.action_history)
    return venv


def make_dream_venv(model, num_envs: int, wrapping: Wrapping = Wrapping(), *,
                    max_episode_steps: int = DEFAULT_MAX_STEPS, reinjection: Reinjection | None = None,
                    seed: int | None = None, ends: str = "model", end_risk: tuple[float, float] = (1.0, 0.5),
                    ensemble: Sequence = (), shards: int = 1, **env_kwargs) -> VecEnv:
    """N dreams of ``model`` (a loaded model, shared between envs) with its learned reward and its termination
    (the ends its card recommends, else its learned hazard: ``ends="model"``);
    ``ends="drawn"``: episodes end when the world model draws its end frame instead
    (:class:`~wham_gym.rewards.EndFrameTermination`); ``ends="risk"``: with the sharpened probability of drawing
    it, ``end_risk`` = (sharpness, center) (:class:`~wham_gym.rewards.EndRiskTermination`); ``ends="card:NAME"``:
    the alternative ends the card offers by that name (``card["ends_options"]``); ``env_kwargs`` go to
    :class:`~wham_gym.env.WHAMVectorEnv` (e.g. temperature, decoding, refresh_every).
    ``ensemble``: more loaded world models sharing ``model``'s tokenizer; the N envs are split across all of them
    (:func:`ensemble_split`, each with its own ends) and joined by :class:`~wham_gym.sb3.ConcatVecEnv`.
    ``shards`` > 1: the dreams run as that many one-thread engines in child processes
    (:func:`~wham_gym.sb3.sharded_dreams`; the card's ends only, no ensemble or reinjection)."""
    if ends not in ("model", "drawn", "risk") and not ends.startswith("card:"):
        raise ValueError(f"ends: expected 'model', 'drawn', 'risk' or 'card:NAME', got {ends!r}")
    if shards > 1 and (ensemble or reinjection is not None or ends in ("drawn", "risk")):
        raise ValueError(f"{shards} dream shards take the card's ends (default or card:NAME) and no ensemble or "
                         "reinjection (those are built in this process); drop them or run one shard")
    models = [model, *ensemble]
    if ensemble:
        check_ensemble(models, num_envs, reinjection, env_kwargs)
    if wrapping.observe == "latent":
        env_kwargs = {"obs_mode": "tokens", **env_kwargs}
    parts = []
    for m, n in zip(models, ensemble_split(num_envs, len(models))):
        ending = {}  # "model": the ends its card recommends (WHAMVectorEnv reads them)
        if ends == "drawn":
            ending = {"termination_fn": EndFrameTermination(m)}
        elif ends == "risk":
            ending = {"termination_fn": EndRiskTermination(m, *end_risk)}
        elif ends.startswith("card:"):
            ending = {"ends": ends[len("card:"):]}
        if shards > 1:
            parts.append(sharded_dreams(n, m, shards, max_episode_steps=max_episode_steps, **ending, **env_kwargs))
        else:
            parts.append(WHAMVecEnv(n, m, max_episode_steps=max_episode_steps, reinjection=reinjection,
                                    **ending, **env_kwargs))
    venv = parts[0] if len(parts) == 1 else ConcatVecEnv(parts)
    venv = wrap(venv, replace(wrapping, tokenizer_view=False), model)  # dreams are drawn by the tokenizer already
    if seed is not None:
        venv.seed(seed)
    return venv


ensemble_split = split_envs  # envs per model of an ensemble, split as the shards of one dream are

def check_ensemble(models: list, num_envs: int, reinjection, env_kwargs: dict) -> None:
    """An ensemble of dreams must look alike to the agent: one tokenizer (the frames, the latent it reads)."""
    if num_envs < len(models):
        raise ValueError(f"an ensemble of {len(models)} world models needs at least one env each; got "
                         f"num_envs={num_envs}")
    if reinjection is not None or "reward_fn" in env_kwargs or "termination_fn" in env_kwargs:
        raise ValueError("an ensemble of dreams takes each model's own ends and rewards and no reinjection (these "
                         "are built for one model); drop them or train in one model")
    base = models[0].tokenizer.state_dict()
    for i, m in enumerate(models[1:], 1):
        other = m.tokenizer.state_dict()
        if base.keys() != other.keys() or any(not torch.equal(base[k], other[k]) for k in base):
            raise ValueError(f"ensemble world models must share one tokenizer (the agent sees its frames and "
                             f"latent): ensemble model {i} has another than the first; train the others with "
                             "`wham-gym train all --from-model` from the first")


def make_doom(scenario: str = DEFAULT_SCENARIO, max_steps: int = DEFAULT_MAX_STEPS,
              game_kwargs: dict | None = None) -> gym.Env:
    """One real game (``game_kwargs``: DoomEnv settings such as ``render_hud``, as a model's card records them);
    a module-level function so SubprocVecEnv workers can build it."""
    # "module:id": gymnasium imports wham_gym first, which registers the id in a fresh worker too.
    return gym.make("wham_gym:wham_gym/Doom-v0", scenario=scenario, max_steps=max_steps, **(game_kwargs or {}))


def check_game(model, game_kwargs: dict | None, flag: str = "--hud") -> None:
    """Refuse a real game set up unlike the one ``model`` was recorded in (its card's ``game_kwargs``)."""
    recorded = dict((getattr(model, "card", None) or {}).get("game_kwargs") or {})
    if model is not None and recorded != dict(game_kwargs or {}):
        raise ValueError(f"the world model was recorded in a game with {recorded or 'default settings'}, "
                         f"the real game here has {dict(game_kwargs or {}) or 'default settings'}: the two worlds "
                         f"would look different; {'pass ' + flag if recorded.get('render_hud') else 'drop ' + flag}")


def make_real_venv(scenario: str, num_envs: int, wrapping: Wrapping = Wrapping(), *,
                   max_steps: int = DEFAULT_MAX_STEPS, seed: int | None = None, subprocess: bool = False,
                   game_kwargs: dict | None = None, model=None) -> VecEnv:
    """N real Doom games (``wham_gym/Doom-v0``) as an SB3 VecEnv with the same wrappers as the dream.

    ``game_kwargs``: DoomEnv settings (e.g. ``{"render_hud": True}``); ``model``: the world model whose tokenizer
    draws the frames when ``wrapping.tokenizer_view``."""
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
    if (wrapping.tokenizer_view or wrapping.observe == "latent") and model is None:
        raise ValueError("tokenizer_view and observe='latent' see the real game through a world model's tokenizer: "
                         "pass model=")
    fns = [partial(make_doom, scenario, max_steps, game_kwargs) for _ in range(num_envs)]
    # Doom steps at ~1000/s in-process; worker processes pay off only when the policy is cheap.
    venv = SubprocVecEnv(fns, start_method="spawn") if subprocess else DummyVecEnv(fns)
    venv = wrap(venv, wrapping, model)
    if seed is not None:
        venv.seed(seed)
    return venv


RETRIEVAL_FRAMES = 2048  # a retrieval bank's frames at most (agents.train_sb3 and agents.evaluate's default)
REINJECT_EVERY = 5  # steps between a dream's reinjections (the same)


def retrieval_bank(model, sources=None, max_frames: int = RETRIEVAL_FRAMES, seed: int = 0) -> np.ndarray:
    """Real frames (M, H, W, 3) at the model's size for :class:`RetrievalSource`.

    ``sources``: recorded episodes / prompt ``.npz`` files or folders (default: the prompts the model
    ships). Frames are spread evenly over (a random subset of) the episodes, at most ``max_frames``.
    """
    from wham_gym.data.reader import find_sources, load_episode

    if max_frames < 1:
        raise ValueError(f"retrieval frames must be >= 1, got {max_frames}")
    if sources:
        episodes = find_sources(sources)
        if not episodes:
            raise ValueError(f"retrieval bank: no episodes found in {sources}")
    else:
        episodes = default_prompt_bank(model).episodes  # paths, or in-memory prompts (a gray frame)
    rng = np.random.default_rng(seed)
    n_eps = min(len(episodes), max(1, max_frames // 16))  # >= 16 frames per episode read: decoding dominates
    chosen = sorted(rng.choice(len(episodes), n_eps, replace=False))
    per = math.ceil(max_frames / n_eps)
    parts = []
    for i in chosen:
        ep = episodes[i]
        frames = load_episode(ep).frames() if isinstance(ep, str) else ep.frames
        idx = np.unique(np.linspace(0, len(frames) - 1, min(per, len(frames))).round().astype(int))
        parts.append(frames[idx])
    frames = np.concatenate(parts)[:max_frames]
    size = (model.config.frame_height, model.config.frame_width)
    return np.ascontiguousarray(fit_frames(frames, size, True, "retrieval bank"))


def retrieval_reinjection(model, sources=None, max_frames: int = RETRIEVAL_FRAMES, every: int = REINJECT_EVERY,
                          nll_above: float | None = None, seed: int = 0) -> Reinjection:
    """Swap the dream's frame for the nearest real one every ``every`` steps (and/or above an NLL)."""
    if every < 1 and nll_above is None:
        raise ValueError("retrieval reinjection needs every >= 1 or an nll threshold, else it never reinjects")
    source = RetrievalSource(model, retrieval_bank(model, sources, max_frames, seed))
    return Reinjection(source, Schedule(every=max(0, every), nll_above=nll_above))


def lockstep_reinjection(scenario: str, num_envs: int, max_steps: int = DEFAULT_MAX_STEPS, every: int = 10,
                         nll_above: float | None = None, asynchronous: bool = True,
                         game_kwargs: dict | None = None) -> Reinjection:
    """A real game per dream env, stepped with the agent's actions in worker processes; its frame replaces
    the dream's every ``every`` steps (and/or above an NLL), and its episode ends end the dream's."""
    if every < 1 and nll_above is None:
        raise ValueError("lockstep reinjection needs every >= 1 or an nll threshold, else it never reinjects")
    source = LockstepSource([partial(make_doom, scenario, max_steps, game_kwargs) for _ in range(num_envs)],
                            asynchronous)
    return Reinjection(source, Schedule(every=max(0, every), nll_above=nll_above))
