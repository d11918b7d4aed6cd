"""n2a-stream --lattice-average: real loopback sockets (PUSH -> n2a-stream PULL, its XPUB -> a SUB
collector), the bundled model in ONNX Runtime. The translations are found once per series, every
header says how many the frame was averaged over, and a crystal comes out closer to its truth."""
from __future__ import annotations

import numpy as np
import pytest

from detector_styles import bundled_model, defect_free_crystal, mean_correlation
from noise2atom.lattice_average import lattice_average, lattice_offsets
from noise2atom.scaling import denoise_resampled, estimate_scaling, series_zoom, zoom_up_order
from stream_testutils import push_series_through_stream
from streamer import protocol

import engines


def test_each_frame_is_averaged_over_its_series_translations(zmq_ctx):
    truth, crystal = defect_free_crystal((112, 128), 4)
    noise = np.random.default_rng(0).poisson(2.0, (3, 96, 96)).astype(np.uint16)  # nothing repeats
    series = {"crystal": crystal, "noise": noise}
    out, status, summary, text = push_series_through_stream(zmq_ctx, bundled_model(), series,
                                                            lattice_average=True)
    assert summary["dropped"] == 0 and summary["rejected"] == 0
    counts = {name: {m.header["lattice_average"] for m in msgs} for name, msgs in out.items()}
    assert counts["noise"] == {0}
    (k,) = counts["crystal"]
    assert k >= 8, counts
    assert all(m.header["timing"]["lattice"] > 0 for m in out["crystal"])
    assert "lattice average: no lattice" in status  # the last series was the noise
    assert summary["lattice_average"] == {"translations": 0, "skipped": 0}
    assert "lattice average over 0 translations" in text

    # Exactly the file path's step: the first output's translations, each frame averaged in model
    # units after the network's second pass on the lattice-averaged raw frame.
    norm = estimate_scaling(crystal[0])
    pitches, _ = series_zoom(norm.to_model(crystal[0]))
    order = zoom_up_order(norm.to_model(crystal[0]))
    with engines.open_engine(bundled_model(), "onnxruntime") as engine:
        def net(x):
            return denoise_resampled(x, pitches[1], pitches[0], lambda a: engine.infer(a[None])[0],
                                     up_order=order)
        xs = [norm.to_model(frame) for frame in crystal]
        offsets = lattice_offsets(net(xs[0]))
        expected = [norm.from_model(lattice_average(net(x), x, offsets, denoise=net)) for x in xs]
    got = np.stack([m.arrays["denoised"] for m in out["crystal"]])
    assert len(offsets) == k
    np.testing.assert_allclose(got, np.stack(expected), atol=2e-4)

    # ... and the same crystal without the step: nil in every header, further from the truth.
    plain, status_off, summary_off, _ = push_series_through_stream(zmq_ctx, bundled_model(),
                                                                   {"crystal": crystal})
    assert all(m.header["lattice_average"] is None for m in plain["crystal"])
    assert "lattice average" not in status_off and summary_off["lattice_average"] is None
    den_off = np.stack([m.arrays["denoised"] for m in plain["crystal"]])
    assert mean_correlation(got, truth) > mean_correlation(den_off, truth) + 0.005


def test_output_header_lattice_average_field_is_validated():
    frame = np.zeros((4, 4), np.float32)
    for good in (None, 0, 16):
        parts = protocol.encode_frame(frame, seq=0, series="s", t_acq_ns=1, lattice_average=good)
        assert protocol.decode([bytes(p) for p in parts]).header["lattice_average"] == good
    for bad in (-1, 2.0, "16", True):
        parts = protocol.encode_frame(frame, seq=0, series="s", t_acq_ns=1, lattice_average=bad)
        with pytest.raises(protocol.ProtocolError, match=r"'lattice_average' must be .*\(got "):
            protocol.decode([bytes(p) for p in parts])
