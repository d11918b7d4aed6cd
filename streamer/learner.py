"""The learner of ``n2a-stream --learn``: fine-tunes the generator on the series while it streams.

::

    Denoiser ──offer(series, frame in model units)──▶ ring (bounded, never blocks)
                                                          │
    Learner thread: fine-tune a copy (blind-spot loss) ◀──┘  held-out loss on frames it never
    trained on ─▶ better by a margin? ─▶ checkpoint + new engine, built and warmed up here, off
    the hot path ─▶ one-slot ``pending`` ─▶ Denoiser.take_swap() between two frames

The denoise stage never waits for the learner: ``offer`` appends under a lock, ``take_swap``
reads one slot. A new series (another name, shape or acquisition settings) starts a new ring
and, unless told otherwise, goes back to the starting model. A failed round (an exception, NaN
weights, an export error) is counted and reported; the stream goes on with the last good model.
After a swap the learner watches the fidelity flags of the frames the new model made
(:meth:`Learner.observe`) and rolls back to the previous model when they get worse.
"""
from __future__ import annotations

import collections
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .worker import Worker

__all__ = ["LearnConfig", "Learner", "Swap"]

log = logging.getLogger("n2a.stream")


class LearnConfig(BaseModel):
    """Budget and behaviour of the learner (``n2a-stream --learn-*`` options)."""

    model_config = ConfigDict(extra="forbid")

    ring: int = Field(default=24, ge=2, le=10_000, description="recent frames kept for learning")
    min_frames: int = Field(default=4, ge=1, description="frames in the ring before learning starts")
    holdout_every: int = Field(default=4, ge=2, le=100,
                               description="every k-th frame is held out for scoring, never trained on")
    steps_per_round: int = Field(default=30, ge=1, le=100_000,
                                 description="optimiser steps between two swap attempts")
    margin: float = Field(default=0.01, ge=0.0, lt=1.0,
                          description="relative held-out loss improvement needed for a swap")
    threads: int = Field(default=1, ge=1, le=256, description="torch threads for learning")
    patch: int = Field(default=64, ge=16, le=1024)
    batch: int = Field(default=4, ge=1, le=256)
    lr: float = Field(default=2e-4, gt=0, le=1.0)
    revert_on_new_series: bool = Field(default=True, description="a new series goes back to the "
                                       "starting model")
    rollback_frames: int = Field(default=8, ge=1, le=10_000,
                                 description="frames after a swap that are compared with the "
                                             "frames before it (fidelity flags)")
    save: Path | None = Field(default=None, description="write the adapted checkpoint here on exit")


@dataclass
class Swap:
    """A ready engine for the denoiser: already entered and warmed up."""

    engine: Any
    model_id: str
    path: Path
    reason: str  # "improved", "new series", "rollback"


class Learner(Worker):
    """The learning thread; see the module docstring.

    Parameters
    ----------
    checkpoint
        The starting model (warm start).
    open_engine
        ``path -> entered Engine`` with the stream's engine settings (back end, device).
    workdir
        Where candidate checkpoints are written (one file per swap, the last few kept).
    """

    def __init__(self, *, checkpoint: Path, open_engine: Callable[[Path], Any],
                 config: LearnConfig, workdir: Path, stop_event: threading.Event) -> None:
        super().__init__(name="n2a-learn", stop_event=stop_event)
        self.config, self.start_path, self.workdir = config, Path(checkpoint), Path(workdir)
        self._open_engine = open_engine
        self._lock = threading.Lock()
        self._ring: collections.deque[np.ndarray] = collections.deque(maxlen=config.ring)
        self._held: collections.deque[np.ndarray] = collections.deque(
            maxlen=max(2, config.ring // config.holdout_every))
        self._offered = 0
        self._series: tuple | None = None
        self._series_meta: dict[str, Any] = {}
        self._epoch = 0  # bumped on a new series: a round of an old series is thrown away
        self._pending: Swap | None = None
        self._watch: dict[str, Any] | None = None  # rollback watch after a swap
        self.counts = collections.Counter()
        self.last_loss: float | None = None
        self.deployed_loss: float | None = None
        self.last_error: str | None = None
        self.state = "waiting"
        self.deployed_path = self.start_path
        self._previous_path: Path | None = None
        self._rollback_to: Path | None = None
        self._deployed_id: str | None = None
        self._recent: collections.deque[tuple[str, int]] = collections.deque(
            maxlen=4 * config.rollback_frames)  # (model id, flags) of the last published frames

    # ------------------------------------------------------------------ the denoiser's side
    def offer(self, series_key: tuple, frame: np.ndarray, meta: dict[str, Any] | None = None) -> None:
        """Add a frame (model units, (H, W)) of ``series_key``; never blocks for long."""
        with self._lock:
            if series_key != self._series:
                self._ring.clear()
                self._held.clear()
                first = self._series is None
                self._series, self._series_meta = series_key, dict(meta or {})
                self._epoch += 1
                if not first:
                    self.counts["series"] += 1
            self._offered += 1
            (self._held if self._offered % self.config.holdout_every == 0 else self._ring).append(frame)

    def take_swap(self) -> Swap | None:
        """The next engine to use, if one is ready (the caller closes its old engine)."""
        if self._pending is None:
            return None
        with self._lock:
            swap, self._pending = self._pending, None
        return swap

    def observe(self, model_id: str, flags: list[str] | tuple[str, ...]) -> None:
        """The fidelity flags of a published frame and the model that made it (rollback watch)."""
        with self._lock:
            self._recent.append((model_id, len(flags)))
            w = self._watch
            if w is None or model_id != w["new"]:
                return
            w["after"].append(len(flags))
            if len(w["after"]) < self.config.rollback_frames:
                return
            self._watch = None
            before = float(np.mean(w["before"])) if w["before"] else 0.0
            after = float(np.mean(w["after"]))
        if after > before + 0.25 and self._previous_path is not None:
            self.counts["rollbacks"] += 1
            log.warning("n2a-stream: learned model %s raised more fidelity flags than the one "
                        "before it (%.2f vs %.2f per frame): rolling back", w["new"], after, before)
            self._rollback_to = self._previous_path

    def status(self) -> dict[str, Any]:
        """The ``learn`` map of the output headers."""
        with self._lock:
            ring, held = len(self._ring), len(self._held)
        return {"state": self.state, "iterations": int(self.counts["iterations"]),
                "swaps": int(self.counts["swaps"]), "rollbacks": int(self.counts["rollbacks"]),
                "errors": int(self.counts["errors"]),
                "heldout_loss": None if self.last_loss is None else round(self.last_loss, 6),
                "deployed_loss": None if self.deployed_loss is None else round(self.deployed_loss, 6),
                "ring": ring, "heldout": held}

    # ------------------------------------------------------------------ the learning thread
    def _snapshot(self) -> tuple[int, list[np.ndarray], list[np.ndarray], dict[str, Any]]:
        with self._lock:
            return self._epoch, list(self._ring), list(self._held), dict(self._series_meta)

    def work(self) -> None:
        import torch

        from noise2atom.checkpoint import load_generator

        self.workdir.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(self.config.threads)
        try:  # inference keeps priority on a small CPU: this thread runs at a lower priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        self.start_config, start_G = load_generator(self.start_path)
        self._start_state = {k: v.clone() for k, v in start_G.state_dict().items()}
        self._deployed_G = start_G
        tuner = None
        epoch_seen = 0
        while not self.stop_event.is_set():
            epoch, train, held, meta = self._snapshot()
            if epoch != epoch_seen:
                epoch_seen, tuner = epoch, None
                if epoch > 1 and self.config.revert_on_new_series and self.deployed_path != self.start_path:
                    self._deploy(self.start_path, self._start_state, "new series")
            if self._rollback_to is not None:
                path, self._rollback_to = self._rollback_to, None
                self._deploy_file(path, "rollback")
                tuner = None
            if len(train) < self.config.min_frames or not held:
                self.state = "collecting"
                self.stop_event.wait(0.05)
                continue
            try:
                tuner = self._round(tuner, train, held, meta, epoch)
            except Exception as e:  # reported and counted; the stream keeps its last good model
                self.counts["errors"] += 1
                self.last_error = f"{type(e).__name__}: {e}"
                log.warning("n2a-stream: learner round failed (%s); keeping model %s",
                            self.last_error, self.deployed_path.name)
                tuner = None
                self.stop_event.wait(0.5)

    def _round(self, tuner, train, held, meta, epoch):
        from noise2atom.finetune import FineTuner, heldout_loss, improved

        c = self.config
        if tuner is None:
            tuner = FineTuner(self._deployed_G, patch=c.patch, batch=c.batch, lr=c.lr,
                              seed=int(self.counts["rounds"]))
        self.state = "learning"
        for _ in range(c.steps_per_round):
            if self.stop_event.is_set():
                return tuner
            tuner.step(train)
            self.counts["iterations"] += 1
        tuner.check_finite()
        self.counts["rounds"] += 1
        cand = tuner.heldout_loss(held)
        dep = heldout_loss(self._deployed_G, held)
        self.last_loss, self.deployed_loss = cand, dep
        if epoch != self._snapshot()[0]:
            return None  # the series changed during the round: its weights are not for this one
        if improved(cand, dep, c.margin):
            log.info("n2a-stream: learner held-out loss %.5f -> %.5f", dep, cand)
            self._deploy_state(tuner.state_dict(), meta, "improved")
        return tuner

    # ------------------------------------------------------------------ deploying
    def _deploy_state(self, state: dict, meta: dict[str, Any], why: str) -> None:
        from noise2atom.checkpoint import save_checkpoint

        n = int(self.counts["swaps"]) + 1
        data = self.start_config.data.model_copy(update={"meta": dict(meta)})
        config = self.start_config.model_copy(update={
            "iteration": self.start_config.iteration + int(self.counts["iterations"]), "data": data})
        path = save_checkpoint(self.workdir / f"learned-{n:04d}.safetensors", config, state)
        self._deploy(path, state, why)
        old = self.workdir / f"learned-{n - 3:04d}.safetensors"
        if n > 3 and old.exists() and old != self._previous_path:
            old.unlink()  # keep the last few: the deployed one and the one to roll back to

    def _deploy_file(self, path: Path, why: str) -> None:
        from noise2atom.checkpoint import load_generator

        _, G = load_generator(path)
        self._deploy(path, G.state_dict(), why)

    def _deploy(self, path: Path, state: dict, why: str) -> None:
        engine = self._open_engine(path)  # built and warmed up here, off the hot path
        try:
            from noise2atom.checkpoint import model_id
            swap = Swap(engine=engine, model_id=model_id(path), path=path, reason=why)
        except BaseException:
            engine.__exit__(None, None, None)
            raise
        with self._lock:
            stale, self._pending = self._pending, swap
            old_id = self._deployed_id
            before = [n for m, n in self._recent if m == old_id]
            if why == "improved" and old_id is not None:
                self._watch = {"new": swap.model_id, "before": before, "after": []}
            else:
                self._watch = None
        if stale is not None:  # never taken: close it
            stale.engine.__exit__(None, None, None)
        self._deployed_G.load_state_dict(state)
        self._previous_path, self.deployed_path = self.deployed_path, path
        self._deployed_id = swap.model_id
        self.counts["swaps"] += 1
        log.info("n2a-stream: learner swaps in model %s (%s)", swap.model_id, why)

    def set_deployed_id(self, model_id: str) -> None:
        """The id of the model the stream starts with (for the rollback watch)."""
        self._deployed_id = model_id

    def save(self, path: Path) -> Path | None:
        """Copy the deployed (adapted) checkpoint, with the series' acquisition meta, to ``path``."""
        import shutil

        from noise2atom.files import atomic_write

        if self.deployed_path == self.start_path:
            return None
        return atomic_write(path, lambda tmp: shutil.copyfile(self.deployed_path, tmp))
