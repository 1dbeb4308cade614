"""PSNR and SSIM against direct computations."""

import numpy as np
import torch
import torch.nn.functional as F

from wham_gym.measure.metrics import psnr, ssim


def ssim_reference(a, b):
    """Float64, full 2-D Gaussian window, written out plainly."""
    x = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(x**2) / (2 * 1.5**2))
    g = g / g.sum()
    win = (g[:, None] * g[None, :])[None, None].expand(3, 1, 11, 11)
    a, b = a.double(), b.double()
    mu_a, mu_b = F.conv2d(a, win, groups=3), F.conv2d(b, win, groups=3)
    va = F.conv2d(a * a, win, groups=3) - mu_a**2
    vb = F.conv2d(b * b, win, groups=3) - mu_b**2
    cov = F.conv2d(a * b, win, groups=3) - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return s.flatten(1).mean(1)


def test_ssim_matches_full_window_float64():
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.integers(0, 256, (2, 3, 40, 50), dtype=np.uint8))
    b = (a.int() + torch.from_numpy(rng.integers(-30, 30, a.shape))).clamp(0, 255).to(torch.uint8)
    assert torch.allclose(ssim(a, b), ssim_reference(a, b), atol=1e-4)
    assert torch.allclose(ssim(a, a), torch.ones(2, dtype=torch.float64), atol=1e-6)


def test_psnr():
    a = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    b = torch.full((1, 3, 4, 4), 10, dtype=torch.uint8)
    assert torch.allclose(psnr(a, b), torch.tensor([10 * np.log10(255**2 / 100)], dtype=torch.float64))
    assert torch.isinf(psnr(a, a)).all()
