"""Token sampling as WHAM does it (WHAM_FORMAT.md §8.3), batched, with per-slot random streams.

The filtering order is the reference's: temperature (floored at 0.1), valid-range
mask, then top-k or top-p. The draw itself is an inverse-CDF lookup with a
uniform number taken from a counter-based stream per slot: uniform ``j`` of slot
``b`` is a hash of (seed_b, j). A slot's samples therefore depend only on its
own seed and inputs, never on the batch size or on other slots, and the whole
batch draws in one tensor op with no host round-trip.
"""

from __future__ import annotations

import torch

MIN_TEMPERATURE = 0.1
_MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for int64 x < 2^32 without signed overflow."""
    lo = x * (c & 0xFFFF)
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _MASK32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    # "lowbias32" integer hash (public domain, by Chris Wellons).
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def uniforms(seeds: torch.Tensor, counters: torch.Tensor, n: int) -> torch.Tensor:
    """(N, n) float64 uniforms in [0, 1): draws ``counters[b] .. counters[b]+n-1`` of slot b's stream."""
    j = counters[:, None] + torch.arange(n, device=counters.device)
    h1 = _hash32(seeds[:, None] ^ _hash32(j))
    h2 = _hash32(h1 ^ _hash32((seeds[:, None] >> 32) + 0x9E3779B9))
    # In int64, then one exact conversion: an int64 tensor times a Python float is float32 (24 bits), which
    # rounded about 3 draws in 10^8 up to exactly 1.0 (and drew the vocabulary's last id, out of range).
    return ((h1 >> 5) * 67108864 + (h2 >> 6)).double() / 9007199254740992.0  # 53 bits, at most 1 - 2^-53


def slot_seed(seed: int, slot: int) -> int:
    """Seed of slot ``slot`` in an engine seeded with ``seed``: a hash, so neighbours' streams are unrelated."""
    seed = int(seed) & ((1 << 62) - 1)
    words = torch.tensor([(seed ^ (slot * 0x9E3779B9)) & _MASK32, ((seed >> 32) ^ slot) & _MASK32])
    h = _hash32(_hash32(words) + torch.tensor([slot, 0x632BE5AB]))
    return int(h[0]) | ((int(h[1]) & 0x3FFFFFFF) << 32)


def filter_logits(logits: torch.Tensor, lo: int, hi: int, temperature: float, top_k: int | None = None,
                  top_p: float | None = None, min_tokens_to_keep: int = 1, deterministic: bool = False,
                  outside: torch.Tensor | None = None) -> torch.Tensor:
    """Temperature, valid range [lo, hi] (inclusive), then top-k / top-p; -inf marks removed tokens.

    ``logits`` is (N, V) float; a new tensor is returned. ``outside`` (V,) bool, the ids
    outside [lo, hi], may be passed precomputed (the engine builds one per position once).
    """
    if top_k is not None and top_p is not None:
        raise ValueError("top_k and top_p cannot both be set (WHAM allows one or the other)")
    V = logits.shape[-1]
    logits = logits / max(float(temperature), MIN_TEMPERATURE)
    if outside is None:
        ids = torch.arange(V, device=logits.device)
        outside = (ids < lo) | (ids > hi)
    logits = logits.masked_fill(outside, float("-inf"))
    if deterministic:  # WHAM's argmax: k = 1 whatever min_tokens_to_keep says (ties stay)
        kth = logits.max(dim=-1, keepdim=True).values
        return logits.masked_fill(logits < kth, float("-inf"))
    if top_k is not None:
        k = min(max(int(top_k), min_tokens_to_keep), V)
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    elif top_p is not None:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove = cum > top_p
        remove[:, :min_tokens_to_keep] = False
        logits = logits.masked_fill(remove.scatter(1, order, remove), float("-inf"))
    return logits


def draw(filtered_logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sample: the first token whose cumulative probability exceeds ``u`` (N,) in [0, 1)."""
    probs = filtered_logits.double().softmax(-1)
    cdf = probs.cumsum(-1)
    total = cdf[:, -1:]
    # Scaled by the total, and kept below it, so rounding never selects the zero-probability tail (whose cdf
    # equals the total): at worst the last token with a positive probability.
    target = torch.minimum(u.unsqueeze(-1) * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp_max(probs.shape[-1] - 1)


def check_settings(temperature: float, top_k, top_p, min_tokens_to_keep: int) -> None:
    if not temperature == temperature or temperature < 0:  # NaN or negative
        raise ValueError(f"temperature must be >= 0 (values below {MIN_TEMPERATURE} act as {MIN_TEMPERATURE}), got {temperature}")
    if top_k is not None and top_p is not None:
        raise ValueError("top_k and top_p cannot both be set (WHAM allows one or the other)")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k <= 0):
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    if top_p is not None and not (0.0 <= float(top_p) <= 1.0):
        raise ValueError(f"top_p must lie in [0, 1], got {top_p!r}")
    if min_tokens_to_keep < 1:
        raise ValueError(f"min_tokens_to_keep must be >= 1, got {min_tokens_to_keep}")
