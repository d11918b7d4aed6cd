"""n2a-denoise --lattice-average: the bundled model through ONNX Runtime, then each frame averaged over
its lattice's translations (noise2atom.lattice_average); real files on disk, the CLI's own entry point."""
from __future__ import annotations

import numpy as np

from detector_styles import defect_free_crystal, denoise_file, mean_correlation
from noise2atom.lattice_average import lattice_average
from noise2atom.scaling import estimate_scaling

PITCH = 9.0


def _denoise(tmp_path, counts, name: str, *extra: str, capsys):
    src = tmp_path / f"{name}.npy"
    np.save(src, counts)
    return denoise_file(tmp_path, src, name, *extra, capsys=capsys)


def test_a_crystal_is_averaged_over_its_own_lattice_and_gets_closer_to_the_truth(tmp_path, capsys):
    clean, counts = defect_free_crystal((128, 128), 3, PITCH)
    plain, plain_meta, plain_report = _denoise(tmp_path, counts, "plain", capsys=capsys)
    den, meta, report = _denoise(tmp_path, counts, "lat", "--lattice-average", capsys=capsys)
    assert plain_meta["lattice_average"] is None and "lattice average" not in plain_report
    offsets = np.asarray(meta["lattice_average"])
    assert offsets.shape[0] >= 4 and f"lattice average over {offsets.shape[0]} translations" in report
    assert np.allclose(np.sort(np.hypot(*offsets.T))[:4], PITCH, atol=0.5), offsets
    assert mean_correlation(den, clean) > mean_correlation(plain, clean) + 0.005
    assert den.shape == counts.shape and np.isfinite(den).all()
    # The network's second pass, on the raw frame averaged over the lattice, is what brings it
    # closer than averaging the model's output alone (the same step without `denoise`).
    norm = estimate_scaling(counts)
    raw = norm.from_model(norm.to_model(counts))  # the raw frames in the output's units
    one_pass = np.stack([lattice_average(p, r, offsets) for p, r in zip(plain, raw)])
    assert mean_correlation(den, clean) > mean_correlation(one_pass, clean) + 0.005


def test_a_frame_without_a_lattice_is_left_as_the_model_drew_it(tmp_path, capsys):
    counts = np.random.default_rng(4).poisson(np.full((2, 96, 96), 3.0)).astype(np.uint16)
    plain, _, _ = _denoise(tmp_path, counts, "plain", capsys=capsys)
    den, meta, report = _denoise(tmp_path, counts, "lat", "--lattice-average", capsys=capsys)
    assert meta["lattice_average"] == [] and "no lattice found, not applied" in report
    np.testing.assert_array_equal(den, plain)
