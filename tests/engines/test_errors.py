"""Every way to misuse an engine fails loudly with what was expected and what was got."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import engines
from engines import BackendUnavailableError, EngineBuildError, EngineError
from engines import ShapeProfile
from engines.cache import sidecar_path
from engines.export import check_onnx_model, export_onnx
from engines.tensorrt_build import plan_path
from noise2atom.files import file_sha256
from noise2atom.checkpoint import CheckpointError, model_id


@pytest.fixture(scope="module")
def ort_engine(lite_checkpoint):
    with engines.open_engine(lite_checkpoint, "onnxruntime") as engine:
        yield engine


GOOD = np.zeros((1, 16, 16), np.float32)


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        (np.zeros((16, 16), np.float32), r"rank 3 \(N, H, W\) \(got rank 2, shape \(16, 16\)\)"),
        (np.zeros((1, 1, 16, 16), np.float32), r"rank 3 .*got rank 4"),
        (np.zeros((1, 16, 16), np.float64), r"expected dtype float32 \(got float64\)"),
        (np.zeros((1, 16, 16), np.uint16), r"expected dtype float32 \(got uint16\)"),
        (np.zeros((0, 16, 16), np.float32), r"N, H, W >= 1 \(got shape \(0, 16, 16\)\)"),
        ([[[0.0]]], r"numpy array .*\(got list\)"),
    ],
)
def test_bad_batches_are_rejected(ort_engine, batch, match):
    with pytest.raises(EngineError, match=match):
        ort_engine.infer(batch)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_names_count_and_first_index(ort_engine, bad):
    batch = np.zeros((2, 16, 16), np.float32)
    batch[1, 3, 4] = bad
    batch[1, 9, 9] = bad
    with pytest.raises(EngineError, match=r"finite values \(got 2 NaN/Inf, first at index \(1, 3, 4\)"):
        ort_engine.infer(batch)


def test_pytorch_engine_checks_the_same(lite_checkpoint):
    with engines.open_engine(lite_checkpoint, "pytorch", device="cpu") as engine:
        with pytest.raises(EngineError, match="expected dtype float32"):
            engine.infer(GOOD.astype(np.float16))
        assert engine.infer(GOOD).shape == GOOD.shape


@pytest.mark.parametrize("backend", ["pytorch", "onnxruntime"])
def test_lifecycle(lite_checkpoint, backend):
    engine = engines.open_engine(lite_checkpoint, backend, device="cpu")
    with pytest.raises(EngineError, match="before it was entered"):
        engine.infer(GOOD)
    with engine:
        assert engine.active
        with pytest.raises(EngineError, match="already active"):
            engine.__enter__()
        out = engine.infer(GOOD)
        out[...] = 5  # the caller owns the result: it must not alias engine buffers
        assert np.abs(engine.infer(GOOD)).max() <= 1
    assert not engine.active
    with pytest.raises(EngineError, match="after it was exited"):
        engine.infer(GOOD)
    with engine:  # an engine can be entered again
        assert engine.infer(GOOD).shape == GOOD.shape


def test_describe_names_backend_device_precision_model(lite_checkpoint):
    with engines.open_engine(lite_checkpoint, "onnxruntime") as engine:
        info = engine.describe()
    assert info["backend"] == "onnxruntime" and info["device"] == "cpu" and info["precision"] == "fp32"
    assert info["model"] == model_id(lite_checkpoint)
    assert "CPUExecutionProvider" in info["providers"]
    assert engine.config.size == "lite" and engine.config.normalisation.hi == 900.0


def test_tensorrt_available_is_false_when_it_is_not():
    """`if not engines.tensorrt_available():` must skip where TensorRT is missing (a bare
    ``(False, why)`` tuple is true, so such checks never fired)."""
    availability = engines.tensorrt_available()
    ok, why = availability
    assert bool(availability) is ok and availability.reason == why
    assert (why == "") is ok
    if not ok:
        assert "tensorrt back end needs" in why
    assert not engines.Availability(False, "missing") and engines.Availability(True, "")


def test_tensorrt_requested_without_it_names_nvidias_index(lite_checkpoint):
    ok, _ = engines.tensorrt_available()
    if ok and engines.cuda_available():
        pytest.skip("TensorRT and a GPU are present")
    with pytest.raises(BackendUnavailableError, match=r"tensorrt.*NVIDIA's package index, not PyPI.*\(got"):
        engines.open_engine(lite_checkpoint, "tensorrt")


def test_cuda_requested_without_a_gpu_is_an_error_not_a_fallback(lite_checkpoint):
    if engines.cuda_available():
        pytest.skip("a GPU is present")
    with pytest.raises(BackendUnavailableError, match=r"pytorch on cuda needs a CUDA build of torch.*\(got torch"):
        engines.open_engine(lite_checkpoint, "pytorch", device="cuda")
    with pytest.raises(BackendUnavailableError, match=r"CUDA execution provider \(got providers"):
        engines.open_engine(lite_checkpoint, "onnxruntime", device="cuda")
    with pytest.raises(BackendUnavailableError, match="no CUDA device"):
        engines.open_engine(lite_checkpoint, "auto", device="cuda:0")


def test_auto_picks_onnxruntime_on_a_cpu_machine(lite_checkpoint):
    if engines.cuda_available():
        pytest.skip("a GPU is present")
    assert engines.open_engine(lite_checkpoint).backend == "onnxruntime"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(backend="openvino"), r"unknown back end.*\(got 'openvino'\)"),
        (dict(backend="pytorch", device="cpu", precision="fp16"), r"fp32 only \(got precision 'fp16'\)"),
        (dict(backend="pytorch", device="tpu"), r"'cpu' or 'cuda\[:N\]' \(got device 'tpu'\)"),
        (dict(backend="onnxruntime", precision="fp16"), r"fp32 only \(got precision 'fp16'\)"),
        (dict(backend="pytorch", device="cpu", cuda_graph=True), r"CUDA graphs need a CUDA device"),
        (dict(backend="pytorch", device="cpu", threads=0), r"threads >= 1 \(got 0\)"),
    ],
)
def test_bad_options(lite_checkpoint, kwargs, match):
    with pytest.raises(EngineError, match=match):
        engines.open_engine(lite_checkpoint, **kwargs)


def test_missing_corrupt_and_truncated_checkpoints(tmp_path, lite_checkpoint):
    with pytest.raises(CheckpointError, match="not found"):
        engines.open_engine(tmp_path / "nope.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="not a readable safetensors checkpoint"):
        engines.open_engine(corrupt, "onnxruntime")
    truncated = tmp_path / "truncated.safetensors"
    data = lite_checkpoint.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        engines.open_engine(truncated, "pytorch", device="cpu")


def test_export_is_cached_by_content_hash(tmp_path, checkpoint_maker):
    make_checkpoint = checkpoint_maker
    ckpt = make_checkpoint(tmp_path / "m.safetensors", "lite", seed=5)
    first = export_onnx(ckpt)
    assert first.parent == ckpt.parent and file_sha256(ckpt)[:16] in first.name
    before = first.stat()
    second = export_onnx(ckpt)  # free: the same file, not rewritten (a rewrite is a new inode)
    after = second.stat()
    assert second == first
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # New weights under the same name: a new hash, a new export.
    make_checkpoint(ckpt, "lite", seed=6)
    third = export_onnx(ckpt)
    assert third != first and third.exists()


def test_onnx_from_another_model_is_refused(tmp_path, lite_checkpoint, checkpoint_maker):
    other = checkpoint_maker(tmp_path / "other.safetensors", "lite", seed=9)
    other_onnx = export_onnx(other)
    with pytest.raises(EngineBuildError, match=r"exported from another model \(expected checkpoint sha256"):
        check_onnx_model(other_onnx, file_sha256(lite_checkpoint))
    engine = engines.open_engine(lite_checkpoint, "onnxruntime", onnx_path=other_onnx)
    with pytest.raises(EngineBuildError, match="another model"):
        engine.__enter__()
    assert not engine.active
    # A cache file swapped for another model's export is refused too, not silently run.
    mine = export_onnx(lite_checkpoint)
    swapped = tmp_path / "swap"
    swapped.mkdir()
    ckpt = swapped / lite_checkpoint.name
    shutil.copy(lite_checkpoint, ckpt)
    shutil.copy(other_onnx, swapped / mine.name)
    shutil.copy(sidecar_path(other_onnx), sidecar_path(swapped / mine.name))  # intact bytes
    with pytest.raises(EngineBuildError, match="another model"):
        export_onnx(ckpt)


def test_onnx_not_from_n2a_is_refused(tmp_path, lite_checkpoint):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["frames"], ["denoised"])], "g",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["n", "h", "w"])],
        [helper.make_tensor_value_info("denoised", TensorProto.FLOAT, ["n", "h", "w"])],
    )
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(EngineBuildError, match=r"not exported by n2a \(expected metadata"):
        check_onnx_model(path, file_sha256(lite_checkpoint))


def test_plan_cache_key_covers_model_trt_gpu_precision_profile():
    base = dict(checkpoint_sha="a" * 64, trt_version="10.3.0", gpu_name="NVIDIA H100 80GB HBM3",
                precision="fp16", profile=ShapeProfile(), streams=2)
    ref = plan_path(**base)
    assert ref.suffix == ".plan" and "H100" in ref.name
    for key, value in (("checkpoint_sha", "b" * 64), ("trt_version", "10.4.0"), ("gpu_name", "NVIDIA L4"),
                       ("precision", "fp32"), ("profile", ShapeProfile(opt=(512, 512))), ("streams", 3)):
        assert plan_path(**{**base, key: value}) != ref, key


def test_shape_profile_is_validated():
    with pytest.raises(ValueError, match=r"min <= opt <= max"):
        ShapeProfile(min=(512, 512), opt=(256, 256), max=(1024, 1024))
    with pytest.raises(ValueError, match="extra"):
        ShapeProfile(batch=4)
    assert ShapeProfile(min=(64, 64), opt=(128, 128), max=(256, 256)).allows(200, 64)
    assert not ShapeProfile(min=(64, 64), opt=(128, 128), max=(256, 256)).allows(300, 64)
