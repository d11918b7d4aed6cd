"""The fidelity guard: cheap per-frame checks that CSS alone cannot make.

CSS rewards a blank or frozen output, so next to it every denoised frame gets a list of short
``flags`` (empty when all is well):

``input_clipped``
    A real fraction of the raw frame sits at the detector's ceiling (integer dtype maximum, or a
    plateau at the top of float data) or beyond the series' input scaling, so the network saw
    clipped or saturated values.
``flat_output``
    The raw frame has structure above its noise, the denoised one (almost) none; or the output
    hardly varies at all (a frame of pure vacuum denoised well gets this flag too: from one frame a
    model that blanks everything cannot be told from empty vacuum).
``structure_in_residual``
    The residual (raw - denoised, both smoothed by the SSIM window) carries image structure the
    output does not explain: atoms removed or invented. Measured after the best affine fit of the
    smoothed raw on the smoothed output (so a model whose output has another contrast is not
    punished), against the smoothed noise floor.
``out_of_training_range``
    The input's dose is far from the model's training data: the number of detector counts spanned
    by the series' scaling (estimated from the frame's own mean-variance relation) differs more than
    ``DOSE_FACTOR`` times from the training frames' (their scaling span over their gain).

Everything is computed in [0, 1] units of the series' input scaling on the window centres of a
:class:`noise2atom.metrics.WindowGrid` (the very moments the live CSS computes, reused when given),
so the guard costs a fraction of a millisecond per frame.

Examples
--------
>>> import numpy as np
>>> from noise2atom.scaling import estimate_scaling
>>> from noise2atom.stem_sim import StemSimulator
>>> f = StemSimulator(shape=(128, 128), scene="crystal", peak_counts=20.0, seed=0).frame(0)
>>> guard = FidelityGuard(estimate_scaling(f.noisy), dtype=f.noisy.dtype)
>>> guard.check(f.noisy, f.clean)
[]
>>> guard.check(f.noisy, np.full_like(f.clean, 0.3))
['flat_output', 'structure_in_residual']
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from noise2atom.checkpoint import Normalisation
from noise2atom.metrics import WINDOW_NOISE_GAIN, LocalMoments, WindowGrid

__all__ = ["FLAGS", "DOSE_FACTOR", "FidelityGuard", "GuardReport", "TrainingRange", "counts_span"]

#: Every flag the guard can raise.
FLAGS = ("input_clipped", "flat_output", "structure_in_residual", "out_of_training_range",
         "too_small_to_check")
#: Frames below this side hold no SSIM window: the guard cannot look at them, and says so.
MIN_SIDE = 11
#: Fraction of pixels at the ceiling / outside the scaling that counts as clipping (the scaling's
#: own percentiles leave 0.1 % on each side).
CLIPPED_FRACTION = 0.01
#: The raw frame "has structure" when its smoothed variance exceeds the smoothed noise by this
#: fraction of the noise (pure Poisson noise measures 0.00-0.05; a 0.4-count lattice 0.7).
STRUCTURE_SNR = 0.3
#: An output whose window means vary less than this (std, display units) is flat whatever the raw
#: frame holds: far below what SSIM can see (its C2 term is 0.03²), so its CSS reads ~1.
FLAT_STD = 0.002
#: The output is flat when it keeps less than this fraction of the raw structure's variance.
FLAT_FRACTION = 0.05
#: The residual carries structure when it holds more than this fraction of the raw structure's
#: variance beyond the noise floor (and more than the noise floor itself).
RESIDUAL_FRACTION = 0.3
#: Dose further than this factor from the training dose is out of range.
DOSE_FACTOR = 8.0
#: For a model trained on a range of doses: further than this factor outside the range (1: the
#: mean-variance span under-reads high doses: 50 counts at a peak read ~34, 2,000 read ~90).
RANGE_FACTOR = 1.0


def _noise_var(rows: np.ndarray) -> float:
    """White-noise variance from second differences along the centre rows (a linear gradient
    cancels; ``var(x[j-1] - 2 x[j] + x[j+1]) = 6 sigma^2`` for white noise)."""
    centre = rows[:, rows.shape[1] // 2, :]
    d2 = centre[:, :-2] - 2 * centre[:, 1:-1] + centre[:, 2:]
    return float(np.mean(np.square(d2, dtype=np.float64)) / 6.0) if d2.size else 0.0


def _residual_var(ur: np.ndarray, ud: np.ndarray, out_var: float) -> float:
    """Variance of the raw window means ``ur`` left after the best affine map (least squares) of the
    output's ``ud`` (variance ``out_var``) onto them."""
    if out_var > 0:
        cov = float(np.mean((ud - ud.mean()) * (ur - ur.mean())))
        resid = ur - ur.mean() - cov / out_var * (ud - ud.mean())
    else:
        resid = ur - ur.mean()
    return float(resid.var())


def counts_span(frame: np.ndarray, scaling: Normalisation) -> float | None:
    """How many detector counts the scaling ``lo..hi`` spans, from the frame's mean-variance relation.

    For counting noise the local variance grows linearly with the local mean, with slope = the
    gain (units per count). The slope is fitted over ten intensity bins of the lightly smoothed
    frame against the second-difference noise variance; ``(hi - lo) / gain`` is then a dose
    measure that does not depend on offset, gain or dtype. Noise-free or nearly noise-free data
    reads as a very high dose (the atoms' own curvature is all that is left); None when no slope can
    be fitted (too few distinct intensities, or a non-positive slope).
    """
    x = np.asarray(frame, dtype=np.float64)
    if x.ndim != 2 or min(x.shape) < 8:
        return None
    step = max(1, int(math.ceil(math.sqrt(x.size / 262_144))))  # at most about 512² pixels
    x = x[::step, ::step] if step > 1 else x
    d2 = (x[1:-1, :-2] - 2 * x[1:-1, 1:-1] + x[1:-1, 2:]) ** 2 / 6.0
    # local mean over a 3x3 box (bins by a noisy pixel's own value would bias the variance)
    m = sum(x[1 + i:x.shape[0] - 1 + i, j:x.shape[1] - 2 + j] for i in (-1, 0, 1) for j in (0, 1, 2)) / 9.0
    edges = np.percentile(m, np.linspace(0, 100, 11))
    idx = np.clip(np.searchsorted(edges, m, side="right") - 1, 0, 9)
    counts = np.bincount(idx.ravel(), minlength=10)
    ok = counts > 50
    if ok.sum() < 3:
        return None
    mean_b = np.bincount(idx.ravel(), m.ravel(), 10)[ok] / counts[ok]
    var_b = np.bincount(idx.ravel(), d2.ravel(), 10)[ok] / counts[ok]
    if np.ptp(mean_b) <= 0:
        return None
    slope = float(np.polyfit(mean_b, var_b, 1)[0])
    if not slope > 0:
        return None
    return float((scaling.hi - scaling.lo) / slope)


@dataclass(frozen=True)
class TrainingRange:
    """What the model was trained on, from its checkpoint: the training scaling and, when the
    checkpoint's acquisition ``meta`` names the gain (``gain_adu_per_count``), the counts it spans."""

    normalisation: Normalisation
    counts_span: float | None = None
    #: (min, max) counts at an atom's peak of a model trained on a range of doses (the mixture)
    counts_range: tuple[float, float] | None = None

    @classmethod
    def from_config(cls, config: Any) -> TrainingRange:
        """From a :class:`noise2atom.checkpoint.ModelConfig`."""
        norm = config.normalisation
        meta = dict(getattr(config, "meta", {}) or {})
        gain = meta.get("gain_adu_per_count")
        span = None
        if isinstance(gain, (int, float)) and gain > 0:
            span = float((norm.hi - norm.lo) / gain)
        peaks = meta.get("peak_counts")  # a mixture model: the doses it was trained on
        counts_range = None
        if (isinstance(peaks, (list, tuple)) and len(peaks) == 2
                and all(isinstance(v, (int, float)) and v > 0 for v in peaks)):
            counts_range = (float(min(peaks)), float(max(peaks)))
        return cls(normalisation=norm, counts_span=span, counts_range=counts_range)


@dataclass
class GuardReport:
    """The numbers behind the latest frame's flags (for tests, benches and the curious)."""

    flags: list[str] = field(default_factory=list)
    clipped_fraction: float = 0.0
    noise_var: float = 0.0
    raw_structure: float = 0.0
    output_structure: float = 0.0
    residual_excess: float = 0.0
    counts_span: float | None = None


class FidelityGuard:
    """Per-series fidelity checks of (raw, denoised) frame pairs; see the module docstring.

    Parameters
    ----------
    scaling
        The series' input scaling (raw -> [0, 1] is ``(raw - lo) / (hi - lo)``).
    dtype
        The raw frames' dtype (its maximum is the detector's ceiling for integer types).
    reference
        The model's :class:`TrainingRange` (None: no out-of-range check).
    """

    def __init__(self, scaling: Normalisation, *, dtype: Any, reference: TrainingRange | None = None) -> None:
        self.scaling = scaling
        self.dtype = np.dtype(dtype)
        self.ceiling = float(np.iinfo(self.dtype).max) if self.dtype.kind in "ui" else None
        self.reference = reference
        self.grid: WindowGrid | None = None
        self.series_flags: list[str] | None = None  # decided on the series' first frame
        self.report = GuardReport()

    def _grid(self, shape: tuple[int, ...]) -> WindowGrid:
        if self.grid is None or self.grid.shape != shape:
            self.grid = WindowGrid(shape)  # type: ignore[arg-type]
        return self.grid

    def _series_checks(self, raw: np.ndarray) -> list[str]:
        span = counts_span(raw, self.scaling)
        self.report.counts_span = span
        ref = self.reference.counts_span if self.reference is not None else None
        if span is not None and ref is not None and not (ref / DOSE_FACTOR <= span <= ref * DOSE_FACTOR):
            return ["out_of_training_range"]
        rng = self.reference.counts_range if self.reference is not None else None
        if span is not None and rng is not None and not (
                rng[0] / RANGE_FACTOR <= span <= rng[1] * RANGE_FACTOR):
            return ["out_of_training_range"]
        return []

    def check(self, raw: np.ndarray, denoised: np.ndarray, *, raw_moments: LocalMoments | None = None,
              out_moments: LocalMoments | None = None) -> list[str]:
        """Flags for one frame pair; ``denoised`` in display units [0, 1].

        ``raw_moments`` / ``out_moments``: the frames' moments on a :class:`WindowGrid` of their
        shape, mapped with this series' scaling and with 0..1 (the live CSS's ``last``); computed
        here when not given.
        """
        raw, den = np.asarray(raw), np.asarray(denoised)
        if raw.shape != den.shape or raw.ndim != 2:
            raise ValueError(f"raw and denoised must be 2-D frames of one shape (got {raw.shape} and {den.shape})")
        rep = self.report = GuardReport(counts_span=self.report.counts_span)
        if min(raw.shape) < MIN_SIDE:  # never "all well" for a frame nobody could check
            rep.flags = ["too_small_to_check"]
            return list(rep.flags)
        if self.series_flags is None:
            self.series_flags = self._series_checks(raw)
        flags = list(self.series_flags)
        rep.clipped_fraction = self._clipped_fraction(raw)
        if rep.clipped_fraction >= CLIPPED_FRACTION:
            flags.append("input_clipped")
        flags += self._structure_flags(*self._moments(raw, den, raw_moments, out_moments))
        rep.flags = flags
        return flags

    def _clipped_fraction(self, raw: np.ndarray) -> float:
        """Fraction of ``raw`` that was clipped, from a sparse regular sample (plenty for a fraction).

        Counted: values beyond the series' scaling (the network saw them clipped), values at an
        integer detector's ceiling (saturated, whatever the scaling made of them), and for float data
        a plateau at the top limit (ties are rare in float data unless something saturated; in
        low-count integer data they are normal, so not counted there).
        """
        lo, hi = self.scaling.lo, self.scaling.hi
        sample = raw[::4, ::4]
        outside = (sample > hi) | (sample < lo)
        if self.ceiling is not None:
            outside |= sample >= self.ceiling
        elif self.dtype.kind == "f":
            outside |= sample == hi
        return np.count_nonzero(outside) / sample.size

    def _moments(self, raw: np.ndarray, den: np.ndarray, raw_moments: LocalMoments | None,
                 out_moments: LocalMoments | None) -> tuple[LocalMoments, LocalMoments]:
        """Both frames' moments on the grid: the ones given when they fit it, else computed here."""
        grid = self._grid(raw.shape)
        rm = raw_moments if raw_moments is not None and raw_moments.mean.shape == grid.shape_out else None
        om = out_moments if out_moments is not None and out_moments.mean.shape == grid.shape_out else None
        rm = rm or grid.moments(raw, self.scaling.lo, self.scaling.hi)
        om = om or grid.moments(den, 0.0, 1.0)
        return rm, om

    def _structure_flags(self, rm: LocalMoments, om: LocalMoments) -> list[str]:
        """``flat_output`` and ``structure_in_residual`` from the window means (numbers into the report)."""
        rep = self.report
        ur = rm.mean.astype(np.float64).ravel()
        ud = om.mean.astype(np.float64).ravel()
        sm_noise = _noise_var(rm.rows) * WINDOW_NOISE_GAIN
        rep.noise_var = sm_noise
        rep.raw_structure = raw_struct = max(0.0, float(ur.var()) - sm_noise)
        rep.output_structure = out_struct = float(ud.var())
        has_structure = raw_struct > STRUCTURE_SNR * sm_noise and raw_struct > 1e-8
        flags: list[str] = []
        if out_struct < FLAT_STD**2 or (has_structure and out_struct < FLAT_FRACTION * raw_struct):
            flags.append("flat_output")
        if has_structure:
            rep.residual_excess = excess = _residual_var(ur, ud, out_struct) - sm_noise
            if excess > RESIDUAL_FRACTION * raw_struct and excess > sm_noise:
                flags.append("structure_in_residual")
        return flags
