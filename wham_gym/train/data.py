"""Training data: a frame bank for the tokenizer and a token cache for the GPT and reward model.

Episodes are read one at a time (wham_gym.data.reader). Held-out validation is
by episode, so no validation frame's neighbours are trained on.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.reader import load_episode, open_episodes
from ..atomic import atomic_write
from ..data.windows import count_windows, sample_windows, window_at
from ..model.vocab import action_tokens


def split_sources(data, val_fraction: float = 0.1) -> tuple[list[str], list[str]]:
    """Sources split by a hash of their name: stable when episodes are added."""
    sources = open_episodes(data).sources
    if len(sources) < 2:
        raise ValueError(f"need at least 2 episodes to hold one out for validation, found {len(sources)} in {data}")

    def h(s):
        return int(hashlib.sha1(os.path.basename(s).encode()).hexdigest()[:8], 16) / 16**8

    val = [s for s in sources if h(s) < val_fraction] or sources[-1:]
    train = [s for s in sources if s not in val]
    return train, val


def frame_bank(sources: list[str], max_frames: int, seed: int = 0) -> np.ndarray:
    """Up to ``max_frames`` frames (M, 3, H, W) uint8, spread evenly over the episodes."""
    lengths = []
    for s in sources:
        with np.load(s) as z:  # header only: frame count without decompressing the images
            lengths.append(z["actions"].shape[0] if s.endswith(".npz") else 0)
    total = sum(lengths)
    keep = min(max_frames, total)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(total, keep, replace=False))
    out, offset, at = None, 0, 0
    for s, n in zip(sources, lengths):
        idx = chosen[(chosen >= offset) & (chosen < offset + n)] - offset
        offset += n
        if len(idx) == 0:
            continue
        images = load_episode(s).images[idx]
        if out is None:
            out = np.empty((keep, *images.shape[1:]), np.uint8)
        out[at:at + len(idx)] = images
        at += len(idx)
    return out[:at]


@dataclass
class TokenEpisode:
    tokens: np.ndarray  # (T, tokens_per_image) int16/int32 image tokens
    action_ids: np.ndarray  # (T, 16) int8 action-vocab ids
    rewards: np.ndarray  # (T,) float32 (zeros when the source has none)
    terminated: np.ndarray  # (T,) bool
    source: str


def tokenize_episodes(model, sources: list[str], cache_dir, batch: int = 64, progress: bool = True) -> list[TokenEpisode]:
    """Image tokens of every frame, computed once per (tokenizer weights, episode) and cached as .npz."""
    from tqdm import tqdm

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tok = model.tokenizer
    digest = hashlib.sha1()
    for v in tok.state_dict().values():
        digest.update(v.detach().cpu().float().numpy().tobytes()[:4096])
    key = digest.hexdigest()[:12]
    out = []
    for s in tqdm(sources, desc="tokenizing", unit="episode", disable=not progress):
        path = cache_dir / f"{Path(s).stem}-{hashlib.sha1(s.encode()).hexdigest()[:8]}-{key}.npz"
        if not path.is_file():
            ep = load_episode(s)
            with torch.no_grad():
                tokens = torch.cat([tok.encode(torch.from_numpy(ep.images[i:i + batch]).to(model.device))
                                    for i in range(0, len(ep), batch)]).cpu().numpy()
            ids = action_tokens(torch.from_numpy(ep.wham_actions)).numpy().astype(np.int8)
            rewards = ep.rewards if ep.rewards is not None else np.zeros(len(ep), np.float32)
            term = ep.terminated if ep.terminated is not None else np.zeros(len(ep), bool)
            arrays = dict(tokens=tokens.astype(np.int32 if tok.vocab_size > 32767 else np.int16),
                          action_ids=ids, rewards=rewards.astype(np.float32), terminated=term.astype(bool))
            atomic_write(path, lambda f: np.savez(f, **arrays))
        with np.load(path) as z:
            out.append(TokenEpisode(z["tokens"], z["action_ids"], z["rewards"], z["terminated"], s))
    return out


class WindowSampler:
    """Uniform windows of ``steps`` consecutive steps over token episodes (every step equally likely)."""

    def __init__(self, episodes: list[TokenEpisode], steps: int):
        self.episodes = [e for e in episodes if len(e.tokens) >= steps]
        if not self.episodes:
            raise ValueError(f"no episode has the {steps} steps a training window needs")
        self.steps = steps
        self.lengths = [len(e.tokens) for e in self.episodes]

    def __len__(self) -> int:
        return count_windows(self.lengths, self.steps)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, steps, tokens_per_image) image tokens and (n, steps, 16) action-vocab ids."""
        which, starts, _ = sample_windows(self.lengths, self.steps, n, rng, per="window")
        return self._take(which, starts)

    def gather(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The windows numbered ``flat`` (episode by episode, start by start), as :meth:`sample` returns them."""
        return self._take(*window_at(self.lengths, self.steps, flat))

    def _take(self, which, starts) -> tuple[np.ndarray, np.ndarray]:
        imgs = np.stack([self.episodes[e].tokens[s:s + self.steps] for e, s in zip(which, starts)]).astype(np.int64)
        acts = np.stack([self.episodes[e].action_ids[s:s + self.steps] for e, s in zip(which, starts)]).astype(np.int64)
        return imgs, acts
