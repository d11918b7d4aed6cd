"""Wire protocol v1: pure encode and decode functions for n2a's ZeroMQ messages.

A message is a ZeroMQ multipart message ``[header, payload, (payload2, ...)]``:

- ``header`` is a msgpack map. Always: ``v`` (1), ``type`` (``"start"``, ``"frame"``, ``"end"``),
  ``series`` (str, at most :data:`MAX_SERIES_CHARS` characters). Frames add ``seq`` (int,
  ``0 <= seq < 2**63``, increasing), ``shape`` ([H, W]), ``dtype`` (numpy name, one of
  :data:`ALLOWED_DTYPES`), ``t_acq_ns`` (int, ``0 <= t_acq_ns < 2**63``) and an optional ``meta``:
  a flat map of acquisition settings (scalars and short lists, at most :data:`MAX_META_BYTES`
  bytes; see :func:`check_meta`). Outputs of ``n2a-stream`` add ``css``, ``css_raw``, ``css_mean``,
  ``timing``, ``engine``, ``model``, ``dropped``, ``gaps``, ``meta_mismatch``, ``flags``, ``resample``
  (the zoom the frame was denoised at, or nil), ``lattice_average`` (how many lattice translations
  the frame was averaged over, or nil) and ``parts`` (the names of the payload parts, e.g.
  ``["denoised", "raw"]``).
- each payload is the raw little-endian C-order bytes of one (H, W) array, exactly
  ``H * W * itemsize`` long. All parts share ``shape``; ``dtype`` is the first part's dtype and the
  optional ``dtypes`` list gives one dtype per part when they differ (the denoised output is float32,
  the raw frame keeps its detector dtype).

No pickle anywhere: msgpack for the header, raw bytes for the arrays. This module is the single source
of truth for the format; ``docs/protocol.md`` describes it for other languages.

Buffers and zero copy: :func:`encode_frame` returns the arrays themselves (no copy) and
:func:`streamer.net.send_message` hands payloads above :data:`COPY_THRESHOLD` bytes to ZeroMQ with ``copy=False``.
ZeroMQ then keeps a reference to the array until the bytes are on the wire, so the rule is simply
*never write into an array after sending it*: every n2a sender sends a fresh array per frame (the
engine's output, a newly received raw frame, a newly simulated frame) and never mutates it afterwards.
Callers that want to reuse a buffer pass ``track=True`` and wait on the returned
:class:`zmq.MessageTracker` (``tracker.wait(timeout)``) before writing into it again.

Examples
--------
>>> import numpy as np
>>> parts = encode_frame(np.arange(6, dtype=np.uint16).reshape(2, 3), seq=0, series="s1",
...                      t_acq_ns=123)
>>> msg = decode([bytes(p) for p in parts])
>>> msg.type, msg.series, msg.seq, msg.frame.tolist()
('frame', 's1', 0, [[0, 1, 2], [3, 4, 5]])
>>> decode([encode_end("s1")[0]]).type
'end'
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgpack
import numpy as np

__all__ = [
    "ALLOWED_DTYPES",
    "COPY_THRESHOLD",
    "DEFAULT_INPUT_PART",
    "MAX_HEADER_BYTES",
    "MAX_INT",
    "MAX_META_BYTES",
    "MAX_META_LIST",
    "MAX_SEQ_JUMP",
    "MAX_SERIES_CHARS",
    "MESSAGE_TYPES",
    "OUTPUT_FIELDS",
    "PROTOCOL_VERSION",
    "Message",
    "ProtocolError",
    "decode",
    "encode_end",
    "encode_frame",
    "encode_start",
    "check_meta",
    "flat_meta",
]

PROTOCOL_VERSION = 1
MESSAGE_TYPES = ("start", "frame", "end")
ALLOWED_DTYPES = ("uint8", "uint16", "uint32", "int16", "int32", "float32")
#: Part name of a frame message that carries no ``parts`` list (what acquisition programs send).
DEFAULT_INPUT_PART = "raw"
#: Payloads at least this many bytes go to ZeroMQ without a copy (below it copying is cheaper).
COPY_THRESHOLD = 64 * 1024
#: A header larger than this is rejected before unpacking (a header is a few hundred bytes; this
#: leaves room for a full ``meta`` and the output fields).
MAX_HEADER_BYTES = 64 * 1024
#: ``seq`` and ``t_acq_ns`` are below this (a signed 64-bit int in every language).
MAX_INT = 2**63
#: Longest series name, in characters (output names add ``#k`` within the same limit).
MAX_SERIES_CHARS = 256
#: ``meta`` packed with msgpack is at most this many bytes.
MAX_META_BYTES = 16 * 1024
#: A list value in ``meta`` has at most this many scalar items.
MAX_META_LIST = 64
#: A receiver treats a forward jump in ``seq`` of more than this many frames as a new series (the
#: publisher renumbered), not as that many frames lost.
MAX_SEQ_JUMP = 1 << 20
_SCALARS = (str, int, float, bool, type(None))

MessageType = Literal["start", "frame", "end"]

#: Output fields added by ``n2a-stream`` and the types each may have (checked when present).
OUTPUT_FIELDS: dict[str, tuple[type, ...]] = {
    "css": (float, int, type(None)),
    "css_raw": (float, int, type(None)),
    "css_mean": (float, int, type(None)),
    "css_raw_mean": (float, int, type(None)),
    "timing": (dict,),
    "engine": (str, dict),
    "model": (str,),
    "dropped": (int,),
    "gaps": (int,),
    "meta_mismatch": (list,),
    "flags": (list,),
    "learn": (dict,),
    "resample": (float, int, type(None)),
    "lattice_average": (int, type(None)),
}


class ProtocolError(ValueError):
    """A message does not follow protocol v1.

    Parameters
    ----------
    message
        What was expected and what was got.
    reason
        A short machine-readable category used for counting bad input: ``"malformed"``,
        ``"version"``, ``"type"``, ``"field"``, ``"dtype"``, ``"shape"``, ``"payload_length"``,
        ``"parts"``, ``"meta"``, ``"header_size"``, ``"encode"``.
    """

    def __init__(self, message: str, *, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Message:
    """One decoded protocol message.

    Attributes
    ----------
    type
        ``"start"``, ``"frame"`` or ``"end"``.
    series
        The series this message belongs to.
    seq
        Sequence number (frames only, else ``None``).
    arrays
        The payload arrays by part name (frames only; read-only views of the received buffers).
    header
        The full decoded header.
    """

    type: MessageType
    series: str
    seq: int | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    header: dict[str, Any] = field(default_factory=dict)

    @property
    def frame(self) -> np.ndarray:
        """The first payload array (the raw frame of an input, the denoised frame of an output)."""
        if not self.arrays:
            raise ProtocolError(f"a {self.type!r} message carries no frame (got no payload)",
                                reason="parts")
        return next(iter(self.arrays.values()))

    @property
    def meta(self) -> dict[str, Any]:
        """Acquisition settings sent with the message (empty when none)."""
        return self.header.get("meta") or {}

    @property
    def t_acq_ns(self) -> int | None:
        """Acquisition timestamp in ns (frames only)."""
        return self.header.get("t_acq_ns")

    @property
    def shape(self) -> tuple[int, int] | None:
        """Frame shape (frames only)."""
        shape = self.header.get("shape")
        return tuple(shape) if shape is not None else None


# --------------------------------------------------------------------------- encoding


def _check_series(series: Any, reason: str) -> str:
    if not isinstance(series, str) or not series or len(series) > MAX_SERIES_CHARS:
        got = (f"{len(series)} characters" if isinstance(series, str) and series
               else repr(series)[:80])
        raise ProtocolError(f"series must be a non-empty str of at most {MAX_SERIES_CHARS} "
                            f"characters (got {got})", reason=reason)
    return series


def _check_int(value: Any, key: str, reason: str) -> int:
    """An int in ``0 <= value < MAX_INT`` (``seq``, ``t_acq_ns``)."""
    if isinstance(value, np.integer):
        value = int(value)
    if not _is_int(value) or value < 0:
        raise ProtocolError(f"{key} must be an int >= 0 (got {value!r})", reason=reason)
    if value >= MAX_INT:
        raise ProtocolError(f"{key} must be an int < 2**63 (got {value})", reason=reason)
    return value


def check_meta(meta: Any, *, reason: str = "meta") -> dict[str, Any]:
    """Check that ``meta`` keeps to the protocol and return it as a plain dict.

    ``meta`` is a flat map: str keys, each value a scalar (str, int, float, bool, nil) or a list
    of at most :data:`MAX_META_LIST` scalars, all of it at most :data:`MAX_META_BYTES` bytes
    packed. (:func:`flat_meta` turns richer metadata into such a map.)

    Examples
    --------
    >>> check_meta({"pixel_size_nm": 0.025, "peak_counts": [0.4, 1.0]})
    {'pixel_size_nm': 0.025, 'peak_counts': [0.4, 1.0]}
    >>> check_meta({"axes": {"x": 1}})
    Traceback (most recent call last):
    ...
    streamer.protocol.ProtocolError: meta must be a flat map of msgpack types: scalars and lists of at most 64 scalars (got key 'axes' holding a dict)
    """
    if not isinstance(meta, Mapping):
        raise ProtocolError(f"header field 'meta' must be a map (got {type(meta).__name__})",
                            reason="field" if reason == "meta" else reason)
    for k, v in meta.items():
        if not isinstance(k, str):
            raise ProtocolError(f"meta keys must be str (got {k!r:.80})", reason=reason)
        ok = isinstance(v, _SCALARS) or (
            isinstance(v, (list, tuple)) and len(v) <= MAX_META_LIST
            and all(isinstance(x, _SCALARS) for x in v))
        if not ok:
            what = (f"a list of {len(v)} items" if isinstance(v, (list, tuple))
                    else f"a {type(v).__name__}")
            raise ProtocolError(f"meta must be a flat map of msgpack types: scalars and lists of "
                                f"at most {MAX_META_LIST} scalars (got key {k[:80]!r} holding "
                                f"{what})",
                                reason=reason)
    try:
        size = len(msgpack.packb(dict(meta), use_bin_type=True))
    except (TypeError, ValueError, OverflowError) as e:
        raise ProtocolError(f"meta must hold only msgpack types (got {e})", reason=reason) from e
    if size > MAX_META_BYTES:
        raise ProtocolError(f"meta must be at most {MAX_META_BYTES} bytes packed (got {size})",
                            reason=reason)
    return dict(meta)


def flat_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """Rich metadata (nested maps, long lists, big ints) as a protocol ``meta`` map.

    Nested maps become dotted keys; lists of scalars longer than :data:`MAX_META_LIST`, lists
    holding maps, ints outside 64 bits and non-str keys are left out; entries stop when the
    packed size would pass :data:`MAX_META_BYTES`. What is kept passes :func:`check_meta`.

    Examples
    --------
    >>> flat_meta({"pixel_size_nm": 0.02, "axes": {"x": {"scale": 0.5}}, "hist": list(range(999))})
    {'pixel_size_nm': 0.02, 'axes.x.scale': 0.5}
    """
    out: dict[str, Any] = {}
    size = 1

    def ok_scalar(x: Any) -> bool:
        return isinstance(x, _SCALARS) and not (_is_int(x) and not -MAX_INT <= x < 2 * MAX_INT)

    def add(prefix: str, v: Any, depth: int) -> None:
        nonlocal size
        if isinstance(v, Mapping):
            if depth < 8:
                for k, x in v.items():
                    add(f"{prefix}.{k}" if prefix else str(k), x, depth + 1)
            return
        if isinstance(v, (list, tuple)):
            if len(v) > MAX_META_LIST or not all(ok_scalar(x) for x in v):
                return
            v = list(v)
        elif not ok_scalar(v):
            return
        n = len(msgpack.packb({prefix: v}, use_bin_type=True))
        if size + n <= MAX_META_BYTES - 8:
            out[prefix] = v
            size += n

    for k, v in (meta or {}).items():
        if isinstance(k, str):
            add(k, v, 0)
    return out


def _base_header(kind: str, series: str) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "type": kind, "series": _check_series(series, "encode")}


def _pack(header: Mapping[str, Any]) -> bytes:
    try:
        return msgpack.packb(header, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise ProtocolError(f"header must hold only msgpack types (got {header!r})",
                            reason="encode") from e


def encode_start(series: str, *, meta: Mapping[str, Any] | None = None,
                 **fields: Any) -> list[bytes]:
    """Encode the ``start`` message that opens a series.

    Parameters
    ----------
    series
        Series name; every frame of the series carries it.
    meta
        Acquisition settings (pixel size, dwell time, detector, ...), compared with the model's.
    **fields
        Further header fields (e.g. ``shape``, ``source``).
    """
    header = _base_header("start", series)
    if meta is not None:
        header["meta"] = check_meta(meta, reason="encode")
    header.update(fields)
    return [_pack(header)]


def encode_end(series: str, **fields: Any) -> list[bytes]:
    """Encode the ``end`` message that closes a series (e.g. ``count=``, ``last_seq=``)."""
    header = _base_header("end", series)
    header.update(fields)
    return [_pack(header)]


def _as_wire_array(arr: Any, name: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ProtocolError(f"part {name!r} must be a non-empty 2-D array (got shape {a.shape})",
                            reason="encode")
    if a.dtype.name not in ALLOWED_DTYPES:
        raise ProtocolError(f"part {name!r} dtype must be one of {ALLOWED_DTYPES} "
                            f"(got {a.dtype.name})", reason="encode")
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    # ascontiguousarray copies only when needed; a fresh contiguous array passes through untouched.
    return np.ascontiguousarray(a)


def encode_frame(frame: np.ndarray | Sequence[np.ndarray], *, seq: int, series: str,
                 t_acq_ns: int, meta: Mapping[str, Any] | None = None,
                 parts: Sequence[str] | None = None, **fields: Any) -> list[Any]:
    """Encode a frame message: ``[header, payload, ...]``.

    Parameters
    ----------
    frame
        One (H, W) array, or a sequence of (H, W) arrays of the same shape (one per part).
    seq
        Sequence number within the series (``0 <= seq < 2**63``, increasing).
    series
        Series name.
    t_acq_ns
        Acquisition timestamp in nanoseconds (``time.time_ns()`` at the detector;
        ``0 <= t_acq_ns < 2**63``).
    meta
        Optional acquisition settings.
    parts
        Part names, one per array. Required with more than one array; with one array and no names
        the header carries no ``parts`` (an input frame, part name ``"raw"``).
    **fields
        Further header fields (the outputs' ``css``, ``timing``, ``engine``, ...).

    Returns
    -------
    list
        ``[header bytes, array, ...]``: the arrays are passed through without a copy; see
        :func:`streamer.net.send_message` for sending them.
    """
    arrays = [frame] if isinstance(frame, np.ndarray) else list(frame)
    if not arrays:
        raise ProtocolError("a frame message needs at least one array (got none)", reason="encode")
    if parts is not None:
        parts = list(parts)
        if len(parts) != len(arrays) or len(set(parts)) != len(parts):
            raise ProtocolError(f"parts must name each of the {len(arrays)} arrays once "
                                f"(got {parts!r})", reason="encode")
    elif len(arrays) > 1:
        raise ProtocolError(f"{len(arrays)} arrays need parts= names (got none)", reason="encode")
    names = parts or [DEFAULT_INPUT_PART]
    wire = [_as_wire_array(a, n) for n, a in zip(names, arrays)]
    shape = wire[0].shape
    for n, a in zip(names, wire):
        if a.shape != shape:
            raise ProtocolError(f"all parts must share shape {shape} (got {a.shape} for {n!r})",
                                reason="encode")
    seq = _check_int(seq, "seq", "encode")
    t_acq_ns = _check_int(t_acq_ns, "t_acq_ns", "encode")
    header = _base_header("frame", series)
    header.update(seq=seq, shape=[int(shape[0]), int(shape[1])], dtype=wire[0].dtype.name,
                  t_acq_ns=t_acq_ns)
    if meta is not None:
        header["meta"] = check_meta(meta, reason="encode")
    if parts is not None:
        header["parts"] = names
        dtypes = [a.dtype.name for a in wire]
        if len(set(dtypes)) > 1:
            header["dtypes"] = dtypes
    header.update(fields)
    return [_pack(header), *wire]


# --------------------------------------------------------------------------- decoding


def _buffer(part: Any) -> memoryview:
    buf = getattr(part, "buffer", None)  # zmq.Frame received with copy=False
    view = memoryview(buf if buf is not None else part)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _require(header: dict[str, Any], key: str, types: tuple[type, ...], what: str) -> Any:
    if key not in header:
        raise ProtocolError(f"header field {key!r} is required for a {header['type']!r} message "
                            f"(got fields {sorted(header)})", reason="field")
    value = header[key]
    ok = _is_int(value) if types == (int,) else isinstance(value, types)
    if not ok:
        raise ProtocolError(f"header field {key!r} must be {what} (got {value!r})", reason="field")
    return value


def decode_header(raw: Any) -> dict[str, Any]:
    """Unpack and validate the header part of a message (no payload checks)."""
    header = _unpack_header(raw)
    _check_envelope(header)
    if header["type"] == "frame":
        _check_frame_fields(header)
        _check_part_names(header)
        _check_output_fields(header)
    return header


def _unpack_header(raw: Any) -> dict[str, Any]:
    """The header part as a map with str keys (size checked before unpacking)."""
    view = _buffer(raw)
    if len(view) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header must be at most {MAX_HEADER_BYTES} bytes (got {len(view)})",
                            reason="header_size")
    try:
        header = msgpack.unpackb(view, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several unrelated types for garbage
        raise ProtocolError(f"header must be a msgpack map (got undecodable bytes: {e})",
                            reason="malformed") from e
    if not isinstance(header, dict):
        raise ProtocolError(f"header must be a msgpack map (got {type(header).__name__})",
                            reason="malformed")
    if not all(isinstance(k, str) for k in header):
        raise ProtocolError(f"header keys must be str (got {list(header)[:8]!r})",
                            reason="malformed")
    return header


def _check_envelope(header: dict[str, Any]) -> None:
    """What every message has: ``v``, ``type``, ``series`` and an optional ``meta``."""
    v = header.get("v")
    if not _is_int(v) or v != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version must be {PROTOCOL_VERSION} (got {v!r})",
                            reason="version")
    kind = header.get("type")
    if kind not in MESSAGE_TYPES:
        raise ProtocolError(f"message type must be one of {MESSAGE_TYPES} (got {kind!r})",
                            reason="type")
    _check_series(_require(header, "series", (str,), "a str"), "field")
    if header.get("meta") is not None:
        check_meta(header["meta"])


def _check_frame_fields(header: dict[str, Any]) -> None:
    """A frame's ``seq``, ``t_acq_ns``, ``shape`` and ``dtype``."""
    _check_int(_require(header, "seq", (int,), "an int >= 0"), "header field 'seq'", "field")
    _check_int(_require(header, "t_acq_ns", (int,), "an int (ns)"), "header field 't_acq_ns'",
               "field")
    shape = _require(header, "shape", (list, tuple), "[H, W]")
    if len(shape) != 2 or not all(_is_int(s) and s > 0 for s in shape):
        raise ProtocolError(f"header field 'shape' must be [H, W] with positive ints "
                            f"(got {shape!r})", reason="shape")
    dtype = _require(header, "dtype", (str,), "a numpy dtype name")
    if dtype not in ALLOWED_DTYPES:
        raise ProtocolError(f"dtype must be one of {ALLOWED_DTYPES} (got {dtype!r})",
                            reason="dtype")


def _check_part_names(header: dict[str, Any]) -> None:
    """A frame's optional ``parts`` names and ``dtypes`` (one per part, the first = ``dtype``)."""
    if "parts" in header:
        parts = header["parts"]
        if (not isinstance(parts, list) or not parts
                or not all(isinstance(p, str) and p for p in parts)
                or len(set(parts)) != len(parts)):
            raise ProtocolError(f"header field 'parts' must be a list of distinct names "
                                f"(got {parts!r})", reason="parts")
    n_parts = len(header.get("parts") or [DEFAULT_INPUT_PART])
    if "dtypes" in header:
        dtype, dtypes = header["dtype"], header["dtypes"]
        if not isinstance(dtypes, list) or len(dtypes) != n_parts:
            raise ProtocolError(f"header field 'dtypes' must list one dtype per part "
                                f"({n_parts}) (got {dtypes!r})", reason="dtype")
        if dtypes[0] != dtype or not all(d in ALLOWED_DTYPES for d in dtypes):
            raise ProtocolError(f"'dtypes' must start with dtype {dtype!r} and use "
                                f"{ALLOWED_DTYPES} (got {dtypes!r})", reason="dtype")


def _check_output_fields(header: dict[str, Any]) -> None:
    """The types of the :data:`OUTPUT_FIELDS` present (finite CSS values, a zoom > 0)."""
    for key, types in OUTPUT_FIELDS.items():
        if key in header:
            value = header[key]
            ok = (_is_int(value) and value >= 0) if types == (int,) else (
                isinstance(value, types) and not isinstance(value, bool))
            if ok and isinstance(value, float) and key.startswith("css") and not math.isfinite(value):
                ok = False
            if ok and key == "resample" and value is not None and not (math.isfinite(value) and value > 0):
                raise ProtocolError(f"output field 'resample' must be a finite zoom factor > 0 or nil "
                                    f"(got {value!r})", reason="field")
            if ok and key == "lattice_average" and value is not None and not (_is_int(value) and value >= 0):
                raise ProtocolError(f"output field 'lattice_average' must be a count of translations >= 0 "
                                    f"or nil (got {value!r})", reason="field")
            if not ok:
                names = "/".join(t.__name__ for t in types)
                raise ProtocolError(f"output field {key!r} must be {names} (got {value!r})",
                                    reason="field")


def decode(parts: Sequence[Any]) -> Message:
    """Decode and validate one multipart message.

    Parameters
    ----------
    parts
        The message parts: ``bytes``, ``memoryview`` or ``zmq.Frame`` (from
        ``recv_multipart(copy=False)``; the arrays then view the received buffers without a copy).

    Returns
    -------
    Message

    Raises
    ------
    ProtocolError
        With what was expected and what was got, and a ``reason`` for counting.
    """
    if not isinstance(parts, Sequence) or isinstance(parts, (bytes, bytearray, str)):
        raise ProtocolError(f"a message is a list of parts (got {type(parts).__name__})",
                            reason="malformed")
    if len(parts) == 0:
        raise ProtocolError("a message needs a header part (got 0 parts)", reason="malformed")
    header = decode_header(parts[0])
    kind, series = header["type"], header["series"]
    if kind != "frame":
        if len(parts) != 1:
            raise ProtocolError(f"a {kind!r} message has 1 part (got {len(parts)})",
                                reason="parts")
        return Message(type=kind, series=series, header=header)
    names = header.get("parts") or [DEFAULT_INPUT_PART]
    if len(parts) != 1 + len(names):
        raise ProtocolError(f"a frame with parts {names} has {1 + len(names)} message parts "
                            f"(got {len(parts)})", reason="parts")
    h, w = header["shape"]
    dtypes = header.get("dtypes") or [header["dtype"]] * len(names)
    arrays: dict[str, np.ndarray] = {}
    for name, dtype, part in zip(names, dtypes, parts[1:]):
        dt = np.dtype(dtype).newbyteorder("<")
        view = _buffer(part)
        expected = h * w * dt.itemsize
        if len(view) != expected:
            raise ProtocolError(f"payload {name!r} must be {h}*{w}*{dt.itemsize} = {expected} "
                                f"bytes for shape [{h}, {w}] {dtype} (got {len(view)})",
                                reason="payload_length")
        arr = np.frombuffer(view, dtype=dt).reshape(h, w)
        arrays[name] = arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))
    return Message(type=kind, series=series, seq=header["seq"], arrays=arrays, header=header)
