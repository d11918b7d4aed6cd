"""bench/gpu_check.py's runner: every step has its own timeout, a failing step is reported and the
run goes on, background steps are joined, the budget caps what is left. Real subprocesses."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
sys.modules["gpu_check"] = gpu_check  # dataclasses look the module up by name
spec.loader.exec_module(gpu_check)
Step = gpu_check.Step


def _args(tmp_path, budget_min=5.0):
    return gpu_check.argparse.Namespace(budget_min=budget_min, work=str(tmp_path))


def test_a_failing_or_slow_step_is_reported_and_the_run_goes_on(tmp_path):
    steps = [
        Step("slow", "sleep 30", 1),
        Step("fails", "echo broken >&2; exit 3", 10),
        Step("bg", f"sleep 0.2 && echo done > {tmp_path}/bg.txt", 20, background=True),
        Step("ok", "echo fine", 10, wait=("bg",)),
    ]
    outcomes = {o.step.name: o for o in gpu_check.run(_args(tmp_path), steps)}
    assert outcomes["slow"].status == "timed out (1 s)"
    assert outcomes["fails"].status == "failed (rc 3)" and "broken" in outcomes["fails"].tail
    assert outcomes["bg"].status == "ok" and (tmp_path / "bg.txt").read_text() == "done\n"
    assert outcomes["ok"].status == "ok" and outcomes["ok"].tail == "fine"


def test_steps_past_the_budget_are_skipped_and_said_so(tmp_path):
    steps = [Step("spends", "sleep 30", 60), Step("later", "echo never", 10)]
    outcomes = gpu_check.run(_args(tmp_path, budget_min=2 / 60), steps, min_start=0.5)
    assert outcomes[0].status.startswith("timed out")
    assert outcomes[1].status == "skipped (budget spent)"


def test_dry_run_prints_every_step_and_runs_nothing(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run",
                           "--work", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for name in ("card", "install-torch", "install-n2a", "gpu-tests", "train-noise2atom", "train-blindspot",
                 "bench-engines", "bench-latency", "quality-noise2atom", "quality-blindspot"):
        assert f"  {name} " in proc.stdout
    assert "onnxruntime-gpu" in proc.stdout and "--sides 512,1024" in proc.stdout
    assert list(tmp_path.iterdir()) == []
