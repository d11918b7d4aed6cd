"""Average a denoised frame over its own lattice's translations: the non-local step a network lacks.

A crystal repeats. The same column recurs one lattice vector away, with its own independent noise.
The network sees about 59 px around each pixel and cannot average over those repeats. BM3D's
block matching does, and that is where it beat the bundled model on perfect crystals at 0.5-2
counts/px: with a 19-px search window instead of its 39, BM3D falls below the model
(``bench/results/lattice-average-cpu.md``).

This module finds the translations in the denoised frame's own autocorrelation
(:func:`lattice_offsets`, once per series). :func:`lattice_average` then averages each pixel with
its translated copies, weighted by how alike their neighbourhoods are, and damps every change
larger than about the noise. Given the network (as the tools give it), it first averages the *raw*
frame over the same translations and denoises that again: the network then sees a fraction of the
noise, and what it had shrunk at a few counts (faint columns) comes back. A vacancy or an adatom
differs from its copies by more than the noise, so it is left as the network drew it; a frame
without a lattice has no translations and is returned unchanged. It is opt-in
(``n2a-denoise --lattice-average``): it assumes that what repeats is the specimen.

>>> import numpy as np
>>> y, x = np.mgrid[:64, :64]
>>> lattice = np.cos(2 * np.pi * x / 8) + np.cos(2 * np.pi * y / 8)
>>> offsets = np.round(lattice_offsets(lattice)).astype(int)
>>> len(offsets), sorted(map(tuple, offsets[:4].tolist()))
(16, [(-8, 0), (0, -8), (0, 8), (8, 0)])
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
from scipy import ndimage

__all__ = ["lattice_average", "lattice_offsets"]

_pool: ThreadPoolExecutor | None = None  # made on first use, shared by every caller
_pool_lock = threading.Lock()

MAX_OFFSETS = 16  # the strongest translations, in +/- pairs: the nearest lattice vectors and their sums
MIN_CORRELATION = 0.3  # autocorrelation (1 at no shift) a translation must reach to be a lattice's
MIN_SHIFT_PX = 3.0  # below this, a peak is the column's own width, not a repeat
MAX_SHIFT_FRACTION = 0.4  # of the shorter side: further out, too little of the frame overlaps
BOX_PX = 5  # neighbourhood compared between a pixel and its copy
MEDIAN_WEIGHT = 3.0  # a copy as unlike as the median copy gets weight exp(-1/3); at 4 a test's empty column refills past 0.15
NOISE_WINDOW_PX = 15  # the noise that bounds each pixel's change is read over this square
GATE = 2.0  # a change of 2 local noise sigmas is damped by exp(-1); a missing column's is far larger
RAW_MEDIAN_WEIGHT = 0.75  # the second pass's raw average: tighter than MEDIAN_WEIGHT, raw copies are unbiased
# Chosen on held-out abTEM CeO2 and GaN with a cap written first: at most +3 % MSE on the
# non-periodic pixels of n2a's mixture (bench/results/lattice-average-cpu.md), and an empty column
# left below 0.15 of a full one (tests/noise2atom/test_lattice_average.py; models/README.md).
STRIP_ROWS = 256  # the averages run on strips of this many rows, on up to 4 threads


def _checked_frame(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2 or min(a.shape) < 8:
        raise ValueError(f"{name} must be one (H, W) frame of at least 8x8 pixels (got shape {a.shape})")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} has NaN or infinite pixels")
    return a.astype(np.float32, copy=False)


def _subpixel(c: np.ndarray, i: int, j: int) -> tuple[float, float]:
    """Parabolic refinement of the peak of ``c`` at (i, j) along each axis."""
    def vertex(m: float, p0: float, p: float) -> float:
        den = m - 2 * p0 + p
        return 0.0 if den == 0 else float(np.clip(0.5 * (m - p) / den, -0.5, 0.5))
    dy = vertex(c[i - 1, j], c[i, j], c[i + 1, j]) if 0 < i < c.shape[0] - 1 else 0.0
    dx = vertex(c[i, j - 1], c[i, j], c[i, j + 1]) if 0 < j < c.shape[1] - 1 else 0.0
    return dy, dx


def lattice_offsets(frame: np.ndarray, *, max_offsets: int = MAX_OFFSETS,
                    min_correlation: float = MIN_CORRELATION) -> np.ndarray:
    """The translations (dy, dx) in px under which ``frame`` repeats, strongest first.

    Peaks of the frame's circular autocorrelation (zero mean, normalised to 1 at no shift) that
    reach ``min_correlation``, between :data:`MIN_SHIFT_PX` and :data:`MAX_SHIFT_FRACTION` of the
    shorter side, refined to sub-pixel. Read it from a denoised frame: on a raw low-dose frame the
    noise flattens the peaks. Returns a (K, 2) float array; K = 0 where nothing repeats.
    """
    a = _checked_frame(frame, "frame").astype(np.float64)
    a = a - a.mean()
    power = np.abs(np.fft.fft2(a)) ** 2
    if power.sum() <= 0:
        return np.zeros((0, 2))
    c = np.fft.fftshift(np.fft.ifft2(power).real)
    cy, cx = c.shape[0] // 2, c.shape[1] // 2
    c /= c[cy, cx]
    peaks = (c == ndimage.maximum_filter(c, size=5)) & (c >= min_correlation)
    iy, ix = np.nonzero(peaks)
    r = np.hypot(iy - cy, ix - cx)
    keep = (r >= MIN_SHIFT_PX) & (r < MAX_SHIFT_FRACTION * min(c.shape))
    iy, ix, r = iy[keep], ix[keep], r[keep]
    # strongest first; on an exactly periodic frame all repeats tie, and the nearest go first
    order = np.lexsort((r, -np.round(c[iy, ix], 2)))[:max_offsets]
    out = [(iy[k] - cy + d[0], ix[k] - cx + d[1]) for k in order for d in [_subpixel(c, iy[k], ix[k])]]
    return np.asarray(out, dtype=np.float64).reshape(-1, 2)


def _keys_weights(f: float) -> np.ndarray:
    """The four taps (at -1, 0, 1, 2) of Keys' cubic convolution (a = -0.5) at fraction ``f``."""
    t = np.abs(np.array([-1.0, 0.0, 1.0, 2.0]) - f)
    near = 1.5 * t ** 3 - 2.5 * t ** 2 + 1
    far = -0.5 * t ** 3 + 2.5 * t ** 2 - 4 * t + 2
    return np.where(t <= 1, near, far).astype(np.float32)


def _shifted(padded: np.ndarray, margin: int, shape: tuple[int, int], dy: float, dx: float,
             rows: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``rows`` (all by default) of ``a(y + dy, x + dx)`` by cubic convolution from ``a``
    edge-padded by ``margin`` (sums of slices, rows then columns), and where that point lies
    inside the frame. Cubic, not linear: a linear shift blurs each copy and the average with it
    (-0.002 SSIM at 2 counts/px)."""
    h, w = shape
    r0, r1 = rows or (0, h)
    iy, ix = int(np.floor(dy)), int(np.floor(dx))
    wy, wx = _keys_weights(dy - iy), _keys_weights(dx - ix)
    y0, x0 = margin + iy - 1 + r0, margin + ix - 1
    n = r1 - r0
    lines = sum(wy[k] * padded[y0 + k:y0 + k + n] for k in range(4))
    s = sum(wx[k] * lines[:, x0 + k:x0 + k + w] for k in range(4))
    ry, rx = np.arange(r0, r1) + dy, np.arange(w) + dx
    inside = ((ry >= 0) & (ry <= h - 1))[:, None] & ((rx >= 0) & (rx <= w - 1))[None, :]
    return s, inside


def _box_mean(a: np.ndarray, size: int) -> np.ndarray:
    """The mean over a ``size``-square neighbourhood (odd ``size``; edges held), as sums of slices:
    the same as ``scipy.ndimage.uniform_filter(a, size, mode="nearest")``, ten times faster."""
    r = size // 2
    p = np.pad(a, r, mode="edge")
    h, w = a.shape
    rows = sum(p[i:i + h] for i in range(size))
    return sum(rows[:, i:i + w] for i in range(size)) / np.float32(size * size)


def _noise_sigma(raw: np.ndarray, denoised: np.ndarray) -> float:
    """The noise's standard deviation, read robustly (MAD) from the residual ``raw - denoised``."""
    r = (np.asarray(raw, dtype=np.float32) - np.asarray(denoised, dtype=np.float32))[::3, ::3].ravel()
    return float(1.4826 * np.median(np.abs(r - np.median(r))))


def _strips(h: int) -> list[tuple[int, int]]:
    return [(r, min(r + STRIP_ROWS, h)) for r in range(0, h, STRIP_ROWS)]


def _on_strips(work: Callable[[tuple[int, int]], None], h: int) -> None:
    """``work`` on each strip of rows, on the module's threads (NumPy releases the GIL; a strip's
    arrays stay in cache, where a whole frame's do not: 182 -> 128 ms per average of a 1024² film
    on our 2-core CPU)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="n2a-lattice")
    list(_pool.map(work, _strips(h)))  # re-raises a strip's error here


def _average(frame: np.ndarray, guide: np.ndarray, offsets: np.ndarray, median_weight: float) -> np.ndarray:
    """``frame`` (weight 1) averaged with its copies translated by ``offsets``, each copy weighted
    ``exp(-d / h2)``: ``d`` the mean squared difference between ``guide`` and its copy over
    :data:`BOX_PX`, ``h2`` ``median_weight`` times the median ``d`` of all copies; zero where the
    copy falls outside the frame."""
    h, w = guide.shape
    margin = int(np.ceil(np.abs(offsets).max())) + 3
    padded_guide = np.pad(guide, margin, mode="edge")
    half = BOX_PX // 2
    dists = np.empty((len(offsets), h, w), np.float32)

    def distances(rows: tuple[int, int]) -> None:
        r0, r1 = rows
        a, b = max(0, r0 - half), min(h, r1 + half)  # the box mean needs half a box beyond the strip
        for k, (dy, dx) in enumerate(offsets):
            s, _ = _shifted(padded_guide, margin, guide.shape, dy, dx, (a, b))
            dists[k, r0:r1] = _box_mean((s - guide[a:b]) ** 2, BOX_PX)[r0 - a:r1 - a]

    _on_strips(distances, h)
    h2 = np.float32(median_weight * float(np.median(dists[:, ::3, ::3])) + 1e-12)  # 1 pixel in 9 is plenty
    padded = padded_guide if frame is guide else np.pad(frame, margin, mode="edge")
    out = np.empty_like(frame)

    def average(rows: tuple[int, int]) -> None:
        r0, r1 = rows
        total, weight = frame[r0:r1].copy(), np.ones((r1 - r0, w), np.float32)
        for k, (dy, dx) in enumerate(offsets):
            s, inside = _shifted(padded, margin, frame.shape, dy, dx, rows)
            wk = np.exp(-dists[k, r0:r1] / h2) * inside
            total += wk * s
            weight += wk
        out[r0:r1] = total / weight

    _on_strips(average, h)
    return out


def _raw_average(raw: np.ndarray, guide: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``raw`` averaged with its own translated copies, weighted by how alike ``guide``'s (a
    denoised frame's) copies are: unbiased, unlike the network's output, and with about 1/K of the
    noise where the copies agree. Where they do not (a vacancy) the weights vanish and ``raw``
    stays as it was."""
    return _average(raw, guide, offsets, RAW_MEDIAN_WEIGHT)


def lattice_average(denoised: np.ndarray, raw: np.ndarray, offsets: np.ndarray,
                    denoise: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """``denoised`` averaged with its copies translated by ``offsets`` (from :func:`lattice_offsets`).

    Both frames in the same units (any: the noise is read from ``raw - denoised``). Each copy's
    weight is ``exp(-d / h2)``: ``d`` the mean squared difference over a :data:`BOX_PX`-square
    neighbourhood, ``h2`` :data:`MEDIAN_WEIGHT` times the median ``d`` of all copies; copies that
    fall outside the frame weigh nothing. The change ``c`` to each pixel is then damped by
    ``exp(-(c / (GATE s))^2)``, ``s`` the residual's RMS over :data:`NOISE_WINDOW_PX` around it
    (Poisson noise is larger on bright columns than between them), so only changes of the order of
    the noise go through. Returns float32, ``denoised``'s shape.

    With ``denoise`` (the network, as it made ``denoised`` from ``raw``: same units in and out)
    there is a second pass first: ``raw`` is averaged over the same translations, weighted by how
    alike ``denoised``'s copies are (:data:`RAW_MEDIAN_WEIGHT`), and denoised again; its change to
    ``denoised`` is damped like the average's, and that output is then averaged as above. The
    network then sees a frame with a fraction of the noise, and the columns it had shrunk at a few
    counts come back (abTEM atom F1 at 0.1 counts/px rises instead of falling: ``models/README.md``).
    It costs one more network call.
    """
    o = _checked_frame(denoised, "denoised")
    x = _checked_frame(raw, "raw")
    if o.shape != x.shape:
        raise ValueError(f"denoised and raw must have the same shape (got {o.shape} and {x.shape})")
    offsets = np.asarray(offsets, dtype=np.float64)
    if offsets.ndim != 2 or offsets.shape[1] != 2:
        raise ValueError(f"offsets must be a (K, 2) array of (dy, dx) (got shape {offsets.shape})")
    if len(offsets) == 0 or _noise_sigma(x, o) <= 0:
        return o.copy()
    if denoise is not None:
        again = np.asarray(denoise(_raw_average(x, o, offsets)))
        if again.shape != o.shape:
            raise ValueError(f"denoise must return its input's shape {o.shape} (got {again.shape})")
        # gated like the average below: at high dose the averaged raw frame's own blur (copies
        # not quite alike) would otherwise go through (abTEM GaN at 10 counts/px: -0.009 SSIM)
        o = _gated(o, _checked_frame(again, "the second pass's output") - o, x)
        if _noise_sigma(x, o) <= 0:
            return o
    return _gated(o, _average(o, o, offsets, MEDIAN_WEIGHT) - o, x)


def _gated(o: np.ndarray, change: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """``o + change``, each pixel's change damped by ``exp(-(c / (GATE s))^2)``, ``s`` the RMS of
    ``raw - o`` over :data:`NOISE_WINDOW_PX` around it."""
    sigma = _noise_sigma(raw, o)
    # the local noise, floored so a noise-free patch (vacuum, a clipped region) still allows a little
    local = _box_mean((raw - o) ** 2, NOISE_WINDOW_PX)
    bound = np.float32(GATE) * np.sqrt(np.maximum(local, np.float32(0.05 * sigma ** 2)))
    return (o + change * np.exp(-(change / bound) ** 2)).astype(np.float32)
