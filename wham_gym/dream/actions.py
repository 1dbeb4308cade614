"""Where a dream's actions come from (``wham-gym dream --actions SRC``).

=====================  ==========================================================
SRC                    actions
=====================  ==========================================================
``file.csv``           rows of the 16 named controller columns (optional ``env``
                       and ``step`` columns; other columns are ignored, so a
                       dream's own ``actions.csv`` replays as it was written)
``file.json``          a list of 16-number lists, a list of such lists (one per
                       rollout), ``{"actions": ...}``, the server's
                       ``[{"action": [...]}, ...]`` or a Demonstrator
                       ``{"image0.png": [...], ...}`` table
``random``             the persistent exploration policy the ViZDoom recordings
                       use (held gaits and button habits, not white noise)
``model``              behaviour-policy mode: the model chooses each action
``fixed:NAME=V,...``   a constant controller vector (unnamed dims 0), e.g.
                       ``fixed:right_stick_x=1,button_0=1``
``replay``             the prompt episode's recorded actions after the prompt
=====================  ==========================================================

A source is called once per step with the newest frames (K, H, W, 3) and
returns (K, 16) controller vectors, or None for "let the model act".
"""

from __future__ import annotations

import csv
import json
import os
from typing import Protocol

import numpy as np

from .. import controller
from ..controller import ACTION_DIM, ACTION_NAMES
from ..data.reader import _IMAGE_NAME
from ..games.explore import ExplorePolicy


class ActionSource(Protocol):
    name: str

    def start(self, num: int, steps: int, seed: int) -> None:
        """Prepare ``num`` rollouts of ``steps`` steps; raise ValueError if this source cannot give them."""

    def __call__(self, t: int, frames: np.ndarray) -> np.ndarray | None:
        """Actions (num, 16) at step ``t`` given the newest frames (num, H, W, 3), or None (the model acts)."""


class TableActions:
    """Actions given up front: (1 or K, T, 16), the same table for every rollout when it has one."""

    def __init__(self, table: np.ndarray, name: str):
        table = np.asarray(table, dtype=np.float32)
        if table.ndim == 2:
            table = table[None]
        if table.ndim != 3 or table.shape[-1] != ACTION_DIM or table.shape[1] == 0:
            raise ValueError(f"{name}: expected (T, {ACTION_DIM}) or (K, T, {ACTION_DIM}) actions, got shape {table.shape}")
        controller.validate_actions(table.reshape(-1, ACTION_DIM), name)
        self.table, self.name = table, name

    def start(self, num: int, steps: int, seed: int) -> None:
        k, t = self.table.shape[:2]
        if k not in (1, num):
            raise ValueError(f"{self.name}: holds actions for {k} rollouts but --num is {num}; give one table or {num}")
        if t < steps:
            raise ValueError(f"{self.name}: holds {t} steps of actions but {steps} were asked; "
                             f"lower --steps to {t} or add actions")
        self.num = num

    def __call__(self, t: int, frames: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.table[:, t], (self.num, ACTION_DIM)).copy()


class FixedActions:
    """The same controller vector at every step of every rollout."""

    def __init__(self, vector: np.ndarray, name: str):
        self.vector, self.name = vector, name

    def start(self, num: int, steps: int, seed: int) -> None:
        self.num = num

    def __call__(self, t: int, frames: np.ndarray) -> np.ndarray:
        return np.tile(self.vector, (self.num, 1))


class ExploreActions:
    """One persistent exploration policy per rollout, each seeded ``seed + k``."""

    name = "random"

    def start(self, num: int, steps: int, seed: int) -> None:
        self.policies = [ExplorePolicy(seed=seed + k) for k in range(num)]

    def __call__(self, t: int, frames: np.ndarray) -> np.ndarray:
        return np.stack([p.act(f, {}) for p, f in zip(self.policies, frames)]).astype(np.float32)


class ModelActions:
    """Behaviour-policy mode: the engine samples the action the model predicts."""

    name = "model"

    def start(self, num: int, steps: int, seed: int) -> None:
        pass

    def __call__(self, t: int, frames: np.ndarray) -> None:
        return None


def parse_fixed(spec: str) -> np.ndarray:
    """``NAME=V,NAME=V`` (after ``fixed:``) as one controller vector; unnamed dims are 0."""
    vector = np.zeros(ACTION_DIM, np.float32)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"fixed actions: {part!r} is not NAME=VALUE (e.g. fixed:right_stick_x=1)")
        try:
            vector[controller.index_of(name.strip())] = float(value)
        except ValueError as exc:
            raise ValueError(f"fixed actions: {part!r}: {exc}") from None
    controller.validate_actions(vector[None], "fixed actions")
    return vector


def read_actions_csv(path: str) -> np.ndarray:
    """A CSV of controller vectors as (K, T, 16): grouped by an ``env`` column if present, ordered by ``step``."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: unreadable action file ({exc})") from None
    if not rows:
        raise ValueError(f"{path}: no action rows (expected a header with the 16 controller names, then one row per step)")
    missing = [n for n in ACTION_NAMES if n not in rows[0]]
    if missing:
        raise ValueError(f"{path}: missing controller columns {missing}; expected all of {', '.join(ACTION_NAMES)}")
    groups: dict[int, list[tuple[int, list[float]]]] = {}
    for i, row in enumerate(rows):
        try:
            env = int(row.get("env") or 0)
            step = int(row.get("step") or i)
            values = [float(row[n]) for n in ACTION_NAMES]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: row {i + 2}: {exc}") from None
        groups.setdefault(env, []).append((step, values))
    lengths = {len(g) for g in groups.values()}
    if len(lengths) != 1:
        raise ValueError(f"{path}: rollouts have different numbers of steps ({sorted(lengths)})")
    return np.array([[v for _, v in sorted(groups[e], key=lambda r: r[0])] for e in sorted(groups)], np.float32)


def read_actions_json(path: str) -> np.ndarray:
    """A JSON action file (see the module table) as (T, 16) or (K, T, 16)."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable action file ({exc})") from None
    if isinstance(data, dict) and "actions" in data:
        data = data["actions"]
    elif isinstance(data, dict):  # Demonstrator table: image<K>.png -> action, in K order

        if not all(_IMAGE_NAME.match(k) for k in data):
            raise ValueError(f'{path}: expected {{"actions": [...]}} or a Demonstrator {{"image0.png": [...]}} table')
        data = [data[k] for k in sorted(data, key=lambda k: int(_IMAGE_NAME.match(k).group(1)))]
        try:  # WHAM's format: snap to what WHAM would feed its model (float64 stick bins, truncated buttons)
            return controller.quantize(np.asarray(data, dtype=np.float64), buttons="wham")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: actions must be lists of {ACTION_DIM} numbers ({exc})") from None
    if isinstance(data, list) and data and all(isinstance(d, dict) and "action" in d for d in data):
        data = [d["action"] for d in data]
    try:
        return np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: actions must be lists of {ACTION_DIM} numbers ({exc})") from None


def make_action_source(spec, replay: np.ndarray | None = None) -> ActionSource:
    """An action source from a spec string (see the module table), an array, or a source object.

    ``replay``: the recorded actions following the prompt, for ``"replay"`` (None if the prompt has none).
    """
    if not isinstance(spec, (str, os.PathLike)):
        if hasattr(spec, "start") and callable(spec):
            return spec
        return TableActions(spec, "actions")
    spec = os.fspath(spec)
    if spec == "random":
        return ExploreActions()
    if spec == "model":
        return ModelActions()
    if spec.startswith("fixed:"):
        return FixedActions(parse_fixed(spec[6:]), spec)
    if spec == "replay":
        if replay is None:
            raise ValueError("--actions replay needs a prompt episode with recorded actions after the prompt "
                             "(a dataset .npz or recorded episode), not PNGs or the default prompt")
        return TableActions(replay, "replay (the prompt episode's recorded actions)")
    lower = spec.lower()
    if lower.endswith((".csv", ".json")):
        if not os.path.isfile(spec):
            raise FileNotFoundError(f"{spec}: no such action file")
        table = read_actions_csv(spec) if lower.endswith(".csv") else read_actions_json(spec)
        return TableActions(table, spec)
    raise ValueError(f"unknown action source {spec!r}; expected a .csv or .json file, random, model, "
                     "fixed:NAME=V,... or replay")
