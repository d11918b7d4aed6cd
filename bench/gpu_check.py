"""`make gpu-check`: everything n2a does on a GPU, on a fresh machine that reaches only PyPI.

One prepared run (about 8 minutes): makes a virtualenv, installs CUDA torch (``TORCH_SPEC``) and
``onnxruntime-gpu`` with n2a, records the card, driver and versions and what ``--engine auto``
picks, runs the ``gpu``-marked tests, trains the Noise2Atom GAN and the blind-spot net for
``--train-minutes`` each (side by side, while the tests run), benchmarks the engines (eager,
compiled with CUDA graphs, ONNX Runtime CUDA; fp32 and fp16; lite and paper; 512² and 1024²) and
``n2a-stream`` end to end on a quiet GPU, scores the two trained models with the quality benchmark
at one dose, and writes ``bench/results/gpu-check-gpu.md`` (plus ``engines-gpu.md``,
``latency-gpu.md``, ``quality-gpu-*``). Every step has its own timeout, capped by what is left of
``--budget-min``; a failing or timed-out step is reported and the run goes on.

Standard library only, and no import of the rest of `bench` (it runs before the venv exists, also
as a plain script: ``python3 bench/gpu_check.py``)::

    python3 -m bench.gpu_check --dry-run      # print the plan, run nothing (make gpu-check-plan)
    python3 -m bench.gpu_check                # on the GPU machine (make gpu-check)
    python3 -m bench.gpu_check --use-python /opt/torch/.venv/bin/python3 --wheels wheels/
        # a GPU machine with no network: its own CUDA torch, n2a's missing dependencies as wheels
        # (onnxruntime-gpu is ~300 MB; where it cannot be carried, the ONNX Runtime CUDA rows fail
        # and say so)
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


@dataclass
class Step:
    name: str
    cmd: str  # a shell command, run from the repository root
    timeout: float  # seconds, before the budget caps it
    background: bool = False  # started and left running; `wait` names the step that joins it
    wait: tuple[str, ...] = ()  # background steps to join (with their own timeouts) before this one
    env: dict = field(default_factory=dict)


@dataclass
class Outcome:
    step: Step
    status: str = "not run"  # ok, failed (rc N), timed out, skipped (budget), not run
    seconds: float = 0.0
    tail: str = ""


def plan(args) -> list[Step]:
    venv = Path(args.venv)
    py, pip = venv / "bin" / "python", venv / "bin" / "pip"
    if args.use_python:  # a machine without PyPI: its own CUDA torch, plus carried wheels
        py = Path(args.use_python)
        pip = f"{py} -m pip"
    work = Path(args.work)
    m = f"{args.train_minutes:g}"
    train = (f"{py} -m noise2atom.cli --simulate --sim-scene crystal --sim-peak-counts {args.dose:g} "
             f"--sim-size 256 --sim-frames 40 --model {args.train_model} --device cuda --minutes {m} "
             f"--quiet --seed 0")
    # Scored on the CPU cores the benchmarks leave alone, so the GPU stays quiet for them.
    quality = (f"taskset -c {args.quality_cpus} {py} -m bench.quality.simulated --no-train --doses {args.dose:g} "
               f"--scenes crystal --no-bm3d")
    latency_engine = "--engine auto" if args.use_python else "--engine onnxruntime --device cuda"
    cpu_only = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "4"}
    steps = [
        Step("card", "nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader"
                     " && nvidia-smi | head -4", 20),
        Step("venv", f"{shlex.quote(args.python)} -m venv {venv} && {pip} install --quiet --upgrade pip", 60),
        # CUDA torch first, so n2a's `torch>=2.4` is already met; then onnxruntime-gpu in place of
        # onnxruntime (both install the `onnxruntime` module: the CPU one must go).
        Step("install-torch", f"{pip} install --quiet {shlex.quote(args.torch_spec)}", 200),
        Step("install-n2a", f"{pip} install --quiet -e '.[test]' && {pip} uninstall --quiet -y onnxruntime"
                            f" && {pip} install --quiet 'onnxruntime-gpu[cuda,cudnn]>=1.20'", 150),
    ]
    if args.use_python:
        steps = [steps[0]]
        if args.wheels:
            steps.append(Step("install-wheels", f"{pip} install --quiet --no-index --find-links "
                                                f"{shlex.quote(args.wheels)} {shlex.quote(args.wheels)}/*.whl", 120))
    steps += [
        Step("versions", f"{py} -c \"import sys, torch, onnxruntime as o; "
                         "print('python', sys.version.split()[0]); "
                         "print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', "
                         "torch.backends.cudnn.version(), torch.cuda.get_device_name(0)); "
                         "print('onnxruntime', o.__version__, o.get_available_providers())\" "
                         f"&& {py} -c \"import triton; print('triton', triton.__version__)\" "
                         f"&& {py} -m engines.cli.select && {py} -m engines.cli.select --precision fp16", 60),
        Step("train-noise2atom", f"mkdir -p {work} && {train} --method noise2atom --out {work}/noise2atom.safetensors",
             args.train_minutes * 60 + 60, background=True),
        Step("train-blindspot", f"mkdir -p {work} && {train} --method blindspot --out {work}/blindspot.safetensors",
             args.train_minutes * 60 + 60, background=True),
        Step("gpu-tests", f"{py} -m pytest -q -p no:cacheprovider -m gpu --timeout 120 tests/engines", 150),
        Step("bench-engines", f"{py} -m bench.engines --sizes lite,paper --sides 512,1024 "
                              f"--precisions fp32,fp16 --repeats 10,100 --case-timeout 90 --budget-s 110 "
                              f"--out bench/results/engines-gpu.md", 130,
             wait=("train-noise2atom", "train-blindspot")),
        # ONNX Runtime CUDA opens in seconds; without onnxruntime-gpu (--use-python), auto (compiled torch).
        Step("bench-latency", f"{py} -m bench.latency {latency_engine} --model-size paper "
                              f"--sizes 1024 --fps 60 --frames 120 --warmup-frames 10 "
                              f"--out bench/results/latency-gpu.md", 75),
        Step("quality-wait", "true", 5, wait=("quality-noise2atom", "quality-blindspot")),
    ]
    # The quality runs start right after training, beside the benchmarks (CPU only, pinned cores).
    at = [s.name for s in steps].index("bench-engines")
    steps[at:at] = [
        Step("quality-noise2atom", f"{quality} --work {work}/quality-noise2atom "
                                   f"--out bench/results/quality-gpu-noise2atom", 240,
             background=True, wait=("train-noise2atom", "train-blindspot"),
             env={**cpu_only, "N2A_MODEL": f"{work}/noise2atom.safetensors"}),
        Step("quality-blindspot", f"{quality} --work {work}/quality-blindspot "
                                  f"--out bench/results/quality-gpu-blindspot", 240,
             background=True, env={**cpu_only, "N2A_MODEL": f"{work}/blindspot.safetensors"}),
    ]
    steps[at + 2].wait = ()
    return steps


def _tail(text: str, n: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def run(args, steps: list[Step], min_start: float = 10.0) -> list[Outcome]:
    """Run the steps in order; a step is not started with less than ``min_start`` s of budget left."""
    deadline = time.monotonic() + args.budget_min * 60
    outcomes = {s.name: Outcome(s) for s in steps}
    running: dict[str, tuple[subprocess.Popen, float, Path]] = {}
    logs = Path(args.work) / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    def finish(name: str, proc: subprocess.Popen, started: float, log: Path, limit: float) -> None:
        o = outcomes[name]
        try:
            proc.wait(timeout=max(1.0, limit))
            o.status = "ok" if proc.returncode == 0 else f"failed (rc {proc.returncode})"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # the step's own process group: nothing else
            proc.wait()
            o.status = f"timed out ({limit:.0f} s)"
        o.seconds = time.monotonic() - started
        o.tail = _tail(log.read_text(errors="replace"))
        print(f"[gpu-check] {name}: {o.status} in {o.seconds:.0f} s", flush=True)

    for step in steps:
        for name in step.wait:
            if name in running:
                proc, started, log = running.pop(name)
                finish(name, proc, started, log, min(step_limit(outcomes[name].step, started),
                                                     deadline - time.monotonic()))
        left = deadline - time.monotonic()
        if left < min_start:
            outcomes[step.name].status = "skipped (budget spent)"
            continue
        limit = min(step.timeout, left)
        log = logs / f"{step.name}.log"
        print(f"[gpu-check] {step.name} (≤ {limit:.0f} s): {step.cmd}", flush=True)
        env = {**os.environ, **step.env, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        started = time.monotonic()
        with open(log, "w") as f:
            proc = subprocess.Popen(step.cmd, shell=True, cwd=ROOT, env=env, stdout=f,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        if step.background:
            running[step.name] = (proc, started, log)
            continue
        finish(step.name, proc, started, log, limit)
    for name, (proc, started, log) in running.items():
        finish(name, proc, started, log, max(1.0, deadline - time.monotonic()))
    return [outcomes[s.name] for s in steps]


def step_limit(step: Step, started: float) -> float:
    return step.timeout - (time.monotonic() - started)


def report(args, outcomes: list[Outcome], total: float) -> str:
    by = {o.step.name: o for o in outcomes}
    card = by["card"].tail.splitlines()[0] if by["card"].tail else "no card found (nvidia-smi failed)"
    lines = [
        "# GPU check",
        "",
        f"Card (name, driver, memory, compute capability): {card}. Written by `python3 -m bench.gpu_check` "
        f"on {time.strftime('%Y-%m-%d %H:%M %Z')} in {total / 60:.1f} min (budget {args.budget_min:g} min); "
        + (f"the machine's own Python `{args.use_python}` (no venv)." if args.use_python
           else f"torch spec `{args.torch_spec}`."),
        "",
        "| step | status | seconds |",
        "|---|---|---:|",
        *(f"| {o.step.name} | {o.status} | {o.seconds:.0f} |" for o in outcomes),
        "",
        "Versions and the engine `auto` picks:",
        "",
        "```",
        by["versions"].tail or "(not run)",
        "```",
        "",
        "Results: [engines-gpu.md](engines-gpu.md), [latency-gpu.md](latency-gpu.md), "
        "[quality, GAN](quality-gpu-noise2atom/quality.md), [quality, blind-spot](quality-gpu-blindspot/quality.md). "
        f"Training: n2a-train on a simulated crystal series at {args.dose:g} counts per atom peak, "
        f"{args.train_minutes:g} min each, the two side by side on the card (while the gpu tests ran); "
        "BM3D left out of the scoring for time; in those reports the \"bundled model\" rows are the "
        "GPU-trained model (`N2A_MODEL`).",
        "",
    ]
    for o in outcomes:
        if o.status != "ok" and o.tail:
            lines += [f"## {o.step.name}: {o.status}", "", "```", o.tail, "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="print the plan and its timeouts; run nothing")
    p.add_argument("--budget-min", type=float, default=8.0, help="the whole run (default 8)")
    p.add_argument("--train-minutes", type=float, default=3.0)
    p.add_argument("--dose", type=float, default=0.4, help="counts at an atom's peak (default 0.4)")
    p.add_argument("--train-model", choices=("paper", "lite"), default="paper",
                   help="generator trained on the GPU (default paper, the GPU model)")
    p.add_argument("--quality-cpus", default="8-15", help="cores the quality scoring may use (taskset list)")
    p.add_argument("--python", default=sys.executable, help="the Python that makes the venv")
    p.add_argument("--venv", default=str(ROOT / "build" / "gpu-check" / "venv"))
    p.add_argument("--use-python", default=None,
                   help="no venv, no PyPI: run with this Python's own CUDA torch (e.g. a GPU image's)")
    p.add_argument("--wheels", default=None, help="with --use-python: install every wheel in this folder first")
    p.add_argument("--work", default=str(ROOT / "build" / "gpu-check"))
    p.add_argument("--torch-spec", default=os.environ.get("TORCH_SPEC", "torch==2.13.0"),
                   help="CUDA torch from PyPI (default $TORCH_SPEC or torch==2.13.0, a CUDA 13 build there)")
    p.add_argument("--out", type=Path, default=RESULTS / "gpu-check-gpu.md")
    args = p.parse_args(argv)
    steps = plan(args)
    if args.dry_run:
        print(f"gpu-check plan (budget {args.budget_min:g} min; each step's timeout is capped by what is left):")
        for s in steps:
            how = "background" if s.background else f"after {', '.join(s.wait)}" if s.wait else ""
            env = " ".join(f"{k}={v}" for k, v in s.env.items())
            print(f"  {s.name:20s} ≤ {s.timeout:4.0f} s {how:40s} {env} {s.cmd}")
        return 0
    t0 = time.monotonic()
    outcomes = run(args, steps)
    text = report(args, outcomes, time.monotonic() - t0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0 if all(o.status == "ok" for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
