"""Train a ViT-VQGAN image tokenizer (WHAM's ``VQGANModel`` architecture) on recorded frames.

Losses: reconstruction (MSE + L1 in the normalised image space) and the VQ
codebook + commitment terms on WHAM's L2-normalised codes, with a
straight-through estimator. An optional hard-pixel term adds the mean L1 of
each image's worst-reconstructed pixels: small objects (take_cover's fireballs,
the status bar's digits) cover too few pixels to move a frame-wide mean, so
without it a short training run paints them over with the background. No
perceptual term: LPIPS and torchvision backbones download their weights from a
hub, which our machines cannot reach. Codes no frame has used for a while are
restarted on random encoder outputs (dead-code restarts), which keeps the whole
codebook in play.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..model.config import ViTTokenizerConfig
from ..model.vit_vqgan import ViTVQGAN
from .data import frame_bank, split_sources
from .trainer import TrainConfig, batch_rng, train
from ..measure.metrics import psnr, ssim

COMMITMENT = 0.25
# CodeUsage defaults. Faster restarts (0.95 / 0.03) keep 80-98 % of the codebook in play, against
# 4-6 % here, and gain only 0.2-0.35 dB of reconstruction; the small world models we train on CPU
# then predict a far spread-out token distribution and dream worse (benchmarks/RESULTS.md, the maze A/B).
CODE_DECAY, CODE_THRESHOLD = 0.99, 1e-3


def hard_pixel_l1(recon: torch.Tensor, x: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mean L1 (over channels) of the ``fraction`` of each image's pixels reconstructed worst."""
    if not 0 < fraction <= 1:
        raise ValueError(f"hard_pixel_fraction: expected a share of the pixels in (0, 1], got {fraction}")
    err = (recon.float() - x).abs().mean(1).flatten(1)  # (B, H*W)
    k = max(1, int(fraction * err.shape[1]))
    return err.topk(k, dim=1, sorted=False).values.mean()


def tokenizer_loss(tok: ViTVQGAN, images: torch.Tensor, hard_pixels: tuple[float, float] = (0.0, 0.0),
                   ) -> tuple[torch.Tensor, dict, torch.Tensor, torch.Tensor]:
    """Loss for a uint8 batch; also returns latents and tokens for code-usage bookkeeping.

    ``hard_pixels`` = (weight, fraction) of the hard-pixel term (weight 0: off)."""
    x = tok.preprocess(images)
    z = tok.encode_latents(x)
    codes, tokens = tok.quantize(z)
    z_q = z + (codes - z).detach()  # straight-through
    recon = tok.decode_codes(z_q)
    mse = F.mse_loss(recon.float(), x)
    l1 = F.l1_loss(recon.float(), x)
    codebook = F.mse_loss(codes.float(), z.detach().float())
    commit = F.mse_loss(z.float(), codes.detach().float())
    loss = mse + l1 + codebook + COMMITMENT * commit
    metrics = {"recon": mse.item(), "codebook": codebook.item()}
    weight, fraction = hard_pixels
    if weight:
        hard = hard_pixel_l1(recon, x, fraction)
        loss = loss + weight * hard
        metrics["hard"] = hard.item()
    return loss, metrics, z.detach(), tokens


class CodeUsage:
    """Exponential moving share of each code; restarts codes that fell silent.

    A code is dead when its share falls below ``threshold`` of a uniform share: with
    decay 0.99 / threshold 1e-3 an unused code is restarted after ~700 steps, with
    0.95 / 0.03 after ~70.
    """

    def __init__(self, vocab_size: int, decay: float = CODE_DECAY, threshold: float = CODE_THRESHOLD):
        self.ema = torch.ones(vocab_size)
        self.decay, self.threshold = decay, threshold

    def update(self, tokens: torch.Tensor) -> None:
        counts = torch.bincount(tokens.reshape(-1).cpu(), minlength=len(self.ema)).float()
        self.ema.mul_(self.decay).add_(counts / counts.sum(), alpha=1 - self.decay)

    @torch.no_grad()
    def restart(self, tok: ViTVQGAN, latents: torch.Tensor, rng: np.random.Generator) -> int:
        dead = torch.nonzero(self.ema < self.threshold / len(self.ema)).squeeze(1)
        if len(dead) == 0:
            return 0
        pool = latents.reshape(-1, latents.shape[-1])
        pick = torch.from_numpy(rng.integers(0, len(pool), len(dead))).to(pool.device)
        weight = tok.vq_vae._embedding.weight
        weight[dead.to(weight.device)] = pool[pick].to(weight.dtype) + 0.01 * torch.randn_like(weight[dead.to(weight.device)])
        self.ema[dead] = 1.0 / len(self.ema)
        return len(dead)


def train_tokenizer(data, run_dir, tokenizer: ViTTokenizerConfig, cfg: TrainConfig, *, max_frames: int = 20000,
                    restart_every: int = 50, code_usage: tuple[float, float] = (CODE_DECAY, CODE_THRESHOLD),
                    hard_pixels: tuple[float, float] = (0.0, 0.0),
                    progress: bool = True, stop_after: int | None = None,
                    end_frame: str | None = None) -> tuple[ViTVQGAN, dict]:
    """Train (or resume) a tokenizer in ``run_dir``; returns it with validation metrics.

    ``code_usage`` is CodeUsage's (decay, threshold) for dead-code restarts; ``hard_pixels`` the
    (weight, fraction) of :func:`tokenizer_loss`'s hard-pixel term."""
    run_dir = Path(run_dir)
    train_src, val_src = split_sources(data)
    frames = frame_bank(train_src, max_frames, seed=cfg.seed, end_frame=end_frame)
    val_frames = frame_bank(val_src, min(512, max_frames), seed=cfg.seed + 1, end_frame=end_frame)
    if frames.shape[2:] != (tokenizer.height, tokenizer.width):
        raise ValueError(f"frames are {frames.shape[3]}x{frames.shape[2]}, tokenizer expects {tokenizer.width}x{tokenizer.height}")
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    tok = ViTVQGAN(tokenizer).to(device)
    usage = CodeUsage(tokenizer.vocab_size, *code_usage)
    last = {}

    def loss_fn(step, micro):
        idx = batch_rng(cfg.seed, step, micro).integers(0, len(frames), cfg.batch_size)
        images = torch.from_numpy(frames[idx]).to(device)
        loss, m, z, tokens = tokenizer_loss(tok, images, hard_pixels)
        usage.update(tokens)
        last["z"] = z
        return loss, m

    def after_step(step):
        if restart_every and (step + 1) % restart_every == 0:
            usage.restart(tok, last["z"], batch_rng(cfg.seed + 7, step))

    def validate():
        return evaluate_tokenizer(tok, val_frames)

    result = train(tok, loss_fn, cfg, run_dir, validate=validate, after_step=after_step, desc="tokenizer",
                   items_per_step=cfg.batch_size * cfg.grad_accum, progress=progress, stop_after=stop_after,
                   extra_state={"code_usage": usage.ema},
                   meta={"tokenizer": tokenizer.__dict__, "frames": len(frames), "val_frames": len(val_frames),
                         "train_episodes": len(train_src), "val_episodes": len(val_src)})
    return tok, result


@torch.no_grad()
def evaluate_tokenizer(tok: ViTVQGAN, frames: np.ndarray, batch: int = 64) -> dict:
    """Reconstruction PSNR/SSIM on uint8 frames and codebook usage."""

    psnrs, ssims, used = [], [], set()
    for i in range(0, len(frames), batch):
        images = torch.from_numpy(frames[i:i + batch]).to(tok.device)
        tokens = tok.encode(images)
        recon = tok.decode(tokens)
        psnrs.append(psnr(recon, images))
        ssims.append(ssim(recon, images))
        used.update(tokens.unique().tolist())
    return {"psnr": float(torch.cat(psnrs).mean()), "ssim": float(torch.cat(ssims).mean()),
            "codes_used": len(used) / tok.vocab_size}
