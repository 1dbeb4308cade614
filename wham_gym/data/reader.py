"""Read episodes from files and folders, one at a time.

Sources: our recorded ``.npz`` episodes (images channel-first, or channel-last as
in the prompts a model ships), WHAM's official sample ``.npz`` (with
``states``, no rewards) and Demonstrator folders (``image0.png`` ... plus
``actions.json`` with sticks in [-1, 1]). Compressed ``.npz`` cannot be
memory-mapped, so an episode is loaded only when iteration reaches it and
dropped after; nothing holds the whole dataset in RAM.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from wham_gym import controller
from wham_gym.data.episodes import (
    EXPECTED_SOURCES, HEIGHT, WIDTH, Episode, EpisodeFormatError, read_episode, validate_episode,
)

DEMONSTRATOR_ACTIONS = "actions.json"
_IMAGE_NAME = re.compile(r"image(\d+)\.png$")


def is_demonstrator_folder(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, DEMONSTRATOR_ACTIONS))


def read_demonstrator_folder(path: str) -> Episode:
    """A Demonstrator example folder as an episode (frames in imageK order, sticks binned)."""
    from PIL import Image

    actions_path = os.path.join(path, DEMONSTRATOR_ACTIONS)
    try:
        with open(actions_path) as f:
            table = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise EpisodeFormatError(f"{actions_path}: unreadable ({exc})") from exc
    if not isinstance(table, dict) or not table:
        raise EpisodeFormatError(f'{actions_path}: expected a JSON object {{"image0.png": [16 numbers], ...}}')
    names = sorted(table, key=lambda n: int(_IMAGE_NAME.match(n).group(1)) if _IMAGE_NAME.match(n) else -1)
    bad = [n for n in names if not _IMAGE_NAME.match(n)]
    if bad:
        raise EpisodeFormatError(f"{actions_path}: keys must be image<K>.png, found {bad[:3]}")
    images, actions = [], []
    for name in names:
        image_path = os.path.join(path, name)
        try:
            with Image.open(image_path) as im:
                frame = np.asarray(im.convert("RGB"))
        except OSError as exc:
            raise EpisodeFormatError(f"{image_path}: cannot read the image ({exc})") from exc
        if frame.shape != (HEIGHT, WIDTH, 3):
            raise EpisodeFormatError(f"{image_path}: expected a {WIDTH}x{HEIGHT} image, got {frame.shape[1]}x{frame.shape[0]}")
        action = np.asarray(table[name], dtype=np.float64)  # JSON doubles, binned as given (like run_server)
        if action.shape != (controller.ACTION_DIM,):
            raise EpisodeFormatError(f"{actions_path}: {name} needs {controller.ACTION_DIM} numbers, got shape {action.shape}")
        images.append(frame.transpose(2, 0, 1))
        actions.append(action)
    try:
        wham_actions = controller.to_wham(np.stack(actions), buttons="wham")
    except ValueError as exc:
        raise EpisodeFormatError(f"{actions_path}: {exc}") from exc
    ep = Episode(images=np.stack(images), wham_actions=wham_actions, source=path)
    validate_episode(ep, path)
    return ep


def load_episode(path: str) -> Episode:
    """One episode from a ``.npz`` file or a Demonstrator folder."""
    if is_demonstrator_folder(path):
        return read_demonstrator_folder(path)
    if os.path.isfile(path):
        return read_episode(path)
    if os.path.isdir(path):
        raise EpisodeFormatError(f"{path}: a folder, but not a Demonstrator folder (it has no "
                                 f"{DEMONSTRATOR_ACTIONS}); {EXPECTED_SOURCES}")
    raise FileNotFoundError(f"{path}: no such episode file or Demonstrator folder")


def find_sources(path_or_paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Expand files and folders into episode sources: ``.npz`` files and Demonstrator folders, sorted."""
    paths = [path_or_paths] if isinstance(path_or_paths, (str, os.PathLike)) else list(path_or_paths)
    sources: list[str] = []
    for p in map(os.fspath, paths):
        if is_demonstrator_folder(p) or os.path.isfile(p):
            sources.append(p)
        elif os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs.sort()
                if is_demonstrator_folder(root):
                    sources.append(root)
                    dirs.clear()  # its Layer_Image/ etc. are not episodes
                    continue
                sources.extend(os.path.join(root, f) for f in sorted(files) if f.endswith(".npz"))
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return sources


@dataclass
class Window:
    """``context + 1`` consecutive steps of one episode."""

    images: np.ndarray  # (context+1, 3, 180, 300) uint8
    wham_actions: np.ndarray  # (context+1, 16) float32, sticks as bins
    rewards: np.ndarray | None
    source: str
    start: int


class EpisodeDataset:
    """Episodes from a list of sources, each loaded only while it is being used."""

    def __init__(self, sources: Sequence[str]):
        self.sources = list(sources)

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> Episode:
        return load_episode(self.sources[i])

    def __iter__(self) -> Iterator[Episode]:
        for source in self.sources:
            yield load_episode(source)

    def windows(
        self, context: int, stride: int | None = None, shuffle: bool = False, rng: np.random.Generator | None = None
    ) -> Iterator[Window]:
        """Windows of ``context + 1`` steps; ``stride`` defaults to one full window (no overlap).

        With ``shuffle``, episode order and window order within each episode are
        shuffled; only one episode is in memory at a time. Episodes shorter than a
        window are skipped.
        """
        if context < 0:
            raise ValueError(f"context must be >= 0, got {context}")
        size = context + 1
        stride = stride or size
        order = np.arange(len(self.sources))
        rng = rng or np.random.default_rng()
        if shuffle:
            rng.shuffle(order)
        for i in order:
            ep = self[int(i)]
            starts = np.arange(0, len(ep) - size + 1, stride)
            if shuffle:
                rng.shuffle(starts)
            for s in starts:
                s = int(s)
                yield Window(
                    images=ep.images[s : s + size],
                    wham_actions=ep.wham_actions[s : s + size],
                    rewards=None if ep.rewards is None else ep.rewards[s : s + size],
                    source=ep.source,
                    start=s,
                )

    def validate(self) -> int:
        """Read every episode once (one at a time) and return the total frame count."""
        return sum(len(ep) for ep in self)


def open_episodes(path_or_paths: str | os.PathLike | Sequence[str | os.PathLike]) -> EpisodeDataset:
    """A lazy dataset over a file, a folder (recursive ``*.npz`` and Demonstrator folders) or a list."""
    sources = find_sources(path_or_paths)
    if not sources:
        raise FileNotFoundError(f"no episodes (*.npz or Demonstrator folders) found in {path_or_paths}")
    return EpisodeDataset(sources)
