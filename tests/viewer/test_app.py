"""`n2a-view` as a program: arguments, and a real run that takes a screenshot offscreen."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6 import QtGui

from viewer.app import main
from viewer.receiver import FrameReceiver, ReceiverError, normalise_address


def test_bad_arguments_fail_with_a_clear_message(capsys):
    assert main(["--port", "70000"]) == 2
    assert "--port must be in 1..65535 (got 70000)" in capsys.readouterr().err
    assert main(["--source", "nohost:"]) == 2
    assert "(got 'nohost:')" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([])  # --port or --source is required


def test_normalise_address():
    assert normalise_address("5556") == "tcp://127.0.0.1:5556"
    assert normalise_address("pc:5556") == "tcp://pc:5556"
    assert normalise_address("tcp://10.0.0.2:7") == "tcp://10.0.0.2:7"
    with pytest.raises(ValueError, match=r"got 'a:b'"):
        normalise_address("a:b")


def test_receiver_stop_is_bounded_and_restart_refused():
    rx = FrameReceiver(address="tcp://127.0.0.1:9", poll_ms=10).start(timeout=60)
    assert rx.status().running
    rx.stop(timeout=60)  # raises ReceiverError when the thread outlives the bound
    assert not rx.status().running and rx.status().error is None
    with pytest.raises(ReceiverError, match="already started"):
        rx.start()


def test_n2a_view_screenshot_from_a_live_socket(publisher, tmp_path, run_viewer_screenshot):
    png = tmp_path / "shot.png"
    rc, out = run_viewer_screenshot(publisher, ["--port", str(publisher.port), "--size", "900x600",
        "--screenshot", str(png), "--screenshot-after", "5", "--timeout", "180"], 180)
    assert rc == 0, out
    assert f"saved {png}" in out
    image = QtGui.QImage(str(png))
    assert not image.isNull() and (image.width(), image.height()) == (900, 600)
    pixels = np.array([QtGui.QColor(image.pixel(x, y)).value() for x in range(0, 900, 30) for y in range(0, 600, 30)])
    assert pixels.std() > 10  # not a blank window
