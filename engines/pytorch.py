"""PyTorch back end: eager on CPU; on CUDA compiled, replayed as CUDA graphs per shape, two streams.

Every batch goes through a `ShapeGraphCache` (engines/graph_cache.py): per input shape, static
buffers (pinned on the host on CUDA) and, with ``cuda_graph=True``, a CUDA graph captured from the
generator, which ``compile=True`` first hands to ``torch.compile`` with fixed shapes. Uploads run
on a copy stream and compute on the engine's own stream, so a caller that uses :meth:`submit`
(frame n+1 submitted before frame n is collected) overlaps the upload with the compute; results
are copied out before the next replay. On the CPU the same cache runs the generator eagerly.

On CUDA, ``precision="fp32"`` switches cuDNN's TF32 convolutions off while the engine is active
(process-wide: PyTorch's default is TF32), and ``precision="fp16"``/``"bf16"`` runs the
convolutions under autocast while every normalisation layer runs in fp32 (its input cast up,
autocast switched off inside it): the per-sample mean and std over a whole frame lose too much in
half precision.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Engine, EngineError, Precision
from .config import EngineConfig

__all__ = ["PyTorchEngine"]

_DEFAULTS = EngineConfig()


class PyTorchEngine(Engine):
    """The generator run by PyTorch.

    Parameters
    ----------
    checkpoint
        Checkpoint file.
    config
        Its ``ModelConfig`` (from ``noise2atom.checkpoint.load_checkpoint``).
    device
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    precision
        ``"fp32"``; on CUDA also ``"fp16"`` or ``"bf16"`` (autocast, normalisation in fp32).
    cuda_graph
        CUDA only: capture a CUDA graph per input shape and replay it.
    compile
        CUDA only: ``torch.compile`` the generator with fixed shapes (one compilation per shape;
        the first batch of a shape takes tens of seconds). Usually with ``cuda_graph=True``.
    max_shapes
        Shapes kept at once (graphs, buffers); the least recently used is dropped beyond it.
    threads
        CPU only: ``torch.set_num_threads(threads)`` on enter (process-wide; default: leave it).
        On a loaded 2-core machine one thread beat two by 2-100x: torch's OpenMP workers wait
        at every layer for a descheduled peer.
    """

    backend = "pytorch"

    def __init__(
        self,
        *,
        checkpoint: str | Path,
        config,
        device: str = "cpu",
        precision: Precision = _DEFAULTS.precision,
        cuda_graph: bool | None = _DEFAULTS.cuda_graph,
        compile: bool = _DEFAULTS.compile,
        max_shapes: int = _DEFAULTS.max_shapes,
        threads: int | None = _DEFAULTS.threads,
        **common,
    ) -> None:
        super().__init__(checkpoint=checkpoint, config=config, device=device, precision=precision, **common)
        cuda_graph = bool(cuda_graph)  # None (the EngineConfig default): off unless asked
        on_cuda = device.startswith("cuda")
        if not on_cuda and device != "cpu":
            raise EngineError(f"pytorch engine runs on 'cpu' or 'cuda[:N]' (got device {device!r})")
        if precision not in ("fp32", "fp16", "bf16"):
            raise EngineError(f"expected precision fp32, fp16 or bf16 (got {precision!r})")
        if not on_cuda and precision != "fp32":
            raise EngineError(f"pytorch on CPU runs fp32 only (got precision {precision!r})")
        if cuda_graph and not on_cuda:
            raise EngineError("CUDA graphs need a CUDA device (got device 'cpu')")
        if compile and not on_cuda:
            raise EngineError("torch.compile is used on CUDA only (got device 'cpu'; the CPU runs eager)")
        if max_shapes < 1:
            raise EngineError(f"expected max_shapes >= 1 (got {max_shapes})")
        if threads is not None and threads < 1:
            raise EngineError(f"expected threads >= 1 (got {threads})")
        self.cuda_graph = cuda_graph
        self.compile = compile
        self.max_shapes = max_shapes
        self.threads = threads
        self._model = None
        self._torch = None
        self._saved_tf32 = None
        self._runner = None  # ShapeGraphCache while active

    # -- hooks -----------------------------------------------------------------------------
    def _activate(self) -> None:
        import torch

        from noise2atom.checkpoint import load_generator

        from .graph_cache import ShapeGraphCache

        self._torch = torch
        if self.threads is not None and not self.device.startswith("cuda"):
            torch.set_num_threads(self.threads)
        _, generator = load_generator(self._take_weights() or self.checkpoint)
        fn = self._forward
        if self.device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise EngineError(f"pytorch engine asked for {self.device} but torch sees no CUDA device")
            if self.precision != "fp32":
                _keep_norms_fp32(generator)
            else:
                self._saved_tf32 = _ieee_convs(torch)
            generator = generator.to(self.device)
            if self.compile:
                # Fixed shapes: one specialised kernel set per frame shape; our own CUDA graphs,
                # not inductor's (its "reduce-overhead" graphs overwrite outputs on the next call).
                fn = torch.compile(self._forward, dynamic=False, fullgraph=False)
        self._model = generator.eval()
        self._runner = ShapeGraphCache(fn, device=self.device, cuda_graph=self.cuda_graph,
                                       max_shapes=self.max_shapes)

    def _deactivate(self) -> None:
        if self._runner is not None:
            self._runner.clear()
        self._runner = None
        self._model = None
        if self._saved_tf32 is not None:
            _restore_convs(self._torch, self._saved_tf32)
            self._saved_tf32 = None
        if self.device.startswith("cuda") and self._torch is not None:
            self._torch.cuda.empty_cache()

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._runner(batch)

    def _submit(self, batch: np.ndarray):
        return self._runner.submit(batch)

    def _describe(self) -> dict[str, str]:
        info = {"cuda_graph": str(self.cuda_graph), "compiled": str(self.compile)}
        if self._torch is not None and not self.device.startswith("cuda"):
            info["threads"] = str(self._torch.get_num_threads())
        if self.device.startswith("cuda") and self._torch is not None:
            info["device_name"] = self._torch.cuda.get_device_name(self.device)
        if self._runner is not None:
            info.update(self._runner.stats())
        return info

    def _forward(self, x):
        """(N, H, W) tensor -> (N, H, W) float32, under autocast when asked."""
        torch = self._torch
        if self.precision == "fp32":
            return self._model(x.unsqueeze(1)).squeeze(1)
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        # cache_enabled=False: cached weight casts must not outlive a CUDA-graph capture.
        with torch.autocast("cuda", dtype=dtype, cache_enabled=False):
            y = self._model(x.unsqueeze(1)).squeeze(1)
        return y.float()


def _ieee_convs(torch):
    """Make cuDNN convolutions true fp32 (PyTorch defaults them to TF32); return what to restore.

    Process-wide while the engine is active: "fp32" must mean fp32, or the back ends disagree
    by ~1e-3 instead of ~1e-6.
    """
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        saved = ("fp32_precision", conv.fp32_precision)
        conv.fp32_precision = "ieee"
    else:
        saved = ("allow_tf32", torch.backends.cudnn.allow_tf32)
        torch.backends.cudnn.allow_tf32 = False
    return saved


def _restore_convs(torch, saved) -> None:
    name, value = saved
    if name == "fp32_precision":
        torch.backends.cudnn.conv.fp32_precision = value
    else:
        torch.backends.cudnn.allow_tf32 = value


def _keep_norms_fp32(module) -> int:
    """Replace every normalisation layer by a wrapper that runs it in fp32 outside autocast."""
    import torch
    from torch import nn

    class Fp32Island(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            with torch.autocast("cuda", enabled=False):
                return self.inner(x.float())

    norm_types = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    targets = [
        (parent, name, child)
        for parent in module.modules()
        for name, child in parent.named_children()
        if isinstance(child, norm_types) or "Norm" in type(child).__name__
    ]
    for parent, name, child in targets:
        setattr(parent, name, Fp32Island(child))
    return len(targets)
