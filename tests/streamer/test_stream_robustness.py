"""Bad input at a running n2a-stream (hypothesis), CURVE, and the recorder's crash safety."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_testutils import PATIENCE, Collector, cli_env, probe_until, wait_until
from streamer.pipeline import Stream
from streamer.net import send_message
from streamer.protocol import ProtocolError, decode, encode_frame
from streamer.recorder import Recorder, iter_records, read_recording
from streamer.replay import Replay
from streamer.security import CurveKeyError, CurveKeys, link_keys, make_keys

MAX_BYTES = 64 * 64 * 4  # --max-frame-bytes of the fuzzed stream: a 64x64 float32 frame


def _good(seq: int, series: str = "fuzz") -> list[bytes]:
    f = np.random.default_rng(seq).integers(0, 1000, size=(32, 32), dtype=np.uint16)
    return [bytes(p) for p in encode_frame(f, seq=seq, series=series, t_acq_ns=time.time_ns())]


def _is_rejected(parts: list[bytes]) -> bool:
    """The oracle: would n2a-stream reject this message? (decode + the stream's own checks)."""
    if sum(len(p) for p in parts[1:]) > MAX_BYTES:
        return True
    try:
        msg = decode(parts)
    except ProtocolError:
        return True
    if msg.type != "frame":
        return False
    return len(msg.arrays) != 1 or (msg.frame.dtype.kind == "f"
                                    and not np.isfinite(msg.frame).all())


@st.composite
def bad_messages(draw):
    """Random bytes, mutated good frames, and specific bad frames (NaN, too large, bad dtype)."""
    kind = draw(st.sampled_from(["random", "mutate", "nan", "large", "dtype", "version"]))
    if kind == "random":
        return draw(st.lists(st.binary(max_size=64), min_size=1, max_size=3))
    base = _good(0)
    header = msgpack.unpackb(base[0])
    if kind == "nan":
        f = np.full((8, 8), np.nan, np.float32)
        return [bytes(p) for p in encode_frame(f, seq=0, series="x", t_acq_ns=0)]
    if kind == "large":
        f = np.zeros((128, 128), np.float32)
        return [bytes(p) for p in encode_frame(f, seq=0, series="x", t_acq_ns=0)]
    if kind == "dtype":
        header["dtype"] = draw(st.sampled_from(["float64", "complex64", "bool", "<u2", ""]))
        return [msgpack.packb(header), base[1]]
    if kind == "version":
        header["v"] = draw(st.integers(2, 1000) | st.just(0))
        return [msgpack.packb(header), base[1]]
    parts = list(base)
    i = draw(st.integers(0, 1))
    b = bytearray(parts[i])
    op = draw(st.sampled_from(["flip", "cut", "grow"]))
    if op == "flip" and b:
        j = draw(st.integers(0, len(b) - 1))
        b[j] ^= draw(st.integers(1, 255))
    elif op == "cut":
        b = b[: draw(st.integers(0, len(b) - 1))]
    else:
        b += draw(st.binary(min_size=1, max_size=16))
    parts[i] = bytes(b)
    return parts


@pytest.fixture(scope="module")
def fuzz_stream(lite_model):
    """One running stream fed by a PUB socket of the test, and a collecting subscriber."""
    from conftest import SocketFactory

    z = SocketFactory()
    pub = z.make(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    stream = Stream(source=f"tcp://127.0.0.1:{port}", model=lite_model, engine="onnxruntime",
                    max_queue=1000, max_frame_bytes=MAX_BYTES).start()
    col = Collector(z, stream.out_endpoint)
    wait_until(lambda: stream.subscriptions >= 1, PATIENCE, "the subscriber to join")
    # Probe until the stream's SUB is connected (PUB drops everything before that).
    probes = iter(range(10**6))  # seq 0 of its own series each: a lost probe is no gap
    probe_until(lambda: send_message(pub, _good(0, f"probe{next(probes)}")), lambda: col.frames,
                PATIENCE, "a probe frame comes through n2a-stream")
    state = {"seq": 0, "bad": 0, "good": 0}
    yield stream, pub, col, state
    stream.stop()
    col.stop()
    z.close()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(batch=st.lists(bad_messages(), min_size=5, max_size=15))
def test_running_stream_counts_every_bad_message_and_delivers_the_good_ones(fuzz_stream, batch):
    stream, pub, col, state = fuzz_stream
    bad = [m for m in batch if _is_rejected(m)]
    rejected_before = stream.stats.rejected.total()
    good_before = len([m for m in col.frames if m.series == "fuzz"])
    sent_good = []
    for parts in bad:
        send_message(pub, _good(state["seq"]))
        sent_good.append(state["seq"])
        state["seq"] += 1
        send_message(pub, parts)
    send_message(pub, _good(state["seq"]))
    sent_good.append(state["seq"])
    state["seq"] += 1
    wait_until(lambda: len([m for m in col.frames if m.series == "fuzz"])
               >= good_before + len(sent_good), PATIENCE, "the good frames")
    # Each bad message was sent before a good one on the same socket and the stream handles its
    # input in order, so every rejection is counted by now; the wait only covers the counter.
    wait_until(lambda: stream.stats.rejected.total() >= rejected_before + len(bad), PATIENCE,
               "every bad message to be counted")
    stream.maybe_raise()
    got = [m.seq for m in col.frames if m.series == "fuzz"][good_before:]
    assert got == sent_good
    assert stream.stats.rejected.total() == rejected_before + len(bad)
    assert stream.stats.counts.get("dropped") == 0 and stream.stats.counts.get("gaps") == 0
    assert col.frames[-1].header["rejected"] == stream.stats.rejected.total()


def test_curve_authenticated_client_receives_and_unauthenticated_does_not(
        zmq_ctx, lite_model, tmp_path):
    key_dir = make_keys(tmp_path / "keys")
    keys = link_keys(key_dir, "viewer")
    frames = [np.full((32, 32), i, np.uint16) for i in range(200)]
    with Replay(frames=frames, fps=20, series="curve", curve_keys=link_keys(key_dir, "acquisition"),
                wait_subscribers=1) as replay:
        stream = Stream(source=replay.bind(), model=lite_model, engine="onnxruntime",
                        curve_keys=key_dir).start()
        try:
            good = Collector(zmq_ctx, stream.out_endpoint, curve=keys.configure_client)
            plain = Collector(zmq_ctx, stream.out_endpoint, monitor=True)
            intruder_keys = link_keys(make_keys(tmp_path / "other"), "viewer")
            # Right server key, but a client key that is not in authorized_clients/.
            intruder = Collector(zmq_ctx, stream.out_endpoint, curve=lambda s: (
                setattr(s, "curve_secretkey", intruder_keys.client_secret),
                setattr(s, "curve_publickey", intruder_keys.client_public),
                setattr(s, "curve_serverkey", keys.server_public)), monitor=True)
            replay.start()
            good.wait_for(lambda: len(good.frames) >= 10, PATIENCE, "authenticated frames")
            # Not "nothing arrived yet" but "the server refused them": each one's handshake
            # failed (the plain client's on the mechanism, the intruder's on authentication).
            failed = {zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_AUTH,
                      zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL}
            for c in (plain, intruder):
                c.wait_for_event(failed, PATIENCE)
        finally:
            stream.stop()
            for c in (good, plain, intruder):
                c.stop()
    assert stream.summary()["rejected"] == 0
    assert good.frames[0].header["series"] == "curve"
    # Without a successful handshake no message can reach them.
    for c in (plain, intruder):
        assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in c.events and c.messages == []


def test_curve_keys_errors(tmp_path):
    with pytest.raises(CurveKeyError, match=r"expected server.key.*\(got \[\]\)"):
        (tmp_path / "empty").mkdir()
        CurveKeys.load(tmp_path / "empty")


# ------------------------------------------------------------------ recorder


def test_recorder_reader_skips_a_torn_or_corrupt_record_and_reports_it(tmp_path):
    frames = [np.full((16, 16), i, np.uint16) for i in range(10)]
    with Recorder(tmp_path, flush_every=1) as rec:
        for i, f in enumerate(frames):
            rec.write("raw", encode_frame(f, seq=i, series="s", t_acq_ns=i))
    (chunk,) = sorted(tmp_path.glob("raw-*.n2arec"))
    data = chunk.read_bytes()
    chunk.write_bytes(data[:-7])  # a crash in the middle of the last record
    r = read_recording(tmp_path)
    assert [m.seq for m in r.frames("raw")] == list(range(9))
    assert "record cut" in r.truncated[chunk.name]
    bad = bytearray(data)
    size = len(data) // 10  # ten records of equal size
    bad[size + size // 2] ^= 0xFF  # a flipped bit inside the second record's payload
    chunk.write_bytes(bytes(bad))
    problems: dict[str, str] = {}
    n = sum(1 for _ in iter_records(chunk, problems))
    assert n == 9 and "CRC mismatch" in problems[chunk.name]  # skipped, and reading goes on


def test_recorder_rolls_chunks_and_appends_to_an_existing_recording(tmp_path):
    f = np.zeros((64, 64), np.uint16)
    with Recorder(tmp_path, chunk_bytes=20_000) as rec:
        for i in range(5):
            rec.write("raw", encode_frame(f, seq=i, series="s", t_acq_ns=0))
    with Recorder(tmp_path) as rec:
        rec.write("raw", encode_frame(f, seq=5, series="s", t_acq_ns=0))
    # ~8.3 kB records, 20 kB chunks: 2 + 2 + 1, then a fresh chunk for the appended run.
    assert len(list(tmp_path.glob("raw-*.n2arec"))) == 4
    assert [m.seq for m in read_recording(tmp_path).frames()] == list(range(6))


_WRITER = """
import sys, numpy as np
from streamer.recorder import Recorder
from streamer.protocol import encode_frame
rec = Recorder(sys.argv[1], flush_every=4, flush_interval_s=60)
i = 0
while True:
    f = (np.arange(48 * 48, dtype=np.uint32).reshape(48, 48) * (i + 1)) % 65521
    rec.write("raw", encode_frame(f.astype(np.uint16), seq=i, series="k", t_acq_ns=i))
    i += 1
    if i == 40:
        print("40", flush=True)
"""


def test_recording_survives_sigkill_up_to_the_last_flush(tmp_path):
    p = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], env=cli_env(),
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "40"
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        p.stdout.close()
    r = read_recording(tmp_path)
    frames = r.frames("raw")
    assert len(frames) >= 40 - 4
    assert [m.seq for m in frames] == list(range(len(frames)))
    for m in frames:
        i = m.seq
        expected = ((np.arange(48 * 48, dtype=np.uint32).reshape(48, 48) * (i + 1)) % 65521)
        np.testing.assert_array_equal(m.frame, expected.astype(np.uint16))


def test_the_publishing_example_in_docs_protocol_md_feeds_n2a_stream(zmq_ctx, lite_model,
                                                                        free_port):
    """The 10-line example of docs/protocol.md, run as written (port, size, context swapped, and
    a wait for the subscriber instead of its sleep)."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    code = doc.split("## Publishing from Python in ten lines", 1)[1].split("```python", 1)[1]
    code = code.split("```", 1)[0]
    # The example's `time.sleep(0.5)` hopes n2a-stream has subscribed by then; a loaded CI machine
    # can take longer, so here the socket is an XPUB and waits for the subscription instead.
    for old, new in (("tcp://127.0.0.1:5555", f"tcp://127.0.0.1:{free_port}"),
                     ("(512, 512)", "(64, 64)"), ("zmq.Context.instance()", "ctx"),
                     ("socket(zmq.PUB)", "socket(zmq.XPUB)"),
                     ("time.sleep(0.5)", "sock.poll(60_000) and sock.recv()")):
        assert old in code, f"docs/protocol.md example changed: {old!r} not found"
        code = code.replace(old, new)
    stream = Stream(source=f"tcp://127.0.0.1:{free_port}", model=lite_model,
                    engine="onnxruntime").start()
    namespace = {"ctx": zmq_ctx.context}
    try:
        exec(compile(code, "docs/protocol.md", "exec"), namespace)  # noqa: S102 - our own docs
        wait_until(lambda: stream.ended, 2 * PATIENCE, "the example's end message and all frames out")
    finally:
        namespace["sock"].close(0)
        summary = stream.stop()
    assert summary["frames_in"] == 100 and summary["rejected"] == 0 and summary["gaps"] == 0
    assert summary["published"] + summary["dropped"] == 100


def test_each_kind_of_bad_input_is_counted_under_its_reason(fuzz_stream):
    stream, pub, col, state = fuzz_stream
    before = stream.stats.rejected.snapshot()
    header = msgpack.unpackb(_good(0)[0])
    nan = np.full((8, 8), np.nan, np.float32)
    cases = {
        "malformed": [b"\x93garbage"],
        "version": [msgpack.packb(dict(header, v=2)), _good(0)[1]],
        "dtype": [msgpack.packb(dict(header, dtype="float64")), _good(0)[1]],
        "payload_length": [_good(0)[0], _good(0)[1][:-2]],
        "non_finite": [bytes(p) for p in encode_frame(nan, seq=0, series="x", t_acq_ns=0)],
        "too_large": [bytes(p) for p in encode_frame(np.zeros((65, 64), np.float32), seq=0,
                                                     series="x", t_acq_ns=0)],
        "parts": [_good(0)[0]],
        "field": [msgpack.packb(dict(header, seq=-4)), _good(0)[1]],
    }
    for parts in cases.values():
        send_message(pub, parts)
    # A good frame after the bad ones: once it is out, each bad one has been handled (one socket,
    # in order).
    probe = state["seq"]
    send_message(pub, _good(probe))
    state["seq"] += 1
    col.wait_for(lambda: any(m.series == "fuzz" and m.seq == probe for m in col.frames),
                 PATIENCE, "the good frame after the bad ones")
    wait_until(lambda: stream.stats.rejected.total() >= sum(before.values()) + len(cases),
               PATIENCE, "every bad message to be counted")
    after = stream.stats.rejected.snapshot()
    assert {k: after.get(k, 0) - before.get(k, 0) for k in cases} == dict.fromkeys(cases, 1)
    stream.maybe_raise()
