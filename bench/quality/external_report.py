"""Markdown tables and the real-image grid for `bench.quality.external` (which says where they go:
bench/results/quality-external.md and docs/quality-grid-real.png by default). Measures nothing itself."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from bench.harness import RESULTS

__all__ = ["render", "save_real_grid"]

LABELS = {
    "raw": "raw",
    "gaussian": "Gaussian (best σ, searched against the truth)",
    "bm3d": "BM3D (σ from the data)",
    "anscombe_bm3d": "Anscombe + BM3D",
    "n2a_bundled": "n2a bundled model, no training on the data",
    "n2a_ensemble": "n2a bundled model, self-ensemble of 8 (`n2a-denoise --ensemble`)",
    "n2a_lattice": "n2a bundled model + lattice average (`n2a-denoise --lattice-average`)",
    "n2a_fitted": "n2a fitted on the series (blindspot)",
}
BASELINES = ("gaussian", "bm3d", "anscombe_bm3d")


def _fmt(v: float, digits: int) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _table(doses: dict, metric: str, digits: int) -> list[str]:
    cols = list(doses)
    keys = [k for k in LABELS if any(k in doses[c] for c in cols)]
    out = ["| method | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for k in keys:
        out.append(f"| {LABELS[k]} | " + " | ".join(_fmt(doses[c].get(k, {}).get(metric), digits)
                                                  for c in cols) + " |")
    for key, label in (("n2a_bundled", "bundled"), ("n2a_ensemble", "self-ensemble"),
                       ("n2a_lattice", "bundled + lattice average")):
        if key not in keys:
            continue
        diff = []
        for c in cols:
            base = [doses[c][b][metric] for b in BASELINES if b in doses[c] and not math.isnan(doses[c][b][metric])]
            diff.append(_fmt(doses[c][key][metric] - max(base), digits) if base and key in doses[c] else "–")
        out.append(f"| **{label} − best of Gaussian/BM3D/Anscombe+BM3D** | " + " | ".join(diff) + " |")
    return out


def render(r: dict, grid: Path) -> str:
    rel_grid = os.path.relpath(grid, RESULTS)
    lines = [
        "# Denoising quality on material n2a did not make",
        "",
        f"- Date (UTC): {r['started']}; run time {r['elapsed_s'] / 60:.0f} min; "
        f"command `python -m bench.quality.external {' '.join(r['argv'])}`.",
        f"- Machine: {r['machine']}.",
        f"- Model scored without training on the data: `{r['model']}` (model id {r['model_id']}); input "
        "scaling from each series itself (`noise2atom.scaling.estimate_scaling` over the series' frames, or "
        "the one image) and, as `n2a-denoise` does, each series zoomed so its columns' estimated width "
        "is the model's 1.25 px (`noise2atom.scaling.series_zoom`, within ×0.5–2; no zoom where no lattice "
        "is trusted; where a lattice is trusted but its width cannot be fitted, its pitch brought up to 12 px, "
        "by at most ×2) and back, through `engines.open_engine` with ONNX Runtime on CPU. The model fitted on "
        "the data runs at the data's own sampling (as `n2a-denoise --fit`). The *lattice average* row is the "
        "same output averaged over the lattice's own translations (`n2a-denoise --lattice-average`, "
        "`noise2atom.lattice_average`; translations found in the series' first output), a step that assumes "
        "what repeats is the specimen: its cost to vacancies and edges is in `lattice-average-cpu.md`.",
        f"- Series: {r['frames']} frames each ({r['crop']}² for abTEM, {2 * r['crop']}² crops for temul MoS2 and "
        f"tk_r_em; the last {r['score_frames']} scored, the models' input scaling from all), sub-pixel "
        "drift between frames (shift + crop), independent "
        f"Poisson noise per frame at a mean of {', '.join(f'{d:g}' for d in r['doses'])} counts/px.",
        "- SSIM / PSNR: each output is put on the truth's scale (truth min-max to [0, 1]) by a least-squares "
        "affine fit, then compared (SSIM Gaussian window σ 1.5, data range 1); mean over the frames.",
        "- Gaussian: its σ searched against the **truth** of the series (first two frames) over "
        "0.5–5 px — an upper bound for a Gaussian filter, which a user without truth cannot reach. "
        "BM3D (`bm3d` package, default profile): on the raw values with one global σ = the Poisson std of "
        "the frame's mean, sqrt(gain · (mean − offset)); Anscombe + BM3D: counts (gain 1, offset 0 for the "
        "Poisson series; for tk_r_em estimated from the noisy image's own mean–variance relation, no truth) → "
        "Anscombe → BM3D with σ 1 → exact unbiased inverse (Mäkitalo–Foi).",
        "- Atom F1: `noise2atom.metrics.detect_atoms` on each output (same settings for all methods), "
        "`score_atoms` against the true columns (abTEM: projected from the structure; temul MoS2 and tk_r_em: "
        "found on the noise-free image), tolerance a quarter of the nearest column spacing, edge excluded.",
        "",
    ]
    fields = _abtem_fields()
    for name, t in r["tables"].items():
        lines += [f"## {name}", "", t["about"] + _field_note(name, fields), ""]
        for metric, title, digits in (("ssim", "SSIM to truth", 3), ("psnr_db", "PSNR to truth (dB)", 1),
                                      ("f1", "atom F1", 3)):
            lines += [f"**{title}** (columns: mean counts/px)" if not name.startswith("tk_") else f"**{title}**",
                      "", *_table(t["doses"], metric, digits), ""]
        fits = {c: v["n2a_fitted"]["training"] for c, v in t["doses"].items() if "n2a_fitted" in v}
        if fits:
            lines += ["Fitted models: " + "; ".join(f"dose {c}: {n}" for c, n in fits.items()) + ".", ""]
        g = {c: v["gaussian"]["sigma_px"] for c, v in t["doses"].items()}
        lines += ["Gaussian σ chosen (px): " + ", ".join(f"{c}: {s:g}" for c, s in g.items()) + ".", ""]
    lines += ["## Real images (no truth)", "",
              "Not-flat checks: `corr` = correlation of the output with the raw image smoothed by a Gaussian of "
              "σ 1 px; `rel std` = the output's std over that smoothed raw's std, both in raw units (a flat output "
              "gives about 0; a denoiser that removes the noise left after σ 1 smoothing gives a little under 1). "
              "Gaussian σ fixed at 1.5 px (no truth to search).", "",
              f"![real images: raw, Gaussian, bundled model, model fitted on the image]({rel_grid})", "",
              "| image | method | corr | rel std |", "|---|---|---:|---:|"]
    for row in r["real"]:
        for k, c in row["checks"].items():
            lines.append(f"| {row['name']} | {k} | {c['corr_smoothed_raw']:.3f} | {c['rel_std']:.3f} |")
    fits = [f"{row['name']}: {row['fit']}" for row in r["real"] if row["fit"]]
    if fits:
        lines += ["", "Fitted on the image (its four quadrants as the training frames): " + "; ".join(fits) + "."]
    return "\n".join(lines) + "\n"


def _abtem_fields() -> dict:
    from bench.quality.external_data import abtem_fields

    return abtem_fields()


def _configs_text(n: int) -> str:
    """A single configuration is one thermal snapshot, not the image a microscope records."""
    if n == 1:
        return "1 frozen-phonon configuration (a thermal snapshot: each cell differs a little)"
    return f"the mean of {n} frozen-phonon configurations (the thermal average a microscope records)"


def _field_note(table: str, fields: dict) -> str:
    """Simulation parameters and the brightest column's counts per unit of mean dose."""
    d = fields.get(table.removeprefix("abTEM "))
    if d is None:
        return ""
    p, f = d["params"], d["field"]
    return (f". abTEM {p['abtem']}, {p['energy_eV'] / 1e3:g} kV, {p['semiangle_mrad']:g} mrad probe, HAADF "
            f"{p['detector_mrad'][0]:g}–{p['detector_mrad'][1]:g} mrad, PRISM interpolation "
            f"{p['prism_interpolation']}, {_configs_text(p['frozen_phonon_configs'])}, potential "
            f"grid {p['potential_sampling_A']:g} Å, {p['scan_sampling_A'][0]:.3f} Å/px, field "
            f"{f.shape[0]}×{f.shape[1]} (`bench/data/`, {p['seconds'] / 60:.0f} min wall clock, "
            f"{p['threads']} thread{'s' if p['threads'] > 1 else ''} on the shared machine). "
            f"The brightest pixel gets {f.max() / f.mean():.0f}× the mean dose: at 0.1 counts/px mean, about "
            f"{0.1 * f.max() / f.mean():.1f} counts at the brightest column's peak.")


def _show(a: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(a, (0.5, 99.5))
    return np.clip((a - lo) / (hi - lo if hi > lo else 1.0), 0, 1)


def save_real_grid(panels: list[tuple[str, dict]], path: Path, crop: int = 256) -> None:
    """One row per image (a central crop), columns raw | Gaussian | bundled | fitted (blank if none)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["raw", None, "n2a bundled (no training)", "n2a fitted on the image"]
    fig, axes = plt.subplots(len(panels), 4, figsize=(10, 2.6 * len(panels)), squeeze=False)
    for r, (name, outs) in enumerate(panels):
        keys = list(outs)
        gauss = next(k for k in keys if k.startswith("Gaussian"))
        h, w = outs["raw"].shape
        c = min(crop, h, w)
        sl = np.s_[(h - c) // 2:(h - c) // 2 + c, (w - c) // 2:(w - c) // 2 + c]
        for j, key in enumerate(cols):
            key = key or gauss
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if key in outs:
                ax.imshow(_show(outs[key][sl]), cmap="gray", vmin=0, vmax=1)
            else:
                ax.text(0.5, 0.5, "not fitted", ha="center", va="center", transform=ax.transAxes)
            if r == 0:
                ax.set_title(key, fontsize=9)
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    from PIL import Image

    Image.open(path).convert("L").save(path, optimize=True)  # grey images: a third of the RGBA size
