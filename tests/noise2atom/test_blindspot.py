"""Blind-spot masking: a loss pixel never sees itself, nor its row neighbours' correlated noise."""
from __future__ import annotations

import pytest
import torch

from noise2atom.blindspot import blindspot_loss, make_blindspot_batch
from noise2atom.models import build_generator


def test_single_bright_pixel_is_hidden_and_loss_reflects_it():
    x = torch.full((1, 1, 32, 32), -1.0)
    r, c = 12, 17
    x[0, 0, r, c] = 1.0
    centres = torch.tensor([[r * 32 + c, 3 * 32 + 4, 25 * 32 + 9]])
    masked, mask = make_blindspot_batch(x, centres=centres, generator=torch.Generator().manual_seed(0))
    # the bright value appears nowhere in the network's input
    assert float(masked.max()) == -1.0
    # an identity "network" could only echo the input: at the bright loss pixel it fails
    ident = blindspot_loss(masked, x, mask, kind="mse")
    assert ident.item() == pytest.approx((2.0**2) / 3)  # one of three loss pixels is off by 2
    # without masking, the identity would be perfect: the mask is what forbids it
    assert blindspot_loss(x, x, mask, kind="mse").item() == 0.0


def test_masked_segment_hides_row_neighbours():
    x = torch.arange(40 * 40, dtype=torch.float32).view(1, 1, 40, 40)
    r, c = 20, 20
    masked, mask = make_blindspot_batch(x, centres=torch.tensor([[r * 40 + c]]), half_width=2)
    assert mask.hidden[0, r, c - 2:c + 3].all()
    assert int(mask.hidden.sum()) == 5
    rows_of_values = (masked[0, 0, r, c - 2:c + 3] // 40).long()
    assert (rows_of_values != r).all()  # every hidden pixel was filled from another row
    assert (rows_of_values - r).abs().max() <= 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prediction_at_loss_pixels_does_not_depend_on_them(seed):
    # Gradient proof with a real network: d pred[centre] / d x[centre] == 0, and also zero
    # w.r.t. the row neighbours within the hidden segment.
    torch.manual_seed(seed)
    g = build_generator("lite")
    x = (torch.rand(2, 1, 32, 32) * 2 - 1).requires_grad_(True)
    masked, mask = make_blindspot_batch(x, generator=torch.Generator().manual_seed(seed))
    pred = mask.take(g(masked))  # (N, K)
    for n in range(2):
        for k in range(0, mask.centres.shape[1], 3):
            grad, = torch.autograd.grad(pred[n, k], x, retain_graph=True)
            idx = int(mask.centres[n, k])
            rr, cc = divmod(idx, 32)
            assert grad[n, 0, rr, cc] == 0
            hidden_row = grad[n, 0, rr, max(cc - 2, 0):cc + 3]
            assert torch.all(hidden_row == 0)
            assert grad.abs().sum() > 0  # it does see the rest


def test_no_loss_pixel_value_leaks_anywhere():
    # unique values: the masked input must hold none of the loss pixels' values
    x = torch.randperm(64 * 64).float().view(1, 1, 64, 64)
    for s in range(5):
        masked, mask = make_blindspot_batch(x, generator=torch.Generator().manual_seed(s), spacing=4)
        centre_vals = set(mask.take(x)[0].tolist())
        assert not centre_vals & set(masked.flatten().tolist())


def test_poisson_loss_prefers_the_conditional_mean():
    # For Poisson targets of mean 2 counts, the loss is lowest at a prediction of 2 counts.
    g = torch.Generator().manual_seed(0)
    k = torch.poisson(torch.full((1, 1, 64, 64), 2.0), generator=g)
    mask = make_blindspot_batch(k, spacing=1, half_width=0)[1]
    losses = {lam: blindspot_loss(torch.full_like(k, lam), k, mask, kind="poisson",
                                  to_counts=lambda v: v).item() for lam in (1.0, 2.0, 3.0)}
    assert losses[2.0] < losses[1.0] and losses[2.0] < losses[3.0]
    with pytest.raises(ValueError, match="to_counts"):
        blindspot_loss(k, k, mask, kind="poisson")
