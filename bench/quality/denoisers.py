"""The denoisers the quality benchmark compares, each a callable from one raw frame to one float image.

Baselines are what a microscopist would reach for today: the raw frame, a Gaussian filter, a median
filter (their one setting chosen on a separate series with truth, i.e. the best a user could hope for)
and BM3D (its noise level estimated from the data, as a user would, on Anscombe-transformed counts).
n2a models run through `engines.open_engine` with the ONNX Runtime back end, the one that runs live
on CPU. Outputs are in each method's own intensity units; `bench.quality.scoring` puts them on the
truth's scale before comparing. Measures nothing itself; used by `bench.quality.simulated`,
`bench.quality.external` and `bench.quality.training_curve`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
from scipy import ndimage

__all__ = [
    "Bm3dDenoiser",
    "Denoiser",
    "EngineDenoiser",
    "FilterDenoiser",
    "RawDenoiser",
    "anscombe",
    "choose_filter_setting",
    "estimate_noise_sigma",
    "inverse_anscombe",
    "run_denoiser",
]


class Denoiser(Protocol):
    """One frame in, one float32 frame out; ``name`` labels the table row."""

    name: str

    def __call__(self, frame: np.ndarray) -> np.ndarray: ...


@dataclass(kw_only=True)
class RawDenoiser:
    """No denoising: the raw frame as float32 (the baseline every method must beat)."""

    name: str = "raw"

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        return np.asarray(frame, dtype=np.float32)


@dataclass(kw_only=True)
class FilterDenoiser:
    """A Gaussian (``kind="gaussian"``, setting = sigma in px) or median (setting = size in px) filter."""

    kind: str
    setting: float
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("gaussian", "median"):
            raise ValueError(f"filter kind must be 'gaussian' or 'median' (got {self.kind!r})")
        if not self.name:
            unit = "sigma" if self.kind == "gaussian" else "size"
            self.name = f"{self.kind} ({unit} {self.setting:g})"

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        x = np.asarray(frame, dtype=np.float32)
        if self.kind == "gaussian":
            return ndimage.gaussian_filter(x, self.setting, mode="reflect")
        return ndimage.median_filter(x, size=int(self.setting), mode="reflect")


def choose_filter_setting(
    kind: str,
    candidates: list[float],
    noisy: np.ndarray,
    clean: np.ndarray,
    score: Callable[[np.ndarray, np.ndarray], float],
) -> float:
    """Pick the filter setting with the best mean score against the truth of a separate series.

    Parameters
    ----------
    kind : {"gaussian", "median"}
        Which filter.
    candidates : list of float
        Settings to try.
    noisy, clean : np.ndarray
        (T, H, W) frames of the tuning series and their truth.
    score : callable
        ``score(output, truth) -> float``, higher is better (the benchmark uses SSIM to truth).
    """
    if len(candidates) == 0:
        raise ValueError("need at least one candidate setting (got an empty list)")
    best, best_score = candidates[0], -np.inf
    for setting in candidates:
        f = FilterDenoiser(kind=kind, setting=setting)
        s = float(np.mean([score(f(n), c) for n, c in zip(noisy, clean)]))
        if s > best_score:
            best, best_score = setting, s
    return best


def anscombe(counts: np.ndarray) -> np.ndarray:
    """Anscombe's variance-stabilising transform, ``2 sqrt(x + 3/8)``: Poisson counts -> noise ~ 1."""
    return 2.0 * np.sqrt(np.maximum(np.asarray(counts, dtype=np.float64), 0.0) + 0.375)


def inverse_anscombe(z: np.ndarray) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse (Makitalo and Foi, 2011).

    It is exactly 0 at ``z = 2 sqrt(3/8)`` (the transform of 0 counts); smaller values map to 0.
    """
    z = np.asarray(z, dtype=np.float64)
    zc = np.maximum(z, 2.0 * np.sqrt(0.375))
    s = np.sqrt(1.5)
    x = 0.25 * zc**2 + 0.25 * s / zc - 11.0 / 8.0 / zc**2 + 5.0 / 8.0 * s / zc**3 - 0.125
    return np.maximum(x, 0.0)


def estimate_noise_sigma(image: np.ndarray) -> float:
    """Noise standard deviation from the data alone: MAD of the finest diagonal wavelet band.

    Donoho's estimator (as in `skimage.restoration.estimate_sigma`), no truth involved.
    """
    from skimage.restoration import estimate_sigma

    return float(estimate_sigma(np.asarray(image, dtype=np.float64), channel_axis=None))


@dataclass(kw_only=True)
class Bm3dDenoiser:
    """BM3D as a user would run it on counting data.

    Detector units are turned into counts with the detector's calibration (``gain`` ADU per count,
    dark ``offset`` in ADU; a user knows these), then Anscombe transform, noise sigma estimated on the
    transformed frame (wavelet MAD) unless ``sigma`` fixes it (1 is the stabilised Poisson noise),
    `bm3d.bm3d` with its default profile (both stages), then the exact unbiased inverse.
    The last sigma used is kept in ``last_sigma`` for the report.
    """

    gain: float = 1.0
    offset: float = 0.0
    sigma: float | None = None
    name: str = "BM3D (Anscombe, sigma from data)"
    last_sigma: float = field(default=float("nan"))

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        import bm3d

        counts = (np.asarray(frame, dtype=np.float64) - self.offset) / self.gain
        z = anscombe(counts)
        sigma = estimate_noise_sigma(z) if self.sigma is None else self.sigma
        self.last_sigma = sigma
        # A flat frame (no noise to estimate) would give sigma 0, which bm3d rejects.
        den = bm3d.bm3d(z, max(sigma, 1e-3))
        return inverse_anscombe(den).astype(np.float32)


class EngineDenoiser:
    """An n2a checkpoint run through `engines.open_engine` (ONNX Runtime on CPU by default).

    Raw frames are normalised with the checkpoint's own `Normalisation`, as the live path does, and
    the output is returned in display units [0, 1]. Use as a context manager.
    """

    def __init__(self, *, checkpoint: Path | str, name: str, backend: str = "onnxruntime") -> None:
        self.checkpoint = Path(checkpoint)
        self.name = name
        self.backend = backend
        self._engine = None
        self.description: dict = {}

    def __enter__(self) -> "EngineDenoiser":
        from engines import open_engine

        self._engine = open_engine(self.checkpoint, backend=self.backend)
        self._engine.__enter__()
        self.description = dict(self._engine.describe())
        return self

    def __exit__(self, *exc) -> None:
        if self._engine is not None:
            self._engine.__exit__(*exc)
            self._engine = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self._engine is None:
            raise RuntimeError(f"{self.name}: use EngineDenoiser as a context manager (not entered)")
        norm = self._engine.config.normalisation
        x = norm.to_model(np.asarray(frame))[None]
        y = self._engine.infer(x)[0]
        return np.asarray(norm.from_model(y), dtype=np.float32)


def run_denoiser(denoiser: Denoiser, frames: np.ndarray, warmup: int = 1) -> tuple[np.ndarray, float]:
    """Denoise every frame; return the outputs and the median time per frame in ms.

    The first ``warmup`` calls (on the first frame) are not timed, so one-off set-up costs
    (session start, allocations) do not count against a method.
    """
    for _ in range(warmup):
        denoiser(frames[0])
    outs, times = [], []
    for f in frames:
        t0 = time.perf_counter_ns()
        outs.append(np.asarray(denoiser(f), dtype=np.float32))
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return np.stack(outs), float(np.median(times))
