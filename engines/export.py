"""Checkpoint -> ONNX, checked, cached next to the checkpoint by content hash.

The exported graph takes ``frames`` float32 (N, H, W) in [-1, 1] and returns ``denoised`` of the
same shape; N, H and W are dynamic (the generator pads to a multiple of 8 and crops back inside the
graph). The checkpoint's sha256 is stored in the ONNX ``metadata_props``, so an ONNX file exported
from another model is refused instead of silently run. Nodes that belong to normalisation layers are
renamed with the prefix :data:`FP32_PREFIX`, so the TensorRT builder can keep them in fp32.

The export is a cache file (`engines.cache`): it is reused only when its bytes match the hash
recorded when it was written.

We use the torch.export-based exporter (``dynamo=True``, the default since PyTorch 2.9; it needs
``onnxscript``): the TorchScript exporter also handles the dynamic padding but is deprecated.
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from noise2atom.files import file_sha256

from .base import EngineBuildError
from .cache import cache_dir, cache_problem, write_cached_with

if TYPE_CHECKING:
    from noise2atom.checkpoint import Checkpoint

__all__ = [
    "FP32_PREFIX",
    "INPUT_NAME",
    "OPSET",
    "OUTPUT_NAME",
    "check_onnx_model",
    "export_onnx",
    "frames_wrapper",
    "onnx_metadata",
]

log = logging.getLogger(__name__)

INPUT_NAME = "frames"
OUTPUT_NAME = "denoised"
#: The torch.export exporter emits opset 18 natively; asking for 17 makes it down-convert Pad and fail.
OPSET = 18
#: Prefix given to ONNX nodes inside normalisation layers (kept in fp32 by the TensorRT builder).
FP32_PREFIX = "n2a_fp32/"
_META_SHA = "n2a.checkpoint_sha256"
_META_SIZE = "n2a.model_size"
_META_LAYOUT = "n2a.layout"


def _cached_path(checkpoint: Path, sha: str) -> Path:
    """Next to the checkpoint when that folder is writable, else in the cache folder."""
    name = f"{checkpoint.stem}.{sha[:16]}.onnx"
    if os.access(checkpoint.parent, os.W_OK):
        return checkpoint.parent / name
    return cache_dir() / "onnx" / name


def check_onnx_model(onnx_path: str | Path, checkpoint_sha: str) -> None:
    """Raise `EngineBuildError` unless ``onnx_path`` was exported from the checkpoint with that hash.

    Parameters
    ----------
    onnx_path
        An ONNX file written by :func:`export_onnx`.
    checkpoint_sha
        The sha256 of the checkpoint the caller means to run.
    """
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:
        raise EngineBuildError(f"cannot read ONNX file {onnx_path}: {e}") from e
    meta = {p.key: p.value for p in model.metadata_props}
    got = meta.get(_META_SHA)
    if got is None:
        raise EngineBuildError(
            f"ONNX file {onnx_path} was not exported by n2a (expected metadata {_META_SHA!r}, "
            f"got keys {sorted(meta)})"
        )
    if got != checkpoint_sha:
        raise EngineBuildError(
            f"ONNX file {onnx_path} was exported from another model "
            f"(expected checkpoint sha256 {checkpoint_sha[:16]}…, got {got[:16]}…)"
        )


def export_onnx(checkpoint: str | Path, out: str | Path | None = None, *, force: bool = False,
                sha256: str | None = None, weights: Checkpoint | None = None) -> Path:
    """Export a checkpoint's generator to ONNX, or return the cached export.

    Parameters
    ----------
    checkpoint
        A checkpoint written by ``noise2atom.checkpoint.save_checkpoint``.
    out
        Where to write; default: ``<stem>.<sha16>.onnx`` next to the checkpoint (or under
        ``$N2A_CACHE/onnx`` if that folder is read-only). An existing file there is reused only when its
        bytes match the hash recorded when it was exported (else it is exported again, with a
        warning) and the checkpoint hash in its metadata matches.
    force
        Export again even if the file exists.
    sha256, weights
        The checkpoint's hash and contents when the caller has read them already (`open_engine`
        does), so the file is not hashed or read again here.

    Returns
    -------
    pathlib.Path
        The checked ONNX file.
    """
    checkpoint = Path(checkpoint)
    if (weights is None or sha256 is None) and not checkpoint.is_file():
        raise EngineBuildError(f"checkpoint not found: expected a file (got {checkpoint})")
    sha = sha256 or file_sha256(checkpoint)
    target = Path(out) if out is not None else _cached_path(checkpoint, sha)
    if target.exists() and not force:
        why = cache_problem(target)
        if why is None:
            check_onnx_model(target, sha)
            log.debug("reusing ONNX export %s", target)
            return target
        log.warning("ONNX export %s %s; exporting it again", target, why)
    _export(checkpoint, sha, target, weights)
    return target


def _export(checkpoint: Path, sha: str, target: Path, weights: Checkpoint | None) -> None:
    """Trace, adjust, label, check and write (as a cache file) the ONNX graph of the generator."""
    import onnx

    from noise2atom.checkpoint import load_generator

    config, generator = load_generator(weights if weights is not None else checkpoint)
    try:
        model = _trace(generator)
        _stage_wide_means(model)
        _mark_fp32_nodes(model, _norm_class_paths(generator))
        _label(model, sha=sha, size=config.size)
        onnx.checker.check_model(model, full_check=True)
        write_cached_with(target, lambda tmp: onnx.save(model, str(tmp)))
    except EngineBuildError:
        raise
    except Exception as e:
        raise EngineBuildError(f"ONNX export of {checkpoint} failed: {e}") from e
    log.info("exported %s -> %s", checkpoint, target)


def _trace(generator):
    """The generator as an ONNX ``ModelProto`` (frames (N, H, W) -> denoised, all axes dynamic)."""
    import torch

    wrapper = frames_wrapper(generator).eval()
    dims = {0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC}
    with warnings.catch_warnings(), torch.no_grad(), _quiet_logger("torch.onnx"):
        # The exporter warns about its own internals (deprecated torch APIs it still calls)
        # and logs that torchvision's ops are not registered; neither concerns our graph.
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapper,
            (torch.zeros(1, 64, 64),),
            dynamo=True,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=(dims,),
            external_data=False,
            verbose=False,
        )
    return program.model_proto


def _label(model, *, sha: str, size: str) -> None:
    """Record which checkpoint the graph comes from (checked by :func:`check_onnx_model`)."""
    for key, value in (
        (_META_SHA, sha),
        (_META_SIZE, str(size)),
        (_META_LAYOUT, "frames (N, H, W) float32 in [-1, 1] -> denoised (N, H, W)"),
    ):
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value


@contextlib.contextmanager
def _quiet_logger(name: str):
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _stage_wide_means(model) -> int:
    """Split each ReduceMean over axes (1, 2, 3) into a mean over (2, 3) then over 1.

    The two are equal (every channel has H*W elements), but ONNX Runtime sums a single wide
    reduction naively in float32: over 64 x 512 x 512 values the normalisation's mean was off by
    enough to move the paper generator's output by 6e-4. Staged, the error stays near 1e-6.
    """
    import onnx

    graph = model.graph
    constants = _Constants(graph)
    new_nodes, staged = [], 0
    for node in graph.node:
        if _is_wide_mean(node, constants):
            new_nodes.extend(_staged_mean(node, constants))
            staged += 1
        else:
            new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {name for node in graph.node for name in node.input}
    for t in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(t)  # the replaced (1, 2, 3) axes; ORT would warn about each one
    onnx.checker.check_model(model)
    return staged


class _Constants:
    """The graph's constant int tensors (initializers and Constant nodes), read and added by name."""

    def __init__(self, graph) -> None:
        self.graph = graph
        self.inits = {t.name: t for t in graph.initializer}
        self.nodes = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}

    def values(self, name: str):
        from onnx import numpy_helper

        if name in self.inits:
            return numpy_helper.to_array(self.inits[name]).tolist()
        if name in self.nodes:
            return numpy_helper.to_array(self.nodes[name].attribute[0].t).tolist()
        return None

    def add(self, name: str, values: list[int]) -> str:
        import numpy as np
        from onnx import numpy_helper

        if name not in self.inits:
            self.graph.initializer.append(numpy_helper.from_array(np.array(values, np.int64), name))
            self.inits[name] = self.graph.initializer[-1]
        return name


def _is_wide_mean(node, constants: _Constants) -> bool:
    keep = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
    return (node.op_type == "ReduceMean" and keep == 1 and len(node.input) == 2
            and constants.values(node.input[1]) in ([1, 2, 3], [-3, -2, -1]))


def _staged_mean(node, constants: _Constants) -> list:
    """The two ReduceMean nodes that replace ``node``: over (H, W), then over C."""
    from onnx import helper

    mid = f"{node.output[0]}__n2a_spatial_mean"
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    staged = [
        helper.make_node("ReduceMean", [node.input[0], constants.add("n2a_axes_hw", [2, 3])], [mid],
                         name=f"{node.name}__spatial", **attrs),
        helper.make_node("ReduceMean", [mid, constants.add("n2a_axes_c", [1])], list(node.output),
                         name=f"{node.name}__channel", **attrs),
    ]
    for p in node.metadata_props:  # keep the exporter's scope info for fp32 marking
        for n in staged:
            n.metadata_props.add(key=p.key, value=p.value)
    return staged


def _norm_class_paths(module) -> set[str]:
    """Qualified class names of the normalisation layers inside ``module``."""
    import torch.nn as nn

    norm_types = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    found = set()
    for m in module.modules():
        cls = type(m)
        if isinstance(m, norm_types) or "Norm" in cls.__name__:
            found.add(f"{cls.__module__}.{cls.__qualname__}")
    return found


def _mark_fp32_nodes(model, norm_classes: set[str]) -> int:
    """Prefix the nodes the exporter attributes to a normalisation layer with `FP32_PREFIX`."""
    marked = 0
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        hierarchy = meta.get("pkg.torch.onnx.class_hierarchy", "")
        if any(f"'{c}'" in hierarchy for c in norm_classes):
            node.name = FP32_PREFIX + node.name
            marked += 1
    if norm_classes and not marked:
        log.warning("found normalisation layers %s but no ONNX nodes for them", sorted(norm_classes))
    return marked


def onnx_metadata(onnx_path: str | Path) -> dict[str, str]:
    """The ``n2a.*`` metadata recorded in an ONNX file by :func:`export_onnx`."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props if p.key.startswith("n2a.")}


def frames_wrapper(generator):
    """Wrap a generator (N, 1, H, W) -> (N, 1, H, W) as (N, H, W) -> (N, H, W)."""
    import torch.nn as nn

    class FramesToFrames(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.generator = inner

        def forward(self, frames):
            return self.generator(frames.unsqueeze(1)).squeeze(1)

    return FramesToFrames(generator)
