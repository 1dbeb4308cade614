"""WHAM's token vocabulary: action tokens, modality offsets, valid ranges, interleaving.

Layout (WHAM_FORMAT.md §6-§7): image ids 0..K-1, then 68 action ids. Action
dimension i has its own sub-range: button i -> [2i, 2i+1], stick j -> 24+11j+bin.
Each step is [image tokens (N), action tokens (16)].
"""

from __future__ import annotations

import numpy as np
import torch

from ..controller import ACTION_DIM, NUM_BUTTONS, NUM_STICK_BINS, NUM_STICKS

BUTTON_VOCAB = 2
ACTION_VOCAB_SIZE = NUM_BUTTONS * BUTTON_VOCAB + NUM_STICKS * NUM_STICK_BINS  # 68

# Per-dimension offset inside the action vocabulary, and inclusive ranges.
ACTION_DIM_OFFSETS = np.array(
    [BUTTON_VOCAB * i for i in range(NUM_BUTTONS)]
    + [NUM_BUTTONS * BUTTON_VOCAB + NUM_STICK_BINS * j for j in range(NUM_STICKS)],
    dtype=np.int64,
)
ACTION_DIM_HIGH = np.array([BUTTON_VOCAB - 1] * NUM_BUTTONS + [NUM_STICK_BINS - 1] * NUM_STICKS, dtype=np.int64)


def action_tokens(wham_actions: torch.Tensor, check: bool = True) -> torch.Tensor:
    """WHAM world-space actions (buttons 0/1, sticks as bins) -> action-vocab ids (long).

    Like the reference, ``value + offset`` is truncated toward zero by ``.long()``. ``check=False``
    skips the range test (a host sync on a GPU) for actions made by :func:`controller.to_wham`.
    """
    offsets = torch.as_tensor(ACTION_DIM_OFFSETS, device=wham_actions.device)
    ids = (wham_actions.float() + offsets).long()
    if not check:
        return ids
    low = offsets
    high = offsets + torch.as_tensor(ACTION_DIM_HIGH, device=wham_actions.device)
    if bool(((ids < low) | (ids > high)).any()):
        raise ValueError("wham_actions: buttons must be 0/1 and stick bins 0..10 (WHAM world space)")
    return ids


def action_values(ids: torch.Tensor) -> torch.Tensor:
    """Action-vocab ids -> WHAM world-space actions (float32; sticks stay bins)."""
    offsets = torch.as_tensor(ACTION_DIM_OFFSETS, device=ids.device)
    return (ids - offsets).float()


class Vocab:
    """The predictor's vocabulary for one model: offsets and per-position valid ranges."""

    def __init__(self, image_vocab_size: int, tokens_per_image: int):
        self.image_vocab_size = image_vocab_size
        self.tokens_per_image = tokens_per_image
        self.action_offset = image_vocab_size
        self.size = image_vocab_size + ACTION_VOCAB_SIZE
        self.tokens_per_step = tokens_per_image + ACTION_DIM

        # Inclusive [lo, hi] per position within a step, in global ids.
        lo = np.zeros(self.tokens_per_step, dtype=np.int64)
        hi = np.full(self.tokens_per_step, image_vocab_size - 1, dtype=np.int64)
        lo[0] = 1  # WHAM never samples codebook index 0 as a frame's first token (§7)
        lo[tokens_per_image:] = self.action_offset + ACTION_DIM_OFFSETS
        hi[tokens_per_image:] = self.action_offset + ACTION_DIM_OFFSETS + ACTION_DIM_HIGH
        self.range_low, self.range_high = lo, hi

    def ranges(self, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(lo, hi) long tensors of shape (tokens_per_step,): valid sampled ids per position."""
        return (torch.as_tensor(self.range_low, device=device), torch.as_tensor(self.range_high, device=device))

    def interleave(self, image_tokens: torch.Tensor, action_ids: torch.Tensor) -> torch.Tensor:
        """(B,T,N) image ids + (B,T,16) action-vocab ids -> (B, T*(N+16)) global ids."""
        steps = torch.cat([image_tokens, action_ids + self.action_offset], dim=-1)
        return steps.reshape(steps.shape[0], -1)

    def split(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inverse of :meth:`interleave` for whole steps: -> image ids, action-vocab ids."""
        steps = ids.reshape(ids.shape[0], -1, self.tokens_per_step)
        return steps[..., : self.tokens_per_image], steps[..., self.tokens_per_image :] - self.action_offset

    def check_image_tokens(self, tokens: torch.Tensor, name: str = "tokens") -> None:
        if tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"{name}: expected integer token ids (torch.long), got dtype {tokens.dtype}")
        if tokens.shape[-1] != self.tokens_per_image:
            raise ValueError(
                f"{name}: expected shape (..., {self.tokens_per_image}) image tokens, got {tuple(tokens.shape)}"
            )
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.image_vocab_size):
            raise ValueError(
                f"{name}: image token ids must lie in [0, {self.image_vocab_size - 1}], "
                f"got range [{int(tokens.min())}, {int(tokens.max())}]"
            )
