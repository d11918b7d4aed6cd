"""TensorRT back end (runtime only): K frames in flight on K CUDA streams.

Written against the TensorRT 10 Python API and cuda-python's ``cudart``; both come with the ``gpu``
extra (``pip install n2a[gpu]``) and are imported lazily, so everything else runs without them.

Each of the K slots owns an execution context, a non-blocking CUDA stream, pinned host buffers and
device buffers sized for the profile's largest frame. Tensor addresses are bound once when the slot
is made; only the input shape is set again, and only when it changes. A batch is spread over the
slots round-robin: while slot 0 computes frame i, slot 1 copies frame i+1 in, so host<->device
copies overlap compute. Every CUDA runtime call goes through :func:`cuda_call`, which turns an error
code into an exception. Plans come from `engines.tensorrt_build` (cached; built on first use);
the libraries are imported through `engines.tensorrt_lib`.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from .base import Engine, EngineBuildError, EngineError, Precision
from .cache import read_cached
from .config import EngineConfig, ShapeProfile
from .export import INPUT_NAME, OUTPUT_NAME
from .tensorrt_build import ensure_plan, plan_path
from .tensorrt_lib import cuda_call, gpu_name, import_tensorrt

__all__ = ["TensorRTEngine"]

_DEFAULTS = EngineConfig()

class _PinnedArray:
    """float32 page-locked host memory seen as a numpy array; freed by :meth:`free`."""

    def __init__(self, cudart, count: int) -> None:
        self._cudart = cudart
        self.nbytes = count * 4
        self.ptr = cuda_call(cudart.cudaMallocHost(self.nbytes))
        c_ptr = ctypes.cast(int(self.ptr), ctypes.POINTER(ctypes.c_float))
        self.array = np.ctypeslib.as_array(c_ptr, (count,))

    def free(self) -> None:
        if self.ptr is not None:
            self.array = None
            cuda_call(self._cudart.cudaFreeHost(self.ptr))
            self.ptr = None


class _Slot:
    """One frame in flight: context, stream, pinned and device buffers, the bound shape."""

    def __init__(self, cudart, engine, index: int, max_hw: tuple[int, int]) -> None:
        self.cudart = cudart
        count = max_hw[0] * max_hw[1]
        self.stream = cuda_call(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking))
        self.context = engine.create_execution_context()
        if self.context is None:
            raise EngineError("TensorRT could not create an execution context (out of GPU memory?)")
        # One optimisation profile per context (the plan holds K copies): concurrent contexts
        # must not share a dynamic-shape profile.
        if not self.context.set_optimization_profile_async(index, int(self.stream)):
            raise EngineError(f"TensorRT refused optimisation profile {index} "
                              f"(the plan has {engine.num_optimization_profiles})")
        cuda_call(cudart.cudaStreamSynchronize(self.stream))
        self.host_in = _PinnedArray(cudart, count)
        self.host_out = _PinnedArray(cudart, count)
        self.dev_in = cuda_call(cudart.cudaMalloc(count * 4))
        self.dev_out = cuda_call(cudart.cudaMalloc(count * 4))
        # Bound once: the buffers hold the largest frame the profile allows.
        for name, ptr in ((INPUT_NAME, self.dev_in), (OUTPUT_NAME, self.dev_out)):
            if not self.context.set_tensor_address(name, int(ptr)):
                raise EngineError(f"TensorRT refused the address of tensor {name!r}")
        self.shape: tuple[int, int] | None = None
        self.pending: int | None = None  # index in the batch of the frame in flight

    def submit(self, index: int, frame: np.ndarray) -> None:
        cudart = self.cudart
        h, w = frame.shape
        if self.shape != (h, w):  # re-bind only on change
            if not self.context.set_input_shape(INPUT_NAME, (1, h, w)):
                raise EngineError(f"TensorRT refused input shape (1, {h}, {w}) for the plan's profile")
            self.shape = (h, w)
        n = h * w
        self.host_in.array[:n] = frame.ravel()
        kind_h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        kind_d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_call(cudart.cudaMemcpyAsync(self.dev_in, self.host_in.ptr, n * 4, kind_h2d, self.stream))
        if not self.context.execute_async_v3(int(self.stream)):
            raise EngineError(f"TensorRT execute_async_v3 failed for a {h}x{w} frame")
        cuda_call(cudart.cudaMemcpyAsync(self.host_out.ptr, self.dev_out, n * 4, kind_d2h, self.stream))
        self.pending = index

    def collect(self, out: np.ndarray) -> None:
        if self.pending is None:
            return
        cuda_call(self.cudart.cudaStreamSynchronize(self.stream))
        h, w = self.shape
        out[self.pending] = self.host_out.array[: h * w].reshape(h, w)
        self.pending = None

    def free(self) -> None:
        cudart = self.cudart
        cuda_call(cudart.cudaStreamSynchronize(self.stream))
        self.context = None  # the context must go before the engine
        self.host_in.free()
        self.host_out.free()
        cuda_call(cudart.cudaFree(self.dev_in))
        cuda_call(cudart.cudaFree(self.dev_out))
        cuda_call(cudart.cudaStreamDestroy(self.stream))


class TensorRTEngine(Engine):
    """A cached TensorRT plan of the generator, K frames in flight.

    Parameters
    ----------
    checkpoint, config
        The checkpoint and its ``ModelConfig``.
    device
        ``"cuda"`` or ``"cuda:N"``.
    precision
        ``"fp32"`` (TF32 off), ``"fp16"`` or ``"bf16"`` (normalisation layers in fp32).
    profile
        `engines.ShapeProfile`: the frame sizes the plan accepts (default 64² to 2048², tuned
        for 1024²).
    streams
        K, the number of frames in flight (each with its own context, stream and buffers).
    build
        Build the plan if it is not cached (else a missing plan is an error).
    """

    backend = "tensorrt"

    def __init__(
        self,
        *,
        checkpoint: str | Path,
        config,
        device: str = "cuda:0",
        precision: Precision = _DEFAULTS.precision,
        profile: ShapeProfile | None = None,
        streams: int = _DEFAULTS.streams,
        build: bool = _DEFAULTS.build,
        **common,
    ) -> None:
        super().__init__(checkpoint=checkpoint, config=config, device=device, precision=precision, **common)
        if not device.startswith("cuda"):
            raise EngineError(f"tensorrt engine runs on 'cuda[:N]' (got device {device!r})")
        if precision not in ("fp32", "fp16", "bf16"):
            raise EngineError(f"expected precision fp32, fp16 or bf16 (got {precision!r})")
        if streams < 1:
            raise EngineError(f"expected streams >= 1 (got {streams})")
        self.device_id = int(device.partition(":")[2] or 0)
        self.profile = profile if profile is not None else _DEFAULTS.profile
        self.streams = streams
        self.build = build
        self._runtime = self._engine = None
        self._slots: list[_Slot] = []
        self.plan_file: Path | None = None

    def _activate(self) -> None:
        trt, cudart = import_tensorrt()
        cuda_call(cudart.cudaSetDevice(self.device_id))
        self._take_weights()  # not needed: the plan is built from the (cached) ONNX export
        plan = self._plan_bytes(trt)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise EngineError(f"TensorRT could not deserialize {self.plan_file} (stale or corrupt plan?)")
        try:
            for i in range(self.streams):  # appended one by one, so a failure frees those made
                self._slots.append(_Slot(cudart, self._engine, i, self.profile.max))
        except Exception:
            self._deactivate()
            raise

    def _plan_bytes(self, trt) -> bytes:
        """The cached plan's bytes (built first when ``build``), checked against its recorded hash."""
        if self.build:
            self.plan_file = ensure_plan(self.checkpoint, precision=self.precision, profile=self.profile,
                                         streams=self.streams, device_id=self.device_id,
                                         sha256=self.checkpoint_sha256)
        else:
            self.plan_file = plan_path(self.checkpoint_sha256, trt.__version__, gpu_name(self.device_id),
                                       self.precision, self.profile, self.streams)
            if not self.plan_file.is_file():
                raise EngineError(f"no cached TensorRT plan (expected {self.plan_file}; build it with "
                                  f"python -m engines.cli.plan)")
        try:  # the bytes checked against the hash recorded at build time are the bytes loaded
            return read_cached(self.plan_file)
        except EngineBuildError as e:
            raise EngineError(f"{e}; not loading it: rebuild it with python -m engines.cli.plan "
                              f"--rebuild CHECKPOINT") from e

    def _deactivate(self) -> None:
        errors = []
        for slot in self._slots:
            try:
                slot.free()
            except EngineError as e:  # free the rest, then report
                errors.append(e)
        self._slots = []
        self._engine = None
        self._runtime = None
        if errors:
            raise errors[0]

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        n, h, w = batch.shape
        if not self.profile.allows(h, w):
            raise EngineError(
                f"frame size {h}x{w} is outside the TensorRT plan's profile "
                f"(expected {self.profile.min} to {self.profile.max}; got ({h}, {w}))"
            )
        out = np.empty_like(batch)
        try:
            for i in range(n):
                slot = self._slots[i % len(self._slots)]
                slot.collect(out)  # the slot's previous frame must leave before this one enters
                slot.submit(i, batch[i])
            for slot in self._slots:
                slot.collect(out)
        except Exception:
            for slot in self._slots:  # leave every stream idle and every slot empty
                slot.pending = None
                self._sync_quietly(slot)
            raise
        return out

    @staticmethod
    def _sync_quietly(slot: _Slot) -> None:
        try:
            cuda_call(slot.cudart.cudaStreamSynchronize(slot.stream))
        except EngineError:
            pass

    def _describe(self) -> dict[str, str]:
        info = {"streams": str(self.streams), "profile": self.profile.key}
        if self.plan_file is not None:
            info["plan"] = self.plan_file.name
        return info
