"""Cache files are checked against the hash recorded when they were built (issue 10 item 6).

An ONNX export or a TensorRT plan whose bytes changed after it was written (corruption, or
tampering that keeps the hash the file declares about itself) is rebuilt with a warning, never
loaded.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest

import engines
from engines import EngineBuildError
from engines.cache import cache_problem, read_cached, sidecar_path, write_cached
from engines.export import export_onnx
from noise2atom.files import file_sha256


def _weights(path):
    import onnx

    model = onnx.load(str(path))
    return {t.name: onnx.numpy_helper.to_array(t).copy() for t in model.graph.initializer}, model


def test_export_records_the_hash_of_what_it_wrote(tmp_path, checkpoint_maker):
    ckpt = checkpoint_maker(tmp_path / "m.safetensors", "lite", seed=3)
    onnx_path = export_onnx(ckpt)
    side = sidecar_path(onnx_path)
    assert side.read_text() == f"{file_sha256(onnx_path)}  {onnx_path.name}\n"  # sha256sum -c format
    assert cache_problem(onnx_path) is None
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_tampered_onnx_export_that_still_declares_the_right_checkpoint_is_rebuilt(
        tmp_path, checkpoint_maker, caplog):
    import onnx

    ckpt = checkpoint_maker(tmp_path / "m.safetensors", "lite", seed=4)
    onnx_path = export_onnx(ckpt)
    original, model = _weights(onnx_path)
    frames = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64)).astype(np.float32)
    with engines.open_engine(ckpt, "onnxruntime") as eng:
        expected = eng.infer(frames)
    # Change every weight of the first conv, keep the metadata (the checkpoint hash it declares).
    name = next(t.name for t in model.graph.initializer if t.dims and len(t.dims) == 4)
    for t in model.graph.initializer:
        if t.name == name:
            t.CopyFrom(onnx.numpy_helper.from_array(original[name] * -3.0, name))
    onnx.save(model, str(onnx_path))
    assert "does not match the hash recorded" in cache_problem(onnx_path)
    caplog.set_level(logging.WARNING, logger="engines.export")
    with engines.open_engine(ckpt, "onnxruntime") as eng:
        got = eng.infer(frames)
    assert any("does not match the hash recorded" in r.getMessage() and "exporting it again"
               in r.getMessage() for r in caplog.records), caplog.text
    np.testing.assert_array_equal(_weights(onnx_path)[0][name], original[name])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert cache_problem(onnx_path) is None


@pytest.mark.parametrize("damage", ["truncate", "no sidecar", "bad sidecar"])
def test_a_damaged_onnx_cache_is_exported_again(tmp_path, checkpoint_maker, caplog, damage):
    ckpt = checkpoint_maker(tmp_path / "m.safetensors", "lite", seed=5)
    onnx_path = export_onnx(ckpt)
    good = onnx_path.read_bytes()
    if damage == "truncate":
        onnx_path.write_bytes(good[: len(good) // 2])
    elif damage == "no sidecar":
        sidecar_path(onnx_path).unlink()  # e.g. a cache made before hashes were recorded
    else:
        sidecar_path(onnx_path).write_text("0" * 63 + "g  x.onnx\n")
    caplog.set_level(logging.WARNING, logger="engines.export")
    assert export_onnx(ckpt) == onnx_path
    assert "exporting it again" in caplog.text
    assert cache_problem(onnx_path) is None and onnx_path.stat().st_size == len(good)


def test_read_cached_returns_only_bytes_that_match_their_recorded_hash(tmp_path):
    plan = tmp_path / "trt" / "model.plan"
    write_cached(plan, b"serialized plan bytes" * 100)
    assert read_cached(plan) == b"serialized plan bytes" * 100
    data = bytearray(plan.read_bytes())
    data[7] ^= 0x01
    plan.write_bytes(bytes(data))
    with pytest.raises(EngineBuildError, match=r"model.plan does not match the hash recorded when "
                                               r"it was built \(expected sha256"):
        read_cached(plan)
    sidecar_path(plan).unlink()
    with pytest.raises(EngineBuildError, match=r"has no recorded hash \(expected model.plan.sha256\)"):
        read_cached(plan)


@pytest.mark.gpu
def test_a_tampered_tensorrt_plan_is_rebuilt_and_never_loaded(tmp_path, lite_checkpoint, caplog):
    ok, why = engines.tensorrt_available()
    if not ok:
        pytest.skip(why)
    from engines import ShapeProfile
    from engines.tensorrt_build import ensure_plan

    profile = ShapeProfile(min=(64, 64), opt=(64, 64), max=(128, 128))
    plan = ensure_plan(lite_checkpoint, precision="fp32", profile=profile, streams=1)
    good = plan.read_bytes()
    plan.write_bytes(good[:-64] + bytes(64))  # same size, other bytes
    # The runtime alone (no build) refuses it ...
    engine = engines.open_engine(lite_checkpoint, "tensorrt", profile=profile, streams=1,
                                 precision="fp32", build=False)
    with pytest.raises(engines.EngineError, match="does not match the hash recorded"):
        engine.__enter__()
    # ... and the builder makes it again, with a warning.
    caplog.set_level(logging.WARNING, logger="engines.tensorrt_build")
    assert ensure_plan(lite_checkpoint, precision="fp32", profile=profile, streams=1) == plan
    assert "building it again" in caplog.text and cache_problem(plan) is None
    frames = np.zeros((1, 64, 64), np.float32)
    with engines.open_engine(lite_checkpoint, "tensorrt", profile=profile, streams=1,
                             precision="fp32") as trt:
        assert np.isfinite(trt.infer(frames)).all()
