"""The TensorRT and CUDA runtime libraries: import them lazily, check every CUDA call, name the GPU.

Both the runtime (`engines.tensorrt`) and the builder (`engines.tensorrt_build`) use these; neither
imports the other's internals. TensorRT's libraries are not on PyPI (the PyPI packages are stubs
that fetch from NVIDIA's index), so the messages say where to get them.
"""
from __future__ import annotations

from .base import BackendUnavailableError, EngineError

__all__ = ["TENSORRT_INSTALL", "cuda_call", "gpu_name", "import_tensorrt"]

TENSORRT_INSTALL = (
    "TensorRT comes from NVIDIA's package index, not PyPI: "
    "pip install --extra-index-url https://pypi.nvidia.com tensorrt cuda-python"
)


def import_tensorrt():
    """Return ``(tensorrt, cudart)`` or raise `BackendUnavailableError` naming what is missing."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as e:  # OSError: the wheel is there but its libraries are not
        raise BackendUnavailableError(
            f"tensorrt back end needs the TensorRT 10 Python package ({TENSORRT_INSTALL}) (got: {e})"
        ) from e
    major = int(str(trt.__version__).split(".")[0])
    if major < 10:
        raise BackendUnavailableError(f"tensorrt back end needs TensorRT >= 10 (got {trt.__version__})")
    try:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # older cuda-python
    except (ImportError, OSError) as e:
        raise BackendUnavailableError(
            f"tensorrt back end needs cuda-python's cudart ({TENSORRT_INSTALL}) (got: {e})"
        ) from e
    return trt, cudart


def cuda_call(result):
    """Check a cuda-python ``cudart`` result ``(err, *values)``; return the value(s), or None.

    Every CUDA runtime call of this back end goes through here, so a failing call raises
    `EngineError` with CUDA's own name and description of the error instead of passing silently.
    """
    _, cudart = import_tensorrt()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        _, name = cudart.cudaGetErrorName(err)
        _, text = cudart.cudaGetErrorString(err)
        raise EngineError(f"CUDA call failed: {name.decode()}: {text.decode()} (got error {int(err)})")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def gpu_name(device_id: int = 0) -> str:
    """The CUDA device's name, e.g. ``"NVIDIA H100 80GB HBM3"``."""
    _, cudart = import_tensorrt()
    props = cuda_call(cudart.cudaGetDeviceProperties(device_id))
    name = props.name
    return (name.decode() if isinstance(name, bytes) else str(name)).rstrip("\x00")
