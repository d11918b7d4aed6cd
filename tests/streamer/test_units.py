"""Small parts of the streamer: queues and their policies, meta comparison, stats, doctests."""
from __future__ import annotations

import doctest
import importlib
import threading

import pytest

from streamer.meta import compare_meta
from streamer.queues import FrameQueue
from streamer.stats import LatencyWindow, RateLimitedLog


@pytest.mark.parametrize("module", ["streamer.protocol", "streamer.recorder", "streamer.stats",
                                    "streamer.queues", "streamer.meta"])
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def test_latest_policy_drops_oldest_frames_but_never_markers():
    q = FrameQueue(maxsize=2, policy="latest", is_droppable=lambda i: isinstance(i, int))
    assert q.put("start", marker=True) is None
    assert [q.put(i) for i in range(4)] == [None, None, 0, 1]
    assert [q.get(timeout=0) for _ in range(3)] == ["start", 2, 3]
    assert q.get(timeout=0.01) is None


def test_block_policy_waits_for_room_and_times_out():
    q = FrameQueue(maxsize=1, policy="block")
    q.put(1)
    with pytest.raises(TimeoutError):
        q.put(2, timeout=0.05)
    errors = []

    def put() -> None:
        try:
            q.put(2, timeout=60)
        except BaseException as e:  # noqa: BLE001 - asserted on below
            errors.append(e)

    putter = threading.Thread(target=put, daemon=True)
    putter.start()
    # While the queue is full the put cannot finish: item 2 is not in the queue whatever the
    # machine's speed (a put that did not wait would have added or dropped something).
    putter.join(0.2)
    assert putter.is_alive() and len(q) == 1
    assert q.get(timeout=0) == 1  # room: now the waiting put goes through
    putter.join(60)
    assert not putter.is_alive() and errors == []
    assert q.drain() == [2]


@pytest.mark.parametrize(("kwargs", "match"), [({"maxsize": 0, "policy": "latest"}, r"got 0"),
                                               ({"maxsize": 1, "policy": "fifo"}, r"got 'fifo'")])
def test_queue_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FrameQueue(**kwargs)


@pytest.mark.parametrize(
    ("series", "model", "expected"),
    [
        ({"pixel_size_nm": 0.025}, {"pixel_size_nm": 0.0251}, []),  # within 1 %
        ({"pixel_size_nm": 0.025}, {"pixel_size_nm": 0.03}, ["pixel_size_nm"]),
        ({"detector": "BF"}, {"detector": "HAADF"}, ["detector"]),
        ({"seed": 1, "shape": [64, 64]}, {"seed": 2, "shape": [256, 256]}, []),  # bookkeeping
        ({"peak_counts": 3.0}, {"peak_counts": [0.4, 1.0, 2.0]}, ["peak_counts"]),
        ({"peak_counts": 0.5}, {"peak_counts": [0.4, 1.0, 2.0]}, []),
        ({"detector": "BF"}, {"detector": ["HAADF", "BF"]}, []),
        ({"dwell_time_us": "1.0"}, {"dwell_time_us": 1.0}, ["dwell_time_us"]),
        ({}, {"pixel_size_nm": 1.0}, []),
        ({"only_here": 1}, {"only_there": 2}, []),
    ],
)
def test_compare_meta(series, model, expected):
    assert compare_meta(series, model) == expected


def test_latency_window_is_bounded_and_mean_counts_everything():
    w = LatencyWindow(maxlen=3)
    for v in (1, 2, 3, 100):
        w.add(v * 1_000_000)
    assert w.percentile_ms(0) == 2.0 and w.count == 4 and w.mean_ms() == pytest.approx(26.5)


def test_rate_limited_log_suppresses_and_reports(caplog):
    import logging

    # An interval no test run outlasts, then none at all: no sleeping, no race with the clock.
    rl = RateLimitedLog(logging.getLogger("n2a.test"), interval_s=3600)
    with caplog.at_level(logging.WARNING, logger="n2a.test"):
        for _ in range(5):
            rl.warning("k", "bad thing")
        rl.warning("other", "another thing")  # each key has its own interval
        rl.interval_s = 0.0  # the interval has passed
        rl.warning("k", "bad thing")
    assert [r.getMessage() for r in caplog.records] == [
        "bad thing", "another thing", "bad thing (4 more like it suppressed)"]
