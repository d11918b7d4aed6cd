"""Does resampling a frame to another lattice pitch before the bundled model measure better?

Per series: the input scaling from the series itself (`noise2atom.scaling.estimate_scaling`), the
lattice pitch estimated from its noisy frames (`noise2atom.prior.estimate_prior`), then the bundled
model (a) as it is and (b) on each frame resampled so that pitch becomes each target pitch,
denoised, resampled back (`noise2atom.scaling.denoise_resampled`). Scored:

- abTEM SrTiO3 and Au on carbon (bench/data) and the temul MoS2 PRISM image (../shared/data) with
  Poisson noise at 0.1 / 0.5 / 2 counts/px: SSIM to truth and atom F1 (`bench.quality.external`'s
  scoring, the same series as its tables);
- our simulator's demo series (what `make demo` streams): denoised CSS (consecutive SSIM of the
  model's outputs, on the fixed display scale as n2a-stream computes it, and
  `noise2atom.metrics.css` with one min-max per series), with SSIM to truth and F1 beside it,
  because smoothing alone raises CSS.

Run: ``OMP_NUM_THREADS=1 python -m bench.quality.pitch_resampling [--targets 6 8 10 12] [--demo-frames 60]``
(writes bench/results/pitch-resampling.md and .json).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from bench.harness import RESULTS
from bench.quality.external_data import SHARED_DATA, Series, abtem_fields, load_temul_mos2
from bench.quality.external import DOSES as EXTERNAL_DOSES
from bench.quality.external import abtem_series, mos2_series, score_series
from bench.quality.scoring import fit_to_truth
from noise2atom.metrics import css, detect_atoms, score_atoms, ssim, to_unit
from noise2atom.prior import PriorEstimateError, estimate_prior
from noise2atom.scaling import MODEL_SIGMA_PX, denoise_resampled, estimate_pitch, estimate_scaling

DOSES = [0.1, 0.5, 2.0]
TARGETS = [6.0, 8.0, 10.0, 12.0, 14.0, 16.0]
#: Blob-width targets: resample so the estimated column width (prior's sigma_px) becomes this.
SIGMA_TARGETS = [1.0, 1.25, 1.4, 1.5, 2.0]
#: The demo's series (streamer/demo.py -> n2a-replay --simulate defaults).
DEMO = {"shape": (256, 256), "scene": "nanoparticle", "peak_counts": 1.0, "drift_px_per_frame": 0.1, "seed": 0}


def _prior(frames: np.ndarray) -> dict:
    """What the estimator says: pitch, peak ratio, and whether `estimate_pitch` trusts it."""
    try:
        e = estimate_prior(np.asarray(frames, dtype=np.float32), max_pitch_px=None)
    except PriorEstimateError as err:
        return {"pitch_px": None, "peak_ratio": None, "trusted": False, "error": str(err)}
    return {"pitch_px": float(e.pitch_px), "sigma_px": float(e.sigma_px), "peak_ratio": float(e.peak_ratio),
            "trusted": estimate_pitch(frames) is not None}


def variants(targets: list[float], sigmas: list[float]) -> list[tuple[str, str | None, float]]:
    """(name, what is brought to the value: 'pitch' / 'sigma' / None, value)."""
    return ([("as is", None, 0.0)] + [(f"pitch {t:g}", "pitch", t) for t in targets]
            + [(f"σ {s:g}", "sigma", s) for s in sigmas])


def target_pitch(kind: str | None, value: float, prior: dict) -> float | None:
    """The pitch to resample to (None: as is, or no estimate to resample from)."""
    if kind is None or not prior.get("pitch_px"):
        return None
    if kind == "pitch":
        return value
    sigma = prior.get("sigma_px")
    return prior["pitch_px"] * value / sigma if sigma and np.isfinite(sigma) and sigma > 0 else None


def denoiser(engine, scaling, pitch: float | None, target: float | None):
    """raw frame -> denoised frame in raw units (through model units, resampled when a target is given)."""
    def model(x: np.ndarray) -> np.ndarray:
        return engine.infer(np.asarray(x, dtype=np.float32)[None])[0]

    def f(frame: np.ndarray) -> np.ndarray:
        x = scaling.to_model(np.asarray(frame))
        y = model(x) if target is None else denoise_resampled(x, target, pitch, model)
        return np.asarray(scaling.to_raw(y), dtype=np.float32)
    return f


def run_truth_series(engine, s: Series, n_score: int, vs: list, prior: dict) -> dict:
    scaling = estimate_scaling(s.noisy)
    scored = Series(name=s.name, noisy=s.noisy[-n_score:], clean=s.clean[-n_score:],
                    positions=None if s.positions is None else s.positions[-n_score:], sigma_px=s.sigma_px,
                    tol_px=s.tol_px)
    rows = {}
    for name, kind, value in vs:
        target = target_pitch(kind, value, prior)
        if kind is not None and target is None:
            continue
        f = denoiser(engine, scaling, prior["pitch_px"], target)
        outs = np.stack([f(x) for x in scored.noisy])
        rows[name] = score_series(outs, scored)
    return rows


def run_demo(engine, n_frames: int, vs: list) -> dict:
    from noise2atom.stem_sim import StemSimulator

    sim = StemSimulator(**DEMO)
    frames = [sim.frame(t) for t in range(n_frames)]
    noisy = np.stack([fr.noisy for fr in frames]).astype(np.float32)
    scaling = estimate_scaling(noisy[0])  # n2a-stream: from the series' first frame, then fixed
    prior = _prior(noisy[:4])
    pitch = prior["pitch_px"]
    x = scaling.to_model(noisy)
    raw_unit = to_unit(x, -1.0, 1.0)
    out = {"prior": prior, "raw_css_live": float(np.mean([ssim(raw_unit[t], raw_unit[t - 1])
                                                          for t in range(1, n_frames)])), "rows": {}}
    for name, kind, value in vs:
        target = target_pitch(kind, value, prior)
        if kind is not None and target is None:
            continue
        y = np.stack([engine.infer(f[None])[0] if target is None
                      else denoise_resampled(f, target, pitch, lambda a: engine.infer(a[None])[0]) for f in x])
        u = to_unit(y, -1.0, 1.0)  # the display scale: the series' own scaling, fixed
        live = float(np.mean([ssim(u[t], u[t - 1]) for t in range(1, n_frames)]))
        truth_ssim, f1 = [], []
        for k, fr in enumerate(frames):
            t = to_unit(fr.clean)
            truth_ssim.append(ssim(fit_to_truth(y[k], t), t))
            found = detect_atoms(y[k], sigma_px=DEMO_SIGMA)
            f1.append(score_atoms(found, fr.positions, tol_px=2.0, shape=y[k].shape, border_px=4.0).f1)
        out["rows"][name] = {"css_live": live, "css_minmax": float(np.mean(css(y))),
                             "ssim": float(np.mean(truth_ssim)), "f1": float(np.mean(f1))}
    return out


DEMO_SIGMA = 1.6


def _index(dose: float) -> int:
    """The noise seed offset bench.quality.external uses for this dose (same noise draws as its tables)."""
    return EXTERNAL_DOSES.index(dose) if dose in EXTERNAL_DOSES else 100 + int(round(dose * 1000))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quality.pitch_resampling", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="checkpoint (default: the bundled model)")
    p.add_argument("--targets", type=float, nargs="+", default=TARGETS, help="target pitches, px")
    p.add_argument("--sigmas", type=float, nargs="*", default=SIGMA_TARGETS, help="blob-width targets, px")
    p.add_argument("--doses", type=float, nargs="+", default=DOSES, help="mean counts/px")
    p.add_argument("--frames", type=int, default=8, help="frames per series (the scaling sees all)")
    p.add_argument("--score-frames", type=int, default=3, help="the last N frames are scored")
    p.add_argument("--mos2-crop", type=int, default=352,
                   help="temul MoS2 crop (its pitch is ~86 px: a 192² crop holds two periods)")
    p.add_argument("--demo-frames", type=int, default=60)
    p.add_argument("--engine", default="onnxruntime", choices=["onnxruntime", "pytorch"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", type=Path, default=SHARED_DATA)
    p.add_argument("--out", type=Path, default=RESULTS / "pitch-resampling.md")
    args = p.parse_args(argv)
    from engines import open_engine
    from noise2atom.checkpoint import default_model_path, model_id

    model = args.model or default_model_path()
    t0 = time.perf_counter()
    res: dict = {"model": str(model), "model_id": model_id(model), "argv": sys.argv[1:] if argv is None else argv,
                 "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="minutes"),
                 "targets": args.targets, "sigmas": args.sigmas, "doses": args.doses, "cases": {}}
    vs = variants(args.targets, args.sigmas)

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:5.0f} s] {msg}", flush=True)

    opts = {"threads": args.threads} if args.engine == "onnxruntime" else {"device": "cpu"}
    with open_engine(model, backend=args.engine, **opts) as engine:
        for name, d in abtem_fields().items():
            for dose in args.doses:
                s = abtem_series(name, d, dose, n_frames=args.frames, crop=96, seed=100 + _index(dose))
                prior = _prior(s.noisy)
                rows = run_truth_series(engine, s, args.score_frames, vs, prior if prior["trusted"] else {})
                res["cases"][f"abTEM {name} @ {dose:g}"] = {"prior": prior, "rows": rows}
                log(f"abTEM {name} {dose:g}: pitch {prior['pitch_px']:.2f} " +
                    " ".join(f"{k}: {v['ssim']:.3f}/{v['f1']:.2f}" for k, v in rows.items()))
        mos2 = load_temul_mos2(args.data)
        for dose in args.doses:
            s = mos2_series(mos2, dose, n_frames=args.frames, crop=args.mos2_crop, seed=200 + _index(dose))
            prior = _prior(s.noisy)
            # estimate_pitch does not trust this lattice (peak ratio < 5): use the estimator's pitch anyway,
            # to see what resampling would give once the pitch is known
            rows = run_truth_series(engine, s, args.score_frames, vs, prior)
            res["cases"][f"temul MoS2 @ {dose:g}"] = {"prior": prior, "rows": rows}
            log(f"MoS2 {dose:g}: pitch {prior['pitch_px']:.2f} " +
                " ".join(f"{k}: {v['ssim']:.3f}/{v['f1']:.2f}" for k, v in rows.items()))
        res["demo"] = run_demo(engine, args.demo_frames, vs)
        log("demo: " + " ".join(f"{k}: {v['css_live']:.3f}/{v['ssim']:.3f}" for k, v in res["demo"]["rows"].items()))
    res["elapsed_s"] = time.perf_counter() - t0
    res["machine"] = f"{platform.machine()}, Python {platform.python_version()}, engine {args.engine}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    args.out.write_text(render(res))
    log(f"wrote {args.out}")
    return 0


def render(res: dict) -> str:
    names = [n for n, _, _ in variants(res["targets"], res["sigmas"])]
    lines = ["# Pitch resampling before the bundled model", "",
             f"- Date (UTC): {res['started']}; run time {res['elapsed_s'] / 60:.1f} min; {res['machine']}.",
             f"- Command: `python -m bench.quality.pitch_resampling {' '.join(res['argv'])}`",
             f"- Model: `{res['model']}` (id {res['model_id']}), input scaling from each series itself.", "",
             "## SSIM to truth / atom F1", "",
             "Pitch and blob σ: `noise2atom.prior.estimate_prior` on the series' noisy frames; *not trusted*: "
             "`noise2atom.scaling.estimate_pitch` finds no lattice there (the product would not resample), "
             "resampled here anyway with that pitch. `pitch P`: the frame resampled so its estimated pitch "
             "becomes P px; `σ S`: so its estimated blob σ becomes S px; denoised in model units, resampled "
             "back (`noise2atom.scaling.denoise_resampled`). Cells: SSIM to truth / atom F1, best SSIM in bold.", "",
             f"| series | pitch px (peak ratio) / σ px (zoom to σ {MODEL_SIGMA_PX:g}) | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for case, c in res["cases"].items():
        pr = c["prior"]
        cells = []
        best = max(v["ssim"] for v in c["rows"].values())
        for n in names:
            v = c["rows"].get(n)
            if v is None:
                cells.append("–")
                continue
            s = f"{v['ssim']:.3f} / {v['f1']:.2f}"
            cells.append(f"**{s}**" if v["ssim"] == best else s)
        pitch = (f"{pr['pitch_px']:.1f} ({pr['peak_ratio']:.0f}{'' if pr['trusted'] else ', not trusted'})"
                 f" / {pr['sigma_px']:.2f} (×{MODEL_SIGMA_PX / pr['sigma_px']:.2f})") if pr["pitch_px"] else "–"
        lines.append(f"| {case} | {pitch} | " + " | ".join(cells) + " |")
    d = res["demo"]
    lines += ["", "## The demo series (our simulator: nanoparticle, 1 count at an atom's peak, 256², drift 0.1 px/frame)",
              "", f"Pitch {d['prior']['pitch_px']:.2f} px (peak ratio {d['prior']['peak_ratio']:.0f}), σ "
              f"{d['prior']['sigma_px']:.2f} px, from the first 4 frames; raw CSS "
              f"{d['raw_css_live']:.3f}. CSS live: consecutive SSIM on the fixed display scale (as n2a-stream); "
              "CSS min-max: `noise2atom.metrics.css`.", "",
              "| variant | CSS live | CSS min-max | SSIM to truth | atom F1 |", "|---|---|---|---|---|"]
    for n in names:
        v = d["rows"].get(n)
        if v is not None:
            lines.append(f"| {n} | {v['css_live']:.3f} | {v['css_minmax']:.3f} | {v['ssim']:.3f} | {v['f1']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
