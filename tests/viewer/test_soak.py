"""Soak: thousands of real repaints at 512² (PySide6 6.12 + pyqtgraph 0.14 crashed within 200)."""
from __future__ import annotations

import time

import numpy as np
import pytest
from PySide6 import QtWidgets

from viewer.receiver import ReceivedFrame
from viewer.window import ViewerWindow

# Heavy (thousands of 512² repaints): `slow` for selection (-m "not slow"); they still run in
# `make test`, with room for a loaded machine. Speed belongs to bench/viewer.py, not here.
pytestmark = [pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints"),
              pytest.mark.slow, pytest.mark.timeout(1200)]


def _pool(size: int, n: int = 4):
    rng = np.random.default_rng(1)
    return ([rng.integers(0, 4000, (size, size), dtype=np.uint16) for _ in range(n)],
            [rng.random((size, size), dtype=np.float32) for _ in range(n)])


def test_3000_repaints_at_512(qtbot, tmp_path):
    """Drive the display slot with 3,000 distinct frames and wait for each one to be painted."""
    n, size = 3000, 512
    raws, dens = _pool(size)
    w = ViewerWindow(source=None, snapshot_dir=tmp_path)
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    app = QtWidgets.QApplication.instance()
    raw_item, den_item = w.raw_panel.image_item, w.denoised_panel.image_item
    for i in range(n):
        raw, den = raws[i % 4].copy(), dens[i % 4].copy()
        raw[0, 0], den[0, 0] = i, -i  # distinct frames
        r0, d0 = raw_item.renders, den_item.renders
        w.show_frame(ReceivedFrame(index=i, series="soak", seq=i, header={"css": 0.5, "css_raw": 0.1,
                                   "dropped": 0, "gaps": 0}, raw=raw, denoised=den, t_recv_ns=0))
        deadline = time.monotonic() + 60
        while raw_item.renders == r0 or den_item.renders == d0:  # really painted, both images
            app.processEvents()
            assert time.monotonic() < deadline, f"frame {i} was not painted within 60 s"
    assert w.frames_shown == n and raw_item.renders >= n and den_item.renders >= n
    assert raw_item.image[0, 0] == n - 1 and den_item.image[0, 0] == -(n - 1)
    assert len(w.css_plot.data()[0]) == w.css_plot.history


def test_fast_stream_over_socket_skips_but_never_stalls(qtbot, publisher, receiver, subscribe, tmp_path):
    """600 frames at 512² as fast as the socket takes them: the viewer keeps up by skipping."""
    n, size = 600, 512
    raws, dens = _pool(size)
    w = ViewerWindow(source=receiver, refresh_ms=1, silence_timeout_s=30, snapshot_dir=tmp_path)
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    subscribe(publisher, receiver, series="soak")
    for i in range(n):
        raw, den = raws[i % 4].copy(), dens[i % 4].copy()
        raw[0, 0] = i
        publisher.frame(raw, den, seq=i, series="soak", dropped=0)
        if i % 20 == 19:
            qtbot.wait(5)  # let the GUI in now and then, as a real stream would
        if i % 100 == 99:  # never stalls: it catches up with the stream, however loaded
            qtbot.waitUntil(lambda: w.current is not None and w.current.seq == i, timeout=120_000)
    qtbot.waitUntil(lambda: w.current is not None and w.current.seq == n - 1, timeout=120_000)
    st = receiver.status()
    assert st.frames == n and st.decode_errors == 0
    assert w.frames_shown + st.display_skips == n  # every frame shown or counted as skipped
    assert w.raw_panel.image[0, 0] == n - 1
    qtbot.waitUntil(lambda: len(w.css_plot.data()[0]) == n)  # every header still reaches the plot
    assert w.frames_shown >= n // 100  # at least one per catch-up point
    print(f"shown {w.frames_shown}, skipped {st.display_skips} of {n}")
