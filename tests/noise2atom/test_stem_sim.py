"""STEM series simulator: shapes, determinism, truth consistency, dose, drift, dynamics."""
from __future__ import annotations

import json

import msgpack
import numpy as np
import pytest

from noise2atom.stem_sim import StemSimulator, simulate_series


@pytest.mark.parametrize("scene", ["crystal", "nanoparticle", "mixed"])
def test_frame_types_and_truth(scene):
    sim = StemSimulator(shape=(96, 128), scene=scene, seed=4)
    f = sim.frame(2)
    assert f.noisy.shape == (96, 128) and f.noisy.dtype == np.uint16
    assert f.clean.shape == (96, 128) and f.clean.dtype == np.float32
    assert f.clean.min() >= 0.0 and f.clean.max() <= 1.0
    assert f.vacuum_mask.dtype == bool and f.vacuum_mask.shape == (96, 128)
    assert f.positions.ndim == 2 and f.positions.shape[1] == 2 and len(f.positions) > 5
    assert (f.positions >= 0).all() and (f.positions[:, 0] < 96).all() and (f.positions[:, 1] < 128).all()
    # every true position sits on a bright spot of the clean frame
    r, c = np.round(f.positions).astype(int).clip(0, [95, 127]).T
    assert np.median(f.clean[r, c]) > 0.6
    # vacuum: nothing there, and no atom within a couple of blob widths
    assert f.vacuum_mask.any()
    assert f.clean[f.vacuum_mask].max() < 1e-3
    vr, vc = np.nonzero(f.vacuum_mask)
    d = np.hypot(vr[:, None] - f.positions[None, :, 0], vc[:, None] - f.positions[None, :, 1]).min(axis=1)
    assert d.min() > 2 * 2.355 * sim.sigma_px


def test_deterministic_in_any_order():
    a = StemSimulator(shape=(64, 64), scene="mixed", seed=11)
    b = StemSimulator(shape=(64, 64), scene="mixed", seed=11)
    late = b.frame(7)
    early = [a.frame(t) for t in range(8)]
    np.testing.assert_array_equal(early[7].noisy, late.noisy)
    np.testing.assert_array_equal(early[7].clean, late.clean)
    np.testing.assert_array_equal(early[7].positions, late.positions)
    assert not np.array_equal(early[6].noisy, early[7].noisy)
    other = StemSimulator(shape=(64, 64), scene="mixed", seed=12).frame(7)
    assert not np.array_equal(other.clean, late.clean)


def test_dose_sets_counts_at_atom_peaks():
    for peak in (1.0, 0.4):
        sim = StemSimulator(shape=(128, 128), scene="crystal", peak_counts=peak, background_counts=0.0,
                            read_noise=0.0, scan_jitter_px=0.0, drift_px_per_frame=0.0, seed=1)
        counts, expected = [], []
        for t in range(4):
            f = sim.frame(t)
            r, c = np.round(f.positions).astype(int).clip(0, 127).T
            counts.append((f.noisy[r, c].astype(float) - sim.offset_adu) / sim.gain)
            # expected peak: atom amplitude (0.9-1) x sub-pixel offset of the rounded pixel
            off = f.positions - np.stack([r, c], axis=1)
            expected.append(peak * 0.95 * np.exp(-(off**2).sum(1) / (2 * sim.sigma_px**2)))
        counts, expected = np.concatenate(counts), np.concatenate(expected)
        assert counts.mean() == pytest.approx(expected.mean(), rel=0.1)
        assert np.allclose(counts, np.round(counts))  # Poisson counts, no read noise here


def test_read_noise_and_background_in_vacuum():
    sim = StemSimulator(shape=(128, 128), scene="crystal", background_counts=0.5, read_noise=0.3, seed=2)
    f = sim.frame(0)
    v = (f.noisy[f.vacuum_mask].astype(float) - sim.offset_adu) / sim.gain
    assert v.mean() == pytest.approx(0.5, abs=0.05)
    assert v.var() == pytest.approx(0.5 + 0.3**2, rel=0.15)  # Poisson var + read var


def test_drift_moves_atoms_slowly():
    sim = StemSimulator(shape=(96, 96), scene="crystal", drift_px_per_frame=0.2, surface_dynamics=False, seed=3)
    p0, p10 = sim.drift(0), sim.drift(10)
    assert np.allclose(p0, 0)
    step = np.linalg.norm(sim.drift(11) - p10)
    assert 0 < step <= 0.2 * np.sqrt(2) + 1e-9
    still = StemSimulator(shape=(96, 96), scene="crystal", drift_px_per_frame=0.0, surface_dynamics=False,
                          seed=3)
    np.testing.assert_array_equal(still.frame(0).clean, still.frame(30).clean)
    # truth follows the drift: a position at t=0 reappears shifted by -drift at t=10
    f0, f10 = sim.frame(0), sim.frame(10)
    moved = f0.positions - (p10 - p0)
    d = np.hypot(*(moved[:, None] - f10.positions[None]).transpose(2, 0, 1)).min(axis=1)
    assert np.median(d) < 1e-6


def test_surface_atoms_change_occasionally():
    sim = StemSimulator(shape=(128, 128), scene="nanoparticle", drift_px_per_frame=0.0, seed=5)
    counts = [len(sim.frame(t).positions) for t in range(0, 600, 20)]
    assert len(set(counts)) > 1  # something appeared or disappeared
    # but the structure is mostly stable between consecutive frames
    a, b = sim.frame(100).positions, sim.frame(101).positions
    assert abs(len(a) - len(b)) <= 3
    frozen = StemSimulator(shape=(128, 128), scene="nanoparticle", drift_px_per_frame=0.0,
                           surface_dynamics=False, seed=5)
    assert len({len(frozen.frame(t).positions) for t in (0, 300)}) == 1


def test_series_and_meta_serialisable():
    s = simulate_series(3, shape=(48, 64), scene="nanoparticle", peak_counts=0.4, seed=8)
    assert s.noisy.shape == (3, 48, 64) and s.noisy.dtype == np.uint16
    assert s.clean.shape == (3, 48, 64) and s.vacuum_masks.shape == (3, 48, 64)
    assert len(s.positions) == 3
    for key in ("pixel_size_nm", "dwell_time_us", "detector", "beam_current_pA", "peak_counts", "shape"):
        assert key in s.meta
    assert s.meta["peak_counts"] == 0.4
    assert json.loads(json.dumps(s.meta)) == s.meta
    assert msgpack.unpackb(msgpack.packb(s.meta)) == s.meta
    single = StemSimulator(shape=(48, 64), scene="nanoparticle", peak_counts=0.4, seed=8).frame(2)
    np.testing.assert_array_equal(s.noisy[2], single.noisy)


def test_clean_scale_is_fixed_not_min_max():
    sim = StemSimulator(shape=(64, 64), scene="crystal", seed=6)
    # a frame window entirely in the hole would be all zeros; here: the peak of a lone full atom
    # is the same fraction of the scale in every frame
    peaks = [sim.frame(t).clean.max() for t in (0, 50, 100)]
    assert max(peaks) - min(peaks) < 0.03
    assert max(peaks) < 0.95  # min-max scaling would give exactly 1


def test_frame_without_any_atom_in_view():
    # a 32 px crystal window inside a hole of radius 2.5 pitches: no atom near the frame at all
    # (n2a-train --mixture draws such frames; rendering them used to crash on an int64 canvas)
    sim = StemSimulator(shape=(32, 32), scene="crystal", pitch_px=20.0, seed=0)
    f = sim.frame(0)
    assert f.positions.shape == (0, 2)
    assert f.clean.dtype == np.float32 and f.clean.max() == 0.0
    assert f.vacuum_mask.all()
    assert f.noisy.dtype == np.uint16 and abs(f.noisy.mean() - sim.offset_adu) < 5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"scene": "moon"}, "scene must be"), ({"shape": (4, 64)}, "at least 8x8"),
     ({"peak_counts": 0}, "peak_counts must be > 0"), ({"read_noise": -1}, "read_noise must be >= 0")],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StemSimulator(**kwargs)


def test_bad_frame_index():
    with pytest.raises(ValueError, match="non-negative integer"):
        StemSimulator(shape=(32, 32)).frame(-1)


@pytest.mark.parametrize("bad", [(0.0, 1.0), (0.8, 0.5), (0.5, 1.2)])
def test_site_brightness_outside_0_to_1_is_refused(bad):
    with pytest.raises(ValueError, match=r"0 < lo <= hi <= 1 \(got"):
        StemSimulator(shape=(32, 32), site_brightness=bad)


def test_spread_site_brightness_gives_dimmer_atoms():
    kw = dict(shape=(96, 96), scene="crystal", pitch_px=10.0, sigma_px=1.2, surface_dynamics=False, seed=2)
    one, spread = StemSimulator(**kw).frame(0), StemSimulator(site_brightness=(0.1, 1.0), **kw).frame(0)
    peak = lambda f: np.array([f.clean[int(round(r)), int(round(c))] for r, c in f.positions  # noqa: E731
                               if 2 <= r < 94 and 2 <= c < 94])
    assert peak(one).min() > 0.6 * peak(one).max()
    assert peak(spread).min() < 0.3 * peak(spread).max()


def test_film_fills_the_field_with_lattice():
    f = StemSimulator(shape=(64, 64), scene="film", pitch_px=8.0, seed=3).frame(0)
    assert not f.vacuum_mask.any()
    assert len(f.positions) > 0.8 * 64 * 64 / 8.0**2


PEROVSKITE = ((0, 0, 1.0), (0.5, 0.5, 0.5), (0.5, 0, 0.15), (0, 0.5, 0.15))


def test_a_basis_puts_columns_of_its_brightness_in_every_cell():
    kw = dict(shape=(96, 96), scene="film", pitch_px=16.0, sigma_px=1.2, rotation_deg=0.0,
              surface_dynamics=False, site_brightness=(1.0, 1.0), seed=5)
    one, cell = StemSimulator(**kw).frame(0), StemSimulator(basis=PEROVSKITE, **kw).frame(0)
    assert len(cell.positions) == pytest.approx(4 * len(one.positions), rel=0.1)
    peaks = np.array([cell.clean[int(round(r)), int(round(c))] for r, c in cell.positions
                      if 3 <= r < 93 and 3 <= c < 93]) / cell.clean.max()
    for level, share in ((1.0, 0.25), (0.5, 0.25), (0.15, 0.5)):
        assert np.mean(np.abs(peaks - level) < 0.06) == pytest.approx(share, abs=0.06), level


@pytest.mark.parametrize("bad", [(), ((0, 0, 0.0),), ((0, 0, 1.0), (0.5, 0.5, 1.5)), ((0, 0),)])
def test_a_basis_without_columns_of_brightness_in_0_to_1_is_refused(bad):
    with pytest.raises(ValueError, match=r"basis .*\(got"):
        StemSimulator(shape=(32, 32), basis=bad)


def test_a_hexagonal_honeycomb_has_its_columns_at_a_third_of_the_cell():
    kw = dict(shape=(96, 96), scene="film", pitch_px=12.0, sigma_px=1.0, rotation_deg=7.0, surface_dynamics=False,
              site_brightness=(1.0, 1.0), lattice="hexagonal", seed=1)
    tri = StemSimulator(**kw).frame(0).positions
    honey = StemSimulator(basis=((0, 0, 1.0), (1 / 3, 1 / 3, 0.6)), **kw).frame(0).positions

    def nearest(p):
        d = np.hypot(*(p[:, None] - p[None]).transpose(2, 0, 1))
        np.fill_diagonal(d, np.inf)
        return np.median(d.min(axis=1)), np.median(np.sort(d, axis=1)[:, 5])  # nearest; 6th nearest

    assert nearest(tri) == pytest.approx((12.0, 12.0), rel=1e-6)  # six neighbours at the pitch
    assert nearest(honey)[0] == pytest.approx(12.0 / np.sqrt(3), rel=1e-6)
    assert len(honey) == pytest.approx(2 * len(tri), rel=0.1)
    with pytest.raises(ValueError, match="lattice must be 'square' or 'hexagonal' \\(got 'cubic'\\)"):
        StemSimulator(shape=(32, 32), lattice="cubic")
