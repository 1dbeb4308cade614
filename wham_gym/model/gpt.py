"""WHAM's predictor: a decoder-only GPT with nanoGPT parameter names (WHAM_FORMAT.md §3).

Two block versions exist in WHAM checkpoints: version 1 has affine LayerNorms
(weight, optional bias) and ``new_gelu``; version 2 has non-affine ln_1/ln_2 and
PyTorch's tanh GELU (numerically the same function). ``ln_f`` is affine in both.
``lm_head`` is tied to ``wte`` and has no bias.

The forward pass takes explicit positions and an optional static KV cache so
that the dream engine can prefill many slots of different lengths and then
decode them together, one token per slot per call.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..memory import hugepage_zeros
from .config import GPTConfig


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (eps 1e-5), as nanoGPT's."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class PlainLayerNorm(nn.Module):
    """Version-2 ln_1/ln_2: no affine parameters, so no state_dict keys."""

    def __init__(self, ndim: int):
        super().__init__()
        self.ndim = ndim

    def forward(self, x):
        return F.layer_norm(x, (self.ndim,), None, None, 1e-5)


class KVCache:
    """Preallocated keys/values for one layer: (B, n_head, S, head_dim), in the model dtype.

    ``keys_transposed``: keys are stored (B, n_head, head_dim, S), so that one query's scores over the whole
    cache are a matrix-vector product streaming along S (:func:`attend_cache`); :attr:`keys` is still a
    (B, n_head, S, head_dim) view.
    """

    def __init__(self, batch: int, n_head: int, length: int, head_dim: int, dtype, device,
                 keys_transposed: bool = False):
        shape = (batch, n_head, length, head_dim)
        self.keys_transposed = keys_transposed
        kshape = (batch, n_head, head_dim, length) if keys_transposed else shape
        # Every decode pass streams the whole cache: on huge pages where the OS has them (fewer TLB misses).
        self.k = hugepage_zeros(kshape, dtype, device)
        self.v = hugepage_zeros(shape, dtype, device)
        self._rows = torch.arange(batch, device=device)  # decode writes' row index, built once

    @property
    def keys(self) -> torch.Tensor:
        """The keys as (B, n_head, S, head_dim), a view."""
        return self.k.transpose(-2, -1) if self.keys_transposed else self.k

    def write(self, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Store k, v (B, nh, T, hd) at per-slot positions ``pos`` (B, T); return the full keys and values."""
        if k.shape[2] == 1:  # a decode pass: one position per row; indexed assignment is ~2x a scatter here
            self.keys[self._rows, :, pos[:, 0]] = k[:, :, 0].to(self.k.dtype)
            self.v[self._rows, :, pos[:, 0]] = v[:, :, 0].to(self.v.dtype)
            return self.keys, self.v
        index = pos[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])
        self.keys.scatter_(2, index, k.to(self.k.dtype))
        self.v.scatter_(2, index, v.to(self.v.dtype))
        return self.keys, self.v

    def write_prefix(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store k, v (B, nh, T, hd) at positions 0..T-1 of every row: a slice copy, no index tensor."""
        T = k.shape[2]
        self.keys[:, :, :T] = k
        self.v[:, :, :T] = v


def attend_cache(q: torch.Tensor, kt: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One query per row (B, nh, 1, hd) over a whole static cache: keys ``kt`` stored (B, nh, hd, S), values
    (B, nh, S, hd), additive ``mask`` (B, 1, 1, S) -> (B, nh, 1, hd).

    Written for ``torch.compile`` on CPU, where a pass is bound by reading the cache: inductor turns a
    ``matmul`` with one query row into its own loops, but keeps ``baddbmm`` as BLAS, which streams keys
    stored (hd, S) along S; three layers' caches at N 16 took 3.2 ms this way against 4.4 ms as two matmuls
    over (S, hd) keys (benchmarks/RESULTS.md)."""
    B, nh, _, hd = q.shape
    S = kt.shape[-1]
    scores = torch.baddbmm(mask.expand(B, nh, 1, S).reshape(B * nh, 1, S), q.reshape(B * nh, 1, hd),
                           kt.reshape(B * nh, hd, S), alpha=1.0 / math.sqrt(hd))
    y = torch.baddbmm(q.new_zeros(B * nh, 1, hd), scores.softmax(-1), v.reshape(B * nh, S, hd), beta=0)
    return y.view(B, nh, 1, hd)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.n_head = config.n_head
        self.n_embd = config.n_embd

    def forward(self, x, cache: KVCache | None = None, pos=None, mask=None, query=None):
        """``query`` (B,): output only that position of each row, (B, 1, C), keys and values still from all
        (the last layer of a prefill: only its last token's output is read, and the cache needs every key)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        causal = mask is None  # with a cache: every row holds T tokens at positions 0..T-1
        if query is not None:
            q = q.gather(2, query.view(B, 1, 1, 1).expand(B, self.n_head, 1, q.shape[-1]))
            if causal:  # the query's row of the causal mask
                allowed = torch.arange(T, device=x.device)[None, :] <= query[:, None]
                mask = torch.zeros(allowed.shape, dtype=q.dtype, device=x.device).masked_fill_(~allowed, float("-inf"))
                mask = mask[:, None, None, :]
            else:
                mask = mask.gather(2, query.view(B, 1, 1, 1).expand(B, mask.shape[1], 1, mask.shape[-1]))
        if cache is not None and causal:
            cache.write_prefix(k, v)  # positions 0..T-1: a slice copy
        elif cache is not None:
            k, v = cache.write(pos, k, v)
            n = mask.shape[-1]  # attend over the live prefix of the cache only
            k, v = k[:, :, :n], v[:, :, :n]
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif T == 1 and cache is not None and cache.keys_transposed and mask.shape[-1] == cache.k.shape[-1]:
            # One token over the whole static cache (the engine's compiled decode pass). Eager passes attend
            # over a live prefix of a (S, hd) key cache: they keep SDPA.
            y = attend_cache(q, cache.k, v, mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, q.shape[2], C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.version = config.version

    def forward(self, x):
        h = self.c_fc(x)
        # Version 1's new_gelu and version 2's tanh GELU are the same function; the fused kernel
        # is several times faster than new_gelu's five elementwise ops.
        h = F.gelu(h, approximate="tanh")
        return self.c_proj(h)


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        norm = (lambda: LayerNorm(config.n_embd, config.bias)) if config.version == 1 else (
            lambda: PlainLayerNorm(config.n_embd)
        )
        self.ln_1 = norm()
        self.attn = CausalSelfAttention(config)
        self.ln_2 = norm()
        self.mlp = MLP(config)

    def forward(self, x, cache=None, pos=None, mask=None, query=None):
        """``query`` (B,): compute only that position's output (B, 1, C); see CausalSelfAttention."""
        a = self.attn(self.ln_1(x), cache, pos, mask, query)
        if query is not None:
            x = x.gather(1, query.view(-1, 1, 1).expand(-1, 1, x.shape[-1]))
        x = x + a
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        # Registration order matches WHAM's (wpe, drop, h, ln_f, wte, lm_head).
        self.transformer = nn.ModuleDict(
            dict(
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(0.0),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=LayerNorm(config.n_embd, config.bias),
                wte=nn.Embedding(config.vocab_size, config.n_embd),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in WHAM
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2's scaled residual init
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights counted once

    def new_caches(self, batch: int, length: int | None = None, dtype=None, device=None,
                   keys_transposed: bool = False) -> list[KVCache]:
        """A static KV cache for ``batch`` sequences of up to ``length`` positions, owned by the caller
        (``keys_transposed``: see :class:`KVCache`)."""
        c = self.config
        dtype = dtype or self.transformer.wte.weight.dtype
        device = device or self.transformer.wte.weight.device
        return [KVCache(batch, c.n_head, length or c.block_size, c.head_dim, dtype, device, keys_transposed)
                for _ in range(c.n_layer)]

    def forward(self, idx, pos=None, mask=None, caches: list[KVCache] | None = None, gather=None,
                last_only: bool = False):
        """Logits for token ids ``idx`` (B, T).

        Without caches: a plain causal forward, positions 0..T-1 (or ``pos``).
        With ``caches`` (from :meth:`new_caches`): ``pos`` (B, T) gives each token's
        position, its keys and values are written into the caches there, and attention
        runs over the first ``mask.shape[-1]`` cache positions under ``mask``
        (B, 1, T, n) (additive, 0 = may attend). ``mask=None`` with caches means every row
        holds T tokens at positions 0..T-1: plain causal attention, the fast kernel.
        ``gather`` (B,) picks one position per row to project to logits (B, 1, V),
        so a right-padded prefill never builds logits for every position; the last layer then
        runs its attention output and MLP for those positions only (every key and value still
        reaches the cache), a quarter to a third of a small model's prefill.
        """
        B, T = idx.shape
        if pos is None:
            if T > self.config.block_size:
                raise ValueError(f"sequence of {T} tokens exceeds block_size {self.config.block_size}")
            pos = torch.arange(T, device=idx.device).expand(B, T)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        last = len(self.transformer.h) - 1
        for i, block in enumerate(self.transformer.h):
            # Nothing reads the last layer's output at other positions than the gathered ones.
            x = block(x, caches[i] if caches is not None else None, pos, mask, gather if i == last else None)
        if gather is None and last_only:
            x = x[:, -1:, :]
        return self.lm_head(self.transformer.ln_f(x))
