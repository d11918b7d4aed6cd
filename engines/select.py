"""``--engine auto``: the fastest back end installed here, and why not each faster one.

Candidates, fastest first (design.md §5): TensorRT; PyTorch on CUDA compiled (``torch.compile``,
needs Triton) with CUDA graphs; ONNX Runtime's CUDA provider with CUDA graphs; PyTorch on CUDA
with CUDA graphs, not compiled; ONNX Runtime on the CPU; PyTorch on the CPU. The first that can
run here wins; every one before it is named with the reason it could not.

    python -m engines.select [--device cpu|cuda[:N]] [--precision fp32|fp16|bf16]

prints the choice and the reasons (what the `gpu-check` script records first).
"""
from __future__ import annotations

import argparse
import importlib.util
from dataclasses import dataclass, field

from .base import BackendUnavailableError

__all__ = ["Selection", "TENSORRT_INSTALL", "select_backend"]

# TensorRT's libraries are not on PyPI: the PyPI packages are stubs that fetch from NVIDIA's index.
TENSORRT_INSTALL = (
    "TensorRT comes from NVIDIA's package index, not PyPI: "
    "pip install --extra-index-url https://pypi.nvidia.com tensorrt cuda-python"
)


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


def _triton() -> tuple[bool, str]:
    if importlib.util.find_spec("triton") is None:
        return False, "torch.compile on CUDA needs Triton (got none; it comes with CUDA torch from PyPI)"
    return True, ""


def _ort_providers() -> tuple[list[str] | None, str]:
    try:
        import onnxruntime
    except (ImportError, OSError) as e:
        return None, f"onnxruntime does not import ({e})"
    return list(onnxruntime.get_available_providers()), ""


def select_backend(device: str | None = None, precision: str = "fp32") -> Selection:
    """Pick the fastest back end that can run here for ``device`` (None: any) and ``precision``.

    Raises
    ------
    BackendUnavailableError
        None can: the message names every candidate and why not.
    """
    from . import tensorrt_available

    want_cpu = device == "cpu"
    want_cuda = device is not None and device.startswith("cuda")
    cuda_dev = device if want_cuda else "cuda:0"
    cuda_ok, cuda_why = _torch_cuda() if not want_cpu else (False, "")
    providers, ort_why = _ort_providers()
    skipped: list[tuple[str, str]] = []

    def gpu_blocked() -> str:
        if want_cpu:
            return "device 'cpu' asked for"
        return ""

    # 1. TensorRT
    why = gpu_blocked()
    if not why:
        ok, why = tensorrt_available()
        if ok and not cuda_ok:
            why = cuda_why
        elif ok:
            why = ""
    if not why:
        return Selection("tensorrt", cuda_dev, {}, "tensorrt", tuple(skipped))
    skipped.append(("tensorrt", why))

    # 2. PyTorch CUDA, compiled, CUDA graphs
    why = gpu_blocked() or cuda_why or _triton()[1]
    if not why:
        return Selection("pytorch", cuda_dev, {"compile": True, "cuda_graph": True},
                         "pytorch-cuda (compiled, CUDA graphs)", tuple(skipped))
    skipped.append(("pytorch-cuda compiled", why))

    # 3. ONNX Runtime CUDA provider, CUDA graphs
    why = gpu_blocked() or ort_why
    if not why and "CUDAExecutionProvider" not in providers:
        why = (f"the installed onnxruntime has no CUDA execution provider (got {', '.join(providers)}; "
               f"install onnxruntime-gpu in its place)")
    if not why and precision == "bf16":
        why = "runs fp32 or fp16 (got bf16)"
    if not why:
        return Selection("onnxruntime", cuda_dev, {"cuda_graph": True}, "onnxruntime-cuda (CUDA graphs)",
                         tuple(skipped))
    skipped.append(("onnxruntime-cuda", why))

    # 4. PyTorch CUDA, eager with CUDA graphs (no Triton)
    why = gpu_blocked() or cuda_why
    if not why:
        return Selection("pytorch", cuda_dev, {"cuda_graph": True}, "pytorch-cuda (eager, CUDA graphs)",
                         tuple(skipped))
    skipped.append(("pytorch-cuda eager", why))

    if want_cuda:
        raise BackendUnavailableError(
            f"device {device!r} asked for, but no CUDA back end can run here (got: "
            + "; ".join(f"{n}: {w}" for n, w in skipped) + ")")

    # 5. ONNX Runtime CPU, 6. PyTorch CPU
    why = ort_why or ("" if precision == "fp32" else f"runs fp32 only on the CPU (got {precision})")
    if not why:
        return Selection("onnxruntime", "cpu", {}, "onnxruntime-cpu", tuple(skipped))
    skipped.append(("onnxruntime-cpu", why))
    if precision == "fp32":
        try:
            import torch  # noqa: F401
        except (ImportError, OSError) as e:
            skipped.append(("pytorch-cpu", f"torch does not import ({e})"))
        else:
            return Selection("pytorch", "cpu", {}, "pytorch-cpu", tuple(skipped))
    else:
        skipped.append(("pytorch-cpu", f"runs fp32 only on the CPU (got {precision})"))
    raise BackendUnavailableError("no back end can run here (got: "
                                  + "; ".join(f"{n}: {w}" for n, w in skipped) + ")")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engines.select", description=__doc__.split("\n")[0])
    p.add_argument("--device", default=None)
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    args = p.parse_args(argv)
    try:
        print(select_backend(args.device, args.precision).message())
    except BackendUnavailableError as e:
        print(f"engine auto: {e}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
