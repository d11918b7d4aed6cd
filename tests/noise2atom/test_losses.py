"""The SSIM term of supervised training: the benchmark's SSIM, differentiable, and what it learns."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from noise2atom.losses import MIN_RANGE, patch_ssim_loss
from noise2atom.metrics import ssim
from noise2atom.mixture import MixtureData
from noise2atom.train import TrainOptions, Trainer

torch.set_num_threads(1)


def lattice(n: int = 48, pitch: float = 6.0) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n]
    return (np.cos(2 * np.pi * yy / pitch) * np.cos(2 * np.pi * xx / pitch) + 1).astype(np.float64) / 2


def test_equals_the_benchmarks_ssim_on_the_truths_range():
    rng = np.random.default_rng(0)
    truth = 3.0 * lattice() - 1.0  # range 3: the loss reads it from the truth, as the benchmark scores
    noisy = truth + rng.normal(0, 0.4, truth.shape)
    t, o = (torch.from_numpy(a)[None, None] for a in (truth, noisy))
    # metrics.ssim drops the 5-px border from its mean: exactly the windows inside the patch
    assert float(patch_ssim_loss(o, t)) == pytest.approx(1 - ssim(noisy, truth, data_range=3.0), abs=1e-9)
    assert float(patch_ssim_loss(t, t)) == pytest.approx(0.0, abs=1e-12)
    noisier = torch.from_numpy(truth + rng.normal(0, 0.8, truth.shape))[None, None]
    assert 0 < float(patch_ssim_loss(o, t)) < float(patch_ssim_loss(noisier, t))


def test_a_flat_truth_uses_the_minimum_range():
    flat = torch.zeros(1, 1, 32, 32)
    ripple = torch.from_numpy(0.01 * (lattice(32) - 0.5))[None, None].float()
    got = float(patch_ssim_loss(ripple, flat))
    want = 1 - ssim(ripple[0, 0].double().numpy(), flat[0, 0].double().numpy(), data_range=MIN_RANGE)
    assert got == pytest.approx(want, abs=1e-5) and got > 0.05  # vacuum still pays for a ripple


@pytest.mark.parametrize("a,b", [((1, 1, 32, 32), (1, 1, 32, 31)), ((1, 2, 32, 32), (1, 2, 32, 32)),
                                 ((1, 1, 10, 32), (1, 1, 10, 32)), ((32, 32), (32, 32))])
def test_wrong_shapes_say_what_was_expected(a, b):
    with pytest.raises(ValueError, match=r"need two \(N, 1, H, W\) tensors .* \(got "):
        patch_ssim_loss(torch.zeros(a), torch.zeros(b))


def test_supervised_training_with_the_ssim_term_records_it_and_lowers_it():
    data = MixtureData(n_series=4, size=64, n_frames=2, seed=0)
    opts = TrainOptions(method="supervised", size="lite", patch=32, batch=4, seed=0, ssim_weight=0.5)
    trainer = Trainer(options=opts, data=data)
    losses = [trainer.step() for _ in range(40)]
    assert all(set(step) == {"mse", "1-ssim"} for step in losses)
    first, last = (np.mean([s["1-ssim"] for s in chunk]) for chunk in (losses[:10], losses[-10:]))
    assert last < first
    assert trainer.model_config().train.ssim_weight == 0.5
    plain = Trainer(options=opts.model_copy(update={"ssim_weight": 0.0}), data=data)
    assert set(plain.step()) == {"mse"}
