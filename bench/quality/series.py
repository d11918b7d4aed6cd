"""Simulated STEM series for the quality benchmark: a training part and a scoring part per (dose, scene).

At the microscope a model is trained on the experiment's own earlier frames and then denoises the
frames that follow. The benchmark does the same: one drifting series per (dose, scene) from
`noise2atom.stem_sim`, its first frames for training, its last frames for scoring. Filter settings
(Gaussian sigma, median size) are chosen on a *separate* series with its own seed, so no baseline is
tuned on the frames it is scored on. Used by `bench.quality.simulated` and
`bench.quality.training_curve`; writes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from noise2atom.stem_sim import StemSeries, simulate_series

__all__ = ["BenchSeries", "SeriesSpec", "make_bench_series", "make_tuning_series"]


@dataclass(frozen=True, kw_only=True)
class SeriesSpec:
    """What to simulate for one benchmark case.

    Parameters
    ----------
    dose : float
        Expected counts at an atom column's peak (the simulator's ``peak_counts``).
    scene : str
        ``"crystal"`` or ``"nanoparticle"`` (a particle on an amorphous support with vacuum).
    size : int
        Frame side in pixels.
    n_train, n_score : int
        Frames for training (the earlier ones) and for scoring (the later ones).
    drift : float
        Largest drift speed in pixels per frame (the simulator's ``drift_px_per_frame``).
    seed : int
        Seed of the scored series; the tuning series uses a different one.
    """

    dose: float
    scene: str
    size: int = 256
    n_train: int = 40
    n_score: int = 8
    drift: float = 0.3
    seed: int = 0

    @property
    def key(self) -> str:
        """A short file-name-safe id, e.g. ``dose1-crystal``."""
        return f"dose{self.dose:g}-{self.scene}"


@dataclass(frozen=True, kw_only=True)
class BenchSeries:
    """One case: the noisy training frames and the scored frames with their truth."""

    spec: SeriesSpec
    train_noisy: np.ndarray
    score: StemSeries

    @property
    def pixel_size_nm(self) -> float:
        """Pixel size from the simulator's acquisition meta."""
        return float(self.score.meta["pixel_size_nm"])


def _slice_series(series: StemSeries, start: int, stop: int) -> StemSeries:
    return StemSeries(
        noisy=series.noisy[start:stop],
        clean=series.clean[start:stop],
        positions=list(series.positions[start:stop]),
        vacuum_masks=series.vacuum_masks[start:stop],
        meta=dict(series.meta),
    )


def _simulate(spec: SeriesSpec, n: int, seed: int) -> StemSeries:
    return simulate_series(
        n,
        shape=(spec.size, spec.size),
        scene=spec.scene,
        peak_counts=spec.dose,
        drift_px_per_frame=spec.drift,
        seed=seed,
    )


def make_bench_series(spec: SeriesSpec) -> BenchSeries:
    """Simulate one drifting series and split it into training (earlier) and scoring (later) frames.

    Parameters
    ----------
    spec : SeriesSpec
        The case to simulate.

    Returns
    -------
    BenchSeries
    """
    full = _simulate(spec, spec.n_train + spec.n_score, spec.seed)
    return BenchSeries(
        spec=spec,
        train_noisy=full.noisy[: spec.n_train],
        score=_slice_series(full, spec.n_train, spec.n_train + spec.n_score),
    )


def make_tuning_series(spec: SeriesSpec, n: int = 4) -> StemSeries:
    """A separate series (another seed) of the same dose and scene, for choosing filter settings."""
    return _simulate(spec, n, spec.seed + 10_007)
