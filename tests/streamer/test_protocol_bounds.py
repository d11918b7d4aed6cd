"""The bounds of protocol v1 in the pure codec (issue 10 item 3): what it accepts is finite."""
from __future__ import annotations

import msgpack
import numpy as np
import pytest

from streamer.protocol import (MAX_HEADER_BYTES, MAX_META_BYTES, MAX_SERIES_CHARS, ProtocolError,
                               check_meta, decode, encode_end, encode_frame, encode_start,
                               flat_meta)

F = np.zeros((4, 4), np.uint16)


def _decode_header(**fields):
    header = dict(v=1, type="frame", series="s", seq=0, shape=[4, 4], dtype="uint16", t_acq_ns=0)
    header.update(fields)
    return decode([msgpack.packb(header), F.tobytes()])


@pytest.mark.parametrize("field,value,match", [
    ("seq", 2**63, r"'seq' must be an int < 2\*\*63 \(got 9223372036854775808\)"),
    ("seq", 2**64 - 1, r"'seq' must be an int < 2\*\*63"),
    ("t_acq_ns", 2**64 - 1, r"'t_acq_ns' must be an int < 2\*\*63"),
    ("t_acq_ns", -2**63, r"'t_acq_ns' must be an int >= 0 \(got -9223372036854775808\)"),
    ("series", "x" * (MAX_SERIES_CHARS + 1), r"at most 256 characters \(got 257 characters\)"),
])
def test_decode_rejects_out_of_range_fields(field, value, match):
    with pytest.raises(ProtocolError, match=match) as e:
        _decode_header(**{field: value})
    assert e.value.reason == "field"


def test_the_largest_values_allowed_round_trip():
    m = _decode_header(seq=2**63 - 1, t_acq_ns=2**63 - 1, series="s" * MAX_SERIES_CHARS)
    assert m.seq == 2**63 - 1 and m.t_acq_ns == 2**63 - 1 and len(m.series) == 256
    parts = encode_frame(F, seq=2**63 - 1, series="s" * 256, t_acq_ns=2**63 - 1)
    assert decode([bytes(p) for p in parts]).seq == 2**63 - 1


@pytest.mark.parametrize("meta,match", [
    ({"a": {"b": 1}}, r"flat map.*\(got key 'a' holding a dict\)"),
    ({"a": [1, [2]]}, r"flat map.*\(got key 'a' holding a list of 2 items\)"),
    ({"a": list(range(65))}, r"lists of at most 64 scalars \(got key 'a' holding a list of 65"),
    ({f"k{i}": "x" * 100 for i in range(200)}, r"at most 16384 bytes packed \(got 2\d{4}\)"),
])
def test_meta_must_be_a_flat_bounded_map(meta, match):
    with pytest.raises(ProtocolError, match=match) as e:
        _decode_header(meta=meta)
    assert e.value.reason == "meta"
    with pytest.raises(ProtocolError, match=match) as e:
        encode_start("s", meta=meta)
    assert e.value.reason == "encode"
    with pytest.raises(ProtocolError, match=match):
        encode_frame(F, seq=0, series="s", t_acq_ns=0, meta=meta)


def test_encode_refuses_what_decode_would_reject():
    for kw, match in (({"seq": 2**63}, "seq must be an int < 2"),
                      ({"t_acq_ns": -1}, "t_acq_ns must be an int >= 0"),
                      ({"t_acq_ns": 2**64 - 1}, "t_acq_ns must be an int < 2"),
                      ({"series": "x" * 257}, "at most 256 characters")):
        args = dict(seq=0, series="s", t_acq_ns=0) | kw
        with pytest.raises(ProtocolError, match=match):
            encode_frame(F, **args)
    with pytest.raises(ProtocolError, match="at most 256 characters"):
        encode_end("x" * 257)


def test_a_header_over_the_limit_is_rejected_before_unpacking():
    with pytest.raises(ProtocolError, match=r"at most 65536 bytes \(got \d+\)") as e:
        _decode_header(junk="x" * MAX_HEADER_BYTES)
    assert e.value.reason == "header_size"


def test_a_deeply_nested_meta_is_rejected_not_compared():
    header = msgpack.packb(dict(v=1, type="start", series="s"))
    nested = bytes([header[0] + 1]) + header[1:] + msgpack.packb("meta") + b"\x81\xa1a" * 1000 + b"\x01"
    with pytest.raises(ProtocolError, match="holding a dict") as e:
        decode([nested])
    assert e.value.reason == "meta"


def test_flat_meta_makes_any_metadata_fit():
    rich = {"pixel_size_nm": 0.02, "axes": [{"name": "x"}], "tags": {"a": {"b": [1, 2]}},
            "hist": list(range(1000)), "big": 2**70, "blob": "x" * 5000,
            **{f"k{i}": "y" * 100 for i in range(300)}}
    flat = flat_meta(rich)
    assert check_meta(flat) == flat
    assert len(msgpack.packb(flat)) <= MAX_META_BYTES
    assert flat["pixel_size_nm"] == 0.02 and flat["tags.a.b"] == [1, 2]
    assert "axes" not in flat and "hist" not in flat and "big" not in flat


def test_an_output_header_with_the_largest_meta_decodes():
    """What n2a-stream publishes (16 KiB meta, a 256-character name) stays within the header limit."""
    meta = flat_meta({f"k{i}": "z" * 60 for i in range(1000)})
    name = "n" * 256
    parts = encode_frame([np.zeros((4, 4), np.float32), F], parts=["denoised", "raw"], seq=1,
                         series=name, t_acq_ns=1, meta=meta, css=None, css_raw=None,
                         css_mean=None, css_raw_mean=None, timing={"queue": 1}, engine="e",
                         model="m", dropped=0, gaps=0, meta_mismatch=sorted(meta))
    assert decode([bytes(p) for p in parts]).header["meta"] == meta


def test_min_frame_side_is_the_generators():
    from noise2atom.models import MIN_SIDE
    from streamer.receive import MIN_FRAME_SIDE

    assert MIN_FRAME_SIDE == MIN_SIDE
