"""``n2a-train``: train a denoising generator on frame files or on simulated frames.

Examples::

    n2a-train series.tif --out model.safetensors --method blindspot --minutes 10
    n2a-train a.h5:/data b.h5:/data --out m.safetensors --method noise2atom --estimate-prior
    n2a-train --simulate --sim-peak-counts 1 --out m.safetensors --iterations 2000
    n2a-train one_image.dm4 --out m.safetensors --minutes 5     # one frame: bottom 15 % of rows validate
    n2a-train series.tif --out model.safetensors --resume --iterations 4000
    n2a-train --mixture --method supervised --out models/default.safetensors --minutes 20

Bad input ends with one line on stderr (``n2a-train: error: ...``) and exit code 2.
Ctrl-C saves a checkpoint (a consistent snapshot) and exits with code 130;
``--resume`` continues from it exactly.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence, get_args

from noise2atom.stem_sim import SCENES
from noise2atom.train_options import GeneratorSize

__all__ = ["main", "build_parser"]

PROG = "n2a-train"

class UsageError(Exception):
    """Bad input: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Train an n2a denoising generator (Noise2Atom, blind-spot or hybrid).")
    _add_run_args(p)
    _add_method_args(p)
    _add_data_source_args(p)
    return p


def _add_run_args(p: argparse.ArgumentParser) -> None:
    """Frames, output, method, budget and the run's housekeeping."""
    p.add_argument("frames", nargs="*", metavar="FRAMES",
                   help="frame files: TIFF stacks, .npy, HDF5 (file.h5:/dataset), DM3/DM4/EMD/SER")
    p.add_argument("--out", required=True, type=Path, help="checkpoint to write (.safetensors)")
    p.add_argument("--method", choices=["noise2atom", "blindspot", "hybrid", "supervised"],
                   default="blindspot", help="training method (default: blindspot, the winner of our "
                   "quality benchmark; supervised: only with --mixture, which has a truth)")
    p.add_argument("--model", choices=get_args(GeneratorSize), default="lite",
                   help="generator size (lite-residual: the lite U-Net predicting a correction to its input; "
                        "lite-dilated: that with its bottom convolutions dilated, the bundled model)")
    p.add_argument("--iterations", type=int, help="total iterations to reach (also across --resume)")
    p.add_argument("--minutes", type=float, help="wall-clock budget of this run")
    p.add_argument("--patch", type=int, help="patch side (default 128 for noise2atom/hybrid as the "
                   "authors, 64 for blindspot)")
    p.add_argument("--batch", type=int, help="batch size (default 3 for noise2atom/hybrid, 16 for blindspot)")
    p.add_argument("--lr", type=float, help="learning rate (default 5e-5 RMSprop GAN methods, 1e-3 Adam blindspot); with --resume it replaces the saved one")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--resume", action="store_true", help="continue from --out and its .train.pt file")
    p.add_argument("--init", type=Path, metavar="CHECKPOINT",
                   help="start from this checkpoint's weights (same --model; a fresh optimiser): a fine-tune")
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="save a running average of the weights (decay per iteration, e.g. 0.999) as the model "
                        "instead of the last weights (0: off)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out model (without it, an existing one is an error)")
    p.add_argument("--preview-every", type=int, default=0, metavar="N",
                   help="write <out>.preview.png (noisy | denoised) every N iterations")
    p.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                   help="save the checkpoint every N iterations (always at the end and on Ctrl-C)")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="also keep each --checkpoint-every checkpoint as <out stem>.it<N>.safetensors "
                        "(to choose one, or average them with python -m noise2atom.average)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--dataset", help="HDF5 dataset path for all FRAMES")
    p.add_argument("--val-fraction", type=float, default=None, metavar="F",
                   help="hold back a stripe of this fraction of the rows (at least one patch) of every "
                        "frame for validation (default: 0.15 for a single frame, else none)")
    p.add_argument("--percentiles", type=float, nargs=2, default=(0.1, 99.9), metavar=("LO", "HI"),
                   help="intensity percentiles mapped to -1 and +1 (default 0.1 99.9)")


def _add_method_args(p: argparse.ArgumentParser) -> None:
    """The losses of each method and the target-domain simulator."""
    g = p.add_argument_group("Noise2Atom losses")
    g.add_argument("--critic-steps", type=int, default=5)
    g.add_argument("--gp-weight", type=float, default=10.0)
    g.add_argument("--fidelity-weight", type=float, default=1.0, help="hybrid: weight of the blind-spot term")
    g = p.add_argument_group("blind-spot training")
    g.add_argument("--bs-loss", choices=["auto", "poisson", "mse"], default="auto",
                   help="auto: poisson when the detector gain/offset are known, else mse")
    g.add_argument("--bs-spacing", type=int, default=8, help="one masked pixel per NxN cell")
    g.add_argument("--bs-half-width", type=int, default=2,
                   help="hide this many row neighbours each side of a masked pixel (scan-correlated noise)")
    g.add_argument("--gain", type=float, help="detector units per count (poisson loss)")
    g.add_argument("--offset", type=float, help="detector dark offset in its units (poisson loss)")
    g = p.add_argument_group("target-domain simulator (noise2atom, hybrid)")
    g.add_argument("--pitch", type=float, help="lattice pitch in px (authors: 8)")
    g.add_argument("--sigma-min", type=float, help="smallest blob std in px")
    g.add_argument("--sigma-max", type=float, help="largest blob std in px")
    g.add_argument("--occupancy", type=float, help="fraction of lattice sites occupied")
    g.add_argument("--mode", choices=["lattice", "cluster"], help="random lattice or compact clusters")
    g.add_argument("--rotation", type=float, help="lattice rotation in degrees")
    g.add_argument("--estimate-prior", action="store_true",
                   help="estimate pitch and blob width from the frames, report and use them")


def _add_data_source_args(p: argparse.ArgumentParser) -> None:
    """--simulate and --mixture: training frames that n2a makes itself."""
    g = p.add_argument_group("--simulate: train on the STEM series simulator instead of files")
    g.add_argument("--simulate", action="store_true")
    g.add_argument("--sim-size", type=int, default=256, help="frame side")
    g.add_argument("--sim-frames", type=int, default=40)
    g.add_argument("--sim-peak-counts", type=float, nargs="+", default=[1.0], metavar="COUNTS",
                   help="counts at a full atom's peak; several values: one series per dose "
                        "(seeds --sim-seed, --sim-seed + 1, ...)")
    g.add_argument("--sim-scene", choices=SCENES, default="mixed")
    g.add_argument("--sim-pitch", type=float, default=8.0, help="simulated lattice pitch in px")
    g.add_argument("--sim-sigma", type=float, default=1.6, help="simulated probe blur (blob std) in px")
    g.add_argument("--sim-seed", type=int, default=0)
    g = p.add_argument_group("--mixture: train on random microscopes (noise2atom.mixture), the bundled model")
    g.add_argument("--mixture", action="store_true")
    g.add_argument("--mixture-series", type=int, default=192, help="series in the bank (each refreshed over time)")


def _prior(args: argparse.Namespace, data, log) -> Any:
    """The target prior: defaults, then --estimate-prior, then explicit flags (which win)."""
    from noise2atom.target_sim import TargetPrior

    values: dict[str, Any] = {}
    if args.estimate_prior:
        from noise2atom.prior import estimate_prior

        try:
            est = estimate_prior(data.stacks[0])
        except ValueError as e:  # PriorEstimateError is a ValueError
            raise UsageError(f"--estimate-prior failed: {e}") from e
        log(f"{PROG}: estimated prior from the frames: pitch {est.pitch_px:.2f} px, blob std "
            f"{est.sigma_px:.2f} px, rotation {est.rotation_deg:.1f} deg (peak ratio "
            f"{est.peak_ratio:.1f}, {est.n_orders} orders)")
        if not est.reliable:
            log(f"{PROG}: warning: the estimate is unreliable (no clear lattice found); "
                "check it, or give --pitch/--sigma-min/--sigma-max")
        values.update(est.target_prior_kwargs())
    default = TargetPrior()
    if args.pitch is not None:
        values["pitch_px"] = args.pitch
    if args.sigma_min is not None or args.sigma_max is not None:
        lo, hi = values.get("sigma_px", default.sigma_px)
        values["sigma_px"] = (args.sigma_min if args.sigma_min is not None else lo,
                              args.sigma_max if args.sigma_max is not None else hi)
    if args.occupancy is not None:
        values["occupancy"] = args.occupancy
    if args.mode is not None:
        values["mode"] = args.mode
    if args.rotation is not None:
        values["rotation_deg"] = (args.rotation, args.rotation)
    try:
        prior = TargetPrior(**values)
    except ValueError as e:
        raise UsageError(f"invalid target-simulator parameters: {e}".replace("\n", " ")) from e
    log(f"{PROG}: target prior {prior.model_dump(mode='json')}")
    return prior


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731

    gan = args.method in ("noise2atom", "hybrid")
    patch = args.patch or (128 if gan else 64)
    batch = args.batch or (3 if gan else 16)
    _check_args(args, patch)
    device = _torch_device(args)
    data = _training_data(args, patch, log)
    prior = _prior(args, data, log) if gan else None
    trainer = _trainer(args, data, prior, device=device, patch=patch, batch=batch, log=log)
    t0 = time.perf_counter()
    result = trainer.run(args.out, progress=not args.quiet, log=log)
    return _report(args, result, time.perf_counter() - t0, log)


def _check_args(args: argparse.Namespace, patch: int) -> None:
    """The checks that need no data and no torch: a budget, the --out policy, one data source."""
    if args.iterations is None and args.minutes is None:
        raise UsageError("give --iterations N or --minutes M (got neither)")
    if not args.resume and not args.overwrite and args.out.exists():
        raise UsageError(f"--out {args.out} exists: pass --overwrite to replace it or --resume to "
                         f"continue training it (got an existing file)")
    if bool(args.frames) + bool(args.simulate) + bool(args.mixture) != 1:
        raise UsageError("give one of FRAMES files, --simulate or --mixture "
                         f"(got {len(args.frames)} files, --simulate={args.simulate}, --mixture={args.mixture})")
    if patch < 16 or patch % 8:
        raise UsageError(f"--patch must be a multiple of 8, at least 16 (got {patch})")
    if (args.gain is None) != (args.offset is None):
        raise UsageError("give both --gain and --offset, or neither")
    if args.init is not None and args.resume:
        raise UsageError("give --init (start a new run from its weights) or --resume (continue --out), not both")
    if args.init is not None and not args.init.is_file():
        raise UsageError(f"--init {args.init}: no such checkpoint file")
    if not 0 <= args.ema < 1:
        raise UsageError(f"--ema must be in [0, 1) (got {args.ema:g})")


def _torch_device(args: argparse.Namespace) -> str:
    """Set torch's CPU threads and resolve ``--device`` (``auto``: cuda when there is one)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise UsageError(f"--device must be cpu, cuda or cuda:N (got {device!r})") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA GPU is available (got torch {torch.__version__}, "
                         "CUDA unavailable)")
    return device


def _training_data(args: argparse.Namespace, patch: int, log) -> Any:
    """The frames to train on (files, --simulate or --mixture), with the validation stripe held back."""
    from noise2atom.train_data import TrainingDataError

    try:
        data = _load_data(args, patch)
        val_fraction = args.val_fraction
        if val_fraction is None:
            val_fraction = 0.15 if data.n_frames == 1 else 0.0
        if val_fraction and not hasattr(data, "hold_back"):
            raise TrainingDataError(f"--val-fraction applies to frame files and --simulate, not to "
                                    f"--mixture (got --val-fraction {val_fraction})")
        if val_fraction:
            data.hold_back(val_fraction, patch)
            log(f"{PROG}: held back the bottom {data.val_rows} rows of every frame for validation")
    except TrainingDataError as e:
        raise UsageError(str(e)) from e
    except ValueError as e:  # simulator parameter checks
        raise UsageError(str(e)) from e
    n = data.normalisation
    scaling = ("each series scaled by estimate_scaling of its own frames" if args.mixture else
               f"intensity limits lo={n.lo:g} hi={n.hi:g} (percentiles {args.percentiles[0]:g}/"
               f"{args.percentiles[1]:g})")
    log(f"{PROG}: {data.n_frames} frames from {', '.join(data.sources)}; {scaling}")
    return data


def _load_data(args: argparse.Namespace, patch: int) -> Any:
    """Read or simulate the training frames (raises TrainingDataError or ValueError)."""
    from noise2atom.train_data import TrainingDataError, load_training_data, simulated_training_data

    counts = (args.gain, args.offset) if args.gain is not None else None
    if args.mixture:
        from noise2atom.mixture import MixtureData

        return MixtureData(n_series=args.mixture_series, size=args.sim_size, seed=args.sim_seed)
    if args.simulate:
        if args.sim_size < patch:
            raise TrainingDataError(f"--sim-size {args.sim_size} is smaller than the {patch}x{patch} "
                                    "patch (got a smaller frame)")
        data = simulated_training_data(
            n_frames=args.sim_frames, size=args.sim_size, scene=args.sim_scene,
            peak_counts=tuple(args.sim_peak_counts), seed=args.sim_seed, patch=patch,
            percentiles=tuple(args.percentiles), pitch_px=args.sim_pitch, sigma_px=args.sim_sigma)
        if counts is not None:
            data.counts = counts
        return data
    return load_training_data(args.frames, patch=patch, dataset=args.dataset,
                              percentiles=tuple(args.percentiles), counts=counts)


def _trainer(args: argparse.Namespace, data, prior, *, device: str, patch: int, batch: int, log) -> Any:
    """A Trainer with the options from the flags, resumed from --out when --resume is given."""
    from noise2atom.train import ResumeError, TrainOptions, Trainer

    try:
        options = TrainOptions(
            method=args.method, size=args.model, iterations=args.iterations, minutes=args.minutes,
            patch=patch, batch=batch, seed=args.seed, device=device, lr=args.lr,
            critic_steps=args.critic_steps, gp_weight=args.gp_weight,
            fidelity_weight=args.fidelity_weight, bs_loss=args.bs_loss, bs_spacing=args.bs_spacing,
            bs_half_width=args.bs_half_width, preview_every=args.preview_every,
            checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
            init=None if args.init is None else str(args.init), ema=args.ema)
        trainer = Trainer(options=options, data=data, prior=prior)
    except ValueError as e:
        raise UsageError(str(e).replace("\n", " ")) from e
    if args.resume:
        try:
            trainer.resume(args.out)
        except ResumeError as e:
            raise UsageError(str(e)) from e
        log(f"{PROG}: resumed {args.out} at iteration {trainer.iteration}")
    if args.method in ("blindspot", "hybrid"):
        log(f"{PROG}: blind-spot loss {trainer.bs_loss}"
            + (f" (gain {data.counts[0]:g}, offset {data.counts[1]:g})" if trainer.bs_loss == "poisson" else ""))
    return trainer


def _report(args: argparse.Namespace, result, wall: float, log) -> int:
    """Log the run's summary; the exit code (130 when Ctrl-C stopped it)."""
    last = result.losses[-min(len(result.losses), 50):]
    summary = ", ".join(f"{k} {sum(r[k] for r in last) / len(last):.4g}" for k in last[-1]) if last else "-"
    log(f"{PROG}: {args.method}/{args.model}: iteration {result.iteration} "
        f"({len(result.losses)} this run in {wall:.1f} s, {result.its_per_s:.2f} it/s); "
        f"mean of last {len(last)}: {summary}"
        + (f"; validation bs {result.val_loss:.4g}" if result.val_loss is not None else "")
        + f"; wrote {args.out}")
    if result.interrupted:
        log(f"{PROG}: interrupted; checkpoint saved at iteration {result.iteration} (continue with --resume)")
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code (2 for bad input)."""
    try:
        return _run(argv)
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
