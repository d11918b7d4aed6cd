"""Inference back ends behind one contract (`Engine`): PyTorch, ONNX Runtime and TensorRT.

>>> import engines
>>> sorted(engines.BACKENDS)
['onnxruntime', 'pytorch', 'tensorrt']

Importing this package is cheap: torch, onnxruntime and TensorRT are imported only when an engine
is opened.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, NamedTuple

from .base import BackendUnavailableError, Engine, EngineBuildError, EngineError, Precision, check_batch


__all__ = [
    "Availability",
    "BACKENDS",
    "BackendUnavailableError",
    "Engine",
    "EngineBuildError",
    "EngineError",
    "Precision",
    "check_batch",
    "cuda_available",
    "open_engine",
    "tensorrt_available",
]

Backend = Literal["auto", "pytorch", "onnxruntime", "tensorrt"]
BACKENDS = ("pytorch", "onnxruntime", "tensorrt")
GPU_EXTRA = "pip install n2a[gpu]"


def cuda_available() -> bool:
    """True when torch sees a CUDA device."""
    try:
        import torch
    except (ImportError, OSError):
        return False
    return torch.cuda.is_available()


class Availability(NamedTuple):
    """Whether a back end can be used, and if not, why; true only when it can.

    A plain ``(ok, why)`` tuple is always true, so ``if not tensorrt_available():`` never fired;
    this one is as true as ``ok`` and still unpacks as ``ok, why = ...``.

    >>> bool(Availability(False, "no tensorrt")), bool(Availability(True, ""))
    (False, True)
    """

    ok: bool
    reason: str

    def __bool__(self) -> bool:
        return bool(self.ok)


def tensorrt_available() -> Availability:
    """``Availability(True, "")`` when TensorRT and cuda-python import, else what is missing."""
    from .tensorrt import import_tensorrt

    try:
        import_tensorrt()
    except BackendUnavailableError as e:
        return Availability(False, str(e))
    return Availability(True, "")


def open_engine(
    checkpoint: str | Path,
    backend: Backend = "auto",
    device: str | None = None,
    precision: Precision = "fp32",
    **options,
) -> Engine:
    """Make the engine for a checkpoint (not yet entered: use it in a ``with`` block).

    Parameters
    ----------
    checkpoint
        A checkpoint file (``noise2atom.checkpoint.save_checkpoint``).
    backend
        ``"auto"`` picks TensorRT if it imports and a GPU is present, else PyTorch on CUDA,
        else ONNX Runtime on CPU. A named back end that cannot run raises
        `BackendUnavailableError`; there is no silent fallback.
    device
        ``"cpu"`` or ``"cuda[:N]"``; default: CUDA for tensorrt, CUDA if present for pytorch,
        CPU for onnxruntime.
    precision
        ``"fp32"``, or ``"fp16"``/``"bf16"`` where the back end supports it on that device.
    **options
        Passed to the back end's constructor (e.g. ``cuda_graph=True`` for pytorch,
        ``threads=`` for onnxruntime, ``profile=``/``streams=`` for tensorrt).

    Raises
    ------
    noise2atom.checkpoint.CheckpointError
        The checkpoint is missing, corrupt, truncated or of an unknown version.
    BackendUnavailableError
        The requested back end (or its device) is not available here.
    EngineError
        Unknown back end, device or precision.
    """
    from noise2atom.checkpoint import load_checkpoint

    if backend not in ("auto", *BACKENDS):
        raise EngineError(f"unknown back end: expected auto, {', '.join(BACKENDS)} (got {backend!r})")
    config = load_checkpoint(checkpoint).config
    if backend == "auto":
        backend = _auto_backend(device)
    kwargs = dict(checkpoint=checkpoint, config=config, precision=precision, **options)

    if backend == "pytorch":
        if device is None:
            device = "cuda" if cuda_available() else "cpu"
        if device.startswith("cuda") and not cuda_available():
            raise BackendUnavailableError(
                f"pytorch on {device} needs a CUDA build of torch and a GPU (got {_torch_build()}, "
                f"no CUDA device); install a CUDA torch build or use device='cpu'"
            )
        from .pytorch import PyTorchEngine

        return PyTorchEngine(device=device, **kwargs)
    if backend == "onnxruntime":
        from .onnxruntime import OnnxRuntimeEngine, _ort

        _ort()  # raises BackendUnavailableError naming the package
        return OnnxRuntimeEngine(device=device or "cpu", **kwargs)

    ok, why = tensorrt_available()
    if not ok:
        raise BackendUnavailableError(why)
    if not cuda_available():
        raise BackendUnavailableError(
            f"tensorrt back end needs a CUDA GPU (got none visible to torch); {GPU_EXTRA} on a GPU machine"
        )
    from .tensorrt import TensorRTEngine

    return TensorRTEngine(device=device or "cuda:0", **kwargs)


def _auto_backend(device: str | None) -> str:
    if device == "cpu":
        return "onnxruntime"
    if cuda_available():
        return "tensorrt" if tensorrt_available()[0] else "pytorch"
    if device is not None:
        raise BackendUnavailableError(
            f"device {device!r} asked for, but torch sees no CUDA device (got {_torch_build()})"
        )
    return "onnxruntime"


def _torch_build() -> str:
    try:
        import torch
    except (ImportError, OSError) as e:
        return f"no torch ({e})"
    return f"torch {torch.__version__}"
