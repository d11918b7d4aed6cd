"""Protocol v1: round trips, every validation rule, and a hypothesis fuzz of the decoder."""
from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.protocol import (
    ALLOWED_DTYPES,
    Message,
    ProtocolError,
    decode,
    encode_end,
    encode_frame,
    encode_start,
)


def _frame(dtype="uint16", shape=(8, 6), seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random(shape) * 1000).astype(dtype)


@pytest.mark.parametrize("dtype", ALLOWED_DTYPES)
def test_frame_round_trip_every_dtype(dtype):
    a = _frame(dtype)
    parts = encode_frame(a, seq=7, series="s", t_acq_ns=42, meta={"pixel_size_pm": 12.5})
    msg = decode([bytes(p) for p in parts])
    assert isinstance(msg, Message)
    assert (msg.type, msg.series, msg.seq, msg.t_acq_ns) == ("frame", "s", 7, 42)
    assert msg.meta == {"pixel_size_pm": 12.5}
    assert list(msg.arrays) == ["raw"]
    assert msg.frame.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(msg.frame, a)


def test_output_round_trip_two_parts_with_dtypes():
    den = np.linspace(0, 1, 48, dtype=np.float32).reshape(8, 6)
    raw = _frame("uint16")
    parts = encode_frame([den, raw], parts=["denoised", "raw"], seq=1, series="s", t_acq_ns=1,
                         css=0.9, css_raw=None, css_mean=0.8, timing={"denoise": 1000},
                         engine="onnxruntime", model="abc", dropped=2, gaps=0, meta_mismatch=[])
    msg = decode(parts)
    assert msg.header["parts"] == ["denoised", "raw"]
    assert msg.header["dtypes"] == ["float32", "uint16"]
    np.testing.assert_array_equal(msg.arrays["denoised"], den)
    np.testing.assert_array_equal(msg.arrays["raw"], raw)
    assert msg.header["dropped"] == 2 and msg.header["css_raw"] is None


def test_big_endian_and_non_contiguous_inputs_are_sent_little_endian_c_order():
    a = _frame("uint16", (10, 12))
    msg = decode(encode_frame(a.astype(">u2")[:, ::2], seq=0, series="s", t_acq_ns=0))
    np.testing.assert_array_equal(msg.frame, a[:, ::2])


def test_start_and_end():
    m = decode(encode_start("s", meta={"dwell_us": 2.0}, shape=[4, 4]))
    assert (m.type, m.series, m.meta, m.seq) == ("start", "s", {"dwell_us": 2.0}, None)
    m = decode(encode_end("s", count=3))
    assert (m.type, m.header["count"]) == ("end", 3)
    with pytest.raises(ProtocolError, match="has no frame|carries no frame"):
        m.frame


def _header(**over):
    h = {"v": 1, "type": "frame", "series": "s", "seq": 0, "shape": [2, 3], "dtype": "uint8",
         "t_acq_ns": 0}
    h.update(over)
    return {k: v for k, v in h.items() if v is not ...}


@pytest.mark.parametrize(
    ("header", "payload", "reason", "match"),
    [
        (_header(v=2), b"\0" * 6, "version", r"version must be 1 \(got 2\)"),
        (_header(v=True), b"\0" * 6, "version", r"version must be 1 \(got True\)"),
        (_header(type="frames"), b"\0" * 6, "type", r"type must be one of .*\(got 'frames'\)"),
        (_header(series=...), b"\0" * 6, "field", r"'series' is required"),
        (_header(series=""), b"\0" * 6, "field", r"non-empty"),
        (_header(seq=-1), b"\0" * 6, "field", r"seq.*>= 0 \(got -1\)"),
        (_header(seq="1"), b"\0" * 6, "field", r"'seq' must be an int"),
        (_header(t_acq_ns=1.5), b"\0" * 6, "field", r"t_acq_ns"),
        (_header(shape=[6]), b"\0" * 6, "shape", r"\[H, W\].*\(got \[6\]\)"),
        (_header(shape=[0, 6]), b"", "shape", r"positive"),
        (_header(shape=[1, 2, 3]), b"\0" * 6, "shape", r"\(got \[1, 2, 3\]\)"),
        (_header(dtype="float64"), b"\0" * 48, "dtype", r"dtype must be one of .*\(got 'float64'\)"),
        (_header(dtype="object"), b"\0" * 6, "dtype", r"got 'object'"),
        (_header(), b"\0" * 5, "payload_length", r"must be 2\*3\*1 = 6 bytes.*\(got 5\)"),
        (_header(dtype="uint16"), b"\0" * 6, "payload_length", r"= 12 bytes.*\(got 6\)"),
        (_header(parts=["a", "a"]), b"\0" * 6, "parts", r"distinct"),
        (_header(meta=[1]), b"\0" * 6, "field", r"'meta' must be a map"),
        (_header(css="x"), b"\0" * 6, "field", r"'css' must be"),
        (_header(dropped=-1), b"\0" * 6, "field", r"'dropped'"),
    ],
)
def test_bad_frames_raise_with_expected_and_got(header, payload, reason, match):
    with pytest.raises(ProtocolError, match=match) as info:
        decode([msgpack.packb(header), payload])
    assert info.value.reason == reason


def test_wrong_number_of_parts():
    with pytest.raises(ProtocolError, match=r"has 2 message parts \(got 1\)") as info:
        decode([msgpack.packb(_header())])
    assert info.value.reason == "parts"
    with pytest.raises(ProtocolError, match=r"has 3 message parts \(got 2\)"):
        decode([msgpack.packb(_header(parts=["denoised", "raw"])), b"\0" * 6])
    with pytest.raises(ProtocolError, match=r"'end' message has 1 part \(got 2\)"):
        decode([encode_end("s")[0], b"x"])
    with pytest.raises(ProtocolError, match=r"got 0 parts"):
        decode([])


def test_garbage_headers():
    for raw in (b"", b"\xc1", b"\x93\x01\x02\x03", msgpack.packb({1: 2}), b"{\"v\": 1}"):
        with pytest.raises(ProtocolError) as info:
            decode([raw])
        assert info.value.reason in ("malformed", "version")


def test_encode_rejects_bad_input():
    with pytest.raises(ProtocolError, match=r"dtype must be one of .*\(got float64\)"):
        encode_frame(np.zeros((2, 2)), seq=0, series="s", t_acq_ns=0)
    with pytest.raises(ProtocolError, match=r"2-D.*\(got shape \(2,\)\)"):
        encode_frame(np.zeros(2, np.uint8), seq=0, series="s", t_acq_ns=0)
    with pytest.raises(ProtocolError, match=r"need parts= names"):
        encode_frame([np.zeros((2, 2), np.uint8)] * 2, seq=0, series="s", t_acq_ns=0)
    with pytest.raises(ProtocolError, match=r"seq must be an int >= 0 \(got -3\)"):
        encode_frame(np.zeros((2, 2), np.uint8), seq=-3, series="s", t_acq_ns=0)
    with pytest.raises(ProtocolError, match=r"msgpack types"):
        encode_start("s", meta={"x": object()})


_GOOD = encode_frame(np.arange(12, dtype=np.uint16).reshape(3, 4), seq=5, series="s", t_acq_ns=9)
_GOOD = [bytes(p) for p in _GOOD]


def _mutate(data, parts):
    """Flip, cut or extend bytes of one part, or drop/duplicate a part."""
    parts = list(parts)
    op = data.draw(st.sampled_from(["flip", "truncate", "extend", "drop", "dup", "header"]))
    i = data.draw(st.integers(0, len(parts) - 1))
    if op == "flip" and parts[i]:
        b = bytearray(parts[i])
        j = data.draw(st.integers(0, len(b) - 1))
        b[j] ^= data.draw(st.integers(1, 255))
        parts[i] = bytes(b)
    elif op == "truncate":
        parts[i] = parts[i][: data.draw(st.integers(0, max(0, len(parts[i]) - 1)))]
    elif op == "extend":
        parts[i] = parts[i] + data.draw(st.binary(min_size=1, max_size=8))
    elif op == "drop":
        parts.pop(i)
    elif op == "dup":
        parts.insert(i, parts[i])
    else:
        h = msgpack.unpackb(parts[0])
        key = data.draw(st.sampled_from(sorted(h)))
        h[key] = data.draw(st.one_of(st.none(), st.integers(-5, 2**40), st.text(max_size=4),
                                     st.lists(st.integers(-2, 5), max_size=3), st.floats()))
        parts[0] = msgpack.packb(h)
    return parts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_decode_never_crashes_otherwise(data):
    """Random bytes and mutated good messages: decode returns a valid Message or ProtocolError."""
    if data.draw(st.booleans()):
        parts = data.draw(st.lists(st.binary(max_size=40), min_size=0, max_size=4))
    else:
        parts = _mutate(data, _GOOD)
    try:
        msg = decode(parts)
    except ProtocolError as e:
        assert "(got" in str(e)
        return
    # Anything accepted must be self-consistent.
    if msg.type == "frame":
        h, w = msg.header["shape"]
        for arr in msg.arrays.values():
            assert arr.shape == (h, w) and arr.dtype.name in ALLOWED_DTYPES
