"""Checkpoints: one safetensors file with the validated config and the generator weights.

A checkpoint is a ``.safetensors`` file whose metadata holds the JSON of a
:class:`ModelConfig` under the key ``"n2a_config"``; its tensors are the generator's
state dict. Nothing is unpickled on load. Training-resume state (the reverse
generator, the critic, optimisers, RNG states, iteration) lives beside it in
``<model>.train.pt``, written with ``torch.save`` and read back with
``torch.load(weights_only=True)`` (tensors and plain containers only).

Config versions: version 2 (written now) nests the validated models, ``prior`` a
:class:`~noise2atom.target_sim.TargetPrior` and ``train`` a
:class:`~noise2atom.train_options.TrainRecord`, so an unknown or bad field anywhere is refused.
Version 1 (n2a 0.1, the bundled model) kept both as free dicts (``train`` ``{}`` when unknown);
:func:`migrate_config` reads it into version 2, validating the dicts on the way.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from noise2atom.files import atomic_write, file_sha256
from noise2atom.models import build_generator
from noise2atom.target_sim import TargetPrior
from noise2atom.train_options import GeneratorSize, TrainRecord

__all__ = [
    "CheckpointError",
    "Normalisation",
    "DataFingerprint",
    "ModelConfig",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "load_generator",
    "model_id",
    "default_model_path",
    "fingerprint_frames",
    "train_state_path",
    "save_train_state",
    "load_train_state",
    "n2a_version",
    "migrate_config",
    "CONFIG_KEY",
    "CONFIG_VERSION",
]

#: safetensors metadata key that holds the config JSON.
CONFIG_KEY = "n2a_config"
#: the config version this n2a writes; :func:`migrate_config` reads the older ones.
CONFIG_VERSION = 2


class CheckpointError(Exception):
    """A file is not a usable n2a checkpoint; the message says what was expected and got."""


def n2a_version() -> str:
    """The installed n2a package version (``"0+unknown"`` when not installed)."""
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("n2a")
    except PackageNotFoundError:
        return "0+unknown"


class Normalisation(BaseModel):
    """Maps raw detector values to the networks' [-1, 1] and back.

    ``to_model(raw) = clip(2 (raw - lo) / (hi - lo) - 1, -1, 1)`` as float32;
    ``from_model(y) = (y + 1) / 2`` (display units in [0, 1]).

    Examples
    --------
    >>> n = Normalisation(lo=100.0, hi=300.0)
    >>> n.to_model(np.array([50, 100, 200, 300, 400])).tolist()
    [-1.0, -1.0, 0.0, 1.0, 1.0]
    >>> n.from_model(np.float32(0.0))
    np.float32(0.5)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    lo: float = Field(description="raw value mapped to -1 (a low percentile of the training frames)")
    hi: float = Field(description="raw value mapped to +1 (a high percentile of the training frames)")

    @model_validator(mode="after")
    def _check_range(self) -> "Normalisation":
        if not (np.isfinite(self.lo) and np.isfinite(self.hi) and self.hi > self.lo):
            raise ValueError(f"need finite lo < hi (got lo={self.lo}, hi={self.hi})")
        # The networks run in float32: the limits and the scale must be usable there too
        # (hi - lo = 1e-40 gives an infinite scale, |lo| = 1e39 is infinite in float32).
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            lo32, hi32 = np.float32(self.lo), np.float32(self.hi)
            scale32 = np.float32(2.0 / (self.hi - self.lo))
        if not (np.isfinite(lo32) and np.isfinite(hi32) and hi32 > lo32 and np.isfinite(scale32)
                and scale32 > 0):
            raise ValueError(f"need limits whose scale 2 / (hi - lo) is finite and positive in "
                             f"float32 (got lo={self.lo}, hi={self.hi}: float32 lo={lo32}, "
                             f"hi={hi32}, scale={scale32})")
        return self

    def to_model(self, raw):
        """Raw values (numpy array or torch tensor) -> float32 in [-1, 1]."""
        scale = 2.0 / (self.hi - self.lo)
        if isinstance(raw, torch.Tensor):
            return ((raw.float() - self.lo) * scale - 1.0).clamp_(-1.0, 1.0)
        y = (np.asarray(raw, dtype=np.float32) - np.float32(self.lo)) * np.float32(scale) - 1
        return np.clip(y, -1.0, 1.0, out=y).astype(np.float32, copy=False)

    def from_model(self, y):
        """Network output in [-1, 1] -> display units in [0, 1]."""
        return (y + 1) / 2

    def to_raw(self, y):
        """Network output in [-1, 1] -> raw detector units (inverse of ``to_model`` inside the range)."""
        return self.lo + (y + 1) / 2 * (self.hi - self.lo)

    @classmethod
    def from_frames(cls, frames, percentiles: tuple[float, float] = (0.1, 99.9),
                    *, max_samples: int = 4_000_000) -> "Normalisation":
        """Robust limits: the given percentiles of the finite values of ``frames``.

        ``frames`` is an array or a sequence of arrays. Large inputs are
        subsampled with a regular stride (at most ``max_samples`` values).
        """
        arrays = [frames] if isinstance(frames, np.ndarray) else list(frames)
        values = np.concatenate([np.asarray(a).ravel() for a in arrays]) if arrays else np.zeros(0)
        if values.size > max_samples:
            values = values[:: values.size // max_samples + 1]
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise ValueError("frames hold no finite values (got only NaN/inf or nothing)")
        lo, hi = (float(v) for v in np.percentile(values, percentiles))
        if hi <= lo:
            # Percentiles collapse for very sparse counts: fall back to the full range.
            lo, hi = float(values.min()), float(values.max())
        if hi <= lo:
            raise ValueError(f"frames have no intensity range (got constant value {lo})")
        return cls(lo=lo, hi=hi)


class DataFingerprint(BaseModel):
    """What the model was trained on: a hash of the frames, their shapes, sources and meta."""

    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(description="sha256 over dtype, shape and bytes of every training stack")
    shapes: list[list[int]] = Field(default_factory=list, description="shape of each stack")
    sources: list[str] = Field(default_factory=list, description="file names or 'simulate:...'")
    meta: dict[str, Any] = Field(default_factory=dict, description="acquisition settings")


class ModelConfig(BaseModel):
    """Everything needed to rebuild and use a trained generator (config version 2)."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[2] = CONFIG_VERSION
    size: GeneratorSize = Field(description="generator architecture")
    method: Literal["noise2atom", "blindspot", "hybrid", "supervised"] = Field(description="training method")
    normalisation: Normalisation
    prior: TargetPrior | None = Field(
        default=None, description="target-domain simulator parameters (noise2atom, hybrid)")
    data: DataFingerprint
    iteration: int = Field(default=0, ge=0, description="training iterations done")
    created: str = Field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(
        timespec="seconds"))
    n2a_version: str = Field(default_factory=n2a_version)
    train: TrainRecord | None = Field(
        default=None, description="training options used (None when not trained by n2a-train)")
    averaged_iterations: list[int] | None = Field(
        default=None, description="the checkpoints (iterations) whose weights this model averages "
        "(noise2atom.average); None: one checkpoint's weights")

    @property
    def meta(self) -> dict[str, Any]:
        """The training frames' acquisition settings."""
        return self.data.meta


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: its validated config and the generator's state dict."""

    config: ModelConfig
    state_dict: dict[str, torch.Tensor]


def fingerprint_frames(stacks: Iterable[np.ndarray], *, sources: Sequence[str] = (),
                       meta: dict[str, Any] | None = None) -> DataFingerprint:
    """Hash the training stacks (dtype, shape and bytes of each) into a :class:`DataFingerprint`."""
    h = hashlib.sha256()
    shapes = []
    for a in stacks:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
        shapes.append(list(a.shape))
    return DataFingerprint(sha256=h.hexdigest(), shapes=shapes, sources=list(sources),
                           meta=dict(meta or {}))


def save_checkpoint(path: str | os.PathLike, config: ModelConfig,
                    generator_state: dict[str, torch.Tensor]) -> Path:
    """Write ``generator_state`` and ``config`` to ``path`` (safetensors), atomically."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in generator_state.items()}
    meta = {CONFIG_KEY: config.model_dump_json()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    return path


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and validate a checkpoint; raises :class:`CheckpointError` on any problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path} is not a readable safetensors checkpoint (truncated or another format?) "
            f"(got: {e})") from e
    if CONFIG_KEY not in metadata:
        raise CheckpointError(
            f"{path} is a safetensors file but holds no n2a config (expected metadata key "
            f"{CONFIG_KEY!r}; got keys {sorted(metadata)})")
    try:
        raw = json.loads(metadata[CONFIG_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: n2a config is not valid JSON (got: {e})") from e
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: n2a config must be a JSON object (got {type(raw).__name__})")
    try:
        raw = migrate_config(raw)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from e
    try:
        config = ModelConfig.model_validate(raw)
    except ValidationError as e:
        raise CheckpointError(f"{path}: invalid n2a config (got: {_describe_errors(e)})") from e
    return Checkpoint(config=config, state_dict=state)


def migrate_config(raw: dict[str, Any]) -> dict[str, Any]:
    """A config dict of any known version, as a version-2 dict (not yet validated).

    Version 1 had the same fields; its ``train`` was ``{}`` when unknown (now ``None``), and its
    ``prior`` and ``train`` dicts were not checked (now they must fit their models).

    Examples
    --------
    >>> migrate_config({"version": 1, "size": "lite", "train": {}})
    {'version': 2, 'size': 'lite', 'train': None}
    >>> migrate_config({"version": 3})
    Traceback (most recent call last):
    ...
    ValueError: unknown checkpoint version (expected 1 or 2; got 3)
    """
    version = raw.get("version")
    if version == CONFIG_VERSION:
        return raw
    if version != 1:
        raise ValueError(f"unknown checkpoint version (expected 1 or {CONFIG_VERSION}; got {version!r})")
    return {**raw, "version": CONFIG_VERSION, "train": raw.get("train") or None}


def _describe_errors(e: ValidationError) -> str:
    """Each problem as ``field.path: message (got value)``, joined by ``; ``."""
    problems = []
    for err in e.errors():
        where = ".".join(map(str, err["loc"])) or "config"
        got = repr(err.get("input"))
        problems.append(f"{where}: {err['msg']} (got {got[:60] + '...' if len(got) > 60 else got})")
    return "; ".join(problems)


def load_generator(path: str | os.PathLike | Checkpoint) -> tuple[ModelConfig, torch.nn.Module]:
    """Load a checkpoint (a file, or one already read) into a fresh generator of its size, in eval mode."""
    ckpt = path if isinstance(path, Checkpoint) else load_checkpoint(path)
    path = "checkpoint" if isinstance(path, Checkpoint) else path
    generator = build_generator(ckpt.config.size)
    expected = generator.state_dict()
    missing = sorted(set(expected) - set(ckpt.state_dict))
    unexpected = sorted(set(ckpt.state_dict) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the {ckpt.config.size!r} generator (expected "
            f"{len(expected)} tensors; got {len(ckpt.state_dict)}; missing {missing[:3]}"
            f"{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
            f"{'...' if len(unexpected) > 3 else ''})")
    for name, tensor in ckpt.state_dict.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"{path}: weight {name!r} has the wrong shape for the {ckpt.config.size!r} "
                f"generator (expected {tuple(expected[name].shape)}; got {tuple(tensor.shape)})")
    generator.load_state_dict(ckpt.state_dict)
    return ckpt.config, generator.eval()


def model_id(source: str | os.PathLike | ModelConfig | Checkpoint) -> str:
    """A short (12 hex digits) content hash for output headers.

    A path hashes the file's bytes; a :class:`Checkpoint` hashes its config and
    weights; a bare :class:`ModelConfig` hashes its canonical JSON.
    """
    h = hashlib.sha256()
    if isinstance(source, ModelConfig):
        h.update(source.model_dump_json().encode())
    elif isinstance(source, Checkpoint):
        h.update(source.config.model_dump_json().encode())
        for k in sorted(source.state_dict):
            h.update(k.encode())
            h.update(source.state_dict[k].detach().cpu().contiguous().numpy().tobytes())
    else:
        path = Path(source)
        if not path.is_file():
            raise CheckpointError(f"checkpoint file not found: {path}")
        return file_sha256(path)[:12]
    return h.hexdigest()[:12]


def default_model_path() -> Path:
    """The bundled model ``models/default.safetensors``, or ``$N2A_MODEL`` when set."""
    env = os.environ.get("N2A_MODEL")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "models" / "default.safetensors"


def train_state_path(model_path: str | os.PathLike) -> Path:
    """The resume side file of a model: ``x.safetensors`` -> ``x.train.pt``."""
    p = Path(model_path)
    return p.with_name(p.stem + ".train.pt") if p.suffix else p.with_name(p.name + ".train.pt")


def save_train_state(model_path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write the training-resume state next to the model, atomically."""
    path = train_state_path(model_path)
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    return path


def load_train_state(model_path: str | os.PathLike) -> dict[str, Any]:
    """Read the resume state with ``torch.load(weights_only=True)`` (no arbitrary pickle)."""
    path = train_state_path(model_path)
    if not path.is_file():
        raise CheckpointError(f"training-resume file not found: {path} (needed by --resume)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"{path} is not a readable training-resume file (got: {e})") from e
