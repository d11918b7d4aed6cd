"""ONNX Runtime on CUDA: what can be checked on the CPU (the fp16 model, the pinned-shape session that
CUDA graphs need, option errors) and gpu-marked runs of the CUDA provider itself."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import engines
from engines import EngineError
from engines.export import FP32_PREFIX, INPUT_NAME, export_onnx
from engines.onnx_fp16 import fp16_model, fp16_model_bytes
from engines.onnxruntime import available_providers, fix_input_shape, input_dim_names

TOL = 1e-4


def _frames(shape, seed):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def _cpu_session(model, options=None):
    return ort.InferenceSession(model, sess_options=options or ort.SessionOptions(),
                                providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("size", ["lite", "paper"])
def test_fp16_model_keeps_io_and_norms_in_fp32_and_stays_close(checkpoints, size):
    path = export_onnx(checkpoints[size])
    model = fp16_model(path)
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [f32]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [f32]
    kinds = Counter(t.data_type for t in model.graph.initializer)
    assert kinds[f16] > 0, kinds
    convs = {n.name: n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")}
    weights = {t.name: t.data_type for t in model.graph.initializer}
    assert all(weights.get(n.input[1], f16) == f16 for n in convs.values())
    marked = [n for n in model.graph.node if n.name.startswith(FP32_PREFIX)]
    if size == "paper":  # its normalisation nodes are fed float32 through casts
        assert marked
        producers = {o: n for n in model.graph.node for o in n.output}
        fed = [producers.get(n.input[0]) for n in marked if n.op_type == "ReduceMean"]
        assert fed and all(p is not None and (p.op_type == "Cast" or p.name.startswith(FP32_PREFIX))
                           for p in fed)
    x = _frames((1, 64, 96), 3)
    ref = _cpu_session(str(path)).run(None, {INPUT_NAME: x})[0]
    got = _cpu_session(fp16_model_bytes(path)).run(None, {INPUT_NAME: x})[0]
    assert got.dtype == np.float32 and np.isfinite(got).all()
    assert float(np.abs(got - ref).mean()) < 2e-2  # as PyTorch autocast and TensorRT fp16


def test_pinned_input_shape_folds_the_shape_arithmetic(checkpoints, tmp_path):
    path = export_onnx(checkpoints["paper"])
    names = input_dim_names(path)
    assert len(names) == 3 and all(names)

    def optimised(shape):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        if shape is not None:
            fix_input_shape(options, names, shape)
        out = tmp_path / f"opt-{shape is not None}.onnx"
        options.optimized_model_filepath = str(out)
        session = _cpu_session(str(path), options)
        return session, Counter(n.op_type for n in onnx.load(str(out)).graph.node)

    _, dynamic = optimised(None)
    session, fixed = optimised((1, 100, 120))
    assert dynamic["Shape"] > 0 and dynamic["Mod"] > 0
    assert fixed["Shape"] == 0 and fixed["Mod"] == 0, fixed  # nothing left for the CPU to compute
    x = _frames((1, 100, 120), 4)
    ref = _cpu_session(str(path)).run(None, {INPUT_NAME: x})[0]
    np.testing.assert_allclose(session.run(None, {INPUT_NAME: x})[0], ref, atol=TOL)
    with pytest.raises(EngineError, match=r"rank 3 for axes .* \(got \(100, 120\)\)"):
        fix_input_shape(ort.SessionOptions(), names, (100, 120))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(cuda_graph=True), r"CUDA graphs need a CUDA device \(got device 'cpu'\)"),
        (dict(tensorrt_provider=True), r"TensorRT provider needs a CUDA device \(got device 'cpu'\)"),
        (dict(max_shapes=0), r"max_shapes >= 1 \(got 0\)"),
        (dict(precision="bf16"), r"fp32 \(or fp16 on CUDA\) \(got 'bf16'\)"),
    ],
)
def test_onnxruntime_option_errors(lite_checkpoint, kwargs, match):
    with pytest.raises(EngineError, match=match):
        engines.open_engine(lite_checkpoint, "onnxruntime", **kwargs)


# -- CUDA ------------------------------------------------------------------------------------
def _cuda_provider_or_skip():
    if "CUDAExecutionProvider" not in available_providers():
        pytest.skip(f"onnxruntime has no CUDA provider (got {available_providers()}; install onnxruntime-gpu)")


@pytest.mark.gpu
@pytest.mark.parametrize("size", ["lite", "paper"])
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_onnxruntime_cuda_agrees_with_cpu(checkpoints, size, cuda_graph):
    _cuda_provider_or_skip()
    frames = [_frames((1, 128, 128), s) for s in range(3)] + [_frames((2, 96, 160), 5)]
    with engines.open_engine(checkpoints[size], "onnxruntime") as cpu, \
            engines.open_engine(checkpoints[size], "onnxruntime", device="cuda", cuda_graph=cuda_graph) as gpu:
        outs = [gpu.infer(f) for f in frames]
        for f, o in zip(frames, outs):
            assert np.abs(o - cpu.infer(f)).max() < TOL
        np.testing.assert_allclose(gpu.infer(frames[0]), outs[0], atol=1e-6)  # replay; outs[0] kept
        info = gpu.describe()
    assert info["providers"].startswith("CUDAExecutionProvider")
    if cuda_graph:
        assert info["graph_captures"] == "2"


@pytest.mark.gpu
def test_onnxruntime_cuda_fp16_stays_close(checkpoints):
    _cuda_provider_or_skip()
    x = _frames((2, 256, 256), 3)
    with engines.open_engine(checkpoints["paper"], "onnxruntime") as cpu, \
            engines.open_engine(checkpoints["paper"], "onnxruntime", device="cuda", precision="fp16") as half:
        ref, got = cpu.infer(x), half.infer(x)
    assert np.isfinite(got).all()
    assert float(np.abs(got - ref).mean()) < 2e-2
