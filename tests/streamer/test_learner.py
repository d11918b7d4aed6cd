"""The learner of n2a-stream --learn, on its own: real checkpoints, real ONNX Runtime engines."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from noise2atom.finetune import FineTuner, heldout_loss, improved
from noise2atom.scaling import estimate_scaling
from noise2atom.stem_sim import StemSimulator
from streamer.learner import LearnConfig, Learner


def _frames(n: int, *, peak: float = 2.0, seed: int = 3) -> list[np.ndarray]:
    sim = StemSimulator(shape=(96, 96), scene="crystal", peak_counts=peak, seed=seed)
    raw = np.stack([sim.frame(t).noisy for t in range(n)])
    scale = estimate_scaling(raw)
    return [scale.to_model(f) for f in raw]


def _open(path: Path):
    from engines import open_engine

    engine = open_engine(path, backend="onnxruntime").__enter__()
    engine.infer(np.zeros((1, 96, 96), np.float32))
    return engine


def _wait(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def test_finetuning_lowers_the_heldout_loss_of_a_random_generator(lite_model):
    from noise2atom.checkpoint import load_generator

    frames = _frames(6)
    train, held = frames[:4], frames[4:]
    _, G = load_generator(lite_model)
    before = heldout_loss(G, held)
    tuner = FineTuner(G, patch=48, batch=4, lr=1e-3, seed=0)
    for _ in range(60):
        tuner.step(train)
    after = tuner.heldout_loss(held)
    assert improved(after, before, 0.05), (before, after)
    # the deployed generator is untouched: fine-tuning works on a copy
    assert heldout_loss(G, held) == pytest.approx(before)


def test_learner_swaps_in_a_better_model_and_saves_it(lite_model, tmp_path):
    stop = threading.Event()
    cfg = LearnConfig(ring=12, min_frames=3, steps_per_round=15, lr=1e-3, patch=48,
                      save=tmp_path / "adapted.safetensors")
    learner = Learner(checkpoint=lite_model, open_engine=_open, config=cfg,
                      workdir=tmp_path / "learn", stop_event=stop)
    learner.start()
    try:
        for f in _frames(12):
            learner.offer(("s", (96, 96)), f, {"detector": "HAADF"})
        _wait(lambda: learner.counts["swaps"] >= 1 or learner.error is not None, 240, "a swap")
        swap = learner.take_swap()
        assert swap is not None and swap.reason == "improved"
        try:  # handed over entered and warmed up: the denoiser only calls infer
            out = swap.engine.infer(np.zeros((1, 96, 96), np.float32))
        finally:
            swap.engine.__exit__(None, None, None)
        assert out.shape == (1, 96, 96) and np.isfinite(out).all()
        st = learner.status()
        assert st["swaps"] >= 1 and st["iterations"] >= cfg.steps_per_round
        saved = learner.save(cfg.save)
        from noise2atom.checkpoint import load_checkpoint, model_id

        ck = load_checkpoint(saved)
        assert ck.config.data.meta == {"detector": "HAADF"}
        assert model_id(saved) != model_id(lite_model)
    finally:
        stop.set()
        learner.join(30)
        pending = learner.take_swap()
        if pending is not None:
            pending.engine.__exit__(None, None, None)
    assert not learner.is_alive() and learner.error is None


def test_a_failing_learner_is_counted_and_keeps_running(lite_model, tmp_path):
    calls = []

    def broken_open(path: Path):
        calls.append(path)
        raise RuntimeError("export failed (disk full)")

    stop = threading.Event()
    learner = Learner(checkpoint=lite_model, open_engine=broken_open,
                      config=LearnConfig(ring=8, min_frames=2, steps_per_round=10, lr=1e-3,
                                         patch=48, margin=0.0),
                      workdir=tmp_path / "learn", stop_event=stop)
    learner.start()
    try:
        for f in _frames(8):
            learner.offer(("s", (96, 96)), f)
        _wait(lambda: learner.counts["errors"] >= 1, 240, "a counted learner error")
        assert learner.is_alive() and learner.take_swap() is None
        assert "disk full" in learner.last_error and learner.status()["errors"] >= 1
    finally:
        stop.set()
        learner.join(30)
    assert learner.error is None and calls


def test_a_new_series_clears_the_ring(lite_model, tmp_path):
    learner = Learner(checkpoint=lite_model, open_engine=_open, config=LearnConfig(ring=8),
                      workdir=tmp_path, stop_event=threading.Event())
    for f in _frames(6):
        learner.offer(("a", (96, 96)), f)
    assert learner.status()["ring"] + learner.status()["heldout"] == 6
    learner.offer(("b", (96, 96)), _frames(1)[0])
    assert learner.status()["ring"] + learner.status()["heldout"] == 1
