"""Estimate the target prior (lattice pitch, blob width, rotation) from the noisy frames themselves.

The paper hard-codes an 8 px lattice and 1-3.2 px blobs; data at another magnification needs
other values. A crystalline region makes sharp peaks in the power spectrum:

1. Each frame (mean removed, Hann-windowed) is Fourier transformed and the *power spectra are
   averaged* over the frames. Averaging spectra rather than frames makes the estimate blind to
   drift between frames, and the frame-to-frame noise only adds a smooth floor.
2. The smooth part (noise floor, amorphous texture, envelopes of holes and particles) is removed
   by subtracting, at every frequency, the median power of its ring ``|f| = const``. Lattice
   reflections are isolated points, so they stand out in this excess power.
3. **Pitch and rotation**: the strongest excess peak with ``1/max_pitch <= |f| <= 1/min_pitch``
   is a first-order reflection ``g1`` of the square lattice. It is refined to sub-bin precision
   by a centroid, together with the orthogonal reflection ``g2``; ``pitch = 1 / mean(|g1|, |g2|)``
   and ``rotation = angle(g1)`` folded into (-45°, 45°].
4. **Blob width**: a Gaussian blob of std sigma multiplies reflection g by
   ``exp(-2 pi² sigma² |g|²)``, so the integrated power of the reflections (1,0), (1,1), (2,0),
   (2,1), (2,2) falls as ``exp(-4 pi² sigma² |g|²)``. A least-squares line through
   ``ln(power)`` against ``|g|²`` gives sigma (reflections lost in noise are skipped). The value
   is an *effective* width: probe blur plus anything that smears columns the same way (scan
   jitter, vibration), which is what the target simulator should draw.

Needs a crystalline region (at least a small particle with lattice fringes); on amorphous or
vacuum-only frames ``peak_ratio`` is low and the estimate should not be trusted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["PriorEstimate", "PriorEstimateError", "estimate_prior"]


class PriorEstimateError(ValueError):
    """The frames cannot give a prior estimate (wrong shape, too small, constant)."""


@dataclass(frozen=True)
class PriorEstimate:
    """Lattice pitch (px), effective blob std (px), lattice rotation (deg, in (-45, 45]).

    ``peak_ratio``: power of the strongest reflection over the median power of its ring (large
    for a clear lattice; below ~10 the lattice was not really found). ``n_orders``: reflections
    used for the width fit (``sigma_px`` is NaN when fewer than two survived).
    """

    pitch_px: float
    sigma_px: float
    rotation_deg: float
    peak_ratio: float
    n_orders: int

    @property
    def reliable(self) -> bool:
        """Whether a lattice was clearly found and the width could be fitted."""
        return self.peak_ratio >= 10.0 and math.isfinite(self.sigma_px)

    def target_prior_kwargs(self, sigma_spread: float = 0.25) -> dict[str, object]:
        """Keyword arguments for :class:`noise2atom.target_sim.TargetPrior` matching this estimate."""
        s = self.sigma_px if math.isfinite(self.sigma_px) else 1.6
        return {
            "pitch_px": self.pitch_px,
            "sigma_px": (s * (1 - sigma_spread), s * (1 + sigma_spread)),
            "rotation_deg": (self.rotation_deg, self.rotation_deg),
        }


def _centroid(e: np.ndarray, iy: int, ix: int, r: int) -> tuple[float, float]:
    h, w = e.shape
    y0, y1, x0, x1 = max(iy - r, 0), min(iy + r + 1, h), max(ix - r, 0), min(ix + r + 1, w)
    win = np.clip(e[y0:y1, x0:x1], 0, None)
    if win.sum() <= 0:
        return float(iy), float(ix)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    return float((win * yy).sum() / win.sum()), float((win * xx).sum() / win.sum())


def estimate_prior(
    frames: np.ndarray,
    *,
    min_pitch_px: float = 3.0,
    max_pitch_px: float | None = None,
    max_frames: int = 64,
) -> PriorEstimate:
    """Estimate lattice pitch, blob width and rotation from a (T, H, W) stack or one (H, W) frame.

    Parameters
    ----------
    frames : array (T, H, W) or (H, W)
        Raw frames (any numeric dtype), at least 32 x 32.
    min_pitch_px, max_pitch_px : float
        Search range of the pitch (default max: a quarter of the smaller frame side).
    max_frames : int
        At most this many frames (evenly spaced) are used.
    """
    x, max_pitch = _checked_frames(frames, min_pitch_px, max_pitch_px, max_frames)
    spectrum = _Spectrum.of(x)
    g1, g2, peak_ratio = spectrum.first_order_reflections(min_pitch_px, max_pitch)
    f1 = 0.5 * (np.hypot(*g1) + np.hypot(*g2))
    rot = _fold_rotation(math.degrees(math.atan2(g1[0], g1[1])))
    sigma, n_orders = _blob_width(spectrum, f1, rot, n_frames=len(x))
    return PriorEstimate(pitch_px=float(1.0 / f1), sigma_px=sigma, rotation_deg=float(rot),
                         peak_ratio=peak_ratio, n_orders=n_orders)


def _checked_frames(frames, min_pitch_px: float, max_pitch_px: float | None,
                    max_frames: int) -> tuple[np.ndarray, float]:
    """Step 0: the frames to use (at most ``max_frames``, float64, mean removed) and the max pitch."""
    a = np.asarray(frames)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise PriorEstimateError(f"expected numeric frames (T, H, W) or (H, W) (got shape {a.shape}, dtype {a.dtype})")
    t, h, w = a.shape
    if min(h, w) < 32 or t < 1:
        raise PriorEstimateError(f"expected frames of at least 32 x 32 px (got shape {a.shape})")
    max_pitch = min(h, w) / 4 if max_pitch_px is None else float(max_pitch_px)
    if not 2.0 <= min_pitch_px < max_pitch:
        raise PriorEstimateError(f"expected 2 <= min_pitch_px < max_pitch_px (got {min_pitch_px}, {max_pitch})")
    idx = np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int))
    x = a[idx].astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise PriorEstimateError("expected finite pixel values (got NaN or inf)")
    x -= x.mean(axis=(1, 2), keepdims=True)
    if not np.any(x):
        raise PriorEstimateError("expected frames with some contrast (got constant frames)")
    return x, max_pitch


@dataclass(frozen=True)
class _Spectrum:
    """Steps 1-2: the frame-averaged power spectrum (centred) and its excess over the ring medians."""

    power: np.ndarray
    excess: np.ndarray
    ring_median: np.ndarray
    fy: np.ndarray  # cycles/px of each row
    fx: np.ndarray  # cycles/px of each column
    fxx: np.ndarray  # cycles/px along x of every bin
    fr: np.ndarray  # |f| of every bin
    df: float  # ring width

    @classmethod
    def of(cls, x: np.ndarray) -> _Spectrum:
        _, h, w = x.shape
        win = np.outer(np.hanning(h), np.hanning(w))
        p = np.fft.fftshift(np.mean(np.abs(np.fft.fft2(x * win)) ** 2, axis=0))
        fy = np.fft.fftshift(np.fft.fftfreq(h))
        fx = np.fft.fftshift(np.fft.fftfreq(w))
        fyy, fxx = np.meshgrid(fy, fx, indexing="ij")
        fr = np.hypot(fyy, fxx)
        df = 1.0 / min(h, w)
        ring = np.round(fr / df).astype(int)
        med = ndimage.median(p, labels=ring + 1, index=np.arange(1, ring.max() + 2))
        ring_med = np.asarray(med)[ring]
        return cls(power=p, excess=p - ring_med, ring_median=ring_med, fy=fy, fx=fx, fxx=fxx, fr=fr, df=df)

    @property
    def shape(self) -> tuple[int, int]:
        return self.power.shape

    def first_order_reflections(self, min_pitch_px: float,
                                max_pitch: float) -> tuple[np.ndarray, np.ndarray, float]:
        """Step 3: the strongest reflection g1 in the pitch band, its orthogonal partner g2 (both
        (fy, fx) in cycles/px, refined) and the peak's power over its ring median."""
        h, w = self.shape
        band = (self.fr >= 1 / max_pitch) & (self.fr <= 1 / min_pitch_px) & (self.fxx >= 0)
        iy, ix = np.unravel_index(np.argmax(np.where(band, self.excess, -np.inf)), self.shape)
        peak_ratio = float(self.power[iy, ix] / max(self.ring_median[iy, ix], 1e-300))
        cy, cx = _centroid(self.excess, iy, ix, 2)
        g1 = np.array([np.interp(cy, np.arange(h), self.fy), np.interp(cx, np.arange(w), self.fx)])
        g1 = self.locate(g1)
        g2 = self.locate(np.array([-g1[1], g1[0]]) if g1[0] <= 0 else np.array([g1[1], -g1[0]]))
        return g1, g2, peak_ratio

    def locate(self, g: np.ndarray) -> np.ndarray:
        """Refine a predicted reflection position (cycles/px) to the local excess maximum."""
        h, w = self.shape
        jy = int(round(g[0] * h + h // 2))
        jx = int(round(g[1] * w + w // 2))
        r = 2
        y0, x0 = max(jy - r, 0), max(jx - r, 0)
        sub = self.excess[y0:jy + r + 1, x0:jx + r + 1]
        if sub.size == 0:
            return g
        my, mx = np.unravel_index(np.argmax(sub), sub.shape)
        sy, sx = _centroid(self.excess, y0 + my, x0 + mx, 2)
        return np.array([(sy - h // 2) / h, (sx - w // 2) / w])


def _fold_rotation(angle_deg: float) -> float:
    """A square lattice's rotation folded into (-45, 45] degrees."""
    rot = (angle_deg + 45.0) % 90.0 - 45.0
    return 45.0 if rot == -45.0 else rot


#: (h, k) orders of the square lattice whose power decay gives the blob width
_ORDERS = [(1, 0), (0, 1), (1, 1), (1, -1), (2, 0), (0, 2), (2, 1), (1, 2), (2, -1), (1, -2), (2, 2), (2, -2)]


def _blob_width(spectrum: _Spectrum, f1: float, rot: float, *, n_frames: int) -> tuple[float, int]:
    """Step 4: blob std from the decay of integrated reflection power with |g|², and the number of
    reflections used (NaN when fewer than two distinct |g| stand above the noise)."""
    g2s, logs = [], []
    for g, power, noise in _reflection_powers(spectrum, f1, rot, n_frames):
        if power > noise:
            g2s.append(float(np.sum(g**2)))
            logs.append(math.log(power))
    sigma = float("nan")
    if len(set(np.round(g2s, 6))) >= 2:
        slope = np.polyfit(g2s, logs, 1)[0]
        if slope < 0:
            sigma = math.sqrt(-slope / (4 * math.pi**2))
    return sigma, len(g2s)


def _reflection_powers(spectrum: _Spectrum, f1: float, rot: float, n_frames: int):
    """Yield (g, integrated excess power, noise level) for each order inside the spectrum."""
    h, w = spectrum.shape
    df = spectrum.df
    u = np.array([math.cos(math.radians(rot)), math.sin(math.radians(rot))]) * f1  # (fx, fy)
    a1 = np.array([u[1], u[0]])  # (fy, fx)
    a2 = np.array([a1[1], -a1[0]])
    r_int = max(1, min(3, int(f1 / df / 3)))
    yy, xx = np.mgrid[-r_int:r_int + 1, -r_int:r_int + 1]
    disc = yy**2 + xx**2 <= r_int**2
    for hh, kk in _ORDERS:
        g = hh * a1 + kk * a2
        if np.abs(g).max() >= 0.5 - r_int * df:
            continue
        gl = spectrum.locate(g)
        jy = int(round(gl[0] * h + h // 2))
        jx = int(round(gl[1] * w + w // 2))
        patch = spectrum.excess[jy - r_int:jy + r_int + 1, jx - r_int:jx + r_int + 1]
        ringp = spectrum.ring_median[jy - r_int:jy + r_int + 1, jx - r_int:jx + r_int + 1]
        if patch.shape != disc.shape:
            continue
        noise = 3.0 * ringp[disc].sum() / math.sqrt(n_frames)  # ~3 std of the averaged floor
        yield g, patch[disc].sum(), noise
