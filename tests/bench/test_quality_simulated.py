"""The quality benchmark's scoring path, end to end on a tiny series, baselines only (no training)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench.quality import denoisers, report, scoring, simulated


def test_the_bundled_model_is_scored_as_the_tools_run_it(tmp_path):
    """Scaled from the series itself (as n2a-denoise and n2a-stream do), not through the checkpoint's
    nominal limits: fed those, the bundled model turned a 1-count series into a flat frame (SSIM
    0.03, CSS 1.000) in the 2026-12-01 run."""
    from noise2atom.checkpoint import default_model_path

    if not default_model_path().exists():
        pytest.skip("no bundled model")
    rc = simulated.main(["--quick", "--no-train", "--no-bm3d", "--scenes", "crystal", "--doses", "1",
                         "--out", str(tmp_path), "--work", str(tmp_path / "work")])
    assert rc == 0
    (case,) = json.loads((tmp_path / "quality.json").read_text())["cases"]
    rows = {m["key"]: m for m in case["methods"]}
    assert rows["n2a-default"]["ssim"] > rows["raw"]["ssim"] + 0.1, rows["n2a-default"]
    assert rows["n2a-default"]["css"] < 0.99


def test_quick_baselines_write_a_table_where_gaussian_beats_raw(tmp_path):
    rc = simulated.main(["--quick", "--no-train", "--no-default", "--no-bm3d", "--scenes", "crystal", "--out", str(tmp_path),
                       "--work", str(tmp_path / "work")])
    assert rc == 0
    md = (tmp_path / "quality.md").read_text()
    assert "| denoiser | PSNR (dB) | SSIM to truth |" in md
    for row in ("| raw |", "| Gaussian (sigma", "| median ("):
        assert row in md
    assert "## Verdict" in md
    for png in ("quality_grid_dose1.png", "quality_css.png"):
        assert (tmp_path / png).stat().st_size > 1000
    (case,) = json.loads((tmp_path / "quality.json").read_text())["cases"]
    rows = {m["key"]: m for m in case["methods"]}
    assert set(rows) == {"raw", "gaussian", "median"}
    assert rows["gaussian"]["ssim"] > rows["raw"]["ssim"]
    assert rows["gaussian"]["psnr_db"] > rows["raw"]["psnr_db"]
    # CSS of a smoothed sequence is higher than of the raw noise (our CSS rewards stability)
    assert rows["gaussian"]["css"] > rows["raw"]["css"]
    assert all(0.0 <= m["f1"] <= 1.0 for m in rows.values())


def test_anscombe_inverse_is_unbiased_on_poisson_counts():
    rng = np.random.default_rng(0)
    for lam in (2.0, 10.0, 50.0):
        x = rng.poisson(lam, 200_000)
        # the exact unbiased inverse maps E[anscombe(x)] back to lam (the algebraic inverse would not)
        back = float(denoisers.inverse_anscombe(np.mean(denoisers.anscombe(x))))
        assert back == pytest.approx(lam, rel=0.02)


def test_bm3d_on_counts_beats_the_raw_frame():
    from noise2atom.stem_sim import simulate_series

    s = simulate_series(1, shape=(48, 48), scene="crystal", peak_counts=4.0, seed=3)
    bm = denoisers.Bm3dDenoiser(gain=s.meta["gain_adu_per_count"], offset=s.meta["offset_adu"])
    out = bm(s.noisy[0])
    assert out.shape == (48, 48) and np.isfinite(out).all()
    assert bm.last_sigma > 0
    assert scoring.ssim_to_truth(out, s.clean[0]) > scoring.ssim_to_truth(s.noisy[0], s.clean[0])


def test_bm3d_with_a_fixed_sigma_uses_it_instead_of_estimating_one():
    from noise2atom.stem_sim import simulate_series

    s = simulate_series(1, shape=(48, 48), scene="crystal", peak_counts=4.0, seed=3)
    gain, offset = s.meta["gain_adu_per_count"], s.meta["offset_adu"]
    estimated, fixed = denoisers.Bm3dDenoiser(gain=gain, offset=offset), denoisers.Bm3dDenoiser(
        gain=gain, offset=offset, sigma=2.0)
    a, b = estimated(s.noisy[0]), fixed(s.noisy[0])
    assert fixed.last_sigma == 2.0 and estimated.last_sigma != 2.0
    assert not np.allclose(a, b)  # a much larger sigma smooths more
    assert np.std(b) < np.std(a)


def test_score_outputs_rejects_a_wrong_number_of_frames():
    from noise2atom.stem_sim import simulate_series

    s = simulate_series(2, shape=(32, 32), scene="crystal", seed=1)
    with pytest.raises(ValueError, match=r"one output per scored frame.*\(got \(1, 32, 32\)\)"):
        scoring.score_outputs(np.zeros((1, 32, 32)), s, detector=scoring.DetectorSettings.from_meta(s.meta))


def _case(dose, rows):
    case = report.CaseResult(dose=dose, scene="crystal", settings={})
    for key, (ssim, f1, false) in rows.items():
        sc = scoring.Scores(psnr_db=20.0, ssim=ssim, css=0.5, f1=f1, precision=f1, recall=f1, rmse_px=0.5,
                            false_per_100nm2=false, n_false_vacuum=false / 10, ms_per_frame=1.0)
        case.methods.append(report.MethodResult(key=key, label=key, scores=sc))
    return case


def test_verdict_judges_n2a_against_bm3d_at_the_lowest_dose_where_atoms_are_found():
    cases = [
        # dose 0.2: nobody finds atoms (F1 < 0.5), so the test moves on to dose 1
        _case(0.2, {"bm3d": (0.1, 0.3, 50.0), "n2a-blindspot": (0.2, 0.4, 0.0), "n2a-hybrid": (0.3, 0.45, 0.0)}),
        # dose 1: blindspot beats BM3D on all three; hybrid has higher SSIM/F1 but more false atoms
        _case(1.0, {"bm3d": (0.4, 0.8, 5.0), "n2a-blindspot": (0.6, 0.9, 5.0), "n2a-hybrid": (0.7, 0.95, 9.0)}),
        _case(4.0, {"bm3d": (0.9, 0.99, 0.0), "n2a-blindspot": (0.8, 0.98, 0.0), "n2a-hybrid": (0.8, 0.9, 0.0)}),
    ]
    lines = report.verdict(cases)
    bs = next(s for s in lines if s.startswith("- crystal, n2a-blindspot"))
    hy = next(s for s in lines if s.startswith("- crystal, n2a-hybrid"))
    assert "at dose 1:" in bs and "**passes**" in bs and "(+0.200)" in bs
    assert "at dose 1:" in hy and "**does not pass**" in hy
    # the per-case winners come from the numbers: at dose 4 BM3D wins SSIM by 0.1
    assert any(s.startswith("- dose 4 counts") and "best SSIM bm3d (0.900, +0.100" in s for s in lines)


def test_rerender_rebuilds_the_same_report_from_json(tmp_path):
    simulated.main(["--quick", "--no-train", "--no-default", "--no-bm3d", "--scenes", "crystal", "--out", str(tmp_path),
                  "--work", str(tmp_path / "work")])
    first = (tmp_path / "quality.md").read_text()
    (tmp_path / "quality.md").unlink()
    assert simulated.main(["--rerender", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "quality.md").read_text() == first


def test_a_second_run_replaces_its_own_in_series_checkpoints(tmp_path):
    """make bench-quality run twice: the second run trains afresh over the first one's scratch
    checkpoints (it stopped with 'exists: pass --overwrite' before)."""
    from bench.quality.training import train_in_series

    frames = np.random.default_rng(0).poisson(2.0, (4, 32, 32)).astype(np.float32)
    path = tmp_path / "work" / "case-blindspot.safetensors"
    args = dict(method="blindspot", frames=frames, meta={"gain_adu_per_count": 1.0, "offset_adu": 0.0}, minutes=0.02,
                path=path,
                quick=True)
    train_in_series(**args)
    first = path.stat().st_mtime_ns
    assert "it" in train_in_series(**args)
    assert path.stat().st_mtime_ns > first
    assert train_in_series(**args, reuse=True) and path.stat().st_mtime_ns > first
