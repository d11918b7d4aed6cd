"""Input scaling from the data being denoised, never frozen from the training set.

Every detector has its own offset, gain and dtype (uint16 counts from 0, uint16 with an offset of
15,000, uint32 at 3e6, float in 0..1, int16 with a negative offset, ...). The networks see float32
in [-1, 1]; the mapping to that range is estimated from the frames being denoised themselves
(per file offline, per series live, fixed within a series so CSS stays comparable) with
:func:`estimate_scaling`. The checkpoint's own ``normalisation`` only says what the model was
trained on.

Examples
--------
>>> import numpy as np
>>> frame = np.random.default_rng(0).poisson(2.0, (64, 64)).astype(np.uint16) + 15_000
>>> s = estimate_scaling(frame)
>>> 14_990 < s.lo < s.hi < 15_020
True
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from noise2atom.checkpoint import Normalisation

__all__ = ["SCALING_PERCENTILES", "MODEL_MAX_PITCH_PX", "MODEL_PITCH_PX", "MIN_PEAK_RATIO", "MODEL_SIGMA_PX",
           "MIN_RESAMPLED_SIDE", "ZOOM_RANGE",
           "estimate_scaling", "estimate_pitch", "resample_pitches", "width_unknown_target", "resample_factor",
           "pitch_resample_factor",
           "LOW_COUNTS_SPAN", "applied_zoom", "series_zoom", "zoom_up_order", "denoise_resampled",
           "denoise_at_series_zoom"]

#: The percentiles mapped to -1 and +1 (the same at training and at inference).
SCALING_PERCENTILES: tuple[float, float] = (0.1, 99.9)


def estimate_scaling(frames: np.ndarray | Sequence[np.ndarray]) -> Normalisation:
    """The scaling for ``frames`` (one (H, W) frame, a (T, H, W) stack or a list of frames).

    Raises ``ValueError`` (saying what was got) when the frames hold no finite values or have no
    intensity range at all.
    """
    return Normalisation.from_frames(frames, SCALING_PERCENTILES)


#: The bundled model was trained on atom pitches of 4-30 px (noise2atom.mixture).
MODEL_MAX_PITCH_PX: float = 30.0
#: The pitch an oversampled image is brought to before the network (measured best of 8 and 12).
MODEL_PITCH_PX: float = 12.0
#: A lattice whose strongest reflection is weaker than this over its ring's median is not trusted
#: (prior.py's 10 misses a low-dose lattice of large pitch: MoS2 at 0.1 counts/px gives 8.6).
MIN_PEAK_RATIO: float = 5.0
#: The column width (blob sigma, px) frames are resampled to before the bundled model
#: (bench/results/pitch-resampling.md: better SSIM than none on 11 of 12 series).
MODEL_SIGMA_PX: float = 1.25


def estimate_pitch(frames: np.ndarray, *, min_peak_ratio: float = MIN_PEAK_RATIO) -> float | None:
    """The lattice pitch (px) of ``frames`` ((H, W) or (T, H, W), any units) by
    :func:`noise2atom.prior.estimate_prior`, or None where no lattice is found (a particle, an
    amorphous area, vacuum, a frame under 32 px).

    The strongest reflection must stand above what noise alone reaches somewhere in the spectrum
    (one frame of noise gives ~10-20; more frames average that down), or above ``min_peak_ratio``
    with at least three reflections fitted to a blob of >= 0.5 px; and the pitch must lie in the
    searched range (up to a quarter of the side).
    """
    est = _trusted_prior(frames, min_peak_ratio)
    return None if est is None else float(est.pitch_px)


def resample_pitches(frames: np.ndarray, *, target_sigma_px: float = MODEL_SIGMA_PX,
                     min_peak_ratio: float = MIN_PEAK_RATIO) -> tuple[float, float] | None:
    """``(pitch_px, target_pitch_px)`` for :func:`denoise_resampled`: the zoom that brings the
    columns' estimated width (prior's ``sigma_px``) to ``target_sigma_px``; None (denoise as it
    is) where no lattice is found.

    Where a lattice stands out but its width cannot be fitted (too few orders above the noise),
    the pitch alone sets the zoom: :func:`width_unknown_target`.

    Estimate once per series (a few frames) and keep it, so CSS stays comparable.
    """
    est = _trusted_prior(frames, min_peak_ratio)
    if est is None:
        return None
    pitch = float(est.pitch_px)
    if not (np.isfinite(est.sigma_px) and est.sigma_px > 0):
        target = width_unknown_target(pitch)
        return None if target is None else (pitch, target)
    return pitch, float(pitch * target_sigma_px / est.sigma_px)


def width_unknown_target(pitch_px: float) -> float | None:
    """The pitch to zoom a lattice to when its column width could not be fitted: up to
    :data:`MODEL_PITCH_PX`, by at most ``ZOOM_RANGE[1]``; None (as it is) at that pitch or above.

    Only a zoom up: the width fit fails at a few counts on a hexagonal lattice, where of the
    orders of a square lattice that the prior fits only the two first ones, at one distance from
    the centre, stand above the noise. abTEM GaN [0001] at 0.1 counts/px (pitch ~5 px): SSIM 0.34
    as it was, 0.43 / 0.48 / 0.52 at a pitch of 9.4 / 10.5 / 12; the best baseline 0.55.

    >>> width_unknown_target(5.0), width_unknown_target(8.0), width_unknown_target(14.0)
    (10.0, 12.0, None)
    """
    if pitch_px >= MODEL_PITCH_PX:
        return None
    return float(min(MODEL_PITCH_PX, pitch_px * ZOOM_RANGE[1]))


def _trusted_prior(frames: np.ndarray, min_peak_ratio: float):
    from noise2atom.prior import PriorEstimateError, estimate_prior

    a = np.asarray(frames, dtype=np.float32)
    try:
        est = estimate_prior(a, max_pitch_px=None)
    except PriorEstimateError:
        return None
    # The search runs up to a quarter of the frame side; a pitch beyond it comes from a second
    # reflection found near the centre (a hexagonal lattice, a lattice of two periods per frame).
    if not 3.0 <= est.pitch_px <= min(a.shape[-2:]) / 4:
        return None
    # One strong peak, stronger than noise reaches anywhere in the spectrum; or a weaker one with
    # higher orders whose decay gives a resolvable blob (noise: 0-2 orders, or a sub-pixel width).
    strong = est.peak_ratio >= _chance_peak_ratio(a, min_peak_ratio)
    lattice = est.peak_ratio >= min_peak_ratio and est.n_orders >= 3 and est.sigma_px >= 0.5
    return est if strong or lattice else None


def _chance_peak_ratio(a: np.ndarray, floor: float, false_alarm: float = 1e-3) -> float:
    """The peak ratio that noise alone reaches with probability ``false_alarm`` somewhere in the spectrum.

    The power of white noise at one frequency, averaged over T frames, is Gamma(T) distributed:
    the largest of ~H*W/2 bins over the ring median passes ~22 once in 1,000 96² frames of noise (four
    frames averaged: ~6.3).
    """
    from scipy.stats import gamma

    t = min(a.shape[0], 64) if a.ndim == 3 else 1
    n_bins = a.shape[-2] * a.shape[-1] / 2
    chance = gamma.isf(false_alarm / n_bins, t, scale=1 / t) / gamma.median(t, scale=1 / t)
    return max(float(floor), float(chance))


def resample_factor(pitch_px: float, target_pitch_px: float) -> float:
    """The zoom that brings a lattice of ``pitch_px`` to ``target_pitch_px`` (1.0 when they match)."""
    if not (pitch_px > 0 and target_pitch_px > 0 and np.isfinite(pitch_px) and np.isfinite(target_pitch_px)):
        raise ValueError(f"expected finite pitches > 0 px (got pitch {pitch_px!r}, target {target_pitch_px!r})")
    return float(target_pitch_px) / float(pitch_px)


def pitch_resample_factor(frames: np.ndarray, *, max_pitch_px: float = MODEL_MAX_PITCH_PX,
                          target_pitch_px: float = MODEL_PITCH_PX) -> float:
    """Zoom factor (< 1) that brings a lattice pitch above ``max_pitch_px`` to ``target_pitch_px``.

    1.0 when the pitch is in the model's range or no lattice is found (a particle, an amorphous
    area): the network's receptive field covers only a few atoms of ~30 px, so a far more finely
    sampled image is denoised at a coarser sampling and interpolated back.
    """
    pitch = estimate_pitch(frames)
    if pitch is None or not pitch > max_pitch_px:
        return 1.0
    return resample_factor(pitch, target_pitch_px)


#: Below this relative difference between the pitches the frame is denoised as it is.
_SAME_PITCH_TOL: float = 0.01
#: The smallest side :func:`denoise_resampled` zooms a frame to (smaller: a ValueError).
MIN_RESAMPLED_SIDE: int = 16
#: The zooms :func:`series_zoom` applies; outside, a series is denoised as it is. Measured gains lie
#: at x0.72-0.78 (the demo) and x1.4-1.6 (abTEM Au / SrTiO3, narrow simulated columns); zoomed down
#: by x0.12-0.36 the near-noise-free real HR-STEM images of ../shared/data/real lost detail
#: (correlation with the lightly smoothed raw image 0.99 -> 0.74 and 0.92 -> 0.64, the fidelity
#: guard's ``structure_in_residual``); a zoom above 2 costs over 4x the engine time, unmeasured.
ZOOM_RANGE: tuple[float, float] = (0.5, 2.0)


def applied_zoom(pitches: tuple[float, float] | None) -> float:
    """The zoom :func:`denoise_resampled` applies for ``(pitch_px, target_pitch_px)`` (what
    :func:`resample_pitches` gives): 1.0 for None or a factor within 1 % of 1 (denoised as it is).

    >>> applied_zoom(None), applied_zoom((8.0, 6.0)), applied_zoom((8.0, 8.04))
    (1.0, 0.75, 1.0)
    """
    if pitches is None:
        return 1.0
    factor = resample_factor(*pitches)
    return 1.0 if abs(factor - 1.0) < _SAME_PITCH_TOL else factor


def series_zoom(frames: np.ndarray, *, max_frames: int = 8) -> tuple[tuple[float, float] | None, float]:
    """What the tools do once per series (live) or file (offline): ``(pitches, zoom)``, with
    ``pitches`` for :func:`denoise_resampled` (None: denoise as it is) and ``zoom`` the factor it
    applies (1.0 where no lattice is trusted, the columns already suit the model, the zoom lies
    outside :data:`ZOOM_RANGE`, or the zoomed frame would be under :data:`MIN_RESAMPLED_SIDE` px a
    side).

    ``frames``: (H, W) or (T, H, W) in model units; the first ``max_frames`` are used (the
    spectrum of a few frames is enough, and its cost grows with every frame).

    >>> series_zoom(np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32))
    (None, 1.0)
    """
    a = np.asarray(frames, dtype=np.float32)
    if a.ndim == 3:
        a = a[:max_frames]
    pitches = resample_pitches(a)
    zoom = applied_zoom(pitches)
    if (zoom == 1.0 or not ZOOM_RANGE[0] <= zoom <= ZOOM_RANGE[1]
            or min(round(n * zoom) for n in a.shape[-2:]) < MIN_RESAMPLED_SIDE):
        return None, 1.0
    return pitches, zoom


#: Below this many detector counts spanned by a series' scaling (:func:`noise2atom.guard.counts_span`)
#: a frame is zoomed up linearly, above it cubic. Linear interpolation averages neighbours: at a few
#: counts that smoothing is worth more than the detail cubic keeps (abTEM SrTiO3 at 0.1 counts/px,
#: ~3 counts spanned: SSIM 0.71 linear vs 0.63 cubic; at 0.5-2 counts/px, 7-10 spanned, cubic
#: +0.01 to +0.03). The training mixture zooms by the same rule.
LOW_COUNTS_SPAN: float = 6.0


def zoom_up_order(frames: np.ndarray) -> int:
    """The spline order a series is zoomed up with: 1 (linear) where its first frame (model units)
    spans fewer than :data:`LOW_COUNTS_SPAN` counts or no count scale can be read, else 3 (cubic).
    Decided once per series, with its zoom."""
    from noise2atom.guard import counts_span

    a = np.asarray(frames, dtype=np.float32)
    span = counts_span(a[0] if a.ndim == 3 else a, Normalisation(lo=-1.0, hi=1.0))
    return 3 if span is not None and span >= LOW_COUNTS_SPAN else 1


def denoise_at_series_zoom(frame: np.ndarray, pitches: tuple[float, float] | None,
                           denoise: Callable[[np.ndarray], np.ndarray], *, up_order: int = 3) -> np.ndarray:
    """``denoise(frame)`` at the zoom :func:`series_zoom` chose for the series: ``pitches`` its
    (pitch, target pitch) for :func:`denoise_resampled`, or None to denoise the frame as it is.

    >>> float(denoise_at_series_zoom(np.ones((4, 4), np.float32), None, lambda a: -a)[0, 0])
    -1.0
    """
    if pitches is None:
        return denoise(frame)
    return denoise_resampled(frame, pitches[1], pitches[0], denoise, up_order=up_order)


def denoise_resampled(frame: np.ndarray, target_pitch_px: float, pitch_px: float | None,
                      denoise: Callable[[np.ndarray], np.ndarray], *, up_order: int = 3) -> np.ndarray:
    """Denoise ``frame`` at the sampling where its lattice pitch is ``target_pitch_px``.

    Parameters
    ----------
    frame
        One (H, W) frame, already in model units (the series' own scaling).
    target_pitch_px
        The pitch the network should see.
    pitch_px
        The frame's lattice pitch (e.g. :func:`estimate_pitch` of its series, fixed within the
        series so CSS stays comparable); None (no lattice found): no resampling.
    denoise
        (h, w) float32 array in model units -> denoised (h, w) array in model units (e.g. an
        engine's ``infer`` on one frame). Called once.
    up_order
        Spline order of a zoom up (:func:`zoom_up_order` of the series; ignored when zooming down).

    Returns
    -------
    float32 (H, W): the denoised frame at the original sampling, in model units.

    The zooms are :func:`noise2atom.resample.to_model_sampling` and ``from_model_sampling``
    (scipy.ndimage's filters as cached sparse matrices). Within 1 % of the target the frame is
    denoised as it is.
    """
    f = np.asarray(frame, dtype=np.float32)
    if f.ndim != 2:
        raise ValueError(f"expected one (H, W) frame (got shape {f.shape})")
    if pitch_px is None:
        return np.asarray(denoise(f), dtype=np.float32)
    factor = resample_factor(pitch_px, target_pitch_px)
    if abs(factor - 1.0) < _SAME_PITCH_TOL:
        return np.asarray(denoise(f), dtype=np.float32)
    from noise2atom.resample import from_model_sampling, to_model_sampling, zoomed_shape

    size = zoomed_shape(f.shape, factor)
    if min(size) < MIN_RESAMPLED_SIDE:
        raise ValueError(f"a frame of {f.shape} at pitch {pitch_px:.3g} px resampled to {target_pitch_px:g} px "
                         f"would be {size}: expected at least {MIN_RESAMPLED_SIDE} px a side")
    small = to_model_sampling(f, factor, up_order=up_order)
    out = np.asarray(denoise(small), dtype=np.float32)
    if out.shape != small.shape:
        raise ValueError(f"denoise changed the shape: expected {small.shape} (got {out.shape})")
    return from_model_sampling(out, factor, f.shape)
