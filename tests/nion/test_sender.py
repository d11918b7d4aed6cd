"""The plug-in's Swift-free parts: the bounded sender, the receiver, the settings; real sockets."""
from __future__ import annotations


import numpy as np
import pytest
import zmq

from nionswift_plugin.n2a_live import settings_from_env
from nionswift_plugin.n2a_live.receiver import OutputReceiver
from nionswift_plugin.n2a_live.sender import ScanFrameSender
from stream_testutils import PATIENCE, probe_until, wait_until


def _frame(i: int) -> np.ndarray:
    return np.full((16, 16), i, dtype=np.uint16)


def test_a_full_ring_drops_the_oldest_and_counts_every_frame(zmq_context):
    sender = ScanFrameSender(address="tcp://127.0.0.1:0", context=zmq_context, max_queue=4)
    # Not started: nothing takes frames out, so the ring fills; offer never waits.
    results = [sender.offer(_frame(i), series="s", seq=i, t_acq_ns=i) for i in range(20)]
    assert results == [True] * 4 + [False] * 16
    assert sender.queued == 4 and sender.dropped["queue_full"] == 16
    sender.start()  # nobody subscribed: the four left are counted, not sent into the void
    try:
        wait_until(lambda: sender.queued == 0 and sender.dropped["no_receiver"] == 4, PATIENCE,
                   "the worker to account for the queued frames")
    finally:
        sender.close()
    assert sender.sent == 0 and sender.dropped_total == 20 and sender.offered == 20


def test_push_without_a_peer_does_not_block_and_counts(zmq_context):
    sender = ScanFrameSender(address="tcp://127.0.0.1:0", pattern="push", context=zmq_context,
                         max_queue=2, send_timeout_s=0.2).start()
    try:
        for i in range(50):
            sender.offer(_frame(i), series="s", seq=i, t_acq_ns=i)
        wait_until(lambda: sender.queued == 0 and sender.dropped_total == 50, PATIENCE,
                   "every frame to be counted as not sent")
    finally:
        sender.close()
    assert sender.sent == 0
    assert sender.dropped["send_timeout"] + sender.dropped["queue_full"] == 50
    assert sender.dropped["send_timeout"] >= 1


def test_sent_frames_arrive_in_order_bit_exact_with_meta(zmq_context):
    from streamer.protocol import decode

    sender = ScanFrameSender(address="tcp://127.0.0.1:0", context=zmq_context, max_queue=64).start()
    sub = zmq_context.socket(zmq.SUB)
    sub.linger = 0
    sub.subscribe(b"")
    sub.connect(sender.endpoint)
    got = []

    def arrived() -> bool:
        while sub.poll(0):
            got.append(decode(sub.recv_multipart()))
        return sender.subscribers >= 1

    try:
        wait_until(arrived, PATIENCE, "the subscription to reach the sender")
        frames = [np.arange(256 * 256, dtype=np.float32).reshape(256, 256) + i for i in range(5)]
        for i, f in enumerate(frames):
            sender.offer(f, series="swift-x-1", seq=10 + i, t_acq_ns=i,
                         meta={"pixel_size_nm": 0.39, "detector": "HAADF"})
        wait_until(lambda: arrived() and len([m for m in got if m.type == "frame"]) == 5,
                   PATIENCE, "five frames")
    finally:
        sender.close()
        sub.close(0)
    assert [m.type for m in got] == ["start"] + ["frame"] * 5  # one start opens the series
    out = [m for m in got if m.type == "frame"]
    assert [m.seq for m in out] == [10, 11, 12, 13, 14]
    for m, f in zip(out, frames):
        np.testing.assert_array_equal(m.frame, f)
        assert m.meta == {"pixel_size_nm": 0.39, "detector": "HAADF"}
    assert sender.dropped_total == 0 and sender.sent == 5


def test_a_frame_that_does_not_encode_is_counted_and_the_sender_goes_on(zmq_context):
    sender = ScanFrameSender(address="tcp://127.0.0.1:0", pattern="push", context=zmq_context)
    sender.start()
    pull = zmq_context.socket(zmq.PULL)
    pull.linger = 0
    pull.connect(sender.endpoint)
    try:
        sender.offer(np.zeros((8, 8), np.uint16), series="s", seq=0, t_acq_ns=0,
                     meta={"nested": {"no": 1}})
        probe_until(lambda: sender.offer(_frame(1), series="s", seq=1, t_acq_ns=1),
                    lambda: pull.poll(0), PATIENCE, "a good frame after the bad one")
    finally:
        sender.close()
        pull.close(0)
    assert sender.dropped["encode"] == 1
    assert "meta must be a flat map" in sender.last_error


def test_the_receiver_counts_what_does_not_decode_and_passes_frames_on(zmq_context):
    from streamer.protocol import encode_frame

    pub = zmq_context.socket(zmq.PUB)
    pub.linger = 0
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    got = []
    rx = OutputReceiver(address=f"tcp://127.0.0.1:{port}", on_frame=got.append,
                        context=zmq_context).start()
    try:
        probe_until(lambda: pub.send_multipart(encode_frame(_frame(0), seq=0, series="s",
                                                            t_acq_ns=0)),
                    lambda: bool(got), PATIENCE, "a frame through the receiver")
        pub.send_multipart([b"not msgpack \xc1"])
        wait_until(lambda: sum(rx.rejected.values()) == 1, PATIENCE, "the garbage to be counted")
    finally:
        rx.close()
        pub.close(0)
    assert got[0].seq == 0 and rx.received >= 1
    assert rx.last_error and "(got" in rx.last_error


def test_settings_from_the_environment():
    s = settings_from_env({})
    assert (s["address"], s["pattern"], s["output"], s["max_queue"], s["enabled"]) == \
        ("tcp://127.0.0.1:5555", "pub", "tcp://127.0.0.1:5556", 8, True)
    assert settings_from_env({"N2A_LIVE": "0"})["enabled"] is False
    with pytest.raises(ValueError, match=r"N2A_LIVE_PATTERN must be 'pub' or 'push' \(got 'sub'\)"):
        settings_from_env({"N2A_LIVE_PATTERN": "sub"})


def test_bind_failure_is_an_error_that_names_the_address(zmq_context):
    first = ScanFrameSender(address="tcp://127.0.0.1:0", context=zmq_context).start()
    try:
        with pytest.raises(OSError, match=r"cannot bind tcp://127.0.0.1:\d+ \(got "):
            ScanFrameSender(address=first.endpoint, context=zmq_context).start()
    finally:
        first.close()


@pytest.mark.parametrize("module", ["nionswift_plugin.n2a_live", "nionswift_plugin.n2a_live.meta"])
def test_doctests(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0, result


def test_push_to_n2a_stream_pull_block_loses_nothing(zmq_context):
    """The lossless pairing docs/nion.md recommends: N2A_LIVE_PATTERN=push, --pattern pull."""
    from nion_testutils import BUNDLED_MODEL
    from stream_testutils import Collector
    from streamer.pipeline import Stream

    sender = ScanFrameSender(address="tcp://127.0.0.1:0", pattern="push", context=zmq_context,
                         max_queue=64).start()
    stream = Stream(source=sender.endpoint, model=BUNDLED_MODEL, engine="onnxruntime",
                    pattern="pull", policy="block").start()
    col = Collector(_Sockets(zmq_context), stream.out_endpoint)
    frames = [np.random.default_rng(i).poisson(3.0, (64, 64)).astype(np.uint16) for i in range(40)]
    try:
        wait_until(lambda: stream.subscriptions >= 1, PATIENCE, "the test to join the stream")
        # Until the PULL peer is connected PUSH has nowhere to send: probe until one gets through.
        probe_until(lambda: sender.offer(frames[0], series="probe", seq=0, t_acq_ns=0),
                    lambda: len(col.frames) > 0, PATIENCE, "a first frame through n2a-stream")
        dropped_before = sender.dropped_total
        for i, f in enumerate(frames):
            sender.offer(f, series="swift-x-1", seq=i, t_acq_ns=i, meta={"detector": "HAADF"})
            wait_until(lambda: sender.queued < 32, PATIENCE, "room in the ring")  # pace, no drop
        col.wait_for(lambda: len([m for m in col.frames if m.series.startswith("swift-x-1")])
                     == 40, PATIENCE, "40 denoised frames")
    finally:
        col.stop()
        col.sock.close(0)
        stream.stop()
        sender.close()
    out = [m for m in col.frames if m.series.startswith("swift-x-1")]
    assert [m.seq for m in out] == list(range(40))
    for m, f in zip(out, frames):
        np.testing.assert_array_equal(m.arrays["raw"], f)
    assert sender.dropped_total == dropped_before and out[-1].header["dropped"] == 0


class _Sockets:
    def __init__(self, context) -> None:
        self.context = context

    def make(self, kind):
        s = self.context.socket(kind)
        s.linger = 0
        return s
