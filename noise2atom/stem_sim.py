"""STEM image-series simulator: noisy frames together with their ground truth.

Used by the tests, the demo, the replay source and the benchmarks. A scene is laid out once
in "world" pixel coordinates (the frame at t = 0); frame ``t`` looks at it through a slowly
drifting scan window, with a few atoms at cluster / hole surfaces coming and going.

Image formation, in this order:

1. *Specimen*: atom columns (crystal lattice with vacancies, a compact cluster, a few adatoms)
   rendered as Gaussian blobs of std ``sigma_px`` (the probe), plus a weak amorphous support
   texture under the cluster.
2. *Clean frame*: that noiseless intensity divided by a fixed scale (a full atom's peak plus the
   support's ceiling), clipped to [0, 1]. The scale never changes, so clean frames compare over
   time (no per-frame min-max). Scan-line jitter is *not* in the clean frame: the truth is the
   undistorted specimen.
3. *Noisy frame*: each scan row is shifted along the fast scan direction (x) by a random
   sub-pixel offset (linear interpolation), scaled to expected counts
   (``background_counts + peak_counts * intensity``), Poisson-sampled, plus Gaussian read noise
   (in counts), then converted to detector units ``offset_adu + gain * counts`` as uint16.

Everything random is a pure function of ``(seed, t)``: frames can be accessed in any order and
are identical each time.

Examples
--------
>>> sim = StemSimulator(shape=(64, 96), scene="crystal", seed=1)
>>> f = sim.frame(3)
>>> f.noisy.shape, f.noisy.dtype, f.clean.dtype, f.positions.shape[1]
((64, 96), dtype('uint16'), dtype('float32'), 2)
>>> bool(np.array_equal(sim.frame(3).noisy, f.noisy))
True
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
from scipy import ndimage

__all__ = ["ONE_ATOM", "SCENES", "SimFrame", "StemSeries", "StemSimulator", "simulate_series"]

Scene = Literal["nanoparticle", "crystal", "mixed", "film"]
Basis = tuple[tuple[float, float, float], ...]  # (u, v, brightness) of each column in a cell
Lattice = Literal["square", "hexagonal"]
ONE_ATOM: Basis = ((0.0, 0.0, 1.0),)
SCENES: tuple[str, ...] = get_args(Scene)  # what the CLIs offer

_E_CHARGE = 1.602176634e-19
_SUPPORT_LEVEL = 0.12  # mean support intensity relative to a full atom's peak
_SUPPORT_MAX = 0.25  # ceiling of the support texture (part of the fixed clean scale)
_DRIFT_PERIOD = 400.0  # frames; drift is a bounded slow wander, so endless streams stay in view


@dataclass(frozen=True)
class SimFrame:
    """One simulated frame.

    Attributes
    ----------
    noisy : ndarray of uint16, shape (H, W)
        Detector frame (ADU).
    clean : ndarray of float32, shape (H, W)
        Noiseless specimen intensity in [0, 1] (fixed scale, no scan jitter).
    positions : ndarray of float, shape (K, 2)
        True atom-column centres (row, col) inside the frame, in pixels.
    vacuum_mask : ndarray of bool, shape (H, W)
        Pixels farther than a few blob widths from any atom or support.
    """

    noisy: np.ndarray
    clean: np.ndarray
    positions: np.ndarray
    vacuum_mask: np.ndarray


@dataclass(frozen=True)
class StemSeries:
    """A simulated series: stacked :class:`SimFrame` fields plus the acquisition ``meta``."""

    noisy: np.ndarray
    clean: np.ndarray
    positions: list[np.ndarray]
    vacuum_masks: np.ndarray
    meta: dict[str, Any]


def _hash_uniform(*keys: np.ndarray | int) -> np.ndarray:
    """Uniform [0, 1) numbers from integer keys (splitmix64), vectorised and order-free."""
    h = np.zeros(np.broadcast(*[np.asarray(k) for k in keys]).shape, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in keys:
            h = h ^ np.asarray(k).astype(np.uint64)
            h = h + np.uint64(0x9E3779B97F4A7C15)
            h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            h = h ^ (h >> np.uint64(31))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _render_blobs(shape: tuple[int, int], pos: np.ndarray, amp: np.ndarray, sigma: float) -> np.ndarray:
    """Sum of Gaussian blobs (peak ``amp``), each rendered separably in a small local window.

    The windows are accumulated with one ``bincount`` into a canvas padded so that no index needs
    a bounds check, then cropped (several times faster than masking out-of-frame taps).
    """
    h, w = shape
    r = int(math.ceil(3.5 * sigma))
    p = 2 * r + 1
    keep = (pos[:, 0] > -r) & (pos[:, 0] < h + r) & (pos[:, 1] > -r) & (pos[:, 1] < w + r)
    pos, amp = pos[keep], amp[keep]
    d = np.arange(-r, r + 1)
    base = np.floor(pos).astype(np.int64)
    rows = base[:, 0:1] + d  # (K, n)
    cols = base[:, 1:2] + d
    gy = np.exp(-((rows - pos[:, 0:1]) ** 2) / (2 * sigma**2)) * amp[:, None]
    gx = np.exp(-((cols - pos[:, 1:2]) ** 2) / (2 * sigma**2))
    vals = gy[:, :, None] * gx[:, None, :]
    wp = w + 2 * p
    idx = (rows[:, :, None] + p) * wp + (cols[:, None, :] + p)
    out = np.bincount(idx.ravel(), weights=vals.ravel(), minlength=(h + 2 * p) * wp)
    out = out.astype(np.float64, copy=False)  # without any blob, bincount returns int64
    return out.reshape(h + 2 * p, wp)[p:p + h, p:p + w].copy()


def _lattice(center: np.ndarray, extent: float, pitch: float, rot_deg: float,
             basis: Basis = ONE_ATOM, lattice: Lattice = "square") -> tuple[np.ndarray, np.ndarray]:
    """Sites (row, col) of a square or hexagonal lattice through ``center`` covering a disc of
    radius ``extent``, and each site's brightness: one site per ``(u, v, brightness)`` of ``basis``
    in every cell."""
    hexagonal = lattice == "hexagonal"
    n = int(math.ceil(extent / (pitch * (math.sqrt(3) / 2 if hexagonal else 1.0)))) + 1
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    th = math.radians(rot_deg)
    # lattice vectors a1 = pitch (cos, sin) along x; a2 perpendicular (square) or at 60 deg
    # (hexagonal); (row, col) order. The square case keeps its own formula, bit for bit.
    c2, s2 = (math.cos(th + math.pi / 3), math.sin(th + math.pi / 3)) if hexagonal else (-math.sin(th), math.cos(th))
    sites, weight = [], []
    for u, v, b in basis:  # (u, v): fractions of the cell along a1 and a2
        x = pitch * ((i + u) * math.cos(th) + (j + v) * c2)
        y = pitch * ((i + u) * math.sin(th) + (j + v) * s2)
        s = np.stack([y.ravel(), x.ravel()], axis=1) + center
        keep = np.hypot(*(s - center).T) <= extent
        sites.append(s[keep])
        weight.append(np.full(int(keep.sum()), float(b)))
    return np.concatenate(sites), np.concatenate(weight)


def _wavy_radius(angles: np.ndarray, r0: float, rng: np.random.Generator) -> np.ndarray:
    """A random blob outline: radius as a low-order Fourier series in the polar angle."""
    rad = np.full_like(angles, r0, dtype=np.float64)
    for k in (2, 3, 4):
        rad += r0 * rng.uniform(0.03, 0.10) * np.cos(k * angles + rng.uniform(0, 2 * np.pi))
    return rad


def _checked_settings(shape: tuple[int, int], scene: str, greater_than: list[tuple[str, float, float]],
                      non_negative: list[tuple[str, float]]) -> tuple[int, int]:
    """``(H, W)`` from ``shape``, after checking it, ``scene`` and the numeric settings."""
    h, w = (int(v) for v in shape)
    if h < 8 or w < 8:
        raise ValueError(f"shape must be at least 8x8 (got {tuple(shape)})")
    if scene not in SCENES:
        raise ValueError(f"scene must be one of {', '.join(map(repr, SCENES))} (got {scene!r})")
    for name, val, lo in greater_than:
        if not val > lo:
            raise ValueError(f"{name} must be > {lo} (got {val})")
    for name, val in non_negative:
        if not val >= 0:
            raise ValueError(f"{name} must be >= 0 (got {val})")
    return h, w


class _World:
    """A scene being laid out on the world canvas (the frame at t = 0 plus a margin ``pad``).

    Collects atom sites with their presence probability (1.0: static), every site that may hold an
    atom (vacancies too: they are matter, not vacuum) and the support mask. Each layout step draws
    from ``rng`` in a fixed order, so a seed always gives the same scene.
    """

    def __init__(self, shape: tuple[int, int], pad: int, pitch: float, rotation_deg: float,
                 rng: np.random.Generator, basis: Basis = ONE_ATOM, lattice: Lattice = "square") -> None:
        self.h, self.w = shape
        self.pad = p = pad
        self.shape = (self.h + 2 * p, self.w + 2 * p)  # world (r, c) = frame (r, c) at t=0 + p
        self.pitch, self.rotation_deg, self.rng, self.basis, self.lattice = pitch, rotation_deg, rng, basis, lattice
        self.rr, self.cc = np.mgrid[0:self.shape[0], 0:self.shape[1]].astype(np.float64)
        self.support = np.zeros(self.shape, dtype=bool)
        self.sites: list[np.ndarray] = []
        self.prob: list[np.ndarray] = []
        self.weight: list[np.ndarray] = []  # brightness from the basis (1: a full atom)
        self.occupiable: list[np.ndarray] = []

    def add(self, s: np.ndarray, prob: np.ndarray, weight: np.ndarray | None = None) -> None:
        self.sites.append(s[prob > 0])
        self.prob.append(prob[prob > 0])
        self.weight.append(np.ones(int((prob > 0).sum())) if weight is None else weight[prob > 0])
        self.occupiable.append(s)

    def wavy_line(self, amp: float, k: float) -> np.ndarray:
        """A random wavy offset per world row (for an edge running top to bottom)."""
        phase = self.rng.uniform(0, 6.3)
        return amp * np.sin(k * self.rr / max(self.h, self.w) * 2 * np.pi + phase)

    def crystal(self, region: np.ndarray, hole_c: np.ndarray | None, hole_r: float) -> None:
        """Lattice sites inside ``region`` (bool world mask), vacancies, a hole with a live edge."""
        wh, ww = self.shape
        s, wt = _lattice(np.array([wh / 2, ww / 2]) + self.rng.uniform(0, self.pitch, 2),
                         math.hypot(wh, ww) / 2 + self.pitch, self.pitch, self.rotation_deg, self.basis,
                         self.lattice)
        ri = np.clip(np.round(s).astype(int), 0, [wh - 1, ww - 1])
        inside = region[ri[:, 0], ri[:, 1]]
        s, wt = s[inside], wt[inside]
        prob = np.where(self.rng.random(len(s)) < 0.03, 0.0, 1.0)  # static vacancies
        if hole_c is not None:
            d = np.hypot(*(s - hole_c).T)
            outside = d >= hole_r - 0.75 * self.pitch  # sites in the hole are vacuum
            s, prob, d, wt = s[outside], prob[outside], d[outside], wt[outside]
            edge = d < hole_r + 0.75 * self.pitch
            prob[edge & (d < hole_r)] = 0.3  # rim sites: mostly empty, sometimes filled
            prob[edge & (d >= hole_r) & (prob > 0)] = 0.85  # edge atoms: sometimes leave
        self.add(s, prob, wt)

    def cluster(self, center: np.ndarray, radius: float, rot_offset: float = 0.0) -> None:
        """A compact grain with a wavy outline: a static core, a flickering rim and shell."""
        s, wt = _lattice(center, radius + 2 * self.pitch, self.pitch, self.rotation_deg + rot_offset, self.basis,
                         self.lattice)
        rel = s - center
        ang = np.arctan2(rel[:, 0], rel[:, 1])
        outline = _wavy_radius(ang, radius, self.rng)
        d = np.hypot(*rel.T)
        inside = d <= outline
        core = d <= outline - self.pitch
        shell = (~inside) & (d <= outline + self.pitch)
        prob = np.where(core, 1.0, np.where(inside, 0.85, np.where(shell, 0.12, 0.0)))
        self.add(s, prob, wt)

    def adatoms(self, region: np.ndarray, n: int, avoid: np.ndarray) -> None:
        """Up to ``n`` lone atoms inside ``region``, at least 3 pitches from ``avoid``."""
        p, h, w = self.pad, self.h, self.w
        cand = np.stack([self.rng.uniform(p, p + h, 4 * n), self.rng.uniform(p, p + w, 4 * n)], axis=1)
        ri = np.round(cand).astype(int)
        ok = region[ri[:, 0], ri[:, 1]]
        if len(avoid):
            dmin = np.min(np.hypot(*(cand[:, None, :] - avoid[None]).transpose(2, 0, 1)), axis=1)
            ok &= dmin > 3 * self.pitch
        cand = cand[ok][:n]
        self.add(cand, np.full(len(cand), 0.9))


def _layout_crystal(world: _World) -> None:
    """A lattice filling the world, with a vacuum hole whose edge atoms come and go."""
    h, w, p, rng = world.h, world.w, world.pad, world.rng
    hole_c = np.array([p + rng.uniform(0.35, 0.65) * h, p + rng.uniform(0.35, 0.65) * w])
    hole_r = max(0.18 * min(h, w), 2.5 * world.pitch)
    world.crystal(np.ones(world.shape, bool), hole_c, hole_r)


def _layout_nanoparticle(world: _World) -> None:
    """A cluster and a few adatoms on a support that ends in vacuum near the right."""
    h, w, p, rng = world.h, world.w, world.pad, world.rng
    edge = p + 0.82 * w + world.wavy_line(0.04 * w, 1.5)  # support ends at a wavy line near the right
    world.support |= world.cc < edge
    center = np.array([p + rng.uniform(0.4, 0.55) * h, p + rng.uniform(0.35, 0.5) * w])
    world.cluster(center, max(0.2 * min(h, w), 2.5 * world.pitch))
    world.adatoms(world.support & (world.cc < edge - 3 * world.pitch), max(2, (h * w) // 20000),
                  np.concatenate(world.sites))


def _layout_mixed(world: _World) -> None:
    """Crystal on the left, vacuum in the middle, a cluster (another grain) on support on the right."""
    h, w, p = world.h, world.w, world.pad
    cedge = p + 0.35 * w + world.wavy_line(0.03 * w, 1.0)
    world.crystal(world.cc < cedge, None, 0.0)
    sedge = p + 0.55 * w + world.wavy_line(0.03 * w, 1.3)
    world.support |= world.cc > sedge
    center = np.array([p + 0.5 * h, p + 0.78 * w])
    world.cluster(center, max(0.13 * min(h, w), 2.5 * world.pitch), rot_offset=15.0)  # another grain


def _layout_film(world: _World) -> None:
    """A crystal filling the whole field (a film seen end on): no vacuum, a few vacancies."""
    world.crystal(np.ones(world.shape, bool), None, 0.0)


_LAYOUTS = {"crystal": _layout_crystal, "nanoparticle": _layout_nanoparticle, "mixed": _layout_mixed,
            "film": _layout_film}


def _support_texture(support: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smooth random support intensity at atomic and larger scales, with a soft edge."""
    tex = ndimage.gaussian_filter(rng.standard_normal(support.shape), 1.2) * 4.0
    tex += ndimage.gaussian_filter(rng.standard_normal(support.shape), 6.0) * 8.0
    level = _SUPPORT_LEVEL * (1 + 0.35 * tex)
    soft = ndimage.gaussian_filter(support.astype(np.float64), 2.0)
    return np.clip(level, 0, _SUPPORT_MAX) * soft


def _vacuum_mask(support: np.ndarray, occupiable: list[np.ndarray], margin: float) -> np.ndarray:
    """Pixels farther than ``margin`` from the support and from every site that may hold an atom."""
    wh, ww = support.shape
    matter = support.copy()
    si = np.round(np.concatenate(occupiable)).astype(int) if occupiable else np.zeros((0, 2), int)
    ok = (si[:, 0] >= 0) & (si[:, 0] < wh) & (si[:, 1] >= 0) & (si[:, 1] < ww)
    matter[si[ok, 0], si[ok, 1]] = True
    return ndimage.distance_transform_edt(~matter) > margin


def _checked_basis(basis: Basis) -> Basis:
    """``basis`` as floats, after checking it: at least one (u, v, brightness), 0 < brightness <= 1."""
    try:
        out = tuple((float(u), float(v), float(b)) for u, v, b in basis)
    except (TypeError, ValueError) as e:
        raise ValueError(f"basis must be a sequence of (u, v, brightness) triples (got {basis!r})") from e
    if not out or not all(0 < b <= 1 for _, _, b in out):
        raise ValueError(f"basis needs at least one (u, v, brightness) with 0 < brightness <= 1 (got {basis!r})")
    return out


class StemSimulator:
    """Simulated HAADF-STEM series with ground truth.

    Parameters
    ----------
    shape : (int, int)
        Frame size (H, W).
    scene : {"nanoparticle", "crystal", "mixed", "film"}
        ``crystal``: a rotated square lattice with vacancies and a vacuum hole whose edge atoms
        come and go. ``nanoparticle``: a compact cluster and a few adatoms on an amorphous
        support, with vacuum beyond the support's edge. ``mixed``: a crystal on the left, vacuum
        in the middle, a cluster on support on the right (a grain turned a further 15 deg).
        ``film``: a lattice with vacancies filling the whole field, no vacuum.
    peak_counts : float
        Mean detected counts at the peak of a full-intensity atom (the dose knob; ~1 and ~0.4 are
        the low-dose cases of the quality benchmark).
    background_counts : float
        Mean counts everywhere (stray scattering / dark signal).
    read_noise : float
        Std of Gaussian read noise, in counts.
    drift_px_per_frame : float
        Maximum drift speed. Drift is a smooth bounded wander (period ~400 frames).
    pitch_px, sigma_px, rotation_deg : float
        Lattice pitch, probe blur (blob std) and lattice rotation.
    pixel_size_nm : float
        Recorded in ``meta``; used for per-area scores.
    scan_jitter_px : float
        Std of the per-row sub-pixel shift along x.
    surface_dynamics : bool
        Whether surface atoms hop / appear / disappear over time.
    gain, offset_adu : float
        Detector units per count and dark offset (keeps read noise from clipping at 0).
    dwell_time_us, beam_current_pA : float
        Recorded in ``meta`` with the derived electron dose.
    site_brightness : (float, float)
        Range of the atoms' peak brightness relative to a full atom (uniform per site). The default
        is one element; a wide range stands for columns of different atomic number or thickness.
    basis : tuple of (u, v, brightness)
        The atom columns of one lattice cell: fractions ``(u, v)`` of the cell along its two
        lattice vectors and a brightness in (0, 1] (times ``site_brightness``). The default is one
        full atom per cell; ``((0, 0, 1), (0.5, 0.5, 0.6), (0.5, 0, 0.1), (0, 0.5, 0.1))`` is a
        perovskite seen along [001] (bright A, dimmer B-O, faint O columns). ``pitch_px`` is the
        cell's side.
    lattice : {"square", "hexagonal"}
        The cell's second lattice vector at 90 or 60 deg to the first. ``hexagonal`` with
        ``basis=((0, 0, 1), (1/3, 1/3, 0.7))`` is a honeycomb (MoS2 along [001]: Mo and S2 columns).
    seed : int
        Seed of the scene and of every frame's noise.
    """

    def __init__(
        self,
        *,
        shape: tuple[int, int] = (256, 256),
        scene: Scene = "nanoparticle",
        peak_counts: float = 1.0,
        background_counts: float = 0.02,
        read_noise: float = 0.1,
        drift_px_per_frame: float = 0.05,
        pitch_px: float = 8.0,
        sigma_px: float = 1.6,
        rotation_deg: float = 10.0,
        pixel_size_nm: float = 0.025,
        scan_jitter_px: float = 0.2,
        surface_dynamics: bool = True,
        gain: float = 20.0,
        offset_adu: float = 100.0,
        dwell_time_us: float = 1.0,
        beam_current_pA: float = 10.0,
        site_brightness: tuple[float, float] = (0.9, 1.0),
        basis: Basis = ONE_ATOM,
        lattice: Lattice = "square",
        seed: int = 0,
    ) -> None:
        self.shape = _checked_settings(shape, scene, greater_than=[
            ("peak_counts", peak_counts, 0.0), ("pitch_px", pitch_px, 2.0), ("sigma_px", sigma_px, 0.3),
            ("pixel_size_nm", pixel_size_nm, 0.0), ("gain", gain, 0.0),
        ], non_negative=[("background_counts", background_counts), ("read_noise", read_noise),
                         ("drift_px_per_frame", drift_px_per_frame), ("scan_jitter_px", scan_jitter_px)])
        self.scene = scene
        self.peak_counts = float(peak_counts)
        self.background_counts = float(background_counts)
        self.read_noise = float(read_noise)
        self.drift_px_per_frame = float(drift_px_per_frame)
        self.pitch_px = float(pitch_px)
        self.sigma_px = float(sigma_px)
        self.rotation_deg = float(rotation_deg)
        self.pixel_size_nm = float(pixel_size_nm)
        self.scan_jitter_px = float(scan_jitter_px)
        self.surface_dynamics = bool(surface_dynamics)
        self.gain = float(gain)
        self.offset_adu = float(offset_adu)
        self.seed = int(seed)
        lo, hi = (float(v) for v in site_brightness)
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"site_brightness must be (lo, hi) with 0 < lo <= hi <= 1 (got {site_brightness!r})")
        self.site_brightness = (lo, hi)
        self.basis = _checked_basis(basis)
        if lattice not in get_args(Lattice):
            raise ValueError(f"lattice must be 'square' or 'hexagonal' (got {lattice!r})")
        self.lattice = lattice
        self._scale = 1.0 + _SUPPORT_MAX  # fixed clean scale: full atom peak + support ceiling

        rng = np.random.default_rng([self.seed, 0x5CE4E])
        self._init_drift(rng)
        self._build_scene(rng)
        self.meta: dict[str, Any] = self._meta(dwell_time_us, beam_current_pA)

    def _init_drift(self, rng: np.random.Generator) -> None:
        """A bounded slow wander of the scan window, and the world margin that keeps it in view."""
        amp = self.drift_px_per_frame * _DRIFT_PERIOD / (2 * np.pi)
        self._drift_amp = amp
        self._drift_phase = rng.uniform(0, 2 * np.pi, size=2)
        self._drift_omega = 2 * np.pi / _DRIFT_PERIOD * np.array([1.0, rng.uniform(0.6, 0.9)])
        self._pad = int(math.ceil(amp + 4 * self.sigma_px + self.pitch_px)) + 2

    def _meta(self, dwell_time_us: float, beam_current_pA: float) -> dict[str, Any]:
        """The acquisition record, with the electron dose derived from dwell time and current."""
        electrons = beam_current_pA * 1e-12 * dwell_time_us * 1e-6 / _E_CHARGE
        area_a2 = (self.pixel_size_nm * 10) ** 2
        return {
            "simulator": "noise2atom.stem_sim",
            "scene": self.scene,
            "shape": list(self.shape),
            "pixel_size_nm": self.pixel_size_nm,
            "dwell_time_us": float(dwell_time_us),
            "beam_current_pA": float(beam_current_pA),
            "detector": "HAADF (simulated)",
            "electrons_per_pixel": float(electrons),
            "dose_e_per_A2": float(electrons / area_a2),
            "peak_counts": self.peak_counts,
            "background_counts": self.background_counts,
            "read_noise_counts": self.read_noise,
            "gain_adu_per_count": self.gain,
            "offset_adu": self.offset_adu,
            "pitch_px": self.pitch_px,
            "sigma_px": self.sigma_px,
            "rotation_deg": self.rotation_deg,
            "drift_px_per_frame": self.drift_px_per_frame,
            "scan_jitter_px": self.scan_jitter_px,
            "seed": self.seed,
        }

    # ------------------------------------------------------------------ scene
    def _build_scene(self, rng: np.random.Generator) -> None:
        """Lay out the atom sites, the support texture and the vacuum mask in world coordinates."""
        world = _World(self.shape, self._pad, self.pitch_px, self.rotation_deg, rng, self.basis, self.lattice)
        _LAYOUTS[self.scene](world)
        self._set_sites(world.sites, world.prob, world.weight, rng)
        self._support = _support_texture(world.support, rng)
        margin = 2 * 2.355 * self.sigma_px + 1.5  # two FWHM, plus pixel rounding of sites and drift
        self._vacuum = _vacuum_mask(world.support, world.occupiable, margin)

    def _set_sites(self, sites: list[np.ndarray], prob: list[np.ndarray], weight: list[np.ndarray],
                   rng: np.random.Generator) -> None:
        """The scene's atom sites, each with its presence probability, brightness and epoch clock."""
        self._sites = np.concatenate(sites) if sites else np.zeros((0, 2))
        self._prob = np.concatenate(prob) if prob else np.zeros(0)
        weight_all = np.concatenate(weight) if weight else np.zeros(0)
        if not self.surface_dynamics:  # freeze: likely-present sites stay, unlikely ones go
            keep = self._prob >= 0.5
            self._sites, self._prob, weight_all = self._sites[keep], np.ones(int(keep.sum())), weight_all[keep]
        n = len(self._sites)
        self._site_amp = rng.uniform(*self.site_brightness, n) * weight_all
        self._period = rng.uniform(60, 240, n)  # frames between chances to change
        self._phase = rng.uniform(0, 1, n)

    # ------------------------------------------------------------------ per frame
    def drift(self, t: int) -> np.ndarray:
        """Scan-window offset (row, col) in px at frame ``t`` (0 at t = 0, bounded)."""
        ph = self._drift_phase
        return self._drift_amp * (np.sin(self._drift_omega * t + ph) - np.sin(ph))

    def _present(self, t: int) -> np.ndarray:
        if not self.surface_dynamics:
            return np.ones(len(self._sites), dtype=bool)
        idx = np.arange(len(self._sites))
        epoch = np.floor(t / self._period + self._phase).astype(np.int64)
        u = _hash_uniform(self.seed, 0xA70, idx, epoch)
        return u < self._prob

    def frame(self, t: int) -> SimFrame:
        """Simulate frame ``t`` (any non-negative integer, any order)."""
        if int(t) != t or t < 0:
            raise ValueError(f"t must be a non-negative integer (got {t!r})")
        t = int(t)
        h, w = self.shape
        p = self._pad
        off = self.drift(t) + p  # world coordinate of frame pixel (0, 0)
        live = self._present(t)
        pos = self._sites[live] - off
        amp = self._site_amp[live]
        r = 4 * self.sigma_px
        near = (pos[:, 0] > -r) & (pos[:, 0] < h + r) & (pos[:, 1] > -r) & (pos[:, 1] < w + r)
        img = _render_blobs((h, w), pos[near], amp[near], self.sigma_px)

        # Support: world texture sampled at the drifted window (bilinear, 4 shifted slices).
        i0 = np.floor(off).astype(int)
        fr, fc = off - i0
        s = self._support
        win = s[i0[0]:i0[0] + h + 1, i0[1]:i0[1] + w + 1]
        img += ((1 - fr) * (1 - fc) * win[:-1, :-1] + (1 - fr) * fc * win[:-1, 1:]
                + fr * (1 - fc) * win[1:, :-1] + fr * fc * win[1:, 1:])
        ir = np.round(off).astype(int)
        vac = self._vacuum[ir[0]:ir[0] + h, ir[1]:ir[1] + w]
        clean = np.clip(img / self._scale, 0.0, 1.0)

        rng = np.random.default_rng([self.seed, 0xF4A3E, t])
        expected = img
        if self.scan_jitter_px > 0:  # each row shifted along x by a sub-pixel offset
            jit = np.clip(rng.normal(0, self.scan_jitter_px, h), -0.99, 0.99)[:, None]
            neighbour = np.empty_like(img)  # the pixel each row is shifted towards
            pos_rows = (jit > 0)[:, 0]
            neighbour[:, :-1], neighbour[:, -1] = img[:, 1:], img[:, -1]
            neighbour[~pos_rows, 1:], neighbour[~pos_rows, 0] = img[~pos_rows, :-1], img[~pos_rows, 0]
            a = np.abs(jit)
            expected = img + a * (neighbour - img)
        lam = self.background_counts + self.peak_counts * expected
        adu = rng.poisson(lam).astype(np.float32)
        if self.read_noise > 0:  # float32 ziggurat normals: ~2x faster than float64 at 512²
            adu += np.float32(self.read_noise) * rng.standard_normal(adu.shape, dtype=np.float32)
        adu *= np.float32(self.gain)
        adu += np.float32(self.offset_adu)
        noisy = np.clip(np.rint(adu, out=adu), 0, 65535, out=adu).astype(np.uint16)

        inside = (pos[:, 0] >= 0) & (pos[:, 0] < h) & (pos[:, 1] >= 0) & (pos[:, 1] < w)
        return SimFrame(noisy=noisy, clean=clean.astype(np.float32), positions=pos[inside].copy(),
                        vacuum_mask=vac.copy())

    def series(self, n: int, start: int = 0) -> StemSeries:
        """Frames ``start .. start + n - 1`` stacked into a :class:`StemSeries`."""
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer (got {n!r})")
        frames = [self.frame(start + i) for i in range(int(n))]
        return StemSeries(
            noisy=np.stack([f.noisy for f in frames]),
            clean=np.stack([f.clean for f in frames]),
            positions=[f.positions for f in frames],
            vacuum_masks=np.stack([f.vacuum_mask for f in frames]),
            meta=dict(self.meta, n_frames=int(n), first_frame=int(start)),
        )


def simulate_series(n: int, *, start: int = 0, **kwargs: Any) -> StemSeries:
    """Simulate ``n`` frames with a :class:`StemSimulator` built from ``kwargs``.

    Examples
    --------
    >>> s = simulate_series(3, shape=(32, 48), scene="mixed", seed=2)
    >>> s.noisy.shape, len(s.positions), s.vacuum_masks.dtype
    ((3, 32, 48), 3, dtype('bool'))
    """
    return StemSimulator(**kwargs).series(n, start=start)
