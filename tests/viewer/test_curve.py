"""`n2a-view --curve-keys DIR` against a real CURVE server socket, configured by streamer.security.

The server side is set up exactly the way n2a-stream sets up its output socket (``CurveKeys`` +
``start_authenticator`` from streamer.security; the test may import it, the viewer may not).
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq
from PySide6 import QtGui
from zmq.utils.monitor import recv_monitor_message

from streamer import net, protocol
from streamer.security import CurveKeys, make_keys, start_authenticator
from viewer.app import main
from streamer.security import CurveKeyError
from viewer.receiver import FrameReceiver
from viewer.window import ViewerWindow


# The offscreen platform cannot resize native windows; Qt says so once per window. Not our warning.
pytestmark = pytest.mark.qt_log_ignore("This plugin does not support propagateSizeHints")


class CurvePublisher:
    """A PUB socket on 127.0.0.1 made a CURVE server with ZAP authentication, like n2a-stream's output."""

    def __init__(self, ctx: zmq.Context, keys: CurveKeys) -> None:
        self.sock = ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 10_000)
        keys.configure_server(self.sock)
        # The server's view of each client's handshake (succeeded / failed and why).
        self.monitor = self.sock.get_monitor_socket()
        self.events: list[int] = []
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.address = f"tcp://127.0.0.1:{self.port}"

    def wait_for_events(self, done, timeout: float = 60.0) -> None:
        """Read socket events until ``done(events)`` is true."""
        deadline = time.monotonic() + timeout
        while not done(self.events):
            assert time.monotonic() < deadline, f"socket events so far: {sorted(set(self.events))}"
            if self.monitor.poll(50):
                self.events.append(recv_monitor_message(self.monitor)["event"])

    def close(self) -> None:
        self.sock.disable_monitor()
        self.monitor.close(linger=0)
        self.sock.close(linger=0)

    def start(self, series: str) -> None:
        net.send_message(self.sock, protocol.encode_start(series))

    def frame(self, raw: np.ndarray, denoised: np.ndarray, *, seq: int, series: str) -> None:
        net.send_message(self.sock, protocol.encode_frame(
            [denoised, raw], parts=["denoised", "raw"], seq=seq, series=series, t_acq_ns=time.time_ns(),
            css=None, css_raw=None, css_mean=None, timing={"engine": 1000}, engine="onnxruntime cpu fp32",
            model="curve-model", dropped=0, gaps=0))


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return make_keys(tmp_path / "keys") / "viewer"  # the viewer link's key set


@pytest.fixture
def curve_publisher(zmq_context: zmq.Context, key_dir: Path) -> Iterator[CurvePublisher]:
    keys = CurveKeys.load(key_dir)
    auth = start_authenticator(zmq_context, keys)
    try:
        pub = CurvePublisher(zmq_context, keys)
        try:
            yield pub
        finally:
            pub.close()
    finally:
        auth.stop()  # before zmq_context's teardown terminates the context


def test_viewer_with_the_keys_shows_the_frame_and_others_get_nothing(
        qtbot, curve_publisher, key_dir, tmp_path, make_frame, subscribe):
    # A valid client key the server does not authorise, with the server's real public key: the
    # server's authenticator must turn it away.
    intruder_dir = make_keys(tmp_path / "other") / "viewer"  # the set a viewer loads
    shutil.copy(key_dir / "server.key", intruder_dir / "server.key")
    with FrameReceiver(address=curve_publisher.address, poll_ms=20,
                       curve=CurveKeys.load_client(key_dir)) as rx, \
            FrameReceiver(address=curve_publisher.address, poll_ms=20) as plain, \
            FrameReceiver(address=curve_publisher.address, poll_ms=20,
                          curve=CurveKeys.load_client(intruder_dir)) as intruder:
        window = ViewerWindow(source=rx, refresh_ms=5, silence_timeout_s=30.0, snapshot_dir=tmp_path / "snaps")
        qtbot.addWidget(window)
        window.show()
        subscribe(curve_publisher, rx, "secure")
        n = 5
        for i in range(n):
            raw, den = make_frame(i)
            curve_publisher.frame(raw, den, seq=i, series="secure")
        qtbot.waitUntil(lambda: window.current is not None and window.current.seq == n - 1)
        raw, den = make_frame(n - 1)
        assert np.array_equal(window.raw_panel.image_item.image, raw)
        assert np.array_equal(window.denoised_panel.image_item.image, den)
        assert window.state == "live" and window.current.series == "secure"
        qtbot.waitUntil(lambda: "curve-model" in window.status_labels["engine"].text())
        # The plain and the unauthorised subscriber were refused by the server: it saw a
        # handshake fail on authentication (the intruder's key; ZAP status 400) and one fail
        # otherwise (the plain client has no CURVE: a mechanism mismatch, or the peer hanging up
        # mid-handshake), so neither can have received anything.
        refused = {zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL}
        curve_publisher.wait_for_events(lambda ev: zmq.EVENT_HANDSHAKE_FAILED_AUTH in ev
                                        and bool(refused & set(ev)))
        for other in (plain, intruder):
            status = other.status()
            assert status.messages == 0 and status.running and status.error is None
        window.close()


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_bad_key_dir_exits_2_with_a_one_line_error(capsys, tmp_path, key_dir):
    missing = tmp_path / "nowhere"
    assert main(["--port", "5556", "--curve-keys", str(missing)]) == 2
    err = _one_line_error(capsys)
    assert err.startswith(f"n2a-view: --curve-keys {missing}: expected a key directory")
    assert err.rstrip().endswith("(got no such directory)")

    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(key_dir / "server.key", partial / "server.key")  # the client's key pair is missing
    assert main(["--port", "5556", "--curve-keys", str(partial)]) == 2
    err = _one_line_error(capsys)
    assert "expected server.key and client.key_secret" in err
    assert "(got ['server.key'], missing ['client.key_secret'])" in err

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    assert main(["--port", "5556", "--curve-keys", str(not_a_dir)]) == 2
    assert "(got a file, not a directory)" in _one_line_error(capsys)


def test_unreadable_key_files_are_reported(tmp_path, key_dir):
    broken = tmp_path / "broken"
    shutil.copytree(key_dir, broken)
    (broken / "client.key_secret").write_text("metadata\ncurve\n")
    with pytest.raises(CurveKeyError, match=r"expected a zmq.auth key file .* \(got ValueError: No public key"):
        CurveKeys.load_client(broken)
    # Only the public half of the client's key: a client cannot authenticate with it.
    shutil.copy(key_dir / "client.key", broken / "client.key_secret")
    (broken / "client.key_secret").chmod(0o600)  # copy() gave it the public key's mode
    with pytest.raises(CurveKeyError, match=r"client.key_secret \(got no secret-key\)"):
        CurveKeys.load_client(broken)
    shutil.copy(key_dir / "client.key_secret", broken / "client.key_secret")
    text = (key_dir / "server.key").read_text()
    public = text.split('public-key = "')[1].split('"')[0]
    (broken / "server.key").write_text(text.replace(public, public[:-1] + "~"))  # '~' is not Z85
    with pytest.raises(CurveKeyError, match=r"40-character Z85 public-key in .*server.key \(got 40 characters"):
        CurveKeys.load_client(broken)
    (broken / "server.key").write_text(text.replace(public, public[:20]))
    with pytest.raises(CurveKeyError, match=r"\(got 20 characters"):
        CurveKeys.load_client(broken)
    if os.geteuid() != 0:  # root reads anything
        (broken / "server.key").write_text(text)
        (broken / "server.key").chmod(0)
        try:
            with pytest.raises(CurveKeyError, match=r"server.key \(got PermissionError"):
                CurveKeys.load_client(broken)
        finally:
            (broken / "server.key").chmod(0o600)
    (broken / "server.key").write_text(text)
    keys = CurveKeys.load_client(broken)
    assert keys.server_public == CurveKeys.load(key_dir).server_public
    assert "client_secret" not in repr(keys)


def test_n2a_view_curve_keys_screenshot_from_a_curve_stream(curve_publisher, key_dir, tmp_path, run_viewer_screenshot):
    png = tmp_path / "shot.png"
    rc, out = run_viewer_screenshot(curve_publisher, ["--port", str(curve_publisher.port), "--curve-keys", str(key_dir),
        "--size", "900x600", "--screenshot", str(png), "--screenshot-after", "3", "--timeout", "180"], 180)
    assert rc == 0, out
    assert f"saved {png}" in out
    image = QtGui.QImage(str(png))
    assert not image.isNull() and (image.width(), image.height()) == (900, 600)
