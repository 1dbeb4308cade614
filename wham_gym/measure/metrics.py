"""Image fidelity metrics, batched in torch: PSNR and SSIM per image; Spearman's rank correlation; a mean's 95 % CI.

Inputs are uint8 or float images (N, 3, H, W) with values in [0, 255].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image (N,); identical images give +inf."""
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(255.0**2 / mse)


def _gaussian(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004; 11x11 Gaussian, sigma 1.5), mean over channels, per image (N,)."""
    a, b = a.float(), b.float()
    n, c, h, w = a.shape
    g = _gaussian(device=a.device)
    gx, gy = g.view(1, 1, 1, -1).expand(c, 1, 1, 11), g.view(1, 1, -1, 1).expand(c, 1, 11, 1)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x):  # the 2-D Gaussian as two 1-D passes
        return F.conv2d(F.conv2d(x, gx, groups=c), gy, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1).double()


def rank_correlation(x, y) -> float:
    """Spearman's rank correlation of two equally long sequences (ties get their mean rank)."""
    def ranks(a):
        a = np.asarray(a, float)
        order = np.argsort(a, kind="stable")
        r = np.empty(len(a))
        r[order] = np.arange(len(a), dtype=float)
        for value in np.unique(a):  # ties: the mean of their ranks
            tied = a == value
            r[tied] = r[tied].mean()
        return r

    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"rank correlation needs two sequences of the same length >= 2, got {len(x)} and {len(y)}")
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def ci95(values) -> list[float]:
    """The 95 % confidence interval of the mean (normal approximation: mean ± 1.96 × sample std / sqrt(n))."""
    v = np.asarray(values, float)
    half = 1.96 * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("inf")
    return [float(v.mean() - half), float(v.mean() + half)]
