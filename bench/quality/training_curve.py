"""Quality vs minutes of training, per n2a training method, on one of the quality benchmark's series.

One training run per method (``n2a-train --minutes STEP``, then ``--resume`` for each further step,
an exact continuation), a snapshot after every step; each snapshot denoises the series' scored frames
through ONNX Runtime and is scored against the truth like every row of bench/results/quality.md.
Writes ``training_curve.md``, ``training_curve.json`` and ``training_curve.png`` to ``--out``.

Run: ``python -m bench.quality.training_curve [--step-minutes 1] [--steps 6]``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path

from bench.harness import RESULTS, ROOT, machine
from bench.quality.denoisers import (
    Bm3dDenoiser,
    EngineDenoiser,
    FilterDenoiser,
    RawDenoiser,
    choose_filter_setting,
    run_denoiser,
)
from bench.quality.scoring import DetectorSettings, score_outputs, ssim_to_truth
from bench.quality.series import SeriesSpec, make_bench_series, make_tuning_series
from bench.quality.simulated import GAUSSIAN_SIGMAS, case_seed
from bench.quality.training import train_with_snapshots

__all__ = ["main"]

METHODS = ("noise2atom", "blindspot", "hybrid")
LABELS = {"noise2atom": "n2a lite noise2atom", "blindspot": "n2a blindspot (compact Noise2Void-type)",
          "hybrid": "n2a lite hybrid"}


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m bench.quality.training_curve", description=__doc__.splitlines()[0])
    p.add_argument("--dose", type=float, default=1.0, help="peak counts per atom (default 1)")
    p.add_argument("--scene", default="crystal", choices=["crystal", "nanoparticle"])
    p.add_argument("--step-minutes", type=float, default=1.0, help="minutes between snapshots")
    p.add_argument("--steps", type=int, default=6, help="snapshots per method")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--work", type=Path, default=ROOT / "build" / "training_curve")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--n-train", type=int, default=40)
    p.add_argument("--n-score", type=int, default=6)
    p.add_argument("--no-bm3d", action="store_true", help="leave the BM3D reference line out")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Train, snapshot, score and write the curve; returns the exit status."""
    args = _parse(argv)
    t_start = time.perf_counter()
    started = _dt.datetime.now().astimezone().isoformat(timespec="minutes")
    machine_note = machine()
    spec = SeriesSpec(dose=args.dose, scene=args.scene, size=args.size, n_train=args.n_train,
                      n_score=args.n_score, seed=case_seed(args.dose, args.scene))
    series = make_bench_series(spec)
    score = series.score
    det = DetectorSettings.from_meta(score.meta)

    # Reference lines: the baselines of the same case, made as in bench.quality.simulated.
    tune = make_tuning_series(spec)
    g_sigma = choose_filter_setting("gaussian", GAUSSIAN_SIGMAS, tune.noisy, tune.clean, ssim_to_truth)
    refs = {}
    baselines = [RawDenoiser(), FilterDenoiser(kind="gaussian", setting=g_sigma,
                                               name=f"Gaussian (sigma {g_sigma:g}, best)")]
    if not args.no_bm3d:
        baselines.append(Bm3dDenoiser(gain=score.meta["gain_adu_per_count"], offset=score.meta["offset_adu"]))
    for den in baselines:
        outs, ms = run_denoiser(den, score.noisy)
        refs[den.name] = score_outputs(outs, score, detector=det, ms_per_frame=ms).row()
        print(f"{den.name}: SSIM {refs[den.name]['ssim']:.3f}, F1 {refs[den.name]['f1']:.3f}", flush=True)

    rows: list[dict] = []
    for method in args.methods:
        print(f"[{time.perf_counter() - t_start:5.0f} s] training {method}", flush=True)
        snaps = train_with_snapshots(method=method, frames=series.train_noisy, meta=score.meta,
                                     step_minutes=args.step_minutes, steps=args.steps,
                                     workdir=args.work / spec.key)
        for minutes, iteration, path in snaps:
            with EngineDenoiser(checkpoint=path, name=LABELS[method], backend="onnxruntime") as den:
                outs, ms = run_denoiser(den, score.noisy)
            sc = score_outputs(outs, score, detector=det, ms_per_frame=ms).row()
            rows.append({"method": method, "minutes": minutes, "iteration": iteration, **sc})
            print(f"  {method} {minutes:g} min ({iteration} it): SSIM {sc['ssim']:.3f}, F1 {sc['f1']:.3f}, "
                  f"false/100nm² {sc['false_per_100nm2']:.0f}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "training_curve.json").write_text(json.dumps({"spec": spec.__dict__, "references": refs,
                                                             "rows": rows}, indent=1))
    _figure(rows, refs, args.out / "training_curve.png", title=f"{spec.key}: quality vs CPU-minutes of training")
    cmd = " ".join(["python -m bench.quality.training_curve", *sys.argv[1:]])
    md = _markdown(rows, refs, spec=spec, machine=machine_note, started=started, cmd=cmd,
                   elapsed_min=(time.perf_counter() - t_start) / 60)
    (args.out / "training_curve.md").write_text(md)
    print(f"wrote {args.out / 'training_curve.md'}")
    return 0


def _markdown(rows, refs, *, spec, machine, started, cmd, elapsed_min) -> str:
    lines = [
        "# Quality vs minutes of training (CPU)", "",
        f"- Date: {started}; run time {elapsed_min:.0f} min. Command: `{cmd}`.",
        f"- Machine: {machine}. No GPU was available to this run, so there is no GPU curve.",
        f"- Series: `noise2atom.stem_sim` {spec.scene}, {spec.dose:g} counts at an atom's peak, "
        f"{spec.size}², {spec.n_train} earlier frames for training, the next {spec.n_score} scored "
        "(the same seeded series and training frames as that case in quality.md).",
        "- One run per method (`n2a-train --minutes STEP`, then `--resume` per step: an exact "
        "continuation); each snapshot runs through ONNX Runtime and is scored like quality.md's rows.",
        "- Minutes are wall-clock on a shared machine, so iterations per minute vary with the load; the "
        "iteration column says how much training each point really got.", "",
        "| method | minutes | iterations | SSIM to truth | PSNR (dB) | atom F1 | position error (px) "
        "| false atoms in vacuum per 100 nm² | CSS (ours) |",
        "|" + "---|" * 9,
    ]
    for r in rows:
        lines.append(f"| {LABELS[r['method']]} | {r['minutes']:g} | {r['iteration']} | {r['ssim']:.3f} "
                     f"| {r['psnr_db']:.2f} | {r['f1']:.3f} | {r['rmse_px']:.2f} | {r['false_per_100nm2']:.0f} "
                     f"| {r['css']:.3f} |")
    lines += ["", "Reference rows (no training):", "", "| denoiser | SSIM to truth | atom F1 | false atoms "
              "per 100 nm² |", "|---|---|---|---|"]
    for name, r in refs.items():
        lines.append(f"| {name} | {r['ssim']:.3f} | {r['f1']:.3f} | {r['false_per_100nm2']:.0f} |")
    lines += ["", "![quality vs minutes](training_curve.png)", ""]
    best = {}
    for r in rows:
        b = best.get(r["method"])
        if b is None or r["ssim"] > b["ssim"]:
            best[r["method"]] = r
    if best:
        lines += ["Best snapshot per method (by SSIM to truth):", ""]
        for m, r in best.items():
            lines.append(f"- {LABELS[m]}: SSIM {r['ssim']:.3f}, F1 {r['f1']:.3f}, false atoms "
                         f"{r['false_per_100nm2']:.0f} per 100 nm², after {r['minutes']:g} min "
                         f"({r['iteration']} iterations).")
        lines.append("")
    return "\n".join(lines)


def _figure(rows, refs, path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, name in zip(axes, ("ssim", "f1", "false_per_100nm2"),
                             ("SSIM to truth", "atom F1", "false atoms in vacuum / 100 nm²")):
        for method in METHODS:
            pts = [r for r in rows if r["method"] == method]
            if pts:
                ax.plot([r["minutes"] for r in pts], [r[key] for r in pts], marker="o", label=LABELS[method])
        for i, (rname, r) in enumerate(refs.items()):
            ax.axhline(r[key], color=f"C{i + 4}", ls="--", lw=1, label=rname)
        ax.set_xlabel("CPU-minutes of training (wall clock)")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
