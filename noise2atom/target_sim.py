"""The Noise2Atom target domain: synthetic "clear atom images" (method spec §2).

Gaussian blobs on randomly occupied sites of a square lattice. The defaults reproduce the authors'
statistics (pitch 8 px, blob std 1-3.16 px, intensities 1-4, ~11% of the sites of a 128² crop
occupied, ~28 atoms), with their bugs fixed on purpose:

- the authors' "sigma" 1..10 was a *variance*; here ``sigma_px`` is a std (default 1.0-3.16 px,
  the same blobs), drawn uniformly per image;
- their jitter was truncated by ``int`` to {-1, 0} px; here it is continuous, uniform in
  ±``jitter_px``, and rendered at sub-pixel positions;
- they normalised min-max over the whole stack; here the scale is **fixed**: the peak of an atom
  of the largest intensity is 1 (overlapping tails are clipped at 1), and the background is
  exactly 0. Every image therefore has the same units, whatever else is in the stack.

Added: a random lattice phase, rotation (range per image), continuous intensities, and a
``cluster`` mode (a compact, nanoparticle-like blob of filled sites) besides the random-occupancy
``lattice``.

Examples
--------
>>> imgs = simulate_clear(2, size=64, rng=0)
>>> imgs.shape, imgs.dtype, float(imgs.min()), float(imgs.max()) <= 1.0
((2, 64, 64), dtype('float32'), 0.0, True)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from noise2atom.stem_sim import _render_blobs

__all__ = ["ClearBatch", "TargetPrior", "simulate_clear", "simulate_clear_truth"]


class TargetPrior(BaseModel):
    """Parameters of the clear-image simulator (all lengths in pixels)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pitch_px: float = Field(8.0, gt=1.0, le=256.0)
    """Square-lattice pitch."""
    occupancy: float = Field(0.11, gt=0.0, le=1.0)
    """Mean fraction of lattice sites holding an atom (the authors': ~11%, ~28 atoms in 128²)."""
    occupancy_spread: float = Field(1 / 3, ge=0.0, lt=1.0)
    """Per-image occupancy is uniform in occupancy * (1 ± spread) (authors: 75-149 atoms, ±33%)."""
    sigma_px: tuple[float, float] = (1.0, 3.16)
    """Range of the blob std, drawn uniformly per image (a std, not a variance)."""
    intensities: tuple[float, float] = (1.0, 4.0)
    """Range of atom peak intensities before scaling."""
    integer_intensities: bool = True
    """Draw intensities from the integers in the range (authors: {1, 2, 3, 4}), else continuous."""
    jitter_px: float = Field(1.0, ge=0.0)
    """Each atom is displaced by a uniform offset in ±jitter_px per axis (continuous)."""
    rotation_deg: tuple[float, float] = (0.0, 0.0)
    """Range of the lattice rotation, drawn uniformly per image."""
    mode: Literal["lattice", "cluster"] = "lattice"
    """``lattice``: sites occupied at random; ``cluster``: a compact blob-shaped region of sites."""
    cluster_fill: float = Field(0.95, gt=0.0, le=1.0)
    """In cluster mode, the fraction of sites inside the region that hold an atom."""

    @model_validator(mode="after")
    def _ranges(self) -> TargetPrior:
        for name in ("sigma_px", "intensities", "rotation_deg"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name} must be (low, high) with low <= high (got {(lo, hi)})")
        if self.sigma_px[0] <= 0.2:
            raise ValueError(f"sigma_px must be above 0.2 px (got {self.sigma_px})")
        if self.intensities[0] <= 0:
            raise ValueError(f"intensities must be positive (got {self.intensities})")
        if self.integer_intensities and math.floor(self.intensities[1]) < math.ceil(self.intensities[0]):
            raise ValueError(f"integer_intensities needs an integer inside intensities (got {self.intensities})")
        return self


@dataclass(frozen=True)
class ClearBatch:
    """Clear images with their truth: positions (K, 2) (row, col), intensities, blob std per image."""

    images: np.ndarray
    positions: list[np.ndarray]
    intensities: list[np.ndarray]
    sigmas: np.ndarray
    rotations_deg: np.ndarray


def _sites(size: int, pitch: float, rot_deg: float, rng: np.random.Generator, margin: float) -> np.ndarray:
    """Square-lattice sites with a random phase covering the square [-margin, size + margin)²."""
    c = size / 2
    n = int(math.ceil((size / 2 + margin) * math.sqrt(2) / pitch)) + 1
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    th = math.radians(rot_deg)
    u = i + rng.uniform(0, 1)
    v = j + rng.uniform(0, 1)
    x = pitch * (u * math.cos(th) - v * math.sin(th)) + c
    y = pitch * (u * math.sin(th) + v * math.cos(th)) + c
    s = np.stack([y.ravel(), x.ravel()], axis=1)
    keep = np.all((s >= -margin) & (s < size + margin), axis=1)
    return s[keep]


def simulate_clear_truth(
    n: int,
    size: int = 128,
    prior: TargetPrior | None = None,
    rng: np.random.Generator | int | None = None,
) -> ClearBatch:
    """Like :func:`simulate_clear`, returning the truth as well (positions inside the image)."""
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer (got {n!r})")
    if int(size) != size or size < 8:
        raise ValueError(f"size must be an integer >= 8 (got {size!r})")
    n, size = int(n), int(size)
    p = prior if prior is not None else TargetPrior()
    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    scale = float(p.intensities[1])  # a max-intensity atom peaks at exactly 1
    ilo, ihi = math.ceil(p.intensities[0]), math.floor(p.intensities[1])
    images = np.zeros((n, size, size), dtype=np.float32)
    positions, amps = [], []
    sigmas = g.uniform(*p.sigma_px, size=n)
    rots = g.uniform(*p.rotation_deg, size=n)
    for k in range(n):
        margin = 4 * sigmas[k] + p.jitter_px + 1  # atoms just outside still show their tails
        s = _sites(size, p.pitch_px, rots[k], g, margin)
        occ = p.occupancy * g.uniform(1 - p.occupancy_spread, 1 + p.occupancy_spread)
        if p.mode == "lattice":
            on = g.random(len(s)) < min(occ, 1.0)
        else:
            # compact cluster: sites within a wavy disc whose area holds the same mean atom count
            area = min(occ, 1.0) * size * size / p.cluster_fill
            r0 = math.sqrt(area / math.pi)
            center = g.uniform(0.3, 0.7, size=2) * size
            rel = s - center
            ang = np.arctan2(rel[:, 0], rel[:, 1])
            rad = np.full(len(s), r0)
            for m in (2, 3, 4):
                rad += r0 * g.uniform(0.03, 0.12) * np.cos(m * ang + g.uniform(0, 2 * np.pi))
            on = (np.hypot(rel[:, 0], rel[:, 1]) <= rad) & (g.random(len(s)) < p.cluster_fill)
        pos = s[on] + g.uniform(-p.jitter_px, p.jitter_px, size=(int(on.sum()), 2))
        if p.integer_intensities:
            amp = g.integers(ilo, ihi + 1, size=len(pos)).astype(np.float64)
        else:
            amp = g.uniform(*p.intensities, size=len(pos))
        img = _render_blobs((size, size), pos, amp / scale, float(sigmas[k]))
        images[k] = np.clip(img, 0.0, 1.0)
        inside = np.all((pos >= 0) & (pos < size), axis=1)
        positions.append(pos[inside])
        amps.append(amp[inside])
    return ClearBatch(images=images, positions=positions, intensities=amps, sigmas=sigmas, rotations_deg=rots)


def simulate_clear(
    n: int,
    size: int = 128,
    prior: TargetPrior | None = None,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Simulate ``n`` clear atom images, float32 (n, size, size) in [0, 1].

    Background is exactly 0; the scale is fixed (an atom of the largest intensity peaks at 1),
    not min-max over the stack as in the authors' code.

    Parameters
    ----------
    n : int
        Number of images.
    size : int
        Side length in pixels.
    prior : TargetPrior, optional
        Simulation parameters (default: the authors' statistics, bugs fixed).
    rng : numpy Generator or int seed, optional
    """
    return simulate_clear_truth(n, size, prior, rng).images
