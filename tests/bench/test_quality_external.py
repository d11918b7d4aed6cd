"""The external-data quality benchmark on tiny crops of the real files (seconds), so it cannot rot."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from bench.quality.external import (
    ModelDenoiser,
    abtem_series,
    not_flat_checks,
    run_series,
    tk_pair_series,
)
from bench.quality.external_data import (
    ABTEM_DATA,
    SHARED_DATA,
    abtem_fields,
    drift_series,
    load_real_images,
    load_tk_pairs,
    nearest_spacing,
)
from bench.quality.external_report import render
from noise2atom.checkpoint import default_model_path
from noise2atom.lattice_average import lattice_offsets
from noise2atom.metrics import detect_atoms, score_atoms

# ../shared/data beside the clone (CI) or beside /work/wt/ (a worktree); $N2A_SHARED_DATA overrides.
SHARED = SHARED_DATA


@pytest.fixture(scope="module")
def shared() -> Path:
    if not (SHARED / "simulated" / "tk_r_em_sfr_hrstem_pairs.h5").exists():
        pytest.skip(f"shared evaluation data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="module")
def model():
    path = default_model_path()
    if not path.exists():
        pytest.skip(f"no bundled model at {path}")
    with ModelDenoiser(path) as m:
        yield m


def test_abtem_fields_are_small_and_their_columns_follow_the_drift():
    fields = abtem_fields()
    assert len(fields) >= 2, "expected at least two abTEM fields in bench/data"
    for name, d in fields.items():
        path = ABTEM_DATA / f"abtem_{name}.npz"
        assert path.stat().st_size <= 1_000_000
        assert d["field"].dtype == np.float32 and max(d["field"].shape) <= 256
        s = abtem_series(name, d, 1.0, n_frames=3, crop=64, seed=1)
        assert s.noisy.shape == (3, 64, 64)
        # On the noise-free drifted frames the projected columns are where the atoms are.
        last = s.clean[-1]
        found = detect_atoms(last, sigma_px=s.sigma_px)
        sc = score_atoms(found, s.positions[-1], tol_px=s.tol_px, shape=last.shape, border_px=4)
        assert sc.recall > 0.8 and sc.precision > 0.8, (name, sc)
        # ...and shifting the columns away from the drift breaks that match.
        off = s.positions[-1] + 0.5 * nearest_spacing(d["columns"])
        assert score_atoms(found, off, tol_px=s.tol_px, shape=last.shape, border_px=4).f1 < sc.f1 - 0.5


@pytest.mark.parametrize("name", ["srtio3", "ceo2", "gan"])
def test_abtem_crystal_fields_are_thermal_averages_that_repeat_cell_to_cell(name):
    # A microscope records the mean over the atoms' vibrations. A single frozen-phonon snapshot
    # leaves each cell 4-5 % of the range unlike the next (the fields before 2026-12-02), and the
    # scores then reward keeping noise-level detail that no recorded image holds.
    d = abtem_fields([name])[name]
    assert d["params"]["frozen_phonon_configs"] >= 8
    f = d["field"].astype(np.float64)
    offsets = lattice_offsets(f.astype(np.float32), max_offsets=4)
    assert len(offsets) == 4
    for dy, dx in offsets:  # the field holds whole cells, so a wrapped shift is one cell over
        unlike = np.sqrt(np.mean((ndimage.shift(f, (-dy, -dx), order=3, mode="grid-wrap") - f) ** 2))
        assert unlike / np.ptp(f) < 0.03, (name, (dy, dx), unlike / np.ptp(f))


@pytest.mark.parametrize("argv, says", [
    (["ceo2", "--configs", "0"], "--configs must be at least 1 (got 0)"),
    (["ceo2", "--out", "FILE"], "--out must be a folder (got the file"),
])
def test_the_field_simulator_refuses_bad_options_before_simulating(argv, says, tmp_path, capsys):
    from bench.quality.abtem_fields import main

    a_file = tmp_path / "not_a_folder.npz"
    a_file.write_bytes(b"")
    with pytest.raises(SystemExit) as e:
        main([str(a_file) if a == "FILE" else a for a in argv])
    assert e.value.code == 2 and says in capsys.readouterr().err
    assert not list(tmp_path.glob("abtem_*.npz"))


def test_drift_series_has_the_requested_mean_dose():
    f = np.ones((40, 40), np.float32)
    s = drift_series(f, dose=2.0, n_frames=4, crop=32, seed=0, periodic=True)
    assert abs(float(s.noisy.mean()) - 2.0) < 0.15
    assert np.allclose(s.clean, 2.0, atol=1e-4)


def test_scoring_on_a_tiny_crop_of_the_third_party_pairs(shared, model, tmp_path):
    x, y = load_tk_pairs(shared)
    s = tk_pair_series(x, y, 0, crop=48)
    rows = run_series(s, model=model, bm3d=True, log=lambda m: None)
    assert set(rows) == {"raw", "gaussian", "bm3d", "anscombe_bm3d", "n2a_bundled", "n2a_ensemble", "n2a_lattice"}
    for key, r in rows.items():
        assert -1 <= r["ssim"] <= 1 and np.isfinite(r["psnr_db"]), (key, r)
    assert rows["gaussian"]["ssim"] > rows["raw"]["ssim"]
    md = render({"started": "t", "elapsed_s": 1, "argv": [], "machine": "m", "model": "p", "model_id": "i",
                 "frames": 1, "crop": 48, "score_frames": 1, "doses": [],
                 "tables": {"tk_r_em pairs": {"about": "a", "doses": {"pair 0": rows}}}, "real": []},
                grid=tmp_path / "g.png")
    assert "bundled − best of Gaussian/BM3D/Anscombe+BM3D" in md
    assert "self-ensemble − best of Gaussian/BM3D/Anscombe+BM3D" in md
    assert "bundled + lattice average − best of Gaussian/BM3D/Anscombe+BM3D" in md
    json.dumps(rows)


def test_real_images_not_flat_checks_tell_flat_from_faithful(shared, model):
    for name, img, _ in load_real_images(shared)[:1] + load_real_images(shared)[-1:]:
        crop = img[:96, :96]
        flat = not_flat_checks(np.full_like(crop, crop.mean()), crop)
        assert flat["rel_std"] < 1e-6 and flat["corr_smoothed_raw"] == 0.0
        out = model.for_series(crop[None])(crop)
        c = not_flat_checks(out, crop)
        assert np.isfinite(c["corr_smoothed_raw"]) and np.isfinite(c["rel_std"]), (name, c)
        # The check itself: a Gaussian-smoothed image is faithful by construction.
        from scipy import ndimage

        g = not_flat_checks(ndimage.gaussian_filter(crop, 1.5), crop)
        assert g["corr_smoothed_raw"] > 0.9 and g["rel_std"] > 0.3, (name, g)
