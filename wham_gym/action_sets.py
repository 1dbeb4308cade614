"""Action sets: a few named controller presets (or axes) an agent can learn with, the same in both worlds.

A policy over the full 16-dim controller spends most of its exploration on buttons
and sticks a scenario ignores, and a Gaussian's mean over a button pressed at >= 0.5
may never fire. An :class:`ActionSet` names the few inputs a scenario needs:

* presets: named 16-dim controller vectors (``"left"`` = left stick x at -1), built
  from ``{controller name: value}`` with every other dimension 0, for a ``Discrete(n)``
  policy (:class:`DiscreteActions`, :class:`DiscreteVectorActions`);
* axes (optional): controller dimensions a small continuous ``Box`` exposes (e.g.
  ``left_stick_x`` in [-1, 1]), every other dimension 0, for SAC (:class:`AxesActions`,
  :class:`AxesVectorActions`); an axis with ``levels`` snaps to the nearest of them, the
  values a world model was trained on (take_cover's recordings hold the stick at -1, 0
  and +1 only: a value between would reach the dream as a stick bin it never saw).

The wrappers sit over anything whose action space is the 16-dim controller Box, so
``DiscreteActions(gym.make("wham_gym/Doom-v0", scenario="take_cover"), "take_cover")``
and ``DiscreteActions(WHAMEnv(model), "take_cover")`` have the same action space and
send the same controller vector for the same index. SB3 VecEnv versions live in
:mod:`wham_gym.action_sets_sb3` (importing this module does not import SB3).

Every preset value is one WHAM can see exactly (buttons 0 or 1, sticks at a bin
middle, ``controller.quantize(v) == v``), so a preset means the same to the world
model and to the game. Turning uses right stick x = -/+0.625 (5 deg/tic in Doom,
17.5 deg a step): -/+0.5 would bin asymmetrically, to -0.375 and +0.625.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import VectorActionWrapper, VectorEnv
from gymnasium.vector.utils import batch_space

from . import controller


@dataclass(frozen=True)
class Preset:
    """One named controller vector: ``values`` names the dimensions that are not 0."""

    name: str
    values: tuple[tuple[str, float], ...]

    @property
    def vector(self) -> np.ndarray:
        """The full 16-dim controller vector (float32)."""
        v = np.zeros(controller.ACTION_DIM, np.float32)
        for dim, value in self.values:
            v[controller.index_of(dim)] = value
        return v


@dataclass(frozen=True)
class ActionSet:
    """A named list of controller presets, and optionally the controller axes a continuous Box exposes.

    Args:
        name: the set's name (built-in sets are named after their ViZDoom scenario).
        presets: ``{preset name: {controller name: value}}``, or a sequence of ``(name, {...})``
            pairs / :class:`Preset`; order gives the Discrete index. Controller names are
            :data:`wham_gym.controller.ACTION_NAMES` (``"button_0"``, ``"left_stick_x"``, ...).
            Values must be ones WHAM sees exactly: buttons 0 or 1, sticks one of
            :data:`~wham_gym.controller.STICK_BIN_MIDDLES`.
        axes: ``{controller name: (low, high)}``, a sequence of ``(name, low, high)`` or of bare
            names (the dimension's full range); the ranges lie within the controller's.
        description: one line saying what the set is for.
        levels: ``{axis name: (value, ...)}``: the values an axis snaps to (the nearest), each
            one WHAM sees exactly; axes not named stay continuous. Kept as sorted
            ``(name, values)`` pairs.
    """

    name: str
    presets: Any
    axes: Any = ()
    description: str = ""
    levels: Any = None
    vectors: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"action set name: expected a non-empty string, got {self.name!r}")
        presets = _normalize_presets(self.name, self.presets)
        axes = _normalize_axes(self.name, self.axes)
        levels = _normalize_levels(self.name, axes, self.levels)
        vectors = np.stack([p.vector for p in presets])
        vectors.setflags(write=False)
        object.__setattr__(self, "presets", presets)
        object.__setattr__(self, "axes", axes)
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "vectors", vectors)

    def __reduce__(self):  # rebuilt on unpickling (SubprocVecEnv workers), so vectors stay read-only
        return (type(self), (self.name, self.presets, self.axes, self.description, self.levels))

    # -- presets ---------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.presets)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.presets)

    def index(self, preset: str) -> int:
        """The Discrete index of a preset by name."""
        try:
            return self.names.index(preset)
        except ValueError:
            raise ValueError(f"action set {self.name!r} has no preset {preset!r}; "
                             f"its presets: {', '.join(self.names)}") from None

    def vector(self, preset: int | str) -> np.ndarray:
        """One preset's 16-dim controller vector, by index or name (a copy)."""
        i = self.index(preset) if isinstance(preset, str) else int(preset)
        if not 0 <= i < len(self):
            raise ValueError(f"action set {self.name!r}: preset index {i} out of range 0..{len(self) - 1}")
        return self.vectors[i].copy()

    def discrete_space(self, seed: int | None = None) -> spaces.Discrete:
        return spaces.Discrete(len(self), seed=seed)

    def to_controller(self, indices):
        """Preset indices (any shape; numpy, int or torch) -> controller vectors (..., 16) float32.

        A torch tensor gives a tensor on its device; anything else a numpy array.
        """
        if torch.is_tensor(indices):
            if indices.dtype.is_floating_point or indices.dtype == torch.bool or indices.is_complex():
                raise ValueError(f"action set {self.name!r}: preset indices must be integers, got {indices.dtype}")
            bad = (indices < 0) | (indices >= len(self))
            if bool(bad.any()):
                raise ValueError(f"action set {self.name!r}: preset indices must lie in 0..{len(self) - 1}, "
                                 f"got {int(indices[bad].reshape(-1)[0])}")
            return torch.tensor(self.vectors, device=indices.device)[indices.long()]
        idx = np.asarray(indices)
        if idx.dtype.kind not in "iu":
            raise ValueError(f"action set {self.name!r}: preset indices must be integers, got {indices!r}")
        bad = (idx < 0) | (idx >= len(self))
        if bad.any():
            raise ValueError(f"action set {self.name!r}: preset indices must lie in 0..{len(self) - 1}, "
                             f"got {int(idx[bad].reshape(-1)[0])}")
        return np.take(self.vectors, idx, axis=0)  # a copy

    # -- axes ------------------------------------------------------------------

    @property
    def axis_names(self) -> tuple[str, ...]:
        return tuple(a[0] for a in self.axes)

    def axes_space(self, seed: int | None = None) -> spaces.Box:
        """A Box over the set's axes (ValueError when the set has none)."""
        self._need_axes()
        low = np.array([a[1] for a in self.axes], np.float32)
        high = np.array([a[2] for a in self.axes], np.float32)
        return spaces.Box(low, high, (len(self.axes),), np.float32, seed=seed)

    def axes_to_controller(self, values):
        """Axis values (..., k), clipped into their ranges (and snapped to an axis's ``levels``) -> controller
        vectors (..., 16), other dims 0."""
        self._need_axes()
        k = len(self.axes)
        index = [controller.index_of(a[0]) for a in self.axes]
        low = np.array([a[1] for a in self.axes], np.float32)
        high = np.array([a[2] for a in self.axes], np.float32)
        shape = tuple(getattr(values, "shape", np.shape(values)))
        if not shape or shape[-1] != k:
            raise ValueError(f"action set {self.name!r}: expected axis values of shape (..., {k}) "
                             f"({', '.join(self.axis_names)}), got shape {shape}")
        if torch.is_tensor(values):
            v = values.float()
            if not bool(torch.isfinite(v).all()):
                raise ValueError(f"action set {self.name!r}: axis values must be finite")
            v = torch.minimum(torch.maximum(v, torch.as_tensor(low, device=v.device)),
                              torch.as_tensor(high, device=v.device))
            out = torch.zeros(*shape[:-1], controller.ACTION_DIM, dtype=torch.float32, device=v.device)
        else:
            v = np.asarray(values, np.float32)
            if not np.isfinite(v).all():
                raise ValueError(f"action set {self.name!r}: axis values must be finite")
            v = np.clip(v, low, high)
            out = np.zeros((*shape[:-1], controller.ACTION_DIM), np.float32)
        out[..., index] = v
        levels = dict(self.levels)
        for j, name in enumerate(self.axis_names):
            if name in levels:  # the nearest level (ties: the lower); abs/argmin read alike in numpy and torch
                grid = torch.as_tensor(levels[name], device=v.device) if torch.is_tensor(v) else \
                    np.asarray(levels[name], np.float32)
                out[..., index[j]] = grid[abs(v[..., j, None] - grid).argmin(-1)]
        return out

    def _need_axes(self) -> None:
        if not self.axes:
            raise ValueError(f"action set {self.name!r} exposes no axes; use its presets (Discrete), "
                             "or give it axes=")

    # -- as data (a model card can carry one) ------------------------------------

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description,
                "presets": {p.name: dict(p.values) for p in self.presets},
                "axes": {a: [lo, hi] for a, lo, hi in self.axes},
                **({"levels": {a: list(v) for a, v in self.levels}} if self.levels else {})}

    @classmethod
    def from_dict(cls, data: Mapping) -> "ActionSet":
        unknown = set(data) - {"name", "description", "presets", "axes", "levels"}
        if unknown or "name" not in data or "presets" not in data:
            raise ValueError("an action set as data: expected keys name, presets and optionally axes, levels, "
                             f"description; got {sorted(data)}")
        return cls(data["name"], data["presets"], data.get("axes", ()), data.get("description", ""),
                   data.get("levels"))


def _normalize_presets(set_name: str, presets) -> tuple[Preset, ...]:
    if isinstance(presets, Mapping):
        items = list(presets.items())
    elif isinstance(presets, (str, bytes)) or not isinstance(presets, Iterable):
        raise ValueError(f"action set {set_name!r}: presets must be a mapping or a sequence of (name, values) "
                         f"pairs, got {type(presets).__name__}")
    else:
        items = [(p.name, dict(p.values)) if isinstance(p, Preset) else p for p in presets]
    if not items:
        raise ValueError(f"action set {set_name!r}: needs at least one preset")
    out, seen = [], set()
    for item in items:
        try:
            name, values = item
        except (TypeError, ValueError):
            raise ValueError(f"action set {set_name!r}: each preset is (name, {{controller name: value}}), "
                             f"got {item!r}") from None
        if not isinstance(name, str) or not name:
            raise ValueError(f"action set {set_name!r}: preset names must be non-empty strings, got {name!r}")
        if name in seen:
            raise ValueError(f"action set {set_name!r}: preset {name!r} is named twice")
        seen.add(name)
        if not isinstance(values, Mapping):
            raise ValueError(f"action set {set_name!r}, preset {name!r}: expected {{controller name: value}}, "
                             f"got {values!r}")
        pairs = []
        for dim, value in values.items():
            where = f"action set {set_name!r}, preset {name!r}"
            i = _dim_index(dim, where)
            pairs.append((dim, _exact_value(i, value, where)))
        out.append(Preset(name, tuple(pairs)))
    return tuple(out)


def _dim_index(dim, where: str) -> int:
    try:
        return controller.index_of(dim)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _exact_value(i: int, value, where: str) -> float:
    dim = controller.ACTION_NAMES[i]
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {dim} must be a number, got {value!r}") from None
    low, high = float(controller.ACTION_LOW[i]), float(controller.ACTION_HIGH[i])
    if not (math.isfinite(v) and low <= v <= high):
        raise ValueError(f"{where}: {dim}={value!r} is out of range [{low:g}, {high:g}]")
    if i < controller.NUM_BUTTONS:
        if v not in (0.0, 1.0):
            raise ValueError(f"{where}: {dim}={v:g}; a button preset is 0 (released) or 1 (pressed), "
                             "the values WHAM's files and the game agree on")
        return v
    seen = float(controller.quantize(np.eye(1, controller.ACTION_DIM, i, dtype=np.float64) * v)[0, i])
    if np.float32(v) != np.float32(seen):
        middles = ", ".join(f"{m:g}" for m in controller.STICK_BIN_MIDDLES)
        raise ValueError(f"{where}: {dim}={v:g} is not one of WHAM's stick bin middles; the world model and "
                         f"the game would both see {seen:g}. Use one of: {middles}")
    return v


def _normalize_axes(set_name: str, axes) -> tuple[tuple[str, float, float], ...]:
    if axes is None:
        return ()
    items = list(axes.items()) if isinstance(axes, Mapping) else list(axes)
    out, seen = [], set()
    for item in items:
        if isinstance(item, str):
            dim, rng = item, None
        elif isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str):
            dim, rng = item  # (name, (low, high)) from a mapping's items
        elif isinstance(item, tuple | list) and len(item) == 3:
            dim, rng = item[0], item[1:]
        else:
            raise ValueError(f"action set {set_name!r}: an axis is a controller name, (name, low, high) or "
                             f"{{name: (low, high)}}, got {item!r}")
        where = f"action set {set_name!r}, axis {dim!r}"
        i = _dim_index(dim, where)
        if dim in seen:
            raise ValueError(f"{where}: named twice")
        seen.add(dim)
        low, high = float(controller.ACTION_LOW[i]), float(controller.ACTION_HIGH[i])
        if rng is None:
            lo, hi = low, high
        else:
            try:
                lo, hi = (float(x) for x in rng)
            except (TypeError, ValueError):
                raise ValueError(f"{where}: expected a (low, high) range, got {rng!r}") from None
            if not (math.isfinite(lo) and math.isfinite(hi) and low <= lo < hi <= high):
                raise ValueError(f"{where}: range [{lo:g}, {hi:g}] must be non-empty and within the controller's "
                                 f"[{low:g}, {high:g}]")
        out.append((dim, lo, hi))
    return tuple(out)


def _normalize_levels(set_name: str, axes, levels) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """Levels as sorted ``(axis name, values)`` pairs: a tuple, so the frozen set stays hashable."""
    if not levels:
        return ()
    try:
        levels = dict(levels)  # a mapping, or the (name, values) pairs a set keeps
    except (TypeError, ValueError):
        raise ValueError(f"action set {set_name!r}: levels must be {{axis name: (value, ...)}}, got {levels!r}") \
            from None
    ranges = {a: (lo, hi) for a, lo, hi in axes}
    out = {}
    for dim, values in levels.items():
        where = f"action set {set_name!r}, levels of {dim!r}"
        if dim not in ranges:
            raise ValueError(f"{where}: not one of the set's axes ({', '.join(ranges) or 'none'})")
        try:
            values = [float(v) for v in values]
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected a sequence of numbers, got {values!r}") from None
        lo, hi = ranges[dim]
        if len(set(values)) < 2 or not all(lo <= v <= hi for v in values):
            raise ValueError(f"{where}: expected two or more distinct values within the axis's [{lo:g}, {hi:g}], "
                             f"got {values}")
        i = _dim_index(dim, where)
        out[dim] = tuple(sorted(_exact_value(i, v, where) for v in set(values)))
    return tuple(sorted(out.items()))


# ---------------------------------------------------------------------------- built-in sets

TURN = 0.625  # right stick x: 5 deg/tic in Doom (8 deg/tic at 1); a bin middle, so exact in both worlds

_STILL = {}
_LEFT, _RIGHT = {"left_stick_x": -1.0}, {"left_stick_x": 1.0}  # strafe (MOVE_LEFT_RIGHT_DELTA)
_FORWARD = {"left_stick_y": -1.0}  # stick up walks forward
_TURN_LEFT, _TURN_RIGHT = {"right_stick_x": -TURN}, {"right_stick_x": TURN}
_FIRE = {"button_0": 1.0}  # ATTACK (games/doom.py BUTTON_MAPPING[0])

BUILTIN_ACTION_SETS: dict[str, ActionSet] = {
    s.name: s
    for s in (
        # Its recordings hold the stick at -1, 0 or +1: SAC's values between reached the dream as bins the world
        # model never saw, and SAC learned nothing there (agents/RESULTS.md); snapped, both worlds agree.
        ActionSet("take_cover", {"none": _STILL, "left": _LEFT, "right": _RIGHT},
                  axes={"left_stick_x": (-1.0, 1.0)}, levels={"left_stick_x": (-1.0, 0.0, 1.0)},
                  description="dodge fireballs: stand, strafe left, strafe right"),
        ActionSet("defend_the_center", {"turn_left": _TURN_LEFT, "turn_right": _TURN_RIGHT, "fire": _FIRE},
                  axes={"right_stick_x": (-1.0, 1.0), "button_0": (0.0, 1.0)},
                  description="turn on the spot and shoot"),
        ActionSet("defend_the_line", {"turn_left": _TURN_LEFT, "turn_right": _TURN_RIGHT, "fire": _FIRE},
                  axes={"right_stick_x": (-1.0, 1.0), "button_0": (0.0, 1.0)},
                  description="turn on the spot and shoot"),
        ActionSet("basic", {"left": _LEFT, "right": _RIGHT, "fire": _FIRE},
                  axes={"left_stick_x": (-1.0, 1.0), "button_0": (0.0, 1.0)},
                  description="strafe in front of one monster and shoot"),
        ActionSet("health_gathering", {"turn_left": _TURN_LEFT, "turn_right": _TURN_RIGHT, "forward": _FORWARD},
                  axes={"right_stick_x": (-1.0, 1.0), "left_stick_y": (-1.0, 0.0)},
                  description="walk forward and turn"),
        ActionSet("my_way_home", {"turn_left": _TURN_LEFT, "turn_right": _TURN_RIGHT, "forward": _FORWARD,
                                  "left": _LEFT, "right": _RIGHT},
                  axes={"right_stick_x": (-1.0, 1.0), "left_stick_y": (-1.0, 0.0), "left_stick_x": (-1.0, 1.0)},
                  description="walk, strafe and turn through a maze"),
    )
}


def action_set_for(source) -> ActionSet:
    """The action set for a model, a model card, a set name, or an env.

    * an :class:`ActionSet`: itself;
    * a name: the built-in set of that name (:data:`BUILTIN_ACTION_SETS`);
    * a model card (a dict) or anything carrying one (a loaded model, ``WHAMEnv``,
      ``WHAMVectorEnv``, a ``DreamEngine``): ``card["action_set"]`` (a set name, or a set
      as data, see :meth:`ActionSet.to_dict`), else the built-in set named like
      ``card["scenario"]``;
    * a ``DoomEnv`` (or a wrapper of one): the built-in set named like its scenario.
    """
    if isinstance(source, ActionSet):
        return source
    if isinstance(source, str):
        return _named(source)
    if isinstance(source, Mapping):
        return _from_card(source)
    obj = getattr(source, "unwrapped", source)
    engine = getattr(obj, "engine", None)
    for holder in (obj, getattr(obj, "model", None), getattr(engine, "model", None)):  # model, vector env, env
        card = getattr(holder, "card", None)
        if isinstance(card, Mapping):
            return _from_card(card)
    scenario = getattr(obj, "scenario", None)
    if isinstance(scenario, str):
        return _for_scenario(scenario, f"the game's scenario {scenario!r}")
    raise TypeError(f"action_set_for: expected an ActionSet, a set name, a model card, a model or an env, "
                    f"got {type(source).__name__}")


def _known() -> str:
    return ", ".join(BUILTIN_ACTION_SETS)


def _named(name: str) -> ActionSet:
    if name not in BUILTIN_ACTION_SETS:
        raise ValueError(f"unknown action set {name!r}; known sets: {_known()} (or build an ActionSet)")
    return BUILTIN_ACTION_SETS[name]


def _scenario_name(scenario: str) -> str:
    """``take_cover`` or ``/path/to/take_cover.cfg`` -> ``take_cover``."""
    base = os.path.basename(scenario)
    return base[:-4] if base.endswith(".cfg") else base


def _for_scenario(scenario: str, what: str) -> ActionSet:
    name = _scenario_name(scenario)
    if name not in BUILTIN_ACTION_SETS:
        raise ValueError(f"no built-in action set for {what}; known sets: {_known()}. Pass one of them, "
                         "or an ActionSet")
    return BUILTIN_ACTION_SETS[name]


def _from_card(card: Mapping) -> ActionSet:
    named = card.get("action_set")
    if isinstance(named, ActionSet):
        return named
    if isinstance(named, str):
        return _named(named)
    if isinstance(named, Mapping):
        return ActionSet.from_dict(named)
    if named is not None:
        raise ValueError(f"model card: action_set must be a set name or a set as data, got {named!r}")
    scenario = card.get("scenario")
    model = card.get("name", "?")
    if not isinstance(scenario, str):
        raise ValueError(f"model {model!r}: its card names no action set (card['action_set']) and no scenario; "
                         f"known sets: {_known()}. Pass one of them, or an ActionSet")
    return _for_scenario(scenario, f"model {model!r}'s scenario {scenario!r} (its card has no 'action_set')")


# ---------------------------------------------------------------------------- Gymnasium wrappers

def _check_controller_box(space, who: str) -> None:
    if not (isinstance(space, spaces.Box) and space.shape == (controller.ACTION_DIM,)):
        raise ValueError(f"{who} wraps an env whose action space is the 16-dim controller Box, got {space}")


def _resolve(action_set, env) -> ActionSet:
    return action_set_for(env if action_set is None else action_set)


def _record(wrapper, action_set: ActionSet) -> None:
    """Record the wrapper's arguments so ``env.spec`` can rebuild it (a built-in set by name)."""
    builtin = BUILTIN_ACTION_SETS.get(action_set.name) is action_set
    gym.utils.RecordConstructorArgs.__init__(wrapper, action_set=action_set.name if builtin else action_set)


class DiscreteActions(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """``Discrete(n)`` over an action set's presets, for one env taking the controller (WHAMEnv, DoomEnv).

    ``action_set``: an :class:`ActionSet`, a set name, a model card or a model; None derives it
    from the env (a DoomEnv's scenario, a WHAMEnv model's card).
    """

    def __init__(self, env: gym.Env, action_set=None):
        _check_controller_box(env.action_space, "DiscreteActions")
        super().__init__(env)
        self.action_set = _resolve(action_set, env)
        _record(self, self.action_set)
        self.action_space = self.action_set.discrete_space()

    def action(self, action) -> np.ndarray:
        a = action if torch.is_tensor(action) else np.asarray(action)
        if tuple(a.shape) not in ((), (1,)):
            raise ValueError(f"DiscreteActions: expected one preset index, got shape {tuple(a.shape)}")
        out = self.action_set.to_controller(a.reshape(()))
        return out.cpu().numpy() if torch.is_tensor(out) else out  # a fresh array


class DiscreteVectorActions(VectorActionWrapper, gym.utils.RecordConstructorArgs):
    """``MultiDiscrete([n] * N)`` (``single_action_space`` ``Discrete(n)``) over a vector env (WHAMVectorEnv).

    Actions are N preset indices (numpy, or torch for ``return_torch`` envs: the vectors stay on
    that device).
    """

    def __init__(self, env: VectorEnv, action_set=None):
        _check_controller_box(env.single_action_space, "DiscreteVectorActions")
        super().__init__(env)
        self.action_set = _resolve(action_set, env)
        _record(self, self.action_set)
        self.single_action_space = self.action_set.discrete_space()
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def actions(self, actions):
        a = actions if torch.is_tensor(actions) else np.asarray(actions)
        if tuple(a.shape) != (self.num_envs,):
            raise ValueError(f"DiscreteVectorActions: expected {self.num_envs} preset indices, shape "
                             f"({self.num_envs},), got shape {tuple(a.shape)}")
        return self.action_set.to_controller(a)


class AxesActions(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """A small ``Box`` over an action set's axes (other controller dims 0), for one env; values are clipped."""

    def __init__(self, env: gym.Env, action_set=None):
        _check_controller_box(env.action_space, "AxesActions")
        super().__init__(env)
        self.action_set = _resolve(action_set, env)
        _record(self, self.action_set)
        self.action_space = self.action_set.axes_space()

    def action(self, action) -> np.ndarray:
        out = self.action_set.axes_to_controller(action)
        if tuple(out.shape) != (controller.ACTION_DIM,):
            raise ValueError(f"AxesActions: expected one action of shape {self.action_space.shape}, "
                             f"got shape {np.shape(action)}")
        return out.cpu().numpy() if torch.is_tensor(out) else out


class AxesVectorActions(VectorActionWrapper, gym.utils.RecordConstructorArgs):
    """``Box`` (N, k) over an action set's axes for a vector env; ``single_action_space`` is the (k,) Box."""

    def __init__(self, env: VectorEnv, action_set=None):
        _check_controller_box(env.single_action_space, "AxesVectorActions")
        super().__init__(env)
        self.action_set = _resolve(action_set, env)
        _record(self, self.action_set)
        self.single_action_space = self.action_set.axes_space()
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def actions(self, actions):
        out = self.action_set.axes_to_controller(actions)
        if tuple(out.shape) != (self.num_envs, controller.ACTION_DIM):
            raise ValueError(f"AxesVectorActions: expected actions of shape {self.action_space.shape}, "
                             f"got shape {tuple(getattr(actions, 'shape', np.shape(actions)))}")
        return out
