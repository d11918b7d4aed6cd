"""ONNX Runtime back end: the CPU default, and the CUDA provider (onnxruntime-gpu) with CUDA graphs.

The CPU session uses every core for intra-op parallelism (idle threads sleep rather than spin), all
graph optimisations, and IO binding: the output is written straight into an array we allocate.

On CUDA (``pip install onnxruntime-gpu``, which replaces ``onnxruntime``) the session runs on the
CUDA execution provider with IO binding. With ``cuda_graph=True`` (the default there) each frame
shape gets its own session with ``enable_cuda_graph`` and input/output buffers fixed on the device
(ONNX Runtime captures a graph on a session's first run and replays it after, which needs fixed
shapes and addresses); at most ``max_shapes`` such sessions are kept. A frame is copied into the
bound device input, the graph replays, and the output is copied to a fresh host array before the
next run. ``precision="fp16"`` runs an fp16 copy of the model (`engines.onnx_fp16`, normalisation
nodes kept in fp32). ONNX Runtime's TensorRT provider needs TensorRT from NVIDIA's own package
index, so it is used only when asked (``tensorrt_provider=True``).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .base import BackendUnavailableError, Engine, EngineError, Precision
from .cache import cache_dir
from .config import EngineConfig
from .export import INPUT_NAME, OUTPUT_NAME, check_onnx_model, export_onnx

__all__ = ["OnnxRuntimeEngine", "available_providers", "fix_input_shape", "input_dim_names"]

_DEFAULTS = EngineConfig()


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
        ``"fp32"``; on CUDA also ``"fp16"`` (an fp16 copy of the model, norms in fp32).
    onnx_path
        Use this ONNX file instead of the cached export; it must come from ``checkpoint``.
    threads
        Intra-op threads; default: the cores this process may use.
    spin
        Let idle intra-op threads spin (lower latency on dedicated cores; off by default).
    cuda_graph
        CUDA only: one session per frame shape with ``enable_cuda_graph`` (default on CUDA).
    max_shapes
        CUDA graphs: sessions kept at once; the least recently used is closed beyond it.
    tensorrt_provider
        CUDA only: put ONNX Runtime's TensorRT provider first (needs TensorRT from NVIDIA's index).
    """

    backend = "onnxruntime"

    def __init__(
        self,
        *,
        checkpoint: str | Path,
        config,
        device: str = "cpu",
        precision: Precision = _DEFAULTS.precision,
        onnx_path: str | Path | None = _DEFAULTS.onnx_path,
        threads: int | None = _DEFAULTS.threads,
        spin: bool = _DEFAULTS.spin,
        cuda_graph: bool | None = _DEFAULTS.cuda_graph,
        max_shapes: int = _DEFAULTS.max_shapes,
        tensorrt_provider: bool = _DEFAULTS.tensorrt_provider,
        **common,
    ) -> None:
        super().__init__(checkpoint=checkpoint, config=config, device=device, precision=precision, **common)
        if device != "cpu" and not device.startswith("cuda"):
            raise EngineError(f"onnxruntime engine runs on 'cpu' or 'cuda[:N]' (got device {device!r})")
        if precision not in ("fp32", "fp16"):
            raise EngineError(f"onnxruntime engine runs fp32 (or fp16 on CUDA) (got {precision!r})")
        on_cuda = device.startswith("cuda")
        if cuda_graph and not on_cuda:
            raise EngineError("CUDA graphs need a CUDA device (got device 'cpu')")
        if tensorrt_provider and not on_cuda:
            raise EngineError("the TensorRT provider needs a CUDA device (got device 'cpu')")
        if max_shapes < 1:
            raise EngineError(f"expected max_shapes >= 1 (got {max_shapes})")
        self.onnx_path = Path(onnx_path) if onnx_path is not None else None
        self.threads = threads or _usable_cores()
        self.spin = spin
        self.tensorrt_provider = tensorrt_provider
        # The TensorRT provider builds its own engines; CUDA graphs are the CUDA provider's.
        self.cuda_graph = on_cuda and not tensorrt_provider if cuda_graph is None else cuda_graph
        self.max_shapes = max_shapes
        self.device_id = int(device.partition(":")[2] or 0) if on_cuda else 0
        self._session = None
        self._binding = None
        self._model_source = None  # path or fp16 bytes, what every session loads
        self._graphs: OrderedDict = OrderedDict()  # shape -> (session, binding, input, output)
        self.graph_captures = 0
        # Decided now, so an unavailable provider fails at open_engine(), not later.
        self._requested = self._choose_providers(_ort())
        self._providers: list[str] = []

    def _choose_providers(self, ort) -> list:
        have = set(ort.get_available_providers())
        if self.device == "cpu":
            if self.precision != "fp32":
                raise EngineError(f"onnxruntime on CPU runs fp32 only (got precision {self.precision!r})")
            return ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" not in have:
            raise BackendUnavailableError(
                f"onnxruntime on {self.device} needs the CUDA execution provider (got providers "
                f"{sorted(have)}; install onnxruntime-gpu in place of onnxruntime: "
                f"pip uninstall onnxruntime && pip install n2a[gpu])"
            )
        providers: list = []
        if self.tensorrt_provider:
            if "TensorrtExecutionProvider" not in have:
                raise BackendUnavailableError(
                    f"tensorrt_provider=True needs onnxruntime's TensorRT provider (got {sorted(have)})")
            cache = str(_trt_cache())
            providers.append((
                "TensorrtExecutionProvider",
                {
                    "device_id": self.device_id,
                    "trt_fp16_enable": self.precision == "fp16",
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": cache,
                    "trt_timing_cache_enable": True,
                    "trt_timing_cache_path": cache,
                },
            ))
        cuda = {"device_id": str(self.device_id)}
        if self.cuda_graph:
            cuda["enable_cuda_graph"] = "1"
        providers.append(("CUDAExecutionProvider", cuda))
        if not self.cuda_graph:  # a graph must run wholly on CUDA: no CPU fallback nodes
            providers.append("CPUExecutionProvider")
        return providers

    def _activate(self) -> None:
        ort = _ort()
        weights = self._take_weights()
        if self.onnx_path is None:
            path = export_onnx(self.checkpoint, sha256=self.checkpoint_sha256, weights=weights)
        else:
            check_onnx_model(self.onnx_path, self.checkpoint_sha256)
            path = self.onnx_path
        self.onnx_file = path
        self._model_source = str(path)
        if self.device.startswith("cuda"):
            if hasattr(ort, "preload_dlls"):  # CUDA/cuDNN from the nvidia-* wheels (ORT >= 1.21)
                ort.preload_dlls()
            if self.precision == "fp16" and not self.tensorrt_provider:
                from .onnx_fp16 import fp16_model_bytes

                self._model_source = fp16_model_bytes(path)
        self._dim_names = input_dim_names(path)
        if not self.cuda_graph:
            self._session = self._new_session(ort)
            self._providers = self._session.get_providers()
            self._binding = self._session.io_binding()

    def _new_session(self, ort, shape: tuple[int, ...] | None = None):
        options = ort.SessionOptions()
        if shape is not None:
            fix_input_shape(options, self._dim_names, shape)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Idle workers sleep instead of spinning: on a shared 2-core machine (the streamer's
        # network and viewer threads, other jobs) spinning cost 25% at 512² (159 vs 121 ms).
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spin else "0")
        options.log_severity_level = 3  # errors only: the TRT provider is chatty
        session = ort.InferenceSession(self._model_source, sess_options=options, providers=self._requested)
        got = session.get_providers()
        if self.device.startswith("cuda") and "CUDAExecutionProvider" not in got:
            raise BackendUnavailableError(
                f"onnxruntime's CUDA provider did not load on {self.device} (got providers {got}); "
                f"its CUDA/cuDNN libraries are missing: pip install 'onnxruntime-gpu[cuda,cudnn]'")
        return session

    def _deactivate(self) -> None:
        self._binding = None
        self._session = None
        self._graphs.clear()
        self._model_source = None

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        if self.cuda_graph:
            return self._infer_graph(batch)
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
            binding.bind_output(OUTPUT_NAME, "cuda", self.device_id)
            self._session.run_with_iobinding(binding)
            out[...] = binding.copy_outputs_to_cpu()[0]
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        return out

    def _infer_graph(self, batch: np.ndarray) -> np.ndarray:
        shape = tuple(batch.shape)
        entry = self._graphs.get(shape)
        if entry is None:
            while len(self._graphs) >= self.max_shapes:
                self._graphs.popitem(last=False)  # closes that session and its graph
            entry = self._graph_session(shape)
            self._graphs[shape] = entry
            self.graph_captures += 1
        else:
            self._graphs.move_to_end(shape)
        session, binding, x, y = entry
        x.update_inplace(batch)  # host -> the bound device input
        session.run_with_iobinding(binding)  # first run captures, later runs replay
        return y.numpy()  # device -> a fresh host array, before the next replay overwrites y

    def _graph_session(self, shape: tuple[int, ...]):
        ort = _ort()
        session = self._new_session(ort, shape)
        self._providers = session.get_providers()
        x = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, "cuda", self.device_id)
        y = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, "cuda", self.device_id)
        binding = session.io_binding()
        binding.bind_ortvalue_input(INPUT_NAME, x)
        binding.bind_ortvalue_output(OUTPUT_NAME, y)
        return session, binding, x, y

    def _describe(self) -> dict[str, str]:
        info = {"providers": ",".join(self._providers), "threads": str(self.threads)}
        if self.device.startswith("cuda"):
            info["cuda_graph"] = str(self.cuda_graph)
            if self.cuda_graph:
                info["graph_captures"] = str(self.graph_captures)
        return info


def input_dim_names(onnx_path: str | Path) -> list[str]:
    """The symbolic names of the exported input's (N, H, W) axes."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    (inp,) = [i for i in model.graph.input if i.name == INPUT_NAME]
    return [d.dim_param for d in inp.type.tensor_type.shape.dim]


def fix_input_shape(options, dim_names: list[str], shape: tuple[int, ...]) -> None:
    """Pin the input's symbolic axes to ``shape`` in session ``options``.

    With every axis known, ONNX Runtime's optimiser folds the shape arithmetic (pad to a multiple
    of 8, crop back) into constants, so no node is left for the CPU and the whole graph can be
    captured as one CUDA graph.
    """
    if len(dim_names) != len(shape):
        raise EngineError(f"expected a shape of rank {len(dim_names)} for axes {dim_names} (got {shape})")
    for name, size in zip(dim_names, shape):
        if name:
            options.add_free_dimension_override_by_name(name, int(size))


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _trt_cache() -> Path:
    path = cache_dir() / "ort-trt"
    path.mkdir(parents=True, exist_ok=True)
    return path
