"""An fp16 copy of an exported generator for ONNX Runtime's CUDA provider.

The CUDA provider runs a graph in the types it is given, so fp16 there means converting the model:
weights and activations to float16 with ONNX Runtime's own converter
(``onnxruntime.transformers.float16``), except the nodes the exporter marked as normalisation
(`engines.export.FP32_PREFIX`): a mean and std over a whole frame lose too much in half precision,
as in the PyTorch and TensorRT back ends (the lite generator has none; the paper one has several). Inputs and outputs stay float32, so the engine's contract
does not change. The conversion runs in memory when the engine starts (seconds).
"""
from __future__ import annotations

from pathlib import Path

from .base import EngineBuildError
from .export import FP32_PREFIX

__all__ = ["fp16_model_bytes", "fp16_model"]


def fp16_model(onnx_path: str | Path):
    """The ``onnx.ModelProto`` of ``onnx_path`` in float16, normalisation nodes and I/O in float32."""
    import onnx

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as e:  # a build of onnxruntime without its transformers tools
        raise EngineBuildError(f"fp16 needs onnxruntime.transformers.float16 (got: {e})") from e
    model = onnx.load(str(onnx_path))
    keep = [n.name for n in model.graph.node if n.name.startswith(FP32_PREFIX)]
    # disable_shape_infer: the frame axes are dynamic; the converter needs no shapes for casts.
    return convert_float_to_float16(model, keep_io_types=True, node_block_list=keep,
                                    disable_shape_infer=True)


def fp16_model_bytes(onnx_path: str | Path) -> bytes:
    """`fp16_model` serialised, for ``onnxruntime.InferenceSession``."""
    return fp16_model(onnx_path).SerializeToString()
