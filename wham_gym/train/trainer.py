"""The training loop every wham-gym trainer shares: AdamW, cosine schedule, accumulation,
autocast, validation, progress, and checkpoints that resume exactly.

Checkpoints are ours, so they are safetensors (model and optimizer tensors) plus
JSON (step, optimizer hyper-parameters, metrics), written atomically; the JSON is
written last and marks the checkpoint complete. Batches are drawn from random
generators seeded by (seed, step), so a resumed run draws exactly the batches the
uninterrupted run would have: resume continues identically.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from ..atomic import atomic_write


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    checkpoint_every: int = 200
    validate_every: int = 200
    keep_checkpoints: int = 2
    seed: int = 0
    device: str = "cpu"


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up then cosine decay to ``min_lr_ratio * lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def batch_rng(seed: int, step: int, micro: int = 0) -> np.random.Generator:
    """The generator for one micro-batch: a pure function of (seed, step, micro)."""
    return np.random.default_rng([seed, step, micro])


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    # No weight decay on gains, biases and embeddings' positional tables' 1-D params.
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas)


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(run_dir: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    meta: dict, keep: int = 2, extra: dict[str, torch.Tensor] | None = None) -> Path:
    from safetensors.torch import save

    run_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in _unique_state(model).items()}
    opt = optimizer.state_dict()
    for idx, state in opt["state"].items():
        for name, value in state.items():
            tensors[f"optim.{idx}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    for name, value in (extra or {}).items():
        tensors[f"extra.{name}"] = value.detach().cpu().contiguous()
    stem = run_dir / f"ckpt-{step:08d}"
    atomic_write(stem.with_suffix(".safetensors"), lambda f: f.write(save(tensors)))
    info = {"step": step, "param_groups": opt["param_groups"], "meta": meta, "time": time.time()}
    atomic_write(stem.with_suffix(".json"), lambda f: f.write(json.dumps(info, indent=1, default=str)), binary=False)
    for old in sorted(run_dir.glob("ckpt-*.json"))[:-keep]:
        old.unlink(missing_ok=True)
        old.with_suffix(".safetensors").unlink(missing_ok=True)
    return stem


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (its JSON written), or None."""
    done = [p for p in sorted(Path(run_dir).glob("ckpt-*.json")) if p.with_suffix(".safetensors").is_file()]
    return done[-1].with_suffix("") if done else None


def load_checkpoint(stem: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    extra: dict[str, torch.Tensor] | None = None, restore_rng: bool = True) -> dict:
    from safetensors.torch import load_file

    tensors = load_file(str(stem.with_suffix(".safetensors")))
    info = json.loads(stem.with_suffix(".json").read_text())
    own = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(own, strict=False)
    missing = [k for k in missing if k not in _tied_names(model)]
    if missing or unexpected:
        raise ValueError(f"{stem}: checkpoint does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if optimizer is not None:
        state: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, idx, name = k.split(".", 2)
                state.setdefault(int(idx), {})[name] = v
        optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    if restore_rng:  # resuming training; a reader of weights leaves the global RNG alone
        torch.set_rng_state(tensors["rng.torch"])
    for name, value in (extra or {}).items():  # trainer state beyond the model, restored in place
        value.copy_(tensors[f"extra.{name}"])
    return info


def _tied_names(model: nn.Module) -> set[str]:
    seen, tied = {}, set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            tied.add(name)
        seen.setdefault(id(p), name)
    return tied


def _unique_state(model: nn.Module) -> dict[str, torch.Tensor]:
    tied = _tied_names(model)
    return {k: v for k, v in model.state_dict().items() if k not in tied}


# --------------------------------------------------------------------------- the loop
LossFn = Callable[[int, int], tuple[torch.Tensor, dict]]  # (step, micro) -> (loss, metrics)


def train(model: nn.Module, loss_fn: LossFn, cfg: TrainConfig, run_dir, *, validate: Callable[[], dict] | None = None,
          after_step: Callable[[int], None] | None = None, meta: dict | None = None, desc: str = "training",
          items_per_step: int | None = None, progress: bool = True, stop_after: int | None = None,
          extra_state: dict[str, torch.Tensor] | None = None) -> dict:
    """Run (or resume) training to ``cfg.steps``; returns the last metrics.

    ``extra_state`` names tensors (e.g. code-usage statistics) saved with each
    checkpoint and restored in place on resume.

    ``stop_after`` ends the run early after that many steps of this call (for tests
    and time-boxed jobs); a later call resumes from the last checkpoint.
    """
    from tqdm import tqdm

    run_dir = Path(run_dir)
    device = torch.device(cfg.device)
    model.to(device).train()
    optimizer = make_optimizer(model, cfg)
    start, history = 0, []
    stem = latest_checkpoint(run_dir)
    if stem is not None:
        info = load_checkpoint(stem, model, optimizer, extra_state)
        start, history = info["step"], info["meta"].get("history", [])
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _nullcontext()
    bar = tqdm(total=cfg.steps, initial=start, desc=desc, unit="step", disable=not progress, dynamic_ncols=True)
    metrics: dict = {}
    t0, done = time.perf_counter(), 0
    step = start
    for step in range(start, cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for micro in range(cfg.grad_accum):
            with autocast:
                loss, m = loss_fn(step, micro)
            (loss / cfg.grad_accum).backward()
            for k, v in {"loss": loss.item(), **m}.items():
                sums[k] = sums.get(k, 0.0) + float(v) / cfg.grad_accum
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        if after_step is not None:
            after_step(step)
        done += 1
        metrics = {**sums, "lr": lr_at(step, cfg)}
        rate = done / max(1e-9, time.perf_counter() - t0)
        postfix = {k: f"{v:.4g}" for k, v in metrics.items() if k in ("loss", "val_loss", "recon", "acc")}
        if items_per_step:
            postfix["items/s"] = f"{rate * items_per_step:.0f}"
        bar.set_postfix(postfix)
        bar.update(1)
        last = step + 1 == cfg.steps
        if validate is not None and ((step + 1) % cfg.validate_every == 0 or last):
            model.eval()
            with torch.no_grad(), autocast:
                metrics.update({f"val_{k}": v for k, v in validate().items()})
            model.train()
        if (step + 1) % cfg.checkpoint_every == 0 or last or (stop_after and done >= stop_after):
            history.append({"step": step + 1, **metrics})
            save_checkpoint(run_dir, step + 1, model, optimizer,
                            {**(meta or {}), "train_config": asdict(cfg), "history": history}, cfg.keep_checkpoints,
                            extra_state)
        if stop_after and done >= stop_after:
            break
    bar.close()
    model.eval()
    return {"step": step + 1 if cfg.steps > start else start, "history": history, **metrics}


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
