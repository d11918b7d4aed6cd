"""``n2a-train`` on a single image: a held-back stripe of rows for validation, and a real image."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from noise2atom.checkpoint import Normalisation, fingerprint_frames, load_generator
from noise2atom.cli import main
from noise2atom.scaling import estimate_scaling
from noise2atom.train_data import TrainingData, TrainingDataError

ROOT = Path(__file__).resolve().parents[2]
# In CI the clone sits beside shared/; a worktree under .../wt/NAME has it one level further up.
SHARED = next((d for d in (ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data")
               if d.is_dir()), ROOT.parent / "shared" / "data")


def _row_coded(h: int, w: int, n: int = 1) -> TrainingData:
    """Frames whose every pixel holds its own row index, so a patch says where it came from."""
    stack = np.broadcast_to(np.arange(h, dtype=np.float32)[None, :, None], (n, h, w)).copy()
    return TrainingData(stacks=[stack], normalisation=Normalisation(lo=0.0, hi=1.0),
                        fingerprint=fingerprint_frames([stack]), sources=["rows"])


@pytest.mark.parametrize("consecutive,flips", [(False, True), (True, False)])
def test_training_and_validation_patches_never_share_a_row(consecutive, flips):
    data = _row_coded(200, 150)
    data.hold_back(0.2, 32)
    assert data.val_rows == 40
    first_val_row = 200 - data.val_rows
    rng = np.random.default_rng(0)
    train_rows = np.concatenate([data.sample(8, 32, rng, consecutive=consecutive, flips=flips).ravel()
                                 for _ in range(300)])
    val = data.validation_patches(32)
    assert len(val) > 0
    assert train_rows.max() < first_val_row  # training never reaches into the stripe ...
    assert train_rows.max() == first_val_row - 1  # ... but uses every row up to it
    assert val.min() >= first_val_row


def test_validation_stripe_is_at_least_one_patch_and_leaves_one_for_training():
    data = _row_coded(100, 100)
    data.hold_back(0.05, 32)  # 5 rows asked, one patch (32) held back
    assert data.val_rows == 32
    with pytest.raises(TrainingDataError, match=r"60 rows .*got --patch 32"):
        _row_coded(60, 100).hold_back(0.15, 32)


def test_one_real_image_trains_with_held_back_validation(capsys, tmp_path):
    path = SHARED / "real" / "atomap014_SrTiO3_110_ABF.hdf5"
    if not path.is_file():
        pytest.skip(f"shared evaluation data not found (expected {path})")
    out = tmp_path / "one.safetensors"
    torch.set_num_threads(1)
    rc = main([f"{path}:/Experiments/__unnamed__/data", "--out", str(out), "--iterations", "20",
               "--batch", "4", "--checkpoint-every", "10", "--quiet", "--threads", "1"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "1 frames" in err and "held back the bottom 78 rows" in err  # 0.15 of 520 rows
    vals = [float(line.split("validation bs ")[1].split(";")[0]) for line in err.splitlines()
            if "validation bs" in line]
    assert len(vals) == 3 and all(np.isfinite(vals)), err  # at 10, at 20, and in the summary
    config, gen = load_generator(out)
    assert config.iteration == 20 and config.method == "blindspot"
    import h5py

    with h5py.File(path) as f:
        img = f["Experiments/__unnamed__/data"][:].astype(np.float32)
    norm = estimate_scaling(img)
    with torch.no_grad():
        den = gen(torch.from_numpy(norm.to_model(img))[None, None])[0, 0].numpy()
    assert den.std() > 0.01  # not flat
