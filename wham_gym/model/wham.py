"""The whole WHAM model: image tokenizer + action tokenizer + GPT predictor.

The module tree mirrors WHAM's ``WHAMTokenModule`` (``context_encoders.images``,
``context_encoders.actions_output``, ``predictor.gpt_model``) so an official
state_dict loads key for key.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from .. import controller
from .config import WHAMConfig
from .gpt import GPT
from .vocab import Vocab, action_tokens, action_values
from .taming_vqgan import TamingVQGAN
from .vit_vqgan import ViTVQGAN


class ActionTokenizer(nn.Module):
    """WHAM's ``ActionTokenEncoder``: no weights; world-space actions <-> action-vocab ids."""

    def encode(self, wham_actions: torch.Tensor) -> torch.Tensor:
        return action_tokens(wham_actions)

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        return action_values(ids)


class Predictor(nn.Module):
    """WHAM's ``GPTTokenPredictor``: only holds the GPT as ``gpt_model``."""

    def __init__(self, gpt: GPT):
        super().__init__()
        self.gpt_model = gpt


def build_tokenizer(config: WHAMConfig) -> nn.Module:
    if config.tokenizer.kind == "vit":
        return ViTVQGAN(config.tokenizer)

    return TamingVQGAN(config.tokenizer)


class WHAMModel(nn.Module):
    def __init__(self, config: WHAMConfig):
        super().__init__()
        self.config = config
        self.context_encoders = nn.ModuleDict(
            {"images": build_tokenizer(config), "actions_output": ActionTokenizer()}
        )
        self.condition_encoders = nn.ModuleDict()
        self.predictor = Predictor(GPT(config.gpt))
        self.vocab = Vocab(config.image_vocab_size, config.tokens_per_image)
        self.card: dict = {}  # provenance: name, source format, training data (see checkpoint.py)
        self.model_dir: str | None = None  # where it was loaded from (own format)
        self.reward_model: nn.Module | None = None  # learned reward/termination, when trained (reward_model.py)

    @property
    def gpt(self) -> GPT:
        return self.predictor.gpt_model

    @property
    def tokenizer(self) -> nn.Module:
        return self.context_encoders["images"]

    @property
    def device(self) -> torch.device:
        return self.gpt.transformer.wte.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.gpt.transformer.wte.weight.dtype

    @property
    def is_official(self) -> bool:
        """True for weights from an official WHAM checkpoint (their outputs need the watermark)."""
        return bool(self.card.get("official", False))

    # -- frames <-> tokens -------------------------------------------------
    def _check_frames(self, frames, name: str) -> torch.Tensor:
        c = self.config
        shape = tuple(frames.shape) if hasattr(frames, "shape") else None
        expected = (c.frame_height, c.frame_width, 3)
        if shape is None or len(shape) != 4 or shape[1:] != expected:
            raise ValueError(
                f"{name}: expected uint8 frames of shape (N, {c.frame_height}, {c.frame_width}, 3) "
                f"(channel-last RGB), got shape {shape}"
            )
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(np.ascontiguousarray(frames))
        if frames.dtype != torch.uint8:
            raise ValueError(f"{name}: expected dtype uint8, got {frames.dtype}")
        return frames

    @torch.no_grad()
    def encode_frames(self, frames) -> torch.Tensor:
        """uint8 (N, H, W, 3) RGB frames -> image token ids.

        Takes a NumPy array or a torch tensor. Returns a torch ``long`` tensor
        (N, tokens_per_image) on the model's device (``.cpu().numpy()`` for NumPy).
        """
        frames = self._check_frames(frames, "frames").to(self.device)
        return self.tokenizer.encode(frames.permute(0, 3, 1, 2).contiguous())

    @torch.no_grad()
    def decode_tokens(self, tokens) -> torch.Tensor:
        """Image token ids (N, tokens_per_image) -> uint8 (N, H, W, 3) RGB frames.

        Takes a NumPy integer array or a torch tensor. Returns a torch ``uint8`` tensor
        (N, H, W, 3), channel-last, on the model's device (``.cpu().numpy()`` for NumPy).
        """
        if isinstance(tokens, np.ndarray):
            tokens = torch.from_numpy(tokens)
        if tokens.dim() != 2:
            raise ValueError(
                f"tokens: expected shape (N, {self.config.tokens_per_image}), got {tuple(tokens.shape)}"
            )
        self.vocab.check_image_tokens(tokens, "tokens")
        return self.tokenizer.decode(tokens.to(self.device)).permute(0, 2, 3, 1).contiguous()

    # -- actions -> tokens -------------------------------------------------
    def action_ids(self, actions) -> torch.Tensor:
        """Controller vectors (..., 16), sticks in [-1, 1] -> action-vocab ids (..., 16).

        Takes a NumPy array or a torch tensor. Returns a torch ``long`` tensor on the model's device.
        """
        if isinstance(actions, np.ndarray):
            actions = torch.from_numpy(actions)
        return action_tokens(controller.to_wham(actions.to(self.device)))

    # -- the GPT -----------------------------------------------------------
    def check_token_ids(self, token_ids: torch.Tensor, name: str = "token_ids") -> None:
        if token_ids.dtype not in (torch.int64, torch.int32) or token_ids.dim() != 2:
            raise ValueError(
                f"{name}: expected integer ids of shape (B, T), got {tuple(token_ids.shape)} {token_ids.dtype}"
            )
        if token_ids.shape[1] > self.config.gpt.block_size:
            raise ValueError(
                f"{name}: {token_ids.shape[1]} tokens exceed the model's block size {self.config.gpt.block_size}"
            )
        if token_ids.numel() and (int(token_ids.min()) < 0 or int(token_ids.max()) >= self.vocab.size):
            raise ValueError(
                f"{name}: ids must lie in [0, {self.vocab.size - 1}], got [{int(token_ids.min())}, {int(token_ids.max())}]"
            )

    @torch.no_grad()
    def logits(self, token_ids) -> torch.Tensor:
        """Full causal forward over interleaved, offset ids (B, T) -> logits (B, T, V).

        Takes a NumPy integer array or a torch int64/int32 tensor (WHAM-numbered ids, see
        :class:`~wham_gym.model.vocab.Vocab`). Returns a torch ``float32`` tensor (B, T, V)
        on the model's device (``.cpu().numpy()`` for NumPy).
        """
        if isinstance(token_ids, np.ndarray):
            if not np.issubdtype(token_ids.dtype, np.integer):
                raise ValueError(f"token_ids: expected integer ids of shape (B, T), got a NumPy array of "
                                 f"{token_ids.shape} {token_ids.dtype}")
            token_ids = torch.from_numpy(np.ascontiguousarray(token_ids, dtype=np.int64))
        self.check_token_ids(token_ids)
        return self.gpt(token_ids.to(self.device)).float()

    def num_parameters(self) -> dict[str, int]:
        return {
            "gpt": self.gpt.num_parameters(),
            "tokenizer": sum(p.numel() for p in self.tokenizer.parameters()),
        }
