"""WHAM's released generation algorithm, batched, as the benchmark's baseline.

This restates the reference procedure (WHAM_FORMAT.md §7-§8) in our own code,
faithful in *cost structure*, not tuned: for every frame

1. the whole window (up to 9 complete steps) is re-prefilled from position 0,
   building a fresh per-layer KV cache (real keys/values followed by zero rows);
2. the frame's image tokens are decoded one at a time, each step attending
   over the cache with explicit ``softmax(q·Kᵀ/√hd)·V`` (no SDPA), as §8.2 does;
3. a *second* prefill of context + the new image tokens samples the 16 action
   tokens, because each modality is a separate ``optimized_generate`` call (§8.1).
   In world-model mode the sampled action is then overwritten by the given one,
   as ``run_dreaming``'s base protocol does.

Sampling is §8.3's filter followed by ``torch.multinomial``. All N slots are
batched together, which needs equal-length windows (the reference pads nothing).

It reads the GPT's parameters through its submodules (``ln_1``, ``c_attn``, ...)
but never its forward pass or static caches, so it shares weights with the
engine and nothing else. WHAM runs it in fp32; it computes in the model's dtype,
so pass an fp32 model to measure the reference (the benchmark does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import controller
from ..controller import ACTION_DIM
from ..sampling import check_settings, filter_logits


@dataclass
class ReferenceStep:
    tokens: torch.Tensor  # (N, tokens_per_image) long
    frames: torch.Tensor | None  # (N, H, W, 3) uint8, or None with decode=False
    sampled_actions: torch.Tensor  # (N, 16) action-vocab ids the model sampled (discarded in world-model mode)


class _LayerCache:
    """One layer's keys/values (B, nh, T0 + n, hd) and how many rows are filled."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, size: int):
        self.k, self.v, self.size = k, v, size


def _heads(t: torch.Tensor, n_head: int) -> torch.Tensor:
    B, T, C = t.shape
    return t.view(B, T, n_head, C // n_head).transpose(1, 2)


def _merge(t: torch.Tensor) -> torch.Tensor:
    B, nh, T, hd = t.shape
    return t.transpose(1, 2).contiguous().view(B, T, nh * hd)


class ReferenceGPT:
    """``optimized_generate`` (§8.2) over a nanoGPT whose weights it borrows."""

    def __init__(self, gpt, *, temperature: float = 0.9, top_k=None, top_p=None, min_tokens_to_keep: int = 1,
                 deterministic: bool = False, generator: torch.Generator | None = None):
        check_settings(temperature, top_k, top_p, min_tokens_to_keep)
        self.gpt = gpt
        self.n_head = gpt.config.n_head
        self.sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p,
                             min_tokens_to_keep=min_tokens_to_keep, deterministic=deterministic)
        self.generator = generator

    def _sample(self, logits: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        probs = filter_logits(logits, lo, hi, **self.sampling).softmax(-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(1)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        t = self.gpt.transformer
        return self.gpt.lm_head(t.ln_f(x[:, -1]))  # last position only

    def _prefill(self, idx: torch.Tensor, n: int):
        """Causal forward over idx (B, T0); caches of T0 + n rows, zero-padded like the reference."""
        t = self.gpt.transformer
        B, T0 = idx.shape
        x = t.wte(idx) + t.wpe(torch.arange(T0, device=idx.device))
        caches = []
        for block in t.h:
            attn = block.attn
            q, k, v = attn.c_attn(block.ln_1(x)).split(attn.n_embd, dim=2)
            q, k, v = (_heads(z, self.n_head) for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + attn.c_proj(_merge(y))
            x = x + block.mlp(block.ln_2(x))
            # The reference concatenates fresh zero rows for the n tokens to come: a full
            # copy of the cache per call, which is part of its cost.
            pad = torch.zeros(B, k.shape[1], n, k.shape[3], dtype=k.dtype, device=k.device)
            caches.append(_LayerCache(torch.cat([k, pad], 2), torch.cat([v, pad], 2), T0))
        return self._logits(x), caches

    def _decode(self, token: torch.Tensor, pos: int, caches) -> torch.Tensor:
        """One token per sequence at position ``pos``; attention written out by hand over the cache."""
        t = self.gpt.transformer
        x = t.wte(token[:, None]) + t.wpe(torch.tensor([pos], device=token.device))
        for block, cache in zip(t.h, caches):
            attn = block.attn
            q, k, v = attn.c_attn(block.ln_1(x)).split(attn.n_embd, dim=2)
            q, k, v = (_heads(z, self.n_head) for z in (q, k, v))
            cache.k[:, :, cache.size] = k[:, :, 0]
            cache.v[:, :, cache.size] = v[:, :, 0]
            cache.size += 1
            keys, values = cache.k[:, :, : cache.size], cache.v[:, :, : cache.size]
            att = (q @ keys.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
            y = att.softmax(-1) @ values
            x = x + attn.c_proj(_merge(y))
            x = x + block.mlp(block.ln_2(x))
        return self._logits(x)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, n: int, lo: list[int], hi: list[int]) -> torch.Tensor:
        """Sample n tokens after idx (B, T0), token g within [lo[g], hi[g]]; returns cat(idx, new)."""
        B, T0 = idx.shape
        if T0 + n > self.gpt.config.block_size:
            raise ValueError(f"{T0} context tokens + {n} new exceed block_size {self.gpt.config.block_size}")
        logits, caches = self._prefill(idx, n)
        new = [self._sample(logits, lo[0], hi[0])]
        for g in range(1, n):  # the last sampled token is never fed back
            logits = self._decode(new[-1], T0 + g - 1, caches)
            new.append(self._sample(logits, lo[g], hi[g]))
        return torch.cat([idx, torch.stack(new, 1)], 1)


class ReferenceDreamer:
    """N world-model rollouts stepped the reference way; all slots share one window length.

    ``reset(tokens (N, P, tpi), actions (N, P-1 or P, 16))`` takes a prompt like
    DreamEngine's (controller vectors, the newest frame's action comes with
    ``step``); ``step(actions (N, 16))`` dreams the next frame of every slot.
    """

    def __init__(self, model, num_envs: int, *, temperature: float = 0.9, top_k=None, top_p=None,
                 min_tokens_to_keep: int = 1, deterministic: bool = False, seed: int | None = None,
                 context_steps: int | None = None):
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        cfg = model.config
        self.model, self.num_envs = model, num_envs
        self.context_steps = context_steps or cfg.seq_len
        if not 2 <= self.context_steps <= cfg.seq_len:
            raise ValueError(f"context_steps must lie in [2, {cfg.seq_len}], got {context_steps}")
        self.window = self.context_steps - 1  # complete steps the predictor sees (§7)
        self.tpi = cfg.tokens_per_image
        gen = torch.Generator(device=model.device)
        gen.manual_seed(0 if seed is None else int(seed))
        self.gpt = ReferenceGPT(model.gpt, temperature=temperature, top_k=top_k, top_p=top_p,
                                min_tokens_to_keep=min_tokens_to_keep, deterministic=deterministic, generator=gen)
        lo, hi = model.vocab.range_low.tolist(), model.vocab.range_high.tolist()
        self._img_range = lo[: self.tpi], hi[: self.tpi]
        self._act_range = lo[self.tpi:], hi[self.tpi:]
        self.images: torch.Tensor | None = None  # (N, P, tpi) newest last
        self.actions: torch.Tensor | None = None  # (N, P-1, 16) action-vocab ids

    def reset(self, tokens, actions=None) -> None:
        dev = self.model.device
        tokens = torch.as_tensor(tokens, device=dev)
        if tokens.dim() != 3 or tokens.shape[0] != self.num_envs or tokens.shape[2] != self.tpi:
            raise ValueError(f"tokens: expected ({self.num_envs}, P, {self.tpi}) for all slots at once "
                             f"(the reference batches equal-length windows only), got {tuple(tokens.shape)}")
        self.model.vocab.check_image_tokens(tokens, "tokens")
        P = tokens.shape[1]
        if not 1 <= P <= self.context_steps:
            raise ValueError(f"a prompt holds 1 to {self.context_steps} frames, got {P}")
        if P > 1:
            if actions is None:
                raise ValueError(f"actions: a prompt of {P} frames needs the {P - 1} actions taken at them")
            actions = torch.as_tensor(actions, dtype=torch.float32, device=dev)
            if actions.dim() != 3 or actions.shape[0] != self.num_envs or actions.shape[1] not in (P - 1, P):
                raise ValueError(f"actions: expected ({self.num_envs}, {P - 1}, 16), got {tuple(actions.shape)}")
            controller.validate_actions(actions, "actions")
            ids = self.model.action_ids(controller.clip_actions(actions[:, : P - 1]))
        else:
            ids = torch.zeros(self.num_envs, 0, ACTION_DIM, dtype=torch.long, device=dev)
        keep = min(P, self.window)
        self.images, self.actions = tokens[:, P - keep:].long(), ids[:, ids.shape[1] - (keep - 1):]

    @torch.no_grad()
    def step(self, actions, decode: bool = True) -> ReferenceStep:
        if self.images is None:
            raise RuntimeError("call reset() with a prompt before step()")
        dev = self.model.device
        actions = torch.as_tensor(actions, dtype=torch.float32, device=dev)
        controller.validate_actions(actions, "actions", batch=self.num_envs)
        acts = torch.cat([self.actions, self.model.action_ids(controller.clip_actions(actions))[:, None]], 1)
        context = self.model.vocab.interleave(self.images, acts)

        out = self.gpt.generate(context, self.tpi, *self._img_range)  # images
        out = self.gpt.generate(out, ACTION_DIM, *self._act_range)  # then actions: a second prefill
        new_img = out[:, context.shape[1]: context.shape[1] + self.tpi]
        sampled = out[:, -ACTION_DIM:] - self.model.vocab.action_offset

        # Slide the window (world-model mode: the given action stays, the sampled one is dropped).
        self.images = torch.cat([self.images, new_img[:, None]], 1)[:, -self.window:]
        self.actions = acts[:, acts.shape[1] - (self.images.shape[1] - 1):]
        frames = self.model.decode_tokens(new_img) if decode else None
        return ReferenceStep(tokens=new_img, frames=frames, sampled_actions=sampled)
