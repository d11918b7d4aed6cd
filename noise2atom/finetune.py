"""Self-supervised fine-tuning of a trained generator on the frames being denoised.

Used by the learner inside ``n2a-stream --learn`` and by ``n2a-denoise --fit``: a copy of the
current generator is trained with the blind-spot loss on frames already in model units (the
series' own input scaling), and scored with a *held-out* blind-spot loss on frames it never
trained on, with masks drawn once from a fixed seed, so two generators are compared on exactly
the same pixels. The deployed generator is never touched: a caller swaps in a candidate only
when its held-out loss is lower by a margin.

Examples
--------
>>> import numpy as np, torch
>>> from noise2atom.models import build_generator
>>> torch.manual_seed(0) and None
>>> frames = [np.random.default_rng(i).normal(0, .3, (64, 64)).astype(np.float32) for i in range(3)]
>>> tuner = FineTuner(build_generator("lite"), patch=32, batch=2, seed=0)
>>> loss = tuner.step(frames)
>>> bool(np.isfinite(loss))
True
"""
from __future__ import annotations

import copy
import math
from typing import Sequence

import numpy as np
import torch

from noise2atom.blindspot import blindspot_loss, make_blindspot_batch

__all__ = ["FineTuner", "FineTuneError", "heldout_loss"]


class FineTuneError(RuntimeError):
    """Fine-tuning produced unusable weights (NaN/inf) or got unusable frames."""


def _as_batch(frames: Sequence[np.ndarray], side: int) -> torch.Tensor:
    """Central ``side`` crops of equal-size frames as (N, 1, side, side) float32 (unclipped)."""
    crops = []
    for f in frames:
        h, w = f.shape
        s = min(side, h, w)
        r, c = (h - s) // 2, (w - s) // 2
        crops.append(np.asarray(f[r:r + s, c:c + s], np.float32))
    s = min(c.shape[0] for c in crops)
    return torch.from_numpy(np.stack([c[:s, :s] for c in crops]))[:, None]


@torch.no_grad()
def heldout_loss(generator: torch.nn.Module, frames: Sequence[np.ndarray], *, side: int = 128,
                 seed: int = 1234, spacing: int = 8, half_width: int = 2) -> float:
    """Blind-spot MSE of ``generator`` on ``frames`` (model units) with masks from ``seed``.

    The same frames and seed give the same masked pixels for every generator, so the numbers of
    two generators compare directly.
    """
    if not frames:
        raise FineTuneError("held-out loss needs at least one frame (got none)")
    x = _as_batch(frames, side)
    g = torch.Generator().manual_seed(seed)
    masked, mask = make_blindspot_batch(x.clamp(-1, 1), spacing=spacing, half_width=half_width,
                                        generator=g)
    was_training = generator.training
    generator.eval()
    try:
        pred = generator(masked)
    finally:
        generator.train(was_training)
    return float(blindspot_loss(pred, x, mask, kind="mse"))


class FineTuner:
    """Trains a private copy of ``generator`` with the blind-spot loss.

    Parameters
    ----------
    generator
        The starting weights (copied; the original is never modified).
    patch, batch
        Training patch side and patches per step (patches are cut from random frames at random
        places, with random flips but never transposes: the scan direction stays along x).
    lr
        Adam learning rate (small: this is a warm start, not training from scratch).
    seed
        Seeds the patch sampling and masks.
    """

    def __init__(self, generator: torch.nn.Module, *, patch: int = 64, batch: int = 8,
                 lr: float = 2e-4, seed: int = 0, spacing: int = 8, half_width: int = 2) -> None:
        self.G = copy.deepcopy(generator).float().train()
        self.opt = torch.optim.Adam(self.G.parameters(), lr=lr)
        self.patch, self.batch = patch, batch
        self.spacing, self.half_width = spacing, half_width
        self.rng = np.random.default_rng(seed)
        self.torch_rng = torch.Generator().manual_seed(seed)
        self.iterations = 0

    def _sample(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        p = min(self.patch, *(min(f.shape) for f in frames))
        p -= p % 8 if p >= 16 else 0
        out = np.empty((self.batch, 1, p, p), np.float32)
        for i in range(self.batch):
            f = frames[self.rng.integers(len(frames))]
            r = self.rng.integers(f.shape[0] - p + 1)
            c = self.rng.integers(f.shape[1] - p + 1)
            crop = f[r:r + p, c:c + p]
            if self.rng.random() < 0.5:
                crop = crop[::-1]
            if self.rng.random() < 0.5:
                crop = crop[:, ::-1]
            out[i, 0] = crop
        return torch.from_numpy(out)

    def step(self, frames: Sequence[np.ndarray]) -> float:
        """One optimiser step on patches of ``frames`` (model units); returns the loss."""
        if not frames:
            raise FineTuneError("fine-tuning needs at least one frame (got none)")
        x = self._sample(frames)
        masked, mask = make_blindspot_batch(x.clamp(-1, 1), spacing=self.spacing,
                                            half_width=self.half_width, generator=self.torch_rng)
        loss = blindspot_loss(self.G(masked), x, mask, kind="mse")
        if not torch.isfinite(loss):
            raise FineTuneError(f"the blind-spot loss is not finite (got {loss.item()})")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.iterations += 1
        return loss.item()

    def check_finite(self) -> None:
        """Raise :class:`FineTuneError` when any weight is NaN or infinite."""
        for name, p in self.G.state_dict().items():
            if p.is_floating_point() and not bool(torch.isfinite(p).all()):
                raise FineTuneError(f"weight {name} is not finite after {self.iterations} steps")

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Go back to ``state_dict`` (e.g. the deployed model after a failed round)."""
        self.G.load_state_dict(state_dict)
        self.opt = torch.optim.Adam(self.G.parameters(), lr=self.opt.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """A detached CPU copy of the tuned weights."""
        return {k: v.detach().to("cpu").clone() for k, v in self.G.state_dict().items()}

    def heldout_loss(self, frames: Sequence[np.ndarray], **kw) -> float:
        """:func:`heldout_loss` of the tuned copy."""
        return heldout_loss(self.G, frames, spacing=self.spacing, half_width=self.half_width, **kw)


def improved(candidate: float, deployed: float, margin: float) -> bool:
    """``candidate`` beats ``deployed`` by at least the relative ``margin`` (both finite)."""
    return (math.isfinite(candidate) and math.isfinite(deployed)
            and candidate < deployed * (1.0 - margin))
