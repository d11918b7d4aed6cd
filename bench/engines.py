"""Engine back ends side by side: per-frame latency, throughput and peak memory.

Runs every (model, back end, frame size) case in its own child process, so each case's peak RSS
(``getrusage``) is its own. Per case: open and enter the engine, warm up, then time ``infer`` on
batch-1 frames with ``perf_counter_ns`` (and CUDA events around it on the GPU back ends' own
synchronisation: ``infer`` returns host arrays, so a frame's time is complete when it returns).
Weights are random-init (seeded): speed does not depend on them. Writes a markdown table to
``bench/results/engines-cpu.md`` (``--out``).

    make bench-engines                               # = python -m bench.engines
    python -m bench.engines                          # CPU: lite and paper, 256², 512², 1024²
    python -m bench.engines --quick                  # fewer repeats
    python -m bench.engines --sides 512,1024 --out bench/results/engines-gpu.md   # on a GPU machine
    python -m bench.engines --engines onnxruntime-cpu --sizes lite --sides 64 --repeats 1,3  # smoke

Engines (``--engines``, default: every one that can run here): ``onnxruntime-cpu``, ``pytorch-cpu``,
``pytorch-cpu1`` (one thread), ``pytorch-cuda`` (eager), ``pytorch-compiled`` (``torch.compile``
+ CUDA graphs), ``onnxruntime-cuda`` (CUDA provider + CUDA graphs), ``tensorrt``; GPU ones at each
of ``--precisions`` (default fp32,fp16). The table is rewritten after every case, so a run cut
short by ``--budget-s`` or a timeout keeps what it measured; cases left out are listed.
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

from bench.harness import RESULTS, ROOT, random_checkpoint

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


# name -> (back end, device, options); the CPU thread counts are filled in per machine
ENGINES = {
    "onnxruntime-cpu": ("onnxruntime", "cpu", {}),
    "pytorch-cpu": ("pytorch", "cpu", {}),
    "pytorch-cpu1": ("pytorch", "cpu", {"threads": 1}),
    "pytorch-cuda": ("pytorch", "cuda", {}),
    "pytorch-compiled": ("pytorch", "cuda", {"compile": True, "cuda_graph": True}),
    "onnxruntime-cuda": ("onnxruntime", "cuda", {"cuda_graph": True}),
    "tensorrt": ("tensorrt", "cuda", {}),
}


def run_case(ckpt: str, backend: str, device: str, precision: str, side: int, warmup: int, repeats: int,
             threads: int | None = None, options: dict | None = None) -> dict:
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
    options = dict(options or {})
    if device == "cpu":
        options["threads"] = threads
    engine = engines.open_engine(ckpt, backend, device=device, precision=precision, **options)
    with engine:
        open_s = (time.perf_counter_ns() - t0) / 1e9
        t1 = time.perf_counter_ns()
        engine.infer(frames[0])  # builds what a shape needs: compilation, graph capture, ORT arenas
        first_s = (time.perf_counter_ns() - t1) / 1e9
        for i in range(1, warmup):
            engine.infer(frames[i])
        times = []
        for i in range(warmup, warmup + repeats):
            t = time.perf_counter_ns()
            engine.infer(frames[i])
            times.append(time.perf_counter_ns() - t)
        info = engine.describe()
    ms = np.array(times) / 1e6
    return {
        "backend": backend, "device": info["device"],
        "precision": precision, "side": side,
        "n": repeats, "median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)),
        "fps": float(repeats / (ms.sum() / 1e3)), "peak_mib": _peak_mib(), "delta_mib": _peak_mib() - base,
        "open_s": open_s, "first_s": first_s, "detail": {k: v for k, v in info.items() if k not in ("backend", "device", "precision")},
    }


def _make_checkpoints(folder: Path, sizes) -> dict[str, Path]:
    return {size: random_checkpoint(folder / f"bench-{size}.safetensors", size) for size in sizes}


def _engines_here(size: str, names: list[str] | None, precisions: list[str]) -> list[tuple]:
    """(engine name, back end, device, precision, CPU threads, options) to run, fastest-first on GPU."""
    import engines

    cores = len(os.sched_getaffinity(0))
    cuda = engines.cuda_available()
    if names is None:
        names = ["onnxruntime-cpu", "pytorch-cpu"]
        if size == "lite" and cores > 1:  # torch eager on shared cores: one thread can win
            names.append("pytorch-cpu1")
        if cuda:
            names = ["pytorch-compiled", "pytorch-cuda", "onnxruntime-cuda"]
            if engines.tensorrt_available()[0]:
                names.insert(0, "tensorrt")
    cases = []
    for name in names:
        if name not in ENGINES:
            raise SystemExit(f"unknown engine {name!r} (expected one of {', '.join(ENGINES)})")
        backend, device, options = ENGINES[name]
        options = dict(options)
        threads = options.pop("threads", cores) if device == "cpu" else None
        for precision in (precisions if device == "cuda" else ["fp32"]):
            cases.append((name, backend, device, precision, threads, options))
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
             "| peak RSS MiB | RSS delta MiB | first call s |", "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['backend']} | {r.get('device', '')} | {r.get('precision', '')} "
                         f"| {r['side']}² | – | failed: {r['error']} | | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['backend']} | {r['device']} | {r['precision']} | {r['side']}² | {r['n']} "
                     f"| {r['median_ms']:.1f} | {r['p99_ms']:.1f} | {r['fps']:.2f} | {r['peak_mib']:.0f} "
                     f"| {r['delta_mib']:.0f} | {r.get('first_s', float('nan')):.2f} |")
    return lines


def _verdicts(rows: list[dict]) -> list[str]:
    lines = []
    ok = {(r["model"], r.get("engine", r["backend"]), r["precision"], r["side"]): r
          for r in rows if "fps" in r}
    target = next((r for (m, e, _, side), r in ok.items()
                   if m == "lite" and e.startswith("onnxruntime") and r["device"] == "cpu" and side == 512), None)
    if target is not None:
        verdict = "met" if target["fps"] >= 5 else "NOT met"
        lines.append(f"Target (design.md §7), CPU lite 512² ≥ 5 frames/s for the engine: "
                     f"ONNX Runtime {target['fps']:.2f} frames/s — {verdict}.")
    comp = ok.get(("paper", "pytorch-compiled", "fp16", 1024))
    if comp is not None:
        verdict = "met" if comp["median_ms"] <= 4 else "NOT met"
        lines.append(f"Target (issue 15), paper 1024² compiled fp16 ≤ 4 ms/frame: {comp['median_ms']:.2f} ms — {verdict}.")
    for precision in ("fp32", "fp16"):
        comp = ok.get(("paper", "pytorch-compiled", precision, 1024))
        eager = ok.get(("paper", "pytorch-cuda", precision, 1024))
        if comp is not None and eager is not None:
            ratio = eager["median_ms"] / comp["median_ms"]
            lines.append(f"Target, compiled ≥ 2× eager (paper 1024² {precision}): {ratio:.2f}× — "
                         f"{'met' if ratio >= 2 else 'NOT met'}.")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.engines", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="lite,paper")
    p.add_argument("--sides", default=",".join(map(str, SIDES)))
    p.add_argument("--engines", default=None, help=f"comma list of {', '.join(ENGINES)} (default: what runs here)")
    p.add_argument("--precisions", default="fp32,fp16", help="for the GPU engines (default fp32,fp16)")
    p.add_argument("--repeats", default=None, help="WARMUP,TIMED frames for every case (default: per case)")
    p.add_argument("--quick", action="store_true", help="a third of the repeats (at least 2)")
    p.add_argument("--case-timeout", type=float, default=None, help="seconds per case (default: none)")
    p.add_argument("--budget-s", type=float, default=None, help="start no case after this many seconds")
    p.add_argument("--out", type=Path, default=RESULTS / "engines-cpu.md")
    p.add_argument("--case", help=argparse.SUPPRESS)  # child mode: JSON of run_case's arguments
    args = p.parse_args(argv)

    if args.case:
        print(json.dumps(run_case(**json.loads(args.case))))
        return 0

    t_start = time.monotonic()
    sizes = args.sizes.split(",")
    sides = [int(s) for s in args.sides.split(",")]
    names = args.engines.split(",") if args.engines else None
    precisions = args.precisions.split(",")
    fixed = tuple(int(x) for x in args.repeats.split(",")) if args.repeats else None
    load_before = os.getloadavg()
    rows: list[dict] = []
    skipped: list[str] = []
    exports = {}
    plan = [(size, side, c) for size in sizes for side in sides for c in _engines_here(size, names, precisions)]
    if any(c[2] == "cuda" for _, _, c in plan):  # the numbers the targets need first: paper, 1024²
        plan.sort(key=lambda t: (-t[1], t[0] != "paper"))

    def write() -> None:
        lines = _report(args, rows, skipped, exports, load_before, os.getloadavg())
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        ckpts = _make_checkpoints(Path(tmp), sizes)
        from engines.export import export_onnx

        for size, ckpt in ckpts.items():  # exported once here, so no case pays for it
            t = time.perf_counter()
            export_onnx(ckpt)
            exports[size] = time.perf_counter() - t
        for size, side, (name, backend, device, precision, threads, options) in plan:
            label = f"{name} ({threads} thr)" if device == "cpu" else name
            if args.budget_s is not None and time.monotonic() - t_start > args.budget_s:
                skipped.append(f"{size} {label} {precision} {side}²")
                continue
            warmup, repeats = fixed or (GPU_REPEATS if device == "cuda" else REPEATS.get((size, side), (2, 10)))
            if args.quick:
                repeats = max(2, repeats // 3)
            case = dict(ckpt=str(ckpts[size]), backend=backend, device=device, precision=precision,
                        side=side, warmup=max(1, warmup), repeats=repeats, threads=threads, options=options)
            print(f"{size} {label} {precision} {side}²: {warmup} warm-up + {repeats} timed ...",
                  file=sys.stderr, flush=True)
            base = dict(model=size, engine=name, backend=label, device=device, precision=precision, side=side)
            try:
                proc = subprocess.run([sys.executable, "-m", "bench.engines", "--case", json.dumps(case)],
                                      cwd=ROOT, capture_output=True, text=True, timeout=args.case_timeout)
            except subprocess.TimeoutExpired:
                rows.append(dict(base, error=f"timed out after {args.case_timeout:g} s"))
                print(f"  timed out after {args.case_timeout:g} s", file=sys.stderr)
                write()
                continue
            if proc.returncode != 0:
                err = (proc.stderr.strip().splitlines() or ["?"])[-1][:160]
                rows.append(dict(base, error=err))
                print(f"  failed: {err}", file=sys.stderr)
                write()
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row.update(model=size, engine=name, backend=label)
            rows.append(row)
            print(f"  median {row['median_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, {row['fps']:.2f} fps, "
                  f"first call {row['first_s']:.1f} s", file=sys.stderr, flush=True)
            write()
    write()
    print(args.out.read_text())
    return 0


def _report(args, rows, skipped, exports, load_before, load_after) -> list[str]:
    command = " ".join(["python -m bench.engines", *(sys.argv[1:] if __name__ == "__main__" else [])])
    lines = [
        "# Engine back ends side by side",
        "",
        f"Machine: {_machine()}. Written by `{command}` on {time.strftime('%Y-%m-%d %H:%M %Z')}.",
        f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.1f}' for x in load_before)}; "
        f"after: {', '.join(f'{x:.1f}' for x in load_after)} — other jobs shared the cores, so CPU times "
        "are upper bounds.",
        "",
        "Batch 1, random-init weights (speed does not depend on them), float32 frames in [-1, 1]. "
        "Each case runs in its own process after warm-up; times from `perf_counter_ns` around "
        "`engine.infer` (host array in, host array out). p99 over few samples is close to the max. "
        "Peak RSS is the case process's VmHWM, reset after imports; the delta is over its RSS "
        "then (model, runtime, buffers and activations of the engine). First call: the first "
        "`infer` of the shape (compilation, CUDA-graph capture, arenas).",
        "",
        *_table(rows),
        "",
        "ONNX export (once per checkpoint, then cached by content hash): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in exports.items()) + ".",
    ]
    if skipped:
        lines += ["", f"Not run (past --budget-s {args.budget_s:g} s): " + "; ".join(skipped) + "."]
    verdicts = _verdicts(rows)
    if verdicts:
        lines += [""] + verdicts
    return lines


if __name__ == "__main__":
    sys.exit(main())
