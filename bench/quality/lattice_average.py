"""What `n2a-denoise --lattice-average` (noise2atom.lattice_average) gains and costs, with truth.

1. *Quality on n2a's mixture* (the bundled model's training distribution, a seed it never saw:
   crystals with vacancies and holes, particles on amorphous support, films, HAADF and ABF, 0.05-2,000
   counts at a peak): the bundled model's MSE to the noise-free target with and without the lattice
   average, over all pixels and over the **non-periodic** pixels alone: those where the truth differs
   from the mean of its own translated copies by more than 15 % of its range (vacancies, hole and
   particle edges, adatoms, amorphous support). The first number is what the step gains; the
   second is what it costs where the specimen does not repeat.
2. *Why a non-local step*: Anscombe + BM3D on abTEM SrTiO3, CeO2 and GaN at 0.5 and 2 counts/px
   (the external benchmark's series) with its block-matching search window cut from 39 px (the
   default) to 19 and 11. If BM3D's lead over the network came from anything but averaging far
   repeats, a smaller window would keep it.
3. *Time* of the step per frame (translations found once per series, then the average per frame) at
   256², 512² and 1024², next to the bundled model's ONNX Runtime time at the same size; and
   ``n2a-stream`` end to end on a 512² and a 1024² crystal (PUSH/PULL, unpaced, CSS and guard on,
   resampled) with and without ``--lattice-average``.

Writes ``bench/results/lattice-average-cpu.md``. Usage: ``python -m bench.quality.lattice_average``.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from bench.harness import RESULTS, machine  # noqa: E402

SEED = 777  # the bundled model trained on seed 0's draws
BINS = [(0.0, 1.0), (1.0, 5.0), (5.0, 20.0), (20.0, 100.0), (100.0, np.inf)]
BORDER = 8
WINDOWS = (39, 19, 11)


def _copies_mean(truth: np.ndarray) -> np.ndarray:
    """The plain mean of the truth and its copies translated by its own lattice (the truth where none)."""
    from noise2atom.lattice_average import lattice_offsets

    offsets = lattice_offsets(truth)
    if not len(offsets):
        return truth.copy()
    return np.mean([ndimage.shift(truth, -o, order=1, mode="nearest") for o in offsets] + [truth], axis=0)


def _non_periodic(truth: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """Pixels where the truth differs from the plain mean of its own translated copies."""
    mean = _copies_mean(truth) if mean is None else mean
    mask = np.abs(truth - mean) > 0.15 * np.ptp(truth)
    mask[:BORDER] = mask[-BORDER:] = False
    mask[:, :BORDER] = mask[:, -BORDER:] = False
    return mask


def _vacancy_pixels(truth: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Non-periodic pixels where the truth lies below its copies' mean: vacancies, holes, the gaps
    beside an edge. What an output puts back there is intensity the specimen does not have."""
    return _non_periodic(truth, mean) & (mean > truth)


def quality_rows(n_series: int) -> tuple[list[dict], int]:
    import engines
    from noise2atom.checkpoint import default_model_path
    from noise2atom.lattice_average import lattice_average, lattice_offsets
    from noise2atom.mixture import simulate_mixture_series

    rng = np.random.default_rng(SEED)
    rows, n_lattice = [], 0
    with engines.open_engine(default_model_path(), engines.EngineConfig(backend="onnxruntime", threads=2)) as e:
        for _ in range(n_series):
            s = simulate_mixture_series(rng, size=192, n_frames=1)
            x, t = s.noisy[0], s.target[0]
            y = e.infer(x[None])[0]
            offsets = lattice_offsets(y)
            n_lattice += len(offsets) > 0
            z = lattice_average(y, x, offsets, denoise=lambda a: e.infer(a[None])[0])
            z1 = lattice_average(y, x, offsets)  # without the second pass
            mean = _copies_mean(t)
            m = _non_periodic(t, mean)
            gap = _vacancy_pixels(t, mean)  # how much of the missing intensity comes back
            rows.append({"peak": s.settings.peak_counts, "mse": float(np.mean((y - t) ** 2)),
                         "mse_avg": float(np.mean((z - t) ** 2)), "mse_one": float(np.mean((z1 - t) ** 2)),
                         "np_sq": float(np.sum((y - t)[m] ** 2)), "np_sq_avg": float(np.sum((z - t)[m] ** 2)),
                         "np_sq_one": float(np.sum((z1 - t)[m] ** 2)), "np_n": int(m.sum()),
                         "gap": float(np.sum((mean - t)[gap])), "fill": float(np.sum((y - t)[gap])),
                         "fill_avg": float(np.sum((z - t)[gap]))})
    return rows, n_lattice


def _bin_line(label: str, rs: list[dict]) -> str:
    mse, mse_avg = np.mean([r["mse"] for r in rs]), np.mean([r["mse_avg"] for r in rs])
    n = sum(r["np_n"] for r in rs)
    np_mse = sum(r["np_sq"] for r in rs) / n if n else float("nan")
    np_avg = sum(r["np_sq_avg"] for r in rs) / n if n else float("nan")
    np_one = sum(r["np_sq_one"] for r in rs) / n if n else float("nan")
    mse_one = np.mean([r["mse_one"] for r in rs])
    worse = np.mean([r["mse_avg"] > 1.02 * r["mse"] for r in rs])
    gap = sum(r["gap"] for r in rs)
    fill, fill_avg = (100 * sum(r[k] for r in rs) / gap if gap else float("nan") for k in ("fill", "fill_avg"))
    return (f"| {label} | {len(rs)} | {mse:.5f} | {mse_avg:.5f} | **{mse_avg / mse:.3f}** | {mse_one / mse:.3f} | "
            f"{np_mse:.5f} | {np_avg:.5f} | **{np_avg / np_mse:.3f}** | {np_one / np_mse:.3f} | {worse:.2f} | "
            f"{fill:.1f} % | **{fill_avg:.1f} %** |")


def window_rows() -> list[tuple]:
    import bm3d

    from bench.quality.denoisers import anscombe, inverse_anscombe
    from bench.quality.external import DOSES, _frames, abtem_series, score_series
    from bench.quality.external_data import abtem_fields

    fields = abtem_fields(["srtio3", "ceo2", "gan"])
    rows = []
    for name, d in fields.items():
        for dose in (0.5, 2.0):
            s = _frames(abtem_series(name, d, dose, n_frames=8, crop=96, seed=100 + DOSES.index(dose)), slice(-3, None))
            ssims = []
            for window in WINDOWS:
                profile = bm3d.BM3DProfile()
                profile.search_window_ht = profile.search_window_wiener = window
                outs = np.stack([inverse_anscombe(bm3d.bm3d(anscombe((x - s.offset) / s.gain), 1.0, profile=profile))
                                 for x in s.noisy])
                ssims.append(score_series(outs, s)["ssim"])
            rows.append((name, dose, ssims))
    return rows


def time_rows(repeats: int) -> list[tuple]:
    import engines
    from noise2atom.checkpoint import default_model_path
    from noise2atom.lattice_average import lattice_average, lattice_offsets
    from noise2atom.scaling import estimate_scaling
    from noise2atom.stem_sim import StemSimulator

    def median_ms(fn) -> float:
        fn()
        ts = []
        for _ in range(repeats):
            t = time.perf_counter_ns()
            fn()
            ts.append(time.perf_counter_ns() - t)
        return float(np.median(ts)) / 1e6

    rows = []
    with engines.open_engine(default_model_path(), engines.EngineConfig(backend="onnxruntime", threads=2)) as e:
        for size in (256, 512, 1024):
            f = StemSimulator(shape=(size, size), scene="film", seed=0).frame(0).noisy
            x = estimate_scaling(f).to_model(f)[None].astype(np.float32)
            y = e.infer(x)[0]
            offsets = lattice_offsets(y)
            rows.append((size, len(offsets), median_ms(lambda: lattice_offsets(y)),
                         median_ms(lambda: lattice_average(y, x[0], offsets, denoise=lambda a: e.infer(a[None])[0])),
                         median_ms(lambda: lattice_average(y, x[0], offsets)), median_ms(lambda: e.infer(x))))
    return rows


def stream_rows(n: int) -> list[tuple]:
    from bench.latency import run_stream
    from noise2atom.checkpoint import default_model_path
    from noise2atom.stem_sim import StemSimulator

    rows = []
    for size in (512, 1024):
        sim = StemSimulator(shape=(size, size), scene="film", seed=0)
        frames = [sim.frame(t).noisy for t in range(4)]
        for on in (False, True):
            st = run_stream(default_model_path(), frames, n=n, fps=0, saturated=True, css=True,
                            lattice_average=on)
            rows.append((size, on, st["fps_out"], st["stages"]["denoise"], st["stages"]["lattice"],
                         st["received"], st["sent"]))
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.quality.lattice_average", description=__doc__.splitlines()[0])
    p.add_argument("--series", type=int, default=300, help="mixture series to score (300)")
    p.add_argument("--repeats", type=int, default=7, help="timed runs per size (7)")
    p.add_argument("--stream-frames", type=int, default=20, help="frames per n2a-stream run (20)")
    args = p.parse_args(argv)
    t0 = time.time()
    rows, n_lattice = quality_rows(args.series)
    windows = window_rows()
    times = time_rows(args.repeats)
    streams = stream_rows(args.stream_frames)
    bins = [(f"{lo:g}–{hi:g}" if np.isfinite(hi) else f"≥ {lo:g}", [r for r in rows if lo <= r["peak"] < hi])
            for lo, hi in BINS]
    lines = [
        "# The lattice average (`--lattice-average`): what it gains and what it costs", "",
        f"- Date (UTC): {time.strftime('%Y-%m-%dT%H:%M', time.gmtime())}; run time {(time.time() - t0) / 60:.1f} min; "
        f"{machine()}.",
        f"- Command: `python -m bench.quality.lattice_average --series {args.series} --repeats {args.repeats}`; "
        "the bundled model (`models/default.safetensors`) through ONNX Runtime, two threads.",
        f"- Quality: {args.series} series of `noise2atom.mixture` (seed {SEED}; the model trained on seed 0's), "
        f"one 192² frame each, scored against the noise-free target in the series' own scaling. "
        f"A lattice was found (≥ 1 translation) in {n_lattice} of them; the rest are left unchanged by the step.",
        "- *Non-periodic pixels*: where the truth differs from the plain mean of its own translated copies by "
        "more than 15 % of its range (vacancies, hole and particle edges, adatoms, amorphous support), "
        f"{BORDER}-px border excluded. Their MSE is pooled over the pixels of all series in the row.",
        "- *+ average*: the step as the tools run it, with the network's second pass on the raw frame "
        "averaged over the lattice; *one pass*: the ratio without that second pass (the output averaged alone).",
        "- *Worse*: the share of series whose whole-frame MSE rose by more than 2 % with the step.",
        "- *Refilled*: on the non-periodic pixels where the truth lies below its copies' mean (vacancies, "
        "holes, the gaps beside an edge), the intensity the output puts back, as a share of what is missing "
        "(pooled over the row): the model's own, and the model's with the step. A step that invents atoms "
        "in vacancies raises the second (the pooled MSE above can miss it).", "",
        "| counts at a peak | series | MSE model | MSE + average | ratio | one pass | non-periodic: model | "
        "+ average | ratio | one pass | worse | refilled: model | + average |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[_bin_line(label, rs) for label, rs in bins if rs], _bin_line("all", rows), "",
        "## Why a non-local step: BM3D with a smaller search window", "",
        "SSIM to truth of Anscombe + BM3D (σ 1) on the external benchmark's abTEM series (96², the last 3 of 8 "
        "frames), by block-matching search window:", "",
        "| series | counts/px | " + " | ".join(f"window {w} px" for w in WINDOWS) + " |",
        "|---|---:|" + "---:|" * len(WINDOWS),
        *[f"| abTEM {n} | {d:g} | " + " | ".join(f"{v:.3f}" for v in ss) + " |" for n, d, ss in windows], "",
        "## Time per frame (medians, ms)", "",
        "| frame | translations | find them (once per series) | the step per frame (with its second network "
        "pass) | without the second pass | model (ONNX Runtime) |",
        "|---|---:|---:|---:|---:|---:|",
        *[f"| {s}² | {k} | {a:.0f} | {b:.0f} | {b1:.0f} | {c:.0f} |" for s, k, a, b, b1, c in times], "",
        f"`n2a-stream` end to end ({args.stream_frames} frames of a simulated film, PUSH/PULL unpaced, "
        "CSS and guard on, resampled as by default; `bench.latency.run_stream`):", "",
        "| frame | `--lattice-average` | frames received | stream fps | median ms: denoise | lattice |",
        "|---|---|---:|---:|---:|---:|",
        *[f"| {s}² | {'on' if on else 'off'} | {got}/{sent} | **{fps:.2f}** | {d:.0f} | {lat:.0f} |"
          for s, on, fps, d, lat, got, sent in streams], "",
    ]
    out = RESULTS / "lattice-average-cpu.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
