"""Training WHAM-architecture models on episodes in WHAM's dataset format."""

from .trainer import TrainConfig

__all__ = ["TrainConfig"]
