"""EngineConfig: validated once, one set of defaults for the runtime, n2a-denoise and the plan builder."""
from __future__ import annotations

import pytest

import engines
from engines import EngineConfig, EngineError, ShapeProfile
from engines.config import BACKEND_OPTIONS


def test_unknown_option_names_what_is_allowed(lite_checkpoint):
    with pytest.raises(EngineError, match=r"unknown engine option 'cuda_graphs' \(expected one of: version, "
                                          r"backend, device, .*got cuda_graphs=True\)"):
        engines.open_engine(lite_checkpoint, "onnxruntime", cuda_graphs=True)


@pytest.mark.parametrize(("fields", "match"), [
    (dict(streams=0), r"expected streams >= 1 \(got 0\)"),
    (dict(precision="fp8"), r"expected precision 'fp32', 'fp16' or 'bf16' \(got 'fp8'\)"),
    (dict(device="gpu0"), r"expected device 'cpu' or 'cuda\[:N\]' \(got device 'gpu0'\)"),
    (dict(profile=dict(min=(512, 512), opt=(256, 256), max=(1024, 1024))), r"min <= opt <= max"),
])
def test_bad_values_are_engine_errors_saying_what_was_got(fields, match):
    with pytest.raises(EngineError, match=match):
        EngineConfig.of(None, **fields)


def test_an_option_the_named_back_end_does_not_take_is_an_error(lite_checkpoint):
    with pytest.raises(EngineError, match=r"the onnxruntime back end does not take 'streams' \(expected only "
                                          r"device, precision, .*got streams\)"):
        engines.open_engine(lite_checkpoint, "onnxruntime", streams=3)
    with pytest.raises(EngineError, match=r"the pytorch back end does not take 'onnx_path', 'spin'"):
        engines.open_engine(lite_checkpoint, "pytorch", device="cpu", spin=True, onnx_path="x.onnx")


def test_each_back_end_gets_only_its_own_options(lite_checkpoint):
    """Every option of BACKEND_OPTIONS reaches its engine (no silent drop on the way)."""
    engine = engines.open_engine(lite_checkpoint, EngineConfig(backend="onnxruntime", threads=1, spin=True,
                                                               max_shapes=3))
    assert (engine.threads, engine.spin, engine.max_shapes) == (1, True, 3)
    engine = engines.open_engine(lite_checkpoint, "pytorch", device="cpu", threads=1, max_shapes=2)
    assert (engine.threads, engine.max_shapes, engine.cuda_graph, engine.compile) == (1, 2, False, False)
    assert set(BACKEND_OPTIONS["tensorrt"]) == {"device", "precision", "profile", "streams", "build"}


def test_the_engine_reports_the_config_it_runs_with(lite_checkpoint):
    config = EngineConfig(backend="onnxruntime", threads=1)
    with engines.open_engine(lite_checkpoint, config) as engine:
        assert engine.engine_config.backend == "onnxruntime" and engine.engine_config.device == "cpu"
        assert engine.engine_config.threads == 1
        dumped = engine.engine_config.model_dump(mode="json")  # goes into headers and TIFF metadata
    assert EngineConfig.model_validate(dumped) == engine.engine_config


def test_keyword_fields_override_a_config_and_keep_what_it_set(lite_checkpoint):
    merged = EngineConfig.of(EngineConfig(backend="onnxruntime", threads=1), precision="fp32")
    assert merged.threads == 1 and {"backend", "threads", "precision"} <= merged.model_fields_set
    with pytest.raises(EngineError, match=r"back end given twice"):
        engines.open_engine(lite_checkpoint, "pytorch", backend="onnxruntime")


@pytest.mark.skipif(engines.cuda_available(), reason="auto picks a GPU back end here")
def test_auto_leaves_out_options_the_chosen_back_end_does_not_take(lite_checkpoint):
    engine = engines.open_engine(lite_checkpoint, "auto", threads=1, streams=3)  # streams: tensorrt's
    assert engine.backend == "onnxruntime" and engine.threads == 1
    assert engine.unused_options == ("streams",)
    assert engine.engine_config.backend == "onnxruntime"
    with engine:
        assert engine.describe()["unused_options"] == "streams"


def test_the_plan_builder_and_the_runtime_share_their_defaults():
    """A plan built ahead of time with the builder's defaults has the key the runtime looks for."""
    from engines.cli.plan import _parser
    from engines.tensorrt import TensorRTEngine
    from engines.tensorrt_build import ensure_plan
    import inspect

    defaults = EngineConfig()
    args = _parser().parse_args(["model.safetensors"])
    assert (args.precision, args.streams) == (defaults.precision, defaults.streams)
    assert ShapeProfile(min=args.min, opt=args.opt, max=args.max) == defaults.profile
    runtime = inspect.signature(TensorRTEngine).parameters
    builder = inspect.signature(ensure_plan).parameters
    for name in ("precision", "streams"):
        assert runtime[name].default == builder[name].default == getattr(defaults, name), name
    assert builder["profile"].default == defaults.profile and runtime["build"].default == defaults.build


@pytest.mark.parametrize("parser_of", ["n2a-denoise", "n2a-stream"])
def test_command_lines_take_their_engine_defaults_from_engine_config(parser_of):
    if parser_of == "n2a-denoise":
        from engines.cli.denoise import _parser
        argv = ["in.tif", "--out", "out.tif"]
    else:
        from streamer.cli import _parser
        argv = ["--port", "5555"]

    args = _parser().parse_args(argv)
    assert EngineConfig.from_arguments(args) == EngineConfig()
    assert not EngineConfig.from_arguments(args).model_fields_set
    args = _parser().parse_args(argv + ["--engine", "onnxruntime", "--threads", "1"])
    assert EngineConfig.from_arguments(args).model_fields_set == {"backend", "threads"}
    args = _parser().parse_args(argv + ["--engine", "pytorch", "--compile", "--no-cuda-graph"])
    assert EngineConfig.from_arguments(args).model_fields_set == {"backend", "compile", "cuda_graph"}
    args = _parser().parse_args(argv + ["--threads", "0"])
    with pytest.raises(EngineError, match=r"expected threads >= 1 \(got 0\)"):
        EngineConfig.from_arguments(args)


def test_stream_config_carries_a_validated_engine_config():
    from streamer.pipeline import StreamConfig

    assert StreamConfig(source="tcp://127.0.0.1:1").engine == EngineConfig()
    short = StreamConfig(source="tcp://127.0.0.1:1", engine="onnxruntime", device="cpu")
    assert short.engine == EngineConfig(backend="onnxruntime", device="cpu")
    full = StreamConfig(source="tcp://127.0.0.1:1", engine=EngineConfig(backend="pytorch", threads=2))
    assert full.engine.threads == 2
    with pytest.raises(ValueError, match="engine"):
        StreamConfig(source="tcp://127.0.0.1:1", engine="tensorflow")


def test_the_plan_builder_checks_its_settings_before_building(capsys, lite_checkpoint):
    from engines.cli.plan import main

    assert main([str(lite_checkpoint), "--min", "512x512", "--opt", "256x256"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: expected 5 <= min <= opt <= max per axis (got (512, 512), (256, 256)")
    assert main([str(lite_checkpoint), "--streams", "0"]) == 2
    assert "expected streams >= 1 (got 0)" in capsys.readouterr().err
