"""The whole recipe: tokenizer, then world model, then reward model, then one model directory.

Each stage trains in its own sub-folder of the run directory and resumes from its
last checkpoint, so rerunning the same command after an interruption continues
where it stopped, losing at most one checkpoint interval.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from ..model import build_model
from ..model.checkpoint import save_model
from ..model.config import ViTTokenizerConfig, make_config
from .reward import train_reward_model
from .tokenizer import train_tokenizer
from .trainer import TrainConfig, latest_checkpoint, load_checkpoint
from .world_model import train_world_model


@dataclass
class Recipe:
    """Sizes and schedules of a small WHAM-architecture model (the embedded default's)."""

    name: str = "wham-doom-small"
    tokenizer: ViTTokenizerConfig = field(default_factory=lambda: ViTTokenizerConfig(
        width=300, height=180, patch_size=20, transf_dim=128, embedding_dim=16, num_layers=2, head_size=32,
        vocab_size=1024))
    n_layer: int = 3
    n_head: int = 3
    n_embd: int = 192
    seq_len: int = 10
    tokenizer_train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=1000, batch_size=16, lr=1e-3, warmup_steps=50, checkpoint_every=50, validate_every=250))
    world_model_train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=1200, batch_size=4, lr=1e-3, warmup_steps=50, checkpoint_every=50, validate_every=300))
    reward_train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=600, batch_size=256, lr=1e-3, warmup_steps=50, checkpoint_every=100, validate_every=300))
    max_frames: int = 20000

    def scaled(self, factor: float) -> "Recipe":
        """The same recipe with every stage's steps multiplied by ``factor`` (quick trials, tests)."""
        def s(c):
            steps = max(2, int(c.steps * factor))
            return replace(c, steps=steps, warmup_steps=min(c.warmup_steps, steps // 2),
                           checkpoint_every=max(1, min(c.checkpoint_every, steps // 2)),
                           validate_every=max(1, min(c.validate_every, steps)))
        return replace(self, tokenizer_train=s(self.tokenizer_train), world_model_train=s(self.world_model_train),
                       reward_train=s(self.reward_train))


def run_recipe(data, run_dir, out_dir, recipe: Recipe = Recipe(), device: str = "cpu", progress: bool = True,
               overwrite: bool = False) -> Path:
    run_dir = Path(run_dir)
    started = time.time()
    on = {"device": device}
    tok, tok_result = train_tokenizer(data, run_dir / "tokenizer", recipe.tokenizer,
                                      replace(recipe.tokenizer_train, **on), max_frames=recipe.max_frames, progress=progress)
    config = make_config(recipe.tokenizer, n_layer=recipe.n_layer, n_head=recipe.n_head, n_embd=recipe.n_embd,
                         seq_len=recipe.seq_len, name=recipe.name)
    model = build_model(config, device=device)
    model.tokenizer.load_state_dict(tok.state_dict())
    cache = run_dir / "token-cache"
    wm_result = train_world_model(model, data, run_dir / "world_model", replace(recipe.world_model_train, **on),
                                  progress=progress, cache_dir=cache)
    rm, rm_result = train_reward_model(model, data, run_dir / "reward", replace(recipe.reward_train, **on),
                                       progress=progress, cache_dir=cache)
    model.reward_model = rm
    card = {
        "name": recipe.name,
        "official": False,
        "format": "wham-gym/1",
        "data": str(data),
        "recipe": json.loads(json.dumps(asdict(recipe), default=str)),
        "metrics": {"tokenizer": _last(tok_result), "world_model": _last(wm_result), "reward": _last(rm_result)},
        "device": device,
        "torch": torch.__version__,
        "train_seconds": round(time.time() - started, 1),
        "parameters": model.num_parameters(),
    }
    model.card = card
    return save_model(model.cpu(), out_dir, card=card, overwrite=overwrite)


def _last(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "history"}
