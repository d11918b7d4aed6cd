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
    "Selection",
    "check_batch",
    "cuda_available",
    "open_engine",
    "select_backend",
    "tensorrt_available",
]

Backend = Literal["auto", "pytorch", "onnxruntime", "tensorrt"]
BACKENDS = ("pytorch", "onnxruntime", "tensorrt")
GPU_EXTRA = "pip install n2a[gpu]"  # onnxruntime-gpu; CUDA torch comes from the user's own install


def __getattr__(name: str):  # engines.select imports onnxruntime/torch only when called
    if name in ("Selection", "select_backend"):
        from . import select

        return getattr(select, name)
    raise AttributeError(f"module 'engines' has no attribute {name!r}")


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
    from .select import TENSORRT_INSTALL
    from .tensorrt import import_tensorrt

    try:
        import_tensorrt()
    except BackendUnavailableError as e:
        cause = e.__cause__ if e.__cause__ is not None else e  # the import error itself
        return Availability(False, f"tensorrt back end needs TensorRT >= 10 and cuda-python "
                                   f"({TENSORRT_INSTALL}) (got: {cause})")
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
        ``"auto"`` picks the fastest installed (`engines.select`): TensorRT, else PyTorch on CUDA
        compiled with CUDA graphs, else ONNX Runtime's CUDA provider, else ONNX Runtime on the
        CPU; ``engine.selection.message()`` says which and why not the faster ones. A named back
        end that cannot run raises `BackendUnavailableError`; there is no silent fallback.
    device
        ``"cpu"`` or ``"cuda[:N]"``; default: CUDA for tensorrt, CUDA if present for pytorch,
        CPU for onnxruntime.
    precision
        ``"fp32"``, or ``"fp16"``/``"bf16"`` where the back end supports it on that device.
    **options
        Passed to the back end's constructor (e.g. ``cuda_graph=True``, ``compile=True`` for pytorch,
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
    selection = None
    if backend == "auto":
        from .select import select_backend

        selection = select_backend(device, precision)
        backend, device = selection.backend, selection.device
        options = {**selection.options, **options}
    engine = _open(backend, device, checkpoint=checkpoint, config=config, precision=precision, **options)
    engine.selection = selection
    return engine


def _open(backend: str, device: str | None, **kwargs) -> Engine:
    """The named back end's engine, or `BackendUnavailableError` saying what is missing."""
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
            "tensorrt back end needs a CUDA GPU (got none visible to torch); run it on a GPU machine"
        )
    from .tensorrt import TensorRTEngine

    return TensorRTEngine(device=device or "cuda:0", **kwargs)


def _torch_build() -> str:
    try:
        import torch
    except (ImportError, OSError) as e:
        return f"no torch ({e})"
    return f"torch {torch.__version__}"
