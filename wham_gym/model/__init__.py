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

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_MODEL_DIR = ASSETS_DIR / "default"
# Trained models shipped inside the package, loadable by name (each <= 20 MB, safetensors, with its card).
SHIPPED = {"default": DEFAULT_MODEL_DIR, "take_cover": ASSETS_DIR / "take_cover"}


class DeviceError(ValueError):
    """A device this torch build or machine cannot give (a ValueError, so the CLI prints one line)."""


def resolve_device(device=None) -> torch.device:
    """``device`` as a :class:`torch.device` that this torch build and machine can use; ``None`` is the CPU.

    Raises :class:`DeviceError` saying what was asked for, what torch has, and what to do,
    instead of torch's own traceback from deep inside a load.
    """
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"device {device!r} is not a torch device; expected e.g. 'cpu', 'cuda', 'cuda:0' "
                          "or 'mps'") from None
    build = f"torch {torch.__version__}"
    if dev.type == "cuda":
        if torch.version.cuda is None and torch.version.hip is None:
            raise DeviceError(f"device {str(device)!r} requested but this torch build has no CUDA ({build}); "
                              "use --device cpu (device='cpu') or install a CUDA build of torch")
        if not torch.cuda.is_available():
            raise DeviceError(f"device {str(device)!r} requested but torch sees no CUDA GPU ({build}, CUDA "
                              f"{torch.version.cuda or torch.version.hip}); check the driver and "
                              "CUDA_VISIBLE_DEVICES, or use --device cpu (device='cpu')")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceError(f"device {str(device)!r} requested but only {count} CUDA GPU(s) are visible "
                              f"(cuda:0 to cuda:{count - 1})")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError(f"device {str(device)!r} requested but this machine or torch build has no MPS ({build}); "
                          "use --device cpu (device='cpu')")
    return dev


def build_model(config: WHAMConfig, device="cpu", dtype=torch.float32, seed: int = 0):
    """A randomly initialised model; the same seed gives the same weights on any device."""

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WHAMModel(config)  # initialised on the CPU so weights don't depend on the device
    model.card = {"name": config.name, "official": False, "format": "preset", "seed": seed}
    return model.to(device=device, dtype=dtype).eval()


def load_model(spec="default", device="cpu", dtype=None):
    """Load a WHAM model onto ``device`` (``None`` means the CPU).

    ``spec`` is one of:
      * a preset name (``"wham-1.6b"``, ``"wham-200m"``, ``"tiny"``, ``"tiny-taming"``): random weights;
      * ``"default"``: the small model embedded in the package (defend_the_center; the ``tiny`` preset until
        one ships), or ``"take_cover"``: the take_cover model (30-pixel patches, learned termination);
      * a path to an official WHAM ``.ckpt`` (read with a restricted unpickler);
      * a directory in wham-gym's own format (``config.json`` + ``model.safetensors``);
      * an already-built model, returned as is (moved to ``device``/``dtype``).

    ``dtype`` None keeps what the weights were stored in (float32 for presets and
    official checkpoints). An already-built model given with ``device=None`` stays where
    it is. A device this torch build or machine lacks (``"cuda"`` on a CPU-only torch)
    raises :class:`DeviceError` (a ValueError) before anything is read.
    """

    if isinstance(spec, WHAMModel):
        return spec.to(device=spec.device if device is None else resolve_device(device), dtype=dtype or spec.dtype)
    device = resolve_device(device)
    if not isinstance(spec, (str, os.PathLike)):
        raise ValueError(f"model: expected a preset name, a path or a WHAMModel, got {type(spec).__name__}")
    if isinstance(spec, str) and spec in SHIPPED:
        if (SHIPPED[spec] / checkpoint.CONFIG_FILE).is_file():
            return checkpoint.load_own(SHIPPED[spec], device=device, dtype=dtype)
        if spec != "default":
            raise FileNotFoundError(f"model {spec!r}: this build ships no {spec} model ({SHIPPED[spec]} is missing)")
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
        f"model {str(spec)!r}: not a preset ({', '.join(PRESETS)}), a shipped model ({', '.join(SHIPPED)}), "
        "a .ckpt file or a model directory"
    )


__all__ = [
    "ACTION_VOCAB_SIZE", "DeviceError", "GPTConfig", "PRESETS", "SHIPPED", "TamingTokenizerConfig", "ViTTokenizerConfig", "Vocab",
    "WHAMConfig", "build_model", "load_model", "make_config", "preset", "resolve_device",
]
