"""open_engine reads the checkpoint once: the engine builds from what was read, not from the file."""
from __future__ import annotations

import numpy as np
import pytest

import engines
from noise2atom.checkpoint import model_id


@pytest.mark.parametrize("backend", ["pytorch", "onnxruntime"])
def test_an_engine_starts_from_the_checkpoint_read_by_open_engine(tmp_path, checkpoint_maker, backend):
    ckpt = checkpoint_maker(tmp_path / "m.safetensors", "lite", seed=11)
    expected_id = model_id(ckpt)
    engine = engines.open_engine(ckpt, backend, device="cpu")
    moved = ckpt.rename(tmp_path / "elsewhere.safetensors")  # the file is gone from its path
    frames = np.zeros((1, 16, 16), np.float32)
    with engine:  # pytorch builds from the weights in memory; onnxruntime exports them (no cache yet)
        assert np.isfinite(engine.infer(frames)).all()
        assert engine.describe()["model"] == expected_id  # hashed by open_engine, not again
    # The weights were let go after the first start: entering again reads the file, which is gone.
    with pytest.raises(engines.EngineBuildError, match="not found"):
        engine.__enter__()
    moved.rename(ckpt)
    with engine:
        assert np.isfinite(engine.infer(frames)).all()
