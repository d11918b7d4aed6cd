"""Scoring a denoiser's outputs on a scored stack against the simulator's truth.

Every denoiser gets the same treatment:

- *PSNR / SSIM to truth*: each output frame is first put on the truth's intensity scale by the
  least-squares affine map ``a * out + b`` (methods return their own units: counts, [0, 1] display
  units, ...). This is the usual scale-free comparison (as in CARE / Noise2Void evaluations); it can
  only help a method, never hurt it, and it helps every method the same way.
- *CSS*: `noise2atom.metrics.css` of the output sequence as it is (our definition: SSIM of
  consecutive frames after one per-sequence min-max), mean over the pairs, plus the curve.
- *Atoms*: `noise2atom.metrics.detect_atoms` with the same settings for every method (probe width
  from the simulator's meta, Otsu threshold, which is invariant to a method's intensity scale),
  scored with `score_atoms` against the true positions within ``tol_px``; position error is the
  RMSE of matched pairs; false atoms are the detections inside the simulator's vacuum mask, per
  100 nm² of vacuum (every one of them is invented).

Used by every quality entry point (and `bench.learn`); writes nothing itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from noise2atom.metrics import css, detect_atoms, false_atoms_per_100nm2, psnr, score_atoms, ssim
from noise2atom.stem_sim import StemSeries

__all__ = ["DetectorSettings", "Scores", "fit_to_truth", "score_outputs", "ssim_to_truth"]


@dataclass(frozen=True, kw_only=True)
class DetectorSettings:
    """The atom detector's settings, shared by every denoiser in one comparison."""

    sigma_px: float
    tol_px: float

    @classmethod
    def from_meta(cls, meta: dict) -> "DetectorSettings":
        """Probe width from the simulator; match tolerance a quarter of the lattice pitch."""
        return cls(sigma_px=float(meta["sigma_px"]), tol_px=0.25 * float(meta["pitch_px"]))


@dataclass(kw_only=True)
class Scores:
    """Means over the scored frames (``css_curve`` is the per-pair CSS)."""

    psnr_db: float
    ssim: float
    css: float
    f1: float
    precision: float
    recall: float
    rmse_px: float
    false_per_100nm2: float
    n_false_vacuum: float
    ms_per_frame: float
    css_curve: list[float] = field(default_factory=list)

    def row(self) -> dict[str, float]:
        """The scalar scores as a flat mapping (for tables and JSON)."""
        d = dict(self.__dict__)
        d.pop("css_curve")
        return d


def fit_to_truth(out: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Least-squares affine map of ``out`` onto ``truth``'s intensity scale (a constant stays constant).

    Examples
    --------
    >>> t = np.array([[0.0, 0.5], [1.0, 0.25]])
    >>> np.allclose(fit_to_truth(3 * t + 7, t), t)
    True
    """
    o = np.asarray(out, dtype=np.float64).ravel()
    t = np.asarray(truth, dtype=np.float64).ravel()
    if o.shape != t.shape:
        raise ValueError(f"output and truth must have the same shape (got {np.shape(out)} and {np.shape(truth)})")
    oc = o - o.mean()
    var = float(oc @ oc)
    a = float(oc @ (t - t.mean())) / var if var > 0 else 0.0
    return (a * oc + t.mean()).reshape(np.shape(truth))


def ssim_to_truth(out: np.ndarray, truth: np.ndarray) -> float:
    """SSIM (data range 1) of the affinely fitted output against the truth."""
    return ssim(fit_to_truth(out, truth), truth)


def score_outputs(
    outputs: np.ndarray,
    series: StemSeries,
    *,
    detector: DetectorSettings,
    ms_per_frame: float = float("nan"),
) -> Scores:
    """Score a denoiser's (T, H, W) outputs on a scored stack.

    Parameters
    ----------
    outputs : np.ndarray
        One output per scored frame, in the method's own units.
    series : StemSeries
        The scored frames' truth: clean frames, atom positions, vacuum masks, meta.
    detector : DetectorSettings
        Atom-detector settings (the same for every method in a comparison).
    ms_per_frame : float
        The method's measured time per frame, passed through to the table.
    """
    outputs = np.asarray(outputs)
    if outputs.shape != series.clean.shape:
        raise ValueError(f"need one output per scored frame, shape {series.clean.shape} (got {outputs.shape})")
    px_nm = float(series.meta["pixel_size_nm"])
    ps, ss, f1, pr, rc, rm, fa, nfa = [], [], [], [], [], [], [], []
    for out, clean, pos, vac in zip(outputs, series.clean, series.positions, series.vacuum_masks):
        fitted = fit_to_truth(out, clean)
        ps.append(psnr(fitted, clean))
        ss.append(ssim(fitted, clean))
        found = detect_atoms(out, sigma_px=detector.sigma_px)
        sc = score_atoms(found, pos, tol_px=detector.tol_px)
        f1.append(sc.f1)
        pr.append(sc.precision)
        rc.append(sc.recall)
        rm.append(sc.rmse_px)
        if vac.any():
            fa.append(false_atoms_per_100nm2(found, vac, px_nm))
            nfa.append(fa[-1] * np.count_nonzero(vac) * px_nm**2 / 100.0)
    curve = css(outputs)

    def mean(v: list[float]) -> float:
        v = [x for x in v if np.isfinite(x)]
        return float(np.mean(v)) if v else float("nan")

    return Scores(
        psnr_db=mean(ps), ssim=mean(ss), css=float(np.mean(curve)), f1=mean(f1), precision=mean(pr),
        recall=mean(rc), rmse_px=mean(rm), false_per_100nm2=mean(fa), n_false_vacuum=mean(nfa),
        ms_per_frame=float(ms_per_frame), css_curve=[float(c) for c in curve],
    )
