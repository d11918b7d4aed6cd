"""``n2a-denoise``: denoise recorded frame files into float32 TIFF stacks.

::

    n2a-denoise INPUT... [--model MODEL] --out OUT [--engine auto|pytorch|onnxruntime|tensorrt]
                [--device cpu|cuda[:N]] [--precision fp32|fp16|bf16] [--threads N]
                [--batch N] [--units display|raw] [--no-resample] [--ensemble] [--lattice-average]
                [--overwrite]

The engine settings are an `engines.EngineConfig` (same defaults as ``n2a-stream`` and the plan
builder); the one used goes into each output's metadata (``n2a.engine_config``).

Each input (TIFF, npy, HDF5; DM3/DM4/EMD/SER with the ``io`` extra) is scaled with limits taken
from the file's own frames (:func:`noise2atom.scaling.estimate_scaling`, any dtype, offset or
gain; the checkpoint's training ``normalisation`` only says how far the input is from what the
model was trained on), denoised in batches, and written as a float32 TIFF stack with the source's
metadata plus an ``n2a`` entry (model id, engine, units, the scaling used, the fidelity flags).
Each file is also zoomed so its atom columns' estimated width suits the model
(:func:`noise2atom.scaling.series_zoom` on its first frames, fixed for the file), denoised, and
zoomed back to its own shape; the zoom is in the summary line and the metadata (``n2a.resample``:
1.0 where no lattice is trusted, None with ``--no-resample`` or ``--fit``, whose model is fitted to
the file at its own sampling). One input: ``OUT`` is the output file. Several inputs: ``OUT`` is
a folder and each ``a.tif`` becomes ``OUT/a.denoised.tif``.

``--ensemble`` runs the model on the 8 flips and rotations of each frame (4 flips of a
non-square one) and averages them back (:mod:`noise2atom.ensemble`): a little closer to the truth,
for 8 (4) times the engine time; ``n2a.ensemble`` in the metadata says how many.

``--lattice-average`` then denoises each frame a second time from the raw frame averaged over the
lattice's own translations, and averages that output with its copies shifted by them
(:mod:`noise2atom.lattice_average`, found once per file in its first denoised frame), changing
pixels by about the noise at most: closer to the truth on perfect crystals at 0.1-2 counts/px, at
some cost to vacancies and edges at high dose, for one more engine call per frame;
``n2a.lattice_average`` in the metadata lists the translations (empty: no lattice found, frames
unchanged).

Every frame goes through the fidelity guard (:mod:`noise2atom.guard`): clipped input, flat output,
structure in the residual, input out of the model's training range. Any flag is reported in the
summary on a line that starts with ``warning:``, so a blank output never passes for a good one
behind a perfect CSS.

Units: by default the output is in the model's display units, [0, 1] (``(y + 1) / 2``), the
units the viewer shows; ``--units raw`` maps back to the input's detector units through the
file's scaling limits (``lo + (y + 1) / 2 * (hi - lo)``).

Nothing is overwritten without ``--overwrite`` (every output is checked before any work starts),
and each stack is written through a temporary file, so an interrupted run leaves no half-written
output. Bad input: a one-line error and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ..config import EngineConfig

__all__ = ["main"]

EXIT_USAGE = 2


class _UsageError(Exception):
    """A problem with the command line or its files: printed as one line, exit 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="n2a-denoise",
        description="Denoise recorded STEM frame files with an n2a model (writes float32 TIFF stacks).",
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                   help="frame files: .tif/.tiff, .npy, .h5 (file.h5:/dataset), .dm3/.dm4/.emd/.ser")
    p.add_argument("--model", type=Path, default=None,
                   help="checkpoint (default: the bundled model, or $N2A_MODEL)")
    p.add_argument("--out", type=Path, required=True,
                   help="output .tif for one input; a folder for several")
    EngineConfig.add_arguments(p)
    p.add_argument("--batch", type=int, default=4, help="frames per engine call (default 4)")
    p.add_argument("--units", choices=("display", "raw"), default="display",
                   help="display: [0, 1] (default); raw: the input's detector units")
    p.add_argument("--no-resample", dest="resample", action="store_false",
                   help="denoise at the file's own sampling (default: zoom each file so its atom "
                        "columns' estimated width suits the model, denoise, zoom back)")
    p.add_argument("--ensemble", action="store_true",
                   help="average the model over the 8 flips and rotations of each frame (4 flips when "
                        "it is not square): +0.001-0.013 SSIM on abTEM crystals, 8x (4x) the engine time")
    p.add_argument("--lattice-average", action="store_true",
                   help="denoise each frame a second time from the raw frame averaged over its "
                        "lattice's translations, then average that output with its copies one "
                        "lattice translation away, changing pixels by about the noise at most "
                        "(noise2atom.lattice_average): closer to the truth on perfect crystals at "
                        "low dose, at some cost to vacancies and edges at high dose")
    p.add_argument("--fit", action="store_true",
                   help="first fine-tune the model on the inputs themselves (self-supervised "
                        "blind-spot loss; a held-back stripe of rows scores it), then denoise")
    p.add_argument("--minutes", type=float, default=2.0,
                   help="--fit: wall-clock budget in minutes (default 2)")
    p.add_argument("--fit-save", type=Path, default=None,
                   help="--fit: also keep the fitted checkpoint here")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _outputs(inputs: list[Path], out: Path) -> list[Path]:
    if len(inputs) == 1 and out.suffix.lower() in (".tif", ".tiff"):
        return [out]
    if out.suffix.lower() in (".tif", ".tiff"):
        raise _UsageError(f"--out must be a folder when several inputs are given (got file {out} for {len(inputs)} inputs)")
    names = [Path(str(i).split(":")[0]).stem + ".denoised.tif" for i in inputs]
    if len(set(names)) != len(names):
        raise _UsageError(f"inputs would overwrite each other's output in {out} (got duplicate names {names})")
    return [out / n for n in names]


def _check_plan(inputs: list[Path], outputs: list[Path], overwrite: bool, batch: int) -> None:
    if batch < 1:
        raise _UsageError(f"--batch must be >= 1 (got {batch})")
    for path in inputs:
        # file.h5:/group/dataset names a dataset inside an HDF5 file
        if not path.exists() and not Path(str(path).rsplit(":", 1)[0]).is_file():
            raise _UsageError(f"input not found: {path} (expected an existing frame file)")
    for path in outputs:
        if path.exists() and not overwrite:
            raise _UsageError(f"output exists: {path} (pass --overwrite to replace it)")
        if path.parent.exists() and not path.parent.is_dir():
            raise _UsageError(f"output folder is a file: {path.parent}")


def _denoise_file(engine, stack, norm, batch: int, units: str, progress, guard,
                  pitches=None, ensemble: bool = False,
                  lattice: bool = False) -> tuple[np.ndarray, list[list[str]], np.ndarray | None]:
    """Denoise a stack (zoomed by ``pitches`` for :func:`noise2atom.scaling.denoise_resampled`,
    one frame per engine call, when given; each call averaged over the frame's orientations with
    ``ensemble``; with ``lattice``, each frame averaged over the lattice translations found in the
    first one); returns the output, each frame's guard flags and the translations (None: not asked)."""
    from noise2atom.ensemble import self_ensemble
    from noise2atom.lattice_average import lattice_average, lattice_offsets
    from noise2atom.scaling import denoise_at_series_zoom, zoom_up_order

    def infer(x: np.ndarray) -> np.ndarray:
        return self_ensemble(engine.infer, x) if ensemble else engine.infer(x)

    frames = stack.frames
    up_order = zoom_up_order(norm.to_model(frames[0])) if pitches is not None else 3  # fixed for the file
    out = np.empty(frames.shape, np.float32)
    flags: list[list[str]] = []
    offsets = None

    def one(x: np.ndarray) -> np.ndarray:  # one frame in model units, zoomed like the file
        return denoise_at_series_zoom(x, pitches, lambda a: infer(a[None])[0], up_order=up_order)

    for start in range(0, len(frames), batch):
        chunk = np.ascontiguousarray(norm.to_model(frames[start:start + batch]), dtype=np.float32)
        y = infer(chunk) if pitches is None else np.stack([one(x) for x in chunk])
        if lattice:
            offsets = lattice_offsets(y[0]) if offsets is None else offsets  # fixed for the file
            y = np.stack([lattice_average(d, x, offsets, denoise=one) for d, x in zip(y, chunk)])
        display = norm.from_model(y)
        flags.extend(guard.check(raw, den) for raw, den in zip(frames[start:start + len(y)], display))
        out[start:start + len(y)] = display if units == "display" else norm.to_raw(y)
        progress.update(len(y))
    return out, flags, offsets


def _resampling(norm, frames: np.ndarray, args: argparse.Namespace):
    """``(pitches, zoom)`` for this file: estimated on its first frames, fixed for all of them;
    ``(None, None)`` with ``--no-resample`` and with ``--fit`` (the model is fitted to the file at
    its own sampling)."""
    from noise2atom.scaling import series_zoom

    if not args.resample or args.fit:
        return None, None
    return series_zoom(norm.to_model(frames[:8]))


def _resample_text(zoom: float | None, args: argparse.Namespace) -> str:
    if zoom is None:
        return "not resampled (--fit)" if args.resample else "not resampled (--no-resample)"
    return f"resampled x{zoom:.3f}" if zoom != 1.0 else "resample x1 (no lattice trusted, or already suited)"


def _lattice_text(offsets: np.ndarray | None) -> str:
    if offsets is None:
        return ""
    if len(offsets) == 0:
        return "; lattice average: no lattice found, not applied"
    return f"; lattice average over {len(offsets)} translations"


def _ensemble_count(stack, args: argparse.Namespace) -> int:
    """Orientations averaged per frame (noise2atom.ensemble); 1: the model once."""
    from noise2atom.ensemble import ensemble_size

    return ensemble_size(stack.frames.shape) if args.ensemble else 1


def _warning_line(src: Path, flags: list[list[str]]) -> str | None:
    """``warning: ...`` naming each flag and on how many frames it was raised (None: no flags)."""
    counts: dict[str, int] = {}
    for frame_flags in flags:
        for f in frame_flags:
            counts[f] = counts.get(f, 0) + 1
    if not counts:
        return None
    what = ", ".join(f"{name} on {n}/{len(flags)} frames" for name, n in counts.items())
    return f"warning: {src}: {what} (see noise2atom/guard.py; CSS alone cannot be trusted here)"


def _css_line(raw: np.ndarray, denoised: np.ndarray) -> str:
    from noise2atom.metrics import css

    if len(raw) < 2:
        return "CSS n/a (one frame)"
    c_raw, c_out = css(raw), css(denoised)
    return f"CSS raw {c_raw.mean():.3f} -> denoised {c_out.mean():.3f} (mean over {len(c_raw)} pairs)"


def _fit_rows(inputs: list[Path]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each input frame in model units, split into rows to train on and a held-back stripe."""
    from noise2atom.io import FrameReadError, read_frames
    from noise2atom.scaling import estimate_scaling

    train, held = [], []
    for src in inputs:
        try:
            frames = read_frames(src).frames
            norm = estimate_scaling(frames)
        except (FrameReadError, ValueError) as e:
            raise _UsageError(f"{src}: cannot fit on it: {e}") from e
        for f in frames:
            x = norm.to_model(f)
            cut = int(x.shape[0] * 0.85)  # a stripe of whole rows held back: scan noise is row-wise
            if cut < 16 or x.shape[0] - cut < 8 or x.shape[1] < 16:
                raise _UsageError(f"{src}: frames of {x.shape[0]}x{x.shape[1]} are too small to fit "
                                  f"on (expected at least 64x16)")
            train.append(x[:cut])
            held.append(x[cut:])
    return train, held


def _fit(model: Path, inputs: list[Path], minutes: float, workdir: Path) -> Path:
    """Fine-tune ``model`` on the inputs (blind-spot); return the fitted checkpoint, or ``model``
    itself when the held-out loss did not improve."""
    import torch

    from noise2atom.checkpoint import load_generator, save_checkpoint
    from noise2atom.finetune import FineTuner, heldout_loss, improved

    train, held = _fit_rows(inputs)
    config, G = load_generator(model)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    side = min(128, *(h.shape[0] for h in held), *(h.shape[1] for h in held))
    before = heldout_loss(G, held, side=side)
    tuner = FineTuner(G, patch=min(64, *(t.shape[0] for t in train)) // 8 * 8, batch=8, lr=5e-4)
    end = time.monotonic() + minutes * 60
    while time.monotonic() < end:
        tuner.step(train)
    tuner.check_finite()
    after = tuner.heldout_loss(held, side=side)
    print(f"n2a-denoise: fit {tuner.iterations} iterations in {minutes:g} min; held-out "
          f"blind-spot loss {before:.5f} -> {after:.5f}", file=sys.stderr)
    if not improved(after, before, 0.0):
        print("n2a-denoise: warning: the fit did not lower the held-out loss; denoising with the "
              "model as given", file=sys.stderr)
        return model
    config = config.model_copy(update={"iteration": config.iteration + tuner.iterations})
    return save_checkpoint(workdir / "fitted.safetensors", config, tuner.state_dict())


def _model(args: argparse.Namespace) -> Path:
    """The checkpoint to run: ``--model``, else the bundled one; fitted first with ``--fit``."""
    import atexit
    import shutil
    import tempfile

    from noise2atom.checkpoint import default_model_path

    model = args.model
    if model is None:
        model = default_model_path()
        if not model.is_file():
            raise _UsageError(f"no --model given and the bundled default model is missing (expected {model})")
    if not args.fit:
        return model
    if args.minutes <= 0:
        raise _UsageError(f"--minutes must be > 0 (got {args.minutes})")
    workdir = Path(tempfile.mkdtemp(prefix="n2a-fit-"))
    atexit.register(shutil.rmtree, workdir, True)
    fitted = _fit(model, args.inputs, args.minutes, workdir)
    if args.fit_save is not None and fitted != model:
        shutil.copyfile(fitted, args.fit_save)
        print(f"n2a-denoise: fitted model written to {args.fit_save}", file=sys.stderr)
    return fitted


def _open(model: Path, config: EngineConfig):
    from noise2atom.checkpoint import CheckpointError

    import engines

    try:
        return engines.open_engine(model, config)
    except (CheckpointError, engines.EngineError) as e:
        raise _UsageError(str(e)) from e


def _n2a_meta(stack, info: dict, engine, args: argparse.Namespace, norm, training, flags,
              pitches, zoom, offsets) -> dict:
    """The ``n2a`` entry of an output's metadata: what made it and how."""
    return {
        "source": stack.source,
        "model": info["model"],
        "engine": info,
        "engine_config": engine.engine_config.model_dump(mode="json"),
        "units": "display [0, 1]" if args.units == "display" else "raw detector units",
        "normalisation": norm.model_dump(),
        # the zoom the frames were denoised at (1.0: their own sampling; None: --no-resample/--fit)
        "resample": zoom,
        "resample_pitch_px": None if pitches is None else {"lattice": pitches[0], "denoised_at": pitches[1]},
        "ensemble": _ensemble_count(stack, args),
        # the (dy, dx) translations each frame was averaged over; None: --lattice-average not given
        "lattice_average": None if offsets is None else np.round(offsets, 3).tolist(),
        "training_normalisation": training.normalisation.model_dump(),
        "flags": sorted({f for frame_flags in flags for f in frame_flags}),
        "flags_per_frame": flags,
    }


def _denoise_one(engine, info: dict, training, src: Path, dst: Path, args: argparse.Namespace) -> None:
    """Read, scale, denoise, check, write and report one input file."""
    from tqdm import tqdm

    from noise2atom.guard import FidelityGuard
    from noise2atom.io import FrameReadError, read_frames, write_stack
    from noise2atom.scaling import estimate_scaling

    import engines

    try:
        stack = read_frames(src)
    except FrameReadError as e:
        raise _UsageError(str(e)) from e
    try:
        norm = estimate_scaling(stack.frames)
    except ValueError as e:
        raise _UsageError(f"{src}: cannot scale its frames: {e}") from e
    guard = FidelityGuard(norm, dtype=stack.frames.dtype, reference=training)
    t0 = time.perf_counter()
    pitches, zoom = _resampling(norm, stack.frames, args)
    with tqdm(total=len(stack.frames), unit="frame", desc=src.name, disable=args.quiet,
              file=sys.stderr) as progress:
        try:
            denoised, flags, offsets = _denoise_file(engine, stack, norm, args.batch, args.units, progress,
                                                     guard, pitches, ensemble=args.ensemble,
                                                     lattice=args.lattice_average)
        except engines.EngineError as e:
            raise _UsageError(f"{src}: {e}") from e
    seconds = time.perf_counter() - t0
    meta = dict(stack.meta)
    meta["n2a"] = _n2a_meta(stack, info, engine, args, norm, training, flags, pitches, zoom, offsets)
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_stack(dst, denoised, meta=meta, overwrite=args.overwrite)
    fps = len(denoised) / seconds if seconds > 0 else float("inf")
    # Raw CSS on the frames as the model sees them (clipped to the file's scaling limits),
    # so hot pixels do not squash the raw sequence's min-max mapping.
    raw_seen = norm.from_model(norm.to_model(stack.frames))
    n = _ensemble_count(stack, args)
    print(f"{src} -> {dst}: {len(denoised)} frames {denoised.shape[1]}x{denoised.shape[2]}, "
          f"{fps:.2f} frames/s; {_resample_text(zoom, args)}{f'; self-ensemble of {n}' if n > 1 else ''}"
          f"{_lattice_text(offsets)}; "
          f"{_css_line(raw_seen, denoised)}")
    warning = _warning_line(src, flags)
    if warning is not None:
        print(warning)


def run(args: argparse.Namespace) -> int:
    """Do the work for parsed arguments; raises `_UsageError` for the user's mistakes."""
    from noise2atom.guard import TrainingRange

    import engines

    outputs = _outputs(args.inputs, args.out)
    _check_plan(args.inputs, outputs, args.overwrite, args.batch)
    try:
        config = EngineConfig.from_arguments(args)
    except engines.EngineError as e:
        raise _UsageError(str(e)) from e
    engine = _open(_model(args), config)
    training = TrainingRange.from_config(engine.config)
    with engine:
        info = engine.describe()
        print(f"n2a-denoise: {info['backend']} on {info['device']} ({info['precision']}), model {info['model']}",
              file=sys.stderr)
        if "selected" in info:  # --engine auto: which back end and why not the faster ones
            print(f"n2a-denoise: {info['selected']}", file=sys.stderr)
        for src, dst in zip(args.inputs, outputs):
            _denoise_one(engine, info, training, src, dst, args)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``n2a-denoise``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except _UsageError as e:
        print(f"n2a-denoise: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except FileExistsError as e:  # an output appeared while we worked
        print(f"n2a-denoise: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("n2a-denoise: interrupted; no partial output was left", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
