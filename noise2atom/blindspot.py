"""Blind-spot (Noise2Void-type) self-supervision for scanned images.

The network sees a noisy patch in which a few *loss pixels* were hidden and must
predict their noisy values from their surroundings. Since the noise of a pixel is
independent of the other pixels' noise, the best prediction is the clean value.

Scan noise is not independent along the fast-scan direction (x): row offsets, row
jitter and detector afterglow correlate a pixel's noise with its row neighbours.
So we hide a short *horizontal segment* (``2 * half_width + 1`` pixels) centred on
each loss pixel, and fill it from *other rows* (1 or 2 rows up or down, a few
columns aside), never from another hidden pixel. So the input holds no trace of
any loss pixel's value, nor of its immediate row neighbours' values, whose noise
is correlated with it.
"""
from __future__ import annotations

from typing import Callable, Literal

import torch

__all__ = ["BlindSpotMask", "make_blindspot_batch", "blindspot_loss", "BlindSpotLoss"]

BlindSpotLoss = Literal["poisson", "mse"]


class BlindSpotMask:
    """Where a masked batch hides pixels and where its loss is taken.

    Attributes
    ----------
    centres : torch.Tensor
        (N, K) flat indices (row * W + col) of the loss pixels of each sample.
    hidden : torch.Tensor
        (N, H, W) bool, every pixel whose value was replaced.
    """

    def __init__(self, centres: torch.Tensor, hidden: torch.Tensor) -> None:
        self.centres = centres
        self.hidden = hidden

    def take(self, images: torch.Tensor) -> torch.Tensor:
        """Values of ``images`` (N, 1, H, W) at the loss pixels, shape (N, K)."""
        return images.flatten(1).gather(1, self.centres)


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Reflect indices into [0, n) without repeating the edge (…, 2, 1, 0, 1, 2, …)."""
    period = 2 * (n - 1)
    i = i.remainder(period)
    return torch.where(i >= n, period - i, i)


def make_blindspot_batch(
    x: torch.Tensor,
    *,
    spacing: int = 8,
    half_width: int = 2,
    max_row_shift: int = 2,
    max_col_shift: int = 2,
    generator: torch.Generator | None = None,
    centres: torch.Tensor | None = None,
) -> tuple[torch.Tensor, BlindSpotMask]:
    """Hide one horizontal segment per ``spacing x spacing`` cell of each image.

    Parameters
    ----------
    x : torch.Tensor
        (N, 1, H, W) images (H, W >= 3).
    spacing : int
        One loss pixel per ``spacing x spacing`` cell (1/64 of the pixels for 8).
    half_width : int
        The hidden segment spans ``half_width`` pixels left and right of the loss pixel.
    max_row_shift, max_col_shift : int
        Replacement values come from rows ``r +- 1..max_row_shift`` (never row ``r``)
        and columns ``c +- 0..max_col_shift`` of the same image.
    generator : torch.Generator, optional
        Source of randomness (the global one by default).
    centres : torch.Tensor, optional
        (N, K) flat indices of loss pixels to use instead of random ones (tests).

    Returns
    -------
    masked : torch.Tensor
        The input with hidden pixels replaced; differentiable w.r.t. ``x`` so tests
        can prove it does not depend on the loss pixels.
    mask : BlindSpotMask
    """
    n, _, h, w = x.shape
    if h < 3 or w < 3:
        raise ValueError(f"blind-spot masking needs images of at least 3x3 (got {h}x{w})")
    dev = x.device
    rand_int = _rand_ints(generator, dev)
    if centres is None:
        centres = _random_centres(n, (h, w), spacing, rand_int, dev)
    centres = centres.to(dev)
    seg_r, seg_c = _segments(centres, n, w, half_width)
    dst = (seg_r * w + seg_c).flatten(1)
    hidden = torch.zeros(n, h * w, dtype=torch.bool, device=dev)
    hidden.scatter_(1, dst, True)
    src = _sources(seg_r, seg_c, hidden, (h, w), max_row_shift, max_col_shift, rand_int)
    flat = x.flatten(1)
    masked = flat.scatter(1, dst, _source_values(flat, hidden, src)).view_as(x)
    return masked, BlindSpotMask(centres, hidden.view(n, h, w))


def _rand_ints(generator: torch.Generator | None, dev: torch.device) -> Callable[..., torch.Tensor]:
    """``rand_int(lo, hi, shape)``: integers drawn on the CPU (where ``generator`` lives), moved to ``dev``."""

    def rand_int(lo: int, hi: int, shape) -> torch.Tensor:
        return torch.randint(lo, hi, shape, generator=generator, device="cpu").to(dev)

    return rand_int


def _random_centres(n: int, size: tuple[int, int], spacing: int, rand_int: Callable[..., torch.Tensor],
                    dev: torch.device) -> torch.Tensor:
    """(N, K) flat indices: one random loss pixel in each ``spacing x spacing`` cell."""
    h, w = size
    gy, gx = max(h // spacing, 1), max(w // spacing, 1)
    cy = (torch.arange(gy, device=dev) * spacing)[None, :, None] + rand_int(0, min(spacing, h), (n, gy, gx))
    cx = (torch.arange(gx, device=dev) * spacing)[None, None, :] + rand_int(0, min(spacing, w), (n, gy, gx))
    cy, cx = cy.clamp(max=h - 1).flatten(1), cx.clamp(max=w - 1).flatten(1)
    return cy * w + cx


def _segments(centres: torch.Tensor, n: int, w: int, half_width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns (N, K, S) of the hidden segment along each loss pixel's row."""
    k = centres.shape[1]
    cy, cx = centres // w, centres % w
    offsets = torch.arange(-half_width, half_width + 1, device=centres.device)
    seg_r = cy[:, :, None].expand(n, k, offsets.numel())
    seg_c = (cx[:, :, None] + offsets).clamp(0, w - 1)
    return seg_r, seg_c


def _sources(seg_r: torch.Tensor, seg_c: torch.Tensor, hidden: torch.Tensor, size: tuple[int, int],
             max_row_shift: int, max_col_shift: int, rand_int: Callable[..., torch.Tensor]) -> torch.Tensor:
    """(N, K * S) flat indices of where each hidden pixel takes its value from: another row, a few
    columns aside, redrawn a few times where that is a hidden pixel itself (a hidden pixel's row
    neighbours carry noise correlated with it, so they must not reappear elsewhere in the input)."""
    h, w = size
    shape = seg_r.shape

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        dr = rand_int(1, max_row_shift + 1, shape) * (rand_int(0, 2, shape) * 2 - 1)
        dc = rand_int(-max_col_shift, max_col_shift + 1, shape)
        return _reflect(seg_r + dr, h), _reflect(seg_c + dc, w)

    src_r, src_c = draw()
    for _ in range(6):
        bad = hidden.gather(1, (src_r * w + src_c).flatten(1)).view(shape)
        if not bool(bad.any()):
            break
        new_r, new_c = draw()
        src_r, src_c = torch.where(bad, new_r, src_r), torch.where(bad, new_c, src_c)
    return (src_r * w + src_c).flatten(1)


def _source_values(flat: torch.Tensor, hidden: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """The values of ``flat`` (N, H * W) at ``src``. A source still hidden after the redraws (rare;
    tiny images) gets the mean of the visible pixels instead, which holds no hidden pixel's value."""
    values = flat.gather(1, src)
    bad = hidden.gather(1, src)
    if bool(bad.any()):
        keep = (~hidden).to(flat.dtype)
        fill = (flat * keep).sum(1, keepdim=True) / keep.sum(1, keepdim=True).clamp(min=1)
        values = torch.where(bad, fill.expand_as(values), values)
    return values


def blindspot_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: BlindSpotMask,
    *,
    kind: BlindSpotLoss = "mse",
    to_counts=None,
) -> torch.Tensor:
    """Loss at the loss pixels only.

    ``mse``
        Mean squared error in model units. Its minimiser is the conditional mean,
        the clean value for any zero-mean noise; the safe choice when the detector's
        counts scale is unknown.
    ``poisson``
        Poisson negative log-likelihood ``lambda - k log(lambda)`` in detected
        counts, where ``to_counts`` maps model units to counts (``(raw - offset) /
        gain``). Also minimised by the conditional mean, but it weights each pixel
        by the inverse of its expected counts, as counting noise demands, so the
        dark background (most of a low-dose frame) is fitted as carefully as the
        bright atoms. Targets are clamped at 0 counts: read noise can make them
        negative, which would make the likelihood unbounded.
    """
    p, t = mask.take(pred), mask.take(target)
    if kind == "mse":
        return (p - t).pow(2).mean()
    if kind == "poisson":
        if to_counts is None:
            raise ValueError("the poisson loss needs to_counts (got None)")
        lam = to_counts(p).clamp(min=0) + 1e-3
        k = to_counts(t).clamp(min=0)
        return (lam - k * lam.log()).mean()
    raise ValueError(f"blind-spot loss must be 'poisson' or 'mse' (got {kind!r})")
