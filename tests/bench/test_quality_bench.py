"""The quality benchmark's scoring path, end to end on a tiny series, baselines only (no training)."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    """Import a bench module (bench/ is a plain folder of scripts, not an installed package)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"bench.{name}")


def test_quick_baselines_write_a_table_where_gaussian_beats_raw(tmp_path):
    quality = _load("quality")
    rc = quality.main(["--quick", "--no-train", "--no-bm3d", "--scenes", "crystal", "--out", str(tmp_path),
                       "--work", str(tmp_path / "work")])
    assert rc == 0
    md = (tmp_path / "quality.md").read_text()
    assert "| denoiser | PSNR (dB) | SSIM to truth |" in md
    for row in ("| raw |", "| Gaussian (sigma", "| median ("):
        assert row in md
    assert "## Verdict" in md
    for png in ("quality_grid_dose1.png", "quality_css.png"):
        assert (tmp_path / png).stat().st_size > 1000
    (case,) = json.loads((tmp_path / "quality.json").read_text())
    rows = {m["key"]: m for m in case["methods"]}
    assert set(rows) == {"raw", "gaussian", "median"}
    assert rows["gaussian"]["ssim"] > rows["raw"]["ssim"]
    assert rows["gaussian"]["psnr_db"] > rows["raw"]["psnr_db"]
    # CSS of a smoothed sequence is higher than of the raw noise (our CSS rewards stability)
    assert rows["gaussian"]["css"] > rows["raw"]["css"]
    assert all(0.0 <= m["f1"] <= 1.0 for m in rows.values())


def test_anscombe_inverse_is_unbiased_on_poisson_counts():
    dens = _load("quality_denoisers")
    rng = np.random.default_rng(0)
    for lam in (2.0, 10.0, 50.0):
        x = rng.poisson(lam, 200_000)
        # the exact unbiased inverse maps E[anscombe(x)] back to lam (the algebraic inverse would not)
        back = float(dens.inverse_anscombe(np.mean(dens.anscombe(x))))
        assert back == pytest.approx(lam, rel=0.02)


def test_bm3d_on_counts_beats_the_raw_frame():
    dens = _load("quality_denoisers")
    scoring = _load("quality_scoring")
    from noise2atom.stem_sim import simulate_series

    s = simulate_series(1, shape=(48, 48), scene="crystal", peak_counts=4.0, seed=3)
    bm = dens.Bm3dDenoiser(gain=s.meta["gain_adu_per_count"], offset=s.meta["offset_adu"])
    out = bm(s.noisy[0])
    assert out.shape == (48, 48) and np.isfinite(out).all()
    assert bm.last_sigma > 0
    assert scoring.ssim_to_truth(out, s.clean[0]) > scoring.ssim_to_truth(s.noisy[0], s.clean[0])


def test_score_outputs_rejects_a_wrong_number_of_frames():
    scoring = _load("quality_scoring")
    from noise2atom.stem_sim import simulate_series

    s = simulate_series(2, shape=(32, 32), scene="crystal", seed=1)
    with pytest.raises(ValueError, match=r"one output per scored frame.*\(got \(1, 32, 32\)\)"):
        scoring.score_outputs(np.zeros((1, 32, 32)), s, detector=scoring.DetectorSettings.from_meta(s.meta))
