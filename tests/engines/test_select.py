"""``--engine auto``: which back end it picks here and how it says why not the faster ones."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import engines
from engines import BackendUnavailableError
from engines.onnxruntime import available_providers

ROOT = Path(__file__).resolve().parents[2]
CPU_ONLY = not engines.cuda_available()
NO_TRT = not engines.tensorrt_available()[0]


@pytest.mark.skipif(not (CPU_ONLY and NO_TRT), reason="this machine has a GPU or TensorRT")
def test_auto_on_a_cpu_machine_picks_onnxruntime_cpu_and_says_why_not_the_others():
    sel = engines.select_backend()
    assert (sel.backend, sel.device, sel.options) == ("onnxruntime", "cpu", {})
    assert [name for name, _ in sel.skipped] == [
        "tensorrt", "pytorch-cuda compiled", "onnxruntime-cuda", "pytorch-cuda eager"]
    why = dict(sel.skipped)
    assert "NVIDIA's package index, not PyPI" in why["tensorrt"] and "(got: " in why["tensorrt"]
    assert "sees no CUDA device" in why["pytorch-cuda compiled"]
    if "CUDAExecutionProvider" not in available_providers():
        assert "no CUDA execution provider" in why["onnxruntime-cuda"]
        assert "onnxruntime-gpu" in why["onnxruntime-cuda"]
    message = sel.message()
    assert message.startswith("engine auto: onnxruntime-cpu on cpu; not tensorrt: ")
    assert message.count("; not ") == 4


def test_open_engine_auto_carries_the_choice_into_describe(lite_checkpoint):
    engine = engines.open_engine(lite_checkpoint, "auto")
    assert engine.selection is not None
    with engine:
        info = engine.describe()
    assert info["backend"] == engine.selection.backend
    assert info["selected"] == engine.selection.message()
    # A named back end is not "selected": no reasons to give.
    named = engines.open_engine(lite_checkpoint, "onnxruntime")
    assert named.selection is None
    with named:
        assert "selected" not in named.describe()


def test_auto_on_device_cpu_skips_the_gpu_back_ends_for_that_reason():
    sel = engines.select_backend("cpu")
    assert sel.device == "cpu" and sel.backend == "onnxruntime"
    assert all(why == "device 'cpu' asked for" for _, why in sel.skipped)


@pytest.mark.skipif(not CPU_ONLY, reason="a GPU is present")
def test_auto_on_cuda_without_a_gpu_names_every_candidate():
    with pytest.raises(BackendUnavailableError, match=r"device 'cuda:1' asked for, but no CUDA back end") as e:
        engines.select_backend("cuda:1")
    for name in ("tensorrt:", "pytorch-cuda compiled:", "onnxruntime-cuda:", "pytorch-cuda eager:"):
        assert name in str(e.value)


@pytest.mark.skipif(not CPU_ONLY, reason="a GPU is present")
def test_auto_fp16_without_a_gpu_is_an_error_saying_the_cpu_runs_fp32(lite_checkpoint):
    with pytest.raises(BackendUnavailableError, match=r"onnxruntime-cpu: runs fp32 only on the CPU \(got fp16\)"):
        engines.open_engine(lite_checkpoint, "auto", precision="fp16")


def test_select_command_prints_the_choice():
    proc = subprocess.run([sys.executable, "-m", "engines.cli.select", "--device", "cpu"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("engine auto: ") and " on cpu" in proc.stdout


@pytest.mark.gpu
def test_auto_on_a_gpu_machine_picks_a_cuda_back_end(lite_checkpoint):
    sel = engines.select_backend()
    assert sel.device.startswith("cuda"), sel.message()
    engine = engines.open_engine(lite_checkpoint, "auto")
    with engine:
        info = engine.describe()
    assert info["device"].startswith("cuda") and info["selected"].startswith("engine auto: ")
