"""Material n2a did not make, turned into scored series for `bench.quality.external`.

- abTEM fields (`bench/data/abtem_*.npz`, simulated once by `bench.quality.abtem_fields`): shifted by a
  sub-pixel drift, cropped, Poisson noise per frame at a given mean dose (counts/px); true atom
  columns projected from the structure.
- Third-party simulations in ``../shared/data/simulated/`` (tk_r_em noisy/clean pairs; the temul
  MoS2 PRISM image, to which Poisson noise is added the same way as to the abTEM fields).
- Real images in ``../shared/data/real/`` (no truth).

Measures nothing itself: it loads and prepares the data `bench.quality.external` scores.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from bench.harness import ROOT

ABTEM_DATA = ROOT / "bench" / "data"


def _shared_data() -> Path:
    """``../shared/data`` beside the checkout (CI), else beside its parent (a worktree under
    ``/work/wt/``); ``$N2A_SHARED_DATA`` overrides."""
    env = os.environ.get("N2A_SHARED_DATA")
    if env:
        return Path(env)
    for base in (ROOT.parent, ROOT.parent.parent):
        if (base / "shared" / "data").is_dir():
            return base / "shared" / "data"
    return ROOT.parent / "shared" / "data"


SHARED_DATA = _shared_data()

__all__ = ["ABTEM_DATA", "SHARED_DATA", "Series", "abtem_fields", "drift_series", "load_real_images",
           "load_temul_mos2", "load_tk_pairs", "nearest_spacing"]


@dataclass(kw_only=True)
class Series:
    """Frames to denoise with their truth (``clean`` None for real data)."""

    name: str
    noisy: np.ndarray                     # (T, H, W) raw values
    clean: np.ndarray | None = None       # (T, H, W) expected values, same units as noisy
    positions: list[np.ndarray] | None = None  # per frame (K, 2) true (row, col), or None
    sigma_px: float = 1.5                 # atom detector's probe width
    tol_px: float = 2.0                   # match tolerance
    gain: float | None = 1.0              # detector units per count (None: unknown)
    offset: float = 0.0
    meta: dict = field(default_factory=dict)


def nearest_spacing(columns: np.ndarray) -> float:
    """Median nearest-neighbour distance between column positions (px)."""
    d, _ = cKDTree(columns).query(columns, k=2)
    return float(np.median(d[:, 1]))


def abtem_fields(names: list[str] | None = None) -> dict[str, dict]:
    """The simulated abTEM fields saved in the repository: name -> {field, columns, params}."""
    out = {}
    for path in sorted(ABTEM_DATA.glob("abtem_*.npz")):
        name = path.stem.removeprefix("abtem_")
        if names and name not in names:
            continue
        with np.load(path) as z:
            out[name] = {"field": z["field"].astype(np.float32), "columns": z["columns"].astype(np.float64),
                         "params": json.loads(str(z["params"]))}
    return out


def drift_series(clean_field: np.ndarray, *, dose: float, n_frames: int, crop: int, seed: int,
                 periodic: bool, columns: np.ndarray | None = None, drift_px: float = 0.6,
                 name: str = "", **kw) -> Series:
    """A drifting series: frame k is the field shifted by k * drift (random direction, sub-pixel
    jitter), cropped at the centre, with independent Poisson noise at ``dose`` mean counts/px.

    ``periodic``: the field is one periodic cell (abTEM), so shifts wrap exactly and column images
    across the cell edge count; otherwise edge pixels are repeated (keep a margin > total drift).
    """
    f = np.asarray(clean_field, dtype=np.float64)
    h, w = f.shape
    if crop > min(h, w):
        raise ValueError(f"crop {crop} larger than the field {f.shape}")
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi)
    v = drift_px * np.array([np.cos(angle), np.sin(angle)])
    r0, c0 = (h - crop) // 2, (w - crop) // 2
    scale = dose / f[r0:r0 + crop, c0:c0 + crop].mean()
    noisy, clean, positions = [], [], []
    for k in range(n_frames):
        s = k * v + rng.normal(0, 0.1, 2)
        sh = ndimage.shift(f, s, order=3, mode="grid-wrap" if periodic else "nearest")
        lam = np.clip(sh[r0:r0 + crop, c0:c0 + crop], 0, None) * scale
        clean.append(lam.astype(np.float32))
        noisy.append(rng.poisson(lam).astype(np.float32))
        if columns is not None:
            p = columns + s
            if periodic:
                p = np.concatenate([p + (dy, dx) for dy in (-h, 0, h) for dx in (-w, 0, w)])
            p = p - (r0, c0)
            inside = (p[:, 0] > -3) & (p[:, 0] < crop + 2) & (p[:, 1] > -3) & (p[:, 1] < crop + 2)
            positions.append(p[inside])
    return Series(name=name, noisy=np.stack(noisy), clean=np.stack(clean),
                  positions=positions if columns is not None else None, gain=1.0, offset=0.0,
                  meta={"dose_counts_per_px": dose, "drift_px_per_frame": drift_px, "seed": seed}, **kw)


def _require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"shared evaluation data missing: expected {path} (see /work/shared/data/README.md)")
    return path


def load_tk_pairs(root: Path = SHARED_DATA) -> tuple[np.ndarray, np.ndarray]:
    """tk_r_em simulated HR-STEM pairs: (8, 256, 256) noisy ``x`` and clean ``y``, shown ``[i, 0].T``."""
    import h5py

    with h5py.File(_require(root / "simulated" / "tk_r_em_sfr_hrstem_pairs.h5"), "r") as f:
        x, y = f["x"][:, 0], f["y"][:, 0]
    return (np.ascontiguousarray(x.transpose(0, 2, 1), dtype=np.float32),
            np.ascontiguousarray(y.transpose(0, 2, 1), dtype=np.float32))


def load_temul_mos2(root: Path = SHARED_DATA, bin_by: int = 2) -> np.ndarray:
    """The temul noise-free MoS2 PRISM image (773, 1182), binned ``bin_by`` x ``bin_by``."""
    from rsciio.hspy import file_reader

    a = np.asarray(file_reader(str(_require(root / "simulated" / "temul_MoS2_prismatic_sim.hspy")))[0]["data"],
                   dtype=np.float64)
    h, w = (s // bin_by * bin_by for s in a.shape)
    return a[:h, :w].reshape(h // bin_by, bin_by, w // bin_by, bin_by).mean(axis=(1, 3)).astype(np.float32)


def load_real_images(root: Path = SHARED_DATA) -> list[tuple[str, np.ndarray, str]]:
    """The real images: (name, float32 image, note). ABF is inverted? No: kept as recorded (dark atoms)."""
    import h5py
    from rsciio.hspy import file_reader

    out = []
    with h5py.File(_require(root / "real" / "tk_r_em_exp_hrstem.h5"), "r") as f:
        x = f["x"][:, 0]
    for i in range(x.shape[0]):
        out.append((f"tk_r_em_exp_hrstem[{i}]", np.ascontiguousarray(x[i].T, dtype=np.float32),
                    "HR-STEM, rescaled 0..~50,000"))
    abf = file_reader(str(_require(root / "real" / "atomap014_SrTiO3_110_ABF.hdf5")))[0]["data"]
    out.append(("atomap SrTiO3 [110] ABF", np.asarray(abf, dtype=np.float32), "ABF: atoms dark on bright"))
    return out
