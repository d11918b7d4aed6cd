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

__all__ = ["SCALING_PERCENTILES", "estimate_scaling"]

#: The percentiles mapped to -1 and +1 (the same at training and at inference).
SCALING_PERCENTILES: tuple[float, float] = (0.1, 99.9)


def estimate_scaling(frames: np.ndarray | Sequence[np.ndarray]) -> Normalisation:
    """The scaling for ``frames`` (one (H, W) frame, a (T, H, W) stack or a list of frames).

    Raises ``ValueError`` (saying what was got) when the frames hold no finite values or have no
    intensity range at all.
    """
    return Normalisation.from_frames(frames, SCALING_PERCENTILES)
