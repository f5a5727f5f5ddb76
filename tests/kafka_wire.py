"""Hand-encoded Kafka protocol frames for tests that must control every byte.

Only what the raw-socket tests need: request headers v1/v2, ApiVersions v0,
Produce v3-v8 and Fetch v4-v11 (the non-flexible versions), record batches
(magic 2) with CRC-32C, and a socket wrapper that can tell "answered" from
"closed"; for the cluster tests Metadata v12 (flexible: topic ids, cluster and
controller id), CreateTopics v4 and DescribeQuorum v0 (key 55).  Field layouts follow Kafka's clients/src/main/resources/common/message/*.json.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

API_PRODUCE = 0
API_FETCH = 1
API_METADATA = 3
API_API_VERSIONS = 18

# --------------------------------------------------------------------------
# CRC-32C (Castagnoli), as used by record batches v2
# --------------------------------------------------------------------------

_CRC32C_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC32C_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283  # the standard check value

# --------------------------------------------------------------------------
# Primitive encoders
# --------------------------------------------------------------------------


def i8(v: int) -> bytes: return struct.pack(">b", v)
def i16(v: int) -> bytes: return struct.pack(">h", v)
def i32(v: int) -> bytes: return struct.pack(">i", v)
def i64(v: int) -> bytes: return struct.pack(">q", v)
def u32(v: int) -> bytes: return struct.pack(">I", v)


def string(s: str) -> bytes:
    b = s.encode()
    return i16(len(b)) + b


def nullable_string(s: str | None) -> bytes:
    return i16(-1) if s is None else string(s)


def kbytes(b: bytes | None) -> bytes:
    return i32(-1) if b is None else i32(len(b)) + b


def array(items: list[bytes]) -> bytes:
    return i32(len(items)) + b"".join(items)


def uvarint(v: int) -> bytes:
    out = bytearray()
    while True:
        byte = v & 0x7F
        v >>= 7
        if v:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def varint(v: int) -> bytes:
    """Zig-zag signed varint (records use these for lengths and deltas)."""
    return uvarint((v << 1) ^ (v >> 63))


def compact_string(s: str) -> bytes:
    b = s.encode()
    return uvarint(len(b) + 1) + b


EMPTY_TAGGED_FIELDS = b"\x00"


class Reader:
    """Big-endian reader over a response body; raises on reading past the end."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError(f"read of {n} bytes at {self.pos} runs past the end ({len(self.data)})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def i8(self) -> int: return struct.unpack(">b", self.take(1))[0]
    def i16(self) -> int: return struct.unpack(">h", self.take(2))[0]
    def i32(self) -> int: return struct.unpack(">i", self.take(4))[0]
    def i64(self) -> int: return struct.unpack(">q", self.take(8))[0]
    def u32(self) -> int: return struct.unpack(">I", self.take(4))[0]

    def string(self) -> str | None:
        n = self.i16()
        return None if n < 0 else self.take(n).decode()

    def kbytes(self) -> bytes | None:
        n = self.i32()
        return None if n < 0 else self.take(n)

    def uvarint(self) -> int:
        shift = result = 0
        while True:
            b = self.take(1)[0]
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def varint(self) -> int:
        v = self.uvarint()
        return (v >> 1) ^ -(v & 1)

    def remaining(self) -> int:
        return len(self.data) - self.pos


# --------------------------------------------------------------------------
# Request framing
# --------------------------------------------------------------------------


def request_header_v1(api_key: int, api_version: int, correlation_id: int,
                      client_id: str | None = "rafka-tests") -> bytes:
    return i16(api_key) + i16(api_version) + i32(correlation_id) + nullable_string(client_id)


def request_header_v2(api_key: int, api_version: int, correlation_id: int,
                      client_id: str | None = "rafka-tests") -> bytes:
    return request_header_v1(api_key, api_version, correlation_id, client_id) + EMPTY_TAGGED_FIELDS


def frame(payload: bytes) -> bytes:
    return i32(len(payload)) + payload


class KafkaSocket:
    """A raw TCP connection to the broker."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "KafkaSocket":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def recv_frame(self) -> tuple[int, Reader]:
        """Read one response; return (correlation id, reader over the body). Header v0 only."""
        (size,) = struct.unpack(">i", self.recv_exact(4))
        assert 4 <= size <= 64 * 1024 * 1024, f"implausible response size {size}"
        payload = self.recv_exact(size)
        r = Reader(payload)
        return r.i32(), r

    def request(self, header: bytes, body: bytes) -> tuple[int, Reader]:
        self.send_raw(frame(header + body))
        return self.recv_frame()

    def wait_closed(self, timeout: float = 10.0) -> str:
        """Return how the broker closed this connection; fail if it answered or stayed open.

        Returns "eof" (orderly close) or "reset".  Raises AssertionError if bytes
        arrive or nothing happens within `timeout`.
        """
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return "reset"
        except socket.timeout:
            raise AssertionError(f"connection still open {timeout}s after the bad input") from None
        if data:
            raise AssertionError(f"expected the broker to close the connection, got {len(data)} "
                                 f"bytes instead: {data[:64]!r}")
        assert time.monotonic() <= deadline + 1
        return "eof"


# --------------------------------------------------------------------------
# ApiVersions
# --------------------------------------------------------------------------


@dataclass
class ApiVersionsV0:
    correlation_id: int
    error_code: int
    ranges: dict[int, tuple[int, int]]


def parse_api_versions_v0(correlation_id: int, r: Reader) -> ApiVersionsV0:
    error = r.i16()
    n = r.i32()
    assert 0 <= n < 1000, f"implausible api key count {n}"
    ranges = {}
    for _ in range(n):
        key, lo, hi = r.i16(), r.i16(), r.i16()
        ranges[key] = (lo, hi)
    return ApiVersionsV0(correlation_id, error, ranges)


def api_versions(ks: KafkaSocket, correlation_id: int = 1) -> ApiVersionsV0:
    corr, r = ks.request(request_header_v1(API_API_VERSIONS, 0, correlation_id), b"")
    assert corr == correlation_id, f"correlation id {corr} != {correlation_id}"
    res = parse_api_versions_v0(corr, r)
    assert r.remaining() == 0, f"{r.remaining()} trailing bytes after ApiVersions v0 body"
    return res


def pick_version(ranges: dict[int, tuple[int, int]], api_key: int, lo: int, hi: int) -> int:
    """The lowest version in [lo, hi] the broker supports (we implement exactly lo..hi)."""
    assert api_key in ranges, f"broker does not advertise api key {api_key}"
    b_lo, b_hi = ranges[api_key]
    v = max(lo, b_lo)
    assert v <= min(hi, b_hi), (f"api key {api_key}: broker supports {b_lo}..{b_hi}, "
                                f"these tests encode {lo}..{hi}")
    return v


# --------------------------------------------------------------------------
# Record batches (magic 2)
# --------------------------------------------------------------------------


@dataclass
class Record:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    timestamp_delta: int = 0


def encode_record(offset_delta: int, rec: Record) -> bytes:
    body = i8(0) + varint(rec.timestamp_delta) + varint(offset_delta)
    body += varint(-1) if rec.key is None else varint(len(rec.key)) + rec.key
    body += varint(-1) if rec.value is None else varint(len(rec.value)) + rec.value
    body += varint(len(rec.headers))
    for hk, hv in rec.headers:
        kb = hk.encode()
        body += varint(len(kb)) + kb
        body += varint(-1) if hv is None else varint(len(hv)) + hv
    return varint(len(body)) + body


def record_batch(records: list[Record], base_timestamp: int, base_offset: int = 0) -> bytes:
    """An uncompressed v2 batch with a correct CRC-32C, producer id -1 (not idempotent)."""
    recs = b"".join(encode_record(i, r) for i, r in enumerate(records))
    max_ts = base_timestamp + max((r.timestamp_delta for r in records), default=0)
    after_crc = (i16(0)                       # attributes: no compression, CreateTime
                 + i32(len(records) - 1)      # lastOffsetDelta
                 + i64(base_timestamp) + i64(max_ts)
                 + i64(-1) + i16(-1) + i32(-1)  # producerId, producerEpoch, baseSequence
                 + i32(len(records)) + recs)
    after_length = i32(-1) + i8(2) + u32(crc32c(after_crc)) + after_crc
    return i64(base_offset) + i32(len(after_length)) + after_length


@dataclass
class Batch:
    base_offset: int
    batch_length: int
    leader_epoch: int
    magic: int
    crc: int
    crc_ok: bool
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    record_count: int
    records: list[dict] | None  # decoded only when uncompressed

    @property
    def codec(self) -> int:
        return self.attributes & 0x07


def parse_batches(data: bytes) -> list[Batch]:
    """Parse a Fetch response's records blob; a partial trailing batch is ignored, as clients do."""
    out = []
    pos = 0
    while len(data) - pos >= 17:
        base_offset, batch_length = struct.unpack_from(">qi", data, pos)
        end = pos + 12 + batch_length
        if end > len(data):
            break
        r = Reader(data[pos + 12:end])
        leader_epoch, magic, crc = r.i32(), r.i8(), r.u32()
        crc_ok = crc32c(data[pos + 21:end]) == crc
        attributes, last_delta = r.i16(), r.i32()
        base_ts, max_ts = r.i64(), r.i64()
        r.i64(); r.i16(); r.i32()  # producer id, epoch, base sequence
        count = r.i32()
        records = None
        if attributes & 0x07 == 0:
            records = []
            for _ in range(count):
                length = r.varint()
                rr = Reader(r.take(length))
                rr.i8()
                ts_delta, off_delta = rr.varint(), rr.varint()
                kl = rr.varint(); key = None if kl < 0 else rr.take(kl)
                vl = rr.varint(); value = None if vl < 0 else rr.take(vl)
                headers = []
                for _ in range(rr.varint()):
                    hk = rr.take(rr.varint()).decode()
                    hl = rr.varint()
                    headers.append((hk, None if hl < 0 else rr.take(hl)))
                records.append({"offset": base_offset + off_delta, "timestamp": base_ts + ts_delta,
                                "key": key, "value": value, "headers": headers})
        out.append(Batch(base_offset, batch_length, leader_epoch, magic, crc, crc_ok, attributes,
                         last_delta, base_ts, max_ts, count, records))
        pos = end
    return out


# --------------------------------------------------------------------------
# Produce v3..v8 and Fetch v4..v11
# --------------------------------------------------------------------------

PRODUCE_VERSIONS = (3, 8)
FETCH_VERSIONS = (4, 11)


@dataclass
class ProducePartitionResult:
    error_code: int
    base_offset: int
    log_append_time: int
    error_message: str | None = None


def produce(ks: KafkaSocket, version: int, topic: str, partition: int, records: bytes,
            acks: int = -1, correlation_id: int = 7, timeout_ms: int = 10000) -> ProducePartitionResult:
    body = (nullable_string(None) + i16(acks) + i32(timeout_ms)
            + array([string(topic) + array([i32(partition) + kbytes(records)])]))
    corr, r = ks.request(request_header_v1(API_PRODUCE, version, correlation_id), body)
    assert corr == correlation_id, f"correlation id {corr} != {correlation_id}"
    results = {}
    for _ in range(r.i32()):
        name = r.string()
        for _ in range(r.i32()):
            index, err, base, append_ts = r.i32(), r.i16(), r.i64(), r.i64()
            if version >= 5:
                r.i64()  # log start offset
            msg = None
            if version >= 8:
                for _ in range(r.i32()):
                    r.i32(); r.string()
                msg = r.string()
            results[(name, index)] = ProducePartitionResult(err, base, append_ts, msg)
    r.i32()  # throttle time
    assert (topic, partition) in results, f"no result for {topic}[{partition}] in {results}"
    return results[(topic, partition)]


@dataclass
class FetchPartitionResult:
    error_code: int
    high_watermark: int
    records: bytes


def fetch(ks: KafkaSocket, version: int, topic: str, partition: int, offset: int,
          max_wait_ms: int = 0, max_bytes: int = 4 * 1024 * 1024,
          correlation_id: int = 9) -> FetchPartitionResult:
    part = i32(partition)
    if version >= 9:
        part += i32(-1)  # current leader epoch: unknown
    part += i64(offset)
    if version >= 5:
        part += i64(-1)  # log start offset (followers only)
    part += i32(max_bytes)
    body = i32(-1) + i32(max_wait_ms) + i32(1) + i32(max_bytes) + i8(0)
    if version >= 7:
        body += i32(0) + i32(-1)  # session id, epoch: full fetch, no session
    body += array([string(topic) + array([part])])
    if version >= 7:
        body += array([])  # forgotten topics
    if version >= 11:
        body += string("")  # rack id
    corr, r = ks.request(request_header_v1(API_FETCH, version, correlation_id), body)
    assert corr == correlation_id, f"correlation id {corr} != {correlation_id}"
    r.i32()  # throttle
    if version >= 7:
        top_err = r.i16()
        r.i32()  # session id
        assert top_err == 0, f"Fetch top-level error {top_err}"
    found = None
    for _ in range(r.i32()):
        name = r.string()
        for _ in range(r.i32()):
            index, err, hw = r.i32(), r.i16(), r.i64()
            r.i64()  # last stable offset
            if version >= 5:
                r.i64()  # log start offset
            n_aborted = r.i32()
            for _ in range(max(n_aborted, 0)):
                r.i64(); r.i64()
            if version >= 11:
                r.i32()  # preferred read replica
            records = r.kbytes() or b""
            if (name, index) == (topic, partition):
                found = FetchPartitionResult(err, hw, records)
    assert found is not None, f"no Fetch result for {topic}[{partition}]"
    return found


# --------------------------------------------------------------------------
# OffsetForLeaderEpoch v2..v3
# --------------------------------------------------------------------------

API_OFFSET_FOR_LEADER_EPOCH = 23
OFFSET_FOR_LEADER_EPOCH_VERSIONS = (2, 3)


@dataclass
class EpochEndOffset:
    error_code: int
    leader_epoch: int
    end_offset: int


def offset_for_leader_epoch(ks: KafkaSocket, version: int, topic: str, partition: int,
                            leader_epoch: int, current_leader_epoch: int = -1,
                            correlation_id: int = 11) -> EpochEndOffset:
    body = i32(-1) if version >= 3 else b""  # replica id: a consumer
    body += array([string(topic) + array([i32(partition) + i32(current_leader_epoch) + i32(leader_epoch)])])
    corr, r = ks.request(request_header_v1(API_OFFSET_FOR_LEADER_EPOCH, version, correlation_id), body)
    assert corr == correlation_id, f"correlation id {corr} != {correlation_id}"
    r.i32()  # throttle
    found = None
    for _ in range(r.i32()):
        name = r.string()
        for _ in range(r.i32()):
            err, index, epoch, end = r.i16(), r.i32(), r.i32(), r.i64()
            if (name, index) == (topic, partition):
                found = EpochEndOffset(err, epoch, end)
    assert found is not None, f"no OffsetForLeaderEpoch result for {topic}[{partition}]"
    return found


# --------------------------------------------------------------------------
# Metadata v4 (non-flexible; the first version with allow_auto_topic_creation)
# --------------------------------------------------------------------------

METADATA_V4 = 4


def metadata_v4(ks: KafkaSocket, topics: list[str] | None, allow_auto_topic_creation: bool,
                correlation_id: int = 13) -> dict[str, tuple[int, list[int]]]:
    """Returns {topic: (error_code, [partition ids])}."""
    body = i32(-1) if topics is None else array([string(t) for t in topics])
    body += i8(1 if allow_auto_topic_creation else 0)
    corr, r = ks.request(request_header_v1(API_METADATA, METADATA_V4, correlation_id), body)
    assert corr == correlation_id, f"correlation id {corr} != {correlation_id}"
    r.i32()  # throttle
    for _ in range(r.i32()):
        r.i32(); r.string(); r.i32(); r.string()  # node id, host, port, rack
    r.string()  # cluster id
    r.i32()  # controller id
    out = {}
    for _ in range(r.i32()):
        err, name = r.i16(), r.string()
        r.i8()  # is_internal
        parts = []
        for _ in range(r.i32()):
            r.i16()
            parts.append(r.i32())
            r.i32()  # leader
            for _ in range(r.i32()):
                r.i32()
            for _ in range(r.i32()):
                r.i32()
        out[name] = (err, parts)
    return out


# --------------------------------------------------------------------------
# Flexible versions (KIP-482): compact strings and arrays, tagged fields
# --------------------------------------------------------------------------


def compact_nullable_string(s: str | None) -> bytes:
    return uvarint(0) if s is None else compact_string(s)


def compact_array(items: list[bytes]) -> bytes:
    return uvarint(len(items) + 1) + b"".join(items)


def boolean(v: bool) -> bytes:
    return i8(1 if v else 0)


def read_compact_string(r: Reader) -> str | None:
    n = r.uvarint()
    return None if n == 0 else r.take(n - 1).decode()


def read_compact_array_len(r: Reader) -> int:
    """Number of elements of a compact array; a null array (-1) reads as 0."""
    n = r.uvarint()
    assert n <= 1_000_000, f"implausible compact array length {n - 1}"
    return max(n - 1, 0)


def read_uuid(r: Reader) -> str:
    return r.take(16).hex()


def skip_tagged_fields(r: Reader) -> None:
    for _ in range(r.uvarint()):
        r.uvarint()  # tag
        r.take(r.uvarint())


def flexible_request(ks: KafkaSocket, api_key: int, version: int, body: bytes,
                     correlation_id: int) -> Reader:
    """Send a flexible-version request (header v2); read the response header v1."""
    corr, r = ks.request(request_header_v2(api_key, version, correlation_id), body)
    assert corr == correlation_id, f"correlation id {corr} != {correlation_id}"
    skip_tagged_fields(r)  # response header v1
    return r


# --------------------------------------------------------------------------
# Metadata v12 (flexible; topic ids, cluster id, controller id)
# --------------------------------------------------------------------------

METADATA_V12 = 12
ZERO_UUID = "0" * 32


@dataclass
class PartitionMeta:
    error_code: int
    leader: int
    leader_epoch: int
    replicas: list[int]
    isr: list[int]
    offline: list[int]


@dataclass
class TopicMeta:
    error_code: int
    topic_id: str
    is_internal: bool
    partitions: dict[int, PartitionMeta]


@dataclass
class ClusterMeta:
    brokers: dict[int, tuple[str, int, str | None]]  # id -> (host, port, rack)
    cluster_id: str | None
    controller_id: int
    topics: dict[str, TopicMeta]


def metadata_v12(ks: KafkaSocket, topics: list[str] | None = None,
                 allow_auto_topic_creation: bool = False, correlation_id: int = 17) -> ClusterMeta:
    """Metadata v12 for `topics` (None: every topic); never auto-creates unless asked."""
    if topics is None:
        body = uvarint(0)  # null: every topic
    else:
        body = compact_array([bytes(16) + compact_nullable_string(t) + EMPTY_TAGGED_FIELDS for t in topics])
    body += boolean(allow_auto_topic_creation) + boolean(False) + EMPTY_TAGGED_FIELDS
    r = flexible_request(ks, API_METADATA, METADATA_V12, body, correlation_id)
    r.i32()  # throttle
    brokers = {}
    for _ in range(read_compact_array_len(r)):
        node_id = r.i32()
        host = read_compact_string(r)
        port = r.i32()
        rack = read_compact_string(r)
        skip_tagged_fields(r)
        assert node_id not in brokers, f"broker {node_id} listed twice"
        brokers[node_id] = (host, port, rack)
    cluster_id = read_compact_string(r)
    controller_id = r.i32()
    out: dict[str, TopicMeta] = {}
    for _ in range(read_compact_array_len(r)):
        err = r.i16()
        name = read_compact_string(r)
        topic_id = read_uuid(r)
        internal = r.i8() != 0
        parts = {}
        for _ in range(read_compact_array_len(r)):
            p_err, index, leader, epoch = r.i16(), r.i32(), r.i32(), r.i32()
            replicas = [r.i32() for _ in range(read_compact_array_len(r))]
            isr = [r.i32() for _ in range(read_compact_array_len(r))]
            offline = [r.i32() for _ in range(read_compact_array_len(r))]
            skip_tagged_fields(r)
            parts[index] = PartitionMeta(p_err, leader, epoch, replicas, isr, offline)
        r.i32()  # topic authorized operations
        skip_tagged_fields(r)
        out[name] = TopicMeta(err, topic_id, internal, parts)
    skip_tagged_fields(r)
    return ClusterMeta(brokers, cluster_id, controller_id, out)


# --------------------------------------------------------------------------
# CreateTopics v4 (the last non-flexible version)
# --------------------------------------------------------------------------

API_CREATE_TOPICS = 19
CREATE_TOPICS_V4 = 4


@dataclass
class CreateTopicResult:
    error_code: int
    error_message: str | None


def create_topics_v4(ks: KafkaSocket, name: str, partitions: int, replication_factor: int,
                     timeout_ms: int = 15000, validate_only: bool = False,
                     correlation_id: int = 19) -> CreateTopicResult:
    topic = (string(name) + i32(partitions) + i16(replication_factor)
             + array([])    # manual assignments
             + array([]))   # configs
    body = array([topic]) + i32(timeout_ms) + boolean(validate_only)
    corr, r = ks.request(request_header_v1(API_CREATE_TOPICS, CREATE_TOPICS_V4, correlation_id), body)
    assert corr == correlation_id, f"correlation id {corr} != {correlation_id}"
    r.i32()  # throttle
    found = None
    for _ in range(r.i32()):
        t_name, err, msg = r.string(), r.i16(), r.string()
        if t_name == name:
            found = CreateTopicResult(err, msg)
    assert found is not None, f"no CreateTopics result for {name}"
    return found


# --------------------------------------------------------------------------
# DescribeQuorum v0 (KIP-595; flexible from v0)
# --------------------------------------------------------------------------

API_DESCRIBE_QUORUM = 55
CLUSTER_METADATA_TOPIC = "__cluster_metadata"


@dataclass
class QuorumPartition:
    partition_index: int
    error_code: int
    leader_id: int
    leader_epoch: int
    high_watermark: int
    voters: dict[int, int]     # replica id -> log end offset
    observers: dict[int, int]


@dataclass
class DescribeQuorumResult:
    error_code: int
    topics: dict[str, dict[int, QuorumPartition]]


def describe_quorum_v0(ks: KafkaSocket, topic: str = CLUSTER_METADATA_TOPIC, partition: int = 0,
                       correlation_id: int = 23) -> DescribeQuorumResult:
    body = compact_array([compact_string(topic)
                          + compact_array([i32(partition) + EMPTY_TAGGED_FIELDS])
                          + EMPTY_TAGGED_FIELDS]) + EMPTY_TAGGED_FIELDS
    r = flexible_request(ks, API_DESCRIBE_QUORUM, 0, body, correlation_id)
    top_error = r.i16()
    topics: dict[str, dict[int, QuorumPartition]] = {}

    def replica_states() -> dict[int, int]:
        out = {}
        for _ in range(read_compact_array_len(r)):
            replica_id, leo = r.i32(), r.i64()
            skip_tagged_fields(r)
            assert replica_id not in out, f"replica {replica_id} listed twice"
            out[replica_id] = leo
        return out

    for _ in range(read_compact_array_len(r)):
        name = read_compact_string(r)
        parts = {}
        for _ in range(read_compact_array_len(r)):
            index, err, leader, epoch, hw = r.i32(), r.i16(), r.i32(), r.i32(), r.i64()
            voters = replica_states()
            observers = replica_states()
            skip_tagged_fields(r)
            parts[index] = QuorumPartition(index, err, leader, epoch, hw, voters, observers)
        skip_tagged_fields(r)
        topics[name] = parts
    skip_tagged_fields(r)
    assert r.remaining() == 0, f"{r.remaining()} trailing bytes after DescribeQuorum v0 body"
    return DescribeQuorumResult(top_error, topics)
