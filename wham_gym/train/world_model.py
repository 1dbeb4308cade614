"""Train the WHAM GPT: next-token cross-entropy over interleaved image + action tokens.

Like WHAM, a training sequence is ``seq_len`` whole steps ([image tokens, 16 action
tokens] per step, actions offset by the image vocabulary), so positions are
step-aligned exactly as at inference. Frames are tokenized once by the trained
tokenizer and cached.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import WindowSampler, split_sources, tokenize_episodes
from .trainer import TrainConfig, batch_rng, train


def sequences(model, imgs: np.ndarray, acts: np.ndarray, device) -> torch.Tensor:
    """(B, steps, N) image tokens + (B, steps, 16) action ids -> (B, steps*(N+16)) WHAM ids."""
    return model.vocab.interleave(torch.from_numpy(imgs).to(device), torch.from_numpy(acts).to(device))


def lm_loss(model, ids: torch.Tensor, changed_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Next-token cross-entropy; ``changed_weight`` != 1 weighs the image tokens that differ from the same
    position one step earlier by that much (a weighted mean), so the few tokens that move (a fireball
    coming closer) are not drowned by the many a frame copies from the last one."""
    logits = model.gpt(ids[:, :-1])
    targets = ids[:, 1:]
    tpi, tps = model.config.tokens_per_image, model.config.tokens_per_step
    is_image = (torch.arange(1, ids.shape[1], device=ids.device) % tps) < tpi
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    if changed_weight == 1.0:
        loss = ce.mean()
    else:
        changed = torch.zeros_like(targets, dtype=torch.bool)
        changed[:, tps - 1:] = ids[:, tps:] != ids[:, :-tps]  # target t against the token at t - tps
        changed &= is_image  # action tokens and the first step's image keep weight 1
        w = torch.where(changed, changed_weight, 1.0).reshape(-1)
        loss = (w * ce).sum() / w.sum()
    with torch.no_grad():
        hit = logits.argmax(-1) == targets
        acc = hit[:, is_image].float().mean()
    return loss, {"acc": acc.item()}


def train_world_model(model, data, run_dir, cfg: TrainConfig, *, progress: bool = True,
                      stop_after: int | None = None, cache_dir=None, val_windows: int = 64,
                      end_frame: str | None = None, changed_token_weight: float = 1.0,
                      end_window_share: float = 0.0) -> dict:
    """Train (or resume) ``model.gpt`` on ``data``; the tokenizer stays frozen.

    ``changed_token_weight``: the training loss's weight on image tokens that change from the last step
    (:func:`lm_loss`); validation reports the plain cross-entropy, so runs with different weights compare.
    ``end_window_share``: the share of each batch drawn from windows that end in an end frame
    (:class:`~wham_gym.train.data.WindowSampler`'s ``end_share``); validation windows stay uniform.
    """
    if not changed_token_weight > 0:
        raise ValueError(f"changed_token_weight: expected a number > 0 (1: plain cross-entropy), got {changed_token_weight}")
    run_dir = Path(run_dir)
    device = torch.device(cfg.device)
    model.to(device)
    train_src, val_src = split_sources(data)
    cache = Path(cache_dir) if cache_dir else run_dir / "token-cache"  # shared by stages that tokenize the same data
    tokens = lambda src: tokenize_episodes(model, src, cache, progress=progress, end_frame=end_frame)  # noqa: E731
    sampler = WindowSampler(tokens(train_src), model.config.seq_len, end_share=end_window_share)
    val_sampler = WindowSampler(tokens(val_src), model.config.seq_len)
    val_flat = np.linspace(0, len(val_sampler) - 1, min(val_windows, len(val_sampler))).astype(np.int64)
    val_ids = sequences(model, *val_sampler.gather(val_flat), device)
    for p in model.tokenizer.parameters():
        p.requires_grad_(False)

    def loss_fn(step, micro):
        imgs, acts = sampler.sample(batch_rng(cfg.seed, step, micro), cfg.batch_size)
        return lm_loss(model, sequences(model, imgs, acts, device), changed_token_weight)

    def validate():
        losses, accs = [], []
        for i in range(0, len(val_ids), cfg.batch_size):
            loss, m = lm_loss(model, val_ids[i:i + cfg.batch_size])
            losses.append(loss.item())
            accs.append(m["acc"])
        return {"loss": float(np.mean(losses)), "acc": float(np.mean(accs))}

    tokens_per_step = cfg.batch_size * cfg.grad_accum * (model.config.gpt.block_size - 1)
    return train(model.gpt, loss_fn, cfg, run_dir, validate=validate, desc="world model",
                 items_per_step=tokens_per_step, progress=progress, stop_after=stop_after,
                 meta={"train_windows": len(sampler), "val_windows": len(val_flat),
                       "train_episodes": len(train_src), "val_episodes": len(val_src)})
