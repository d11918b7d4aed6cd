"""`EngineConfig`: every engine setting, validated once, with one set of defaults.

`open_engine`, ``n2a-denoise``, the TensorRT plan builder (``python -m engines.cli.plan``) and the
stream all take their settings from here, so a plan built ahead of time has the key the runtime
looks for (same precision, profile and streams by default). Each back end takes only some of the
fields (:data:`BACKEND_OPTIONS`); a field set for a back end that does not take it is an error
when that back end is named, and is left out (and reported) when ``backend="auto"`` chose it.

>>> EngineConfig(backend="onnxruntime", threads=2).options_for("onnxruntime")["threads"]
2
>>> EngineConfig.of(None, backend="onnxruntime", cuda_graphs=True)
Traceback (most recent call last):
...
engines.base.EngineError: unknown engine option 'cuda_graphs' (expected one of: version, backend, device, ...)
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .base import EngineError, Precision

__all__ = ["BACKENDS", "BACKEND_OPTIONS", "Backend", "EngineConfig", "ShapeProfile"]

Backend = Literal["auto", "pytorch", "onnxruntime", "tensorrt"]
BACKENDS = ("pytorch", "onnxruntime", "tensorrt")

#: The fields each back end's constructor takes (besides checkpoint and model config).
BACKEND_OPTIONS: dict[str, tuple[str, ...]] = {
    "pytorch": ("device", "precision", "threads", "cuda_graph", "compile", "max_shapes"),
    "onnxruntime": ("device", "precision", "threads", "spin", "cuda_graph", "max_shapes", "onnx_path",
                    "tensorrt_provider"),
    "tensorrt": ("device", "precision", "profile", "streams", "build"),
}
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


class ShapeProfile(BaseModel):
    """The frame sizes a TensorRT plan accepts: each slot runs one frame (batch 1) of H x W.

    Examples
    --------
    >>> ShapeProfile(opt=(512, 512)).key
    'b1_64x64_512x512_2048x2048'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: tuple[int, int] = Field(default=(64, 64), description="smallest (H, W)")
    opt: tuple[int, int] = Field(default=(1024, 1024), description="(H, W) the kernels are tuned for")
    max: tuple[int, int] = Field(default=(2048, 2048), description="largest (H, W); buffers are sized for it")

    @model_validator(mode="after")
    def _ordered(self) -> ShapeProfile:
        for i in range(2):
            if not (5 <= self.min[i] <= self.opt[i] <= self.max[i]):
                raise ValueError(f"expected 5 <= min <= opt <= max per axis (got {self.min}, {self.opt}, {self.max})")
        return self

    @property
    def key(self) -> str:
        f = lambda hw: f"{hw[0]}x{hw[1]}"  # noqa: E731
        return f"b1_{f(self.min)}_{f(self.opt)}_{f(self.max)}"

    def allows(self, h: int, w: int) -> bool:
        return self.min[0] <= h <= self.max[0] and self.min[1] <= w <= self.max[1]


class EngineConfig(BaseModel):
    """How to run a checkpoint: back end, device, precision and the back ends' own options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    backend: Backend = Field(default="auto", description=(
        "auto: the fastest installed (engines.select); or pytorch, onnxruntime, tensorrt"))
    device: str | None = Field(default=None, description=(
        "cpu or cuda[:N]; None: CUDA for tensorrt, CUDA if present for pytorch, CPU for onnxruntime"))
    precision: Precision = Field(default="fp32", description=(
        "fp32 everywhere; fp16 on CUDA (all back ends); bf16 with pytorch and tensorrt on CUDA"))
    threads: int | None = Field(default=None, ge=1, description=(
        "CPU threads (pytorch on CPU: torch.set_num_threads; onnxruntime: intra-op threads); "
        "None: pytorch leaves torch's setting, onnxruntime uses the cores this process may use"))
    spin: bool = Field(default=False, description="onnxruntime: idle intra-op threads spin")
    cuda_graph: bool | None = Field(default=None, description=(
        "replay a CUDA graph per frame shape; None: on for onnxruntime on CUDA (without the "
        "TensorRT provider), off for pytorch unless auto picks it"))
    compile: bool = Field(default=False, description="pytorch on CUDA: torch.compile with fixed shapes")
    max_shapes: int = Field(default=4, ge=1, description=(
        "frame shapes kept at once (graphs, buffers, sessions); the least recently used goes"))
    onnx_path: Path | None = Field(default=None, description=(
        "onnxruntime: this ONNX file (exported from the same checkpoint) instead of the cached export"))
    tensorrt_provider: bool = Field(default=False, description=(
        "onnxruntime on CUDA: put ONNX Runtime's TensorRT provider first"))
    profile: ShapeProfile = Field(default_factory=ShapeProfile, description=(
        "tensorrt: the frame sizes the plan accepts (part of the plan's cache key)"))
    streams: int = Field(default=2, ge=1, description=(
        "tensorrt: K frames in flight, each with its own context and CUDA stream (in the plan's key)"))
    build: bool = Field(default=True, description="tensorrt: build the plan when it is not cached")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str | None) -> str | None:
        if value is not None and not _DEVICE.fullmatch(value):
            raise ValueError(f"expected device 'cpu' or 'cuda[:N]' (got device {value!r})")
        return value

    @classmethod
    def add_arguments(cls, parser: Any) -> None:
        """The engine options every command line shares (``n2a-stream``, ``n2a-denoise``), with
        this model's defaults: ``--engine --device --precision --threads --cuda-graph --compile``."""
        from typing import get_args

        d = cls()
        parser.add_argument("--engine", choices=("auto",) + BACKENDS, default=d.backend,
                            help="back end: auto picks the fastest installed (default auto)")
        parser.add_argument("--device", default=d.device, help="cpu or cuda[:N] (default: chosen "
                            "with the engine)")
        parser.add_argument("--precision", choices=get_args(Precision), default=d.precision,
                            help=f"engine precision (default {d.precision}; fp16/bf16 need CUDA)")
        parser.add_argument("--threads", type=int, default=d.threads,
                            help="CPU threads of the engine (default: the back end's choice)")
        parser.add_argument("--cuda-graph", dest="cuda_graph", action="store_true", default=d.cuda_graph,
                            help="replay a CUDA graph per frame shape (default: on for onnxruntime "
                                 "on CUDA, off for pytorch)")
        parser.add_argument("--no-cuda-graph", dest="cuda_graph", action="store_false")
        parser.add_argument("--compile", action="store_true", default=d.compile,
                            help="pytorch on CUDA: torch.compile with fixed shapes")

    @classmethod
    def from_arguments(cls, args: Any) -> EngineConfig:
        """The config of :meth:`add_arguments`' options; only those changed from the defaults are
        marked as set (under ``auto`` an option the chosen back end does not take is then left
        out and reported, not an error)."""
        given = {"backend": args.engine, "device": args.device, "precision": args.precision,
                 "threads": args.threads, "cuda_graph": args.cuda_graph, "compile": args.compile}
        d = cls()
        return cls.of(None, **{k: v for k, v in given.items() if v != getattr(d, k)})

    @classmethod
    def of(cls, config: EngineConfig | None = None, **fields: Any) -> EngineConfig:
        """``config`` (default: all defaults) with ``fields`` set on it, validated.

        Raises
        ------
        EngineError
            An unknown option or a bad value, saying what was expected and what was got.
        """
        try:
            if config is None:
                return cls(**fields)
            if not isinstance(config, EngineConfig):
                raise EngineError(f"expected an engines.EngineConfig (got {type(config).__name__})")
            if not fields:
                return config
            # Validate again (model_copy would not), keeping the fields set on ``config`` marked as set.
            merged = {name: getattr(config, name) for name in config.model_fields_set} | fields
            return cls(**merged)
        except ValidationError as e:
            raise EngineError(_explain(e)) from None

    def options_for(self, backend: str) -> dict[str, Any]:
        """The keyword arguments of ``backend``'s engine: the fields it takes, nothing else."""
        return {name: getattr(self, name) for name in BACKEND_OPTIONS[backend]}

    def not_taken_by(self, backend: str) -> list[str]:
        """Options set on this config (not left at their default) that ``backend`` does not take."""
        general = {"version", "backend", "device", "precision"}
        return sorted(self.model_fields_set - general - set(BACKEND_OPTIONS[backend]))

    def check_backend(self, backend: str) -> None:
        """Raise `EngineError` if an option was set that ``backend`` does not take."""
        extra = self.not_taken_by(backend)
        if extra:
            raise EngineError(
                f"the {backend} back end does not take {', '.join(map(repr, extra))} (expected only "
                f"{', '.join(BACKEND_OPTIONS[backend])} for {backend}; got {', '.join(extra)})")


def _explain(error: ValidationError) -> str:
    """One line per problem in the house style: what was expected, then ``(got ...)``."""
    allowed = ", ".join(EngineConfig.model_fields)
    lines = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"])
        got, kind, ctx = err.get("input"), err["type"], err.get("ctx") or {}
        if kind == "extra_forbidden":
            lines.append(f"unknown engine option {where!r} (expected one of: {allowed}; got {where}={got!r})")
        elif where == "backend" and kind == "literal_error":
            lines.append(f"unknown back end: expected auto, {', '.join(BACKENDS)} (got {got!r})")
        elif kind == "literal_error":
            lines.append(f"expected {where} {ctx.get('expected')} (got {got!r})")
        elif kind in ("greater_than_equal", "greater_than"):
            op = ">=" if kind == "greater_than_equal" else ">"
            lines.append(f"expected {where} {op} {ctx.get('ge', ctx.get('gt'))} (got {got!r})")
        elif kind == "value_error":
            lines.append(str(ctx.get("error", err["msg"])))
        else:
            lines.append(f"{where}: {err['msg']} (got {got!r})")
    return "; ".join(lines)
