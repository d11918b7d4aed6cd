"""CURVE key files (issue 10 item 6): private modes, refusing readable secret keys, and one key set
per link so that a viewer's key cannot subscribe to the raw acquisition stream."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from stream_testutils import Collector, run_module, wait_until
from streamer.pipeline import Stream
from streamer.replay import Replay
from streamer.security import LINKS, CurveKeyError, CurveKeys, InsecureKeyError, link_keys, make_keys

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="this libzmq has no CURVE support")


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_make_keys_writes_private_folders_and_secret_keys(tmp_path):
    old = os.umask(0o022)  # the usual umask: what mkdir/open alone would give 0755 / 0644
    try:
        top = make_keys(tmp_path / "keys")
    finally:
        os.umask(old)
    assert _mode(top) == 0o700
    for link in LINKS:
        d = top / link
        assert _mode(d) == 0o700 and _mode(d / "authorized_clients") == 0o700
        for name in ("server", "client"):
            assert _mode(d / f"{name}.key_secret") == 0o600
        assert (d / "authorized_clients" / "client.key").is_file()
    # Keys made earlier with loose modes are tightened, not replaced.
    secret = top / "viewer" / "client.key_secret"
    before = secret.read_bytes()
    secret.chmod(0o644)
    make_keys(top)
    assert _mode(secret) == 0o600 and secret.read_bytes() == before


def test_the_two_links_have_different_keys(tmp_path):
    top = make_keys(tmp_path / "keys")
    acq, view = link_keys(top, "acquisition"), link_keys(top, "viewer")
    assert acq.server_public != view.server_public and acq.client_public != view.client_public
    assert link_keys(top / "viewer", "viewer") == view  # the link folder itself also works
    (tmp_path / "flat").mkdir()
    with pytest.raises(CurveKeyError, match=r"expected the acquisition/ key folder.*\(got \[\]\)"):
        link_keys(tmp_path / "flat", "acquisition")


def test_a_secret_key_that_others_can_read_is_refused(tmp_path):
    top = make_keys(tmp_path / "keys")
    secret = top / "viewer" / "server.key_secret"
    secret.chmod(0o640)
    with pytest.raises(InsecureKeyError, match=r"expected mode 0600, got 0640.*chmod 600"):
        CurveKeys.load(top / "viewer")

    (top / "viewer" / "client.key_secret").chmod(0o604)
    with pytest.raises(CurveKeyError, match=r"expected mode 0600, got 0604"):
        CurveKeys.load_client(top)


def _exit_2_with(p, *needles) -> None:
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2, err
    assert "Traceback" not in err, err
    for n in needles:
        assert n in err, err


def test_the_clis_exit_2_on_a_readable_secret_key(tmp_path, lite_model):
    top = make_keys(tmp_path / "keys")
    (top / "viewer" / "server.key_secret").chmod(0o644)
    (top / "acquisition" / "server.key_secret").chmod(0o644)
    (top / "viewer" / "client.key_secret").chmod(0o644)
    _exit_2_with(run_module("streamer.cli", "--port", "0", "--out-port", "0", "--model",
                            str(lite_model), "--engine", "onnxruntime", "--curve-keys", str(top)),
                 "cannot start", "server.key_secret", "chmod 600")
    _exit_2_with(run_module("streamer.replay_cli", "--simulate", "--count", "1", "--curve-keys",
                            str(top)), "acquisition/server.key_secret", "chmod 600")
    _exit_2_with(run_module("viewer.app", "--port", "5556", "--curve-keys", str(top)),
                 "client.key_secret", "chmod 600")


def test_a_viewer_key_cannot_subscribe_to_the_acquisition_link(zmq_ctx, lite_model, tmp_path):
    top = make_keys(tmp_path / "keys")
    acq, view = link_keys(top, "acquisition"), link_keys(top, "viewer")
    frames = [np.full((64, 64), i, np.uint16) for i in range(400)]
    with Replay(frames=frames, fps=40, series="links", curve_keys=acq,
                wait_subscribers=1) as replay:
        source = replay.bind()
        stream = Stream(source=source, model=lite_model, engine="onnxruntime",
                        curve_keys=top).start()
        # A viewer that knows the acquisition server's public key, connecting with its own pair.
        spy = zmq_ctx.make(zmq.SUB)
        spy.curve_secretkey, spy.curve_publickey = view.client_secret, view.client_public
        spy.curve_serverkey = acq.server_public
        spy.subscribe(b"")
        monitor = spy.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH
                                         | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        try:
            viewer = Collector(zmq_ctx, stream.out_endpoint, curve=view.configure_client)
            wait_until(lambda: stream.subscriptions >= 1, 20, "the viewer to join the stream")
            replay.start()
            spy.connect(source)
            assert monitor.poll(20_000), "no handshake result for the spy within 20 s"
            event = recv_monitor_message(monitor)["event"]
            viewer.wait_for(lambda: len(viewer.frames) >= 10, 30, "frames at the viewer")
        finally:
            stream.stop()
            viewer.stop()
            spy.disable_monitor()
            monitor.close(0)
    # The acquisition server refused the viewer's key; the stream (acquisition key) got frames,
    # and the viewer (viewer key) got the denoised ones from the stream.
    assert event == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    assert spy.poll(0) == 0
    assert stream.summary()["frames_in"] >= 10
