"""`open_engine`: one validated `EngineConfig` and one read of the checkpoint -> an `Engine`.

The checkpoint file is read once here (its config and weights, `noise2atom.checkpoint`) and
hashed once; the engine gets both, builds from the weights it was handed and keys its caches by
the hash, so no back end reads or hashes the file again on the way to its first frame.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from noise2atom.files import file_sha256

from .base import BackendUnavailableError, Engine, EngineError
from .config import BACKENDS, Backend, EngineConfig
from .select import cuda_available, select_backend, tensorrt_available, torch_build

__all__ = ["open_engine"]

log = logging.getLogger(__name__)


def open_engine(checkpoint: str | Path, config: EngineConfig | Backend | None = None,
                **fields: Any) -> Engine:
    """Make the engine for a checkpoint (not yet entered: use it in a ``with`` block).

    Parameters
    ----------
    checkpoint
        A checkpoint file (``noise2atom.checkpoint.save_checkpoint``).
    config
        An `EngineConfig`, or just the back end's name (``open_engine(path, "onnxruntime")``);
        default: ``EngineConfig()``.
    **fields
        `EngineConfig` fields set on top of ``config`` (``backend=``, ``device=``,
        ``precision=``, ``threads=``, ``cuda_graph=``, ``profile=``, ``streams=`` ...), validated:
        an unknown name or a bad value raises `EngineError` naming what is allowed.

    ``backend="auto"`` picks the fastest installed (`engines.select`): TensorRT, else PyTorch on
    CUDA compiled with CUDA graphs, else ONNX Runtime's CUDA provider, else ONNX Runtime on the
    CPU; ``engine.selection.message()`` says which and why not the faster ones, and options the
    chosen back end does not take are left out (``engine.unused_options``). A named back end
    that cannot run raises `BackendUnavailableError` (no silent fallback), and one given an
    option it does not take raises `EngineError`. ``engine.engine_config`` is the config it runs
    with, back end and device filled in.

    Raises
    ------
    noise2atom.checkpoint.CheckpointError
        The checkpoint is missing, corrupt, truncated or of an unknown version.
    BackendUnavailableError
        The requested back end (or its device) is not available here.
    EngineError
        Unknown back end, option, device or precision, or an option the back end does not take.
    """
    from noise2atom.checkpoint import load_checkpoint

    if isinstance(config, str):
        if "backend" in fields:
            raise EngineError(f"back end given twice (got {config!r} and backend={fields['backend']!r})")
        config, fields = None, {"backend": config, **fields}
    cfg = EngineConfig.of(config, **fields)
    weights = load_checkpoint(checkpoint)  # the one read of the file's tensors
    sha256 = file_sha256(checkpoint)
    cfg, selection, unused = _resolve(cfg)
    engine = _make(cfg, checkpoint=checkpoint, config=weights.config, sha256=sha256, weights=weights)
    engine.engine_config, engine.selection, engine.unused_options = cfg, selection, unused
    return engine


def _resolve(cfg: EngineConfig):
    """(the config with back end and device decided, the auto `Selection` or None, options left out)."""
    if cfg.backend != "auto":
        cfg.check_backend(cfg.backend)
        return cfg.model_copy(update={"device": cfg.device or _default_device(cfg.backend)}), None, ()
    selection = select_backend(cfg.device, cfg.precision)
    unused = tuple(cfg.not_taken_by(selection.backend))
    if unused:
        log.info("engine auto chose %s, which does not take %s: left out", selection.backend,
                 ", ".join(unused))
    chosen = {k: v for k, v in selection.options.items() if k not in cfg.model_fields_set}
    update = {"backend": selection.backend, "device": selection.device, **chosen}
    return cfg.model_copy(update=update), selection, unused


def _default_device(backend: str) -> str:
    if backend == "pytorch":
        return "cuda" if cuda_available() else "cpu"
    return "cuda:0" if backend == "tensorrt" else "cpu"


def _make(cfg: EngineConfig, **common: Any) -> Engine:
    """The named back end's engine with the options it takes, or `BackendUnavailableError`."""
    backend, device = cfg.backend, cfg.device
    assert backend in BACKENDS, backend  # _resolve decided it
    options = cfg.options_for(backend)
    if backend == "pytorch":
        if device.startswith("cuda") and not cuda_available():
            raise BackendUnavailableError(
                f"pytorch on {device} needs a CUDA build of torch and a GPU (got {torch_build()}, "
                f"no CUDA device); install a CUDA torch build or use device='cpu'"
            )
        from .pytorch import PyTorchEngine

        return PyTorchEngine(**common, **options)
    if backend == "onnxruntime":
        from .onnxruntime import OnnxRuntimeEngine, _ort

        _ort()  # raises BackendUnavailableError naming the package
        return OnnxRuntimeEngine(**common, **options)
    ok, why = tensorrt_available()
    if not ok:
        raise BackendUnavailableError(why)
    if not cuda_available():
        raise BackendUnavailableError(
            "tensorrt back end needs a CUDA GPU (got none visible to torch); run it on a GPU machine"
        )
    from .tensorrt import TensorRTEngine

    return TensorRTEngine(**common, **options)

