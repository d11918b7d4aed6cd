"""Evaluate a checkpoint (default: the bundled model) on freshly simulated low-dose series.

For each dose, a series with a seed no training run used is simulated and scored against its
truth with the quality benchmark's scoring (`bench.quality.scoring`: SSIM/PSNR after a
least-squares affine fit to the truth, atom F1 with the same detector for every method, false
atoms in vacuum):

- ``raw``: the noisy frames;
- ``gaussian (best SSIM)`` / ``gaussian (best F1)``: a Gaussian filter whose sigma was picked
  *with the truth of the scored frames* (the strongest possible Gaussian, for each metric);
- ``model``: the checkpoint's generator (PyTorch, CPU), on frames scaled by
  :func:`noise2atom.scaling.estimate_scaling` of the series (as ``n2a-stream`` does per series).

``--external`` scores on data n2a did not make (``../shared/data``), every input scaled with
:func:`noise2atom.scaling.estimate_scaling` of the image itself (as ``n2a-denoise`` does):

- tk_r_em's simulated HR-STEM pairs (noisy ``x`` / clean ``y``) and temul's noise-free PRISM MoS2
  with Poisson noise added at 0.1, 0.5 and 2 counts/px mean: SSIM to truth (after the affine fit)
  of raw, the best Gaussian (sigma picked with the truth) and each model;
- the real images: std of the output in display units [0, 1] (flat is ~0.0) and its correlation
  with the lightly smoothed raw image (Gaussian sigma 1).

Writes ``bench/results/default_model_eval.md`` (``--external``: ``default_model_external.md``).
Run from the repository root::

    python -m bench.quality.default_model                       # bundled model
    python -m bench.quality.default_model --model m.safetensors --doses 1 0.4
    python -m bench.quality.default_model --external --model new.safetensors --compare old.safetensors
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from bench.harness import RESULTS
from bench.quality.external_data import SHARED_DATA as SHARED
from bench.quality.scoring import DetectorSettings, Scores, score_outputs, ssim_to_truth
from noise2atom.checkpoint import default_model_path, load_generator, model_id
from noise2atom.scaling import MODEL_PITCH_PX, denoise_resampled, estimate_scaling, pitch_resample_factor
from noise2atom.stem_sim import simulate_series

__all__ = ["evaluate", "main"]

SIGMAS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)


def _denoise(generator: torch.nn.Module, config, noisy: np.ndarray) -> tuple[np.ndarray, float]:
    x = torch.from_numpy(estimate_scaling(noisy).to_model(noisy))[:, None]  # per series, as n2a-stream
    with torch.no_grad():
        generator(x[:1])  # warm-up
        t0 = time.perf_counter()
        y = torch.cat([generator(x[i:i + 1]) for i in range(len(x))])
        ms = (time.perf_counter() - t0) * 1e3 / len(x)
    return y[:, 0].numpy(), ms


def evaluate(model: Path, *, dose: float, scene: str, size: int, frames: int, seed: int) -> dict[str, Scores]:
    """Scores of raw, best Gaussians and the model on one fresh series."""
    series = simulate_series(frames, shape=(size, size), scene=scene, peak_counts=dose, seed=seed)
    det = DetectorSettings.from_meta(series.meta)
    noisy = series.noisy.astype(np.float32)
    rows: dict[str, Scores] = {"raw": score_outputs(noisy, series, detector=det)}
    gauss = {s: score_outputs(np.stack([gaussian_filter(f, s) for f in noisy]), series, detector=det)
             for s in SIGMAS}
    best_ssim = max(gauss, key=lambda s: gauss[s].ssim)
    best_f1 = max(gauss, key=lambda s: (gauss[s].f1, gauss[s].ssim))
    rows[f"gaussian (best SSIM, sigma {best_ssim:g})"] = gauss[best_ssim]
    rows[f"gaussian (best F1, sigma {best_f1:g})"] = gauss[best_f1]
    config, generator = load_generator(model)
    out, ms = _denoise(generator, config, series.noisy)
    rows[f"model ({config.method}/{config.size})"] = score_outputs(out, series, detector=det, ms_per_frame=ms)
    return rows


# In CI the clone sits beside shared/; a worktree under /work/wt/NAME has it two levels up.
EXT_SIGMAS = (0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0)


def _run_model(generator: torch.nn.Module, image: np.ndarray, frozen=None) -> np.ndarray:
    """One image through the generator: scaled by its own data (or ``frozen``), display units [0, 1]."""
    norm = frozen or estimate_scaling(image)
    with torch.no_grad():
        y = generator(torch.from_numpy(norm.to_model(image))[None, None])[0, 0].numpy()
    return norm.from_model(y)


def _truth_cases(rng: np.random.Generator) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, noisy, truth in [0, 1]) from the third-party simulations."""
    import h5py

    cases = []
    with h5py.File(SHARED / "simulated" / "tk_r_em_sfr_hrstem_pairs.h5") as f:
        x, y = f["x"][:], f["y"][:]
    for i in range(len(x)):
        t = y[i, 0].T.astype(np.float64)
        cases.append((f"tk_r_em pair {i}", x[i, 0].T.astype(np.float32), (t - t.min()) / np.ptp(t)))
    with h5py.File(SHARED / "simulated" / "temul_MoS2_prismatic_sim.hspy") as f:
        clean = f["Experiments/__unnamed__/data"][:].astype(np.float64)
    clean = (clean - clean.min()) / np.ptp(clean)
    for mean in (0.1, 0.5, 2.0):
        noisy = rng.poisson(clean * (mean / clean.mean())).astype(np.uint16)
        cases.append((f"temul MoS2 {mean:g} counts/px", noisy, clean))
    return cases


def _real_images() -> list[tuple[str, np.ndarray]]:
    import h5py

    out = []
    with h5py.File(SHARED / "real" / "tk_r_em_exp_hrstem.h5") as f:
        x = f["x"][:]
    out += [(f"tk_r_em exp {i}", x[i, 0].T) for i in range(len(x))]
    with h5py.File(SHARED / "real" / "atomap014_SrTiO3_110_ABF.hdf5") as f:
        out.append(("atomap SrTiO3 ABF", f["Experiments/__unnamed__/data"][:].astype(np.float32)))
    return out


def evaluate_external(models: dict[str, Path], *, seed: int = 0) -> str:
    """Markdown tables: SSIM on third-party simulations, flatness on real images."""
    gens = {name: load_generator(p) for name, p in models.items()}
    rng = np.random.default_rng(seed)
    names = [m for n in models for m in (n, n + " + pitch resample")]
    lines = ["| image | raw | best Gaussian (sigma) | " + " | ".join(names) + " |",
             "|---|---|---|" + "---|" * len(names)]
    means = {n: [] for n in ["raw", "gauss", *names]}
    for case, noisy, truth in _truth_cases(rng):
        raw = ssim_to_truth(noisy, truth)
        g = {s: ssim_to_truth(gaussian_filter(noisy.astype(np.float32), s), truth) for s in EXT_SIGMAS}
        bs = max(g, key=g.get)
        sc = {n: ssim_to_truth(_run_model(gen, noisy), truth) for n, (_, gen) in gens.items()}
        f = pitch_resample_factor(noisy)
        for n, (_, gen) in gens.items():
            sc[n + " + pitch resample"] = ssim_to_truth(
                denoise_resampled(noisy, MODEL_PITCH_PX, MODEL_PITCH_PX / f, lambda im: _run_model(gen, im)), truth)
        means["raw"].append(raw)
        means["gauss"].append(g[bs])
        for n in names:
            means[n].append(sc[n])
        lines.append(f"| {case} | {raw:.3f} | {g[bs]:.3f} ({bs:g}) | " + " | ".join(f"{sc[n]:.3f}" for n in names) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{np.mean(means[k]):.3f}**" for k in means) + " |")
    lines += ["", "`+ pitch resample`: a lattice pitch above 30 px (estimated with `noise2atom.prior`) is "
              "brought to 12 px before the network and the output interpolated back "
              "(`noise2atom.scaling.pitch_resample_factor` / `denoise_resampled`).", "", "Real images (no truth): output std in display units [0, 1] / correlation with the raw "
              "image smoothed by a Gaussian of sigma 1.", "",
              "| image | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for case, img in _real_images():
        ref = gaussian_filter(img.astype(np.float64), 1.0).ravel()
        cells = []
        f = pitch_resample_factor(img)
        for n in names:
            gen = gens[n.replace(" + pitch resample", "")][1]
            out = denoise_resampled(img, MODEL_PITCH_PX, MODEL_PITCH_PX / (f if "resample" in n else 1.0),
                                    lambda im: _run_model(gen, im))
            cells.append(f"{out.std():.3f} / {np.corrcoef(out.ravel(), ref)[0, 1]:.3f}")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _table(results: dict[float, dict[str, Scores]]) -> str:
    lines = ["| dose (counts at atom peak) | method | SSIM to truth | PSNR dB | atom F1 | false atoms in vacuum (per frame) | ms/frame (torch CPU) |",
             "|---|---|---|---|---|---|---|"]
    for dose, rows in results.items():
        for name, s in rows.items():
            ms = f"{s.ms_per_frame:.0f}" if np.isfinite(s.ms_per_frame) else "–"
            lines.append(f"| {dose:g} | {name} | {s.ssim:.3f} | {s.psnr_db:.2f} | {s.f1:.3f} | "
                         f"{s.n_false_vacuum:.1f} | {ms} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quality.default_model", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="checkpoint (default: the bundled model)")
    p.add_argument("--doses", type=float, nargs="+", default=[1.0, 0.4])
    p.add_argument("--scene", default="mixed", choices=["mixed", "crystal", "nanoparticle"])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--seed", type=int, default=987654, help="a seed no training run used")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS / "default_model_eval.md")
    p.add_argument("--external", action="store_true",
                   help="score on ../shared/data (third-party simulations and real images) instead")
    p.add_argument("--compare", type=Path, nargs="*", default=[], help="--external: more checkpoints")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = args.model or default_model_path()
    if args.external:
        models = {f"{m.stem} ({model_id(m)})": m for m in [model, *args.compare]}
        text = ("# Default-model evaluation on data n2a did not make\n\nInput scaled by "
                "`estimate_scaling` of each image; SSIM after the affine fit to the truth.\n\n"
                + evaluate_external(models) + "\n")
        print(text)
        out = args.out if args.out != p.get_default("out") else args.out.with_name("default_model_external.md")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        return 0
    results = {d: evaluate(model, dose=d, scene=args.scene, size=args.size, frames=args.frames,
                           seed=args.seed) for d in args.doses}
    text = (f"# Default-model evaluation\n\nModel `{model.name}` (id {model_id(model)}); scene "
            f"{args.scene}, {args.frames} frames of {args.size}², seed {args.seed}; "
            f"{args.threads} torch thread(s).\n\n" + _table(results) + "\n")
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
