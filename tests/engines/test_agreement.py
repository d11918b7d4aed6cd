"""The back ends agree: the same frames through PyTorch, ONNX Runtime (and TensorRT on a GPU).

Both generator sizes, sizes 64², 200×304 (not a multiple of 8) and 512², batch 1 and 3,
fp32 within 1e-4. The paper model at 512² is marked slow (tens of seconds per case on 2 cores).
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import engines
from engines.export import FP32_PREFIX, INPUT_NAME, export_onnx

TOL = 1e-4
SHAPES = [(64, 64), (200, 304), (512, 512)]


def _cases():
    for size in ("lite", "paper"):
        for hw in SHAPES:
            for n in (1, 3):
                marks = [pytest.mark.slow] if (size, hw) == ("paper", (512, 512)) else []
                yield pytest.param(size, hw, n, id=f"{size}-{hw[0]}x{hw[1]}-b{n}", marks=marks)


@pytest.fixture(scope="module")
def cpu_engines(checkpoints):
    """Entered PyTorch-CPU and ONNX-Runtime engines per generator size, opened on first use."""
    opened, stack = {}, []

    def get(size):
        if size not in opened:
            pt = engines.open_engine(checkpoints[size], "pytorch", device="cpu")
            ox = engines.open_engine(checkpoints[size], "onnxruntime")
            opened[size] = (pt.__enter__(), ox.__enter__())
            stack.extend(opened[size])
        return opened[size]

    yield get
    for engine in stack:
        engine.__exit__(None, None, None)


def _frames(n, hw, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n, *hw)).astype(np.float32)


@pytest.mark.parametrize(("size", "hw", "n"), list(_cases()))
def test_pytorch_and_onnxruntime_agree(cpu_engines, size, hw, n):
    pt, ox = cpu_engines(size)
    frames = _frames(n, hw, seed=hash((size, hw, n)) % 2**32)
    a = pt.infer(frames)
    b = ox.infer(frames)
    assert a.shape == b.shape == frames.shape and a.dtype == b.dtype == np.float32
    assert np.isfinite(a).all()
    assert np.abs(a).max() <= 1.0  # tanh output
    err = float(np.abs(a - b).max())
    assert err < TOL, f"max |pytorch - onnxruntime| = {err:.2e} at {size} {n}x{hw}"
    # The frames of a batch are independent: frame 0 alone gives the same answer.
    if n > 1:
        np.testing.assert_allclose(ox.infer(frames[:1])[0], b[0], atol=TOL, rtol=0)


def test_export_is_checked_dynamic_and_marks_norms(checkpoints):
    model = onnx.load(str(export_onnx(checkpoints["paper"])))
    onnx.checker.check_model(model, full_check=True)
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 17
    (inp,) = model.graph.input
    assert inp.name == INPUT_NAME
    dims = inp.type.tensor_type.shape.dim
    assert len(dims) == 3 and all(d.dim_param and not d.dim_value for d in dims)
    marked = [n for n in model.graph.node if n.name.startswith(FP32_PREFIX)]
    assert marked, "the paper generator's ScalarLayerNorm nodes should be marked for fp32"
    assert {n.op_type for n in marked} <= {"ReduceMean", "Sub", "Pow", "Mul", "Sqrt", "Add", "Div"}
    # Every wide mean is staged (spatial then channel): no ReduceMean over axes (1, 2, 3) is left.
    inits = {t.name: onnx.numpy_helper.to_array(t).tolist() for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "ReduceMean" and len(node.input) > 1:
            assert inits.get(node.input[1]) != [1, 2, 3], node.name


@pytest.mark.gpu
@pytest.mark.parametrize("size", ["lite", "paper"])
def test_pytorch_cuda_agrees_with_cpu(checkpoints, size):
    with engines.open_engine(checkpoints[size], "pytorch", device="cpu") as cpu, \
            engines.open_engine(checkpoints[size], "pytorch", device="cuda") as gpu, \
            engines.open_engine(checkpoints[size], "pytorch", device="cuda", cuda_graph=True) as graph:
        for hw in SHAPES:
            for n in (1, 3):
                frames = _frames(n, hw, seed=7)
                ref = cpu.infer(frames)
                assert np.abs(gpu.infer(frames) - ref).max() < TOL
                assert np.abs(graph.infer(frames) - ref).max() < TOL
                assert np.abs(graph.infer(frames) - ref).max() < TOL  # replay of the captured graph
        assert graph.describe()["graph_captures"] == str(len(SHAPES) * 2)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_pytorch_cuda_autocast_stays_close(checkpoints, precision):
    frames = _frames(2, (256, 256), seed=3)
    with engines.open_engine(checkpoints["paper"], "pytorch", device="cpu") as cpu, \
            engines.open_engine(checkpoints["paper"], "pytorch", device="cuda", precision=precision) as half:
        ref, got = cpu.infer(frames), half.infer(frames)
    assert np.isfinite(got).all()
    assert float(np.abs(got - ref).mean()) < 2e-2


def _tensorrt_or_skip():
    ok, why = engines.tensorrt_available()
    if not ok:
        pytest.skip(why)


@pytest.mark.gpu
@pytest.mark.parametrize("size", ["lite", "paper"])
def test_tensorrt_agrees_with_onnxruntime(checkpoints, size):
    _tensorrt_or_skip()
    from engines import ShapeProfile

    profile = ShapeProfile(min=(64, 64), opt=(512, 512), max=(512, 512))
    with engines.open_engine(checkpoints[size], "onnxruntime") as ox, \
            engines.open_engine(checkpoints[size], "tensorrt", profile=profile, streams=2) as trt:
        for hw in SHAPES:
            for n in (1, 3):
                frames = _frames(n, hw, seed=11)
                err = float(np.abs(trt.infer(frames) - ox.infer(frames)).max())
                assert err < TOL, f"{size} {n}x{hw}: {err:.2e}"


@pytest.mark.gpu
def test_tensorrt_fp16_keeps_norms_and_stays_close(checkpoints):
    _tensorrt_or_skip()
    from engines import ShapeProfile

    profile = ShapeProfile(min=(64, 64), opt=(256, 256), max=(512, 512))
    frames = _frames(3, (256, 256), seed=5)
    with engines.open_engine(checkpoints["paper"], "onnxruntime") as ox, \
            engines.open_engine(checkpoints["paper"], "tensorrt", precision="fp16", profile=profile) as trt:
        got, ref = trt.infer(frames), ox.infer(frames)
        plan = trt.plan_file
    assert np.isfinite(got).all()
    assert float(np.abs(got - ref).mean()) < 2e-2
    # The second open reuses the cached plan instead of building again.
    mtime = plan.stat().st_mtime_ns
    with engines.open_engine(checkpoints["paper"], "tensorrt", precision="fp16", profile=profile) as trt:
        assert trt.plan_file == plan
        trt.infer(frames[:1])
    assert plan.stat().st_mtime_ns == mtime
