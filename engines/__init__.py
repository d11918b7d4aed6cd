"""Inference back ends behind one contract (`Engine`): PyTorch, ONNX Runtime and TensorRT.

>>> import engines
>>> sorted(engines.BACKENDS)
['onnxruntime', 'pytorch', 'tensorrt']
>>> engines.EngineConfig().precision
'fp32'

Importing this package is cheap: torch, onnxruntime and TensorRT are imported only when an engine
is opened. Modules: `base` (the contract and its errors), `config` (`EngineConfig`), `factory`
(`open_engine`), `select` (what can run here, ``auto``), the back ends `pytorch` (with
`graph_cache`), `onnxruntime` (with `onnx_fp16`) and `tensorrt` (runtime; `tensorrt_build` builds
plans, `tensorrt_lib` imports the libraries), `export` (checkpoint -> ONNX), `cache` (hash-checked
cache files), and the command lines in `engines.cli`.
"""
from __future__ import annotations

from .base import BackendUnavailableError, Engine, EngineBuildError, EngineError, Precision, check_batch
from .config import BACKENDS, Backend, EngineConfig, ShapeProfile
from .factory import open_engine
from .select import Availability, Selection, cuda_available, select_backend, tensorrt_available

__all__ = [
    "Availability",
    "BACKENDS",
    "Backend",
    "BackendUnavailableError",
    "Engine",
    "EngineBuildError",
    "EngineConfig",
    "EngineError",
    "Precision",
    "Selection",
    "ShapeProfile",
    "check_batch",
    "cuda_available",
    "open_engine",
    "select_backend",
    "tensorrt_available",
]
