"""The offline TensorRT builder: ONNX -> serialized plan, with a timing cache and a plan cache.

Build is not run: this module holds everything that needs ``trt.Builder``; the runtime
(`engines.tensorrt`) only deserializes the plans written here. Plans are cached under
``$N2A_CACHE/trt`` (default ``~/.cache/n2a/trt``), keyed by checkpoint hash, TensorRT version, GPU
name, precision and shape profile, and written atomically so a crash never leaves half a plan; each
plan and timing cache has a ``.sha256`` sidecar recorded at build time (``engines.export.write_cached``)
and a file whose bytes do not match it is rebuilt, never loaded.

In fp16/bf16 the normalisation layers (the ONNX nodes that `engines.export` prefixed with
``n2a_fp32/``) are pinned to fp32 with per-layer precision and ``OBEY_PRECISION_CONSTRAINTS``:
the per-frame mean and std of InstanceNorm-like layers are known to break in fp16.

Build ahead of time (e.g. after installing a new model)::

    python -m engines.tensorrt_build model.safetensors --precision fp16 --opt 1024x1024
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import re
import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .base import EngineBuildError
from .export import (FP32_PREFIX, INPUT_NAME, cache_dir, cache_problem, export_onnx, file_sha256,
                     read_cached, write_cached)

__all__ = ["ShapeProfile", "build_plan", "ensure_plan", "plan_path"]

log = logging.getLogger(__name__)

_WORKSPACE_BYTES = 4 << 30


class ShapeProfile(BaseModel):
    """The frame sizes a plan accepts: each slot runs one frame (batch 1) of H x W.

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


def plan_path(checkpoint_sha: str, trt_version: str, gpu_name: str, precision: str, profile: ShapeProfile,
              streams: int = 1) -> Path:
    """Where the plan for this (model, TensorRT, GPU, precision, profile, K) lives in the cache."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-")
    name = f"{checkpoint_sha[:16]}_trt{trt_version}_{gpu}_{precision}_{profile.key}_k{streams}.plan"
    return cache_dir() / "trt" / name


def _timing_cache_path(trt_version: str, gpu_name: str) -> Path:
    gpu = hashlib.sha1(gpu_name.encode()).hexdigest()[:8]
    return cache_dir() / "trt" / f"timing_trt{trt_version}_{gpu}.cache"


def build_plan(onnx_path: str | Path, *, precision: str, profile: ShapeProfile, timing_cache: Path | None,
               streams: int = 1) -> bytes:
    """Parse an ONNX file and build a serialized TensorRT plan.

    Parameters
    ----------
    onnx_path
        Exported by `engines.export.export_onnx` (input ``frames`` (N, H, W)).
    precision
        ``"fp32"`` (TF32 off, so it agrees with the other back ends), ``"fp16"`` or ``"bf16"``
        (normalisation layers in fp32).
    profile
        The frame sizes to accept.
    streams
        K: the plan gets K copies of the profile, one per execution context, because contexts
        that run at the same time may not share a dynamic-shape profile (TensorRT < 10 forbade it;
        one profile each is safe on every version).
    timing_cache
        File to read tactic timings from and write them back to (``None``: no cache).
    """
    from .tensorrt import import_tensorrt

    trt, _ = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_path} (got: {errors})")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, _WORKSPACE_BYTES)
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    elif precision in ("fp16", "bf16"):
        config.set_flag(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.BF16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = _pin_norms_fp32(trt, network)
        log.info("kept %d normalisation layers in fp32", pinned)
        if pinned == 0:
            log.warning("no layers named %s*: normalisation runs in %s", FP32_PREFIX, precision)
    else:
        raise EngineBuildError(f"expected precision fp32, fp16 or bf16 (got {precision!r})")

    for _ in range(streams):
        opt = builder.create_optimization_profile()
        opt.set_shape(INPUT_NAME, (1, *profile.min), (1, *profile.opt), (1, *profile.max))
        if config.add_optimization_profile(opt) < 0:
            raise EngineBuildError(f"TensorRT rejected the optimisation profile {profile.key}")

    cache = None
    if timing_cache is not None:
        blob = b""
        if timing_cache.is_file():
            try:
                blob = read_cached(timing_cache)
            except EngineBuildError as e:
                log.warning("%s; starting a new timing cache", e)
        cache = config.create_timing_cache(blob)
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            log.warning("timing cache %s did not match this GPU/TensorRT; starting a new one", timing_cache)
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(
            f"TensorRT failed to build a {precision} plan for {onnx_path} with profile {profile.key} "
            "(see the TensorRT log above)"
        )
    if cache is not None:
        write_cached(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def _pin_norms_fp32(trt, network) -> int:
    """Force the exported normalisation layers to compute and output fp32."""
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not layer.name.startswith(FP32_PREFIX):
            continue
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not all(t.dtype in (trt.float32, trt.float16, trt.bfloat16) for t in outputs):
            continue  # shape arithmetic (int64) keeps its type
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        pinned += 1
    return pinned


def ensure_plan(
    checkpoint: str | Path, *, precision: str, profile: ShapeProfile, streams: int = 1, device_id: int = 0,
    rebuild: bool = False,
) -> Path:
    """Return the cached plan for a checkpoint, building (and caching) it first if needed."""
    from .tensorrt import gpu_name, import_tensorrt

    trt, _ = import_tensorrt()
    sha = file_sha256(checkpoint)
    gpu = gpu_name(device_id)
    path = plan_path(sha, trt.__version__, gpu, precision, profile, streams)
    if path.is_file() and not rebuild:
        why = cache_problem(path)
        if why is None:
            return path
        log.warning("TensorRT plan %s %s; building it again", path, why)
    onnx_path = export_onnx(checkpoint)
    log.info("building TensorRT %s plan for %s on %s (%s); this takes minutes once", precision, checkpoint, gpu, profile.key)
    plan = build_plan(onnx_path, precision=precision, profile=profile, streams=streams,
                      timing_cache=_timing_cache_path(trt.__version__, gpu))
    write_cached(path, plan)
    return path


def _hw(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    try:
        return int(h), int(w or h)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected HxW like 1024x1024 (got {text!r})") from e


def main(argv: list[str] | None = None) -> int:
    """``python -m engines.tensorrt_build``: build and cache a plan ahead of time."""
    p = argparse.ArgumentParser(prog="python -m engines.tensorrt_build", description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp16")
    p.add_argument("--min", type=_hw, default=(64, 64), metavar="HxW")
    p.add_argument("--opt", type=_hw, default=(1024, 1024), metavar="HxW")
    p.add_argument("--max", type=_hw, default=(2048, 2048), metavar="HxW")
    p.add_argument("--streams", type=int, default=2, help="K frames in flight (one profile each)")
    p.add_argument("--device", type=int, default=0)
    p.add_argument("--rebuild", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        profile = ShapeProfile(min=args.min, opt=args.opt, max=args.max)
        path = ensure_plan(args.checkpoint, precision=args.precision, profile=profile, streams=args.streams,
                           device_id=args.device, rebuild=args.rebuild)
    except Exception as e:  # one line for the console; the traceback is for bugs
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
