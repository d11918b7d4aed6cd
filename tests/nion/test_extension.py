"""Swift's side of the plug-in: found in the nionswift_plugin namespace, made via Swift's API."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import numpy as np
import pytest
import zmq

from nion_testutils import pump_until

pytest.importorskip("nion.usim_device", reason="needs the nion extra: pip install n2a[nion]")

from nion.swift import Application as ApplicationModule  # noqa: E402
from nion.swift import Facade  # noqa: E402
from nion.swift.model import PlugInManager  # noqa: E402
from nion.utils import Geometry  # noqa: E402

from stream_testutils import PATIENCE, probe_until  # noqa: E402


def _extensions():
    """The classes Swift's plug-in manager would create from nionswift_plugin.n2a_live."""
    import nionswift_plugin

    names = {m.name for m in pkgutil.iter_modules(nionswift_plugin.__path__)}
    assert "n2a_live" in names, f"n2a_live is not in the nionswift_plugin namespace (got {names})"
    module = importlib.import_module("nionswift_plugin.n2a_live")
    return [cls for name, cls in inspect.getmembers(module, inspect.isclass)
            if name.endswith("Extension") and getattr(cls, "extension_id", None)]


@pytest.mark.parametrize("usim", [True], indirect=True)
def test_swift_creates_the_extension_which_sends_scans_and_shows_output(usim, monkeypatch):
    from streamer.protocol import decode, encode_frame

    extensions = _extensions()
    assert [c.extension_id for c in extensions] == ["n2a.live"]
    ctx = zmq.Context.instance()
    output = ctx.socket(zmq.PUB)  # stands in for n2a-stream's output socket
    output.linger = 0
    out_port = output.bind_to_random_port("tcp://127.0.0.1")
    monkeypatch.setenv("N2A_LIVE_ADDRESS", "tcp://127.0.0.1:0")
    monkeypatch.setenv("N2A_LIVE_OUTPUT", f"tcp://127.0.0.1:{out_port}")
    dc = usim.document_controller
    monkeypatch.setattr(ApplicationModule, "app", dc.app)  # what Swift's launcher sets
    Facade.initialize()
    extension = extensions[0](PlugInManager.APIBroker())
    bridge = extension.bridge
    sub = ctx.socket(zmq.SUB)  # stands in for n2a-stream's input
    sub.linger = 0
    sub.subscribe(b"")
    sub.connect(bridge.sender.endpoint)
    hs = usim.scan_hardware_source
    try:
        pump_until(dc, lambda: bridge.sender.subscribers == 1, "the subscription to reach Swift")
        params = hs.get_current_frame_parameters()
        params.size = Geometry.IntSize(64, 64)
        hs.start_playing(frame_parameters=params, sync_timeout=10.0)
        pump_until(dc, lambda: sub.poll(0), "a scan frame published by the extension")
        hs.stop_playing(sync_timeout=10.0)
        first = sub.recv_multipart()
        # n2a-stream's answer goes back into Swift through Swift's own queue_task.
        denoised = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
        msg = encode_frame([denoised], seq=7, series="swift-usim_scan_device_a-1", t_acq_ns=1,
                           meta={"swift_channel": "usim_scan_device_a", "detector": "HAADF",
                                 "pixel_size_nm": 1.5}, parts=["denoised"], css=0.5,
                           flags=["flat_output"])
        ref = usim.document_model.get_data_item_reference("n2a_usim_scan_device_a")
        probe_until(lambda: output.send_multipart(msg),
                    lambda: (dc.periodic(), ref.data_item is not None)[1], PATIENCE,
                    "the denoised item in Swift")
        pump_until(dc, lambda: bridge.shown.get("usim_scan_device_a", 0) >= 1, "the item shown")
        item = ref.data_item
    finally:
        extension.close()
        sub.close(0)
        output.close(0)
    opening = decode(first)  # the series opens with a start message carrying Swift's settings
    assert opening.type == "start" and opening.series == "swift-usim_scan_device_a-1"
    assert opening.meta["detector"] == "HAADF" and opening.meta["pixel_size_nm"] > 0
    assert bridge.completed >= 1 and bridge.sender.sent >= 1
    np.testing.assert_array_equal(item.data, denoised)
    assert item.title == "HAADF (n2a)  CSS 0.500  ⚑ flat_output"
    assert item.metadata["n2a"]["seq"] == 7
    assert item.dimensional_calibrations[0].units == "nm"
    assert item.dimensional_calibrations[0].scale == pytest.approx(1.5)


def test_the_extension_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("N2A_LIVE", "0")
    extension = _extensions()[0](PlugInManager.APIBroker())
    assert extension.bridge is None
    extension.close()
