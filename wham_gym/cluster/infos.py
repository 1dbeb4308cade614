"""Joining the shards' batched infos into one, the way Gymnasium's vector envs present them.

Each shard returns a dict of arrays over its own slots, with ``_key`` masks; a key
only some shards returned (``final_obs`` where no slot of a shard finished, a
restart flag) is filled for the others with blanks whose masks are False.
"""

from __future__ import annotations

import numpy as np


def blank(template: np.ndarray, n: int) -> np.ndarray:
    """``n`` rows shaped and typed like ``template``'s: None for object arrays, zeros (False) otherwise."""
    if template.dtype == object:
        return np.full(n, None, dtype=object)
    return np.zeros((n, *template.shape[1:]), dtype=template.dtype)


def merge_infos(parts: list[dict], sizes: list[int]) -> dict:
    """One info over all slots from the shards' infos (in slot order; ``sizes[k]`` slots in part k)."""
    keys: dict[str, None] = {}
    for part in parts:
        keys.update(dict.fromkeys(part))
    out = {}
    for key in keys:
        values = [part.get(key) for part in parts]
        template = next(v for v in values if v is not None)
        if isinstance(template, dict):
            out[key] = merge_infos([v if v is not None else {} for v in values], sizes)
        else:
            out[key] = np.concatenate([np.asarray(v) if v is not None else blank(np.asarray(template), n)
                                       for v, n in zip(values, sizes)])
    return out


def concat(parts: list, sizes: list[int] | None = None):
    """Observations (arrays, or dicts of arrays in ``obs_mode="both"``) of the shards, in slot order."""
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


def rows(obs, index):
    """Rows ``index`` of an observation (array or dict of arrays)."""
    if isinstance(obs, dict):
        return {k: v[index] for k, v in obs.items()}
    return obs[index]


def put_rows(obs, index, value) -> None:
    """Write ``value`` into rows ``index`` of an observation (array or dict of arrays), in place."""
    if isinstance(obs, dict):
        for k in obs:
            obs[k][index] = value[k]
    else:
        obs[index] = value
