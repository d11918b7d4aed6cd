"""ShapeGraphCache: per-shape entries, the copy-out contract and the bound, through its CPU fallback
(the same code the CUDA path runs, with an eager call in place of a graph replay), and on CUDA."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import engines
from engines import EngineError
from engines.graph_cache import ShapeGraphCache


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.LeakyReLU(0.1),
                               torch.nn.Conv2d(4, 1, 3, padding=1), torch.nn.Tanh()).eval()


def _fn(net):
    return lambda x: net(x.unsqueeze(1)).squeeze(1)


def _ref(net, batch: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return _fn(net)(torch.from_numpy(batch.copy())).numpy()


def _frames(shape, seed):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def test_a_new_shape_adds_an_entry_and_the_same_shape_reuses_it():
    net = _net()
    cache = ShapeGraphCache(_fn(net), max_shapes=4)
    a, b, c = _frames((1, 16, 16), 1), _frames((1, 16, 16), 2), _frames((2, 16, 24), 3)
    np.testing.assert_allclose(cache(a), _ref(net, a), atol=1e-6)
    assert cache.shapes == [(1, 16, 16)] and cache.captures == 1 and cache.hits == 0
    np.testing.assert_allclose(cache(b), _ref(net, b), atol=1e-6)
    assert cache.shapes == [(1, 16, 16)] and cache.captures == 1 and cache.hits == 1
    np.testing.assert_allclose(cache(c), _ref(net, c), atol=1e-6)
    assert cache.shapes == [(1, 16, 16), (2, 16, 24)] and cache.captures == 2
    assert cache.stats()["shape_entries"] == "2" and cache.stats()["shape_hits"] == "1"


def test_the_returned_array_is_not_overwritten_by_the_next_call():
    net = _net()
    cache = ShapeGraphCache(_fn(net))
    a, b = _frames((1, 32, 32), 4), _frames((1, 32, 32), 5)
    first = cache(a)
    kept = first.copy()
    second = cache(b)  # same shape: the same static buffers are written again
    np.testing.assert_array_equal(first, kept)
    assert not np.shares_memory(first, second)
    np.testing.assert_allclose(second, _ref(net, b), atol=1e-6)
    first[...] = 7.0  # the caller owns it: scribbling on it changes nothing the cache keeps
    np.testing.assert_allclose(cache(b), _ref(net, b), atol=1e-6)


def test_submissions_beyond_the_double_buffer_are_collected_not_lost():
    net = _net()
    cache = ShapeGraphCache(_fn(net))
    frames = [_frames((1, 16, 16), s) for s in range(5)]
    pending = [cache.submit(f) for f in frames]  # five in flight on two slots
    assert pending[0].collected and pending[2].collected  # their slots were reused: copied out first
    for p, f in zip(pending, frames):
        np.testing.assert_allclose(p.result(), _ref(net, f), atol=1e-6)
    assert [p.seq for p in pending] == sorted(p.seq for p in pending)
    assert cache.captures == 1 and cache.hits == 4


def test_the_cache_is_bounded_and_drops_the_least_recently_used_shape():
    net = _net()
    cache = ShapeGraphCache(_fn(net), max_shapes=2)
    a, b, c = _frames((1, 8, 8), 1), _frames((1, 8, 16), 2), _frames((1, 16, 8), 3)
    cache(a)
    pending_b = cache.submit(b)
    cache(a)  # a is now the most recent
    cache(c)  # full: b goes
    assert cache.shapes == [(1, 8, 8), (1, 16, 8)]
    assert cache.evictions == 1 and cache.captures == 3
    np.testing.assert_allclose(pending_b.result(), _ref(net, b), atol=1e-6)  # collected before the drop
    for i in range(6):  # cycling more shapes than it holds never grows it
        cache(_frames((1, 8, 8 + 8 * (i % 3)), 10 + i))
        assert len(cache.shapes) <= 2
    cache.clear()
    assert cache.shapes == []


def test_bad_inputs_and_options_are_errors():
    net = _net()
    with pytest.raises(EngineError, match=r"max_shapes >= 1 \(got 0\)"):
        ShapeGraphCache(_fn(net), max_shapes=0)
    with pytest.raises(EngineError, match=r"CUDA graphs need a CUDA device \(got device 'cpu'\)"):
        ShapeGraphCache(_fn(net), cuda_graph=True)
    cache = ShapeGraphCache(_fn(net))
    with pytest.raises(EngineError, match=r"float32 batch \(got float64\)"):
        cache(np.zeros((1, 8, 8)))
    crop = ShapeGraphCache(lambda x: x[:, :4])
    with pytest.raises(EngineError, match=r"returned torch.float32 \(1, 4, 8\) \(expected torch.float32 \(1, 8, 8\)\)"):
        crop(np.zeros((1, 8, 8), np.float32))


def test_pytorch_engine_runs_through_the_cache_on_the_cpu(lite_checkpoint):
    frames = [_frames((1, 64, 64), s) for s in range(4)] + [_frames((3, 40, 56), 9)]
    with engines.open_engine(lite_checkpoint, "pytorch", device="cpu", max_shapes=2) as pt:
        ref = [pt.infer(f) for f in frames]
        # Pipelined: submit frame n+1 before collecting frame n, as a live loop does.
        got, pending = [], pt.submit(frames[0])
        for f in frames[1:]:
            nxt = pt.submit(f)
            got.append(pending.result())
            pending = nxt
        got.append(pending.result())
        info = pt.describe()
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(r, g)
    assert info["shape_entries"] == "2" and info["shape_hits"] == "8" and info["compiled"] == "False"
    with pytest.raises(EngineError, match=r"max_shapes >= 1 \(got 0\)"):
        engines.open_engine(lite_checkpoint, "pytorch", device="cpu", max_shapes=0)
    with pytest.raises(EngineError, match=r"torch.compile is used on CUDA only \(got device 'cpu'"):
        engines.open_engine(lite_checkpoint, "pytorch", device="cpu", compile=True)


def test_submit_checks_like_infer(lite_checkpoint):
    engine = engines.open_engine(lite_checkpoint, "onnxruntime")
    with pytest.raises(EngineError, match="before it was entered"):
        engine.submit(_frames((1, 8, 8), 0))
    with engine:
        with pytest.raises(EngineError, match=r"rank 3 \(N, H, W\) \(got rank 2"):
            engine.submit(np.zeros((8, 8), np.float32))
        x = _frames((2, 32, 32), 1)
        np.testing.assert_array_equal(engine.submit(x).result(), engine.infer(x))


# -- CUDA ------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_cuda_cache_matches_the_cpu_and_keeps_results(cuda_graph):
    net = _net()
    gpu_net = _net().cuda()
    torch.backends.cudnn.allow_tf32 = False
    cache = ShapeGraphCache(_fn(gpu_net), device="cuda", cuda_graph=cuda_graph, max_shapes=2)
    frames = [_frames((1, 64, 64), s) for s in range(6)] + [_frames((2, 48, 80), 7)]
    pending = [cache.submit(f) for f in frames]
    outs = [p.result() for p in pending]
    for f, o in zip(frames, outs):
        np.testing.assert_allclose(o, _ref(net, f), atol=1e-4)
    again = cache(frames[0])  # a replay after others: earlier results untouched
    np.testing.assert_allclose(outs[0], _ref(net, frames[0]), atol=1e-4)
    np.testing.assert_allclose(again, outs[0], atol=1e-6)
    assert cache.captures == 2 and cache.stats()["graph_captures" if cuda_graph else "shape_entries"] == "2"
    cache.clear()


@pytest.mark.gpu
@pytest.mark.parametrize("size", ["lite", "paper"])
def test_compiled_cuda_graphs_agree_with_the_cpu(checkpoints, size):
    frames = [_frames((1, 128, 128), s) for s in range(3)] + [_frames((2, 96, 160), 5)]
    with engines.open_engine(checkpoints[size], "pytorch", device="cpu") as cpu, \
            engines.open_engine(checkpoints[size], "pytorch", device="cuda", compile=True,
                                cuda_graph=True) as gpu:
        pending = gpu.submit(frames[0])
        for i, f in enumerate(frames):
            nxt = gpu.submit(frames[i + 1]) if i + 1 < len(frames) else None
            assert np.abs(pending.result() - cpu.infer(f)).max() < 1e-4
            pending = nxt
        info = gpu.describe()
    assert info["compiled"] == "True" and info["graph_captures"] == "2"
