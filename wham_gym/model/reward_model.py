"""A small learned reward and termination model over WHAM image tokens.

Given the frame before an action, the action, and the frame after it (all as
tokens), it predicts the reward received and whether the episode ended. It is
tiny next to the world model and runs batched on the engine's device, so the env
can score every dreamt step without leaving the GPU.

Termination comes in two kinds (``RewardModelConfig.termination``):

- ``"end_frame"``: a classifier of the frame the step produced ("is this the frame an
  episode ends on", e.g. a recording's black end frame), thresholded at 0.5. Exact on
  real frames, but a dream only ends when the world model draws that frame.
- ``"hazard"``: the probability that this step ends the episode, from the frame the
  action was taken at and the action alone (the dreamt next frame is not read), trained
  unweighted so that it stays calibrated, and *sampled* each step. This is World Models'
  "done" head: a dream ends at the game's rate in the situations the recording shows
  (low health, a fireball close) even if the world model never draws the end itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from ..controller import ACTION_DIM
from .vocab import ACTION_VOCAB_SIZE


TERMINATIONS = ("end_frame", "hazard")


@dataclass
class RewardModelConfig:
    image_vocab_size: int
    tokens_per_image: int
    token_dim: int = 8
    hidden: int = 256
    reward_values: tuple[float, ...] = ()  # the distinct rewards seen in training (documentation)
    termination: str = "end_frame"  # "end_frame" (classify the new frame) or "hazard" (see the module doc)
    # Added to a hazard's logit when it is sampled in a dream (wham_gym.train.hazard fits it): dreamt frames drift
    # toward what looks dangerous, so the hazard calibrated on real frames fires too often on them.
    hazard_offset: float = 0.0
    # The dream temperature the offset was fitted at (None: never fitted). A hotter dream draws noisier frames,
    # which the hazard reads as danger (take_cover v4: ~3x the deaths at 1.15 with 0.9's offset).
    hazard_temperature: float | None = None
    # False: the model does not read the action, so its termination depends on what the frame shows alone. A
    # hazard that reads the action learns the recording policy's per-action death rates as a constant bias
    # (take_cover c4: "right" always lowest, by 0.2 in the logit, whatever the frame), and an agent in the dream
    # then lowers its death rate by holding that preset into a wall. Blind, the action acts only through the
    # frames the world model draws, which is where its effect on survival lives.
    reads_action: bool = True
    # True: termination has a body of its own beside the reward's. Shared, the class-weighted reward regression
    # (take_cover: 1-4 tics a step) shapes the features, and a hazard trained beside it ranks the policies wrong
    # on real frames (take_cover c4, held-out episodes: standing still 81 steps expected against the recording's 40,
    # jitter 104 against 91). Its own body: 46 and 119, as good as a hazard trained alone (benchmarks/hazard_body.py).
    # False for models saved before it (one body).
    separate_termination: bool = False

    def __post_init__(self):
        if self.termination not in TERMINATIONS:
            raise ValueError(f"termination: expected one of {', '.join(TERMINATIONS)}, got {self.termination!r}")

    def to_dict(self) -> dict:
        return {**asdict(self), "reward_values": list(self.reward_values)}

    @classmethod
    def from_dict(cls, d: dict) -> "RewardModelConfig":
        """The inverse of :meth:`to_dict` (JSON gives a list for the reward values)."""
        return cls(**{**d, "reward_values": tuple(d.get("reward_values", ()))})


class RewardModel(nn.Module):
    def __init__(self, config: RewardModelConfig):
        super().__init__()
        self.config = c = config
        self.tokens = nn.Embedding(c.image_vocab_size, c.token_dim)
        self.actions = nn.Embedding(ACTION_VOCAB_SIZE, c.token_dim) if c.reads_action else None
        frames = 1 if c.termination == "hazard" else 2  # a hazard reads the frame the action was taken at only
        width = (frames * c.tokens_per_image + (ACTION_DIM if c.reads_action else 0)) * c.token_dim
        self.body = _mlp(width, c.hidden)
        self.termination_body = _mlp(width, c.hidden) if c.separate_termination else None
        self.reward = nn.Linear(c.hidden, 1)
        self.termination = nn.Linear(c.hidden, 1)

    def forward(self, prev_tokens: torch.Tensor, action_ids: torch.Tensor, next_tokens: torch.Tensor):
        """(B, N) image tokens, (B, 16) action-vocab ids, (B, N) -> reward (B,), termination logit (B,).

        A hazard model ignores ``next_tokens``; a model with ``reads_action=False`` ignores ``action_ids``."""
        parts = [self.tokens(prev_tokens).flatten(1)]
        if self.actions is not None:
            parts.append(self.actions(action_ids).flatten(1))
        if self.config.termination != "hazard":
            parts.append(self.tokens(next_tokens).flatten(1))
        x = torch.cat(parts, dim=1)
        h = self.body(x)
        h_end = h if self.termination_body is None else self.termination_body(x)
        return self.reward(h).squeeze(-1), self.termination(h_end).squeeze(-1)

    @torch.no_grad()
    def predict(self, prev_tokens, action_ids, next_tokens) -> tuple[torch.Tensor, torch.Tensor]:
        """Reward (B,) float32 and termination (B,) bool (a hazard: probability above one half, which is rare;
        :class:`~wham_gym.rewards.TokenRewardModel` samples it instead)."""
        reward, term = self(prev_tokens, action_ids, next_tokens)
        return reward.float(), term > 0

    @torch.no_grad()
    def hazard(self, tokens: torch.Tensor, action_ids: torch.Tensor | None = None, dream: bool = False) -> torch.Tensor:
        """A hazard's probability (B,) float64 that the step taken at frames ``tokens`` (B, N) ends the episode, as
        trained on real frames, or with ``dream=True`` as a dream samples it (its calibrated offset added to the
        logit). ``action_ids`` (B, 16): needed when it reads them."""
        if self.config.termination != "hazard":
            raise ValueError(f"hazard: this reward model's termination is {self.config.termination!r}, not a hazard")
        if action_ids is None:
            if self.actions is not None:
                raise ValueError("hazard: this hazard reads the action; pass action_ids (B, 16)")
            action_ids = torch.zeros(len(tokens), ACTION_DIM, dtype=torch.long, device=tokens.device)
        logit = self(tokens, action_ids, tokens)[1].double()
        return torch.sigmoid(logit + self.config.hazard_offset if dream else logit)


def frame_hazard(model) -> "RewardModel":
    """``model``'s reward net when its termination is a hazard on the frame alone (what the take_cover benchmarks read
    on game and dreamt frames); a ValueError saying what it has otherwise."""
    net = getattr(model, "reward_model", None)
    if net is None or net.config.termination != "hazard" or net.config.reads_action:
        what = "no reward model" if net is None else (
            f"termination {net.config.termination!r}, reads_action {net.config.reads_action}")
        name = (getattr(model, "card", None) or {}).get("name", "this model")
        raise ValueError(f"{name}: expected a frame-only hazard (termination 'hazard', reads_action False), got "
                         f"{what}; train one with Recipe(termination='hazard', termination_reads_action=False)")
    return net


def _mlp(width: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())
