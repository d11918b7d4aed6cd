"""What CSS and the fidelity guard cost next to the engine, and n2a-stream's frame rate with both.

1. *engine*: the bundled lite model in ONNX Runtime (two threads) on one 512² frame, median of
   ``perf_counter_ns`` after a warm-up (``bench/latency.py``'s ``bare_engine_ms``).
2. *CSS + guard*: per frame, what the publish stage does: the rolling CSS of the denoised and the
   raw frame (``RollingCSS.update`` twice: the sampled SSIM of ``metrics.WindowGrid``) and
   ``FidelityGuard.check`` reusing their window moments; also the previous full-map CSS
   (``sampled=False``) for comparison. One thread, median over frames, at 512² and 1024².
3. *stream*: ``n2a-stream`` at 1024² over PUSH/PULL with ``--policy block``, source unpaced, CSS
   and guard on: the sustained frame rate (``bench/latency.py``'s ``run_stream``).

Writes ``bench/results/guard-cpu.md``. Usage: ``python bench/guard_cost.py``. Targets
(design.md §7, issue 12): CSS + guard <= 10 % of the engine time at 512²; >= 5 fps at 1024².
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, bench/ is first on sys.path and bench/engines.py would shadow the engines package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))


def _frames(size: int, n: int = 4) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from noise2atom.stem_sim import StemSimulator

    sim = StemSimulator(shape=(size, size), scene="mixed", peak_counts=1.0, seed=0)
    frames = [sim.frame(t) for t in range(n)]
    return [f.noisy for f in frames], [f.clean for f in frames]


def css_guard_ms(size: int, n: int = 30) -> dict[str, float]:
    """Median ms per frame of (CSS both streams + guard), its parts, and the old full-map CSS."""
    from noise2atom.guard import FidelityGuard
    from noise2atom.metrics import RollingCSS
    from noise2atom.scaling import estimate_scaling

    raw, clean = _frames(size)
    den = [c.astype(np.float32) for c in clean]  # stands in for the output: same shape and dtype
    scaling = estimate_scaling(raw[0])

    def run(sampled: bool, guard_on: bool, n: int) -> tuple[float, float]:
        css_d = RollingCSS(10, lo=0.0, hi=1.0, sampled=sampled)
        css_r = RollingCSS(10, lo=scaling.lo, hi=scaling.hi, sampled=sampled)
        guard = FidelityGuard(scaling, dtype=raw[0].dtype)
        t_css, t_guard = [], []
        for i in range(n + 3):
            k = i % len(raw)
            t0 = time.perf_counter_ns()
            css_d.update(den[k])
            css_r.update(raw[k])
            t1 = time.perf_counter_ns()
            if guard_on:
                guard.check(raw[k], den[k], raw_moments=css_r.last, out_moments=css_d.last)
            t2 = time.perf_counter_ns()
            if i >= 3:  # warm-up: the first frames build the grid and the guard's series checks
                t_css.append(t1 - t0)
                t_guard.append(t2 - t1)
        return float(np.median(t_css)) / 1e6, float(np.median(t_guard)) / 1e6

    css_ms, guard_ms = run(True, True, n)
    full_ms, _ = run(False, False, 5)  # the old way is slow: a few frames say enough
    return {"css": css_ms, "guard": guard_ms, "total": css_ms + guard_ms, "full_css": full_ms}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stream-frames", type=int, default=30)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "guard-cpu.md")
    args = p.parse_args(argv)
    from bench.latency import _model, bare_engine_ms, run_stream

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        model, model_note = _model(Path(tmp))
        raw512, _ = _frames(512)
        eng512 = bare_engine_ms(model, raw512, n=15)
        costs = {size: css_guard_ms(size) for size in (512, 1024)}
        eng512 = min(eng512, bare_engine_ms(model, raw512, n=15))  # shared machine: the quieter run
        raw1024, _ = _frames(1024)
        eng1024 = bare_engine_ms(model, raw1024, n=6)
        stream = run_stream(model, raw1024, n=args.stream_frames, fps=0, saturated=True, css=True)
    load_after = os.getloadavg()
    for size, c in costs.items():
        print(f"{size}²: CSS {c['css']:.2f} ms + guard {c['guard']:.2f} ms = {c['total']:.2f} ms "
              f"(full-map CSS was {c['full_css']:.1f} ms)")
    print(f"engine 512² {eng512:.1f} ms -> CSS+guard {costs[512]['total'] / eng512 * 100:.1f} %; "
          f"stream 1024²: {stream['fps_out']:.2f} fps (engine alone {1000 / eng1024:.2f} fps)")
    lines = [
        "# CSS and fidelity-guard cost on CPU (lite model, ONNX Runtime)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} logical CPUs, shared with other jobs while "
        f"measured (load average {load_before[0]:.1f} before, {load_after[0]:.1f} after), Python "
        f"{platform.python_version()}; model: {model_note}. Made by `python bench/guard_cost.py`, "
        f"{time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        "Per frame, what the publish stage adds to the engine: the rolling CSS of the denoised and "
        "the raw frame (SSIM map mean over 32 × 128 stratified window centres, "
        "`noise2atom.metrics.WindowGrid`) and the fidelity guard (`noise2atom.guard`, reusing the "
        "CSS's window moments); one thread, median over 30 frames. Engine: median `infer` time of "
        "one frame, two ONNX Runtime threads.",
        "",
        "| size | engine ms | CSS ms (both streams) | guard ms | CSS + guard ms | share of engine "
        "| previous full-map CSS ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for size, eng in ((512, eng512), (1024, eng1024)):
        c = costs[size]
        lines.append(f"| {size}² | {eng:.1f} | {c['css']:.2f} | {c['guard']:.2f} | {c['total']:.2f} "
                     f"| {c['total'] / eng * 100:.1f} % | {c['full_css']:.1f} |")
    lines += [
        "",
        f"Target: CSS + guard ≤ 10 % of the engine time at 512²: "
        f"**{costs[512]['total'] / eng512 * 100:.1f} %**.",
        "",
        "## n2a-stream at 1024², CSS and guard on",
        "",
        "PUSH/PULL, `--policy block`, source unpaced (`bench/latency.py`'s saturated run), "
        f"{stream['received']}/{stream['sent']} frames received, dropped {stream['dropped']}.",
        "",
        "| size | engine alone fps | stream fps (CSS + guard) | median stage ms: denoise | CSS | "
        "receive→publish |",
        "|---|---|---|---|---|---|",
        f"| 1024² | {1000 / eng1024:.2f} | **{stream['fps_out']:.2f}** | "
        f"{stream['stages']['denoise']:.1f} | {stream['stages']['css']:.1f} | "
        f"{stream['stages']['receive_to_publish']:.1f} |",
        "",
        "Target ≥ 5 fps. The stream cannot beat the engine alone: at 1024² the engine's own rate on "
        "this machine bounds it.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
