"""The lattice-average bench's vacancy measure: what it calls missing, and that refilling shows."""
from __future__ import annotations

import numpy as np

from bench.quality.lattice_average import _copies_mean, _vacancy_pixels


def _crystal(missing: tuple[int, int] | None = None, n: int = 96, pitch: int = 8) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n].astype(np.float64)
    out = np.zeros((n, n))
    for i in range(n // pitch):
        for j in range(n // pitch):
            if (i, j) != missing:
                out += np.exp(-((yy - i * pitch - 4) ** 2 + (xx - j * pitch - 4) ** 2) / (2 * 1.3 ** 2))
    return out


def test_a_vacancy_is_missing_intensity_and_refilling_it_is_measured():
    truth = _crystal(missing=(6, 5))
    mean = _copies_mean(truth)
    gap = _vacancy_pixels(truth, mean)
    site = (6 * 8 + 4, 5 * 8 + 4)
    assert gap[site] and gap.sum() < 60  # the empty column, not the lattice
    missing = np.sum((mean - truth)[gap])
    def refilled(out: np.ndarray) -> float:  # what the bench's "refilled" column reports
        return float(np.sum((out - truth)[gap]) / missing)

    half_filled = truth + 0.5 * (_crystal() - truth)
    assert refilled(half_filled) > 0.3
    assert refilled(_crystal()) > refilled(half_filled) + 0.3  # the column put back in full reads higher
    # a perfect crystal has nothing missing, and a frame without a lattice is its own mean
    perfect = _crystal()
    assert not _vacancy_pixels(perfect, _copies_mean(perfect)).any()
    noise = np.random.default_rng(0).standard_normal((64, 64))
    np.testing.assert_array_equal(_copies_mean(noise), noise)
