"""The engine contract: one lifecycle, checked once, for every back end.

An `Engine` is a context manager. ``__enter__`` builds or loads what the back end needs
(``_activate``), :meth:`Engine.infer` checks the batch and hands it to ``_infer``, ``__exit__``
releases everything (``_deactivate``). Back ends override only the three hooks and ``_describe``,
so the lifecycle and input checks live in one place (the Polygraphy runner pattern).
"""
from __future__ import annotations

import abc
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from noise2atom.files import file_sha256

if TYPE_CHECKING:  # the checkpoint module imports torch; keep `import engines` light
    from noise2atom.checkpoint import Checkpoint, ModelConfig

    from .config import EngineConfig

__all__ = [
    "BackendUnavailableError",
    "Done",
    "Engine",
    "EngineBuildError",
    "EngineError",
    "Precision",
    "check_batch",
]

Precision = Literal["fp32", "fp16", "bf16"]


class EngineError(RuntimeError):
    """Misuse of an engine: wrong lifecycle or a batch it cannot take."""


class EngineBuildError(EngineError):
    """An engine (ONNX graph, TensorRT plan) could not be built or loaded."""


class BackendUnavailableError(EngineError):
    """A back end was asked for explicitly but its library or device is missing."""


def check_batch(batch: Any) -> np.ndarray:
    """Return ``batch`` if it is a finite float32 (N, H, W) array with N >= 1, else raise.

    Parameters
    ----------
    batch
        Frames normalised as the checkpoint says, float32 in [-1, 1].

    Returns
    -------
    numpy.ndarray
        The same array, made C-contiguous (a copy only when it was not).

    Raises
    ------
    EngineError
        Saying what was expected and what was got.

    Examples
    --------
    >>> check_batch(np.zeros((1, 8, 8), np.float32)).shape
    (1, 8, 8)
    >>> check_batch(np.zeros((8, 8), np.float32))
    Traceback (most recent call last):
    ...
    engines.base.EngineError: expected a batch of frames of rank 3 (N, H, W) (got rank 2, shape (8, 8))
    """
    if not isinstance(batch, np.ndarray):
        raise EngineError(f"expected a numpy array of float32 frames (got {type(batch).__name__})")
    if batch.ndim != 3:
        raise EngineError(
            f"expected a batch of frames of rank 3 (N, H, W) (got rank {batch.ndim}, shape {batch.shape})"
        )
    if batch.dtype != np.float32:
        raise EngineError(f"expected dtype float32 (got {batch.dtype})")
    n, h, w = batch.shape
    if n < 1 or h < 1 or w < 1:
        raise EngineError(f"expected N, H, W >= 1 (got shape {batch.shape})")
    finite = np.isfinite(batch)
    if not finite.all():
        bad = np.argwhere(~finite)
        first = tuple(int(i) for i in bad[0])
        raise EngineError(
            f"expected finite values (got {len(bad)} NaN/Inf, first at index {first}: {batch[first]})"
        )
    return np.ascontiguousarray(batch)


class Engine(abc.ABC):
    """One denoising back end behind a checked lifecycle.

    Subclasses implement ``_activate``, ``_infer``, ``_deactivate`` and ``_describe``; callers use
    ``with engine: engine.infer(batch)``. An engine can be entered again after it was exited.

    Parameters
    ----------
    checkpoint
        Path of the checkpoint file the engine runs.
    config
        The checkpoint's ``ModelConfig`` (callers use its ``normalisation`` on raw frames).
    device
        Where it runs, e.g. ``"cpu"`` or ``"cuda:0"``.
    precision
        ``"fp32"``, ``"fp16"`` or ``"bf16"``.
    sha256
        The checkpoint file's sha256 when the caller has it (`open_engine` does); else hashed
        on first use.
    weights
        The checkpoint as already read (`open_engine` reads it once, for its config): the back
        end builds from it instead of reading the file again, then lets it go.
    """

    backend: str = "base"
    selection = None  # set by open_engine(backend="auto"): an engines.select.Selection
    #: The `EngineConfig` this engine was opened with, back end and device resolved (set by
    #: `open_engine`; None for an engine made directly).
    engine_config: EngineConfig | None = None
    #: Options of ``engine_config`` that the back end ``auto`` chose does not take (left out).
    unused_options: tuple[str, ...] = ()

    def __init__(
        self, *, checkpoint: str | Path, config: ModelConfig, device: str, precision: Precision,
        sha256: str | None = None, weights: Checkpoint | None = None,
    ) -> None:
        self.checkpoint = Path(checkpoint)
        self.config = config
        self.device = device
        self.precision = precision
        self._active = False
        self._closed = False
        self._sha256 = sha256
        self._weights = weights

    # -- public lifecycle ------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """True between ``__enter__`` and ``__exit__``."""
        return self._active

    def __enter__(self) -> Engine:
        if self._active:
            raise EngineError(f"{self.backend} engine is already active (entered twice)")
        try:
            self._activate()
        except EngineError:
            raise
        except Exception as e:  # a back end's own failure: say which back end, keep the cause
            raise EngineBuildError(f"{self.backend} engine failed to start on {self.device}: {e}") from e
        self._active = True
        self._closed = False
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._active:
            return
        try:
            self._deactivate()
        finally:
            self._active = False
            self._closed = True

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Denoise a batch.

        Parameters
        ----------
        batch
            float32 (N, H, W) frames in [-1, 1], N >= 1, all finite.

        Returns
        -------
        numpy.ndarray
            float32 (N, H, W), the denoised frames in [-1, 1] (a fresh array the caller owns).
        """
        batch = self._checked(batch)
        return self._check_out(self._infer(batch), batch.shape)

    def submit(self, batch: np.ndarray) -> Done:
        """Start denoising a batch; ``.result()`` of the returned object gives what `infer` would.

        Back ends that can overlap work (PyTorch on CUDA: frame n+1's upload beside frame n's
        compute) return before the batch is done; the others compute it here. Submit the next
        frame before collecting this one to get the overlap.
        """
        batch = self._checked(batch)
        return _CheckedPending(self, self._submit(batch), batch.shape)

    def _checked(self, batch: Any) -> np.ndarray:
        if not self._active:
            when = "after it was exited" if self._closed else "before it was entered"
            raise EngineError(
                f"{self.backend} engine used {when}: call infer() inside `with engine:` (got an inactive engine)"
            )
        return check_batch(batch)

    def _check_out(self, out: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        if out.shape != shape or out.dtype != np.float32:
            raise EngineError(
                f"{self.backend} engine returned {out.dtype} {out.shape} "
                f"(expected float32 {shape}); this is a bug in the back end"
            )
        return out

    @property
    def checkpoint_sha256(self) -> str:
        """sha256 of the checkpoint file (hashed once; keys the ONNX and plan caches)."""
        if self._sha256 is None:
            self._sha256 = file_sha256(self.checkpoint)
        return self._sha256

    def _take_weights(self) -> Checkpoint | None:
        """The checkpoint as read by `open_engine`, the first time only (then dropped, so an
        engine does not hold a second copy of its weights); None after that: read the file."""
        weights, self._weights = self._weights, None
        return weights

    @property
    def model_id(self) -> str:
        """12 hex digits, the same as ``noise2atom.checkpoint.model_id(path)``."""
        return self.checkpoint_sha256[:12]

    def describe(self) -> dict[str, str]:
        """Say what runs: back end, device, precision, model id, plus back-end details."""
        info = {
            "backend": self.backend,
            "device": self.device,
            "precision": self.precision,
            "model": self.model_id,
        }
        info.update(self._describe())
        if self.selection is not None:
            info["selected"] = self.selection.message()
        if self.unused_options:
            info["unused_options"] = ",".join(self.unused_options)
        return info

    def __repr__(self) -> str:
        state = "active" if self._active else "inactive"
        return f"<{type(self).__name__} {self.device} {self.precision} {self.checkpoint.name} ({state})>"

    # -- hooks -----------------------------------------------------------------------------
    @abc.abstractmethod
    def _activate(self) -> None:
        """Build or load the model on the device."""

    @abc.abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """Run a checked batch; return float32 of the same shape."""

    @abc.abstractmethod
    def _deactivate(self) -> None:
        """Release everything ``_activate`` took."""

    def _describe(self) -> dict[str, str]:
        """Back-end specific extras for :meth:`describe`."""
        return {}

    def _submit(self, batch: np.ndarray):
        """Start a checked batch; the default computes it now. Returns an object with ``result()``."""
        return Done(self._infer(batch))


class Done:
    """A submitted batch whose result is already known (or, in subclasses, collected on demand)."""

    def __init__(self, value: np.ndarray | None) -> None:
        self._value = value

    def result(self) -> np.ndarray:
        """The denoised batch, a fresh float32 array the caller owns."""
        return self._value


class _CheckedPending(Done):
    """A back end's pending result, checked like `Engine.infer`'s when collected."""

    def __init__(self, engine: Engine, pending: Any, shape: tuple[int, ...]) -> None:
        super().__init__(None)
        self._engine, self._pending, self._shape = engine, pending, shape

    def result(self) -> np.ndarray:
        if self._value is None:
            self._value = self._engine._check_out(self._pending.result(), self._shape)
        return self._value
