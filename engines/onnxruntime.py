"""ONNX Runtime back end: the CPU default, with CUDA / TensorRT execution providers when installed.

The session uses every core for intra-op parallelism (idle threads sleep rather than spin), all
graph optimisations, and IO binding: the output is written straight into an array we allocate (on
CUDA the input is copied to the device by the binding and the output fetched once per batch).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import BackendUnavailableError, Engine, EngineError, Precision
from .export import INPUT_NAME, OUTPUT_NAME, check_onnx_model, export_onnx

__all__ = ["OnnxRuntimeEngine", "available_providers"]


def _ort():
    try:
        import onnxruntime
    except (ImportError, OSError) as e:
        raise BackendUnavailableError(
            f"onnxruntime back end needs the onnxruntime package (pip install onnxruntime) (got: {e})"
        ) from e
    return onnxruntime


def available_providers() -> list[str]:
    """Execution providers of the installed onnxruntime (empty if it is missing)."""
    try:
        return list(_ort().get_available_providers())
    except BackendUnavailableError:
        return []


class OnnxRuntimeEngine(Engine):
    """The exported generator run by ONNX Runtime.

    Parameters
    ----------
    checkpoint
        Checkpoint file; exported to ONNX on first use (cached next to it).
    config
        Its ``ModelConfig``.
    device
        ``"cpu"`` or ``"cuda[:N]"`` (needs onnxruntime-gpu's CUDA provider).
    precision
        ``"fp32"``; ``"fp16"`` only through the TensorRT provider.
    onnx_path
        Use this ONNX file instead of the cached export; it must come from ``checkpoint``.
    threads
        Intra-op threads; default: the cores this process may use.
    spin
        Let idle intra-op threads spin (lower latency on dedicated cores; off by default).
    """

    backend = "onnxruntime"

    def __init__(
        self,
        *,
        checkpoint: str | Path,
        config,
        device: str = "cpu",
        precision: Precision = "fp32",
        onnx_path: str | Path | None = None,
        threads: int | None = None,
        spin: bool = False,
    ) -> None:
        super().__init__(checkpoint=checkpoint, config=config, device=device, precision=precision)
        if device != "cpu" and not device.startswith("cuda"):
            raise EngineError(f"onnxruntime engine runs on 'cpu' or 'cuda[:N]' (got device {device!r})")
        if precision not in ("fp32", "fp16"):
            raise EngineError(f"onnxruntime engine runs fp32 (or fp16 via TensorRT) (got {precision!r})")
        self.onnx_path = Path(onnx_path) if onnx_path is not None else None
        self.threads = threads or _usable_cores()
        self.spin = spin
        self._session = None
        self._binding = None
        # Decided now, so an unavailable provider fails at open_engine(), not later.
        self._requested = self._choose_providers(_ort())
        self._providers: list[str] = []

    def _choose_providers(self, ort) -> list:
        have = set(ort.get_available_providers())
        if self.device == "cpu":
            if self.precision != "fp32":
                raise EngineError(f"onnxruntime on CPU runs fp32 only (got precision {self.precision!r})")
            return ["CPUExecutionProvider"]
        device_id = int(self.device.partition(":")[2] or 0)
        if "CUDAExecutionProvider" not in have:
            raise BackendUnavailableError(
                f"onnxruntime on {self.device} needs the CUDA execution provider (got providers "
                f"{sorted(have)}; install onnxruntime-gpu: pip install n2a[gpu] onnxruntime-gpu)"
            )
        providers: list = []
        if "TensorrtExecutionProvider" in have:
            cache = str(_trt_cache())
            providers.append((
                "TensorrtExecutionProvider",
                {
                    "device_id": device_id,
                    "trt_fp16_enable": self.precision == "fp16",
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": cache,
                    "trt_timing_cache_enable": True,
                    "trt_timing_cache_path": cache,
                },
            ))
        elif self.precision != "fp32":
            raise EngineError("onnxruntime fp16 needs the TensorRT execution provider (got none)")
        providers.append(("CUDAExecutionProvider", {"device_id": device_id}))
        providers.append("CPUExecutionProvider")
        return providers

    def _activate(self) -> None:
        ort = _ort()
        if self.onnx_path is None:
            path = export_onnx(self.checkpoint)
        else:
            check_onnx_model(self.onnx_path, self.checkpoint_sha256)
            path = self.onnx_path
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Idle workers sleep instead of spinning: on a shared 2-core machine (the streamer's
        # network and viewer threads, other jobs) spinning cost 25% at 512² (159 vs 121 ms).
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spin else "0")
        options.log_severity_level = 3  # errors only: the TRT provider is chatty
        self._session = ort.InferenceSession(str(path), sess_options=options, providers=self._requested)
        self._providers = self._session.get_providers()
        self._binding = self._session.io_binding()
        self.onnx_file = path

    def _deactivate(self) -> None:
        self._binding = None
        self._session = None

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        binding = self._binding
        out = np.empty_like(batch)
        if self.device == "cpu":
            binding.bind_cpu_input(INPUT_NAME, batch)
            binding.bind_output(
                OUTPUT_NAME, "cpu", 0, np.float32, list(out.shape), out.ctypes.data
            )
            self._session.run_with_iobinding(binding)
        else:
            binding.bind_cpu_input(INPUT_NAME, batch)  # copied to the device by ORT
            binding.bind_output(OUTPUT_NAME, "cuda", int(self.device.partition(":")[2] or 0))
            self._session.run_with_iobinding(binding)
            out[...] = binding.copy_outputs_to_cpu()[0]
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        return out

    def _describe(self) -> dict[str, str]:
        return {"providers": ",".join(self._providers), "threads": str(self.threads)}


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _trt_cache() -> Path:
    from .export import cache_dir

    path = cache_dir() / "ort-trt"
    path.mkdir(parents=True, exist_ok=True)
    return path
