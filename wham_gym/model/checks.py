"""Boundary checks shared by the image tokenizers: what comes in is what WHAM's world space demands."""

from __future__ import annotations

import torch


def check_images(images, channels: int, height: int, width: int) -> None:
    """uint8 (B, channels, height, width) or a ValueError saying what came instead."""
    expected = f"uint8 tensor of shape (B, {channels}, {height}, {width})"
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images: expected a {expected}, got {type(images).__name__}")
    if images.dim() != 4 or tuple(images.shape[1:]) != (channels, height, width):
        raise ValueError(f"images: expected a {expected}, got shape {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        raise ValueError(f"images: expected a {expected}, got dtype {images.dtype}")


def check_tokens(tokens, num_tokens: int, vocab_size: int) -> None:
    """Integer ids (B, num_tokens) in [0, vocab_size), or a ValueError (the range test syncs a GPU)."""
    expected = f"integer tensor of shape (B, {num_tokens}) with ids in [0, {vocab_size - 1}]"
    if not isinstance(tokens, torch.Tensor):
        raise ValueError(f"tokens: expected an {expected}, got {type(tokens).__name__}")
    if tokens.dim() != 2 or tokens.shape[1] != num_tokens:
        raise ValueError(f"tokens: expected an {expected}, got shape {tuple(tokens.shape)}")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise ValueError(f"tokens: expected an {expected}, got dtype {tokens.dtype}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(f"tokens: expected an {expected}, got ids in [{int(tokens.min())}, {int(tokens.max())}]")
