"""Training the in-series n2a models for the quality benchmark, the way a user would: ``n2a-train``.

The training frames (the series' earlier frames) are written to an ``.npy`` file and
`noise2atom.cli.main` is called in-process with ``--minutes`` (the budget a user has at the
microscope), the detector's gain and offset (for the Poisson blind-spot loss), and
``--estimate-prior`` for the methods with an atom prior (the prior is estimated from the noisy frames,
not taken from the simulator). Snapshots for the training curve continue the same run with
``--resume`` (exact continuation), so minute k's model is the same run as minute k+1's.
Measures nothing itself; the checkpoints go where the caller says (``build/`` by default, not committed).
"""
from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np

__all__ = ["TrainingError", "run_n2a_train", "train_in_series", "train_with_snapshots"]


class TrainingError(RuntimeError):
    """n2a-train failed; the message carries its last lines of output."""


def _argv(method: str, frames_path: Path, out: Path, minutes: float, meta: dict, *, quick: bool,
          threads: int, resume: bool) -> list[str]:
    argv = [str(frames_path), "--out", str(out), "--method", method, "--minutes", f"{minutes:g}",
            "--gain", str(meta["gain_adu_per_count"]), "--offset", str(meta["offset_adu"]),
            "--threads", str(threads), "--quiet", "--seed", "0", "--device", "cpu"]
    if method != "blindspot":
        argv.append("--estimate-prior")
    if quick:
        argv += ["--patch", "32"]
    if resume:
        argv.append("--resume")
    return argv


def run_n2a_train(argv: list[str]) -> str:
    """``n2a-train ARGV`` in this process; returns its stderr, raises `TrainingError` with its last lines."""
    from noise2atom.cli import main as n2a_train

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = n2a_train(argv)
    text = err.getvalue()
    if rc != 0:
        tail = "\n".join(text.strip().splitlines()[-5:])
        raise TrainingError(f"n2a-train {' '.join(argv)} exited with {rc}: {tail}")
    return text


def _iteration(path: Path) -> int:
    from noise2atom.checkpoint import load_checkpoint

    return int(load_checkpoint(path).config.iteration)


def _write_frames(frames: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(frames))
    return path


def train_in_series(*, method: str, frames: np.ndarray, meta: dict, minutes: float, path: Path,
                    reuse: bool = False, quick: bool = False, threads: int = 2) -> str:
    """Train one model on ``frames`` for ``minutes``; return the table's training note.

    Parameters
    ----------
    method : {"noise2atom", "blindspot", "hybrid"}
    frames : np.ndarray
        (T, H, W) raw training frames (detector units).
    meta : dict
        The simulator's acquisition meta (gain and offset are used, as a user knows them).
    minutes : float
        Wall-clock training budget.
    path : Path
        Checkpoint to write.
    reuse : bool
        Keep an existing checkpoint at ``path`` instead of training again; without it, one left by an
        earlier run of the benchmark is replaced (the work folder is the benchmark's own scratch).
    """
    path = Path(path)
    if not (reuse and path.exists()):
        from noise2atom.checkpoint import train_state_path

        for stale in (path, train_state_path(path)):
            stale.unlink(missing_ok=True)
        frames_path = _write_frames(frames, path.with_suffix(".frames.npy"))
        run_n2a_train(_argv(method, frames_path, path, minutes, meta, quick=quick, threads=threads, resume=False))
    return f"{minutes:g} min, {_iteration(path)} it"


def train_with_snapshots(*, method: str, frames: np.ndarray, meta: dict, step_minutes: float, steps: int,
                         workdir: Path, threads: int = 2, log=print) -> list[tuple[float, int, Path]]:
    """One training run, saved every ``step_minutes``: ``[(minutes so far, iteration, snapshot path)]``."""
    workdir = Path(workdir)
    frames_path = _write_frames(frames, workdir / "frames.npy")
    live = workdir / f"{method}.safetensors"
    from noise2atom.checkpoint import train_state_path

    for stale in (live, train_state_path(live)):
        stale.unlink(missing_ok=True)
    snaps = []
    for k in range(1, steps + 1):
        run_n2a_train(_argv(method, frames_path, live, step_minutes, meta, quick=False, threads=threads,
                        resume=k > 1))
        snap = workdir / f"{method}-{k * step_minutes:g}min.safetensors"
        shutil.copyfile(live, snap)
        it = _iteration(snap)
        snaps.append((k * step_minutes, it, snap))
        log(f"  {method}: {k * step_minutes:g} min, iteration {it}")
    return snaps
