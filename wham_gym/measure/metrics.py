"""Image fidelity metrics, batched in torch: PSNR and SSIM per image.

Inputs are uint8 or float images (N, 3, H, W) with values in [0, 255].
"""

from __future__ import annotations

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
