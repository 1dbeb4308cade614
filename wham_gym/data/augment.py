"""Mirrored recordings: more data of a left-right symmetric game for free.

A left-right mirror of a first-person frame is what the mirrored room looks like, and the action that
led to it is the same action with its horizontal axes negated (strafe left <-> right, turn left <->
right). For a symmetric scenario (take_cover's room, defend_the_center's arena) a mirrored episode is an
episode the game could have produced, so a world model trained on both sees every move in both directions
equally often. The status bar is not part of the scene (mirrored text and a mirrored face are never
seen in play), so the bottom ``keep_bottom`` rows stay as they are.

Game variables (positions, angles) are dropped from a mirrored episode: the mirrored ones would depend on
the map's geometry. Buttons are kept (none of WHAM's 12 is left/right-handed in our Doom mapping).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import controller
from .episodes import Episode, is_complete, read_episode, write_episode

# The horizontal stick axes; WHAM's stick bins are symmetric about the middle bin (controller.py), so
# negating a value maps bin b to NUM_STICK_BINS - 1 - b.
MIRRORED_AXES = (controller.index_of("left_stick_x"), controller.index_of("right_stick_x"))
STATUS_BAR_ROWS = 32  # Doom's status bar at 300x180 (32 of the game's 200 rows, scaled: 29; with margin)


def mirror_episode(ep: Episode, keep_bottom: int = STATUS_BAR_ROWS) -> Episode:
    """``ep`` mirrored left-right: frames above the bottom ``keep_bottom`` rows flipped, horizontal sticks negated."""
    height = ep.images.shape[2]
    if not 0 <= keep_bottom < height:
        raise ValueError(f"keep_bottom: expected rows in [0, {height}), got {keep_bottom!r}")
    images = ep.images.copy()
    top = height - keep_bottom
    images[:, :, :top] = ep.images[:, :, :top, ::-1]
    actions = ep.wham_actions.copy()
    axes = list(MIRRORED_AXES)
    actions[:, axes] = controller.NUM_STICK_BINS - 1 - actions[:, axes]
    return replace(ep, images=images, wham_actions=actions, game_variables=None, game_variable_names=(),
                   extra={**ep.extra, "mirrored": True}, source=f"{ep.source} (mirrored)")


def mirror_recording(src, out, keep_bottom: int = STATUS_BAR_ROWS, progress: bool = True) -> int:
    """Write every episode ``src/*.npz`` mirrored into ``out`` under the same name; returns how many it wrote.

    Resumable: episodes already complete in ``out`` are skipped (each write is atomic)."""
    from tqdm import tqdm

    src, out = Path(src), Path(out)
    sources = sorted(src.glob("*.npz"))
    if not sources:
        raise FileNotFoundError(f"{src}: no episode .npz files (expected a wham-gym record folder)")
    if out.resolve() == src.resolve():
        raise ValueError(f"out must differ from src ({src}): mirrored episodes would replace the originals")
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for s in tqdm(sources, desc="mirroring", unit="episode", disable=not progress):
        dst = out / s.name
        if dst.exists() and is_complete(dst):
            continue
        write_episode(dst, mirror_episode(read_episode(s), keep_bottom))
        written += 1
    return written
