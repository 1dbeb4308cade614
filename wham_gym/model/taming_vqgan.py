"""Taming-transformers VQGAN image tokenizer: WHAM's ``TamingVQModel`` (WHAM_FORMAT.md §2.3, §4).

A convolutional encoder shrinks a square image by 2^(levels-1) per side; each latent
pixel's nearest (raw, un-normalised) codebook row is its token, in row-major order.
The decoder mirrors the encoder. ``vq_model`` holds the networks so the state_dict keys
equal the official ones relative to ``context_encoders.images.``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checks import check_images, check_tokens
from .config import TamingTokenizerConfig

# -- building blocks -------------------------------------------------------------


def Normalize(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, dropout: float):
        super().__init__()
        self.norm1 = Normalize(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = Normalize(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        # A 1x1 projection only when the widths differ; otherwise the identity.
        self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        shortcut = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return shortcut + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all h*w positions, 1x1 convs for q, k, v, proj_out."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = Normalize(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hn = self.norm(x)
        q, k, v = (conv(hn).reshape(b, c, h * w) for conv in (self.q, self.k, self.v))
        # Written as taming's explicit product, not SDPA: scaling the scores after q.k and
        # weighting v as v @ w^T round exactly like the reference decoder in float32
        # (SDPA's fused order flips ~0.015 % of decoded uint8 values by one).
        weights = torch.softmax(torch.bmm(q.transpose(1, 2), k) * (c ** -0.5), dim=2)  # (b, query, key)
        y = torch.bmm(v, weights.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj_out(y)


class Downsample(nn.Module):
    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        # Asymmetric padding: one zero column/row on the right/bottom only.
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x if self.conv is None else self.conv(x)


class Level(nn.Module):
    """One resolution of the encoder (``down.{l}``) or decoder (``up.{l}``)."""

    def __init__(self, in_ch: int, out_ch: int, n_blocks: int, use_attn: bool, dropout: float):
        super().__init__()
        chans = [in_ch] + [out_ch] * n_blocks
        self.block = nn.ModuleList(ResnetBlock(chans[j], out_ch, dropout) for j in range(n_blocks))
        self.attn = nn.ModuleList(AttnBlock(out_ch) for _ in range(n_blocks if use_attn else 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for j, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[j](x)
        return x


class Mid(nn.Module):
    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


# -- encoder / decoder ------------------------------------------------------------


def _level_channels(cfg: TamingTokenizerConfig) -> list[int]:
    return [cfg.ch * m for m in cfg.ch_mult]


def _uses_attn(cfg: TamingTokenizerConfig, level: int) -> bool:
    return cfg.resolution // 2**level in cfg.attn_resolutions


class Encoder(nn.Module):
    def __init__(self, cfg: TamingTokenizerConfig):
        super().__init__()
        chans = _level_channels(cfg)
        n_levels = len(chans)
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        prev = cfg.ch
        for lvl, c in enumerate(chans):
            level = Level(prev, c, cfg.num_res_blocks, _uses_attn(cfg, lvl), cfg.dropout)
            if lvl < n_levels - 1:
                level.downsample = Downsample(c, cfg.resamp_with_conv)
            self.down.append(level)
            prev = c
        self.mid = Mid(prev, cfg.dropout)
        self.norm_out = Normalize(prev)
        self.conv_out = nn.Conv2d(prev, cfg.z_channels, 3, padding=1)  # double_z is False in WHAM

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: TamingTokenizerConfig):
        super().__init__()
        chans = _level_channels(cfg)
        n_levels = len(chans)
        top = chans[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, top, 3, padding=1)
        self.mid = Mid(top, cfg.dropout)
        # up.{l} is level l; each level's first block takes the width of the level above.
        levels = []
        for lvl, c in enumerate(chans):
            level = Level(chans[min(lvl + 1, n_levels - 1)], c, cfg.num_res_blocks + 1,
                          _uses_attn(cfg, lvl), cfg.dropout)
            if lvl != 0:
                level.upsample = Upsample(c, cfg.resamp_with_conv)
            levels.append(level)
        self.up = nn.ModuleList(levels)
        self.norm_out = Normalize(chans[0])
        self.conv_out = nn.Conv2d(chans[0], cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):  # coarsest first
            h = level(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))  # no tanh: the output is clamped later


class VectorQuantizer(nn.Module):
    """Nearest raw codebook row (taming's VectorQuantizer2, legacy, no remap)."""

    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)

    def forward(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, e = latents.shape
        # Distances in float32 at least, so a low-precision module still picks the fp32 argmin.
        dt = torch.promote_types(latents.dtype, torch.float32)
        z = latents.reshape(b * n, e).to(dt)
        book = self.embedding.weight.to(dt)
        dist = z.pow(2).sum(1, keepdim=True) + book.pow(2).sum(1) - 2.0 * (z @ book.t())
        tokens = dist.argmin(dim=1).view(b, n)  # first minimum on ties
        return self.embedding(tokens).to(latents.dtype), tokens


class VQModel(nn.Module):
    """The object WHAM keeps as ``vq_model`` (taming's VQModel without its training loss)."""

    def __init__(self, cfg: TamingTokenizerConfig):
        super().__init__()
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = VectorQuantizer(cfg.n_embed, cfg.embed_dim)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)


# -- the tokenizer ------------------------------------------------------------------


class TamingVQGAN(nn.Module):
    """uint8 images (B, C, R, R) <-> long tokens (B, n*n), n = num_indices_per_axis."""

    def __init__(self, cfg: TamingTokenizerConfig):
        super().__init__()
        bad = [c for c in [cfg.ch] + _level_channels(cfg) if c % 32]
        if bad:
            raise ValueError(f"taming channel widths must be multiples of 32 (GroupNorm(32)), got {bad}")
        self.config = cfg
        self.height = self.width = cfg.resolution
        self.side = cfg.num_indices_per_axis
        self.grid = (self.side, self.side)  # the token grid, row-major
        self.tokens_per_image = cfg.tokens_per_image
        self.vocab_size = cfg.n_embed
        self.vq_model = VQModel(cfg)

    @property
    def dtype(self) -> torch.dtype:
        return self.vq_model.quant_conv.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.vq_model.quant_conv.weight.device

    # -- world space <-> network space (float32, exact reference formulas) --------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 -> float32 in [-1, 1]."""
        return images.float() / 127.5 - 1

    def postprocess(self, x: torch.Tensor) -> torch.Tensor:
        """float -> uint8, truncating (``.byte()``), not rounding."""
        return ((x.float().clamp(-1.0, 1.0) + 1) * 127.5).byte()

    # -- differentiable pieces (for training with a straight-through estimator) -----
    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed float (B,C,R,R) -> latents (B,n*n,E), row-major over the latent grid."""
        z = self.vq_model.quant_conv(self.vq_model.encoder(x.to(self.dtype)))
        return z.flatten(2).transpose(1, 2)

    def quantize(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents (B,N,E) -> (codes (B,N,E) = codebook rows, tokens long (B,N))."""
        return self.vq_model.quantize(latents)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B,N,E) -> float image (B,out_ch,R,R), before ``postprocess``."""
        b, n, e = codes.shape
        z = codes.to(self.dtype).transpose(1, 2).reshape(b, e, self.side, self.side)
        return self.vq_model.decoder(self.vq_model.post_quant_conv(z))

    # -- tokens ---------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B,C,R,R) -> long (B,n*n)."""
        check_images(images, self.config.in_channels, self.height, self.width)
        x = self.preprocess(images.to(self.device))
        return self.quantize(self.encode_latents(x))[1]

    @torch.no_grad()
    def codes(self, tokens: torch.Tensor) -> torch.Tensor:
        """long (B,n*n) -> the quantised latent (B,n*n,E): each token's codebook row (what the decoder reads)."""
        return self.vq_model.quantize.embedding(tokens.to(self.device, torch.long))

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, check: bool = True) -> torch.Tensor:
        """long (B,n*n) -> uint8 (B,out_ch,R,R). ``check=False``: ids known valid (the engine's own)."""
        if check:
            check_tokens(tokens, self.tokens_per_image, self.vocab_size)
        return self.postprocess(self.decode_codes(self.codes(tokens)))

