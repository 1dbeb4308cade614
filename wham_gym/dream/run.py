"""Dream K rollouts from one prompt: the engine behind ``wham-gym dream`` and ``wham-gym demo``.

:func:`dream` returns a :class:`Dream` (frames, actions, the model's own predicted
actions, per-step NLL, and the real continuation when the prompt episode has one);
:func:`wham_gym.dream.export.export_dream` writes it to disk.

Frame 0 of every rollout is the prompt's last (real) frame; frame t+1 is what the
model dreamt after action t was taken at frame t. All K rollouts start from the
same prompt and advance together in one batched :class:`~wham_gym.engine.DreamEngine`;
rollout k samples from its own random stream (seed ``seed``, slot k).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .. import controller
from .actions import ModelActions, make_action_source
from ..prompts import Prompt, fit_frames
from ..data.reader import find_sources, is_demonstrator_folder, load_episode
from ..engine import DreamEngine
from ..rollout import Rollout, run
from ..model import load_model
from ..prompts import make_prompt_bank


@dataclass
class Dream:
    """K dreamt rollouts of T steps at the model's frame size (H, W)."""

    frames: np.ndarray  # (K, T+1, H, W, 3) uint8: the prompt's last frame, then T dreamt frames
    actions: np.ndarray  # (K, T, 16) float32: the action taken at frame t (sticks at bin middles)
    predicted: np.ndarray | None  # (K, T, 16): the model's own action at frame t, sampled before a_t was given
    nll: np.ndarray  # (K, T) mean negative log-likelihood of each dreamt frame's tokens
    context: np.ndarray  # (P, H, W, 3) the prompt frames
    real: np.ndarray | None = None  # (T+1, H, W, 3) the recorded continuation (replay), frame 0 = the prompt's last
    info: dict[str, Any] = field(default_factory=dict)  # model, prompt, actions, seed, sampling, timing

    @property
    def num(self) -> int:
        return int(self.frames.shape[0])

    @property
    def steps(self) -> int:
        return int(self.actions.shape[1])


@dataclass
class PromptEpisode:
    """A prompt and what follows it in its episode (for ``replay``): actions (R, 16) and frames (R, H, W, 3)."""

    prompt: Prompt
    next_actions: np.ndarray | None = None
    next_frames: np.ndarray | None = None


def _read_pngs(paths: Sequence[str]) -> np.ndarray:
    from PIL import Image

    frames = []
    for p in paths:
        try:
            with Image.open(p) as im:
                frames.append(np.asarray(im.convert("RGB")))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{p}: cannot read the prompt image ({exc})") from None
    sizes = {f.shape for f in frames}
    if len(sizes) != 1:
        raise ValueError(f"prompt images differ in size: {sorted(sizes)}")
    return np.stack(frames)


def load_prompt(spec, model, *, context: int | None = None, start: int | None = None,
                seed: int = 0, resize: bool = False) -> PromptEpisode:
    """The prompt a dream starts from, fitted to the model's frame size.

    ``spec``: None (the prompts the model ships, else a gray frame; a random one under
    ``seed``), a dataset ``.npz`` / recorded episode / Demonstrator folder (a folder of
    several episodes gives its first, sorted), a PNG or list of PNGs (consecutive frames,
    taken with the neutral controller), or a :class:`~wham_gym.prompts.Prompt`.
    ``context``: prompt frames (default: the model's window, 9 for WHAM; PNGs and
    Demonstrator folders with fewer frames are used whole). ``start``: the episode index
    of the first prompt frame (default: 0; for a Demonstrator folder, its last frames).
    """

    c = model.config
    window = c.seq_len - 1
    given = context is not None
    context = int(context) if given else window
    if not 1 <= context <= window:
        raise ValueError(f"--context must lie in [1, {window}] (the model's window), got {context}")
    size = (c.frame_height, c.frame_width)
    if spec is None:
        bank = make_prompt_bank(None, model)
        prompt = bank.sample(np.random.default_rng(seed), 1, context, size=size)[0]
        return PromptEpisode(prompt)
    if isinstance(spec, Prompt):
        return PromptEpisode(Prompt(fit_frames(spec.frames[-context:], size, resize, option="dream"), spec.actions[-(context - 1):]
                                    if context > 1 else spec.actions[:0], spec.source, spec.start))
    paths = [os.fspath(s) for s in ([spec] if isinstance(spec, (str, os.PathLike)) else spec)]
    if all(p.lower().endswith(".png") for p in paths):
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"prompt image not found: {missing[0]}")
        frames = _read_pngs(paths)
        if given and len(frames) < context:
            raise ValueError(f"the prompt is shorter than needed: {len(frames)} images for --context {context}")
        frames = fit_frames(frames[-context:], size, resize, where="prompt images", option="dream")
        neutral = np.zeros((len(frames) - 1, controller.ACTION_DIM), np.float32)  # no buttons, sticks centred
        return PromptEpisode(Prompt(frames, neutral, source=", ".join(paths)))
    if len(paths) != 1:
        raise ValueError("give one prompt episode (.npz or Demonstrator folder), or a list of PNGs")

    sources = find_sources(paths[0])
    if not sources:
        raise FileNotFoundError(f"{paths[0]}: no .npz episode or Demonstrator folder in it")

    ep = load_episode(sources[0])
    T = len(ep)
    if is_demonstrator_folder(sources[0]) and start is None:  # a prompt by nature: its last frames
        context = context if given else min(context, T)
        start = T - context
    s = 0 if start is None else int(start)
    if s < 0 or s + context > T:
        raise ValueError(f"{sources[0]}: the prompt is shorter than needed: it has {T} frames, and --start {s} "
                         f"with {context} context frames needs {s + context}; lower --start or --context")
    frames, actions = ep.frames(), ep.actions
    prompt = Prompt(fit_frames(np.ascontiguousarray(frames[s:s + context]), size, resize, where=sources[0], option="dream"),
                    actions[s:s + context - 1], source=sources[0], start=s)
    last = s + context - 1
    nxt = frames[last:] if last + 1 < T else None
    return PromptEpisode(prompt, next_actions=actions[last:T - 1] if last + 1 < T else None,
                         next_frames=None if nxt is None else fit_frames(np.ascontiguousarray(nxt), size, resize, option="dream"))


def dream(model="default", prompt=None, *, steps: int = 20, actions="random", num: int = 1, seed: int = 0,
          context: int | None = None, start: int | None = None, predict: bool = True, device=None,
          resize_prompt: bool = False, progress: bool = True, **sampling) -> Dream:
    """Dream ``num`` rollouts of ``steps`` frames from one prompt, in one batch.

    Args:
        model: a WHAMModel or anything :func:`wham_gym.load_model` takes.
        prompt: see :func:`load_prompt` (or a :class:`PromptEpisode`).
        actions: see :mod:`wham_gym.dream.actions` (a spec string, a (T, 16) / (K, T, 16) array, or a source).
        predict: also sample the model's own action at every frame (16 more tokens per step), logged
            beside the given ones; with ``actions="model"`` these are the actions taken.
        sampling: DreamEngine settings (temperature, top_k, top_p, deterministic, decoding, compile).
    """
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not isinstance(num, (int, np.integer)) or num < 1:
        raise ValueError(f"num must be a positive int, got {num!r}")
    model = load_model(model, device=device) if isinstance(model, (str, os.PathLike)) else model
    pe = prompt if isinstance(prompt, PromptEpisode) else load_prompt(
        prompt, model, context=context, start=start, seed=seed, resize=resize_prompt)
    source = make_action_source(actions, replay=pe.next_actions)
    source.start(num, steps, seed)
    behaviour = isinstance(source, ModelActions)
    predict = predict or behaviour

    engine = DreamEngine(model, num, seed=seed, **sampling)
    p = pe.prompt
    P = len(p)
    engine.reset(None, frames=np.repeat(p.frames[None], num, 0),
                 actions=np.repeat(p.actions[None], num, 0) if P > 1 else None)
    first = np.broadcast_to(p.frames[-1], (num, *p.frames.shape[1:]))
    traj = run(Rollout(engine), steps, source, predict=predict, start_frames=first,
               progress=progress)
    elapsed = float(traj.seconds.sum())

    real = None
    if pe.next_frames is not None and isinstance(actions, str) and actions == "replay":
        real = pe.next_frames[: steps + 1]
    card = getattr(model, "card", {}) or {}
    info = {
        "model": card.get("name", model.config.name), "official": bool(model.is_official),
        "prompt": p.source or "default", "prompt_start": p.start, "context_frames": P,
        "actions": getattr(source, "name", str(actions)), "num": num, "steps": steps, "seed": seed,
        "sampling": dict(engine.sampling), "decoding": engine.decoding, "compile": engine.compile,
        "device": str(engine.device),
        "seconds": round(elapsed, 3),
        "env_frames_per_s": round(num * steps / max(elapsed, 1e-9), 2),
    }
    return Dream(frames=np.concatenate([first[:, None], traj.frames], 1), actions=controller.quantize(traj.actions),
                 predicted=traj.predicted, nll=traj.nll, context=p.frames, real=real, info=info)
