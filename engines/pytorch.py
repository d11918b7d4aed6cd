"""PyTorch back end: eager on CPU, or CUDA with autocast, pinned buffers, a stream and CUDA graphs.

On CUDA, ``precision="fp32"`` switches cuDNN's TF32 convolutions off while the engine is active
(process-wide: PyTorch's default is TF32), and ``precision="fp16"``/``"bf16"`` runs the
convolutions under autocast while every normalisation layer runs in fp32 (its input cast up,
autocast switched off inside it): the per-sample mean and std over a whole frame lose too much in
half precision. Frames go through
pinned host buffers on the engine's own stream. With ``cuda_graph=True`` the first batch of a
shape is captured into a CUDA graph and later batches of that shape replay it; a new shape is
captured again (counted in ``describe()["graph_captures"]``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Engine, EngineError, Precision

__all__ = ["PyTorchEngine"]

_GRAPH_WARMUP = 3  # eager runs on the capture stream before capturing (cuDNN picks its kernels)


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
        precision: Precision = "fp32",
        cuda_graph: bool = False,
        threads: int | None = None,
    ) -> None:
        super().__init__(checkpoint=checkpoint, config=config, device=device, precision=precision)
        on_cuda = device.startswith("cuda")
        if not on_cuda and device != "cpu":
            raise EngineError(f"pytorch engine runs on 'cpu' or 'cuda[:N]' (got device {device!r})")
        if precision not in ("fp32", "fp16", "bf16"):
            raise EngineError(f"expected precision fp32, fp16 or bf16 (got {precision!r})")
        if not on_cuda and precision != "fp32":
            raise EngineError(f"pytorch on CPU runs fp32 only (got precision {precision!r})")
        if cuda_graph and not on_cuda:
            raise EngineError("CUDA graphs need a CUDA device (got device 'cpu')")
        if threads is not None and threads < 1:
            raise EngineError(f"expected threads >= 1 (got {threads})")
        self.cuda_graph = cuda_graph
        self.threads = threads
        self._model = None
        self._torch = None
        self._saved_tf32 = None
        self._reset_cuda_state()

    def _reset_cuda_state(self) -> None:
        self._stream = None
        self._host_in = self._host_out = None  # pinned, reallocated when the shape changes
        self._graph = None
        self._graph_in = self._graph_out = None
        self._graph_shape: tuple[int, ...] | None = None
        self._graph_captures = 0

    # -- hooks -----------------------------------------------------------------------------
    def _activate(self) -> None:
        import torch

        from noise2atom.checkpoint import load_generator

        self._torch = torch
        if self.threads is not None and not self.device.startswith("cuda"):
            torch.set_num_threads(self.threads)
        _, generator = load_generator(self.checkpoint)
        if self.device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise EngineError(f"pytorch engine asked for {self.device} but torch sees no CUDA device")
            if self.precision != "fp32":
                _keep_norms_fp32(generator)
            else:
                self._saved_tf32 = _ieee_convs(torch)
            generator = generator.to(self.device)
            self._stream = torch.cuda.Stream(device=self.device)
        self._model = generator.eval()

    def _deactivate(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()
        self._model = None
        self._reset_cuda_state()
        if self._saved_tf32 is not None:
            _restore_convs(self._torch, self._saved_tf32)
            self._saved_tf32 = None
        if self.device.startswith("cuda") and self._torch is not None:
            self._torch.cuda.empty_cache()

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        if self._stream is None:  # CPU
            with torch.inference_mode():
                out = self._model(torch.from_numpy(batch).unsqueeze(1)).squeeze(1)
            return out.numpy()
        return self._infer_cuda(batch)

    def _describe(self) -> dict[str, str]:
        info = {"cuda_graph": str(self.cuda_graph)}
        if self._torch is not None and not self.device.startswith("cuda"):
            info["threads"] = str(self._torch.get_num_threads())
        if self.device.startswith("cuda") and self._torch is not None:
            info["device_name"] = self._torch.cuda.get_device_name(self.device)
            info["graph_captures"] = str(self._graph_captures)
        return info

    # -- CUDA ------------------------------------------------------------------------------
    def _forward(self, x):
        """(N, H, W) device tensor -> (N, H, W) float32, under autocast when asked."""
        torch = self._torch
        if self.precision == "fp32":
            return self._model(x.unsqueeze(1)).squeeze(1)
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        # cache_enabled=False: cached weight casts must not outlive a CUDA-graph capture.
        with torch.autocast("cuda", dtype=dtype, cache_enabled=False):
            y = self._model(x.unsqueeze(1)).squeeze(1)
        return y.float()

    def _pinned(self, shape: tuple[int, ...]) -> None:
        torch = self._torch
        if self._host_in is None or tuple(self._host_in.shape) != shape:
            self._host_in = torch.empty(shape, dtype=torch.float32, pin_memory=True)
            self._host_out = torch.empty(shape, dtype=torch.float32, pin_memory=True)

    def _infer_cuda(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        shape = tuple(batch.shape)
        self._pinned(shape)
        self._host_in.numpy()[...] = batch
        with torch.no_grad(), torch.cuda.stream(self._stream):
            if self.cuda_graph:
                if self._graph_shape != shape:
                    self._capture(shape)
                self._graph_in.copy_(self._host_in, non_blocking=True)
                self._graph.replay()
                self._host_out.copy_(self._graph_out, non_blocking=True)
            else:
                x = self._host_in.to(self.device, non_blocking=True)
                y = self._forward(x)
                self._host_out.copy_(y, non_blocking=True)
        self._stream.synchronize()
        return self._host_out.numpy().copy()

    def _capture(self, shape: tuple[int, ...]) -> None:
        torch = self._torch
        self._graph = None  # free the previous graph's pool before capturing a new one
        static_in = torch.zeros(shape, dtype=torch.float32, device=self.device)
        for _ in range(_GRAPH_WARMUP):
            self._forward(static_in)
        self._stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self._stream):
            static_out = self._forward(static_in)
        self._graph, self._graph_in, self._graph_out = graph, static_in, static_out
        self._graph_shape = shape
        self._graph_captures += 1


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
