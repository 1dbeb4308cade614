"""The 16-dim game controller in WHAM's native order.

Indices 0-11 are buttons (in [0, 1]); 12-15 are the sticks (left x, left y,
right x, right y) in [-1, 1]. WHAM itself never sees the continuous sticks:
they are quantized into 11 bins (WHAM_FORMAT.md §6). Binning is done in
float64 on the values as given, exactly like the reference's ``np.digitize``
on JSON doubles, so values at a bin boundary fall where WHAM puts them.

Buttons have two rules. ``"threshold"`` (the default, for agents and the env's
Box): pressed at >= 0.5, so a policy's continuous output means what it looks
like. ``"wham"``: WHAM's own conversion truncates (``.long()``), so only 1.0
is pressed and 0.5, 0.7 or 0.999 count as released; every WHAM-format input
(Demonstrator ``actions.json``, WHAM ``.npz``, the server protocol) uses it, so
its token ids equal WHAM's.

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
BUTTON_RULES = ("threshold", "wham")

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


def sticks_to_bins(sticks, check: bool = True):
    """Continuous stick values in [-1, 1] -> WHAM bin indices 0..10 (long / int64).

    Equals ``np.digitize(np.float64(x), STICK_BIN_BOUNDARIES) - 1`` for every input:
    0.0->5, 0.05->6, -0.05->5, and float32(-0.05) = -0.05000000074505806 -> 4 as in
    WHAM. Values outside [-1.05, 1.05) have no bin and raise ``ValueError``; ``check=False``
    skips that test (a host sync on a GPU) for values already clipped into [-1, 1].
    """
    if torch.is_tensor(sticks):
        x = sticks.double().contiguous()
        bounds = torch.as_tensor(STICK_BIN_BOUNDARIES, dtype=torch.float64, device=sticks.device)
        bins = torch.bucketize(x, bounds, right=True) - 1
    else:
        x = np.asarray(sticks, dtype=np.float64)
        bins = np.digitize(x, STICK_BIN_BOUNDARIES) - 1
    if not check:
        return bins
    bad = (bins < 0) | (bins >= NUM_STICK_BINS)
    if bool(bad.any()):
        raise ValueError(
            "stick values must lie in [-1, 1] (WHAM's bins cover [-1.05, 1.05)); "
            f"got values outside that range, e.g. {float(x[bad].reshape(-1)[0])}"
        )
    return bins


def bins_to_sticks(bins, check: bool = True):
    """WHAM stick bin indices 0..10 -> the bins' middle values in [-1, 1] (float32).

    ``check=False`` skips the range test (a host sync on a GPU) for bins the engine sampled itself.
    """
    if torch.is_tensor(bins):
        middles = torch.as_tensor(STICK_BIN_MIDDLES, dtype=torch.float32, device=bins.device)
        idx = bins.long()
        if check and bool(((idx < 0) | (idx >= NUM_STICK_BINS)).any()):
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


# Button i's token offset in WHAM's action vocabulary (model.vocab.ACTION_DIM_OFFSETS[:12]).
_BUTTON_TOKEN_OFFSETS = 2 * np.arange(NUM_BUTTONS)


def truncate_buttons(buttons):
    """Button values in [0, 1] -> 0/1 float32 exactly as WHAM's token encoder does.

    WHAM adds the token offset in float32 and truncates with ``.long()``: 0.5, 0.7 and
    0.999 are released, 1.0 is pressed (and so is a float32 value that rounds up to
    1.0 once its offset is added, which this reproduces).
    """
    if torch.is_tensor(buttons):
        offsets = torch.as_tensor(_BUTTON_TOKEN_OFFSETS, dtype=torch.float32, device=buttons.device)
        return (torch.trunc(buttons.float() + offsets) - offsets).float()
    offsets = _BUTTON_TOKEN_OFFSETS.astype(np.float32)
    return np.trunc(np.asarray(buttons, np.float32) + offsets) - offsets


def _check_rule(buttons: str) -> None:
    if buttons not in BUTTON_RULES:
        raise ValueError(f"buttons: expected one of {BUTTON_RULES}, got {buttons!r}")


def clip_actions(actions):
    """Clip controller vectors into the Box bounds."""
    if torch.is_tensor(actions):
        low = torch.as_tensor(ACTION_LOW, dtype=actions.dtype, device=actions.device)
        high = torch.as_tensor(ACTION_HIGH, dtype=actions.dtype, device=actions.device)
        return torch.minimum(torch.maximum(actions, low), high)
    return np.clip(actions, ACTION_LOW, ACTION_HIGH)


def to_wham(actions, buttons: str = "threshold", check: bool = True):
    """Controller vectors (sticks in [-1, 1]) -> WHAM's world-space actions.

    WHAM's world space (its dataset ``.npz`` files) stores buttons as 0/1 and
    sticks as bin indices 0..10, float32. ``buttons`` is the button rule (module
    docstring); sticks are binned in float64 from the values as given, so pass
    JSON numbers as float64, not rounded to float32 first. ``check=False`` is for callers that
    validated and clipped the actions at their own boundary (the engine's hot path).
    """
    _check_rule(buttons)
    if check:
        validate_actions(actions)
    press = threshold_buttons if buttons == "threshold" else truncate_buttons
    if torch.is_tensor(actions):
        return torch.cat(
            [press(actions[..., :NUM_BUTTONS].float()), sticks_to_bins(actions[..., STICK_SLICE], check).float()], -1
        )
    actions = np.asarray(actions)
    out = np.empty(actions.shape, np.float32)
    out[..., :NUM_BUTTONS] = press(actions[..., :NUM_BUTTONS].astype(np.float32))
    out[..., STICK_SLICE] = sticks_to_bins(actions[..., STICK_SLICE])
    return out


def from_wham(wham_actions, check: bool = True):
    """WHAM world-space actions (sticks as bins) -> controller vectors (sticks at bin middles).

    ``check=False``: values known valid (the engine's own sampled actions), no host sync.
    """
    if check:
        validate_actions(wham_actions, "wham_actions")
    if torch.is_tensor(wham_actions):
        w = wham_actions.float()
        return torch.cat([w[..., :NUM_BUTTONS], bins_to_sticks(w[..., STICK_SLICE], check)], -1)
    w = np.asarray(wham_actions, dtype=np.float32)
    out = w.copy()
    out[..., STICK_SLICE] = bins_to_sticks(w[..., STICK_SLICE])
    return out


def quantize(actions, buttons: str = "threshold"):
    """Snap controller vectors to exactly what WHAM can see (0/1 buttons, bin-middle sticks)."""
    return from_wham(to_wham(actions, buttons))
