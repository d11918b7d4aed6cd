"""n2a-train command line: bad inputs end in one clear line and exit code 2; runs and resumes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile

from noise2atom.checkpoint import load_checkpoint, load_generator
from noise2atom.cli import main

FAST = ["--threads", "1", "--quiet", "--device", "cpu"]


def run_main(capsys, argv):
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return rc, err


def assert_one_line_error(rc, err, *needles, alone=True):
    """Exit 2, no traceback, one error line (the last; ``alone``: the only line at all)."""
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert rc == 2
    assert "Traceback" not in err
    assert sum(ln.startswith("n2a-train: error: ") for ln in lines) == 1, err
    if alone:
        assert len(lines) == 1, err
    assert lines[-1].startswith("n2a-train: error: ")
    for n in needles:
        assert n in lines[-1], lines[-1]


@pytest.fixture
def good(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "good.npy"
    np.save(path, rng.poisson(3.0, size=(3, 40, 40)).astype(np.uint16))
    return path


def test_missing_file(capsys, tmp_path):
    rc, err = run_main(capsys, [tmp_path / "nope.tif", "--out", tmp_path / "m.safetensors", "--iterations", "1"])
    assert_one_line_error(rc, err, "nope.tif", "does not exist")


def test_unreadable_file(capsys, tmp_path):
    bad = tmp_path / "junk.tif"
    bad.write_bytes(b"not a tiff at all" * 50)
    rc, err = run_main(capsys, [bad, "--out", tmp_path / "m.safetensors", "--iterations", "1"])
    assert_one_line_error(rc, err, "junk.tif")


def test_one_dimensional_data(capsys, tmp_path):
    p = tmp_path / "line.npy"
    np.save(p, np.arange(100, dtype=np.float32))
    rc, err = run_main(capsys, [p, "--out", tmp_path / "m.safetensors", "--iterations", "1"])
    assert_one_line_error(rc, err, "line.npy", "got")


def test_single_frame_too_small_for_a_validation_stripe(capsys, tmp_path):
    p = tmp_path / "one.tif"
    tifffile.imwrite(p, np.random.default_rng(0).poisson(3, (48, 48)).astype(np.uint16))
    rc, err = run_main(capsys, [p, "--out", tmp_path / "m.safetensors", "--iterations", "1", "--patch", "32"])
    assert_one_line_error(rc, err, "48 rows", "validation stripe", "got --patch 32")


def test_frames_smaller_than_patch(capsys, good, tmp_path):
    rc, err = run_main(capsys, [good, "--out", tmp_path / "m.safetensors", "--iterations", "1", "--patch", "64"])
    assert_one_line_error(rc, err, "good.npy", "40x40", "64x64")


def test_nan_only_frame(capsys, tmp_path):
    p = tmp_path / "nan.npy"
    a = np.random.default_rng(0).random((3, 40, 40)).astype(np.float32)
    a[1] = np.nan
    np.save(p, a)
    rc, err = run_main(capsys, [p, "--out", tmp_path / "m.safetensors", "--iterations", "1", "--patch", "32"])
    assert_one_line_error(rc, err, "nan.npy", "frame 1", "no finite values")


@pytest.mark.parametrize("extra,needle", [
    ([], "--iterations N or --minutes M"),
    (["--iterations", "1", "--patch", "20"], "multiple of 8"),
    (["--iterations", "1", "--gain", "2"], "both --gain and --offset"),
    (["--iterations", "1", "--simulate"], "give one of FRAMES files, --simulate or --mixture"),
    (["--iterations", "1", "--resume", "--patch", "32"], "not found"),
    (["--iterations", "1", "--device", "banana"], "--device must be"),
    (["--iterations", "1", "--init", "no-such.safetensors"], "--init no-such.safetensors: no such checkpoint"),
    (["--iterations", "1", "--init", "x", "--resume"], "--init (start a new run from its weights) or --resume"),
    (["--iterations", "1", "--ema", "1"], "--ema must be in [0, 1) (got 1)"),
])
def test_bad_options(capsys, good, tmp_path, extra, needle):
    rc, err = run_main(capsys, [good, "--out", tmp_path / "m.safetensors", *extra])
    assert_one_line_error(rc, err, needle, alone="--resume" not in extra)


def test_train_then_resume_then_refuse_other_method(capsys, good, tmp_path):
    out = tmp_path / "m.safetensors"
    base = [good, "--out", out, "--patch", "32", "--batch", "4", *FAST]
    rc, err = run_main(capsys, [*base, "--iterations", "4", "--checkpoint-every", "2", "--preview-every", "2"])
    assert rc == 0, err
    assert "iteration 2:" in err and "wrote" in err
    assert (tmp_path / "m.preview.png").is_file()
    assert load_checkpoint(out).config.iteration == 4
    rc, err = run_main(capsys, [*base, "--iterations", "7", "--resume"])
    assert rc == 0, err
    assert "resumed" in err and "at iteration 4" in err
    config, _ = load_generator(out)
    assert config.iteration == 7 and config.method == "blindspot"
    assert config.train.bs_loss == "auto"
    rc, err = run_main(capsys, [*base, "--iterations", "9", "--resume", "--method", "hybrid"])
    assert_one_line_error(rc, err, "method 'blindspot' (got 'hybrid')", alone=False)


def test_simulate_and_minutes(capsys, tmp_path):
    out = tmp_path / "s.safetensors"
    rc, err = run_main(capsys, ["--simulate", "--sim-size", "48", "--sim-frames", "3", "--sim-scene", "crystal",
                                "--out", out, "--minutes", "0.02", "--patch", "32", "--batch", "2", *FAST])
    assert rc == 0, err
    assert "blind-spot loss poisson (gain 20, offset 100)" in err
    config = load_checkpoint(out).config
    assert config.iteration >= 1
    assert config.data.meta["simulator"] == "noise2atom.stem_sim"
    assert config.data.sources[0].startswith("simulate:crystal:48x48x3")


def test_console_script_bad_input_and_ctrl_c(tmp_path, good):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # bad input through a real process: exit 2, one line, no traceback
    p = subprocess.run([sys.executable, "-m", "noise2atom.cli", str(tmp_path / "missing.tif"), "--out",
                        str(tmp_path / "m.safetensors"), "--iterations", "1"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().startswith("n2a-train: error:") and len(p.stderr.strip().splitlines()) == 1
    # Ctrl-C: a checkpoint is saved, the process exits cleanly (code 130, no traceback)
    out = tmp_path / "c.safetensors"
    proc = subprocess.Popen([sys.executable, "-m", "noise2atom.cli", str(good), "--out", str(out),
                             "--patch", "32", "--batch", "2", "--iterations", "100000",
                             "--checkpoint-every", "1", *FAST],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 240  # a loaded machine: torch's import alone can take a minute
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.2)  # polling for the condition, not waiting and hoping
        assert out.exists(), "no checkpoint within 240 s"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    it = load_checkpoint(out).config.iteration
    assert 1 <= it < 100000


def test_estimate_prior_is_reported_and_used(capsys, tmp_path):
    out = tmp_path / "g.safetensors"
    rc, err = run_main(capsys, ["--simulate", "--sim-size", "128", "--sim-frames", "4", "--sim-scene", "crystal",
                                "--sim-pitch", "10", "--sim-peak-counts", "4", "--method", "noise2atom",
                                "--estimate-prior", "--sigma-max", "3", "--iterations", "1", "--patch", "32",
                                "--critic-steps", "1", "--out", out, *FAST])
    assert rc == 0, err
    assert "estimated prior from the frames: pitch" in err
    prior = load_checkpoint(out).config.prior
    assert abs(prior.pitch_px - 10) < 0.5  # the estimate, not the default 8
    assert prior.sigma_px[1] == 3  # an explicit flag wins over the estimate
