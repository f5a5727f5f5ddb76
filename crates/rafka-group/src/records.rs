//! The keys and values the coordinator writes to `__consumer_offsets`, in Kafka's own
//! schemas, so tools that read that topic (and a Kafka broker, for that matter) decode
//! them the same way.
//!
//! - key version 0/1: `OffsetCommitKey { group, topic, partition }` → `OffsetCommitValue`
//!   (written as v3: offset, leader epoch, metadata, commit timestamp);
//! - key version 2: `GroupMetadataKey { group }` → `GroupMetadataValue` (written as v3).
//!
//! A null value is a tombstone: the offset, or the whole group, is deleted. These are
//! Kafka's classic, non-flexible encodings (int16-length strings, int32 arrays).

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// A record key or value that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed __consumer_offsets record: {0}")]
pub struct RecordError(pub String);

fn short(what: &str) -> RecordError {
    RecordError(format!("{what} is truncated"))
}

/// Which (group, topic, partition) or group a record is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordKey {
    Offset { group: String, topic: String, partition: i32 },
    Group { group: String },
}

impl RecordKey {
    pub fn group(&self) -> &str {
        match self {
            RecordKey::Offset { group, .. } | RecordKey::Group { group } => group,
        }
    }

    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        match self {
            RecordKey::Offset { group, topic, partition } => {
                b.put_i16(1);
                put_string(&mut b, group);
                put_string(&mut b, topic);
                b.put_i32(*partition);
            }
            RecordKey::Group { group } => {
                b.put_i16(2);
                put_string(&mut b, group);
            }
        }
        b.freeze()
    }

    pub fn decode(mut b: Bytes) -> Result<RecordKey, RecordError> {
        let version = get_i16(&mut b, "key version")?;
        match version {
            0 | 1 => Ok(RecordKey::Offset {
                group: get_string(&mut b, "group")?,
                topic: get_string(&mut b, "topic")?,
                partition: get_i32(&mut b, "partition")?,
            }),
            2 => Ok(RecordKey::Group { group: get_string(&mut b, "group")? }),
            other => Err(RecordError(format!("unknown key version {other}"))),
        }
    }
}

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    /// -1 when the client did not say.
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

impl OffsetValue {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(3);
        b.put_i64(self.offset);
        b.put_i32(self.leader_epoch);
        put_string(&mut b, &self.metadata);
        b.put_i64(self.commit_timestamp);
        b.freeze()
    }

    pub fn decode(mut b: Bytes) -> Result<OffsetValue, RecordError> {
        let version = get_i16(&mut b, "value version")?;
        let offset = get_i64(&mut b, "offset")?;
        let leader_epoch = if version >= 3 { get_i32(&mut b, "leader epoch")? } else { -1 };
        let metadata = get_string(&mut b, "metadata")?;
        let commit_timestamp = get_i64(&mut b, "commit timestamp")?;
        if !(0..=3).contains(&version) {
            return Err(RecordError(format!("unknown offset value version {version}")));
        }
        // v1 carries an expire timestamp after the commit timestamp; it is not used.
        Ok(OffsetValue { offset, leader_epoch, metadata, commit_timestamp })
    }
}

/// One member as stored in [`GroupValue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group's membership after a completed rebalance (or an empty group's generation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub current_state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

impl GroupValue {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(3);
        put_string(&mut b, &self.protocol_type);
        b.put_i32(self.generation);
        put_nullable_string(&mut b, self.protocol.as_deref());
        put_nullable_string(&mut b, self.leader.as_deref());
        b.put_i64(self.current_state_timestamp);
        b.put_i32(self.members.len() as i32);
        for m in &self.members {
            put_string(&mut b, &m.member_id);
            put_nullable_string(&mut b, m.group_instance_id.as_deref());
            put_string(&mut b, &m.client_id);
            put_string(&mut b, &m.client_host);
            b.put_i32(m.rebalance_timeout_ms);
            b.put_i32(m.session_timeout_ms);
            put_bytes(&mut b, &m.subscription);
            put_bytes(&mut b, &m.assignment);
        }
        b.freeze()
    }

    pub fn decode(mut b: Bytes) -> Result<GroupValue, RecordError> {
        let version = get_i16(&mut b, "value version")?;
        if !(0..=3).contains(&version) {
            return Err(RecordError(format!("unknown group value version {version}")));
        }
        let protocol_type = get_string(&mut b, "protocol type")?;
        let generation = get_i32(&mut b, "generation")?;
        let protocol = get_nullable_string(&mut b, "protocol")?;
        let leader = get_nullable_string(&mut b, "leader")?;
        let current_state_timestamp = if version >= 2 { get_i64(&mut b, "state timestamp")? } else { -1 };
        let count = get_i32(&mut b, "member count")?;
        if count < 0 || count as usize > b.remaining() {
            return Err(RecordError(format!("member count {count} is not possible")));
        }
        let mut members = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let member_id = get_string(&mut b, "member id")?;
            let group_instance_id = if version >= 3 { get_nullable_string(&mut b, "instance id")? } else { None };
            let client_id = get_string(&mut b, "client id")?;
            let client_host = get_string(&mut b, "client host")?;
            let rebalance_timeout_ms = if version >= 1 { get_i32(&mut b, "rebalance timeout")? } else { -1 };
            let session_timeout_ms = get_i32(&mut b, "session timeout")?;
            let rebalance_timeout_ms = if rebalance_timeout_ms < 0 { session_timeout_ms } else { rebalance_timeout_ms };
            members.push(MemberValue {
                member_id,
                group_instance_id,
                client_id,
                client_host,
                rebalance_timeout_ms,
                session_timeout_ms,
                subscription: get_bytes(&mut b, "subscription")?,
                assignment: get_bytes(&mut b, "assignment")?,
            });
        }
        Ok(GroupValue { protocol_type, generation, protocol, leader, current_state_timestamp, members })
    }
}

fn put_string(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len().min(i16::MAX as usize) as i16);
    b.put_slice(&s.as_bytes()[..s.len().min(i16::MAX as usize)]);
}

fn put_nullable_string(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(b, s),
        None => b.put_i16(-1),
    }
}

fn put_bytes(b: &mut BytesMut, bytes: &[u8]) {
    b.put_i32(bytes.len() as i32);
    b.put_slice(bytes);
}

fn get_i16(b: &mut Bytes, what: &str) -> Result<i16, RecordError> {
    if b.remaining() < 2 {
        return Err(short(what));
    }
    Ok(b.get_i16())
}

fn get_i32(b: &mut Bytes, what: &str) -> Result<i32, RecordError> {
    if b.remaining() < 4 {
        return Err(short(what));
    }
    Ok(b.get_i32())
}

fn get_i64(b: &mut Bytes, what: &str) -> Result<i64, RecordError> {
    if b.remaining() < 8 {
        return Err(short(what));
    }
    Ok(b.get_i64())
}

fn get_nullable_string(b: &mut Bytes, what: &str) -> Result<Option<String>, RecordError> {
    let len = get_i16(b, what)?;
    if len < 0 {
        return Ok(None);
    }
    let len = len as usize;
    if b.remaining() < len {
        return Err(short(what));
    }
    let raw = b.split_to(len);
    String::from_utf8(raw.to_vec()).map(Some).map_err(|_| RecordError(format!("{what} is not UTF-8")))
}

fn get_string(b: &mut Bytes, what: &str) -> Result<String, RecordError> {
    get_nullable_string(b, what)?.ok_or_else(|| RecordError(format!("{what} is null")))
}

fn get_bytes(b: &mut Bytes, what: &str) -> Result<Bytes, RecordError> {
    let len = get_i32(b, what)?;
    if len < 0 {
        return Ok(Bytes::new());
    }
    let len = len as usize;
    if b.remaining() < len {
        return Err(short(what));
    }
    Ok(b.split_to(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_key_and_value_round_trip() {
        let key = RecordKey::Offset { group: "g".into(), topic: "orders".into(), partition: 7 };
        assert_eq!(RecordKey::decode(key.encode()).unwrap(), key);
        let value = OffsetValue { offset: 42, leader_epoch: 3, metadata: "m".into(), commit_timestamp: 1_700 };
        assert_eq!(OffsetValue::decode(value.encode()).unwrap(), value);
    }

    #[test]
    fn offset_key_matches_kafkas_bytes() {
        // version 1, "g", "t", partition 2 — as Kafka's OffsetCommitKey serialises it.
        let key = RecordKey::Offset { group: "g".into(), topic: "t".into(), partition: 2 };
        assert_eq!(&key.encode()[..], &[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 2]);
        assert_eq!(&RecordKey::Group { group: "g".into() }.encode()[..], &[0, 2, 0, 1, b'g']);
    }

    #[test]
    fn group_value_round_trips_with_members() {
        let value = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m-1".into()),
            current_state_timestamp: 99,
            members: vec![MemberValue {
                member_id: "m-1".into(),
                group_instance_id: Some("i-1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 30_000,
                session_timeout_ms: 10_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(GroupValue::decode(value.encode()).unwrap(), value);
    }

    #[test]
    fn older_offset_value_versions_decode() {
        // v1: offset, metadata, commit timestamp, expire timestamp.
        let mut b = BytesMut::new();
        b.put_i16(1);
        b.put_i64(10);
        put_string(&mut b, "");
        b.put_i64(5);
        b.put_i64(6);
        let v = OffsetValue::decode(b.freeze()).unwrap();
        assert_eq!((v.offset, v.leader_epoch, v.commit_timestamp), (10, -1, 5));
    }

    #[test]
    fn truncated_or_unknown_records_are_errors() {
        assert!(RecordKey::decode(Bytes::from_static(&[0, 1, 0, 5, b'a'])).is_err());
        assert!(RecordKey::decode(Bytes::from_static(&[0, 9])).is_err());
        assert!(GroupValue::decode(Bytes::from_static(&[0, 3, 0, 1, b'c', 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff])).is_err());
        let mut b = BytesMut::new();
        b.put_i16(3);
        put_string(&mut b, "consumer");
        b.put_i32(1);
        b.put_i16(-1);
        b.put_i16(-1);
        b.put_i64(0);
        b.put_i32(1_000_000);
        assert!(GroupValue::decode(b.freeze()).is_err());
    }
}
