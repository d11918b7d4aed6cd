"""n2a-denoise --fit: a self-supervised fit on the files being denoised, then denoise (real files)."""
from __future__ import annotations

import re

import numpy as np
import tifffile

from engines.cli.denoise import main
from noise2atom.stem_sim import simulate_series


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_fit_lowers_the_heldout_loss_and_brings_a_random_model_closer_to_the_truth(
        lite_checkpoint, tmp_path, capsys):
    series = simulate_series(1, shape=(128, 128), scene="crystal", peak_counts=3.0, seed=2)
    src = tmp_path / "one.tif"
    tifffile.imwrite(src, series.noisy[0])  # a single image, as Noise2Void users have
    plain, fitted, kept = tmp_path / "plain.tif", tmp_path / "fitted.tif", tmp_path / "fit.safetensors"
    assert main([str(src), "--model", str(lite_checkpoint), "--out", str(plain), "--quiet",
                 "--engine", "onnxruntime"]) == 0
    assert main([str(src), "--model", str(lite_checkpoint), "--out", str(fitted), "--quiet",
                 "--engine", "onnxruntime", "--fit", "--minutes", "0.25",
                 "--fit-save", str(kept)]) == 0
    err = capsys.readouterr().err
    m = re.search(r"held-out blind-spot loss ([0-9.]+) -> ([0-9.]+)", err)
    assert m, err
    assert float(m[2]) < float(m[1])
    assert kept.is_file()
    truth = series.clean[0]
    assert _corr(tifffile.imread(fitted), truth) > _corr(tifffile.imread(plain), truth)


def test_fit_refuses_frames_too_small_to_hold_back_a_stripe(lite_checkpoint, tmp_path, capsys):
    src = tmp_path / "tiny.tif"
    tifffile.imwrite(src, np.random.default_rng(0).poisson(2, (20, 20)).astype(np.uint16))
    assert main([str(src), "--model", str(lite_checkpoint), "--out", str(tmp_path / "o.tif"),
                 "--fit", "--minutes", "0.05", "--quiet"]) == 2
    assert "too small to fit on (expected at least 64x16)" in capsys.readouterr().err


def test_fit_needs_a_positive_budget(lite_checkpoint, tmp_path, capsys):
    src = tmp_path / "one.tif"
    tifffile.imwrite(src, np.random.default_rng(0).poisson(2, (64, 64)).astype(np.uint16))
    assert main([str(src), "--model", str(lite_checkpoint), "--out", str(tmp_path / "o.tif"),
                 "--fit", "--minutes", "0", "--quiet"]) == 2
    assert "--minutes must be > 0 (got 0.0)" in capsys.readouterr().err
