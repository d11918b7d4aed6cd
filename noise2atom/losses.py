"""Training losses beyond the per-pixel squared error (torch; imported by the trainer only).

Why an SSIM term: a network trained on squared error alone spends its capacity on the bright
columns, where the errors are large, and leaves a faint ripple of noise on the dark background
between them. SSIM (the quality benchmark's score, and what a microscopist's eye reads) weighs
each local window by its own contrast, so that ripple costs as much as a dimmed column.

Examples
--------
>>> import torch
>>> t = torch.rand(2, 1, 32, 32)
>>> float(patch_ssim_loss(t, t)) < 1e-6
True
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from noise2atom.metrics import _K1, _K2, _TAPS

__all__ = ["patch_ssim_loss"]

#: The data range of a patch whose truth is (nearly) flat: vacuum. Without it SSIM's constants
#: vanish there and the loss chases noise on an empty patch.
MIN_RANGE = 0.1


def _window(v: torch.Tensor) -> torch.Tensor:
    """The Gaussian window of :func:`noise2atom.metrics.ssim` (sigma 1.5, 11 taps), valid part only."""
    taps = torch.as_tensor(_TAPS, dtype=v.dtype, device=v.device)
    v = F.conv2d(v, taps.view(1, 1, 1, -1))
    return F.conv2d(v, taps.view(1, 1, -1, 1))


def patch_ssim_loss(out: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """1 - mean SSIM of ``out`` against ``truth`` ((N, 1, H, W), H and W >= 11), each patch with
    its own data range (the truth's max - min, at least :data:`MIN_RANGE`), as the benchmark
    scores a frame on its truth's range. Windows lie inside the patch (no padding)."""
    if out.shape != truth.shape or out.ndim != 4 or out.shape[1] != 1 or min(out.shape[2:]) < len(_TAPS):
        raise ValueError(f"need two (N, 1, H, W) tensors of one shape with H, W >= {len(_TAPS)} "
                         f"(got {tuple(out.shape)} and {tuple(truth.shape)})")
    rng = (truth.amax(dim=(2, 3), keepdim=True) - truth.amin(dim=(2, 3), keepdim=True)).clamp_min(MIN_RANGE)
    c1, c2 = (_K1 * rng) ** 2, (_K2 * rng) ** 2
    mx, my = _window(out), _window(truth)
    vx = _window(out * out) - mx * mx
    vy = _window(truth * truth) - my * my
    cxy = _window(out * truth) - mx * my
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return 1 - s.mean()
