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
from ..controller import ACTION_DIM, to_wham

# How an episode's end looks to the world model. The game renders nothing after an episode ends
# (vizdoom has no state then), so a recording's last frame is the one before the fatal step and a
# model trained on it never shows an end, and the termination model must guess it from the frame
# before. With ``"black"``, a terminated episode gets one more frame, black, after its last action:
# the world model learns to dream the end (a fade to black) and the termination model to see it.
END_FRAMES = (None, "black")


def check_end_frame(end_frame) -> None:
    if end_frame not in END_FRAMES:
        raise ValueError(f"end_frame: expected one of {END_FRAMES}, got {end_frame!r}")


def end_image(height: int, width: int, end_frame: str) -> np.ndarray:
    """The (3, H, W) uint8 frame shown after a terminated episode's last action."""
    check_end_frame(end_frame)
    return np.zeros((3, height, width), np.uint8)


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


def frame_bank(sources: list[str], max_frames: int, seed: int = 0, end_frame: str | None = None) -> np.ndarray:
    """Up to ``max_frames`` frames (M, 3, H, W) uint8, spread evenly over the episodes (with ``end_frame``,
    a terminated episode counts its end frame as one more frame, as the world model will see it)."""
    check_end_frame(end_frame)
    lengths, ends = [], []
    for s in sources:
        with np.load(s) as z:  # header only: frame count without decompressing the images
            lengths.append(z["actions"].shape[0] if s.endswith(".npz") else 0)
            ends.append(end_frame is not None and "terminated" in z.files and bool(z["terminated"][-1]))
    lengths = [n + e for n, e in zip(lengths, ends)]
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
        images = load_episode(s).images
        if idx[-1] == len(images):  # the end frame
            images = np.concatenate([images, end_image(*images.shape[2:], end_frame)[None]])
        images = images[idx]
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
    ended: bool = False  # the last step is an end frame (see END_FRAMES): a frame to dream, not a transition


def tokenize_episodes(model, sources: list[str], cache_dir, batch: int = 64, progress: bool = True,
                      end_frame: str | None = None) -> list[TokenEpisode]:
    """Image tokens of every frame, computed once per (tokenizer weights, episode) and cached as .npz.

    ``end_frame``: a terminated episode gets one more step after its last action, the end frame's tokens with a
    neutral action, reward 0 and not terminated (``ended`` marks it)."""
    check_end_frame(end_frame)
    from tqdm import tqdm

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tok = model.tokenizer
    digest = hashlib.sha1()
    for v in tok.state_dict().values():
        digest.update(v.detach().cpu().float().numpy().tobytes()[:4096])
    key = digest.hexdigest()[:12]
    out = []
    suffix = f"-end-{end_frame}" if end_frame else ""
    for s in tqdm(sources, desc="tokenizing", unit="episode", disable=not progress):
        path = cache_dir / f"{Path(s).stem}-{hashlib.sha1(s.encode()).hexdigest()[:8]}-{key}{suffix}.npz"
        if not path.is_file():
            ep = load_episode(s)
            images, wham_actions = ep.images, ep.wham_actions
            rewards = ep.rewards if ep.rewards is not None else np.zeros(len(ep), np.float32)
            term = ep.terminated if ep.terminated is not None else np.zeros(len(ep), bool)
            ended = end_frame is not None and bool(term[-1])
            if ended:
                images = np.concatenate([images, end_image(*images.shape[2:], end_frame)[None]])
                wham_actions = np.concatenate([wham_actions, to_wham(np.zeros(ACTION_DIM, np.float32))[None]])
                rewards, term = np.append(rewards, 0.0), np.append(term, False)
            with torch.no_grad():
                tokens = torch.cat([tok.encode(torch.from_numpy(images[i:i + batch]).to(model.device))
                                    for i in range(0, len(images), batch)]).cpu().numpy()
            ids = action_tokens(torch.from_numpy(np.ascontiguousarray(wham_actions, np.float32))).numpy().astype(np.int8)
            arrays = dict(tokens=tokens.astype(np.int32 if tok.vocab_size > 32767 else np.int16),
                          action_ids=ids, rewards=rewards.astype(np.float32), terminated=term.astype(bool),
                          ended=np.array(ended))
            atomic_write(path, lambda f: np.savez(f, **arrays))
        with np.load(path) as z:
            ended = bool(z["ended"]) if "ended" in z.files else False
            out.append(TokenEpisode(z["tokens"], z["action_ids"], z["rewards"], z["terminated"], s, ended))
    return out


class WindowSampler:
    """Uniform windows of ``steps`` consecutive steps over token episodes (every step equally likely).

    ``end_share`` > 0: that share of each batch (rounded) is instead windows whose last step is an episode's end
    frame (episodes tokenized with ``end_frame``), uniformly over those episodes. A death is one window in ~80 on
    take_cover, so a batch of 16 holds one every five steps; drawn more often, the GPT spends more of its capacity on
    what precedes one (the fireball's last frames, the action that did not dodge). Its end probability is then too
    high by a constant factor in the odds, which a termination fitted to the game's episode lengths absorbs
    (rewards.EndRiskTermination's center)."""

    def __init__(self, episodes: list[TokenEpisode], steps: int, end_share: float = 0.0):
        self.episodes = [e for e in episodes if len(e.tokens) >= steps]
        if not self.episodes:
            raise ValueError(f"no episode has the {steps} steps a training window needs")
        if not 0 <= end_share < 1:
            raise ValueError(f"end_share: expected a fraction in [0, 1), got {end_share!r}")
        self.steps = steps
        self.lengths = [len(e.tokens) for e in self.episodes]
        self.ended = np.flatnonzero([e.ended for e in self.episodes])
        if end_share and not len(self.ended):
            raise ValueError("end_share: no episode ends in an end frame; tokenize with end_frame='black'")
        self.end_share = float(end_share)

    def __len__(self) -> int:
        return count_windows(self.lengths, self.steps)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, steps, tokens_per_image) image tokens and (n, steps, 16) action-vocab ids."""
        n_end = int(round(n * self.end_share))
        which, starts, _ = sample_windows(self.lengths, self.steps, n - n_end, rng, per="window")
        if n_end:
            ends = rng.choice(self.ended, n_end)
            which = np.concatenate([which, ends])
            starts = np.concatenate([starts, np.array(self.lengths)[ends] - self.steps])
        return self._take(which, starts)

    def gather(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The windows numbered ``flat`` (episode by episode, start by start), as :meth:`sample` returns them."""
        return self._take(*window_at(self.lengths, self.steps, flat))

    def _take(self, which, starts) -> tuple[np.ndarray, np.ndarray]:
        imgs = np.stack([self.episodes[e].tokens[s:s + self.steps] for e, s in zip(which, starts)]).astype(np.int64)
        acts = np.stack([self.episodes[e].action_ids[s:s + self.steps] for e, s in zip(which, starts)]).astype(np.int64)
        return imgs, acts
