"""Checkpoint -> ONNX, checked, cached next to the checkpoint by content hash.

The exported graph takes ``frames`` float32 (N, H, W) in [-1, 1] and returns ``denoised`` of the
same shape; N, H and W are dynamic (the generator pads to a multiple of 8 and crops back inside the
graph). The checkpoint's sha256 is stored in the ONNX ``metadata_props``, so an ONNX file exported
from another model is refused instead of silently run. Nodes that belong to normalisation layers are
renamed with the prefix :data:`FP32_PREFIX`, so the TensorRT builder can keep them in fp32.

Every cache file n2a writes (this ONNX export, TensorRT plans and timing caches) gets a sidecar
``<file>.sha256`` (``sha256sum`` format) with the hash of the bytes as they were written, put in
place before the file itself is renamed into place. A cached file is used only when its bytes match
that recorded hash (:func:`cache_problem`, :func:`read_cached`), never on the strength of a hash it
declares itself; a corrupt or tampered file, or one without a sidecar, is rebuilt with a warning.

We use the torch.export-based exporter (``dynamo=True``, the default since PyTorch 2.9; it needs
``onnxscript``): the TorchScript exporter also handles the dynamic padding but is deprecated.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import warnings
from pathlib import Path

from .base import EngineBuildError

__all__ = [
    "FP32_PREFIX",
    "INPUT_NAME",
    "OPSET",
    "OUTPUT_NAME",
    "cache_dir",
    "cache_problem",
    "check_onnx_model",
    "export_onnx",
    "file_sha256",
    "frames_wrapper",
    "onnx_metadata",
    "read_cached",
    "sidecar_path",
    "write_cached",
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
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """The n2a cache folder: ``$N2A_CACHE`` or ``~/.cache/n2a``."""
    return Path(os.environ.get("N2A_CACHE") or Path.home() / ".cache" / "n2a")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sidecar_path(path: str | Path) -> Path:
    """Where the recorded content hash of a cache file lives: ``<file>.sha256``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _recorded_sha(path: Path) -> tuple[str | None, str | None]:
    """(the hash recorded for ``path``, or None and why not)."""
    side = sidecar_path(path)
    try:
        text = side.read_text(encoding="ascii")
    except FileNotFoundError:
        return None, f"has no recorded hash (expected {side.name})"
    except (OSError, UnicodeDecodeError) as e:
        return None, f"has an unreadable recorded hash {side.name} ({e})"
    sha = text.split(" ", 1)[0].strip()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        return None, f"has a malformed recorded hash in {side.name} (got {text[:80]!r})"
    return sha, None


def cache_problem(path: str | Path) -> str | None:
    """Why the cache file ``path`` must not be used (``None``: its bytes match the recorded hash)."""
    path = Path(path)
    sha, why = _recorded_sha(path)
    if why is not None:
        return why
    got = file_sha256(path)
    if got != sha:
        return (f"does not match the hash recorded when it was built (expected sha256 {sha[:16]}…, "
                f"got {got[:16]}…): corrupt or changed since")
    return None


def read_cached(path: str | Path) -> bytes:
    """The bytes of a cache file, checked against its recorded hash (one read: what is checked is
    what is returned).

    Raises
    ------
    EngineBuildError
        When the file has no recorded hash or its bytes do not match it.
    """
    path = Path(path)
    sha, why = _recorded_sha(path)
    data = path.read_bytes()
    if why is None and hashlib.sha256(data).hexdigest() != sha:
        why = (f"does not match the hash recorded when it was built (expected sha256 {sha[:16]}…, "
               f"got {hashlib.sha256(data).hexdigest()[:16]}…): corrupt or changed since")
    if why is not None:
        raise EngineBuildError(f"cache file {path} {why}")
    return data


def _replace_with_sidecar(tmp: Path, path: Path, sha: str) -> None:
    """Record ``sha`` for ``path`` (atomically), then move ``tmp`` into place."""
    side = sidecar_path(path)
    fd, side_tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{side.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"{sha}  {path.name}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(side_tmp, side)
    except BaseException:
        Path(side_tmp).unlink(missing_ok=True)
        raise
    # A crash between the two renames leaves a sidecar that does not match: the file is rebuilt.
    os.replace(tmp, path)


def write_cached(path: str | Path, data: bytes) -> Path:
    """Write a cache file and its recorded hash, atomically (a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _replace_with_sidecar(Path(tmp), path, hashlib.sha256(data).hexdigest())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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


def export_onnx(checkpoint: str | Path, out: str | Path | None = None, *, force: bool = False) -> Path:
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

    Returns
    -------
    pathlib.Path
        The checked ONNX file.
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise EngineBuildError(f"checkpoint not found: expected a file (got {checkpoint})")
    sha = file_sha256(checkpoint)
    target = Path(out) if out is not None else _cached_path(checkpoint, sha)
    if target.exists() and not force:
        why = cache_problem(target)
        if why is None:
            check_onnx_model(target, sha)
            log.debug("reusing ONNX export %s", target)
            return target
        log.warning("ONNX export %s %s; exporting it again", target, why)
    _export(checkpoint, sha, target)
    return target


def _export(checkpoint: Path, sha: str, target: Path) -> None:
    import onnx
    import torch

    from noise2atom.checkpoint import load_generator

    config, generator = load_generator(checkpoint)
    norm_classes = _norm_class_paths(generator)
    wrapper = frames_wrapper(generator).eval()
    example = torch.zeros(1, 64, 64)
    dims = {0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC}
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad(), _quiet_logger("torch.onnx"):
            # The exporter warns about its own internals (deprecated torch APIs it still calls)
            # and logs that torchvision's ops are not registered; neither concerns our graph.
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapper,
                (example,),
                dynamo=True,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=(dims,),
                external_data=False,
                verbose=False,
            )
        model = program.model_proto
        _stage_wide_means(model)
        _mark_fp32_nodes(model, norm_classes)
        for key, value in (
            (_META_SHA, sha),
            (_META_SIZE, str(config.size)),
            (_META_LAYOUT, "frames (N, H, W) float32 in [-1, 1] -> denoised (N, H, W)"),
        ):
            prop = model.metadata_props.add()
            prop.key, prop.value = key, value
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, tmp)
        _replace_with_sidecar(Path(tmp), target, file_sha256(tmp))
    except EngineBuildError:
        raise
    except Exception as e:
        raise EngineBuildError(f"ONNX export of {checkpoint} failed: {e}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("exported %s -> %s", checkpoint, target)


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
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consts = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}

    def axes_of(name: str):
        if name in inits:
            return numpy_helper.to_array(inits[name]).tolist()
        if name in consts:
            return numpy_helper.to_array(consts[name].attribute[0].t).tolist()
        return None

    def add_axes(name: str, values: list[int]) -> str:
        if name not in inits:
            graph.initializer.append(numpy_helper.from_array(np.array(values, np.int64), name))
            inits[name] = graph.initializer[-1]
        return name

    new_nodes, staged = [], 0
    for node in graph.node:
        keep = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
        if (
            node.op_type == "ReduceMean"
            and keep == 1
            and len(node.input) == 2
            and axes_of(node.input[1]) in ([1, 2, 3], [-3, -2, -1])
        ):
            mid = f"{node.output[0]}__n2a_spatial_mean"
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            new_nodes.append(helper.make_node(
                "ReduceMean", [node.input[0], add_axes("n2a_axes_hw", [2, 3])], [mid],
                name=f"{node.name}__spatial", **attrs))
            new_nodes.append(helper.make_node(
                "ReduceMean", [mid, add_axes("n2a_axes_c", [1])], list(node.output),
                name=f"{node.name}__channel", **attrs))
            for p in node.metadata_props:  # keep the exporter's scope info for fp32 marking
                for n in new_nodes[-2:]:
                    n.metadata_props.add(key=p.key, value=p.value)
            staged += 1
        else:
            new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {name for node in graph.node for name in node.input}
    unused = [t for t in graph.initializer if t.name not in used]
    for t in unused:  # the replaced (1, 2, 3) axes; ORT would warn about each one
        graph.initializer.remove(t)
    onnx.checker.check_model(model)
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
