"""Denoising quality on material n2a did not make: abTEM physics simulations, third-party simulated
pairs and real microscope images (``../shared/data/``).

Per series and dose: raw, the best Gaussian (sigma searched against the truth of the scored frames:
an upper bound for a Gaussian), BM3D (sigma from the data), Anscombe+BM3D (counts -> Anscombe ->
BM3D -> exact unbiased inverse), the bundled n2a model with NO training on the data (input scaling
``noise2atom.scaling.estimate_scaling`` of the series itself, ONNX Runtime engine) and optionally a
model fitted on the series (``n2a-train --method blindspot``). Scores: SSIM and PSNR to truth (after
the affine fit of `bench.quality.scoring`), atom F1 where positions are known. Real images: not-flat
checks and a picture grid.

Writes ``quality-external.md`` and ``.json`` to ``--out`` (default bench/results/) and the real-image
grid to ``--grid`` (default docs/quality-grid-real.png).

Run: ``make bench-quality`` (second part, after `bench.quality.simulated`) or
``python -m bench.quality.external [--quick] [--model PATH] [--fit-minutes 1]``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from bench.harness import RESULTS, ROOT, machine
from bench.quality.denoisers import Bm3dDenoiser
from bench.quality.external_data import (
    SHARED_DATA,
    Series,
    abtem_fields,
    drift_series,
    load_real_images,
    load_temul_mos2,
    load_tk_pairs,
    nearest_spacing,
)
from bench.quality.scoring import fit_to_truth
from bench.quality.training import run_n2a_train
from noise2atom.metrics import detect_atoms, psnr, score_atoms, ssim
from noise2atom.scaling import estimate_scaling

__all__ = ["DOSES", "ModelDenoiser", "main", "not_flat_checks", "score_series"]

DOSES = [0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0]
GAUSSIAN_SIGMAS = [0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0]
REAL_GAUSSIAN_SIGMA = 1.5
ABTEM_DETECTOR_SIGMA_A = 0.45
# Specimens used to choose the bundled model's checkpoint (models/README.md): not an independent test.
HELD_OUT = ("ceo2", "gan")
HELD_OUT_NOTE = (". **Used to choose the bundled model's checkpoint** (held out from the issue's target, so "
                 "its scores are not an independent test)")


# --- denoisers -----------------------------------------------------------------------------------

def gaussian(sigma: float):
    def f(frame: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(np.asarray(frame, dtype=np.float32), sigma, mode="reflect")
    return f


def bm3d_plain(gain: float, offset: float):
    """BM3D on the raw values with one global noise σ: the Poisson std of the frame's mean signal,
    sqrt(gain * (mean - offset)) in raw units. (The wavelet-MAD estimate gives ~0 on sparse counts.)"""
    def f(frame: np.ndarray) -> np.ndarray:
        import bm3d

        x = np.asarray(frame, dtype=np.float64)
        sigma = float(np.sqrt(max(gain * (x.mean() - offset), 1e-6)))
        return bm3d.bm3d(x, sigma).astype(np.float32)
    return f


def estimate_gain_offset(frame: np.ndarray) -> tuple[float, float]:
    """Detector gain and offset from one frame's own mean-variance relation (no truth).

    The noise variance of a pixel (from its difference to the mean of its 4 neighbours, whose
    variance is 1.25x the pixel's for independent noise) is fitted against the local mean:
    var = gain * (mean - offset).
    """
    x = np.asarray(frame, dtype=np.float64)
    nb = ndimage.convolve(x, np.array([[0, .25, 0], [.25, 0, .25], [0, .25, 0]]), mode="reflect")
    r2 = (x - nb) ** 2 / 1.25
    mean = ndimage.uniform_filter(x, 5)
    edges = np.quantile(mean, np.linspace(0.05, 0.95, 16))
    idx = np.digitize(mean, edges)
    m, v = [], []
    for b in range(1, len(edges)):
        sel = idx == b
        if sel.sum() > 50:
            m.append(mean[sel].mean())
            v.append(np.median(r2[sel]) / 0.455)  # median of chi2(1) = 0.455 sigma^2: robust to edges
    g, c = np.polyfit(m, v, 1)
    if not g > 0:
        return float(np.mean(v) / max(np.mean(m), 1e-9)), 0.0
    return float(g), float(-c / g)


class ModelDenoiser:
    """An n2a checkpoint through `engines.open_engine` (ONNX Runtime, CPU), input scaling from the
    series being denoised (`noise2atom.scaling.estimate_scaling`, fixed within the series)."""

    def __init__(self, checkpoint: Path, threads: int = 1, *, resample: bool = True) -> None:
        self.checkpoint = Path(checkpoint)
        self.threads = threads
        self.resample = resample  # off for a model fitted on the data: n2a-denoise --fit keeps its sampling
        self._engine = None

    def __enter__(self) -> "ModelDenoiser":
        from engines import open_engine

        self._engine = open_engine(self.checkpoint, backend="onnxruntime", threads=self.threads)
        self._engine.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._engine is not None:
            self._engine.__exit__(*exc)
            self._engine = None

    def for_series(self, frames: np.ndarray, *, ensemble: bool = False, lattice: bool = False):
        """The bundled model as ``n2a-denoise`` runs it on a file: scaling from the frames, and
        the file's zoom (``noise2atom.scaling.series_zoom``: columns to the model's width) fixed
        for all of them; with ``ensemble``, as ``n2a-denoise --ensemble`` (each engine call
        averaged over the frame's orientations, ``noise2atom.ensemble``); with ``lattice``, as
        ``n2a-denoise --lattice-average`` (translations found in the first frame's output)."""
        from noise2atom.ensemble import self_ensemble
        from noise2atom.lattice_average import lattice_average, lattice_offsets
        from noise2atom.scaling import denoise_at_series_zoom, series_zoom, zoom_up_order

        scaling = estimate_scaling(frames)
        engine = self._engine
        pitches = series_zoom(scaling.to_model(np.asarray(frames)))[0] if self.resample else None
        up_order = zoom_up_order(scaling.to_model(np.asarray(frames[0])))

        def infer(x: np.ndarray) -> np.ndarray:
            return self_ensemble(engine.infer, x[None])[0] if ensemble else engine.infer(x[None])[0]

        def denoise(x: np.ndarray) -> np.ndarray:  # model units in and out, zoomed like the series
            return denoise_at_series_zoom(x, pitches, infer, up_order=up_order)

        offsets = lattice_offsets(denoise(scaling.to_model(np.asarray(frames[0])))) if lattice else None

        def f(frame: np.ndarray) -> np.ndarray:
            x = scaling.to_model(np.asarray(frame))
            y = denoise(x)
            y = y if offsets is None else lattice_average(y, x, offsets, denoise=denoise)
            return np.asarray(scaling.to_raw(y), dtype=np.float32)
        return f


def fit_model(frames: np.ndarray, out: Path, *, minutes: float, gain: float | None, offset: float,
              threads: int = 1, quick: bool = False) -> str:
    """``n2a-train --method blindspot`` on ``frames`` (in process); returns the training note."""
    from noise2atom.checkpoint import load_checkpoint

    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.with_suffix(".frames.npy")
    np.save(path, np.asarray(frames, dtype=np.float32))
    argv = [str(path), "--out", str(out), "--method", "blindspot", "--minutes", f"{minutes:g}",
            "--threads", str(threads), "--quiet", "--seed", "0", "--device", "cpu"]
    if gain is not None:
        argv += ["--gain", f"{gain:g}", "--offset", f"{offset:g}"]
    if quick:
        argv += ["--patch", "32"]
    run_n2a_train(argv)
    return f"blindspot {minutes:g} min, {load_checkpoint(out).config.iteration} it"


# --- scoring -------------------------------------------------------------------------------------

def score_series(outputs: np.ndarray, s: Series) -> dict[str, float]:
    """Mean SSIM / PSNR to truth (affine fit onto the truth's [0, 1] scale) and atom F1 over frames."""
    ss, ps, f1 = [], [], []
    for k, (out, clean) in enumerate(zip(outputs, s.clean)):
        lo, hi = float(clean.min()), float(clean.max())
        t = (clean - lo) / (hi - lo)
        fitted = fit_to_truth(out, t)
        ss.append(ssim(fitted, t))
        ps.append(psnr(fitted, t))
        if s.positions is not None:
            found = detect_atoms(out, sigma_px=s.sigma_px)
            f1.append(score_atoms(found, s.positions[k], tol_px=s.tol_px, shape=out.shape,
                                  border_px=max(3.0, 2 * s.sigma_px)).f1)
    return {"ssim": float(np.mean(ss)), "psnr_db": float(np.mean(ps)),
            "f1": float(np.mean(f1)) if f1 else float("nan")}


def not_flat_checks(out: np.ndarray, raw: np.ndarray, smooth_px: float = 1.0) -> dict[str, float]:
    """Checks that need no truth: correlation with the lightly smoothed raw image, and the output's
    std over that smoothed raw's std (outputs in raw units; a flat output gives ~0)."""
    ref = ndimage.gaussian_filter(np.asarray(raw, dtype=np.float64), smooth_px)
    o = np.asarray(out, dtype=np.float64)
    corr = float(np.corrcoef(o.ravel(), ref.ravel())[0, 1]) if o.std() > 0 else 0.0
    rel_std = float(o.std() / ref.std())
    return {"corr_smoothed_raw": corr, "rel_std": rel_std}


def _timed(f, frames: np.ndarray, warmup: bool) -> tuple[np.ndarray, float]:
    if warmup:  # the engine's first call pays its set-up
        f(frames[0])
    t0 = time.perf_counter()
    outs = np.stack([np.asarray(f(x), dtype=np.float32) for x in frames])
    return outs, 1e3 * (time.perf_counter() - t0) / len(frames)


def run_series(s: Series, *, model: ModelDenoiser | None, fitted: Path | None = None, fit_note: str = "",
               bm3d: bool = True, scaling_frames: np.ndarray | None = None, log=print) -> dict:
    """Every method on one series; returns {method: scores} plus the settings used."""
    rows: dict[str, dict] = {}
    frames = s.noisy  # scored: every frame of `s` (the model's scaling may see more: `scaling_frames`)

    def add(key: str, f) -> None:
        outs, ms = _timed(f, frames, warmup=key.startswith("n2a"))
        rows[key] = {**score_series(outs, s), "ms_per_frame": ms}
        log(f"    {key}: SSIM {rows[key]['ssim']:.3f} PSNR {rows[key]['psnr_db']:.1f} F1 {rows[key]['f1']:.3f}")

    add("raw", lambda x: x)
    best = max(GAUSSIAN_SIGMAS, key=lambda g: score_series(
        np.stack([gaussian(g)(x) for x in frames[:2]]), _head(s, 2))["ssim"])
    add("gaussian", gaussian(best))
    rows["gaussian"]["sigma_px"] = best
    if bm3d:
        gain, offset = (s.gain, s.offset) if s.gain is not None else estimate_gain_offset(frames[0])
        add("bm3d", bm3d_plain(gain, offset))
        # counts -> Anscombe -> BM3D with sigma 1 (the stabilised Poisson noise) -> exact unbiased inverse
        add("anscombe_bm3d", Bm3dDenoiser(gain=gain, offset=offset, sigma=1.0))
        rows["anscombe_bm3d"].update(gain=gain, offset=offset)
    seen = frames if scaling_frames is None else scaling_frames  # what the models' scaling reads
    if model is not None:
        add("n2a_bundled", model.for_series(seen))
        add("n2a_ensemble", model.for_series(seen, ensemble=True))
        add("n2a_lattice", model.for_series(seen, lattice=True))
    if fitted is not None:
        with ModelDenoiser(fitted, resample=False) as m:
            add("n2a_fitted", m.for_series(seen))
        rows["n2a_fitted"]["training"] = fit_note
    return rows


def _head(s: Series, n: int) -> Series:
    return _frames(s, slice(0, n))


def _frames(s: Series, sl: slice) -> Series:
    return Series(name=s.name, noisy=s.noisy[sl], clean=s.clean[sl],
                  positions=None if s.positions is None else s.positions[sl],
                  sigma_px=s.sigma_px, tol_px=s.tol_px, gain=s.gain, offset=s.offset, meta=s.meta)


def run_scored(s: Series, n_score: int, **kw) -> dict:
    """Score the last ``n_score`` frames; the models' input scaling sees the whole series."""
    return run_series(_frames(s, slice(-n_score, None)), scaling_frames=s.noisy, **kw)


# --- the cases -----------------------------------------------------------------------------------

def abtem_series(name: str, d: dict, dose: float, *, n_frames: int, crop: int, seed: int) -> Series:
    px_a = float(d["params"]["scan_sampling_A"][0])
    sigma = ABTEM_DETECTOR_SIGMA_A / px_a
    crop = min(crop, *d["field"].shape)
    return drift_series(d["field"], dose=dose, n_frames=n_frames, crop=crop, seed=seed, periodic=True,
                        columns=d["columns"], name=f"abTEM {name}", sigma_px=sigma,
                        tol_px=0.25 * nearest_spacing(d["columns"]))


def mos2_series(field: np.ndarray, dose: float, *, n_frames: int, crop: int, seed: int) -> Series:
    s = drift_series(field, dose=dose, n_frames=n_frames, crop=crop, seed=seed, periodic=False,
                     name="temul MoS2", sigma_px=2.0)
    # No structure file: the reference columns are the ones found on each noise-free frame.
    s.positions = [detect_atoms(c, sigma_px=s.sigma_px) for c in s.clean]
    s.tol_px = 0.25 * nearest_spacing(s.positions[0])
    return s


def tk_pair_series(x: np.ndarray, y: np.ndarray, i: int, crop: int) -> Series:
    sl = np.s_[:crop, :crop]
    clean = y[i][sl][None]
    pos = [detect_atoms(clean[0], sigma_px=2.0)]
    return Series(name=f"tk_r_em pair {i}", noisy=x[i][sl][None], clean=clean, positions=pos, sigma_px=2.0,
                  tol_px=0.25 * nearest_spacing(pos[0]) if len(pos[0]) > 2 else 2.0, gain=None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quality.external", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few-minute run: 2 doses, 4 frames, 64² crops")
    p.add_argument("--model", type=Path, help="n2a checkpoint to score untrained on the data "
                   "(default: noise2atom.checkpoint.default_model_path())")
    p.add_argument("--doses", type=float, nargs="+", default=DOSES, help="mean counts/px")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--score-frames", type=int, default=3,
                   help="the last N frames of each series are scored (BM3D is slow on our shared CPU)")
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--fit-minutes", type=float, default=1.0,
                   help="budget of each model fitted on the data (0: none)")
    p.add_argument("--fit-doses", type=float, nargs="*", default=[0.1, 1.0],
                   help="doses of the abTEM series that get a fitted model")
    p.add_argument("--fit-real", type=int, nargs="*", default=[0, 4],
                   help="indices of the real images that get a fitted model (grid column 4)")
    p.add_argument("--no-bm3d", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--grid", type=Path, default=ROOT / "docs" / "quality-grid-real.png")
    p.add_argument("--data", type=Path, default=SHARED_DATA)
    p.add_argument("--rerender", action="store_true", help="rewrite the .md from --out's .json only")
    args = p.parse_args(argv)
    if args.rerender:
        from bench.quality.external_report import render

        r = json.loads((args.out / "quality-external.json").read_text())
        (args.out / "quality-external.md").write_text(render(r, grid=args.grid))
        return 0
    if args.quick:
        args.doses, args.frames, args.crop, args.score_frames = [0.1, 1.0], 4, 64, 2
        args.fit_minutes = min(args.fit_minutes, 0.1)
        args.fit_doses, args.fit_real = [], [0]
    from noise2atom.checkpoint import default_model_path, model_id

    model_path = args.model or default_model_path()
    if not Path(model_path).exists():
        raise SystemExit(f"no model to score: {model_path} does not exist (pass --model PATH)")
    t0 = time.perf_counter()
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="minutes")
    work = Path(tempfile.mkdtemp(prefix="n2a-external-"))
    results: dict = {"model": str(model_path), "model_id": model_id(model_path), "started": started,
                     "machine": machine(), "argv": argv if argv is not None else sys.argv[1:],
                     "doses": args.doses, "frames": args.frames, "crop": args.crop,
                     "score_frames": args.score_frames, "tables": {}, "real": []}

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:5.0f} s] {msg}", flush=True)

    with ModelDenoiser(Path(model_path)) as model:
        fields = abtem_fields()
        if not fields:
            log("no abTEM fields in bench/data (run python -m bench.quality.abtem_fields srtio3 au_on_c ceo2 gan)")
        for name, d in fields.items():
            about = d["params"]["specimen"] + (HELD_OUT_NOTE if name in HELD_OUT else "")
            table = results["tables"].setdefault(f"abTEM {name}", {"about": about, "doses": {}})
            for i, dose in enumerate(args.doses):
                log(f"abTEM {name}, dose {dose:g}")
                s = abtem_series(name, d, dose, n_frames=args.frames, crop=args.crop, seed=100 + i)
                fitted, note = None, ""
                if args.fit_minutes > 0 and dose in args.fit_doses:
                    fitted = work / f"{name}-{dose:g}.safetensors"
                    note = fit_model(s.noisy, fitted, minutes=args.fit_minutes, gain=1.0, offset=0.0,
                                     quick=args.quick)
                table["doses"][f"{dose:g}"] = run_scored(s, args.score_frames, model=model, fitted=fitted,
                                                         fit_note=note, bm3d=not args.no_bm3d, log=log)
        mos2 = load_temul_mos2(args.data)
        table = results["tables"].setdefault("temul MoS2", {
            "about": "temul-toolkit PRISM MoS2 (noise-free), binned 2x2, Poisson noise added; reference "
                     "columns found on the noise-free frames", "doses": {}})
        for i, dose in enumerate(args.doses):
            log(f"temul MoS2, dose {dose:g}")
            s = mos2_series(mos2, dose, n_frames=args.frames, crop=2 * args.crop, seed=200 + i)
            table["doses"][f"{dose:g}"] = run_scored(s, args.score_frames, model=model, bm3d=not args.no_bm3d,
                                                     log=log)
        x, y = load_tk_pairs(args.data)
        table = results["tables"].setdefault("tk_r_em pairs", {
            "about": "tk_r_em simulated HR-STEM pairs (authors' noise model, dose unknown): one column per "
                     "pair; reference columns found on the clean image; gain/offset for Anscombe estimated "
                     "from the noisy image's mean-variance relation", "doses": {}})
        for i in range(2 if args.quick else x.shape[0]):
            log(f"tk_r_em pair {i}")
            s = tk_pair_series(x, y, i, crop=2 * args.crop)
            table["doses"][f"pair {i}"] = run_series(s, model=model, bm3d=not args.no_bm3d, log=log)
        results["real"] = real_images(args, model, work, log)
    results["elapsed_s"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality-external.json").write_text(json.dumps(results, indent=1, allow_nan=True))
    from bench.quality.external_report import render

    (args.out / "quality-external.md").write_text(render(results, grid=args.grid))
    log(f"wrote {args.out / 'quality-external.md'}")
    return 0


def real_images(args, model: ModelDenoiser, work: Path, log) -> list[dict]:
    """Not-flat checks and the picture grid on the real images (no truth)."""
    from bench.quality.external_report import save_real_grid

    images = load_real_images(args.data)
    if args.quick:
        images = [(n, a[:192, :192], note) for n, a, note in images[:1] + images[-1:]]
    rows, panels = [], []
    for i, (name, img, note) in enumerate(images):
        log(f"real: {name}")
        outs = {"raw": img, f"Gaussian σ {REAL_GAUSSIAN_SIGMA:g}": gaussian(REAL_GAUSSIAN_SIGMA)(img),
                "n2a bundled (no training)": model.for_series(img[None])(img)}
        lattice = {"n2a bundled + lattice average": model.for_series(img[None], lattice=True)(img)}
        fit_note = ""
        if args.fit_minutes > 0 and i in args.fit_real:
            # n2a-train needs >= 2 frames: the image's four quadrants are the training frames.
            h, w = (s // 2 for s in img.shape)
            quads = np.stack([img[r:r + h, c:c + w] for r in (0, h) for c in (0, w)])
            path = work / f"real{i}.safetensors"
            fit_note = fit_model(quads, path, minutes=args.fit_minutes, gain=None, offset=0.0, quick=args.quick)
            with ModelDenoiser(path, resample=False) as m:
                outs["n2a fitted on the image"] = m.for_series(img[None])(img)
        row = {"name": name, "note": note, "shape": list(img.shape), "fit": fit_note,
               "checks": {k: not_flat_checks(v, img) for k, v in (outs | lattice).items() if k != "raw"}}
        for k, c in row["checks"].items():
            log(f"    {k}: corr {c['corr_smoothed_raw']:.3f}, rel std {c['rel_std']:.3f}")
        rows.append(row)
        panels.append((name, outs))
    save_real_grid(panels, args.grid)
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
