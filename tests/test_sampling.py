"""The sampler's per-slot random streams and its inverse-CDF draw: full precision, never out of range."""

import torch

from wham_gym.sampling import draw, uniforms


def test_uniforms_carry_53_bits_and_stay_below_one():
    # A float32 intermediate once kept 24 bits: every draw in [0.5, 1) was a multiple of 2^-24, and about 3
    # draws in 10^8 rounded up to exactly 1.0, which drew the vocabulary's last id mid-PPO (a crash).
    u = uniforms(torch.arange(4096, dtype=torch.int64) * 7919, torch.zeros(4096, dtype=torch.int64), 64)
    assert u.dtype == torch.float64 and bool((u >= 0).all()) and bool((u < 1).all())
    scaled = u * 2.0**53
    assert bool((scaled == scaled.floor()).all())  # 53-bit fractions, exactly
    top = scaled[u >= 0.5]
    finer_than_float32 = (torch.fmod(top, 2.0**29) != 0).double().mean()
    assert finer_than_float32 > 0.99, f"{finer_than_float32:.3f} of draws in [0.5, 1) are finer than 2^-24"
    # The same draw again for the same seed and counter; the next counter is a different draw.
    again = uniforms(torch.tensor([5]), torch.tensor([3]), 2)
    assert again[0, 0] == uniforms(torch.tensor([5]), torch.tensor([3]), 1)[0, 0] and again[0, 0] != again[0, 1]


def test_draw_never_selects_a_zero_probability_token():
    logits = torch.tensor([[float("-inf"), 0.0, 1.0, 2.0, float("-inf"), float("-inf")]] * 4, dtype=torch.float64)
    u = torch.tensor([0.0, 0.5, torch.nextafter(torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0)).item(),
                      1.0], dtype=torch.float64)  # 1.0 itself: a caller's rounding must not reach the tail
    tok = draw(logits, u)
    assert tok.tolist()[0] == 1 and tok.tolist()[2:] == [3, 3], tok.tolist()
    # Inverse CDF: u below token 1's share picks it; u past tokens 1 and 2's shares picks 3.
    p = logits.softmax(-1)[0]
    assert draw(logits[:1], (p[1] * 0.999).reshape(1)).item() == 1
    assert draw(logits[:1], ((p[1] + p[2]) * 1.001).reshape(1)).item() == 3
