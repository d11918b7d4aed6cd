"""bench.harness: the SUB client the stream benchmarks share, on a real PUB socket on loopback."""
from __future__ import annotations

import time

import numpy as np
import zmq

from bench.harness import OutputClient
from streamer.protocol import encode_end, encode_frame


def test_output_client_keeps_a_row_per_frame_after_the_skipped_ones():
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    client = OutputClient(ctx, f"tcp://127.0.0.1:{port}", skip=2, keep_denoised=True)
    client.start()
    den = np.arange(12, dtype=np.float32).reshape(3, 4)
    try:
        seq, deadline = 0, time.monotonic() + 60
        # Probe until frames get through (PUB drops what is sent before the SUB has joined).
        while len(client.rows) < 3 and time.monotonic() < deadline:
            pub.send_multipart(encode_end("s"))  # not a frame: no row, not counted
            pub.send_multipart(encode_frame([den], parts=["denoised"], seq=seq, series="s",
                                            t_acq_ns=time.time_ns(), timing={"denoise": 5}, model="m"))
            seq += 1
            time.sleep(0.01)
    finally:
        client.close()
        pub.close(0)
        ctx.term()
    assert not client.is_alive()
    assert len(client.rows) >= 3, f"expected 3 rows within 60 s (got {len(client.rows)})"
    assert client.seen == len(client.rows) + 2  # the first two frames received are skipped
    seqs = [r["seq"] for r in client.rows]
    assert seqs == sorted(seqs) and seqs[0] >= 2
    for r in client.rows:
        assert r["model"] == "m" and r["timing"] == {"denoise": 5} and r["latency_ms"] >= 0
        np.testing.assert_array_equal(r["denoised"], den)
    assert client.latency_ms == [r["latency_ms"] for r in client.rows]
