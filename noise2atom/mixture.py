"""A randomised mixture of simulated STEM series, for a bundled model that generalises.

Each series draws its own acquisition from wide ranges (:func:`draw_settings`): dose from 0.05
to 2,000 counts at an atom's peak (up to near noise-free, so the model learns to leave clean
detail alone), atoms of one brightness or of brightnesses spread down to a tenth (columns of
different atomic number), in a quarter of the series a crystal cell of unequal columns (bright
corners, a dimmer centre, faint edges: a perovskite seen along [001]), in 15 % a hexagonal lattice
(half of them honeycombs: GaN [0001], MoS2, graphene), column spacing 4-30 px with
a probe blur of 0.06-0.25 of it, crystal / particle on amorphous support / mixed scenes (all with
vacuum) and films (lattice everywhere), bright atoms (HAADF) or dark atoms on a bright background (ABF), background counts, read noise, scan-line offsets, row jitter,
detector gain and offset (and clipping at 0, as an unsigned detector without offset does).

The specimen and its truth come from :class:`noise2atom.stem_sim.StemSimulator` (its ``clean``
frames, drift included); the detector is applied here. Every series is then scaled by
:func:`noise2atom.scaling.estimate_scaling` of its own noisy frames, exactly as ``n2a-denoise``
(per file) and ``n2a-stream`` (per series) scale their input, so training and inference match.

Examples
--------
>>> s = simulate_mixture_series(np.random.default_rng(0), size=64, n_frames=2)
>>> s.noisy.shape, s.target.shape, s.noisy.dtype
((2, 64, 64), (2, 64, 64), dtype('float32'))
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from noise2atom.resample import to_model_sampling
from noise2atom.scaling import estimate_scaling, zoom_up_order
from noise2atom.stem_sim import ONE_ATOM, Basis, StemSimulator

__all__ = ["BASIS_FRACTION", "HEXAGONAL_FRACTION", "PEAK_COUNTS", "MixtureSettings", "MixtureSeries", "draw_settings", "simulate_mixture_series"]


@dataclass(frozen=True)
class MixtureSettings:
    """One series' acquisition (counts are detected electrons per pixel)."""

    scene: str
    contrast: str  # "haadf" (bright atoms) or "abf" (dark atoms on a bright background)
    peak_counts: float  # HAADF: counts at a full atom's peak; ABF: counts of the bright background
    abf_depth: float  # ABF: fraction of the background an atom's peak removes
    background_counts: float
    pitch_px: float  # the lattice cell's side (with a basis, columns sit closer: pitch / 2 or / sqrt 2)
    sigma_px: float
    rotation_deg: float
    read_noise: float  # counts
    line_noise: float  # std of a per-row additive offset, counts
    scan_jitter_px: float
    brightness_lo: float  # atoms' peak brightness is uniform in [brightness_lo, 1] of a full atom
    gain: float  # detector units per count
    offset: float  # detector units
    clip_at_zero: bool
    seed: int
    # The series as n2a's resampling hands it to the network: recorded at ``pitch_px / zoom`` and
    # zoomed by ``zoom`` (noise2atom.resample.to_model_sampling; 1 = as recorded). Zoomed frames
    # carry spatially correlated noise, which the network must know.
    zoom: float = 1.0
    basis: Basis = ONE_ATOM  # the columns of one cell (noise2atom.stem_sim.StemSimulator)
    lattice: str = "square"  # or "hexagonal" (noise2atom.stem_sim.StemSimulator)

    @property
    def spacing_px(self) -> float:
        """The distance between the nearest columns (the pitch n2a's resampling reads)."""
        return self.pitch_px / _cell_per_spacing(self.lattice, self.basis)


PEAK_COUNTS = (0.05, 2_000.0)  # counts at a full atom's peak (log-uniform)
BASIS_FRACTION = 0.25  # of the square lattices: a cell of columns of unequal brightness
# Series on a hexagonal lattice (half of them honeycombs). 30 % cost the square crystals
# (models/README.md); 15 % did not.
HEXAGONAL_FRACTION = 0.15
# Probe blur over the nearest columns' distance. Down to 0.06: zoomed to n2a's column width
# (noise2atom.scaling.MODEL_SIGMA_PX), abTEM's SrTiO3 and CeO2 have sigma ~1.1 px at a 13-14 px spacing.
SIGMA_PER_SPACING = (0.06, 0.25)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def draw_settings(rng: np.random.Generator) -> MixtureSettings:
    """Random acquisition settings spanning the microscopes the bundled model should cover."""
    pitch = _log_uniform(rng, 4.0, 30.0)  # spacing of the nearest columns
    peak = _log_uniform(rng, *PEAK_COUNTS)
    lattice, basis = _draw_cell(rng)
    cell = pitch * _cell_per_spacing(lattice, basis)
    contrast = "abf" if rng.random() < 0.3 else "haadf"
    offset_kind = rng.integers(4)
    offset = [0.0, rng.uniform(10, 500), rng.uniform(1_000, 20_000), -rng.uniform(10, 2_000)][offset_kind]
    return MixtureSettings(
        scene=str(rng.choice(["crystal", "nanoparticle", "mixed", "film"])),
        contrast=contrast,
        peak_counts=peak,
        abf_depth=float(rng.uniform(0.25, 0.8)),
        background_counts=float(peak * rng.uniform(0.0, 0.1)),
        pitch_px=float(cell),
        sigma_px=float(max(0.6, pitch * _log_uniform(rng, *SIGMA_PER_SPACING))),
        rotation_deg=float(rng.uniform(0, 90)),
        read_noise=float(rng.choice([0.0, rng.uniform(0, 0.3), rng.uniform(0.3, 1.5)])),
        line_noise=float(rng.choice([0.0, 0.0, rng.uniform(0, 0.15) * np.sqrt(peak) + rng.uniform(0, 0.1)])),
        scan_jitter_px=float(rng.choice([0.0, rng.uniform(0, 0.3), rng.uniform(0.3, 0.8)])),
        brightness_lo=0.9 if rng.random() < 0.4 else _log_uniform(rng, 0.1, 0.9),
        gain=_log_uniform(rng, 0.5, 2_000.0),
        offset=float(offset),
        clip_at_zero=bool(offset_kind == 0 and rng.random() < 0.7),
        seed=int(rng.integers(2**31)),
        zoom=_draw_zoom(rng, pitch),
        basis=basis,
        lattice=lattice,
    )


def _cell_per_spacing(lattice: str, basis: Basis) -> float:
    """A cell's side over its nearest-column distance, for the cells :func:`_draw_cell` draws:
    square with corners alone 1, corners and centre sqrt 2, with edge columns too 2; hexagonal
    with one column 1, a honeycomb sqrt 3."""
    if lattice == "hexagonal":
        return 1.0 if len(basis) == 1 else float(np.sqrt(3))
    return {1: 1.0, 2: float(np.sqrt(2)), 4: 2.0}[len(basis)]


def _draw_cell(rng: np.random.Generator) -> tuple[str, Basis]:
    """``(lattice, basis)``. ``HEXAGONAL_FRACTION``: a hexagonal lattice, of one column per cell or
    a honeycomb whose second column is 0.3-1 of the first. Else a square lattice of one atom per
    cell, or (``BASIS_FRACTION``) a perovskite-like cell: a full corner column, a centre column at
    0.3-0.9 of it and, in most, faint edge columns at 0.05-0.5. Dim columns then sit where a
    crystal puts them, rather than anywhere the noise suggests."""
    if rng.random() < HEXAGONAL_FRACTION:
        if rng.random() < 0.5:
            return "hexagonal", ONE_ATOM
        return "hexagonal", ((0.0, 0.0, 1.0), (1 / 3, 1 / 3, float(rng.uniform(0.3, 1.0))))
    if rng.random() >= BASIS_FRACTION:
        return "square", ONE_ATOM
    cell = [(0.0, 0.0, 1.0), (0.5, 0.5, float(rng.uniform(0.3, 0.9)))]
    if rng.random() < 0.7:
        edge = float(rng.uniform(0.05, 0.5))
        cell += [(0.5, 0.0, edge), (0.0, 0.5, edge)]
    return "square", tuple(cell)


def _draw_zoom(rng: np.random.Generator, pitch: float) -> float:
    """Half the series as recorded; a quarter zoomed up (x1.1-2, as abTEM-like fine columns are),
    a quarter zoomed down (x0.5-0.9). The recorded pitch stays above 2.5 px."""
    u = rng.random()
    if u < 0.5:
        return 1.0
    if u < 0.75:
        return float(min(rng.uniform(1.1, 2.0), pitch / 2.5))
    return float(rng.uniform(0.5, 0.9))


@dataclass
class MixtureSeries:
    """A scaled series: ``noisy`` and ``target`` in the network's units (``target`` is the
    noiseless expected detector value, scaled the same way), not clipped."""

    noisy: np.ndarray
    target: np.ndarray
    clean: np.ndarray
    lo: float
    hi: float
    settings: MixtureSettings

    @property
    def meta(self) -> dict[str, Any]:
        return dict(asdict(self.settings), lo=self.lo, hi=self.hi)


def _jitter_rows(img: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Shift each row along x by a sub-pixel amount (linear interpolation, edge held)."""
    w = img.shape[1]
    x = np.arange(w, dtype=np.float32)[None, :] + shift[:, None]
    x = np.clip(x, 0, w - 1)
    i0 = np.floor(x).astype(np.int64)
    i1 = np.minimum(i0 + 1, w - 1)
    f = (x - i0).astype(np.float32)
    rows = np.arange(img.shape[0])[:, None]
    return img[rows, i0] * (1 - f) + img[rows, i1] * f


def simulate_mixture_series(rng: np.random.Generator, *, size: int = 192, n_frames: int = 2,
                            settings: MixtureSettings | None = None) -> MixtureSeries:
    """One series of ``n_frames`` square frames with random (or given) settings."""
    s = settings or draw_settings(rng)
    rec = size if s.zoom == 1.0 else int(np.ceil((size + 2) / s.zoom)) + 1  # recorded side
    sim = StemSimulator(shape=(rec, rec), scene=s.scene, pitch_px=s.pitch_px / s.zoom,
                        sigma_px=max(0.35, s.sigma_px / s.zoom),
                        rotation_deg=s.rotation_deg, drift_px_per_frame=0.3, scan_jitter_px=0.0,
                        site_brightness=(s.brightness_lo, 1.0), basis=s.basis, lattice=s.lattice, seed=s.seed)
    clean = np.stack([sim.frame(t).clean for t in range(n_frames)]).astype(np.float32)
    if s.contrast == "haadf":
        lam = s.background_counts + s.peak_counts * clean
    else:
        lam = s.peak_counts * (1 - s.abf_depth * clean) + s.background_counts
    noisy = np.empty_like(lam)
    for t in range(n_frames):
        expected = lam[t]
        if s.scan_jitter_px > 0:
            expected = _jitter_rows(expected, rng.normal(0, s.scan_jitter_px, rec).clip(-2, 2))
        f = rng.poisson(np.maximum(expected, 0)).astype(np.float32)
        if s.read_noise > 0:
            f += np.float32(s.read_noise) * rng.standard_normal(f.shape, dtype=np.float32)
        if s.line_noise > 0:
            f += np.float32(s.line_noise) * rng.standard_normal((rec, 1), dtype=np.float32)
        f = f * np.float32(s.gain) + np.float32(s.offset)
        if s.clip_at_zero:
            f = np.maximum(f, 0)
        noisy[t] = np.rint(f) if s.gain >= 1 else f
    expected_raw = lam * np.float32(s.gain) + np.float32(s.offset)
    norm = estimate_scaling(noisy)
    scale = np.float32(2.0 / (norm.hi - norm.lo))
    noisy = ((noisy - np.float32(norm.lo)) * scale - 1).astype(np.float32)
    target = ((expected_raw - np.float32(norm.lo)) * scale - 1).astype(np.float32)
    if s.zoom != 1.0:  # scaled as recorded, then zoomed: the order n2a-stream and n2a-denoise use
        order = zoom_up_order(noisy[0])  # decided from the noisy series, as the tools decide
        noisy, target, clean = (_zoomed(a, s.zoom, size, order) for a in (noisy, target, clean))
    return MixtureSeries(noisy=noisy, target=target, clean=clean, lo=norm.lo, hi=norm.hi, settings=s)


def _zoomed(frames: np.ndarray, zoom: float, size: int, up_order: int) -> np.ndarray:
    return np.stack([to_model_sampling(f, zoom, up_order=up_order)[:size, :size] for f in frames]).astype(np.float32)


class MixtureData:
    """Training data for ``n2a-train --mixture``: a bank of random series, refreshed as it trains.

    Quacks like :class:`noise2atom.train_data.TrainingData` (``sample``, ``normalisation``,
    ``fingerprint``, ``counts`` ...). Each step replaces ``refresh`` series of the bank with new
    draws, so a long run sees thousands of acquisitions. ``normalisation`` is nominal: every
    series has its own scaling (its lo/hi are in ``fingerprint.meta``'s ranges).
    """

    def __init__(self, *, n_series: int = 192, size: int = 192, n_frames: int = 2, seed: int = 0,
                 refresh: int = 1) -> None:
        from noise2atom.checkpoint import DataFingerprint, Normalisation

        if n_series < 1 or size < 16 or n_frames < 1:
            raise ValueError(f"need n_series >= 1, size >= 16, n_frames >= 1 (got {n_series}, {size}, {n_frames})")
        self.size, self.n_frames_per_series, self.refresh = size, n_frames, refresh
        self._rng = np.random.default_rng([seed, 0x313C])
        self.bank = [simulate_mixture_series(self._rng, size=size, n_frames=n_frames) for _ in range(n_series)]
        self.normalisation = Normalisation(lo=-1.0, hi=1.0)  # series are already scaled
        self.counts = None
        self.sources = [f"mixture:{n_series}x{n_frames}x{size}x{size}:seed{seed}"]
        self.frame_shapes = [(size, size)]
        self.fingerprint = DataFingerprint(
            sha256=f"mixture-seed{seed}-n{n_series}-f{n_frames}-s{size}", shapes=[[n_series, n_frames, size, size]],
            sources=self.sources,
            meta={"simulator": "noise2atom.mixture", "scaling": "estimate_scaling per series (0.1/99.9 percentiles)",
                  "peak_counts": list(PEAK_COUNTS), "site_brightness": [0.1, 1.0], "pitch_px": [4.0, 30.0],
                  "basis": f"{BASIS_FRACTION:.0%} perovskite-like cells, columns 0.05-1",
                  "lattice": f"{HEXAGONAL_FRACTION:.0%} hexagonal (half honeycombs, second column 0.3-1)",
                  "contrast": ["haadf", "abf"],
                  "scenes": ["crystal", "nanoparticle", "mixed", "film"], "gain": [0.5, 2000.0],
                  "offset": [-2000.0, 20000.0]})

    @property
    def n_frames(self) -> int:
        return len(self.bank) * self.n_frames_per_series

    def _refresh(self) -> None:
        for _ in range(self.refresh):
            i = int(self._rng.integers(len(self.bank)))
            self.bank[i] = simulate_mixture_series(self._rng, size=self.size, n_frames=self.n_frames_per_series)

    def sample_pairs(self, batch: int, patch: int, rng: np.random.Generator, *,
                     flips: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(noisy, target) patches, (batch, 1, patch, patch) float32, unclipped."""
        self._refresh()
        x = np.empty((batch, 1, patch, patch), np.float32)
        y = np.empty_like(x)
        for i in range(batch):
            s = self.bank[rng.integers(len(self.bank))]
            t = rng.integers(len(s.noisy))
            r, c = rng.integers(self.size - patch + 1), rng.integers(self.size - patch + 1)
            a, b = s.noisy[t, r:r + patch, c:c + patch], s.target[t, r:r + patch, c:c + patch]
            if flips and rng.random() < 0.5:
                a, b = a[::-1], b[::-1]
            if flips and rng.random() < 0.5:
                a, b = a[:, ::-1], b[:, ::-1]
            x[i, 0], y[i, 0] = a, b
        return x, y

    def sample(self, batch: int, patch: int, rng: np.random.Generator, *,
               consecutive: bool = False, flips: bool = False) -> np.ndarray:
        """Noisy patches only (blind-spot training)."""
        return self.sample_pairs(batch, patch, rng, flips=flips)[0]

    def preview_frame(self, max_side: int = 256) -> np.ndarray:
        return self.bank[0].noisy[0, :max_side, :max_side]
