"""Evaluate a checkpoint (default: the bundled model) on freshly simulated low-dose series.

For each dose, a series with a seed no training run used is simulated and scored against its
truth with the quality benchmark's scoring (`bench.quality_scoring`: SSIM/PSNR after a
least-squares affine fit to the truth, atom F1 with the same detector for every method, false
atoms in vacuum):

- ``raw``: the noisy frames;
- ``gaussian (best SSIM)`` / ``gaussian (best F1)``: a Gaussian filter whose sigma was picked
  *with the truth of the scored frames* (the strongest possible Gaussian, for each metric);
- ``model``: the checkpoint's generator (PyTorch, CPU), on frames normalised with the
  checkpoint's own limits.

Run from the repository root::

    .venv/bin/python bench/eval_default_model.py                       # bundled model
    .venv/bin/python bench/eval_default_model.py --model m.safetensors --doses 1 0.4
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/eval_default_model.py` from a clean checkout
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

from bench.quality_scoring import DetectorSettings, Scores, score_outputs  # noqa: E402
from noise2atom.checkpoint import default_model_path, load_generator, model_id  # noqa: E402
from noise2atom.stem_sim import simulate_series  # noqa: E402

__all__ = ["evaluate", "main"]

SIGMAS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)


def _denoise(generator: torch.nn.Module, config, noisy: np.ndarray) -> tuple[np.ndarray, float]:
    x = torch.from_numpy(config.normalisation.to_model(noisy))[:, None]
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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="checkpoint (default: the bundled model)")
    p.add_argument("--doses", type=float, nargs="+", default=[1.0, 0.4])
    p.add_argument("--scene", default="mixed", choices=["mixed", "crystal", "nanoparticle"])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--seed", type=int, default=987654, help="a seed no training run used")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "default_model_eval.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = args.model or default_model_path()
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
