"""n2a-denoise --ensemble: the bundled model through ONNX Runtime on the flips and rotations of each
frame, averaged back (noise2atom.ensemble); real files on disk, the CLI's own entry point."""
from __future__ import annotations

import numpy as np
import pytest

import engines
from detector_styles import bundled_model, denoise_file, mean_correlation
from noise2atom.ensemble import self_ensemble
from noise2atom.scaling import estimate_scaling
from noise2atom.stem_sim import StemSimulator

ENGINE = "onnxruntime"


def _lattice(shape, n: int = 2):
    """(truth, uint16 counts): a drifting crystal at ~2 counts a column."""
    sim = StemSimulator(shape=shape, scene="crystal", sigma_px=1.5, pitch_px=9.0, rotation_deg=11, seed=4)
    clean = np.stack([sim.frame(t).clean for t in range(n)])
    return clean, np.random.default_rng(2).poisson(clean * 2.0 + 0.05).astype(np.uint16)


def _denoise(tmp_path, counts, name: str, *extra: str, capsys):
    src = tmp_path / f"{name}.npy"
    np.save(src, counts)
    return denoise_file(tmp_path, src, name, *extra, capsys=capsys)


@pytest.mark.parametrize("shape, size", [((96, 96), 8), ((96, 80), 4)])
def test_the_file_holds_the_mean_over_the_frames_orientations(tmp_path, capsys, shape, size):
    clean, counts = _lattice(shape)
    den, meta, report = _denoise(tmp_path, counts, "ens", "--ensemble", "--no-resample", capsys=capsys)
    assert meta["ensemble"] == size and f"self-ensemble of {size}" in report
    norm = estimate_scaling(counts)
    with engines.open_engine(bundled_model(), ENGINE) as engine:
        x = np.ascontiguousarray(norm.to_model(counts), dtype=np.float32)
        once = norm.from_model(engine.infer(x))
        # each orientation by hand: the CLI's output is their mean, mapped back
        turns = [lambda a: a, lambda a: a[..., ::-1, :], lambda a: a[..., ::-1], lambda a: a[..., ::-1, ::-1]]
        if size == 8:
            turns += [lambda a, t=t: np.swapaxes(t(a), -1, -2) for t in turns[:4]]
        outs = []
        for t in turns:
            y = engine.infer(np.ascontiguousarray(t(x)))
            back = np.swapaxes(y, -1, -2) if len(outs) >= 4 else y
            outs.append(turns[len(outs) % 4](back))
    np.testing.assert_allclose(den, norm.from_model(np.mean(outs, axis=0)), atol=1e-4)
    assert np.abs(den - once).max() > 1e-3  # the network alone is not symmetric: averaging changed it
    assert mean_correlation(den, clean) > 0.7
    _, plain_meta, plain_report = _denoise(tmp_path, counts, "plain", "--no-resample", capsys=capsys)
    assert plain_meta["ensemble"] == 1 and "self-ensemble" not in plain_report


def test_a_mirrored_file_comes_out_mirrored(tmp_path, capsys):
    _, counts = _lattice((96, 96))
    den, _, _ = _denoise(tmp_path, counts, "a", "--ensemble", "--no-resample", capsys=capsys)
    mirrored, _, _ = _denoise(tmp_path, np.ascontiguousarray(counts[:, :, ::-1]), "b", "--ensemble", "--no-resample",
                              capsys=capsys)
    np.testing.assert_allclose(mirrored, den[:, :, ::-1], atol=1e-4)


def test_an_infer_that_changes_the_shape_is_refused():
    with pytest.raises(ValueError, match=r"changed the shape"):
        self_ensemble(lambda a: a[..., :-1], np.zeros((2, 16, 16), np.float32))
    with pytest.raises(ValueError, match=r"got shape \(5,\)"):
        self_ensemble(lambda a: a, np.zeros(5, np.float32))
