"""Networks of the Noise2Atom method: generators, critic, fixed low-pass filter.

Everything here follows ``code/models.py`` of the authors' repository (see
``shared/noise2atom-method.md`` §3) unless a comment says otherwise. Keras' layers
are mapped as follows: ``TC(k, s)`` is ``ConvTranspose2d`` with padding 0 ("valid"),
``C(k, s)`` is ``Conv2d`` with padding 0, and the repository's
``InstanceNormalization(axis=None)`` is :class:`ScalarLayerNorm`.

Four generator sizes share one interface (:func:`build_generator`):

``paper``
    The authors' released generator (13.78 M parameters, ~0.8 M multiply-adds
    per pixel), for GPUs.
``lite``
    A small 3-level U-Net (16/32/48 channels) for 2-core CPUs, >40x cheaper per
    pixel; its trunk suits both GAN and blind-spot training.
``lite-residual``
    The same U-Net predicting a correction added to its input (no tanh), so
    near-noise-free input passes through unchanged: the bundled model's
    architecture (a tanh-bounded ``lite`` trained on the mixture reshaped even
    noise-free abTEM frames, SSIM 0.96 / 0.90 to their truth).
``lite-dilated``
    ``lite-residual`` with the two bottom convolutions dilated by 2 and 3: the
    same cost, a receptive field of 59 px instead of 35, so an output pixel can
    draw on more of the lattice's repeats around it (dilations 2 and 3 share no
    factor, so no offset is skipped).

Both take ``(N, 1, H, W)`` float32 in [-1, 1] and return the same shape. Any
``H, W >= 5`` works: the input is reflect-padded up to a multiple of 8 and the
output cropped back. The pad amounts are computed from the tensor's own sizes so
the graph stays correct when exported to ONNX with dynamic batch, height and width.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from noise2atom.train_options import GeneratorSize

__all__ = [
    "ScalarLayerNorm",
    "Block",
    "Pool",
    "Up",
    "Multi",
    "ResStack",
    "PaperGenerator",
    "LiteGenerator",
    "build_generator",
    "Critic",
    "LowPass",
    "gaussian_kernel",
    "count_parameters",
    "macs_per_pixel",
    "GeneratorSize",
    "MIN_SIDE",
]


#: Smallest input side the generators accept. Reflect padding needs ``pad < side``
#: and the pad is at most 7 (up to the next multiple of 8), so sides >= 5 work
#: (a side of 5 pads by 3, 4 pads by 4 which reflect padding refuses).
MIN_SIDE = 5

_SLOPE = 0.2  # LeakyReLU slope of the authors' code


def _init_keras(module: nn.Module) -> None:
    """Keras defaults: glorot-uniform weights, zero bias (the authors used them)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ScalarLayerNorm(nn.Module):
    """The authors' ``InstanceNormalization(axis=None)``.

    Normalises each sample over all of C, H and W together with a *scalar*
    learnable gain and offset: ``y = gamma * (x - mean) / (std + eps) + beta``,
    where ``std`` is the population standard deviation and ``eps`` (1e-3) is
    added to the std, not to the variance. PyTorch's ``InstanceNorm2d`` and
    ``GroupNorm`` are not drop-in equivalents.

    Examples
    --------
    >>> norm = ScalarLayerNorm()
    >>> y = norm(torch.randn(2, 3, 8, 8) * 5 + 2)
    >>> bool(y.flatten(1).mean(1).abs().max() < 1e-5)
    True
    >>> [round(v, 2) for v in y.flatten(1).std(1, unbiased=False).tolist()]
    [1.0, 1.0]
    """

    def __init__(self, *, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(()))
        self.beta = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        var = (x - mean).pow(2).mean(dim=(1, 2, 3), keepdim=True)
        return self.gamma * (x - mean) / (var.sqrt() + self.eps) + self.beta


def _act(norm: bool) -> nn.Module:
    """``A`` (norm then LeakyReLU 0.2) or ``A0`` (LeakyReLU only)."""
    if norm:
        return nn.Sequential(ScalarLayerNorm(), nn.LeakyReLU(_SLOPE))
    return nn.LeakyReLU(_SLOPE)


class Block(nn.Module):
    """``block(c, k)``: TC(k,1) -> A -> C(k,1) -> A; the spatial size is unchanged."""

    def __init__(self, cin: int, cout: int, k: int, *, norm: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, k), _act(norm),
            nn.Conv2d(cout, cout, k), _act(norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Pool(nn.Module):
    """``pool(c)``: TC(3,1) -> A -> C(3,2) -> A; output side ``ceil(n / 2)``."""

    def __init__(self, cin: int, cout: int, *, norm: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, 3), _act(norm),
            nn.Conv2d(cout, cout, 3, stride=2), _act(norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Up(nn.Module):
    """``up(c)``: TC(4,2) -> A (side 2n+2) -> C(3,1) -> A; output side exactly 2n."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, 4, stride=2), _act(True),
            nn.Conv2d(cout, cout, 3), _act(True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Multi(nn.Module):
    """``multi(c, ks)`` (the code's "xception"): parallel ``block(c/len(ks), k)``, concatenated."""

    def __init__(self, cin: int, cout: int, ks: Sequence[int]) -> None:
        super().__init__()
        if cout % len(ks):
            raise ValueError(f"cout must split evenly over {len(ks)} branches (got {cout})")
        self.branches = nn.ModuleList(Block(cin, cout // len(ks), k) for k in ks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)


class ResStack(nn.Module):
    """``res_stack(n, c)``: ``x = block(c, 3)(x)``, then n times ``x = x + block(c, 3)(x)``."""

    def __init__(self, cin: int, c: int, n: int) -> None:
        super().__init__()
        self.first = Block(cin, c, 3)
        self.rest = nn.ModuleList(Block(c, c, 3) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(x)
        for block in self.rest:
            x = x + block(x)
        return x


class _PadTo8(nn.Module):
    """Base for generators: reflect-pad H, W up to a multiple of 8, crop back.

    The pads come from the tensor's own (possibly symbolic) sizes with no Python
    branch on their values, so an ONNX export with dynamic H, W stays correct.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        ph = (8 - h % 8) % 8
        pw = (8 - w % 8) % 8
        y = self.core(F.pad(x, (0, pw, 0, ph), mode="reflect"))
        return y[..., :h, :w]

    def core(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class PaperGenerator(_PadTo8):
    """The authors' released generator (method spec §3.2); 13,780,111 parameters.

    Used for both G (noisy -> clear) and F (clear -> noisy).
    """

    def __init__(self) -> None:
        super().__init__()
        self.e1 = nn.Sequential(Block(1, 64, 3, norm=False), Multi(64, 64, (1, 3, 5, 7)))
        self.e2 = nn.Sequential(Pool(64, 64), Block(64, 64, 3), Multi(64, 64, (3, 5)))
        self.e3 = nn.Sequential(Pool(64, 64), Block(64, 64, 3), Multi(64, 64, (3, 5)))
        self.e4 = nn.Sequential(Pool(64, 128), Block(128, 128, 3), Multi(128, 128, (3, 5)))
        self.trunk = ResStack(128, 192, 16)
        self.u3, self.d3 = Up(192, 64), nn.Sequential(Block(64, 64, 3), Multi(64, 64, (3, 5)))
        self.u2, self.d2 = Up(64, 64), nn.Sequential(Block(64, 64, 3), Multi(64, 64, (3, 5)))
        self.u1, self.d1 = Up(64, 64), nn.Sequential(Block(64, 64, 3), Multi(64, 64, (1, 3, 5, 7)))
        self.out = nn.Sequential(
            nn.ConvTranspose2d(64, 8, 9), _act(True), nn.Conv2d(8, 1, 9), nn.Tanh(),
        )
        _init_keras(self)

    def core(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.e1(x)
        e2 = self.e2(e1)
        e3 = self.e3(e2)
        t = self.trunk(self.e4(e3))
        d3 = self.d3(self.u3(t) + e3)  # skips are additions, as in the code
        d2 = self.d2(self.u2(d3) + e2)
        d1 = self.d1(self.u1(d2) + e1)
        return self.out(d1)


class LiteGenerator(_PadTo8):
    """A small 3-level U-Net for CPUs: 16 / 32 / 48 channels, additive skips, tanh.

    'Same'-padded 3x3 convolutions with LeakyReLU(0.2); stride-2 convolutions down,
    2x2 stride-2 transposed convolutions up. No normalisation layers: a per-frame
    norm costs full-frame reductions at inference and makes a pixel's output
    depend on the whole frame, which blind-spot training does not want.
    """

    def __init__(self, *, widths: tuple[int, int, int] = (16, 32, 48), residual: bool = False,
                 dilations: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.residual = residual

        def conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation),
                                 nn.LeakyReLU(_SLOPE))

        self.enc1 = nn.Sequential(conv(1, c1), conv(c1, c1))
        self.enc2 = nn.Sequential(conv(c1, c2, 2), conv(c2, c2))
        self.bottom = nn.Sequential(conv(c2, c3, 2), *(conv(c3, c3, dilation=d) for d in dilations))
        self.up2 = nn.ConvTranspose2d(c3, c2, 2, stride=2)
        self.dec2 = conv(c2, c2)
        self.up1 = nn.ConvTranspose2d(c2, c1, 2, stride=2)
        self.dec1 = conv(c1, c1)
        self.out = nn.Conv2d(c1, 1, 1) if residual else nn.Sequential(nn.Conv2d(c1, 1, 1), nn.Tanh())
        _init_keras(self)
        if residual:  # start as the identity: the correction is learnt from zero
            nn.init.zeros_(self.out.weight)

    def core(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        b = self.bottom(e2)
        d2 = self.dec2(self.up2(b) + e2)
        d1 = self.dec1(self.up1(d2) + e1)
        return x + self.out(d1) if self.residual else self.out(d1)


def build_generator(size: GeneratorSize) -> nn.Module:
    """A fresh generator of the given size (``"paper"``, ``"lite"``, ``"lite-residual"`` or
    ``"lite-dilated"``).

    Examples
    --------
    >>> g = build_generator("lite")
    >>> g(torch.zeros(1, 1, 13, 21)).shape
    torch.Size([1, 1, 13, 21])
    """
    if size == "paper":
        return PaperGenerator()
    if size == "lite":
        return LiteGenerator()
    if size == "lite-residual":
        return LiteGenerator(residual=True)
    if size == "lite-dilated":
        return LiteGenerator(residual=True, dilations=(2, 3))
    raise ValueError(f"generator size must be 'paper', 'lite', 'lite-residual' or 'lite-dilated' (got {size!r})")


class Critic(nn.Module):
    """The WGAN critic D (method spec §3.3), for square patches of side ``patch``.

    Four ``pool`` stages (64, 64, 128, 128 channels; the first without norm), each
    followed by Dropout(0.25), then Flatten and a linear Dense(1). The authors
    hard-wired ``patch=128`` (8x8x128 into the Dense layer, 636,237 parameters);
    here the Dense layer is sized for ``ceil(patch / 16)**2 * 128`` features.
    """

    def __init__(self, *, patch: int = 128, dropout: float = 0.25) -> None:
        super().__init__()
        if patch < 16:
            raise ValueError(f"critic patch side must be >= 16 (got {patch})")
        self.patch = patch
        side = patch
        for _ in range(4):
            side = math.ceil(side / 2)
        self.features = nn.Sequential(
            Pool(1, 64, norm=False), nn.Dropout(dropout),
            Pool(64, 64), nn.Dropout(dropout),
            Pool(64, 128), nn.Dropout(dropout),
            Pool(128, 128), nn.Dropout(dropout),
        )
        self.head = nn.Linear(128 * side * side, 1)
        _init_keras(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.patch, self.patch):
            raise ValueError(
                f"critic expects {self.patch}x{self.patch} patches "
                f"(got {tuple(x.shape[-2:])})")
        return self.head(self.features(x).flatten(1))


def gaussian_kernel(*, variance: float = 15.0, radius: int = 16) -> torch.Tensor:
    """Centred Gaussian ``exp(-d^2 / (2 variance))`` of side ``2 radius + 1``, sum 1."""
    r = torch.arange(-radius, radius + 1, dtype=torch.float64)
    d2 = r[:, None] ** 2 + r[None, :] ** 2
    k = torch.exp(-d2 / (2 * variance))
    return (k / k.sum()).float()


class LowPass(nn.Module):
    """The fixed low-pass filter network L (method spec §3.4).

    One frozen 33x33 convolution, zero 'same' padding, no bias. Deliberate fix:
    the authors' code meant a centred Gaussian of variance 15 but computed
    ``(r-16)^2`` with Python XOR and masked about the kernel's corner, giving a
    shifted quarter-disc. We use the intended centred Gaussian (variance 15,
    radius 16 -> 33x33, normalised to sum 1).
    """

    def __init__(self, *, variance: float = 15.0, radius: int = 16) -> None:
        super().__init__()
        self.radius = radius
        self.register_buffer("kernel", gaussian_kernel(variance=variance, radius=radius)[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel, padding=self.radius)


def count_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def macs_per_pixel(model: nn.Module, *, side: int = 128) -> float:
    """Multiply-adds per input pixel of a 1-channel image model, counted with hooks.

    Counts Conv2d and ConvTranspose2d (the bulk of the cost) on one ``side x side``
    input. A convolution costs ``cin/groups * k_h * k_w`` MACs per output element;
    a transposed convolution the same per *input* element times ``cout``.
    """
    total = 0

    def conv_hook(mod: nn.Conv2d, inputs, output) -> None:
        nonlocal total
        kh, kw = mod.kernel_size
        total += output.numel() * (mod.in_channels // mod.groups) * kh * kw

    def tconv_hook(mod: nn.ConvTranspose2d, inputs, output) -> None:
        nonlocal total
        kh, kw = mod.kernel_size
        total += inputs[0].numel() * (mod.out_channels // mod.groups) * kh * kw

    handles = []
    for m in model.modules():
        if isinstance(m, nn.ConvTranspose2d):
            handles.append(m.register_forward_hook(tconv_hook))
        elif isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 1, side, side))
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return total / (side * side)
