"""The 16-dim game controller in WHAM's native order.

Indices 0-11 are buttons (in [0, 1], pressed when >= 0.5); 12-15 are the sticks
(left x, left y, right x, right y) in [-1, 1]. WHAM itself never sees the
continuous sticks: they are quantized into 11 bins (WHAM_FORMAT.md §6), so
every conversion here is exact to the reference's ``np.digitize`` rule.

All functions are batched over leading dimensions and accept numpy arrays or
torch tensors, returning the same kind.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

NUM_BUTTONS = 12
NUM_STICKS = 4
ACTION_DIM = NUM_BUTTONS + NUM_STICKS
NUM_STICK_BINS = 11
BUTTON_THRESHOLD = 0.5

BUTTON_NAMES = tuple(f"button_{i}" for i in range(NUM_BUTTONS))
STICK_NAMES = ("left_stick_x", "left_stick_y", "right_stick_x", "right_stick_y")
ACTION_NAMES = BUTTON_NAMES + STICK_NAMES
STICK_SLICE = slice(NUM_BUTTONS, ACTION_DIM)

# Reference constants (WHAM's wham/utils.py, restated): bin k covers [B[k], B[k+1]).
STICK_BIN_BOUNDARIES = np.array(
    [-1.05, -0.95, -0.75, -0.5, -0.25, -0.05, 0.05, 0.25, 0.5, 0.75, 0.95, 1.05]
)
STICK_BIN_MIDDLES = np.array(
    [-1.0, -0.85, -0.625, -0.375, -0.15, 0.0, 0.15, 0.375, 0.625, 0.85, 1.0]
)

ACTION_LOW = np.array([0.0] * NUM_BUTTONS + [-1.0] * NUM_STICKS, dtype=np.float32)
ACTION_HIGH = np.ones(ACTION_DIM, dtype=np.float32)


def action_space(seed: int | None = None):
    """The controller as a gymnasium Box: buttons in [0, 1], sticks in [-1, 1]."""
    from gymnasium import spaces

    return spaces.Box(ACTION_LOW.copy(), ACTION_HIGH.copy(), (ACTION_DIM,), np.float32, seed=seed)


def index_of(name: str) -> int:
    """Index of a named controller dimension (``"right_stick_x"`` -> 14)."""
    try:
        return ACTION_NAMES.index(name)
    except ValueError:
        raise ValueError(
            f"unknown controller dimension {name!r}; expected one of {', '.join(ACTION_NAMES)}"
        ) from None


def validate_actions(actions: Any, name: str = "actions", batch: int | None = None) -> None:
    """Reject actions of the wrong shape or with NaN/inf, naming row and dimension."""
    shape = tuple(actions.shape) if hasattr(actions, "shape") else None
    if shape is None or len(shape) == 0 or shape[-1] != ACTION_DIM:
        raise ValueError(
            f"{name}: expected an array of shape (..., {ACTION_DIM}) "
            f"(12 buttons then 4 sticks), got shape {shape}"
        )
    if batch is not None and (len(shape) != 2 or shape[0] != batch):
        raise ValueError(f"{name}: expected shape ({batch}, {ACTION_DIM}), got {shape}")
    finite = torch.isfinite(actions) if torch.is_tensor(actions) else np.isfinite(actions)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite) if torch.is_tensor(actions) else np.argwhere(~finite)
        where = tuple(int(i) for i in bad[0])
        row, dim = where[:-1], where[-1]
        raise ValueError(
            f"{name}: non-finite value at index {row if row else ''} dimension {dim} "
            f"({ACTION_NAMES[dim]}); actions must be finite numbers"
        )


def _like(ref, array: np.ndarray):
    return torch.as_tensor(array, device=ref.device) if torch.is_tensor(ref) else array


def sticks_to_bins(sticks):
    """Continuous stick values in [-1, 1] -> WHAM bin indices 0..10 (long / int64).

    Matches ``np.digitize(x, STICK_BIN_BOUNDARIES) - 1``: 0.0->5, 0.05->6, -0.05->5.
    Values outside [-1.05, 1.05) have no bin and raise ``ValueError``.
    """
    if torch.is_tensor(sticks):
        bounds = torch.as_tensor(STICK_BIN_BOUNDARIES, dtype=sticks.dtype, device=sticks.device)
        bins = torch.bucketize(sticks.contiguous(), bounds, right=True) - 1
        bad = (bins < 0) | (bins >= NUM_STICK_BINS)
    else:
        sticks = np.asarray(sticks)
        bounds = STICK_BIN_BOUNDARIES.astype(sticks.dtype) if sticks.dtype.kind == "f" else STICK_BIN_BOUNDARIES
        bins = np.digitize(sticks, bounds) - 1
        bad = (bins < 0) | (bins >= NUM_STICK_BINS)
    if bool(bad.any()):
        raise ValueError(
            "stick values must lie in [-1, 1] (WHAM's bins cover [-1.05, 1.05)); "
            f"got values outside that range, e.g. {float(sticks[bad].reshape(-1)[0])}"
        )
    return bins


def bins_to_sticks(bins):
    """WHAM stick bin indices 0..10 -> the bins' middle values in [-1, 1] (float32)."""
    if torch.is_tensor(bins):
        middles = torch.as_tensor(STICK_BIN_MIDDLES, dtype=torch.float32, device=bins.device)
        idx = bins.long()
        if bool(((idx < 0) | (idx >= NUM_STICK_BINS)).any()):
            raise ValueError(f"stick bins must be integers in 0..{NUM_STICK_BINS - 1}")
        return middles[idx]
    idx = np.asarray(bins).astype(np.int64)
    if ((idx < 0) | (idx >= NUM_STICK_BINS)).any():
        raise ValueError(f"stick bins must be integers in 0..{NUM_STICK_BINS - 1}")
    return STICK_BIN_MIDDLES.astype(np.float32)[idx]


def threshold_buttons(buttons):
    """Button values in [0, 1] -> 0/1 (pressed when >= 0.5), same dtype."""
    return (buttons >= BUTTON_THRESHOLD).to(buttons.dtype) if torch.is_tensor(buttons) else (
        (np.asarray(buttons) >= BUTTON_THRESHOLD).astype(np.asarray(buttons).dtype)
    )


def clip_actions(actions):
    """Clip controller vectors into the Box bounds."""
    if torch.is_tensor(actions):
        low = torch.as_tensor(ACTION_LOW, dtype=actions.dtype, device=actions.device)
        high = torch.as_tensor(ACTION_HIGH, dtype=actions.dtype, device=actions.device)
        return torch.minimum(torch.maximum(actions, low), high)
    return np.clip(actions, ACTION_LOW, ACTION_HIGH)


def to_wham(actions):
    """Controller vectors (sticks in [-1, 1]) -> WHAM's world-space actions.

    WHAM's world space (its dataset ``.npz`` files) stores buttons as 0/1 and
    sticks as bin indices 0..10, float32.
    """
    validate_actions(actions)
    if torch.is_tensor(actions):
        actions = actions.float()
        return torch.cat(
            [threshold_buttons(actions[..., :NUM_BUTTONS]), sticks_to_bins(actions[..., STICK_SLICE]).float()], -1
        )
    actions = np.asarray(actions, dtype=np.float32)
    out = np.empty_like(actions)
    out[..., :NUM_BUTTONS] = threshold_buttons(actions[..., :NUM_BUTTONS])
    out[..., STICK_SLICE] = sticks_to_bins(actions[..., STICK_SLICE])
    return out


def from_wham(wham_actions):
    """WHAM world-space actions (sticks as bins) -> controller vectors (sticks at bin middles)."""
    validate_actions(wham_actions, "wham_actions")
    if torch.is_tensor(wham_actions):
        w = wham_actions.float()
        return torch.cat([w[..., :NUM_BUTTONS], bins_to_sticks(w[..., STICK_SLICE])], -1)
    w = np.asarray(wham_actions, dtype=np.float32)
    out = w.copy()
    out[..., STICK_SLICE] = bins_to_sticks(w[..., STICK_SLICE])
    return out


def quantize(actions):
    """Snap controller vectors to exactly what WHAM can see (0/1 buttons, bin-middle sticks)."""
    return from_wham(to_wham(actions))
