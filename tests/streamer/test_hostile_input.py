"""Frames a scan program may send that used to stop n2a-stream (issue 10, items 2, 3, 5, 7).

Real loopback sockets, a real ``Stream`` with a real ONNX Runtime engine. Each hostile message is
followed by a good frame of a fresh series: the good frame must come out, the hostile one must be
counted under its reason (or processed), and the stream must still be running.
"""
from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest
import zmq

from stream_testutils import Collector, make_lite_checkpoint, wait_until
from streamer.pipeline import Stream
from streamer.net import send_message
from streamer.protocol import encode_frame

ENGINE = "onnxruntime"
_names = iter(range(10**9))


def _frame(shape=(32, 32), seed: int = 0, dtype=np.uint16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, size=shape).astype(dtype)


def _parts(header: dict, payload: np.ndarray | bytes) -> list[bytes]:
    """A hand-made message (the codec's encoder refuses what the protocol does not allow)."""
    return [msgpack.packb(header), bytes(payload)]


def _header(series: str, seq: int = 0, shape=(32, 32), **fields) -> dict:
    return dict(v=1, type="frame", series=series, seq=seq, shape=list(shape), dtype="uint16",
                t_acq_ns=time.time_ns(), **fields)


def _arrives(predicate, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``predicate``; False if it did not happen (probe again)."""
    try:
        wait_until(predicate, timeout, "")
        return True
    except AssertionError:
        return False


class Feed:
    """A PUB socket of the test feeding one running stream, and a collector of its output."""

    def __init__(self, zmq_ctx, model, **options) -> None:
        self.pub = zmq_ctx.make(zmq.PUB)
        self.pub.sndhwm = 100_000
        port = self.pub.bind_to_random_port("tcp://127.0.0.1")
        self.source = f"tcp://127.0.0.1:{port}"
        self.stream = Stream(source=self.source, model=model, engine=ENGINE, **options).start()
        self.col = Collector(zmq_ctx, self.stream.out_endpoint)
        wait_until(lambda: self.stream.subscriptions >= 1, 20, "the collector to join")
        # Probe until the stream's SUB is connected (a PUB drops everything before that); each
        # probe is frame 0 of its own series, so a lost probe is no gap.
        deadline = time.monotonic() + 20
        while not self.col.frames and time.monotonic() < deadline:
            self.send(encode_frame(_frame(), seq=0, series=f"probe{next(_names)}", t_acq_ns=1))
            _arrives(lambda: self.col.frames, 0.2)
        wait_until(lambda: self.col.frames, 20, "a probe to come through")

    def send(self, parts) -> None:
        send_message(self.pub, parts)

    def good(self, shape=(32, 32)) -> str:
        """Send a good frame of a new series and wait until it comes out; returns its series."""
        series = f"good{next(_names)}"
        self.send(encode_frame(_frame(shape), seq=0, series=series, t_acq_ns=time.time_ns()))
        self.col.wait_for(lambda: any(m.series == series for m in self.col.frames), 30,
                          f"good frame {series}")
        self.stream.maybe_raise()
        return series

    def counted(self, reason: str, before: int, n: int = 1) -> None:
        wait_until(lambda: self.stream.stats.rejected.get(reason) >= before + n, 20,
                   f"{n} rejection(s) counted as {reason!r}")
        assert self.stream.stats.rejected.get(reason) == before + n

    def close(self) -> dict:
        try:
            return self.stream.stop()
        finally:
            self.col.stop()


@pytest.fixture(scope="module")
def feed(lite_model):
    from conftest import SocketFactory

    z = SocketFactory()
    f = Feed(z, lite_model, max_queue=1000)
    yield f
    f.close()
    assert not f.col.errors, f.col.errors  # every output decodes with the same codec
    z.close()


def _nested(depth: int) -> bytes:
    """msgpack bytes of {"a": {"a": ... 1}} nested ``depth`` maps deep (packb refuses to make it)."""
    return b"\x81\xa1a" * depth + b"\x01"


def _with_meta_bytes(header: dict, meta_bytes: bytes) -> bytes:
    body = msgpack.packb(header)
    # Append a "meta" key to the map: bump the fixmap/map16 count and add key + raw value.
    assert body[0] & 0xF0 == 0x80 and (body[0] & 0x0F) < 15
    return bytes([body[0] + 1]) + body[1:] + msgpack.packb("meta") + meta_bytes


HOSTILE = {
    "4x4 frame": ("too_small", lambda s: _parts(_header(s, shape=(4, 4)), _frame((4, 4)))),
    "1x64 frame": ("too_small", lambda s: _parts(_header(s, shape=(1, 64)), _frame((1, 64)))),
    "t_acq_ns 2**64-1": ("field", lambda s: _parts(_header(s) | {"t_acq_ns": 2**64 - 1},
                                                   _frame())),
    "t_acq_ns -2**63": ("field", lambda s: _parts(_header(s) | {"t_acq_ns": -2**63}, _frame())),
    "seq 2**64-1": ("field", lambda s: _parts(_header(s, seq=2**64 - 1), _frame())),
    "900 kB meta": ("header_size", lambda s: _parts(_header(s, meta={"blob": "x" * 900_000}),
                                                    _frame())),
    "20 kB meta": ("meta", lambda s: _parts(_header(s, meta={f"k{i}": "x" * 100
                                                             for i in range(200)}), _frame())),
    "nested meta": ("meta", lambda s: [_with_meta_bytes(_header(s), _nested(1000)),
                                       bytes(_frame())]),
    "list of maps in meta": ("meta", lambda s: _parts(_header(s, meta={"l": [{"a": 1}]}),
                                                      _frame())),
    "300-character series": ("field", lambda s: _parts(_header(s + "x" * 300), _frame())),
    "600,000-character series": ("header_size", lambda s: _parts(_header("y" * 600_000),
                                                               _frame())),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_frame_is_counted_and_the_next_good_frame_comes_out(feed, case):
    reason, make = HOSTILE[case]
    series = f"hostile{next(_names)}"
    before = feed.stream.stats.rejected.get(reason)
    # Twice, in the same series: the second one is what used to be compared with the first.
    feed.send(make(series))
    feed.send(make(series))
    feed.counted(reason, before, 2)
    feed.good()
    assert not any(m.series.startswith(series) for m in feed.col.frames)


def test_frames_smaller_than_the_ssim_window_are_denoised_without_css(feed):
    series = f"small{next(_names)}"
    for seq in range(3):
        feed.send(encode_frame(_frame((8, 8), seq), seq=seq, series=series, t_acq_ns=1))
    feed.col.wait_for(lambda: len([m for m in feed.col.frames if m.series == series]) == 3, 30,
                      "three 8x8 frames")
    out = [m for m in feed.col.frames if m.series == series]
    assert [m.arrays["denoised"].shape for m in out] == [(8, 8)] * 3
    assert all(m.header["css"] is None and m.header["css_raw"] is None for m in out)
    # the guard cannot check them either, and says so instead of an empty (all well) list
    assert all(m.header["flags"] == ["too_small_to_check"] for m in out)
    feed.good()


def test_a_deeply_nested_extra_field_in_end_is_not_passed_on(feed):
    series = f"end{next(_names)}"
    feed.send(encode_frame(_frame(), seq=0, series=series, t_acq_ns=1))
    end = msgpack.packb({"v": 1, "type": "end", "series": series, "count": 1})
    feed.send([bytes([end[0] + 1]) + end[1:] + msgpack.packb("junk") + _nested(400)])
    feed.col.wait_for(lambda: any(m.type == "end" and m.series == series
                                  for m in feed.col.messages), 30, "the output end")
    (end_out,) = [m for m in feed.col.messages if m.type == "end" and m.series == series]
    assert end_out.header["count"] == 1 and "junk" not in end_out.header
    feed.good()


def test_late_joiner_counts_the_frames_it_missed_as_gaps(feed):
    series = f"late{next(_names)}"
    gaps = feed.stream.stats.counts.get("gaps")
    for seq in (6, 7, 8):  # frames 0..5 were sent before we joined
        feed.send(encode_frame(_frame(seed=seq), seq=seq, series=series, t_acq_ns=1))
    feed.col.wait_for(lambda: len([m for m in feed.col.frames if m.series == series]) == 3, 30,
                      "frames 6, 7, 8")
    out = [m for m in feed.col.frames if m.series == series]
    assert feed.stream.stats.counts.get("gaps") == gaps + 6
    assert out[0].header["gaps"] >= gaps + 6


def test_seq_jump_to_2_63_minus_1_starts_a_new_series_instead_of_a_huge_gap(feed):
    series = f"jump{next(_names)}"
    gaps = feed.stream.stats.counts.get("gaps")
    for seq in (0, 1, 2**63 - 1):
        feed.send(encode_frame(_frame(seed=seq % 7), seq=seq, series=series, t_acq_ns=1))
    feed.col.wait_for(lambda: len([m for m in feed.col.frames
                                   if m.series.split("#")[0] == series]) == 3, 30, "three frames")
    out = [m for m in feed.col.frames if m.series.split("#")[0] == series]
    assert [m.seq for m in out] == [0, 1, 2**63 - 1]
    assert [m.series for m in out] == [series, series, f"{series}#2"]
    assert feed.stream.stats.counts.get("gaps") == gaps
    assert out[-1].header["gaps"] < 2**20
    feed.good()


def test_css_is_not_computed_across_a_gap(feed):
    series = f"css{next(_names)}"
    for seq in (0, 1, 2, 4, 5):
        feed.send(encode_frame(_frame(seed=seq), seq=seq, series=series, t_acq_ns=1))
    feed.col.wait_for(lambda: len([m for m in feed.col.frames if m.series == series]) == 5, 30,
                      "five frames")
    css = {m.seq: m.header["css"] for m in feed.col.frames if m.series == series}
    assert css[0] is None and css[1] is not None and css[2] is not None
    assert css[4] is None, "frame 4 was compared with frame 2"
    assert css[5] is not None


def test_max_msg_size_refuses_an_oversized_part_and_the_stream_reconnects(zmq_ctx, lite_model):
    f = Feed(zmq_ctx, lite_model, max_frame_bytes=64 * 64 * 2)
    try:
        big = np.zeros((512, 512), np.uint16)  # 512 kB: far over --max-frame-bytes + headroom
        before = f.stream.stats.rejected.get("zmq_refused")
        f.send(encode_frame(big, seq=0, series="big", t_acq_ns=1))
        f.counted("zmq_refused", before)
        # The connection ZeroMQ dropped is made again: probe until a good frame comes through.
        deadline = time.monotonic() + 30
        got = False
        while not got and time.monotonic() < deadline:
            series = f"after{next(_names)}"
            f.send(encode_frame(_frame(), seq=0, series=series, t_acq_ns=1))
            got = _arrives(lambda: any(m.series == series for m in f.col.frames), 0.5)
        assert got, "no frame came through after the oversized one"
        f.stream.maybe_raise()
        assert f.stream.stats.counts.get("frames_in") >= 2
    finally:
        f.close()


def test_high_water_marks_follow_the_memory_budget(zmq_ctx, lite_model):
    from streamer.pipeline import socket_hwm

    f = Feed(zmq_ctx, lite_model, max_frame_bytes=8 << 20, buffer_mb=4, with_raw=True)
    try:
        # Before any frame: sized for the largest frame allowed (and the floor).
        assert f.stream.config.rcvhwm is None
        assert f.stream.receiver.socket.maxmsgsize > 8 << 20
        f.good(shape=(256, 256))  # uint16: 128 KiB in, 256*256*(4 + 2) bytes out
        # The input keeps the size for the largest frame allowed: re-sizing a connected PULL
        # socket stalls a PUSH peer (test_stream_detectors sends several series over PUSH).
        assert f.stream.receiver.socket.rcvhwm == socket_hwm(4, 8 << 20) == 8
        wait_until(lambda: f.stream.publisher.sndhwm == socket_hwm(4, 256 * 256 * 6) == 10, 10,
                   "the output high-water mark to follow the frame size")
    finally:
        f.close()


def test_drops_at_the_input_high_water_mark_are_not_reported_as_upstream_gaps(zmq_ctx,
                                                                               lite_model):
    # A receive stage slower than the source: ZeroMQ's input queue fills and frames are lost there.
    f = Feed(zmq_ctx, lite_model, rcvhwm=2, receive_delay_ms=30, css=False)
    f.pub.sndhwm = 2
    try:
        c = f.stream.stats.counts
        frames_in, gaps = c.get("frames_in"), c.get("gaps")
        series = f"hwm{next(_names)}"
        big = [_frame((512, 512), i) for i in range(4)]  # 512 kB each: fills the TCP buffers
        n = 80
        for seq in range(n):
            f.send(encode_frame(big[seq % 4], seq=seq, series=series, t_acq_ns=1))
            # 200 fps against a receiver of ~33: its queue fills first. Sent in a tight loop, a
            # loaded machine's PUB overflowed before any backlog reached the stream, which then
            # rightly counted the loss as upstream.
            time.sleep(0.005)
        # Then one frame at a time until one comes out (the last burst frames may be lost too),
        # at a scan's pace: the receiver counts a gap as its own drop only within 1 s of its
        # backlog (streamer.receive), so a trickle of one frame a second lost that on a loaded
        # machine whenever frame n was dropped too.
        seq, got = n, False
        deadline = time.monotonic() + 60
        while not got and time.monotonic() < deadline:
            f.send(encode_frame(_frame((512, 512)), seq=seq, series=series, t_acq_ns=1))
            seq += 1
            got = _arrives(lambda: any(m.series == series and m.seq >= n
                                       for m in f.col.frames), 0.1)
        assert got
        wait_until(lambda: c.get("frames_in") - frames_in + c.get("dropped_input") >= seq, 30,
                   "every frame sent to be received or counted")
        assert c.get("dropped_input") > 0, "the input queue was meant to overflow"
        assert c.get("gaps") == gaps, "our own high-water-mark drops were reported as upstream gaps"
        assert c.get("frames_in") - frames_in + c.get("dropped_input") == seq
        last = [m for m in f.col.frames if m.series == series][-1]
        assert last.header["dropped"] >= c.get("dropped_input")
    finally:
        f.close()


def _nan_checkpoint(path):
    """A lite checkpoint whose last layer's bias is NaN: every output is NaN."""
    import torch

    from noise2atom.checkpoint import load_checkpoint, save_checkpoint

    make_lite_checkpoint(path)
    ck = load_checkpoint(path)
    state = {k: v.clone() for k, v in ck.state_dict.items()}
    last = [k for k in state if k.endswith("bias")][-1]
    state[last] = torch.full_like(state[last], float("nan"))
    return save_checkpoint(path, ck.config, state)


def test_non_finite_engine_output_is_counted_and_never_published(zmq_ctx, tmp_path):
    model = _nan_checkpoint(tmp_path / "nan.safetensors")
    pub = zmq_ctx.make(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    stream = Stream(source=f"tcp://127.0.0.1:{port}", model=model, engine=ENGINE,
                    max_engine_failures=1_000_000, max_queue=1000).start()
    col = Collector(zmq_ctx, stream.out_endpoint)
    try:
        wait_until(lambda: stream.subscriptions >= 1, 20, "the collector to join")
        seq = 0
        deadline = time.monotonic() + 30
        while stream.stats.rejected.get("non_finite_output") < 3 and time.monotonic() < deadline:
            send_message(pub, encode_frame(_frame(seed=seq), seq=0, series=f"n{seq}", t_acq_ns=1))
            seq += 1
            _arrives(lambda: stream.stats.rejected.get("non_finite_output") >= 3, 0.1)
        assert stream.stats.rejected.get("non_finite_output") >= 3
        stream.maybe_raise()  # counted, not fatal below --max-engine-failures
        wait_until(lambda: stream.ended or stream.stats.counts.get("frames_in")
                   == stream.stats.rejected.get("non_finite_output"), 20, "every frame handled")
    finally:
        summary = stream.stop()
        col.stop()
    assert summary["published"] == 0 and col.frames == []
    assert summary["rejected_by_reason"]["non_finite_output"] == summary["frames_in"]


def test_an_engine_that_fails_on_every_frame_stops_the_stream_with_a_clear_error(zmq_ctx,
                                                                                  tmp_path):
    model = _nan_checkpoint(tmp_path / "nan.safetensors")
    pub = zmq_ctx.make(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    stream = Stream(source=f"tcp://127.0.0.1:{port}", model=model, engine=ENGINE,
                    max_engine_failures=3).start()

    def failed() -> bool:  # a stage stored its error: the owner's maybe_raise() raises it
        return any(t.error is not None for t in stream._threads)

    try:
        seq = 0
        deadline = time.monotonic() + 30
        while not failed() and time.monotonic() < deadline:
            send_message(pub, encode_frame(_frame(seed=seq), seq=seq, series="nan", t_acq_ns=1))
            seq += 1
            _arrives(failed, 0.1)
        with pytest.raises(RuntimeError, match=r"onnxruntime.*engine failed on 3 frames in a "
                                               r"row.*last error: .*NaN/Inf"):
            stream.maybe_raise()
    finally:
        with pytest.raises(RuntimeError, match="engine failed on 3 frames"):
            stream.stop()
