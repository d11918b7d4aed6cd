"""The n2a Swift plug-in against Nion's simulated microscope (nionswift-usim), headless.

A real usim STEM scan at 256x256 in a real Swift document model, the plug-in's real sockets on
loopback, a real ``n2a-stream`` pipeline (``streamer.pipeline.Stream``, the bundled model on ONNX
Runtime) and the denoised data item read back from Swift.
"""
from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from nion_testutils import BUNDLED_MODEL, pump_until

pytest.importorskip("nion.usim_device", reason="needs the nion extra: pip install n2a[nion]")

from nion.instrumentation import HardwareSource  # noqa: E402
from nion.utils import Geometry  # noqa: E402

from nionswift_plugin.n2a_live.sender import ScanFrameSender  # noqa: E402
from nionswift_plugin.n2a_live.swift_bridge import LiveBridge  # noqa: E402
from stream_testutils import Collector  # noqa: E402

N_FRAMES = 12
SIDE = 256


class SwiftFrames:
    """What Swift itself delivered: every complete frame of the scan (a copy), in order."""

    def __init__(self, hardware_source) -> None:
        self.frames: list[tuple[int, np.ndarray]] = []
        self.partial = 0
        self.metadata: list[dict] = []
        self._lock = threading.Lock()
        self._listener = hardware_source.data_channel_updated_event.listen(self._on)

    def _on(self, args, xdata) -> None:
        with self._lock:
            if args.state == "complete":
                index = xdata.metadata["hardware_source"]["frame_index"]
                self.frames.append((index, np.array(xdata.data)))
                self.metadata.append(dict(xdata.metadata))
            else:
                self.partial += 1

    def close(self) -> None:
        self._listener.close()


class _Sockets:
    """The socket factory Collector wants; closes what it made with linger 0."""

    def __init__(self, context) -> None:
        self.context, self.sockets = context, []

    def make(self, kind):
        s = self.context.socket(kind)
        s.linger = 0
        self.sockets.append(s)
        return s

    def close(self) -> None:
        for s in self.sockets:
            s.close(0)


def _start_scan(hs) -> None:
    params = hs.get_current_frame_parameters()
    params.size = Geometry.IntSize(SIDE, SIDE)
    hs.start_playing(frame_parameters=params, sync_timeout=10.0)


def _bridge(usim, sender, output_address, zmq_context) -> LiveBridge:
    dc = usim.document_controller
    return LiveBridge(sender=sender, output_address=output_address, queue_task=dc.queue_task,
                      get_document_model=lambda: dc.document_model,
                      context=zmq_context).start(HardwareSource.HardwareSourceManager())


def test_scan_frames_go_through_n2a_stream_and_come_back_into_swift(usim, zmq_context):
    from streamer.pipeline import Stream

    hs, dc = usim.scan_hardware_source, usim.document_controller
    sender = ScanFrameSender(address="tcp://127.0.0.1:0", context=zmq_context).start()
    stream = Stream(source=sender.endpoint, model=BUNDLED_MODEL, engine="onnxruntime").start()
    bridge = _bridge(usim, sender, stream.out_endpoint, zmq_context)

    col = Collector(_Sockets(zmq_context), stream.out_endpoint)
    swift = SwiftFrames(hs)
    try:
        pump_until(dc, lambda: sender.subscribers >= 1 and stream.subscriptions >= 2,
                   "n2a-stream to subscribe to the plug-in, and the plug-in and the test to it")
        _start_scan(hs)
        pump_until(dc, lambda: len(swift.frames) >= N_FRAMES, f"{N_FRAMES} complete scan frames")
        hs.stop_playing(sync_timeout=10.0)  # Swift finishes the frame in progress
        n = len(swift.frames)
        pump_until(dc, lambda: len(col.frames) >= n, f"{n} denoised frames from n2a-stream",
                   detail=lambda: (f"sent {sender.sent}, dropped {sender.dropped}, got seqs "
                                   f"{[m.seq for m in col.frames]}, stream {stream.status()}"))
        key = "n2a_usim_scan_device_a"
        last_seq = col.frames[-1].seq
        pump_until(dc, lambda: bridge.last_shown.get("usim_scan_device_a", (None, -1))[1]
                   == last_seq, "Swift to show the last denoised frame")
        item = usim.document_model.get_data_item_reference(key).data_item
    finally:
        swift.close()
        col.stop()
        col.sock.close(0)
        bridge.close()
        stream.stop()
    out = col.frames
    assert swift.partial > 0  # Swift did send partial frames; none of them went out
    assert bridge.completed == n and sender.sent == n, (bridge.completed, sender.sent, n)
    assert sender.dropped_total == 0 and bridge.errors == 0, (sender.dropped, bridge.last_error)
    # Every complete frame, once, in order, seq = Swift's frame index, bit-exact raw pixels.
    assert [m.seq for m in out] == [i for i, _ in swift.frames]
    assert [m.seq for m in out] == list(range(out[0].seq, out[0].seq + n))
    assert len({m.series for m in out}) == 1
    for m, (_, raw) in zip(out, swift.frames):
        np.testing.assert_array_equal(m.arrays["raw"], raw)
        assert m.arrays["denoised"].shape == (SIDE, SIDE)
    assert out[-1].header["dropped"] == 0 and out[-1].header["gaps"] == 0
    # Acquisition settings mapped from Swift's metadata.
    meta = out[0].meta
    params = hs.get_current_frame_parameters()
    assert meta["pixel_size_nm"] == pytest.approx(params.fov_nm / SIDE)
    assert meta["dwell_time_us"] == pytest.approx(params.pixel_time_us)
    assert meta["detector"] == "HAADF"
    assert meta["voltage_kV"] == pytest.approx(
        swift.metadata[0]["instrument"]["high_tension"] / 1000)
    assert meta["source"] == "nionswift:usim_scan_device"
    # The live data item in Swift holds the last denoised frame, with its CSS in the metadata.
    assert item is not None and item.title.startswith("HAADF (n2a)")
    np.testing.assert_array_equal(item.data, out[-1].arrays["denoised"])
    n2a = item.metadata["n2a"]
    assert n2a["seq"] == last_seq and n2a["css"] == out[-1].header["css"]
    assert "CSS" in item.title and isinstance(out[-1].header["css"], float)


def test_without_n2a_stream_swift_keeps_scanning_and_drops_are_counted(usim, zmq_context, caplog):
    caplog.set_level(logging.INFO, logger="n2a.live")
    hs, dc = usim.scan_hardware_source, usim.document_controller
    sender = ScanFrameSender(address="tcp://127.0.0.1:0", context=zmq_context, max_queue=4).start()
    # Nothing listens on the output either.
    bridge = _bridge(usim, sender, "tcp://127.0.0.1:1", zmq_context)
    try:
        _start_scan(hs)
        pump_until(dc, lambda: bridge.completed >= N_FRAMES, f"{N_FRAMES} complete scan frames")
        hs.stop_playing(sync_timeout=10.0)
        n = bridge.completed
        pump_until(dc, lambda: sender.queued == 0 and sender.dropped_total == n,
                   "the sender to account for every frame")
        status = bridge.status_text()
    finally:
        bridge.close()
    # The scan ran (the acquisition thread called the plug-in for every frame and went on), every
    # frame is counted as not sent, nothing was sent and nothing waits.
    assert sender.sent == 0 and sender.dropped["no_receiver"] + sender.dropped["queue_full"] == n
    assert bridge.state == "no n2a-stream"
    assert "no n2a-stream subscribed" in status and f"{n} complete frames" in status
    assert usim.document_model.get_data_item_reference("n2a_usim_scan_device_a").data_item is None
    said = [r for r in caplog.records if r.name == "n2a.live" and r.levelno == logging.WARNING]
    assert said and "no n2a-stream subscribed" in said[0].getMessage()  # the log says so


def test_the_n2a_stream_command_denoises_a_swift_scan(usim, zmq_context):
    """The same loop with the real ``n2a-stream`` command as a subprocess (as at the microscope)."""
    import re
    import signal
    import subprocess
    import sys

    from stream_testutils import PATIENCE, LineReader, cli_env

    hs, dc = usim.scan_hardware_source, usim.document_controller
    sender = ScanFrameSender(address="tcp://127.0.0.1:0", context=zmq_context).start()
    port = sender.endpoint.rsplit(":", 1)[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamer.cli", "--port", port, "--out-port", "0", "--engine",
         "onnxruntime", "--model", str(BUNDLED_MODEL), "--status-interval", "60"],
        env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    bridge = None
    try:
        err = LineReader(proc.stderr)  # its first line names the output endpoint
        first = err.wait_for_line(lambda line: " -> " in line, PATIENCE,
                                  "n2a-stream's output endpoint")
        found = re.search(r"-> (tcp://[\d.]+:\d+)", first)
        assert found, f"n2a-stream did not name its output (got {first!r}; stderr {err.text!r})"
        bridge = _bridge(usim, sender, found.group(1), zmq_context)
        pump_until(dc, lambda: sender.subscribers >= 1, "n2a-stream to subscribe to the plug-in")
        _start_scan(hs)
        pump_until(dc, lambda: bridge.receiver.received >= 6, "six denoised frames back")
        hs.stop_playing(sync_timeout=10.0)
        n = bridge.completed
        pump_until(dc, lambda: bridge.receiver.received == n and sender.queued == 0,
                   f"all {n} frames denoised",
                   detail=lambda: f"sent {sender.sent}, received {bridge.receiver.received}")
        last = bridge.receiver.last_header
        pump_until(dc, lambda: bridge.last_shown.get("usim_scan_device_a", (None, -1))[1]
                   == last["seq"], "Swift to show the last denoised frame")
        item = usim.document_model.get_data_item_reference("n2a_usim_scan_device_a").data_item
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(PATIENCE) == 0, err.join(PATIENCE)
        summary = err.join(PATIENCE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(PATIENCE)
        proc.stderr.close()
        if bridge is not None:
            bridge.close()
        else:
            sender.close()
    assert sender.sent == n and sender.dropped_total == 0
    assert last["dropped"] == 0 and last["gaps"] == 0
    assert item.metadata["n2a"]["seq"] == last["seq"] and item.title.startswith("HAADF (n2a)")
    assert f"{n} of {n} frames denoised" in summary, summary
