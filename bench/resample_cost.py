"""What the per-series resampling costs the tools (noise2atom.scaling.series_zoom + denoise_resampled).

1. *estimate*: ``series_zoom`` on one frame in model units (what ``n2a-stream``'s denoise stage runs
   once per series, on its first frame; imports already done, as the stage does them at start),
   at 256², 512² and 1024², a lattice (the demo's nanoparticle) and noise without one.
2. *per frame*, at 512²: the zooms alone (``denoise_resampled`` with an identity network) next to
   the bundled model's ``infer`` in ONNX Runtime (two threads) on the zoomed frame and on the frame
   at its own sampling, interleaved so all see the same load on a shared machine.

Medians after a warm-up. Writes ``bench/results/resample-cpu.md``. Usage: ``python -m bench.resample_cost``.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

from bench.harness import RESULTS, machine, timing_model  # noqa: E402


def _frame(size: int, sigma_px: float = 1.6) -> np.ndarray:
    """One noisy demo-like frame (nanoparticle, 1 count at a column) in model units."""
    from noise2atom.scaling import estimate_scaling
    from noise2atom.stem_sim import StemSimulator

    f = StemSimulator(shape=(size, size), scene="nanoparticle", sigma_px=sigma_px, seed=0).frame(0).noisy
    return estimate_scaling(f).to_model(f)


def _median_ms(fn, n: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(n):
        t = time.perf_counter_ns()
        fn()
        ts.append(time.perf_counter_ns() - t)
    return float(np.median(ts)) / 1e6


def estimate_rows(n: int) -> list[tuple]:
    from noise2atom.scaling import series_zoom

    rows = []
    for size in (256, 512, 1024):
        x = _frame(size)
        noise = np.random.default_rng(0).normal(size=(size, size)).astype(np.float32)
        rows.append((size, series_zoom(x)[1], _median_ms(lambda: series_zoom(x), n),
                     _median_ms(lambda: series_zoom(noise), n)))
    return rows


def per_frame_rows(model: Path, n: int) -> list[tuple]:
    import engines
    from noise2atom.scaling import denoise_resampled, series_zoom

    rows = []
    with engines.open_engine(model, engines.EngineConfig(backend="onnxruntime", threads=2)) as engine:
        for sigma in (1.6, 0.8):  # the demo's columns (zoomed down) and narrow ones (zoomed up)
            x = _frame(512, sigma)
            pitches, zoom = series_zoom(x)
            if pitches is None:
                continue
            small = []
            denoise_resampled(x, pitches[1], pitches[0], lambda a: small.append(a) or a)
            small_frame = small[0]
            t_zoom, t_small, t_own = [], [], []
            for k in range(n + 1):
                a = time.perf_counter_ns()
                denoise_resampled(x, pitches[1], pitches[0], lambda s: s)
                b = time.perf_counter_ns()
                engine.infer(small_frame[None])
                c = time.perf_counter_ns()
                engine.infer(x[None])
                d = time.perf_counter_ns()
                if k:  # the first is a warm-up
                    t_zoom.append(b - a), t_small.append(c - b), t_own.append(d - c)
            rows.append((sigma, zoom, small_frame.shape, *(float(np.median(t)) / 1e6 for t in (t_zoom, t_small, t_own))))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7, help="timed runs per case (7)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model, note = timing_model(Path(tmp))
        t0 = time.time()
        est = estimate_rows(args.repeats)
        frame = per_frame_rows(model, args.repeats)
    lines = [
        "# Resampling cost (n2a-stream / n2a-denoise, per series)", "",
        f"- Date (UTC): {time.strftime('%Y-%m-%dT%H:%M', time.gmtime())}; run time "
        f"{(time.time() - t0) / 60:.1f} min; {machine()}.",
        f"- Command: `python -m bench.resample_cost --repeats {args.repeats}`; model: {note}", "",
        "## Estimate, once per series (`noise2atom.scaling.series_zoom` on the first frame)", "",
        "| frame | zoom (demo lattice) | lattice: ms | noise: ms |", "|---|---|---|---|",
        *[f"| {s}² | {z:.3f} | {a:.0f} | {b:.0f} |" for s, z, a, b in est], "",
        "## Per frame at 512² (medians; ORT two threads)", "",
        "| columns σ px | zoom | network sees | zooms (down + back) ms | engine on zoomed frame ms | "
        "engine at own sampling ms | resampled total / own |", "|---|---|---|---|---|---|---|",
        *[f"| {sg:g} | {z:.3f} | {sh[0]}×{sh[1]} | {tz:.1f} | {ts:.1f} | {to:.1f} | {(tz + ts) / to:.2f} |"
          for sg, z, sh, tz, ts, to in frame], "",
    ]
    out = RESULTS / "resample-cpu.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
