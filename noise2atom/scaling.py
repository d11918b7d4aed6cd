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

from typing import Sequence

import numpy as np

from noise2atom.checkpoint import Normalisation

__all__ = ["SCALING_PERCENTILES", "MODEL_MAX_PITCH_PX", "MODEL_PITCH_PX", "estimate_scaling",
           "pitch_resample_factor", "denoise_resampled"]

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


def pitch_resample_factor(frames: np.ndarray, *, max_pitch_px: float = MODEL_MAX_PITCH_PX,
                          target_pitch_px: float = MODEL_PITCH_PX) -> float:
    """Zoom factor (< 1) that brings a lattice pitch above ``max_pitch_px`` to ``target_pitch_px``.

    1.0 when the pitch is in the model's range or no lattice is found (a particle, an amorphous
    area): the network's receptive field covers only a few atoms of ~30 px, so a far more finely
    sampled image is denoised at a coarser sampling and interpolated back.
    """
    from noise2atom.prior import PriorEstimateError, estimate_prior

    try:
        est = estimate_prior(np.asarray(frames, dtype=np.float32), max_pitch_px=None)
    except PriorEstimateError:
        return 1.0
    # peak ratio 5, not prior.py's 10: a low-dose lattice of large pitch (MoS2 at 0.1 counts/px: 8.6) counts
    if est.peak_ratio < 5.0 or not est.pitch_px > max_pitch_px:
        return 1.0
    return float(target_pitch_px / est.pitch_px)


def denoise_resampled(denoise, frame: np.ndarray, factor: float) -> np.ndarray:
    """``denoise`` (an (H, W) -> (H, W) function) run on ``frame`` zoomed by ``factor``, zoomed back.

    The frame is smoothed over the pixels merged (sigma ``0.5 / factor``) before sampling, so no
    counts are dropped.
    """
    if factor >= 1.0:
        return denoise(frame)
    from scipy.ndimage import gaussian_filter, zoom

    f = np.asarray(frame, dtype=np.float32)
    small = zoom(gaussian_filter(f, 0.5 / factor), factor, order=1)
    out = np.asarray(denoise(small), dtype=np.float32)
    return zoom(out, (f.shape[0] / out.shape[0], f.shape[1] / out.shape[1]), order=3)
