"""A small learned reward and termination model over WHAM image tokens.

Given the frame before an action, the action, and the frame after it (all as
tokens), it predicts the reward received and whether the episode ended. It is
tiny next to the world model and runs batched on the engine's device, so the env
can score every dreamt step without leaving the GPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from ..controller import ACTION_DIM
from .vocab import ACTION_VOCAB_SIZE


@dataclass
class RewardModelConfig:
    image_vocab_size: int
    tokens_per_image: int
    token_dim: int = 8
    hidden: int = 256
    reward_values: tuple[float, ...] = ()  # the distinct rewards seen in training (documentation)

    def to_dict(self) -> dict:
        return {**asdict(self), "reward_values": list(self.reward_values)}


class RewardModel(nn.Module):
    def __init__(self, config: RewardModelConfig):
        super().__init__()
        self.config = c = config
        self.tokens = nn.Embedding(c.image_vocab_size, c.token_dim)
        self.actions = nn.Embedding(ACTION_VOCAB_SIZE, c.token_dim)
        width = (2 * c.tokens_per_image + ACTION_DIM) * c.token_dim
        self.body = nn.Sequential(nn.Linear(width, c.hidden), nn.GELU(), nn.Linear(c.hidden, c.hidden), nn.GELU())
        self.reward = nn.Linear(c.hidden, 1)
        self.termination = nn.Linear(c.hidden, 1)

    def forward(self, prev_tokens: torch.Tensor, action_ids: torch.Tensor, next_tokens: torch.Tensor):
        """(B, N) image tokens, (B, 16) action-vocab ids, (B, N) -> reward (B,), termination logit (B,)."""
        x = torch.cat([self.tokens(prev_tokens).flatten(1), self.actions(action_ids).flatten(1),
                       self.tokens(next_tokens).flatten(1)], dim=1)
        h = self.body(x)
        return self.reward(h).squeeze(-1), self.termination(h).squeeze(-1)

    @torch.no_grad()
    def predict(self, prev_tokens, action_ids, next_tokens) -> tuple[torch.Tensor, torch.Tensor]:
        """Reward (B,) float32 and termination (B,) bool."""
        reward, term = self(prev_tokens, action_ids, next_tokens)
        return reward.float(), term > 0
