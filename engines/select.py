"""What can run here, and ``--engine auto``: the fastest back end installed, and why not each faster one.

Candidates, fastest first (design.md §5): TensorRT; PyTorch on CUDA compiled (``torch.compile``,
needs Triton) with CUDA graphs; ONNX Runtime's CUDA provider with CUDA graphs; PyTorch on CUDA
with CUDA graphs, not compiled; ONNX Runtime on the CPU; PyTorch on the CPU. The first that can
run here wins; every one before it is named with the reason it could not.
``python -m engines.cli.select`` prints the choice and the reasons (what ``gpu-check`` records first).

Importing this module is cheap: torch, onnxruntime and TensorRT are imported only when asked about.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import NamedTuple

from .base import BackendUnavailableError

__all__ = ["Availability", "Selection", "cuda_available", "select_backend", "tensorrt_available",
           "torch_build"]


class Availability(NamedTuple):
    """Whether a back end can be used, and if not, why; true only when it can.

    A plain ``(ok, why)`` tuple is always true, so ``if not tensorrt_available():`` never fired;
    this one is as true as ``ok`` and still unpacks as ``ok, why = ...``.

    >>> bool(Availability(False, "no tensorrt")), bool(Availability(True, ""))
    (False, True)
    """

    ok: bool
    reason: str

    def __bool__(self) -> bool:
        return bool(self.ok)


def cuda_available() -> bool:
    """True when torch sees a CUDA device."""
    try:
        import torch
    except (ImportError, OSError):
        return False
    return torch.cuda.is_available()


def torch_build() -> str:
    """``"torch 2.x"``, or why torch does not import."""
    try:
        import torch
    except (ImportError, OSError) as e:
        return f"no torch ({e})"
    return f"torch {torch.__version__}"


def tensorrt_available() -> Availability:
    """``Availability(True, "")`` when TensorRT and cuda-python import, else what is missing."""
    from .tensorrt_lib import TENSORRT_INSTALL, import_tensorrt

    try:
        import_tensorrt()
    except BackendUnavailableError as e:
        cause = e.__cause__ if e.__cause__ is not None else e  # the import error itself
        return Availability(False, f"tensorrt back end needs TensorRT >= 10 and cuda-python "
                                   f"({TENSORRT_INSTALL}) (got: {cause})")
    return Availability(True, "")


@dataclass(frozen=True)
class Selection:
    """What ``auto`` chose: the back end, its device and options, and the faster ones it skipped."""

    backend: str
    device: str
    options: dict = field(default_factory=dict)
    label: str = ""
    skipped: tuple[tuple[str, str], ...] = ()

    def message(self) -> str:
        """One line: the choice, then ``not X: why`` for every faster candidate."""
        head = f"engine auto: {self.label} on {self.device}"
        if not self.skipped:
            return head + " (the fastest back end)"
        return head + "; " + "; ".join(f"not {name}: {why}" for name, why in self.skipped)


def _torch_cuda() -> tuple[bool, str]:
    try:
        import torch
    except (ImportError, OSError) as e:
        return False, f"torch does not import ({e})"
    if not torch.cuda.is_available():
        build = "a CPU build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        return False, f"torch {torch.__version__} ({build}) sees no CUDA device"
    return True, ""


def _triton() -> str:
    if importlib.util.find_spec("triton") is None:
        return "torch.compile on CUDA needs Triton (got none; it comes with CUDA torch from PyPI)"
    return ""


def _ort_providers() -> tuple[list[str] | None, str]:
    try:
        import onnxruntime
    except (ImportError, OSError) as e:
        return None, f"onnxruntime does not import ({e})"
    return list(onnxruntime.get_available_providers()), ""


@dataclass(frozen=True)
class _Here:
    """What this machine has, asked once per selection."""

    device: str | None
    precision: str
    cuda_why: str  # "" when torch sees a CUDA device (and the CPU was not asked for)
    providers: list[str] | None
    ort_why: str

    @property
    def gpu_blocked(self) -> str:
        return "device 'cpu' asked for" if self.device == "cpu" else ""


# Each GPU candidate: (name in messages, back end, options, label, why it cannot run here or "").
def _gpu_candidates(here: _Here):
    def tensorrt() -> str:
        ok, why = tensorrt_available()
        return why if not ok else here.cuda_why

    def ort_cuda() -> str:
        if here.ort_why:
            return here.ort_why
        if "CUDAExecutionProvider" not in here.providers:
            return (f"the installed onnxruntime has no CUDA execution provider (got "
                    f"{', '.join(here.providers)}; install onnxruntime-gpu in its place)")
        return "runs fp32 or fp16 (got bf16)" if here.precision == "bf16" else ""

    yield "tensorrt", "tensorrt", {}, "tensorrt", tensorrt
    yield ("pytorch-cuda compiled", "pytorch", {"compile": True, "cuda_graph": True},
           "pytorch-cuda (compiled, CUDA graphs)", lambda: here.cuda_why or _triton())
    yield ("onnxruntime-cuda", "onnxruntime", {"cuda_graph": True}, "onnxruntime-cuda (CUDA graphs)",
           ort_cuda)
    yield ("pytorch-cuda eager", "pytorch", {"cuda_graph": True}, "pytorch-cuda (eager, CUDA graphs)",
           lambda: here.cuda_why)


def _cpu_choice(here: _Here, skipped: list[tuple[str, str]]) -> Selection | None:
    """ONNX Runtime on the CPU, else PyTorch on the CPU (both fp32 only); None: neither."""
    fp32_why = "" if here.precision == "fp32" else f"runs fp32 only on the CPU (got {here.precision})"
    why = here.ort_why or fp32_why
    if not why:
        return Selection("onnxruntime", "cpu", {}, "onnxruntime-cpu", tuple(skipped))
    skipped.append(("onnxruntime-cpu", why))
    if fp32_why:
        skipped.append(("pytorch-cpu", fp32_why))
        return None
    try:
        import torch  # noqa: F401
    except (ImportError, OSError) as e:
        skipped.append(("pytorch-cpu", f"torch does not import ({e})"))
        return None
    return Selection("pytorch", "cpu", {}, "pytorch-cpu", tuple(skipped))


def select_backend(device: str | None = None, precision: str = "fp32") -> Selection:
    """Pick the fastest back end that can run here for ``device`` (None: any) and ``precision``.

    Raises
    ------
    BackendUnavailableError
        None can: the message names every candidate and why not.
    """
    want_cuda = device is not None and device.startswith("cuda")
    cuda_ok, cuda_why = _torch_cuda() if device != "cpu" else (False, "")
    providers, ort_why = _ort_providers()
    here = _Here(device, precision, "" if cuda_ok else cuda_why, providers, ort_why)
    skipped: list[tuple[str, str]] = []
    for name, backend, options, label, why_not in _gpu_candidates(here):
        why = here.gpu_blocked or why_not()
        if not why:
            return Selection(backend, device if want_cuda else "cuda:0", options, label, tuple(skipped))
        skipped.append((name, why))
    if want_cuda:
        raise BackendUnavailableError(
            f"device {device!r} asked for, but no CUDA back end can run here (got: "
            + "; ".join(f"{n}: {w}" for n, w in skipped) + ")")
    choice = _cpu_choice(here, skipped)
    if choice is None:
        raise BackendUnavailableError("no back end can run here (got: "
                                      + "; ".join(f"{n}: {w}" for n, w in skipped) + ")")
    return choice

