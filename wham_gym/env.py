"""Gymnasium environments over one DreamEngine: ``WHAMVectorEnv`` (N dreams) and ``WHAMEnv`` (N = 1).

``WHAMVectorEnv`` is the only implementation: ``WHAMEnv`` is a thin single-env
view of a one-slot vector env with autoreset disabled. The vector env composes
three parts: a :class:`~wham_gym.rollout.Rollout` (the engine and its
reinjection), :class:`~wham_gym.rewards.EpisodeSignals` (reward, termination,
truncation) and :class:`~wham_gym.autoreset.Autoreset`. One vector step is one
rollout step for all slots, then the signals, then autoreset, then the
observation and infos; tensors stay on the engine's device until the caller
gets numpy (``return_torch=False``, the default).

Observations are the decoded frame, ``Box(0, 255, (180, 300, 3), uint8)``
channel-last; ``obs_mode="tokens"`` gives the image tokens instead (a
``MultiDiscrete``, and no decoding unless a reward or termination function
needs frames), ``"both"`` a Dict of the two. A model whose tokenizer is not
300x180 is adapted: its decoded frames are resized to 180x300 with bilinear
interpolation (``torch.nn.functional.interpolate``, ``align_corners=False``,
on the device), and prompts are resized to its size (see :mod:`wham_gym.prompts`).
A reset observation is the decoded newest prompt frame, so every pixel
observation comes from the same decoder.

Autoreset follows Gymnasium 1.x (``metadata["autoreset_mode"]``):
  * NEXT_STEP (default): a slot done at step t is reset during step t+1, which
    returns its reset observation with reward 0, terminated = truncated = False
    and the reset info; the action given for it is ignored.
  * SAME_STEP: a slot done at step t is reset within step t; the step returns the
    reset observation and puts the final one in ``info["final_obs"]`` (an object
    array, None where not done) and the final step's info in ``info["final_info"]``,
    with ``_final_obs``/``_final_info`` masks.
  * DISABLED: nothing resets by itself; call ``reset(options={"reset_mask": mask})``.
The engine always advances every slot, so a slot being reset is stepped too and
its result dropped (wasted work, never seen). Slots have independent random
streams, so resetting some slots never changes what the others dream.

Infos are dicts of batched arrays with ``_key`` masks: ``step`` (steps in the
current episode), ``reinjected`` (whether a real frame replaced the dream this
step; always False until reinjection lands), ``nll`` and ``entropy`` (the model's
uncertainty about the frame it drew; absent for slots that were just reset) and,
with ``predict_actions=True``, ``predicted_action`` (the controller vector the
model expects next).

Seeding: ``reset(seed=s)`` seeds the env's numpy Generator, which draws every
prompt (episode and offset) and every slot's sampling seed, so the same seed and
the same actions give bit-identical observations on CPU. On a GPU the stream is
as deterministic as the model's kernels: sampling is counter-based, but float
reductions in attention/matmul may differ run to run and flip a near-tie token.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from . import controller
from .autoreset import Autoreset, put, row
from .engine import DreamEngine, StepResult
from .prompts import WHAM_SIZE, Prompt, check_prompt, fit_frames, make_prompt_bank
from .rewards import EpisodeSignals, ExpectedEnds, StepContext, card_ends, card_termination
from .model import load_model
from .rollout import Rollout

OBS_MODES = ("pixels", "tokens", "both")
RENDER_MODES = ["rgb_array"]  # "human": Gymnasium's HumanRendering wrapper over rgb_array
RENDER_FPS = 10  # WHAM's data is 10 Hz


def reset_arguments(env, seed, options) -> tuple[Any, Any]:
    """A vector env's ``reset(seed=, options=)`` checked: seeds ``env``'s Generator, returns
    (``options["reset_mask"]``, ``options["prompt"]``), refuses other keys. Shared with the Ray env."""
    if seed is not None:
        if not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed: expected an int (one seed for the batch; slot seeds derive from it), got {seed!r}")
        env._np_random, env._np_random_seed = seeding.np_random(int(seed))
    options = dict(options or {})
    mask = options.pop("reset_mask", None)
    prompt = options.pop("prompt", None)
    if options:
        raise ValueError(f"reset options: unknown keys {sorted(options)}; expected 'reset_mask' and/or 'prompt'")
    return mask, prompt


def prompt_parts(spec) -> tuple[Any, Any] | None:
    """``options["prompt"]`` as (frames, actions): from a Prompt, a dict with those keys, or a pair; else None."""
    if isinstance(spec, Prompt):
        return spec.frames, spec.actions
    if isinstance(spec, dict):
        return spec.get("frames"), spec.get("actions")
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        return tuple(spec)
    return None


def _part_attribute(part: str, name: str) -> property:
    """An env attribute kept on one of its parts, read and set through the env (``env.max_episode_steps = 5``)."""
    return property(lambda self: getattr(getattr(self, part), name),
                    lambda self, value: setattr(getattr(self, part), name, value))


class WHAMVectorEnv(VectorEnv):
    """N dreams of a WHAM world model, stepped together as one Gymnasium vector env.

    Args:
        num_envs: number of parallel dreams N.
        model: anything :func:`wham_gym.load_model` takes, a built model (default: the embedded default), or
            the env's parts built by you: a :class:`~wham_gym.engine.DreamEngine` (its N, device and sampling
            settings are the env's) or a :class:`~wham_gym.rollout.Rollout` (an engine plus its reinjection).
        prompts: where resets start: None (the model card's prompts, else a flat gray frame), a
            :class:`~wham_gym.prompts.PromptBank`, a path or list of paths (``.npz`` episodes,
            Demonstrator folders, folders of them), or (frames, actions) arrays.
        prompt_frames: frames per prompt (default: the engine's window, ``context_steps - 1``).
        resize_prompts: resize prompts whose size is neither the model's nor 300x180 (else ValueError).
        obs_mode: "pixels", "tokens" or "both".
        return_torch: hand back torch tensors on the engine's device instead of numpy.
        autoreset_mode: NEXT_STEP (default), SAME_STEP or DISABLED (an AutoresetMode or its name).
        max_episode_steps: truncate episodes after this many steps (None: never; the registry uses 1000).
        reward_fn, termination_fn: batched callables on a :class:`~wham_gym.rewards.StepContext`
            (each defaults to the model's learned reward model when it ships one, else zero reward
            and no termination; pass ``rewards.ZeroReward()`` / ``NeverTerminate()`` to switch it off).
            The termination's first default is the ends the model's card recommends.
        ends: with termination_fn None, which of the card's ends: None (``card["ends"]``) or the name of an
            alternative it offers (``card["ends_options"]``; the shipped take_cover model's ``"motion-only"``).
        expected_ends: for training, the risk or motion ends in expectation (:class:`~wham_gym.rewards.ExpectedEnds`):
            episodes never end by them, each step's reward r becomes ``r * (1 - q * expected_ends)``, q the step's
            end probability; the value is the steps of reward a death forfeits (``action_repeat / (1 - gamma)``).
        predict_actions: also decode the model's predicted next action into ``info["predicted_action"]``.
        reinjection: a :class:`~wham_gym.reinjection.Reinjection` (real-frame source + schedule), or None.
        render_mode: None or "rgb_array": ``render()`` returns one frame per env (Gymnasium's vector
            convention), so ``gymnasium.wrappers.vector.RecordVideo`` and ``HumanRendering`` wrap the env.
        device, dtype, temperature, top_k, top_p, deterministic, context_steps, refresh_every, decoding, compile:
            passed to :class:`~wham_gym.engine.DreamEngine`.

    Its parts: ``rollout`` (engine + reinjection), ``signals`` (:class:`~wham_gym.rewards.EpisodeSignals`:
    ``reward_fn``, ``termination_fn``, ``max_episode_steps``), ``autoreset`` (:class:`~wham_gym.autoreset.Autoreset`:
    ``autoreset_mode``); those settings read and set through the env as before.
    """

    metadata = {"render_modes": RENDER_MODES, "render_fps": RENDER_FPS, "autoreset_mode": AutoresetMode.NEXT_STEP}
    reward_fn = _part_attribute("signals", "reward_fn")
    termination_fn = _part_attribute("signals", "termination_fn")
    max_episode_steps = _part_attribute("signals", "max_episode_steps")
    autoreset_mode = _part_attribute("autoreset", "mode")

    def __init__(self, num_envs: int = 1, model="default", *, prompts=None, prompt_frames: int | None = None,
                 resize_prompts: bool = False, obs_mode: str = "pixels", return_torch: bool = False,
                 autoreset_mode=AutoresetMode.NEXT_STEP, max_episode_steps: int | None = None,
                 reward_fn=None, termination_fn=None, ends: str | None = None,
                 expected_ends: float | None = None, predict_actions: bool = False,
                 render_mode: str | None = None, device=None, dtype=None, temperature: float = 0.9,
                 top_k: int | None = None, top_p: float | None = None, deterministic: bool = False,
                 context_steps: int | None = None, refresh_every: int = 1, reinjection=None,
                 decoding: str = "exact", compile: bool = False):

        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode: expected one of {OBS_MODES}, got {obs_mode!r}")
        if render_mode == "human":
            raise ValueError("render_mode='human': WHAM envs render rgb_array frames; for a window wrap the env "
                             "with render_mode='rgb_array' in gymnasium.wrappers.vector.HumanRendering (vector) or "
                             "gymnasium.wrappers.HumanRendering (single), or use gym.make(..., render_mode='human')")
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode: expected None or one of {RENDER_MODES}, got {render_mode!r}")
        engine_settings = dict(device=device, dtype=dtype, temperature=temperature, top_k=top_k, top_p=top_p,
                               deterministic=deterministic, context_steps=context_steps, refresh_every=refresh_every,
                               decoding=decoding, compile=compile)
        self.rollout = _rollout(num_envs, model, reinjection, engine_settings)
        self.engine = self.rollout.engine
        self.reinjection = reinjection = self.rollout.reinjection
        self.model = self.engine.model
        self.device = self.engine.device
        cfg = self.model.config
        self.num_envs = N = self.engine.num_envs
        self.obs_mode, self.return_torch = obs_mode, bool(return_torch)
        if termination_fn is None:  # the card's recommended ends (or the option named), else the reward model's
            termination_fn = card_termination(self.model, ends)
            if termination_fn is None:
                _check_hazard_temperature(getattr(self.model, "reward_model", None), temperature)
            else:
                _check_ends_temperature(card_ends(self.model, ends), temperature, ends)
        elif ends is not None:
            raise ValueError(f"ends={ends!r} names one of the card's ends, and termination_fn was given too: pass "
                             "one of them")
        self.signals = EpisodeSignals(reward_fn, termination_fn, max_episode_steps,
                                      reward_model=getattr(self.model, "reward_model", None))
        if expected_ends is not None:  # the ends' probability becomes a cost in the reward; nothing ends
            expected = ExpectedEnds(self.signals.termination_fn, self.signals.reward_fn, expected_ends)
            self.signals.reward_fn, self.signals.termination_fn = expected.reward, expected
        self.autoreset = Autoreset(autoreset_mode, N, self.device)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.render_mode = render_mode
        self.predict_actions = bool(predict_actions)

        self.model_size = (cfg.frame_height, cfg.frame_width)
        self._resize_out = self.model_size != WHAM_SIZE
        self.prompt_bank = make_prompt_bank(prompts, self.model)
        self.prompt_frames = int(prompt_frames or self.engine.window)
        if not 1 <= self.prompt_frames <= self.engine.context_steps:
            raise ValueError(f"prompt_frames must lie in [1, {self.engine.context_steps}], got {prompt_frames}")
        self.resize_prompts = bool(resize_prompts)
        self._decode = obs_mode != "tokens" or self.signals.needs_frames

        pixels = spaces.Box(0, 255, (*WHAM_SIZE, 3), np.uint8)
        tokens = spaces.MultiDiscrete(np.full(cfg.tokens_per_image, cfg.image_vocab_size), dtype=np.int64)
        self.single_observation_space = {"pixels": pixels, "tokens": tokens}.get(
            obs_mode, spaces.Dict({"pixels": pixels, "tokens": tokens}))
        self.single_action_space = controller.action_space()
        self.observation_space = batch_space(self.single_observation_space, N)
        self.action_space = batch_space(self.single_action_space, N)

        self._low = torch.as_tensor(controller.ACTION_LOW, device=self.device)
        self._high = torch.as_tensor(controller.ACTION_HIGH, device=self.device)
        self._obs: dict[str, torch.Tensor | None] | None = None
        self._warned_clip = False
        if reinjection is not None and hasattr(reinjection.source, "bind"):
            reinjection.source.bind(self.autoreset_mode)  # a live game resets when the dream does
        self._reinjected = torch.zeros(N, dtype=torch.bool, device=self.device)

    # ------------------------------------------------------------------ reset
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset all slots, or those in ``options["reset_mask"]``; ``options["prompt"]`` gives the prompt.

        ``options["prompt"]``: (frames, actions), a dict with those keys, or a Prompt; frames
        (P, H, W, 3) for every slot reset, or (n, P, H, W, 3) one per slot reset.
        """
        mask, prompt = reset_arguments(self, seed, options)
        if mask is None:
            ids = torch.arange(self.num_envs, device=self.device)
            mask_t = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        else:
            mask_t = self._check_mask(mask)
            ids = mask_t.nonzero().squeeze(1)
        tokens = self._reset_slots(ids, prompt)
        frames = self._decoded(tokens) if self._decode else None
        if self._obs is None or mask is None:
            self._obs = {"tokens": tokens, "pixels": frames}
        else:  # previously returned observations stay untouched
            self._obs = {k: None if v is None else v.clone() for k, v in self._obs.items()}
            put(self._obs, ids, {"tokens": tokens, "pixels": frames})
        self.autoreset.reset(ids)
        info = self._base_info(self.rollout.steps, mask_t)
        return self._present(self._obs), self._out(info)

    def _check_mask(self, mask) -> torch.Tensor:
        if not isinstance(mask, (np.ndarray, torch.Tensor)) or tuple(mask.shape) != (self.num_envs,) or mask.dtype not in (np.bool_, torch.bool):
            raise ValueError(f"options['reset_mask']: expected a bool array of shape ({self.num_envs},), "
                             f"got {type(mask).__name__} {getattr(mask, 'shape', None)} {getattr(mask, 'dtype', None)}")
        mask = torch.as_tensor(mask, device=self.device)
        if not bool(mask.any()):
            raise ValueError("options['reset_mask']: must select at least one env")
        if self._obs is None and not bool(mask.all()):
            raise ValueError("options['reset_mask']: the first reset must reset every env")
        return mask

    def _reset_slots(self, ids: torch.Tensor, prompt=None, autoreset: bool = False) -> torch.Tensor:
        """Give slots ``ids`` new prompts and sampling seeds from the env's Generator; their newest tokens."""
        n = int(ids.numel())
        rng = self.np_random
        if prompt is not None:
            prompts = self._option_prompts(prompt, n)
        elif self.reinjection is not None and self.reinjection.source.starts_episodes:  # replay / lockstep
            prompts = self._source_prompts(ids, rng, autoreset)
        else:
            prompts = self.prompt_bank.sample(rng, n, self.prompt_frames, size=self.model_size,
                                              resize=self.resize_prompts, option="env")
        return self._start_slots(ids, prompts, rng.integers(0, 2**62, size=n))

    def _source_prompts(self, ids: torch.Tensor, rng: np.random.Generator, autoreset: bool) -> list[Prompt]:
        """Prompts from a reinjection source that starts episodes (replay, lockstep)."""
        frames, actions = self.reinjection.source.start(ids.cpu().numpy(), rng, self.prompt_frames, autoreset)
        return [Prompt(fit_frames(f, self.model_size, True, "real episode"), a) for f, a in zip(frames, actions)]

    def _start_slots(self, ids: torch.Tensor, prompts: list[Prompt], seeds: np.ndarray) -> torch.Tensor:
        """Prompt slots ``ids`` and restart their random streams at ``seeds`` (the draws made, here or by a
        driver that draws for several envs: ``wham_gym.cluster``); their newest tokens."""
        lengths = np.array([len(p) for p in prompts])
        for P in np.unique(lengths):  # one engine reset per prompt length (usually one)
            sel = np.flatnonzero(lengths == P)
            frames = np.stack([prompts[j].frames for j in sel])
            actions = np.stack([prompts[j].actions for j in sel]) if P > 1 else None
            self.rollout.reset(ids[torch.as_tensor(sel, device=self.device)], frames=frames, actions=actions,
                               seeds=seeds[sel])
        return self.engine.images[ids, -1]

    def _option_prompts(self, spec, n: int) -> list[Prompt]:
        where = "options['prompt']"
        parts = prompt_parts(spec)
        if parts is None:
            raise ValueError(f"{where}: expected (frames, actions), a dict with those keys, or a Prompt")
        frames, actions = parts
        frames = np.asarray(frames)
        if frames.ndim == 4:
            prompts = [check_prompt(frames, actions, where)] * n
        elif frames.ndim == 5 and frames.shape[0] == n:
            acts = [None] * n if actions is None else list(actions)
            prompts = [check_prompt(f, a, f"{where}[{i}]") for i, (f, a) in enumerate(zip(frames, acts))]
        else:
            raise ValueError(f"{where}: frames must be (P, H, W, 3) or ({n}, P, H, W, 3), got {frames.shape}")
        fitted = fit_frames(prompts[0].frames, self.model_size, self.resize_prompts, where, "env")
        return [Prompt(fitted if p is prompts[0] else fit_frames(p.frames, self.model_size, self.resize_prompts, where, "env"),
                       p.actions) for p in prompts]

    # ------------------------------------------------------------------ step
    def step(self, actions):
        """Advance every dream one step with ``actions`` (N, 16) controller vectors (numpy or torch).

        The rollout steps every slot, the episode signals score it, autoreset restarts slots whose
        episode ended, and the observation and infos go back to the caller.
        """
        prev = self.engine.images[:, -1].clone()
        self._watch_first_token()
        r = self.rollout.step(self._check_actions(actions), decode=self._decode, predict_actions=self.predict_actions,
                              checked=True)  # validated and clipped once, here at the boundary
        frames = None if r.frames is None else self._adapt(r.frames)
        self._reinjected = r.reinjected
        ctx = StepContext(tokens=r.tokens, prev_tokens=prev, frames=frames, actions=r.actions, steps=r.steps,
                          nll=r.dreamt.nll, entropy=r.dreamt.entropy, uniform=self.engine.signal_uniforms(),
                          first_token_prob=r.dreamt.first_token_prob)
        reward, terminated, truncated = self.signals(ctx, r.real_terminated, r.real_truncated)
        obs = {"tokens": r.tokens, "pixels": frames}  # fresh tensors: safe to write reset slots into
        obs, reward, terminated, truncated, info = self.autoreset.step(
            obs, reward, terminated, truncated, restart=self._reset_obs, present=self._present,
            info=lambda stepped: self._step_info(r.steps, r.dreamt, stepped))
        self._obs = obs
        return self._present(obs), self._out(reward), self._out(terminated), self._out(truncated), self._out(info)

    def _watch_first_token(self) -> None:
        """Have the engine report (and maybe ban) the first image token the termination declares it reads
        (:class:`~wham_gym.rewards.EndRiskTermination`); read every step, since ``termination_fn`` may be replaced."""
        fn = self.signals.termination_fn
        token = getattr(fn, "first_token", None)
        ban = bool(getattr(fn, "ban_first_token", False))
        if (token, ban and token is not None) != self.engine.watched:
            self.engine.watch_first_token(token, ban=ban)

    def _check_actions(self, actions) -> torch.Tensor:
        if torch.is_tensor(actions):
            a = actions.to(device=self.device, dtype=torch.float32)
        else:
            arr = np.asarray(actions)
            if arr.dtype.kind not in "fiub":
                raise ValueError(f"actions: expected numbers, got dtype {arr.dtype}")
            a = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).to(self.device)
        if tuple(a.shape) != (self.num_envs, controller.ACTION_DIM):
            raise ValueError(f"actions: expected shape ({self.num_envs}, {controller.ACTION_DIM}), one controller "
                             f"vector (12 buttons then 4 sticks) per env, got {tuple(a.shape)}")
        finite = torch.isfinite(a)
        if not bool(finite.all()):
            env, dim = (int(i) for i in (~finite).nonzero()[0])
            raise ValueError(f"actions: env {env}, dimension {dim} ({controller.ACTION_NAMES[dim]}) is "
                             f"{float(a[env, dim])}; actions must be finite")
        if not self._warned_clip and bool(((a < self._low) | (a > self._high)).any()):
            warnings.warn("actions outside the controller Box are clipped (buttons to [0, 1], sticks to [-1, 1]); "
                          "this warning is shown once", stacklevel=3)
            self._warned_clip = True
        return torch.minimum(torch.maximum(a, self._low), self._high)

    # ------------------------------------------------------------------ observations and infos
    def _adapt(self, frames: torch.Tensor) -> torch.Tensor:
        """Model-size frames -> 180x300 (bilinear, align_corners=False) when the tokenizer is not 300x180."""
        if not self._resize_out:
            return frames
        x = F.interpolate(frames.permute(0, 3, 1, 2).float(), size=WHAM_SIZE, mode="bilinear", align_corners=False)
        return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()

    def _decoded(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._adapt(self.model.decode_tokens(tokens))

    def _reset_obs(self, ids) -> dict[str, torch.Tensor | None]:
        """Autoreset's restart hook: reset slots ``ids`` inside step(); their reset observations."""
        tokens = self._reset_slots(ids, autoreset=True)
        return {"tokens": tokens, "pixels": self._decoded(tokens) if self._decode else None}

    def _observation(self, obs: dict):
        if self.obs_mode == "both":
            return {"pixels": obs["pixels"], "tokens": obs["tokens"]}
        return obs[self.obs_mode]

    def _present(self, obs: dict):
        """The observation as the caller gets it: the obs_mode's part(s), numpy unless ``return_torch``."""
        return self._out(self._observation(obs))

    def _base_info(self, steps: torch.Tensor, has: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"step": steps.clone(), "_step": has.clone(),
                "reinjected": torch.zeros_like(has), "_reinjected": has.clone()}

    def _step_info(self, steps, res: StepResult, stepped: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The step's infos. Slots outside ``stepped`` (None: all stepped) were just reset by autoreset
        and get the reset info: step 0, not reinjected, no uncertainty about a frame they do not show."""
        if stepped is not None:
            steps = steps * stepped
        info = self._base_info(steps, torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        stepped = info["_step"] if stepped is None else stepped
        info["reinjected"] = self._reinjected & stepped
        info.update(nll=res.nll, _nll=stepped, entropy=res.entropy, _entropy=stepped.clone())
        if res.predicted_actions is not None:
            info.update(predicted_action=res.predicted_actions, _predicted_action=stepped.clone())
        return info

    def _out(self, x):
        """Tensors (nested in dicts) -> numpy, unless ``return_torch``."""
        if isinstance(x, dict):
            return {k: self._out(v) for k, v in x.items()}
        if torch.is_tensor(x) and not self.return_torch:
            return x.numpy(force=True)
        return x

    # ------------------------------------------------------------------ rendering
    def current_frames(self) -> torch.Tensor:
        """The frames now shown, (N, 180, 300, 3) uint8 on the device (decoded on demand in tokens mode)."""
        if self._obs is None:
            raise RuntimeError("render: call reset() first")
        if self._obs["pixels"] is None:
            return self._decoded(self._obs["tokens"])
        return self._obs["pixels"]

    def render(self) -> tuple[np.ndarray, ...] | None:
        """The frame each env now shows, a tuple of N (180, 300, 3) uint8 arrays (Gymnasium's vector convention)."""
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array'")
            return None
        return tuple(self.current_frames().numpy(force=True))

    def close_extras(self, **kwargs) -> None:
        if self.reinjection is not None and hasattr(self.reinjection.source, "close"):
            self.reinjection.source.close()  # lockstep worker processes


def _rollout(num_envs: int, model, reinjection, engine_settings: dict) -> Rollout:
    """The env's rollout: built from a model and settings, or around the engine / rollout given as ``model``."""
    if isinstance(model, (DreamEngine, Rollout)):
        defaults = inspect.signature(WHAMVectorEnv.__init__).parameters
        changed = sorted(k for k, v in engine_settings.items() if v != defaults[k].default)
        if changed:
            raise ValueError(f"{changed}: these are the DreamEngine's settings; set them on the "
                             f"{type(model).__name__} you pass, not on the env")
        engine = model.engine if isinstance(model, Rollout) else model
        if num_envs not in (1, engine.num_envs):  # 1 is the default: the engine's own N then
            raise ValueError(f"num_envs={num_envs} but the {type(model).__name__} given has {engine.num_envs} slots")
        if isinstance(model, Rollout):
            if reinjection is not None:
                raise ValueError("reinjection: the Rollout given carries its own; pass it there")
            return model
        return Rollout(model, reinjection)
    if not isinstance(model, torch.nn.Module):
        model = load_model(model, device=engine_settings["device"] or "cpu", dtype=engine_settings["dtype"])
    return Rollout(DreamEngine(model, num_envs, **engine_settings), reinjection)


def _check_hazard_temperature(net, temperature: float) -> None:
    """Warn when a hazard termination was calibrated at another dream temperature than this env's."""
    cfg = getattr(net, "config", None)
    if getattr(cfg, "termination", None) == "hazard":
        _warn_other_temperature(
            getattr(cfg, "hazard_temperature", None), temperature, "termination hazard was calibrated",
            f"Calibrate a copy of the model at this temperature: wham-gym train calibrate-hazard --model DIR "
            f"--data REC --temperature {temperature:g}")


def _check_ends_temperature(ends: dict, temperature: float, option: str | None = None) -> None:
    """Warn when the card's ends (its default, or its alternative ``option``) were fitted at another dream
    temperature than this env's."""
    if "motion" in ends:  # the motion ends' fit reads the probe; end_motion.py refits them (and rewrites the card)
        only = " motion-only" if ends.get("kind") == "motion" else ""
        named = f" --option {option}" if option is not None else ""
        fix = (f"Refit them: python benchmarks/end_motion.py --model DIR --data REC ... --temperature {temperature:g} "
               f"--write-card{only}{named}")
    else:
        fix = f"Refit them: python benchmarks/end_risk.py --model DIR --temperature {temperature:g}"
    _warn_other_temperature(
        ends.get("temperature"), temperature,
        ("recommended ends (card['ends'])" if option is None else f"ends {option!r} (card['ends_options'])")
        + " were fitted to the game's episode lengths", fix)


def _warn_other_temperature(fitted, temperature: float, what: str, fix: str) -> None:
    """A termination fitted to the game at one dream temperature ends episodes at another rate at another (a
    hotter dream draws noisier frames, which read as danger): warn, with the fix."""
    if fitted is not None and abs(float(fitted) - temperature) > 1e-6:
        likely = "hotter: more often" if temperature > float(fitted) else "colder: less often"
        warnings.warn(f"this model's {what} for dreams at temperature {float(fitted):g}, this env dreams at "
                      f"{temperature:g}: its episodes will end at another rate than the game's ({likely}, "
                      f"likely). {fix}", stacklevel=4)


class WHAMEnv(gym.Env):
    """One dream as a ``gymnasium.Env``: a one-slot :class:`WHAMVectorEnv` with autoreset disabled.

    Takes the vector env's arguments except ``num_envs``, ``autoreset_mode`` and
    ``return_torch``. ``gymnasium.make("wham_gym/WHAM-v0")`` adds a TimeLimit of
    1000 steps; ``max_episode_steps`` truncates inside the env as well (default: never).
    """

    metadata = {"render_modes": RENDER_MODES, "render_fps": RENDER_FPS}

    def __init__(self, model="default", *, render_mode: str | None = None, **kwargs):
        for k in ("num_envs", "autoreset_mode", "return_torch"):
            if k in kwargs:
                raise TypeError(f"WHAMEnv does not take {k!r}; use WHAMVectorEnv for that")
        self.vector = WHAMVectorEnv(1, model, autoreset_mode=AutoresetMode.DISABLED, render_mode=render_mode, **kwargs)
        self.observation_space = self.vector.single_observation_space
        self.action_space = self.vector.single_action_space
        self.render_mode = render_mode

    @property
    def engine(self) -> DreamEngine:
        return self.vector.engine

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if options and "reset_mask" in options:
            raise ValueError("WHAMEnv.reset: 'reset_mask' is for WHAMVectorEnv")
        self.vector.np_random = self.np_random  # one Generator: the env's seeding is the vector env's
        obs, info = self.vector.reset(options=options)
        return row(obs, 0), _single_info(info)

    def step(self, action):
        shape = tuple(getattr(action, "shape", np.shape(action)))
        if shape != (controller.ACTION_DIM,):
            raise ValueError(f"action: expected shape ({controller.ACTION_DIM},), one controller vector "
                             f"(12 buttons then 4 sticks), got {shape}")
        obs, reward, terminated, truncated, info = self.vector.step(np.asarray(action)[None])
        return row(obs, 0), float(reward[0]), bool(terminated[0]), bool(truncated[0]), _single_info(info)

    def render(self) -> np.ndarray | None:
        """The frame now shown, (180, 300, 3) uint8 (render_mode="rgb_array")."""
        frames = self.vector.render()
        return None if frames is None else frames[0]

    def close(self):
        self.vector.close()


def _single_info(info: dict) -> dict:
    """Batched info of one env -> a plain info dict (keys its mask leaves out are dropped)."""
    return {k: v[0] for k, v in info.items() if not k.startswith("_") and info.get("_" + k, [True])[0]}
