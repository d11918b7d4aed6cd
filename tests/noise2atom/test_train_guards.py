"""Guards around training files (issue 10 item 7): a float32-safe normalisation, no silent
overwrite of a model, and a checkpoint and its ``.train.pt`` that must belong together on resume."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from pydantic import ValidationError

from noise2atom.checkpoint import Normalisation, load_checkpoint, train_state_path
from noise2atom.cli import main

FAST = ["--threads", "1", "--quiet", "--device", "cpu", "--patch", "32", "--batch", "4"]


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def assert_usage_error(rc, err, *needles):
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("n2a-train: error: ")]
    assert rc == 2 and "Traceback" not in err and len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture
def frames(tmp_path):
    path = tmp_path / "frames.npy"
    np.save(path, np.random.default_rng(0).poisson(3.0, size=(3, 40, 40)).astype(np.uint16))
    return path


@pytest.mark.parametrize("lo, hi", [(0.0, 1e-40), (1e8, 1e8 + 1), (-1e39, 0.0), (0.0, 1e39)])
def test_normalisation_refuses_limits_that_break_in_float32(lo, hi):
    with pytest.raises(ValidationError, match=r"finite and positive in float32 \(got lo="):
        Normalisation(lo=lo, hi=hi)


def test_normalisation_accepts_small_but_float32_safe_limits():
    n = Normalisation(lo=0.0, hi=1e-30)
    y = n.to_model(np.array([0.0, 5e-31, 1e-30]))
    assert np.all(np.isfinite(y)) and y.tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6)


def test_out_is_not_overwritten_without_overwrite(capsys, frames, tmp_path):
    out = tmp_path / "m.safetensors"
    rc, err = run(capsys, frames, "--out", out, "--iterations", "2", *FAST)
    assert rc == 0, err
    before = out.read_bytes()
    rc, err = run(capsys, frames, "--out", out, "--iterations", "2", "--seed", "1", *FAST)
    assert_usage_error(rc, err, f"--out {out} exists", "--overwrite")
    assert out.read_bytes() == before
    rc, err = run(capsys, frames, "--out", out, "--iterations", "2", "--seed", "1", "--overwrite",
                  *FAST)
    assert rc == 0, err
    assert out.read_bytes() != before
    rc, err = run(capsys, frames, "--out", out, "--iterations", "3", "--resume", *FAST)
    assert rc == 0 and load_checkpoint(out).config.iteration == 3, err


def test_resume_refuses_a_checkpoint_and_state_that_do_not_belong_together(capsys, frames, tmp_path):
    a, b, c = (tmp_path / f"{n}.safetensors" for n in "abc")
    for out, iters, seed in ((a, 4, 0), (b, 2, 0), (c, 4, 1)):
        rc, err = run(capsys, frames, "--out", out, "--iterations", iters, "--seed", seed, *FAST)
        assert rc == 0, err
    # Another run's checkpoint over a's, a's resume state left beside it: another iteration ...
    shutil.copy(b, a)
    rc, err = run(capsys, frames, "--out", a, "--iterations", "6", "--resume", *FAST)
    assert_usage_error(rc, err, "do not belong together", "iteration is 2 in the checkpoint",
                       "got 4")
    # ... or the same iteration and settings but other weights: caught by the recorded hash.
    shutil.copy(c, a)
    rc, err = run(capsys, frames, "--out", a, "--iterations", "6", "--resume", *FAST)
    assert_usage_error(rc, err, "the checkpoint was replaced", "expected checkpoint sha256")
    # The pair that was saved together still resumes.
    shutil.copy(train_state_path(c), train_state_path(a))
    rc, err = run(capsys, frames, "--out", a, "--iterations", "6", "--resume", *FAST)
    assert rc == 0 and load_checkpoint(a).config.iteration == 6, err
