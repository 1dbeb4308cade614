"""One episode as one ``.npz``: WHAM's sample-data layout plus what RL needs.

Keys (T = steps; ``images[t]`` is the frame the agent saw when it chose ``actions[t]``):

=====================  =====================  =============================================
key                    shape / dtype          meaning
=====================  =====================  =============================================
images                 (T,3,180,300) uint8    frames, channel-first as in WHAM's data (recordings), or
                       or (T,180,300,3)       channel-last like every API (the prompts a model ships)
actions                (T,16) float32         buttons 0/1, sticks as bin indices 0..10
rewards                (T,) float32           reward received after ``actions[t]``
terminated             (T,) bool              step t ended the episode (death, map exit)
truncated              (T,) bool              step t hit a timeout
game_variables         (T,V) float32          game state after ``actions[t]`` (optional)
game_variable_names    (V,) str
scenario               () str                 e.g. ``deathmatch``
seed                   () int64               replays the episode with ``reset(seed=...)``
=====================  =====================  =============================================

The official WHAM sample ``.npz`` has ``images``, ``actions`` and ``states``
only; ``read_episode`` reads both, in either image layout. ``write_episode`` writes
channel-first (WHAM's layout, what the recorder and training use) unless asked for
channel-last (the prompts a model ships). Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import os
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wham_gym import controller
from wham_gym.atomic import atomic_write

HEIGHT, WIDTH = 180, 300
FORMAT = "wham-gym-episode/1"
REQUIRED_KEYS = ("images", "actions")
OUR_KEYS = ("rewards", "terminated", "truncated", "scenario", "seed")
# What a prompt or episode source may be, for errors about files that are none of these.
EXPECTED_SOURCES = ("expected a wham-gym episode .npz (wham-gym record), a WHAM dataset .npz ('images' and "
                    "'actions'), or a Demonstrator folder (image<K>.png + actions.json); wham-gym dream --prompt "
                    "also takes PNG frames, in order")
# zlib level 1: Doom frames compress to ~57 KiB at 400 frames/s, against ~51 KiB at
# 100 frames/s for np.savez_compressed's level 6, which would throttle recording.
COMPRESS_LEVEL = 1


class EpisodeFormatError(ValueError):
    """An episode file or folder that does not hold a valid episode."""


@dataclass
class Episode:
    """One episode in WHAM's world space.

    ``images`` (T,3,180,300) uint8 CHW in memory (files may hold either layout); ``wham_actions`` (T,16) float32 with buttons
    0/1 and sticks as bin indices 0..10. Everything else is optional: the official
    sample data has no rewards, Demonstrator folders have only frames and actions.
    """

    images: np.ndarray
    wham_actions: np.ndarray
    rewards: np.ndarray | None = None
    terminated: np.ndarray | None = None
    truncated: np.ndarray | None = None
    game_variables: np.ndarray | None = None
    game_variable_names: tuple[str, ...] = ()
    states: np.ndarray | None = None
    scenario: str | None = None
    seed: int | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def actions(self) -> np.ndarray:
        """Controller vectors with sticks at bin middles in [-1, 1]."""
        return controller.from_wham(self.wham_actions)

    def frames(self) -> np.ndarray:
        """Frames as (T,180,300,3), the layout observations use."""
        return self.images.transpose(0, 2, 3, 1)


def validate_episode(ep: Episode, where: str | None = None) -> None:
    """Check shapes, dtypes and ranges; errors name the file and say what was expected."""
    where = where or ep.source or "episode"
    images, actions = ep.images, ep.wham_actions

    def fail(msg: str):
        raise EpisodeFormatError(f"{where}: {msg}")

    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (3, HEIGHT, WIDTH):
        fail(f"images must be (T,3,{HEIGHT},{WIDTH}) uint8 (channel-first in memory; files may hold "
             f"(T,{HEIGHT},{WIDTH},3) channel-last), got {images.shape} {images.dtype}")
    t = images.shape[0]
    if t == 0:
        fail("episode has no frames")
    if actions.dtype != np.float32 or actions.shape != (t, controller.ACTION_DIM):
        fail(f"actions must be ({t},{controller.ACTION_DIM}) float32 to match {t} frames, got {actions.shape} {actions.dtype}")
    if not np.isfinite(actions).all():
        fail("actions contain NaN or inf")
    buttons, sticks = actions[:, : controller.NUM_BUTTONS], actions[:, controller.STICK_SLICE]
    if not np.isin(buttons, (0.0, 1.0)).all():
        fail("buttons (action dims 0-11) must be 0 or 1")
    if not ((sticks >= 0) & (sticks <= controller.NUM_STICK_BINS - 1) & (sticks == np.round(sticks))).all():
        bad = sticks[~((sticks >= 0) & (sticks <= 10) & (sticks == np.round(sticks)))][0]
        fail(
            f"sticks (action dims 12-15) must be WHAM bin indices 0..10, found {bad}; "
            "sticks in [-1, 1] must be converted with wham_gym.controller.sticks_to_bins"
        )
    for name in ("rewards", "terminated", "truncated"):
        value = getattr(ep, name)
        if value is not None and value.shape != (t,):
            fail(f"{name} must have shape ({t},), got {value.shape}")
    if ep.rewards is not None and not np.isfinite(ep.rewards).all():
        fail("rewards contain NaN or inf")
    if ep.game_variables is not None:
        if ep.game_variables.ndim != 2 or ep.game_variables.shape != (t, len(ep.game_variable_names)):
            fail(
                f"game_variables must be ({t},{len(ep.game_variable_names)}) to match game_variable_names, "
                f"got {ep.game_variables.shape}"
            )


def write_episode(path: str | os.PathLike, ep: Episode, compresslevel: int | None = COMPRESS_LEVEL,
                  channels_last: bool = False) -> None:
    """Validate and write ``ep`` to ``path`` atomically (temp file in the same folder, then rename).

    ``compresslevel`` is zlib's 0-9 (``None`` stores uncompressed); any level reads back with ``np.load``.
    ``channels_last`` stores images (T,180,300,3) instead of WHAM's (T,3,180,300); both read back.
    """
    path = os.fspath(path)
    validate_episode(ep, path)
    images = ep.images.transpose(0, 2, 3, 1) if channels_last else ep.images
    arrays: dict[str, Any] = {"format": np.array(FORMAT), "images": images, "actions": ep.wham_actions}
    for name in ("rewards", "terminated", "truncated", "game_variables", "states"):
        value = getattr(ep, name)
        if value is not None:
            arrays[name] = value
    if ep.game_variables is not None:
        arrays["game_variable_names"] = np.array(ep.game_variable_names, dtype=str)
    if ep.scenario is not None:
        arrays["scenario"] = np.array(ep.scenario)
    if ep.seed is not None:
        arrays["seed"] = np.array(ep.seed, dtype=np.int64)
    atomic_write(path, lambda f: _write_npz(f, arrays, compresslevel))


def _write_npz(f, arrays: dict[str, Any], compresslevel: int | None) -> None:
    """``np.savez(_compressed)``'s layout with fixed zip timestamps, so equal content gives equal bytes (and hashes)."""
    method = zipfile.ZIP_STORED if compresslevel is None else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(f, "w", compression=method, compresslevel=compresslevel) as zf:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            # zf.open() ignores the ZipFile's level for a given ZipInfo; the attribute was renamed in 3.13.
            setattr(info, "compress_level" if hasattr(info, "compress_level") else "_compresslevel", compresslevel)
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def _sniff(path: str) -> tuple[str, bytes]:
    """What a file is at first sight: ``ours`` (a zip written by :func:`write_episode`, whose first
    member is ``format.npy``), ``zip``, ``empty`` or ``other``; and its first bytes."""
    with open(path, "rb") as f:
        head = f.read(94)
    if not head:
        return "empty", head
    if head[:4] != b"PK\x03\x04":
        return "other", head
    n = int.from_bytes(head[26:28], "little")
    return ("ours" if head[30:30 + n] == b"format.npy" else "zip"), head


def _what_it_is(head: bytes) -> str:
    if head.startswith(b"\x89PNG"):
        return "a PNG image (PNG frames are prompts for wham-gym dream --prompt, not episodes)"
    if head.startswith(b"\x93NUMPY"):
        return "a single .npy array, not an .npz archive"
    if all(b >= 32 or b in b"\t\n\r" for b in head):
        return "text, not an .npz archive"
    return f"not an .npz archive (it starts with {head[:8]!r})"


def read_episode(path: str | os.PathLike) -> Episode:
    """Read one episode ``.npz`` (ours or WHAM's official sample layout, images channel-last or
    channel-first) and validate it.

    A file that is not an episode gets an error saying what it is and what is expected; only a
    damaged file :func:`write_episode` wrote is called corrupt, with the advice to delete it.
    """
    path = os.fspath(path)
    kind, head = _sniff(path)  # FileNotFoundError, IsADirectoryError pass through
    if kind == "empty":
        raise EpisodeFormatError(f"{path}: the file is empty (0 bytes), not an episode; {EXPECTED_SOURCES}")
    if kind == "other":
        raise EpisodeFormatError(f"{path}: not an episode: the file is {_what_it_is(head)}; {EXPECTED_SOURCES}")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in REQUIRED_KEYS if k not in data.files]
            if missing:
                raise EpisodeFormatError(
                    f"{path}: not an episode: missing {missing} (it holds {sorted(data.files)}); an episode .npz "
                    f"holds 'images' (T,{HEIGHT},{WIDTH},3) or (T,3,{HEIGHT},{WIDTH}) uint8 and 'actions' (T,16) "
                    f"float32; {EXPECTED_SOURCES}"
                )
            get = lambda key: data[key] if key in data.files else None  # noqa: E731
            names = get("game_variable_names")
            scenario, seed = get("scenario"), get("seed")
            images = data["images"]
            if images.ndim == 4 and images.shape[1:] == (HEIGHT, WIDTH, 3):
                images = images.transpose(0, 3, 1, 2)  # channel-last file: a CHW view, no copy
            ep = Episode(
                images=images,
                wham_actions=data["actions"],
                rewards=get("rewards"),
                terminated=get("terminated"),
                truncated=get("truncated"),
                game_variables=get("game_variables"),
                game_variable_names=tuple(str(n) for n in names) if names is not None else (),
                states=get("states"),
                scenario=str(scenario) if scenario is not None else None,
                seed=int(seed) if seed is not None else None,
                source=path,
            )
    except EpisodeFormatError:
        raise
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as exc:
        if kind == "ours":
            raise EpisodeFormatError(
                f"{path}: a wham-gym episode that is corrupt or truncated ({type(exc).__name__}: {exc}); "
                "delete it (a recorder rerun re-records it)"
            ) from exc
        raise EpisodeFormatError(
            f"{path}: cannot read this .npz ({type(exc).__name__}: {exc}): it is damaged or truncated, or not a "
            f"NumPy .npz; {EXPECTED_SOURCES}"
        ) from exc
    validate_episode(ep, path)
    return ep


def read_game_variables(path: str | os.PathLike) -> tuple[tuple[str, ...], np.ndarray | None]:
    """An episode's recorded game variables, (names, (T, V) array or None), without decompressing its images:
    what analyses of the player's position or health over many episodes need (:func:`read_episode` reads all)."""
    with np.load(os.fspath(path), allow_pickle=False) as data:
        names = data["game_variable_names"] if "game_variable_names" in data.files else ()
        values = data["game_variables"] if "game_variables" in data.files else None
    return tuple(str(n) for n in names), values


def is_complete(path: str | os.PathLike) -> bool:
    """Cheap check that ``path`` is a finished episode file: a readable zip holding images and actions.

    Writes are atomic, so a file under its final name is complete unless it was
    damaged afterwards; a truncated file loses the zip directory at its end, which
    this catches without decompressing the frames.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            return {f"{k}.npy" for k in REQUIRED_KEYS} <= set(zf.namelist())
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError):
        return False
