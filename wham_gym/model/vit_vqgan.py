"""ViT-VQGAN image tokenizer: WHAM's ``VQGANModel`` (WHAM_FORMAT.md §2.4, §5).

Images are cut into p x p patches (after zero-padding right/bottom to a multiple of p),
a non-causal transformer maps each patch to an L2-normalised vector, and the nearest
L2-normalised codebook row gives the token. Decoding runs the mirror transformer and
folds the patches back.

The state_dict keys equal the official ones relative to ``context_encoders.images.``,
except the all-True ``attn_mask`` buffers (never used for masking, so not registered;
the checkpoint loader ignores them) and the training-only PatchGAN.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checks import check_images, check_tokens
from .config import ViTTokenizerConfig

# ImageNet statistics, channels R, G, B (§5 pre-processing).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# -- patches -------------------------------------------------------------------


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C*p*p), H and W multiples of p.

    Token t = row*nW + col (rows along height); feature c*p*p + py*p + px.
    """
    b, c, h, w = x.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"x: expected height and width multiples of patch_size {p}, got {h}x{w}")
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)  # b, row, col, c, py, px
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def unpatchify(patches: torch.Tensor, patch_size: int, rows: int, cols: int) -> torch.Tensor:
    """(B, rows*cols, C*p*p) -> (B, C, rows*p, cols*p): the exact inverse of ``patchify``.

    Equals ``nn.Fold(kernel_size=p, stride=p)`` on the transposed patches; the blocks
    do not overlap, so a reshape moves the same values without any summation.
    """
    b, n, f = patches.shape
    p = patch_size
    if n != rows * cols or f % (p * p):
        raise ValueError(
            f"patches: expected shape (B, {rows * cols}, C*{p * p}), got {tuple(patches.shape)}"
        )
    c = f // (p * p)
    x = patches.reshape(b, rows, cols, c, p, p).permute(0, 3, 1, 4, 2, 5)  # b, c, row, py, col, px
    return x.reshape(b, c, rows * p, cols * p)


# -- transformer (nanoGPT's SelfAttentionBlock, bias=False, non-causal) ----------


def new_gelu(x: torch.Tensor) -> torch.Tensor:
    # GPT-2's tanh approximation of GELU.
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class LayerNorm(nn.Module):
    """Weight-only LayerNorm, eps 1e-5 (the blocks are built with bias=False)."""

    def __init__(self, ndim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, None, 1e-5)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, head_size: int):
        super().__init__()
        self.n_head = dim // head_size
        self.c_attn = nn.Linear(dim, 3 * dim, bias=False)
        self.c_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (t.view(b, n, self.n_head, d // self.n_head).transpose(1, 2) for t in (q, k, v))
        # Every patch sees every patch: WHAM's all-True mask masks nothing.
        y = F.scaled_dot_product_attention(q, k, v)
        return self.c_proj(y.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.c_fc = nn.Linear(dim, 4 * dim, bias=False)
        self.c_proj = nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(new_gelu(self.c_fc(x)))


class SelfAttentionBlock(nn.Module):
    def __init__(self, dim: int, head_size: int):
        super().__init__()
        self.ln_1 = LayerNorm(dim)
        self.attn = SelfAttention(dim, head_size)
        self.ln_2 = LayerNorm(dim)
        self.mlp = MLP(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class ViTCoder(nn.Module):
    """proj1 -> + pos_embeds -> blocks -> output_ln -> output_proj, per token.

    The encoder maps patches (3p²) to latents (E); the decoder maps codes (E) to patches.
    """

    def __init__(self, in_dim: int, out_dim: int, num_tokens: int, cfg: ViTTokenizerConfig):
        super().__init__()
        self.proj1 = nn.Linear(in_dim, cfg.transf_dim)
        self.pos_embeds = nn.Embedding(num_tokens, cfg.transf_dim)
        self.vit = nn.ModuleList(SelfAttentionBlock(cfg.transf_dim, cfg.head_size) for _ in range(cfg.num_layers))
        self.output_ln = nn.LayerNorm(cfg.transf_dim, eps=1e-5)
        self.output_proj = nn.Linear(cfg.transf_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj1(x) + self.pos_embeds.weight
        for block in self.vit:
            x = block(x)
        return self.output_proj(self.output_ln(x))


class ViTVectorQuantizer(nn.Module):
    """Nearest codebook row by cosine: both sides L2-normalised before the distance."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self._embedding = nn.Embedding(vocab_size, dim)

    def codebook(self) -> torch.Tensor:
        return F.normalize(self._embedding.weight, dim=1)

    def forward(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, e = latents.shape
        # Distances in float32 at least, so a low-precision module still picks the fp32 argmin.
        dt = torch.promote_types(latents.dtype, torch.float32)
        x = F.normalize(latents.reshape(b * n, e).to(dt), dim=1)
        book = self.codebook().to(dt)
        dist = x.pow(2).sum(1, keepdim=True) + book.pow(2).sum(1) - 2.0 * (x @ book.t())
        tokens = dist.argmin(dim=1).view(b, n)  # first minimum on ties
        return self.lookup(tokens).to(latents.dtype), tokens

    def lookup(self, tokens: torch.Tensor) -> torch.Tensor:
        # Row gather == WHAM's one_hot(tokens) @ codebook, without the (B*N, K) matrix.
        return F.embedding(tokens, self.codebook())


# -- the tokenizer --------------------------------------------------------------


class ViTVQGAN(nn.Module):
    """uint8 images (B, 3, H, W) <-> long tokens (B, N), N = rows*cols patches."""

    def __init__(self, cfg: ViTTokenizerConfig):
        super().__init__()
        self.config = cfg
        self.height, self.width, self.patch_size = cfg.height, cfg.width, cfg.patch_size
        self.rows, self.cols = cfg.grid
        self.grid = (self.rows, self.cols)  # the token grid, rows along height (token t = row * cols + col)
        self.tokens_per_image = cfg.tokens_per_image
        self.vocab_size = cfg.vocab_size
        patch_dim = 3 * cfg.patch_size**2
        self.encoder = ViTCoder(patch_dim, cfg.embedding_dim, self.tokens_per_image, cfg)
        self.vq_vae = ViTVectorQuantizer(cfg.vocab_size, cfg.embedding_dim)
        self.decoder = ViTCoder(cfg.embedding_dim, patch_dim, self.tokens_per_image, cfg)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # GPT-style small init for training from scratch; checkpoints overwrite it.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.proj1.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.encoder.proj1.weight.device

    # -- world space <-> network space (float32, exact reference formulas) --------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B,3,H,W) -> float32 ImageNet-normalised."""
        x = images.float() / 255
        mean, std = _channel_stats(x.device)
        return (x - mean) / std

    def postprocess(self, x: torch.Tensor) -> torch.Tensor:
        """float (B,3,H,W) -> uint8, truncating (``.byte()``), not rounding."""
        mean, std = _channel_stats(x.device)
        x = x.float() * std + mean
        return (x.clamp(0.0, 1.0) * 255).byte()

    # -- patches --------------------------------------------------------------------
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,Hpad,Wpad) -> (B,N,3p²)."""
        return patchify(x, self.patch_size)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """(B,N,3p²) -> (B,3,Hpad,Wpad)."""
        return unpatchify(patches, self.patch_size, self.rows, self.cols)

    # -- differentiable pieces (for training with a straight-through estimator) -----
    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed float (B,3,H,W) -> unit-length latents (B,N,E) in token order."""
        pad_w = self.cols * self.patch_size - self.width
        pad_h = self.rows * self.patch_size - self.height
        x = F.pad(x.to(self.dtype), (0, pad_w, 0, pad_h))  # zeros right and bottom, after normalising
        return F.normalize(self.encoder(self.patchify(x)), dim=-1, eps=1e-12)

    def quantize(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents (B,N,E) -> (codes (B,N,E) = normalised codebook rows, tokens long (B,N))."""
        return self.vq_vae(latents)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B,N,E) -> float image (B,3,H,W), before ``postprocess``."""
        patches = self.decoder(codes.to(self.dtype))
        return self.unpatchify(patches)[:, :, : self.height, : self.width]

    # -- tokens ---------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B,3,H,W) -> long (B,N)."""
        check_images(images, 3, self.height, self.width)
        x = self.preprocess(images.to(self.device))
        return self.quantize(self.encode_latents(x))[1]

    @torch.no_grad()
    def codes(self, tokens: torch.Tensor) -> torch.Tensor:
        """long (B,N) -> the quantised latent (B,N,E): each token's normalised codebook row (what the decoder reads)."""
        return self.vq_vae.lookup(tokens.to(self.device, torch.long))

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, check: bool = True) -> torch.Tensor:
        """long (B,N) -> uint8 (B,3,H,W). ``check=False``: ids known valid (the engine's own)."""
        if check:
            check_tokens(tokens, self.tokens_per_image, self.vocab_size)
        return self.postprocess(self.decode_codes(self.codes(tokens)))


def _channel_stats(device) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return mean, std

