"""Checkpoints of every training method run through every back end (issue 7).

A few real training iterations per method (not random-init weights), then the same frames through
PyTorch and ONNX Runtime on the CPU (TensorRT on a GPU) must agree and keep the frame's shape.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import engines
from noise2atom.checkpoint import load_checkpoint
from noise2atom.target_sim import TargetPrior
from noise2atom.train import TrainOptions, Trainer
from noise2atom.train_data import simulated_training_data

METHODS = ("noise2atom", "hybrid", "blindspot")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One lite checkpoint per method, each after 2 iterations on a small simulated series."""
    torch.set_num_threads(1)
    data = simulated_training_data(n_frames=4, size=48, scene="mixed", peak_counts=1.0, seed=5, patch=32)
    out = {}
    for method in METHODS:
        opts = TrainOptions(method=method, iterations=2, patch=32, batch=2, critic_steps=1)
        prior = None if method == "blindspot" else TargetPrior(pitch_px=6.0)
        path = tmp_path_factory.mktemp(method) / f"{method}.safetensors"
        Trainer(options=opts, data=data, prior=prior).run(path, progress=False)
        out[method] = path
    return out


@pytest.mark.parametrize("method", METHODS)
def test_checkpoint_of_each_method_runs_through_the_cpu_engines(trained, method):
    assert load_checkpoint(trained[method]).config.method == method
    frames = np.random.default_rng(0).uniform(-1, 1, (2, 40, 52)).astype(np.float32)
    with engines.open_engine(trained[method], "pytorch", device="cpu") as pt, \
            engines.open_engine(trained[method], "onnxruntime") as ox:
        a, b = pt.infer(frames), ox.infer(frames)
        assert pt.describe()["model"] == ox.describe()["model"]
    assert a.shape == b.shape == frames.shape
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
    assert np.ptp(a) > 0  # a trained generator, not a constant


@pytest.mark.gpu
@pytest.mark.parametrize("method", METHODS)
def test_checkpoint_of_each_method_runs_through_tensorrt(trained, method):
    ok, why = engines.tensorrt_available()
    if not ok:
        pytest.skip(why)
    frames = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64)).astype(np.float32)
    with engines.open_engine(trained[method], "onnxruntime") as ox, \
            engines.open_engine(trained[method], "tensorrt", precision="fp32") as trt:
        np.testing.assert_allclose(trt.infer(frames), ox.infer(frames), atol=1e-3, rtol=0)
