"""Engine back ends side by side: per-frame latency, throughput and peak memory.

Runs every (model, back end, frame size) case in its own child process, so each case's peak RSS
(``getrusage``) is its own. Per case: open and enter the engine, warm up, then time ``infer`` on
batch-1 frames with ``perf_counter_ns`` (and CUDA events around it on the GPU back ends' own
synchronisation: ``infer`` returns host arrays, so a frame's time is complete when it returns).
Weights are random-init (seeded): speed does not depend on them. Writes a markdown table.

    python bench/engines.py                      # CPU: lite and paper, 256², 512², 1024²
    python bench/engines.py --quick              # fewer repeats
    python bench/engines.py --out bench/results/engines-gpu.md   # on a GPU machine
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Run as a script, this file's folder comes first on sys.path and `bench/engines.py` would shadow
# the `engines` package: put the repository root there instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

RESULTS = _HERE / "results"
SIDES = (256, 512, 1024)
# (warm-up, timed) frames per case; the paper model on 2 CPU cores takes tens of seconds per 1024² frame.
REPEATS = {
    ("lite", 256): (3, 40), ("lite", 512): (3, 30), ("lite", 1024): (2, 12),
    ("paper", 256): (1, 6), ("paper", 512): (1, 3), ("paper", 1024): (1, 2),
}
GPU_REPEATS = (20, 200)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    """This process's peak RSS (VmHWM). Not ``ru_maxrss``: Linux keeps that across exec, so a
    child would report its parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> None:
    """Start VmHWM afresh (Linux >= 4.0), so the peak is the engine's, not the imports'."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def run_case(ckpt: str, backend: str, device: str, precision: str, side: int, warmup: int, repeats: int,
             threads: int | None = None) -> dict:
    """In the child: time one case and return its numbers."""
    import torch

    import engines

    threads = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    frames = rng.uniform(-1, 1, (warmup + repeats, 1, side, side)).astype(np.float32)
    base = _rss_mib()
    _reset_peak()
    t0 = time.perf_counter_ns()
    options = {"threads": threads} if device == "cpu" else {}
    engine = engines.open_engine(ckpt, backend, device=device, precision=precision, **options)
    with engine:
        open_s = (time.perf_counter_ns() - t0) / 1e9
        for i in range(warmup):
            engine.infer(frames[i])
        times = []
        for i in range(warmup, warmup + repeats):
            t = time.perf_counter_ns()
            engine.infer(frames[i])
            times.append(time.perf_counter_ns() - t)
        info = engine.describe()
    ms = np.array(times) / 1e6
    return {
        "backend": backend if device != "cpu" else f"{backend} ({threads} thr)", "device": info["device"],
        "precision": precision, "side": side,
        "n": repeats, "median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)),
        "fps": float(repeats / (ms.sum() / 1e3)), "peak_mib": _peak_mib(), "delta_mib": _peak_mib() - base,
        "open_s": open_s, "detail": {k: v for k, v in info.items() if k not in ("backend", "device", "precision")},
    }


def _make_checkpoints(folder: Path, sizes) -> dict[str, Path]:
    import torch

    from noise2atom.checkpoint import ModelConfig, Normalisation, fingerprint_frames, save_checkpoint
    from noise2atom.models import build_generator

    out = {}
    for size in sizes:
        torch.manual_seed(0)
        config = ModelConfig(size=size, method="blindspot", normalisation=Normalisation(lo=0.0, hi=1.0),
                             data=fingerprint_frames([np.zeros((1, 8, 8), np.uint16)], sources=["bench"]))
        out[size] = save_checkpoint(folder / f"bench-{size}.safetensors", config, build_generator(size).state_dict())
    return out


def _backends(size: str) -> list[tuple[str, str, str, int | None]]:
    """(back end, device, precision, CPU threads) to run here."""
    import engines

    cores = len(os.sched_getaffinity(0))
    cases = [("onnxruntime", "cpu", "fp32", cores), ("pytorch", "cpu", "fp32", cores)]
    if size == "lite" and cores > 1:  # torch eager on shared cores: one thread can win
        cases.append(("pytorch", "cpu", "fp32", 1))
    if engines.cuda_available():
        cases += [("pytorch", "cuda", "fp32", None), ("pytorch", "cuda", "fp16", None)]
        if engines.tensorrt_available()[0]:
            cases += [("tensorrt", "cuda", "fp32", None), ("tensorrt", "cuda", "fp16", None)]
    return cases


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0))
    import engines

    gpu = "no GPU"
    if engines.cuda_available():
        import torch

        gpu = torch.cuda.get_device_name(0)
    return f"{cpu}, {cores} cores, {gpu}, Python {platform.python_version()}"


def _table(rows: list[dict]) -> list[str]:
    lines = ["| model | back end | device | precision | frame | n | median ms/frame | p99 ms/frame | frames/s "
             "| peak RSS MiB | RSS delta MiB |", "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['backend']} | {r.get('device', '')} | {r.get('precision', '')} "
                         f"| {r['side']}² | – | failed: {r['error']} | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['backend']} | {r['device']} | {r['precision']} | {r['side']}² | {r['n']} "
                     f"| {r['median_ms']:.1f} | {r['p99_ms']:.1f} | {r['fps']:.2f} | {r['peak_mib']:.0f} "
                     f"| {r['delta_mib']:.0f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="lite,paper")
    p.add_argument("--sides", default=",".join(map(str, SIDES)))
    p.add_argument("--quick", action="store_true", help="a third of the repeats (at least 2)")
    p.add_argument("--out", type=Path, default=RESULTS / "engines-cpu.md")
    p.add_argument("--case", help=argparse.SUPPRESS)  # child mode: JSON of run_case's arguments
    args = p.parse_args(argv)

    if args.case:
        print(json.dumps(run_case(**json.loads(args.case))))
        return 0

    sizes = args.sizes.split(",")
    sides = [int(s) for s in args.sides.split(",")]
    load_before = os.getloadavg()
    rows: list[dict] = []
    exports = {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpts = _make_checkpoints(Path(tmp), sizes)
        from engines.export import export_onnx

        for size, ckpt in ckpts.items():  # exported once here, so no case pays for it
            t = time.perf_counter()
            export_onnx(ckpt)
            exports[size] = time.perf_counter() - t
        for size in sizes:
            for side in sides:
                for backend, device, precision, threads in _backends(size):
                    warmup, repeats = GPU_REPEATS if device == "cuda" else REPEATS.get((size, side), (2, 10))
                    if args.quick:
                        repeats = max(2, repeats // 3)
                    case = dict(ckpt=str(ckpts[size]), backend=backend, device=device, precision=precision,
                                side=side, warmup=warmup, repeats=repeats, threads=threads)
                    print(f"{size} {backend}/{device}/{precision}/{threads or '-'}thr {side}²: {warmup} warm-up + {repeats} timed ...",
                          file=sys.stderr, flush=True)
                    proc = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)],
                                          capture_output=True, text=True)
                    if proc.returncode != 0:
                        err = (proc.stderr.strip().splitlines() or ["?"])[-1][:120]
                        rows.append(dict(model=size, backend=backend, device=device, precision=precision,
                                         side=side, error=err))
                        print(f"  failed: {err}", file=sys.stderr)
                        continue
                    row = json.loads(proc.stdout.strip().splitlines()[-1])
                    row["model"] = size
                    rows.append(row)
                    print(f"  median {row['median_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, {row['fps']:.2f} fps",
                          file=sys.stderr, flush=True)
    load_after = os.getloadavg()

    lines = [
        "# Engine back ends side by side",
        "",
        f"Machine: {_machine()}. Written by `python bench/engines.py"
        f"{' --quick' if args.quick else ''}` on {time.strftime('%Y-%m-%d %H:%M %Z')}.",
        f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.1f}' for x in load_before)}; "
        f"after: {', '.join(f'{x:.1f}' for x in load_after)} — other jobs shared the cores, so CPU times "
        "are upper bounds.",
        "",
        "Batch 1, random-init weights (speed does not depend on them), float32 frames in [-1, 1]. "
        "Each case runs in its own process after warm-up; times from `perf_counter_ns` around "
        "`engine.infer` (host array in, host array out). p99 over few samples is close to the max. "
        "Peak RSS is the case process's VmHWM, reset after imports; the delta is over its RSS "
        "then (model, runtime, buffers and activations of the engine).",
        "",
        *_table(rows),
        "",
        "ONNX export (once per checkpoint, then cached by content hash): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in exports.items()) + ".",
    ]
    target = next((r for r in rows if r.get("model") == "lite" and r.get("backend", "").startswith("onnxruntime")
                   and r.get("side") == 512 and "fps" in r), None)
    if target is not None:
        verdict = "met" if target["fps"] >= 5 else "NOT met"
        lines += ["", f"Target (design.md §7), CPU lite 512² ≥ 5 frames/s for the engine: "
                      f"ONNX Runtime {target['fps']:.2f} frames/s — {verdict}."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
