"""Fixtures for the Nion Swift plug-in tests: Nion's simulated microscope (nionswift-usim) headless.

Swift runs with its ``TestUI`` (no window) and a memory-backed library, as in Nion's own tests
(``nion/instrumentation/test/AcquisitionTestContext.py``); the scan device is usim's.
"""
from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
import zmq

# --import-mode=importlib puts no test folder on sys.path: our helpers and the streamer tests' ones.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "streamer"))  # stream_testutils
sys.path.insert(0, str(Path(__file__).parent))  # nion_testutils

@pytest.fixture
def zmq_context():
    """A ZeroMQ context whose termination must finish within 5 s (a leaked socket fails)."""
    ctx = zmq.Context()
    yield ctx
    t = threading.Thread(target=ctx.term, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "zmq context did not terminate within 5 s: a socket leaked"


@pytest.fixture
def usim(request, tmp_path):
    """Swift (TestUI, memory library) with usim's STEM controller and scan device registered.

    ``@pytest.mark.parametrize("usim", [True], indirect=True)``: with a Swift ``Application`` too.
    """
    pytest.importorskip("nion.usim_device", reason="needs the nion extra: pip install n2a[nion]")
    from nion.instrumentation.test import AcquisitionTestContext
    from nion.swift.test import TestContext
    from nion.usim_device import DeviceConfiguration

    setup = TestContext.TestSetup()  # Swift's test application and asyncio loop
    config = DeviceConfiguration.AcquisitionContextConfiguration(set_configuration_location=False)
    config.configuration_location = str(tmp_path)  # settings files go here, not into the cwd
    is_app = bool(getattr(request, "param", False))
    context = AcquisitionTestContext.AcquisitionTestContext(config, is_app=is_app)
    try:
        yield context
    finally:
        context.close()
        del setup
