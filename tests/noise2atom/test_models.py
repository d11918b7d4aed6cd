"""Networks: sizes, parameter counts, costs, the normalisation and the low-pass filter."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from noise2atom.models import (
    MIN_SIDE,
    Critic,
    LowPass,
    ScalarLayerNorm,
    build_generator,
    count_parameters,
    macs_per_pixel,
)

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def paper():
    return build_generator("paper").eval()


@pytest.fixture(scope="module")
def lite():
    return build_generator("lite").eval()


def test_paper_generator_parameter_count_matches_authors_code(paper):
    # 13,780,111 is computed from the layer definitions of the authors' code/models.py.
    assert count_parameters(paper) == 13_780_111


@pytest.mark.parametrize("shape", [(1, 1, 8, 8), (2, 1, 13, 21), (1, 1, 31, 40), (3, 1, 5, 17)])
def test_generators_accept_odd_sizes_and_return_input_size(paper, lite, shape):
    x = torch.rand(shape) * 2 - 1
    with torch.no_grad():
        for g in (paper, lite):
            y = g(x)
            assert y.shape == x.shape
            assert y.dtype == torch.float32
            assert float(y.abs().max()) <= 1.0  # tanh output


def test_generator_crop_is_aligned_with_input(lite):
    # A padded-and-cropped run must match the same pixels of an already-aligned run
    # away from the pad (the net is translation-equivariant up to its stride).
    x = torch.rand(1, 1, 48, 48) * 2 - 1
    with torch.no_grad():
        full = lite(x)
        part = lite(x[..., :45, :45])
    assert torch.allclose(full[..., :24, :24], part[..., :24, :24], atol=1e-5)


def test_too_small_input_is_refused(lite):
    with pytest.raises(RuntimeError):
        lite(torch.zeros(1, 1, MIN_SIDE - 1, 16))


def test_lite_is_at_least_40x_cheaper_per_pixel(paper, lite):
    mp, ml = macs_per_pixel(paper), macs_per_pixel(lite)
    assert 7e5 < mp < 9e5  # ~13 GMAC per 128^2 patch, as the method spec says
    assert mp / ml >= 40


def test_macs_hook_count_matches_hand_count():
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(4, 2, 1))
    assert macs_per_pixel(conv, side=16) == 1 * 4 * 9 + 4 * 2


def test_scalar_layer_norm_formula():
    norm = ScalarLayerNorm()
    with torch.no_grad():
        norm.gamma.fill_(2.0)
        norm.beta.fill_(0.5)
    x = torch.randn(2, 3, 5, 7) * 4 + 1
    y = norm(x)
    xs = x.numpy().reshape(2, -1)
    ref = 2.0 * (xs - xs.mean(1, keepdims=True)) / (xs.std(1, keepdims=True) + 1e-3) + 0.5
    np.testing.assert_allclose(y.detach().numpy().reshape(2, -1), ref, rtol=1e-5, atol=1e-5)
    assert count_parameters(norm) == 2


@pytest.mark.parametrize("patch,params", [(128, 636_237), (64, 636_237 - 8192 + 2048)])
def test_critic_size_and_parameters(patch, params):
    d = Critic(patch=patch)
    assert count_parameters(d) == params
    assert d(torch.zeros(3, 1, patch, patch)).shape == (3, 1)
    with pytest.raises(ValueError, match="got"):
        d(torch.zeros(1, 1, patch + 8, patch))


def test_lowpass_is_centred_gaussian_of_variance_15():
    lp = LowPass()
    k = lp.kernel[0, 0].double().numpy()
    assert k.shape == (33, 33)
    assert abs(k.sum() - 1) < 1e-6
    r = np.arange(-16, 17)
    assert abs((k.sum(1) * r).sum()) < 1e-9  # centred, not the code's corner quarter-disc
    var = (k.sum(1) * r**2).sum()
    assert 13.5 < var < 15.0  # truncation at radius 16 trims the variance slightly
    assert count_parameters(lp) == 0
    # a constant image stays constant away from the zero-padded border
    y = lp(torch.ones(1, 1, 80, 80))
    assert torch.allclose(y[..., 16:-16, 16:-16], torch.ones(1, 1, 48, 48), atol=1e-5)


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning")
def test_lite_onnx_export_keeps_pad_and_crop_dynamic(tmp_path, lite):
    # The pads are computed from symbolic sizes, so one export serves every batch and frame size.
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "lite.onnx"
    torch.onnx.export(lite, torch.zeros(1, 1, 64, 64), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h", 3: "w"}})
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for shape in [(1, 1, 64, 64), (2, 1, 37, 53), (1, 1, 5, 9), (1, 1, 100, 24)]:
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        y = sess.run(None, {"x": x})[0]
        with torch.no_grad():
            ref = lite(torch.from_numpy(x)).numpy()
        assert y.shape == shape
        np.testing.assert_allclose(y, ref, atol=1e-5)


def test_lite_residual_starts_as_the_identity_and_learns_a_correction():
    g = build_generator("lite-residual")
    x = torch.randn(2, 1, 37, 53)
    with torch.no_grad():
        assert torch.equal(g(x), x)  # zero-initialised head: near-noise-free input passes through
    loss = (g(x) - 0.5 * x).square().mean()
    loss.backward()
    assert g.out.weight.grad.abs().sum() > 0
    assert count_parameters(g) == count_parameters(build_generator("lite"))


def _receptive_field(g: torch.nn.Module, side: int = 160) -> int:
    """Rows of the input the centre output pixel depends on (the extent of its gradient)."""
    torch.manual_seed(0)
    torch.nn.init.normal_(g.out.weight, std=0.1)  # the residual head starts at zero: open it
    x = torch.zeros(1, 1, side, side, requires_grad=True)
    g(x)[0, 0, side // 2, side // 2].backward()
    rows = (x.grad[0, 0].abs() > 0).any(dim=1).nonzero()[:, 0]
    assert torch.equal(rows, torch.arange(int(rows[0]), int(rows[-1]) + 1))  # no row skipped
    return int(rows[-1] - rows[0] + 1)


def test_lite_dilated_sees_further_at_the_same_cost():
    # Dilations 2 and 3 at the U-Net's bottom widen the field an output pixel draws on, with no
    # offset skipped inside it, for the same weights and multiply-adds.
    plain, dilated = build_generator("lite-residual"), build_generator("lite-dilated")
    assert (_receptive_field(plain), _receptive_field(dilated)) == (35, 59)
    assert count_parameters(dilated) == count_parameters(plain)
    assert macs_per_pixel(dilated) == macs_per_pixel(plain)


def test_unknown_generator_size_names_the_choices():
    with pytest.raises(ValueError, match=r"'paper', 'lite', 'lite-residual' or 'lite-dilated' \(got 'huge'\)"):
        build_generator("huge")
