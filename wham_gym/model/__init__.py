"""WHAM-architecture models: config, GPT, image tokenizers, vocabulary, checkpoints."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from .config import PRESETS, GPTConfig, TamingTokenizerConfig, ViTTokenizerConfig, WHAMConfig, make_config, preset
from .vocab import ACTION_VOCAB_SIZE, Vocab
from . import checkpoint
from .wham import WHAMModel

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "default"


def build_model(config: WHAMConfig, device="cpu", dtype=torch.float32, seed: int = 0):
    """A randomly initialised model; the same seed gives the same weights on any device."""

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WHAMModel(config)  # initialised on the CPU so weights don't depend on the device
    model.card = {"name": config.name, "official": False, "format": "preset", "seed": seed}
    return model.to(device=device, dtype=dtype).eval()


def load_model(spec="default", device="cpu", dtype=None):
    """Load a WHAM model.

    ``spec`` is one of:
      * a preset name (``"wham-1.6b"``, ``"wham-200m"``, ``"tiny"``, ``"tiny-taming"``): random weights;
      * ``"default"``: the small model embedded in the package (the ``tiny`` preset until one ships);
      * a path to an official WHAM ``.ckpt`` (read with a restricted unpickler);
      * a directory in wham-gym's own format (``config.json`` + ``model.safetensors``);
      * an already-built model, returned as is (moved to ``device``/``dtype``).

    ``dtype`` None keeps what the weights were stored in (float32 for presets and
    official checkpoints).
    """

    if isinstance(spec, WHAMModel):
        return spec.to(device=device, dtype=dtype or spec.dtype)
    if not isinstance(spec, (str, os.PathLike)):
        raise ValueError(f"model: expected a preset name, a path or a WHAMModel, got {type(spec).__name__}")
    if spec == "default":
        if (DEFAULT_MODEL_DIR / checkpoint.CONFIG_FILE).is_file():
            return checkpoint.load_own(DEFAULT_MODEL_DIR, device=device, dtype=dtype)
        warnings.warn("no embedded default model in this build; using the random 'tiny' preset", stacklevel=2)
        spec = "tiny"
    if isinstance(spec, str) and spec in PRESETS:
        return build_model(preset(spec), device=device, dtype=dtype or torch.float32)
    path = Path(spec)
    if path.is_dir():
        return checkpoint.load_own(path, device=device, dtype=dtype)
    if path.is_file():
        model, _ = checkpoint.load_official(path, device=device, dtype=dtype or torch.float32)
        return model
    raise FileNotFoundError(
        f"model {str(spec)!r}: not a preset ({', '.join(PRESETS)}), 'default', a .ckpt file or a model directory"
    )


__all__ = [
    "ACTION_VOCAB_SIZE", "GPTConfig", "PRESETS", "TamingTokenizerConfig", "ViTTokenizerConfig", "Vocab",
    "WHAMConfig", "build_model", "load_model", "make_config", "preset",
]
