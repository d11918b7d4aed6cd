"""The viewer window driven by a real PUB socket on loopback (protocol v1 messages), offscreen."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PySide6 import QtCore, QtGui

from streamer import protocol
from viewer.receiver import FrameReceiver
from viewer.snapshot import read_frame_tiff
from viewer.widgets import colormap, robust_levels
from viewer.window import ViewerWindow

# The offscreen platform cannot resize native windows; Qt says so once per window. Not our warning.
pytestmark = pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints")


@pytest.fixture
def make_window(qtbot, receiver: FrameReceiver, tmp_path):
    """`make_window(**kwargs)`: a shown window on the test's receiver.

    A factory, not the window itself: pytest keeps fixture values until after every teardown, which
    would keep pyqtgraph's parentless menus alive past the leaked-widget check.
    """
    made = []

    def make(**kwargs) -> ViewerWindow:
        kwargs = dict(dict(source=receiver, refresh_ms=5, silence_timeout_s=30.0,
                           snapshot_dir=tmp_path / "snaps"), **kwargs)
        w = ViewerWindow(**kwargs)
        qtbot.addWidget(w)
        w.resize(1000, 700)
        w.show()
        made.append(w)
        return w

    yield make
    made.clear()


def _frame(i):
    rng = np.random.default_rng(i)
    raw = rng.integers(0, 4000, size=(64, 80), dtype=np.uint16)
    raw[0, 0] = i
    den = rng.random((64, 80), dtype=np.float32)
    den[0, 0] = -float(i)
    return raw, den


def send_series(publisher, n: int, *, series: str = "s1", first: int = 0, **fields):
    """Send n frames with per-frame CSS values; return the frames and headers sent."""
    sent = []
    for i in range(first, first + n):
        raw, den = _frame(i)
        css = None if i == first else 0.5 + i / 1000
        css_raw = None if i == first else 0.1 + i / 1000
        f = dict(css=css, css_raw=css_raw, css_mean=css, dropped=fields.get("dropped", 0), gaps=fields.get("gaps", 0))
        f.update({k: v for k, v in fields.items() if k not in ("dropped", "gaps")})
        publisher.frame(raw, den, seq=i, series=series, **f)
        sent.append((raw, den, f))
    return sent


def test_open_and_quit_shows_waiting_state(qtbot, make_window, receiver: FrameReceiver):
    window = make_window()
    qtbot.waitUntil(lambda: window.banner.isVisible())
    assert window.state == "waiting"
    assert f"Waiting for n2a-stream at {receiver.address}" in window.banner.text()
    assert window.raw_panel.image is None and window.denoised_panel.image is None
    window.close()


def test_after_n_frames_images_and_css_hold_frame_n(qtbot, make_window, publisher, receiver, subscribe):
    window = make_window()
    subscribe(publisher, receiver)
    n = 40
    sent = send_series(publisher, n)
    qtbot.waitUntil(lambda: window.current is not None and window.current.seq == n - 1)
    raw, den, _ = sent[-1]
    assert np.array_equal(window.raw_panel.image_item.image, raw)
    assert window.raw_panel.image_item.image.dtype == np.uint16
    assert np.array_equal(window.denoised_panel.image_item.image, den)
    # Every frame's header reaches the CSS plot, even when its images were skipped.
    qtbot.waitUntil(lambda: len(window.css_plot.data()[0]) == n)
    seq, css_raw, css = window.css_plot.data()
    want_raw = np.array([np.nan if f["css_raw"] is None else f["css_raw"] for _, _, f in sent])
    want_den = np.array([np.nan if f["css"] is None else f["css"] for _, _, f in sent])
    np.testing.assert_array_equal(seq, np.arange(n))
    np.testing.assert_array_equal(css_raw, want_raw)
    np.testing.assert_array_equal(css, want_den)
    # The curves, big labels and status bar follow at a few Hz.
    # getData() gives (None, None) until the throttled (4 Hz) plot refresh has run once
    def plotted(curve):
        y = curve.getData()[1]
        return 0 if y is None else len(y)

    qtbot.waitUntil(lambda: plotted(window.css_plot.denoised_curve) == n)
    np.testing.assert_array_equal(window.css_plot.denoised_curve.getData()[1], want_den)
    np.testing.assert_array_equal(window.css_plot.raw_curve.getData()[1], want_raw)
    assert f"{sent[-1][2]['css']:.3f}" in window.css_plot.denoised_label.text()
    assert f"{sent[-1][2]['css_raw']:.3f}" in window.css_plot.raw_label.text()
    assert window.state == "live" and not window.banner.isVisible()
    qtbot.waitUntil(lambda: window.status_labels["frame"].text() == f"frame {n - 1}")
    assert window.status_labels["series"].text() == "series s1"
    assert "test-model" in window.status_labels["engine"].text()
    # Skipped displays are counted and shown, and shown + skipped accounts for every frame.
    qtbot.waitUntil(lambda: window.status_labels["skips"].text() == f"display skips {receiver.status().display_skips}")
    assert window.frames_shown + receiver.status().display_skips == n
    qtbot.waitUntil(lambda: "latency p50" in window.status_labels["latency"].text())


def test_status_bar_shows_drops_and_gaps_from_headers(qtbot, make_window, publisher, receiver, subscribe):
    window = make_window()
    subscribe(publisher, receiver)
    send_series(publisher, 3, dropped=0, gaps=0)
    qtbot.waitUntil(lambda: window.current is not None and window.current.seq == 2)
    qtbot.waitUntil(lambda: window.status_labels["dropped"].text() == "dropped 0")
    assert "background-color" not in window.status_labels["dropped"].styleSheet()
    send_series(publisher, 2, first=3, dropped=7, gaps=2, meta_mismatch=["pixel_size_nm", "dwell_time_us"])
    qtbot.waitUntil(lambda: window.status_labels["dropped"].text() == "dropped 7")
    assert "background-color" in window.status_labels["dropped"].styleSheet()  # warning colour
    assert window.status_labels["gaps"].text() == "gaps 2"
    assert "background-color" in window.status_labels["gaps"].styleSheet()
    mismatch = window.status_labels["mismatch"]
    assert mismatch.isVisible() and "pixel_size_nm, dwell_time_us" in mismatch.text()
    assert "lattice average" not in window.status_labels["engine"].text()
    send_series(publisher, 1, first=5, lattice_average=16)  # n2a-stream --lattice-average
    qtbot.waitUntil(lambda: "lattice average ×16" in window.status_labels["engine"].text())


def test_pause_freezes_display_while_receiver_keeps_draining(qtbot, make_window, publisher, receiver, subscribe, make_frame):
    window = make_window()
    subscribe(publisher, receiver)
    send_series(publisher, 5)
    qtbot.waitUntil(lambda: window.current is not None and window.current.seq == 4)
    frozen = window.raw_panel.image.copy()
    shown = window.frames_shown
    qtbot.keyClick(window, QtCore.Qt.Key.Key_Space)  # the shortcut, as a user would
    assert window.paused and window.pause_action.isChecked()
    qtbot.waitUntil(lambda: window.status_labels["state"].text() == "PAUSED")
    send_series(publisher, 10, first=5)
    qtbot.waitUntil(lambda: receiver.status().frames == 15)  # drained upstream meanwhile
    # The display update that the refresh timer runs, with all 15 frames received: shows nothing.
    assert window.pull() is False
    assert window.frames_shown == shown
    assert np.array_equal(window.raw_panel.image, frozen)
    assert len(window.css_plot.data()[0]) == 5
    window.set_paused(False)
    qtbot.waitUntil(lambda: window.current.seq == 14)
    assert np.array_equal(window.raw_panel.image, make_frame(14)[0])
    qtbot.waitUntil(lambda: len(window.css_plot.data()[0]) == 15)


def test_snapshot_writes_readable_tiff_and_png(qtbot, make_window, publisher, receiver, tmp_path, subscribe):
    window = make_window()
    subscribe(publisher, receiver)
    sent = send_series(publisher, 3)
    qtbot.waitUntil(lambda: window.current is not None and window.current.seq == 2)
    paths = window.snapshot()
    assert [p.suffix for p in paths] == [".tif", ".tif", ".png"]
    assert all(p.parent == tmp_path / "snaps" for p in paths)
    raw, header = read_frame_tiff(paths[0])
    np.testing.assert_array_equal(raw, sent[-1][0])
    assert raw.dtype == np.uint16
    assert header["seq"] == 2 and header["series"] == "s1" and header["css"] == sent[-1][2]["css"]
    den = tifffile.imread(paths[1])
    np.testing.assert_array_equal(den, sent[-1][1])
    with tifffile.TiffFile(paths[1]) as tif:
        assert json.loads(tif.pages[0].description)["model"] == "test-model"
    png = QtGui.QImage(str(paths[2]))
    assert not png.isNull() and png.width() >= 500 and png.height() >= 300


def test_bad_messages_are_counted_and_shown(qtbot, make_window, publisher, receiver, subscribe, make_frame):
    window = make_window()
    subscribe(publisher, receiver)
    raw, den = make_frame(0)
    good = publisher.frame
    publisher.send([b"not msgpack \xc1"])
    publisher.send([b"\x83\xa1v\x02\xa4type\xa5frame\xa6series\xa1s"])  # version 2
    parts = protocol.encode_frame([den, raw], parts=["denoised", "raw"], seq=0, series="s1", t_acq_ns=1)
    publisher.send([parts[0], parts[1], bytes(parts[2])[:-2]])  # truncated payload
    good(raw, den, seq=0, series="s1")
    qtbot.waitUntil(lambda: window.current is not None)
    qtbot.waitUntil(lambda: window.status_labels["errors"].text() == "bad messages 3")
    assert receiver.status().decode_errors == 3
    assert "background-color" in window.status_labels["errors"].styleSheet()
    assert "payload" in window.status_labels["errors"].toolTip()
    assert np.array_equal(window.raw_panel.image, raw)


def test_waiting_live_end_and_reconnect(qtbot, publisher_factory, publisher, tmp_path, subscribe):
    with FrameReceiver(address=publisher.address, poll_ms=20) as rx:
        # Silence is tested last, with a short timeout set then: a first render on a loaded
        # machine can itself take longer than 0.6 s, and the state must be seen live first.
        w = ViewerWindow(source=rx, refresh_ms=5, silence_timeout_s=60.0, snapshot_dir=tmp_path)
        qtbot.addWidget(w)
        w.show()
        assert w.state == "waiting" and "Waiting for n2a-stream at" in w.banner.text()
        subscribe(publisher, rx)
        assert w.state == "waiting"  # a start message alone is not a live stream
        send_series(publisher, 3)
        qtbot.waitUntil(lambda: w.state == "live" and w.banner.isHidden())
        publisher.end("s1")
        qtbot.waitUntil(lambda: w.state == "waiting")
        assert "'s1' ended" in w.banner.text() and rx.address in w.banner.text()
        # n2a-stream restarts on the same port: the SUB socket reconnects by itself.
        port = publisher.port
        publisher.close()
        again = publisher_factory(port)
        subscribe(again, rx, series="s2")
        send_series(again, 2, series="s2")
        qtbot.waitUntil(lambda: w.state == "live" and w.current.series == "s2" and w.current.seq == 1)
        assert len(w.css_plot.data()[0]) == 2  # a new series starts a new plot
        # Silence: nothing for longer than the timeout means waiting again.
        w.silence_timeout_s = 0.6
        qtbot.waitUntil(lambda: w.state == "waiting")
        assert "No frames for 0.6 s" in w.banner.text()


def test_fixed_levels_autolevels_colormap_and_readout(qtbot, make_window, publisher, receiver, subscribe, make_frame):
    window = make_window()
    subscribe(publisher, receiver)
    raw0, den0 = make_frame(0)
    publisher.frame(raw0, den0, seq=0, series="s1")
    qtbot.waitUntil(lambda: window.current is not None)
    first = window.raw_panel.levels()
    assert first == pytest.approx(robust_levels(raw0))
    raw1 = (raw0 // 4).astype(np.uint16)  # a much darker frame: levels must not follow it
    publisher.frame(raw1, den0, seq=1, series="s1")
    qtbot.waitUntil(lambda: window.current.seq == 1)
    assert window.raw_panel.levels() == first
    qtbot.keyClick(window, QtCore.Qt.Key.Key_A)  # auto levels on demand
    assert window.raw_panel.levels() == pytest.approx(robust_levels(raw1))
    assert window.denoised_panel.levels() == pytest.approx(robust_levels(den0))
    window.colormap_box.setCurrentText("viridis")
    want = colormap("viridis").getLookupTable(nPts=64, alpha=False)
    for panel in (window.raw_panel, window.denoised_panel):
        assert panel.colormap_name == "viridis"
        np.testing.assert_allclose(panel.histogram.getLookupTable(n=64, alpha=False), want, atol=2)
    # Pixel readout: a point in the view maps to (row, col) in row-major order, both values shown.
    r, c = 10, 50
    scene_pos = window.denoised_panel.view.mapViewToScene(QtCore.QPointF(c + 0.5, r + 0.5))
    assert window.denoised_panel.pixel_at(scene_pos) == (r, c)
    window._on_mouse_moved(window.denoised_panel, scene_pos)
    text = window.readout.text()
    assert f"row {r}, col {c}" in text and f"raw {raw1[r, c]}" in text and f"denoised {den0[r, c]:.4g}" in text
    # Zoom and pan are linked.
    window.raw_panel.view.setRange(xRange=(5, 25), yRange=(5, 20), padding=0)
    # The panels differ a little in width (histogram axes), so with locked aspect the x spans
    # differ slightly; linked means same centre and same y range.
    def linked() -> bool:
        (rx, ry), (dx, dy) = window.raw_panel.view.viewRange(), window.denoised_panel.view.viewRange()
        return dy == pytest.approx(ry) and sum(dx) / 2 == pytest.approx(sum(rx) / 2) and dx[1] - dx[0] < 30
    qtbot.waitUntil(linked)
