"""Prompt banks: where a dream starts.

A dream slot is reset with a prompt: P consecutive frames (P, H, W, 3) uint8 and
the P-1 controller vectors taken at them (sticks in [-1, 1]). A :class:`PromptBank`
holds episodes (read from WHAM's dataset ``.npz`` files, Demonstrator folders,
our recorded episodes, or given as arrays) and draws prompts from them under a
numpy Generator: a uniformly random episode, then a uniformly random start
offset inside it.

Frame sizes. A model sees frames at its tokenizer's size. Prompts at that size
pass untouched; prompts at WHAM's 300x180 are always resized to it (the frame-size
adapter for models with smaller tokenizers, e.g. ``tiny-taming``'s 16x16); any
other size is resized only when asked (``resize=True``), else it is a
``ValueError``. Resizing is OpenCV's ``cv2.resize(..., INTER_LINEAR)``, the
rule WHAM's ``run_server.py`` applies to its prompt images, reproduced bit for
bit in numpy (:func:`resize_linear`), so the same prompt gives WHAM's tokens.

With no source at all, :func:`default_prompt_bank` gives the prompt the model's
card names (``card["prompts"]``, a path) or, until models ship with one, a single
flat mid-gray frame (value 128): every dream then starts from the model's
encoding of a blank screen and diverges only through sampling.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import controller
from .data.episodes import EpisodeFormatError, is_complete, read_episode
from .data.reader import load_episode, open_episodes
from .data.windows import sample_windows

WHAM_SIZE = (180, 300)  # (height, width) of WHAM's frames and of every observation
GRAY = 128


@dataclass
class Prompt:
    """One prompt: ``frames`` (P, H, W, 3) uint8 and ``actions`` (P-1, 16) float32 controller vectors."""

    frames: np.ndarray
    actions: np.ndarray
    source: str = ""
    start: int = 0

    def __len__(self) -> int:
        return int(self.frames.shape[0])


_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS: weights are fixed-point with 11 fraction bits
_COEF_SCALE = 1 << _COEF_BITS


def _linear_taps(src: int, dst: int, clamp: bool):
    """OpenCV's bilinear source indices and fixed-point weights along one axis.

    Source coordinates are computed in double, rounded to float32, split into floor
    and fraction in float32; weights are the fraction scaled by 2048 and rounded. Along
    x, out-of-range coordinates are clamped to an edge pixel with weight 1; along y
    they are not (the two rows are clipped, the fraction kept) - that is OpenCV's rule.
    """
    f = ((np.arange(dst) + 0.5) * (1.0 / (dst / src)) - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = f - s.astype(np.float32)
    if clamp:
        low, high = s < 0, s >= src - 1
        f[low], s[low] = 0, 0
        f[high], s[high] = 0, src - 1
    w0 = np.rint((np.float32(1) - f) * np.float32(_COEF_SCALE)).astype(np.int64)
    w1 = np.rint(f * np.float32(_COEF_SCALE)).astype(np.int64)
    return np.clip(s, 0, src - 1), np.clip(s + 1, 0, src - 1), w0, w1


def resize_linear(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 frames (..., H, W, C) -> (..., h, w, C), equal to ``cv2.resize(f, (w, h))`` (INTER_LINEAR).

    No antialiasing when shrinking (OpenCV's linear filter has none); an exact halving
    of both sides is OpenCV's 2x2 box average, as OpenCV switches to it there.
    """
    h, w = size
    H, W = frames.shape[-3:-1]
    if (H, W) == (h, w):
        return frames.copy()
    x = frames.astype(np.int64)
    if (H, W) == (2 * h, 2 * w):
        quad = x[..., 0::2, 0::2, :] + x[..., 0::2, 1::2, :] + x[..., 1::2, 0::2, :] + x[..., 1::2, 1::2, :]
        return ((quad + 2) >> 2).astype(np.uint8)
    x0, x1, a0, a1 = _linear_taps(W, w, clamp=True)
    rows = x[..., x0, :] * a0[:, None] + x[..., x1, :] * a1[:, None]  # horizontal pass, 11 fraction bits
    y0, y1, b0, b1 = _linear_taps(H, h, clamp=False)
    b0, b1 = b0[:, None, None], b1[:, None, None]
    # Vertical pass with OpenCV's rounding: each product drops 4 + 16 bits, then (+2) >> 2.
    out = (((b0 * (rows[..., y0, :, :] >> 4)) >> 16) + ((b1 * (rows[..., y1, :, :] >> 4)) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


# Each API's switch for resizing prompts, which a size error tells the user to pass.
RESIZE_OPTIONS = {"env": "resize_prompts=True", "dream": "resize_prompt=True (wham-gym dream: --resize-prompt)"}


def fit_frames(frames: np.ndarray, size: tuple[int, int], resize: bool = False, where: str = "prompt",
               option: str | None = None) -> np.ndarray:
    """Bring prompt frames (..., H, W, 3) to the model's ``size`` under the rules in the module docstring.

    ``option`` is the caller's own switch for ``resize``, which the error for a size that needs
    resizing tells the user to pass: ``"env"`` or ``"dream"`` (see :data:`RESIZE_OPTIONS`), or
    the text itself; None names every API's.
    """
    have = tuple(frames.shape[-3:-1])
    if have == tuple(size):
        return frames
    if have == WHAM_SIZE or resize:
        return resize_linear(np.asarray(frames), size)
    hint = RESIZE_OPTIONS.get(option, option) if option else (
        f"{RESIZE_OPTIONS['env']} (WHAMVectorEnv, gym.make) or {RESIZE_OPTIONS['dream']}")
    raise ValueError(
        f"{where}: frames are {have[1]}x{have[0]} but the model takes {size[1]}x{size[0]} "
        f"(WHAM's {WHAM_SIZE[1]}x{WHAM_SIZE[0]} is adapted automatically); pass {hint} "
        "to resize them (bilinear, as WHAM's server does), or give frames of one of those sizes"
    )


def check_prompt(frames, actions, where: str = "prompt") -> Prompt:
    """Validate one prompt given as arrays: frames (P, H, W, 3) uint8, actions (P-1 or P, 16) or None if P = 1."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(
            f"{where}: frames must be uint8 of shape (P, H, W, 3) (channel-last RGB, P >= 1), "
            f"got {frames.shape} {frames.dtype}"
        )
    P = frames.shape[0]
    if actions is None:
        if P > 1:
            raise ValueError(f"{where}: {P} frames need the {P - 1} controller vectors taken at them")
        actions = np.zeros((0, controller.ACTION_DIM), np.float32)
    actions = np.asarray(actions, dtype=np.float32)
    if actions.ndim != 2 or actions.shape[0] not in (P - 1, P) or actions.shape[1] != controller.ACTION_DIM:
        raise ValueError(f"{where}: actions must have shape ({P - 1} or {P}, 16) for {P} frames, got {actions.shape}")
    controller.validate_actions(actions, f"{where} actions")
    return Prompt(frames, actions[: P - 1])


class PromptBank:
    """Episodes to draw prompts from; path-backed episodes are read lazily and kept in a small LRU cache.

    Build with :meth:`from_paths`, :meth:`from_arrays`, :meth:`gray` or :func:`make_prompt_bank`.
    """

    def __init__(self, episodes: Sequence[Prompt | str], cache_size: int = 4):
        if not episodes:
            raise ValueError("a prompt bank needs at least one episode")
        self.episodes = list(episodes)  # in-memory Prompt (a whole episode) or a source path
        self.cache_size = max(1, int(cache_size))
        self._cache: OrderedDict[str, Prompt] = OrderedDict()

    @classmethod
    def from_paths(cls, paths, cache_size: int = 4) -> "PromptBank":
        """Episodes from ``.npz`` files, Demonstrator folders, or folders holding them (searched recursively).

        Paths are checked now (missing, empty or truncated sources raise naming the path);
        frames are read only when a prompt is drawn from them.
        """

        sources = open_episodes(paths).sources
        for s in sources:
            if os.path.isfile(s) and not is_complete(s):
                read_episode(s)  # raises, saying what the file is and what a prompt source must be
                raise EpisodeFormatError(f"{s}: unreadable prompt source (not a complete .npz with images and actions)")
        return cls(sources, cache_size=cache_size)

    @classmethod
    def from_arrays(cls, frames, actions) -> "PromptBank":
        """One episode (frames (T, H, W, 3) uint8, actions (T or T-1, 16)) or lists of them."""
        if isinstance(frames, (list, tuple)):
            if not isinstance(actions, (list, tuple)) or len(actions) != len(frames):
                raise ValueError("prompt arrays: give as many action arrays as frame arrays")
            return cls([check_prompt(f, a, f"prompt episode {i}") for i, (f, a) in enumerate(zip(frames, actions))])
        return cls([check_prompt(frames, actions, "prompt episode")])

    @classmethod
    def gray(cls, size: tuple[int, int] = WHAM_SIZE) -> "PromptBank":
        """The fallback: a single flat mid-gray frame."""
        frame = np.full((1, *size, 3), GRAY, np.uint8)
        return cls([Prompt(frame, np.zeros((0, controller.ACTION_DIM), np.float32), source="gray")])

    def __len__(self) -> int:
        return len(self.episodes)

    def _episode(self, i: int) -> Prompt:
        ep = self.episodes[i]
        if isinstance(ep, Prompt):
            return ep
        if ep in self._cache:
            self._cache.move_to_end(ep)
            return self._cache[ep]

        loaded = load_episode(ep)
        prompt = Prompt(loaded.frames(), loaded.actions, source=ep)
        self._cache[ep] = prompt
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return prompt

    def sample(self, rng: np.random.Generator, n: int, length: int, size: tuple[int, int] | None = None,
               resize: bool = False, option: str | None = None) -> list[Prompt]:
        """``n`` prompts of ``length`` frames (fewer if an episode is shorter), fitted to ``size`` if given.

        Windows come from :func:`~wham_gym.data.windows.sample_windows` (an episode uniformly, then a
        start), reading only the episodes drawn.
        """
        lengths = _LazyLengths(self)
        episodes, starts, sizes = sample_windows(lengths, length, n, rng, per="episode", allow_short=True)
        out = []
        for i, start, P in zip(episodes.tolist(), starts.tolist(), sizes.tolist()):
            ep = self._episode(i)
            frames = np.ascontiguousarray(ep.frames[start:start + P])
            if size is not None:
                frames = fit_frames(frames, size, resize, where=ep.source or "prompt", option=option)
            actions = np.ascontiguousarray(ep.actions[start:start + P - 1], dtype=np.float32)
            out.append(Prompt(frames, actions, source=ep.source, start=start))
        return out


class _LazyLengths:
    """Episode lengths of a bank, each read (and the episode loaded) only when asked for."""

    def __init__(self, bank: PromptBank):
        self.bank = bank

    def __len__(self) -> int:
        return len(self.bank.episodes)

    def __getitem__(self, i: int) -> int:
        return len(self.bank._episode(int(i)))


def default_prompt_bank(model=None) -> PromptBank:
    """The prompt bank a model's card names (``card["prompts"]``, relative to its directory), else a flat gray frame."""
    path = getattr(model, "card", {}).get("prompts") if model is not None else None
    if path and not os.path.isabs(path) and getattr(model, "model_dir", None):
        path = os.path.join(model.model_dir, path)  # shipped inside the model directory
    return PromptBank.from_paths(path) if path else PromptBank.gray()


def make_prompt_bank(spec=None, model=None) -> PromptBank:
    """A PromptBank from: None (the default), a PromptBank, a path or list of paths, or (frames, actions) arrays."""
    if spec is None:
        return default_prompt_bank(model)
    if isinstance(spec, PromptBank):
        return spec
    if isinstance(spec, (str, os.PathLike)) or (
        isinstance(spec, (list, tuple)) and spec and all(isinstance(s, (str, os.PathLike)) for s in spec)
    ):
        return PromptBank.from_paths(spec)
    if isinstance(spec, dict):
        return PromptBank.from_arrays(spec.get("frames"), spec.get("actions"))
    if isinstance(spec, tuple) and len(spec) == 2:
        return PromptBank.from_arrays(*spec)
    raise ValueError(
        f"prompts: expected None, a PromptBank, a path or list of paths, or (frames, actions) arrays; "
        f"got {type(spec).__name__}"
    )
