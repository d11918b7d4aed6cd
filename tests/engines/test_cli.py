"""n2a-denoise end to end on real TIFF files, and its error paths (one line, exit 2)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

import engines
from engines.cli.denoise import main
from noise2atom.checkpoint import model_id
from noise2atom.scaling import estimate_scaling


@pytest.fixture
def raw_tiff(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    frames = rng.poisson(400, (4, 48, 40)).astype(np.uint16)
    path = tmp_path / "series.tif"
    tifffile.imwrite(path, frames, photometric="minisblack")
    return path


def _read(path: Path):
    with tifffile.TiffFile(path) as f:
        return f.asarray(), json.loads(f.pages[0].description)


def test_denoises_a_tiff_stack(raw_tiff, lite_checkpoint, tmp_path, capsys):
    out = tmp_path / "out.tif"
    rc = main([str(raw_tiff), "--model", str(lite_checkpoint), "--out", str(out), "--batch", "3",
               "--engine", "onnxruntime", "--quiet"])
    assert rc == 0
    denoised, meta = _read(out)
    assert denoised.shape == (4, 48, 40) and denoised.dtype == np.float32
    # The same numbers as the engine gives on the frames scaled by their own limits (not the
    # checkpoint's training normalisation), in display units [0, 1].
    raw = tifffile.imread(raw_tiff)
    norm = estimate_scaling(raw)
    assert meta["n2a"]["normalisation"] == norm.model_dump()
    with engines.open_engine(lite_checkpoint, "onnxruntime") as engine:
        assert engine.config.normalisation != norm
        expected = norm.from_model(engine.infer(norm.to_model(raw)))
    np.testing.assert_allclose(denoised, expected, atol=1e-6)
    assert meta["n2a"]["model"] == model_id(lite_checkpoint)
    assert meta["n2a"]["units"].startswith("display")
    assert meta["n2a"]["engine"]["backend"] == "onnxruntime"
    report = capsys.readouterr().out
    assert "CSS raw" in report and "denoised" in report and "4 frames 48x40" in report
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file may be left behind"


def test_raw_units_and_several_inputs_into_a_folder(raw_tiff, lite_checkpoint, tmp_path):
    second = tmp_path / "other.npy"
    np.save(second, tifffile.imread(raw_tiff))  # the same frames in another format
    folder = tmp_path / "outs"
    rc = main([str(raw_tiff), str(second), "--model", str(lite_checkpoint), "--out", str(folder),
               "--units", "raw", "--engine", "pytorch", "--device", "cpu", "--quiet"])
    assert rc == 0
    a, meta = _read(folder / "series.denoised.tif")
    b, _ = _read(folder / "other.denoised.tif")
    assert a.shape == (4, 48, 40) and b.shape == (4, 48, 40)
    assert meta["n2a"]["units"] == "raw detector units"
    lo, hi = meta["n2a"]["normalisation"]["lo"], meta["n2a"]["normalisation"]["hi"]
    assert lo <= a.min() and a.max() <= hi
    np.testing.assert_allclose(a, b, atol=1e-3)  # same frames, same scaling, same answer


def test_existing_output_is_kept_without_overwrite(raw_tiff, lite_checkpoint, tmp_path, capsys):
    out = tmp_path / "out.tif"
    out.write_bytes(b"precious")
    rc = main([str(raw_tiff), "--model", str(lite_checkpoint), "--out", str(out), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "output exists" in err and "--overwrite" in err
    assert out.read_bytes() == b"precious"
    rc = main([str(raw_tiff), "--model", str(lite_checkpoint), "--out", str(out), "--overwrite", "--quiet"])
    assert rc == 0 and _read(out)[0].shape == (4, 48, 40)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["missing.tif"], "input not found: .*missing.tif"),
        (["{raw}", "--batch", "0"], r"--batch must be >= 1 \(got 0\)"),
        (["{raw}", "{raw}"], "--out must be a folder"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(raw_tiff, lite_checkpoint, tmp_path, capsys, args, match):
    argv = [a.format(raw=raw_tiff) for a in args]
    rc = main([*argv, "--model", str(lite_checkpoint), "--out", str(tmp_path / "o.tif"), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert __import__("re").search(match, err), err
    assert not (tmp_path / "o.tif").exists()


def test_unreadable_input_and_bad_model(raw_tiff, tmp_path, capsys, lite_checkpoint):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff")
    assert main([str(bad), "--model", str(lite_checkpoint), "--out", str(tmp_path / "o.tif"), "--quiet"]) == 2
    assert "bad.tif" in capsys.readouterr().err
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 100)
    assert main([str(raw_tiff), "--model", str(broken), "--out", str(tmp_path / "o.tif"), "--quiet"]) == 2
    assert "not a readable safetensors checkpoint" in capsys.readouterr().err


def _tensorrt_and_gpu_present() -> bool:
    """Looked up independently of `engines`, so the expectation below does not come from the code
    under test."""
    import importlib.util

    import torch

    return importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


def test_tensorrt_engine_without_tensorrt_or_gpu_is_a_clear_error(raw_tiff, tmp_path, capsys,
                                                                   lite_checkpoint):
    if _tensorrt_and_gpu_present():
        pytest.skip("TensorRT and a GPU are present (test_tensorrt_engine_denoises_on_a_gpu runs)")
    assert main([str(raw_tiff), "--model", str(lite_checkpoint), "--out", str(tmp_path / "o.tif"),
                 "--engine", "tensorrt", "--quiet"]) == 2
    assert "tensorrt back end needs" in capsys.readouterr().err
    assert not (tmp_path / "o.tif").exists()


@pytest.mark.gpu
def test_tensorrt_engine_denoises_on_a_gpu(raw_tiff, tmp_path, lite_checkpoint):
    ok, why = engines.tensorrt_available()
    if not ok:
        pytest.skip(why)
    out = tmp_path / "o.tif"
    assert main([str(raw_tiff), "--model", str(lite_checkpoint), "--out", str(out), "--engine",
                 "tensorrt", "--quiet"]) == 0
    assert _read(out)[0].shape == _read(raw_tiff)[0].shape


def test_without_model_uses_the_default_or_says_it_is_missing(raw_tiff, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("N2A_MODEL", str(tmp_path / "absent.safetensors"))
    assert main([str(raw_tiff), "--out", str(tmp_path / "o.tif"), "--quiet"]) == 2
    assert "bundled default model is missing" in capsys.readouterr().err


def test_console_script_runs(raw_tiff, lite_checkpoint, tmp_path):
    exe = Path(sys.executable).with_name("n2a-denoise")
    if not exe.exists():
        pytest.skip("n2a-denoise is not installed in this environment")
    out = tmp_path / "cli.tif"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([str(exe), str(raw_tiff), "--model", str(lite_checkpoint), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert out.exists() and "CSS raw" in proc.stdout
    proc = subprocess.run([str(exe), str(raw_tiff), "--model", str(lite_checkpoint), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and "output exists" in proc.stderr
