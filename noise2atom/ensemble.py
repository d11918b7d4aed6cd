"""Self-ensemble: a network run on the flips and rotations of a frame, mapped back and averaged.

A crystal seen in a mirror or turned by 90 degrees is as likely as the original, but a trained
network is not exactly symmetric: what it adds or removes differs from one orientation to another.
Averaging the eight orientations of a square frame (four flips of a non-square one, whose
rotations would change its shape) keeps what they agree on. In the external benchmark at 0.1-2
counts/px it gains 0.001-0.013 SSIM on the abTEM crystals and 0.011-0.098 on temul MoS2, for 8 (4)
times the engine time: an option for files (``n2a-denoise --ensemble``), too slow for the live
stream.

>>> import numpy as np
>>> x = np.arange(12, dtype=np.float32).reshape(3, 4)
>>> bool(np.array_equal(self_ensemble(lambda a: a * 2, x), x * 2))  # a symmetric map is unchanged
True
>>> ensemble_size((64, 64)), ensemble_size((64, 80))
(8, 4)
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["ensemble_size", "self_ensemble"]


def ensemble_size(shape: tuple[int, ...]) -> int:
    """How many orientations :func:`self_ensemble` averages for frames of ``shape`` (..., H, W)."""
    return 8 if shape[-1] == shape[-2] else 4


def _orientations(square: bool):
    """(forward, inverse) pairs on the last two axes: the 4 flips, and for a square frame the
    same four after a transpose."""
    flips = [(), (-2,), (-1,), (-2, -1)]
    for transpose in (False, True) if square else (False,):
        for axes in flips:
            def forward(a, axes=axes, transpose=transpose):
                a = np.flip(a, axes) if axes else a
                return np.swapaxes(a, -1, -2) if transpose else a

            def inverse(a, axes=axes, transpose=transpose):
                a = np.swapaxes(a, -1, -2) if transpose else a
                return np.flip(a, axes) if axes else a
            yield forward, inverse


def self_ensemble(infer: Callable[[np.ndarray], np.ndarray], frames: np.ndarray) -> np.ndarray:
    """The mean of ``inverse(infer(forward(frames)))`` over the orientations of the frames.

    ``frames``: (H, W) or a batch (..., H, W); ``infer`` maps such an array to one of the same
    shape (e.g. an engine's ``infer`` on (N, H, W)). float32 out.
    """
    x = np.asarray(frames)
    if x.ndim < 2:
        raise ValueError(f"expected a frame (H, W) or a batch (..., H, W) (got shape {x.shape})")
    total = np.zeros(x.shape, np.float64)
    n = 0
    for forward, inverse in _orientations(x.shape[-1] == x.shape[-2]):
        turned = np.ascontiguousarray(forward(x))
        y = np.asarray(infer(turned))
        if y.shape != turned.shape:
            raise ValueError(f"infer changed the shape of its input (got {y.shape}, expected {turned.shape})")
        total += inverse(y)
        n += 1
    return (total / n).astype(np.float32)
