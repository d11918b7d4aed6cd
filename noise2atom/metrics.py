"""Image-quality metrics: SSIM, CSS (offline and rolling), PSNR, atom-column detection and scoring.

*CSS* (consecutive structural similarity) is named in the Noise2Atom abstract, but its formula is
not published. The definition here is **ours** (design.md §3): the SSIM below between consecutive
frames after mapping them to [0, 1]. CSS alone rewards a blank or frozen output, so every quality
report pairs it with a fidelity measure (PSNR / SSIM to truth, atom F1 and position error).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize, sparse
from scipy.sparse import csgraph
from scipy.spatial import cKDTree

__all__ = [
    "AtomScore",
    "LocalMoments",
    "RollingCSS",
    "WindowGrid",
    "count_in_mask",
    "css",
    "detect_atoms",
    "false_atoms_per_100nm2",
    "psnr",
    "score_atoms",
    "ssim",
    "to_unit",
]

_SIGMA = 1.5
_TRUNCATE = 3.5  # 11-tap window for sigma 1.5, as in Wang et al. 2004 and skimage
_K1, _K2 = 0.01, 0.03
_RADIUS = int(_TRUNCATE * _SIGMA + 0.5)  # 5: the border strip left out of the mean


def _taps() -> np.ndarray:
    """The 11 normalised taps of the 1-D Gaussian window (what ``_gauss`` applies per axis)."""
    x = np.arange(-_RADIUS, _RADIUS + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / _SIGMA) ** 2)
    return w / w.sum()


_TAPS = _taps()
#: Sum of the squared 2-D window weights: the variance of white noise after the window's mean.
WINDOW_NOISE_GAIN = float(np.sum(_TAPS**2) ** 2)


def _gauss(v: np.ndarray) -> np.ndarray:
    return ndimage.gaussian_filter(v, _SIGMA, truncate=_TRUNCATE, mode="reflect")


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local Gaussian mean of ``x`` and of ``x**2``: the per-image half of SSIM's five filters."""
    return _gauss(x), _gauss(x * x)


def _ssim_from_moments(x, mx, y, my, data_range: float) -> float:
    """SSIM from each image's local moments; only the cross term ``x*y`` is filtered here."""
    r = _RADIUS
    (ux, x2), (uy, y2) = mx, my
    vx, vy = x2 - ux * ux, y2 - uy * uy
    vxy = _gauss(x * y) - ux * uy
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return float(s[r:-r, r:-r].mean(dtype=np.float64))


def _as_image(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D image (got shape {a.shape})")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ValueError(f"{name} must be numeric (got dtype {a.dtype})")
    return a.astype(np.float64, copy=False)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Mean structural similarity of two images (Wang et al. 2004).

    Gaussian window (sigma 1.5, truncated at 3.5 sigma: 11 taps, reflect borders), K1 = 0.01,
    K2 = 0.03, population covariance, border strip of 5 px excluded from the mean. Equal to
    ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=data_range)`` (computed here in float64).

    Examples
    --------
    >>> x = np.linspace(0, 1, 400).reshape(20, 20)
    >>> round(ssim(x, x), 6)
    1.0
    """
    x, y = _as_image(a, "a"), _as_image(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"images must have the same shape (got {x.shape} and {y.shape})")
    r = _RADIUS
    if min(x.shape) < 2 * r + 1:
        raise ValueError(f"images must be at least {2 * r + 1}x{2 * r + 1} for SSIM (got {x.shape})")

    mx, my = _moments(x), _moments(y)
    return _ssim_from_moments(x, mx, y, my, data_range)


def to_unit(frame: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Map ``frame`` linearly to [0, 1]: ``lo`` -> 0, ``hi`` -> 1, clipped.

    ``lo`` / ``hi`` default to the frame's min / max. A constant frame (``hi <= lo``) maps to 0.

    Examples
    --------
    >>> to_unit(np.array([[2.0, 4.0, 6.0]])).tolist()
    [[0.0, 0.5, 1.0]]
    """
    x = np.asarray(frame, dtype=np.float64)
    lo = float(np.min(x)) if lo is None else float(lo)
    hi = float(np.max(x)) if hi is None else float(hi)
    if not hi > lo:
        return np.zeros_like(x)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def css(frames: np.ndarray) -> np.ndarray:
    """Consecutive structural similarity of a sequence (our definition, design.md §3).

    The whole sequence is mapped to [0, 1] with one per-sequence min-max, then
    ``css[t - 1] = ssim(D[t], D[t - 1])`` for t = 1 .. T-1. Report the curve and its mean; pair it
    with a fidelity measure (a constant output scores 1).

    Parameters
    ----------
    frames : array (T, H, W), T >= 2

    Returns
    -------
    ndarray of float64, shape (T - 1,)
    """
    d = np.asarray(frames)
    if d.ndim != 3 or d.shape[0] < 2:
        raise ValueError(f"css needs a (T, H, W) sequence with T >= 2 (got shape {d.shape})")
    u = to_unit(d)
    return np.array([ssim(u[t], u[t - 1]) for t in range(1, len(u))])


@dataclass(frozen=True)
class LocalMoments:
    """One frame's local Gaussian moments at the centres of a :class:`WindowGrid` (float32).

    ``mean`` and ``mean_sq`` are (n_rows, n_cols); ``rows`` holds the frame rows under the windows
    in [0, 1] units, (n_rows, 11, W), so the cross term with the next frame and the guard's noise
    estimate (from the centre rows) need no second pass over the frame.
    """

    mean: np.ndarray
    mean_sq: np.ndarray
    rows: np.ndarray


class WindowGrid:
    """Where a live CSS evaluates the SSIM map: every centre of a small frame, a jittered grid on a
    large one.

    The SSIM map is the same as :func:`ssim`'s (Gaussian window 11, sigma 1.5); on frames whose
    interior (the frame without its 5 px border strip) has more than ``rows * cols`` pixels its mean is
    estimated over ``rows`` x ``cols`` window centres instead of all of them. Each centre
    row is drawn uniformly inside its own stripe of the interior (and each column likewise): a
    stratified sample, so the estimate is unbiased and no stride can alias with an atom lattice.
    The draw depends only on the shape and ``seed``, so consecutive frames of a series (and the raw
    and the denoised stream) use the same windows. The cost is that of a few passes over the
    ``rows`` x 11 frame rows under the windows, independent of the frame height (with 32 x 128
    centres about a third of a 512² frame, a sixth of a 1024² one).

    Examples
    --------
    >>> WindowGrid((48, 48)).exact, WindowGrid((512, 512)).shape_out
    (True, (32, 128))
    """

    def __init__(self, shape: tuple[int, int], rows: int = 32, cols: int = 128, seed: int = 0) -> None:
        h, w = (int(v) for v in shape)
        r = _RADIUS
        if min(h, w) < 2 * r + 1:
            raise ValueError(f"frames must be at least {2 * r + 1}x{2 * r + 1} for CSS (got {(h, w)})")
        if rows < 1 or cols < 1:
            raise ValueError(f"rows and cols must be >= 1 (got {rows}, {cols})")
        self.shape = (h, w)
        rng = np.random.default_rng([seed, h, w])
        # Every centre when there are no more of them than the sample would hold.
        self.exact = (h - 2 * r) * (w - 2 * r) <= rows * cols
        n_r, n_c = (h, w) if self.exact else (rows, cols)
        self.rows = self._centres(h - 2 * r, n_r, rng) + r
        self.cols = self._centres(w - 2 * r, n_c, rng) + r
        offsets = np.arange(-r, r + 1)
        self._row_idx = self.rows[:, None] + offsets  # (n_r, 11)
        self._col_idx = self.cols[:, None] + offsets  # (n_c, 11)
        self._taps = _TAPS.astype(np.float32)

    @staticmethod
    def _centres(interior: int, n: int, rng: np.random.Generator) -> np.ndarray:
        if interior <= n:
            return np.arange(interior)
        edges = np.linspace(0, interior, n + 1)
        return np.minimum((edges[:-1] + rng.random(n) * np.diff(edges)).astype(np.intp), interior - 1)

    @property
    def shape_out(self) -> tuple[int, int]:
        return (len(self.rows), len(self.cols))

    def rows_unit(self, frame: np.ndarray, lo: float, hi: float) -> np.ndarray:
        """The frame rows under the windows, mapped to [0, 1] with ``lo``/``hi`` (float32)."""
        band = np.asarray(frame)[self._row_idx]  # (n_r, 11, W): whole rows, a fast gather (a copy)
        u = band if band.dtype == np.float32 else band.astype(np.float32)
        if lo != 0.0 or hi != 1.0:  # outputs already in display units skip the mapping
            u -= np.float32(lo)
            u *= np.float32(1.0 / (hi - lo))
        return np.clip(u, 0.0, 1.0, out=u)

    def window_mean(self, rows: np.ndarray) -> np.ndarray:
        """Gaussian-window mean of ``rows`` (n_r, 11, W) at the grid centres: (n_r, n_c)."""
        along_rows = np.matmul(self._taps, rows)  # (n_r, W)
        return np.matmul(along_rows[:, self._col_idx], self._taps)

    def moments(self, frame: np.ndarray, lo: float, hi: float) -> LocalMoments:
        """Local mean and mean square of ``frame`` (mapped with ``lo``/``hi``) at the centres."""
        if tuple(np.shape(frame)) != self.shape:
            raise ValueError(f"frame shape must be {self.shape} (got {tuple(np.shape(frame))})")
        u = self.rows_unit(frame, lo, hi)
        return LocalMoments(mean=self.window_mean(u), mean_sq=self.window_mean(u * u), rows=u)


def _ssim_sampled(grid: WindowGrid, a: LocalMoments, b: LocalMoments, data_range: float) -> float:
    """SSIM of two frames from their moments on ``grid`` (mean of the map at the grid centres)."""
    ux, uy = a.mean.astype(np.float64), b.mean.astype(np.float64)
    vx = a.mean_sq - ux * ux
    vy = b.mean_sq - uy * uy
    vxy = grid.window_mean(a.rows * b.rows) - ux * uy
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return float(s.mean(dtype=np.float64))


class RollingCSS:
    """CSS on a live stream, one frame at a time, with a rolling mean.

    A live stream cannot know its own min-max, so each frame is mapped to [0, 1] with *fixed*
    limits given here (for the live path: the series' own input scaling for raw frames, 0..1 for
    outputs already in display units). With the same limits this equals the offline
    ``ssim(to_unit(D[t], lo, hi), to_unit(D[t-1], lo, hi))`` for each pair, exactly on frames up
    about 74² px, and as a stratified-sample estimate of the same mean over 32 x 128 window
    centres on larger ones (:class:`WindowGrid`: the cost then follows the 32 x 11 rows under
    the windows, not the frame height; ``sampled=False``: always the full map).

    Parameters
    ----------
    window : int
        Number of latest CSS values in the rolling mean.
    lo, hi : float
        Fixed mapping limits.
    sampled : bool
        Estimate the SSIM mean on a :class:`WindowGrid` (default) or use every centre.

    Attributes
    ----------
    last : LocalMoments or None
        The latest frame's moments on the sampled grid (what the fidelity guard reuses); None on
        the exact path.

    Examples
    --------
    >>> r = RollingCSS(window=2)
    >>> r.update(np.zeros((16, 16)))
    (None, None)
    >>> r.update(np.zeros((16, 16)))
    (1.0, 1.0)
    """

    def __init__(self, window: int = 10, *, lo: float = 0.0, hi: float = 1.0,
                 sampled: bool = True) -> None:
        if int(window) != window or window < 1:
            raise ValueError(f"window must be a positive integer (got {window!r})")
        if not hi > lo:
            raise ValueError(f"hi must be greater than lo (got lo={lo}, hi={hi})")
        self.window = int(window)
        self.lo, self.hi = float(lo), float(hi)
        self.sampled = bool(sampled)
        self.grid: WindowGrid | None = None
        self.last: LocalMoments | None = None
        # The previous frame and its local moments: on a stream each frame's own two filters are
        # reused for the next pair, so an update costs 3 Gaussian filters instead of 5.
        self._prev: tuple[np.ndarray, tuple[np.ndarray, np.ndarray]] | LocalMoments | None = None
        self._values: deque[float] = deque(maxlen=self.window)

    def reset(self) -> None:
        """Forget the previous frame and the window (e.g. on a new acquisition)."""
        self._prev = None
        self.last = None
        self._values.clear()

    def _grid_for(self, shape: tuple[int, ...]) -> WindowGrid | None:
        if not self.sampled:
            return None
        if self.grid is None or self.grid.shape != shape:
            self.grid = WindowGrid(shape)  # type: ignore[arg-type]
        return None if self.grid.exact else self.grid

    def update(self, frame: np.ndarray) -> tuple[float | None, float | None]:
        """Add a frame; return ``(css of this frame vs the previous, rolling mean)``.

        Both are None for the first frame (and after a change of frame shape, which restarts).
        """
        a = np.asarray(frame)
        if a.ndim != 2:
            raise ValueError(f"frame must be a 2-D image (got shape {a.shape})")
        r = _RADIUS
        if min(a.shape) < 2 * r + 1:
            raise ValueError(f"frames must be at least {2 * r + 1}x{2 * r + 1} for CSS (got {a.shape})")
        grid = self._grid_for(a.shape)
        if grid is not None:
            m = grid.moments(a, self.lo, self.hi)
            prev, self._prev, self.last = self._prev, m, m
            if not isinstance(prev, LocalMoments) or prev.rows.shape != m.rows.shape:
                self._values.clear()
                return None, None
            value = _ssim_sampled(grid, m, prev, 1.0)
        else:
            u = to_unit(_as_image(a, "frame"), self.lo, self.hi)
            mom = _moments(u)
            prev, self._prev, self.last = self._prev, (u, mom), None
            if not isinstance(prev, tuple) or prev[0].shape != u.shape:
                self._values.clear()
                return None, None
            value = _ssim_from_moments(u, mom, prev[0], prev[1], 1.0)
        self._values.append(value)
        return value, float(np.mean(self._values))


def psnr(x: np.ndarray, truth: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB (``inf`` for identical images).

    Examples
    --------
    >>> round(psnr(np.full((4, 4), 0.1), np.zeros((4, 4))), 3)
    20.0
    """
    a, b = np.asarray(x, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape (got {a.shape} and {b.shape})")
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    hist, edges = np.histogram(values, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m = np.cumsum(hist * centers)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu0 = m / w0
        mu1 = (m[-1] - m) / w1
        between = w0 * w1 * (mu0 - mu1) ** 2
    between[~np.isfinite(between)] = -1
    return float(centers[int(np.argmax(between))])


def detect_atoms(
    img: np.ndarray,
    *,
    sigma_px: float = 1.6,
    min_distance: int | None = None,
    threshold: float | None = None,
    smooth_px: float | None = None,
) -> np.ndarray:
    """Find atom columns as bright local maxima, refined to sub-pixel by centroid.

    1. Smooth lightly: Gaussian of std ``smooth_px`` (default ``sigma_px / 2``).
    2. Keep local maxima over a (2 * ``min_distance`` + 1)² neighbourhood (default
       ``min_distance = round(2 * sigma_px)``); a flat plateau counts once, at its centre.
    3. Keep maxima strictly above ``threshold`` (in the image's units). Default: Otsu's threshold
       of the smoothed image, which splits atom peaks from background / support on both sparse
       and dense images without a tuned constant. A constant image has no atoms.
    4. Refine each maximum to the intensity-weighted centroid (above the threshold) of the
       smoothed image in a window of radius ``max(1, round(sigma_px))``.

    Returns
    -------
    ndarray of float64, shape (K, 2)
        (row, col) positions.
    """
    x = _as_image(img, "img")
    if not np.all(np.isfinite(x)):
        raise ValueError("img must be finite (got NaN or inf values)")
    if sigma_px <= 0:
        raise ValueError(f"sigma_px must be > 0 (got {sigma_px})")
    md = max(1, int(round(2 * sigma_px))) if min_distance is None else int(min_distance)
    if md < 1:
        raise ValueError(f"min_distance must be >= 1 (got {min_distance})")
    sm_sigma = sigma_px / 2 if smooth_px is None else float(smooth_px)
    s = ndimage.gaussian_filter(x, sm_sigma, mode="nearest") if sm_sigma > 0 else x
    span = float(s.max() - s.min())
    if span <= 1e-12 * max(1.0, float(np.abs(s).max())):
        return np.zeros((0, 2))
    thr = _otsu(s) if threshold is None else float(threshold)
    peaks = (s == ndimage.maximum_filter(s, size=2 * md + 1, mode="nearest")) & (s > thr)
    labels, n = ndimage.label(peaks)
    if n == 0:
        return np.zeros((0, 2))
    seeds = np.array(ndimage.center_of_mass(peaks, labels, range(1, n + 1)))
    # centroid refinement in a small window, weights = smoothed intensity above the threshold
    r = max(1, int(round(sigma_px)))
    d = np.arange(-r, r + 1)
    base = np.round(seeds).astype(int)
    rows = np.clip(base[:, 0:1] + d, 0, x.shape[0] - 1)
    cols = np.clip(base[:, 1:2] + d, 0, x.shape[1] - 1)
    wts = np.clip(s[rows[:, :, None], cols[:, None, :]] - thr, 0, None)
    tot = wts.sum(axis=(1, 2))
    ok = tot > 0
    out = seeds.copy()
    out[ok, 0] = (wts[ok] * rows[ok][:, :, None]).sum(axis=(1, 2)) / tot[ok]
    out[ok, 1] = (wts[ok] * cols[ok][:, None, :]).sum(axis=(1, 2)) / tot[ok]
    return out


@dataclass(frozen=True)
class AtomScore:
    """Detection score against true positions (optimal one-to-one matching within a tolerance).

    ``precision`` is 1 when nothing was found and nothing was there, 0 when nothing was found but
    atoms were there; ``rmse_px`` is NaN without matches.
    """

    f1: float
    precision: float
    recall: float
    rmse_px: float
    n_true: int
    n_found: int
    n_false: int
    n_missed: int


def _positions(a: np.ndarray, name: str) -> np.ndarray:
    p = np.asarray(a, dtype=np.float64)
    if p.size == 0:
        return np.zeros((0, 2))
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"{name} must be an array of (row, col) positions, shape (K, 2) (got {p.shape})")
    return p


def score_atoms(
    found: np.ndarray,
    truth: np.ndarray,
    *,
    tol_px: float,
    shape: tuple[int, int] | None = None,
    border_px: float = 0.0,
) -> AtomScore:
    """Score detected positions against true ones.

    Pairs are matched one-to-one to maximise the number of matches within ``tol_px`` and, among
    those, minimise the summed distance (``scipy.optimize.linear_sum_assignment`` per connected
    group of candidate pairs, so large frames stay cheap).

    With ``shape`` and ``border_px`` > 0, matching still uses every position, but only the
    interior counts: a match counts when its true atom lies at least ``border_px`` from the
    frame edge, an unmatched found / true position when it does. This keeps the tails of atoms
    centred just outside the frame (which have no true position) from scoring as false atoms.

    Examples
    --------
    >>> s = score_atoms([[10, 10], [30, 30]], [[10.5, 10], [50, 50]], tol_px=2)
    >>> s.f1, s.precision, s.recall, s.rmse_px
    (0.5, 0.5, 0.5, 0.5)
    """
    if not tol_px > 0:
        raise ValueError(f"tol_px must be > 0 (got {tol_px})")
    f, t = _positions(found, "found"), _positions(truth, "truth")
    fi, ti, dists = _match(f, t, tol_px)
    if shape is not None and border_px > 0:
        f_in, t_in = _interior(f, shape, border_px), _interior(t, shape, border_px)
    else:
        f_in, t_in = np.ones(len(f), bool), np.ones(len(t), bool)
    return _tally(fi, ti, dists, f_in, t_in)


def _match(f: np.ndarray, t: np.ndarray, tol_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The optimal one-to-one matches within ``tol_px``: indices into ``f`` and ``t``, distances."""
    fi: list[int] = []
    ti: list[int] = []
    dists: list[float] = []
    if len(f) and len(t):
        pairs = cKDTree(f).sparse_distance_matrix(cKDTree(t), tol_px, output_type="coo_matrix")
        rows, cols, data = pairs.row, pairs.col, pairs.data  # exact zeros are kept (coo output)
        if len(rows):
            for idx in _pair_groups(rows, cols, len(f), len(t)):
                a, b, d = _assign(rows[idx], cols[idx], data[idx], big=1e6 * tol_px)
                fi.extend(a)
                ti.extend(b)
                dists.extend(d)
    return np.array(fi, dtype=int), np.array(ti, dtype=int), np.array(dists, dtype=float)


def _pair_groups(rows: np.ndarray, cols: np.ndarray, nf: int, nt: int) -> list[np.ndarray]:
    """Indices of the candidate pairs (found ``rows``, true ``cols``), one array per connected group
    of the bipartite graph (nodes 0..nf-1 found, nf..nf+nt-1 truth): each group is solved alone."""
    g = sparse.coo_matrix((np.ones(len(rows)), (rows, cols + nf)), shape=(nf + nt,) * 2)
    _, comp = csgraph.connected_components(g, directed=False)
    cr = comp[rows]
    order = np.argsort(cr, kind="stable")
    splits = np.flatnonzero(np.diff(cr[order])) + 1
    return np.split(order, splits)


def _assign(rows: np.ndarray, cols: np.ndarray, dist: np.ndarray, *,
            big: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Most matches, then least summed distance, among one group's candidate pairs (found index,
    true index, distance); a pair that is no candidate costs ``big`` and is dropped."""
    ri, ui = np.unique(rows, return_inverse=True)
    ci, vi = np.unique(cols, return_inverse=True)
    cost = np.full((len(ri), len(ci)), big)
    cost[ui, vi] = dist
    a, b = optimize.linear_sum_assignment(cost)
    ok = cost[a, b] < big
    return ri[a[ok]], ci[b[ok]], cost[a[ok], b[ok]]


def _interior(p: np.ndarray, shape: tuple[int, int], border_px: float) -> np.ndarray:
    """Which positions lie at least ``border_px`` inside a frame of ``shape``."""
    h, w = shape
    return ((p[:, 0] >= border_px) & (p[:, 0] <= h - 1 - border_px)
            & (p[:, 1] >= border_px) & (p[:, 1] <= w - 1 - border_px))


def _tally(fi: np.ndarray, ti: np.ndarray, dists: np.ndarray, f_in: np.ndarray,
           t_in: np.ndarray) -> AtomScore:
    """The score from the matches, counting only the interior (a match by its true atom)."""
    keep = t_in[ti] if len(ti) else np.zeros(0, bool)
    matched_f = np.zeros(len(f_in), bool)
    matched_f[fi] = True
    matched_t = np.zeros(len(t_in), bool)
    matched_t[ti] = True
    tp = int(keep.sum())
    n_false = int((~matched_f & f_in).sum())
    n_missed = int((~matched_t & t_in).sum())
    n_found, n_true = tp + n_false, tp + n_missed
    precision = tp / n_found if n_found else (1.0 if n_true == 0 else 0.0)
    recall = tp / n_true if n_true else 1.0
    f1 = 2 * tp / (n_found + n_true) if (n_found + n_true) else 1.0
    rmse = float(np.sqrt(np.mean(np.square(dists[keep])))) if tp else float("nan")
    return AtomScore(f1=float(f1), precision=float(precision), recall=float(recall), rmse_px=rmse,
                     n_true=n_true, n_found=n_found, n_false=n_false, n_missed=n_missed)


def count_in_mask(found: np.ndarray, mask: np.ndarray) -> int:
    """Number of positions whose nearest pixel lies inside the boolean ``mask``."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be a 2-D boolean image (got shape {m.shape})")
    p = np.round(_positions(found, "found")).astype(int)
    inside = (p[:, 0] >= 0) & (p[:, 0] < m.shape[0]) & (p[:, 1] >= 0) & (p[:, 1] < m.shape[1])
    p = p[inside]
    return int(m[p[:, 0], p[:, 1]].sum())


def false_atoms_per_100nm2(found: np.ndarray, vacuum_mask: np.ndarray, pixel_size_nm: float) -> float:
    """Atoms found in vacuum per 100 nm² of vacuum (every atom found there is invented)."""
    if not pixel_size_nm > 0:
        raise ValueError(f"pixel_size_nm must be > 0 (got {pixel_size_nm})")
    area_nm2 = float(np.count_nonzero(vacuum_mask)) * pixel_size_nm**2
    if area_nm2 == 0:
        raise ValueError("vacuum_mask has no vacuum pixels (got an all-False mask)")
    return 100.0 * count_in_mask(found, vacuum_mask) / area_nm2
