"""The offline TensorRT builder: ONNX -> serialized plan, with a timing cache and a plan cache.

Build is not run: this module holds everything that needs ``trt.Builder``; the runtime
(`engines.tensorrt`) only deserializes the plans written here. Plans are cached under
``$N2A_CACHE/trt`` (default ``~/.cache/n2a/trt``), keyed by checkpoint hash, TensorRT version, GPU
name, precision, shape profile and streams, and written as cache files (`engines.cache`: atomic,
with a ``.sha256`` sidecar; a file whose bytes do not match it is rebuilt, never loaded). The
precision, profile and streams default to `engines.EngineConfig`'s, so a plan built ahead of time
(``python -m engines.cli.plan``) is the one the runtime looks for.

In fp16/bf16 the normalisation layers (the ONNX nodes that `engines.export` prefixed with
``n2a_fp32/``) are pinned to fp32 with per-layer precision and ``OBEY_PRECISION_CONSTRAINTS``:
the per-frame mean and std of InstanceNorm-like layers are known to break in fp16.
"""
from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

from noise2atom.files import file_sha256

from .base import EngineBuildError
from .cache import cache_dir, cache_problem, read_cached, write_cached
from .config import EngineConfig, ShapeProfile
from .export import FP32_PREFIX, INPUT_NAME, export_onnx
from .tensorrt_lib import gpu_name, import_tensorrt

__all__ = ["build_plan", "ensure_plan", "plan_path"]

log = logging.getLogger(__name__)

_WORKSPACE_BYTES = 4 << 30
_DEFAULTS = EngineConfig()


def plan_path(checkpoint_sha: str, trt_version: str, gpu_name: str, precision: str, profile: ShapeProfile,
              streams: int = _DEFAULTS.streams) -> Path:
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
    trt, _ = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, onnx_path)  # the parser owns the weights: keep it
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, _WORKSPACE_BYTES)
    _set_precision(trt, config, network, precision)
    _add_profiles(builder, config, profile, streams)
    cache = _load_timing_cache(config, timing_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(
            f"TensorRT failed to build a {precision} plan for {onnx_path} with profile {profile.key} "
            "(see the TensorRT log above)"
        )
    if cache is not None:
        write_cached(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def _parse(trt, builder, logger, onnx_path):
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT could not parse {onnx_path} (got: {errors})")
    return network, parser


def _set_precision(trt, config, network, precision: str) -> None:
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


def _add_profiles(builder, config, profile: ShapeProfile, streams: int) -> None:
    for _ in range(streams):
        opt = builder.create_optimization_profile()
        opt.set_shape(INPUT_NAME, (1, *profile.min), (1, *profile.opt), (1, *profile.max))
        if config.add_optimization_profile(opt) < 0:
            raise EngineBuildError(f"TensorRT rejected the optimisation profile {profile.key}")


def _load_timing_cache(config, timing_cache: Path | None):
    """Attach the timing cache read from ``timing_cache`` (a new one if absent, bad or foreign)."""
    if timing_cache is None:
        return None
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
    return cache


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
    checkpoint: str | Path, *, precision: str = _DEFAULTS.precision,
    profile: ShapeProfile = _DEFAULTS.profile, streams: int = _DEFAULTS.streams, device_id: int = 0,
    rebuild: bool = False, sha256: str | None = None,
) -> Path:
    """Return the cached plan for a checkpoint, building (and caching) it first if needed.

    The defaults are `engines.EngineConfig`'s, so a plan built with them is the one
    ``open_engine(checkpoint, backend="tensorrt")`` loads. ``sha256``: the checkpoint's hash when
    the caller has it already.
    """
    trt, _ = import_tensorrt()
    sha = sha256 or file_sha256(checkpoint)
    gpu = gpu_name(device_id)
    path = plan_path(sha, trt.__version__, gpu, precision, profile, streams)
    if path.is_file() and not rebuild:
        why = cache_problem(path)
        if why is None:
            return path
        log.warning("TensorRT plan %s %s; building it again", path, why)
    onnx_path = export_onnx(checkpoint, sha256=sha)
    log.info("building TensorRT %s plan for %s on %s (%s); this takes minutes once", precision, checkpoint, gpu, profile.key)
    plan = build_plan(onnx_path, precision=precision, profile=profile, streams=streams,
                      timing_cache=_timing_cache_path(trt.__version__, gpu))
    write_cached(path, plan)
    return path
