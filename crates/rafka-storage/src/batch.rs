//! Kafka v2 ("magic 2") record batches: parsing, validation, in-place patching
//! and building.
//!
//! A batch is a 61-byte big-endian header followed by its records:
//!
//! ```text
//! baseOffset i64 @0 | batchLength i32 @8 | partitionLeaderEpoch i32 @12 | magic i8 @16
//! crc u32 @17 (CRC-32C of bytes @21..end) | attributes i16 @21 | lastOffsetDelta i32 @23
//! baseTimestamp i64 @27 | maxTimestamp i64 @35 | producerId i64 @43 | producerEpoch i16 @51
//! baseSequence i32 @53 | recordsCount i32 @57 | records...
//! ```
//!
//! The log stores batches exactly as they arrive. The only fields it ever
//! changes are `baseOffset` and `partitionLeaderEpoch` (outside the CRC) and,
//! for `LogAppendTime` topics or when a producer's `maxTimestamp` is wrong,
//! the attributes and `maxTimestamp` followed by a CRC recomputation.
//!
//! Compaction is the exception: it rewrites batches that lost records
//! (`rebuild_batch` keeps every header field but the lengths, the count and
//! the CRC, and recompresses with the batch's codec).
//!
//! Layers, from the bottom: [`BatchHeader::parse`] decodes one header;
//! [`batches`] walks a buffer of concatenated batches and stops quietly at an
//! incomplete tail; [`records`] iterates the records of an uncompressed batch,
//! [`decompressed_records`] and [`record_spans`] those of any batch;
//! [`BatchBuilder`] encodes uncompressed batches (used by the group coordinator
//! and by tests); [`test_support`] has the helpers the tests of every crate use.
//! The crate-private `validate_*` functions are the checks made on append.

use std::ops::Range;

use bytes::{BufMut, BytesMut};

use crate::config::TimestampType;
use crate::varint::{put_varint, put_varlong, read_varint, read_varlong, varint_len, varlong_len};
use crate::StorageError;

/// The only record batch format the log accepts.
pub const MAGIC_V2: i8 = 2;
/// Bytes before the `batchLength` field ends: baseOffset + batchLength.
pub const LOG_OVERHEAD: usize = 12;
/// Smallest legal `batchLength` (a header with no records).
pub const MIN_BATCH_LENGTH: i32 = (BatchHeader::SIZE - LOG_OVERHEAD) as i32;
/// Timestamp meaning "none".
pub const NO_TIMESTAMP: i64 = -1;

/// Attribute bits 0-2: compression codec.
pub const COMPRESSION_CODEC_MASK: i16 = 0x07;
/// Attribute bit 3: timestamp type (set = LogAppendTime).
pub const TIMESTAMP_TYPE_FLAG: i16 = 0x08;
/// Attribute bit 4: transactional batch.
pub const TRANSACTIONAL_FLAG: i16 = 0x10;
/// Attribute bit 5: control batch (transaction markers).
pub const CONTROL_FLAG: i16 = 0x20;
/// Highest compression codec Kafka defines (zstd).
pub const MAX_COMPRESSION_CODEC: u8 = 4;

const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const PARTITION_LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;

/// The decoded header of one v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i64(buf: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(b)
}

fn be_i32(buf: &[u8], at: usize) -> i32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    i32::from_be_bytes(b)
}

fn be_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

impl BatchHeader {
    /// Size of the v2 batch header in bytes.
    pub const SIZE: usize = 61;

    /// Decodes the header at the start of `buf` (which needs at least 61 bytes).
    ///
    /// Checks what the layout depends on: `magic == 2` and
    /// `batchLength >= 49`. It does not check the CRC ([`verify_crc`]) nor
    /// that the whole batch is present ([`BatchHeader::total_size`]).
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, StorageError> {
        if buf.len() < Self::SIZE {
            return Err(StorageError::corrupt(format!(
                "truncated batch header: {} bytes, need {}",
                buf.len(),
                Self::SIZE
            )));
        }
        let magic = buf[MAGIC_AT] as i8;
        let base_offset = be_i64(buf, BASE_OFFSET_AT);
        if magic != MAGIC_V2 {
            return Err(StorageError::corrupt(format!(
                "batch at offset {base_offset} has magic {magic}, only magic {MAGIC_V2} is supported"
            )));
        }
        let batch_length = be_i32(buf, BATCH_LENGTH_AT);
        if batch_length < MIN_BATCH_LENGTH {
            return Err(StorageError::corrupt(format!(
                "batch at offset {base_offset} declares batchLength {batch_length}, below the minimum {MIN_BATCH_LENGTH}"
            )));
        }
        Ok(BatchHeader {
            base_offset,
            batch_length,
            partition_leader_epoch: be_i32(buf, PARTITION_LEADER_EPOCH_AT),
            magic,
            crc: be_i32(buf, CRC_AT) as u32,
            attributes: be_i16(buf, ATTRIBUTES_AT),
            last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA_AT),
            base_timestamp: be_i64(buf, BASE_TIMESTAMP_AT),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP_AT),
            producer_id: be_i64(buf, PRODUCER_ID_AT),
            producer_epoch: be_i16(buf, PRODUCER_EPOCH_AT),
            base_sequence: be_i32(buf, BASE_SEQUENCE_AT),
            records_count: be_i32(buf, RECORDS_COUNT_AT),
        })
    }

    /// Whole batch size in bytes: `batch_length + 12`.
    pub fn total_size(&self) -> usize {
        self.batch_length.max(0) as usize + LOG_OVERHEAD
    }

    /// Offset of the batch's last record: `base_offset + last_offset_delta`.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// The offset after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// Compression codec: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn compression(&self) -> u8 {
        (self.attributes & COMPRESSION_CODEC_MASK) as u8
    }

    /// Attribute bit 3.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_FLAG != 0
    }

    /// Attribute bit 4.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }

    /// Attribute bit 5.
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }

    /// The timestamp type recorded in the attributes.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.is_log_append_time() {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
}

/// Iterates the whole batches of `buf` (a fetch response's records, a region of
/// a segment file), yielding each header and its byte range.
///
/// Stops without error at an incomplete tail (fewer bytes left than a header,
/// or than the declared batch length). Yields one `Err` and stops when a
/// header is malformed (magic, length). CRCs are not checked: see
/// [`verify_crc`].
pub fn batches(
    buf: &[u8],
) -> impl Iterator<Item = Result<(BatchHeader, Range<usize>), StorageError>> + '_ {
    let mut pos = 0usize;
    let mut done = false;
    std::iter::from_fn(move || {
        if done || buf.len() - pos < BatchHeader::SIZE {
            return None;
        }
        match BatchHeader::parse(&buf[pos..]) {
            Err(e) => {
                done = true;
                Some(Err(e))
            }
            Ok(header) => {
                let total = header.total_size();
                if buf.len() - pos < total {
                    done = true;
                    return None;
                }
                let range = pos..pos + total;
                pos += total;
                Some(Ok((header, range)))
            }
        }
    })
}

/// CRC-32C of a whole batch as Kafka computes it (bytes from @21 to the end).
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_AT..])
}

/// Checks the stored CRC of one whole batch (`batch` must be exactly the batch).
pub fn verify_crc(batch: &[u8]) -> Result<(), StorageError> {
    if batch.len() < BatchHeader::SIZE {
        return Err(StorageError::corrupt(format!(
            "truncated batch: {} bytes, need at least {}",
            batch.len(),
            BatchHeader::SIZE
        )));
    }
    let stored = be_i32(batch, CRC_AT) as u32;
    let computed = compute_crc(batch);
    if stored != computed {
        return Err(StorageError::corrupt(format!(
            "CRC mismatch in batch at offset {}: stored {stored:#010x}, computed {computed:#010x}",
            be_i64(batch, BASE_OFFSET_AT)
        )));
    }
    Ok(())
}

/// Rewrites the stored CRC of one whole batch.
pub fn write_crc(batch: &mut [u8]) {
    let crc = compute_crc(batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Patches `baseOffset` in place (not covered by the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Patches `partitionLeaderEpoch` in place (not covered by the CRC).
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[PARTITION_LEADER_EPOCH_AT..PARTITION_LEADER_EPOCH_AT + 4]
        .copy_from_slice(&epoch.to_be_bytes());
}

/// Sets the timestamp type bit and `maxTimestamp`, then recomputes the CRC
/// (Kafka's `setMaxTimestamp`). A no-op when nothing changes.
pub fn set_max_timestamp(batch: &mut [u8], timestamp_type: TimestampType, max_timestamp: i64) {
    let attributes = be_i16(batch, ATTRIBUTES_AT);
    let new_attributes = match timestamp_type {
        TimestampType::CreateTime => attributes & !TIMESTAMP_TYPE_FLAG,
        TimestampType::LogAppendTime => attributes | TIMESTAMP_TYPE_FLAG,
    };
    if new_attributes == attributes && be_i64(batch, MAX_TIMESTAMP_AT) == max_timestamp {
        return;
    }
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&new_attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&max_timestamp.to_be_bytes());
    write_crc(batch);
}

// ---------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------

/// One record of an uncompressed batch, borrowing from the batch bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    headers: &'a [u8],
    header_count: usize,
}

impl<'a> Record<'a> {
    /// Number of record headers.
    pub fn header_count(&self) -> usize {
        self.header_count
    }

    /// The record headers as (key, value) pairs.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let buf = self.headers;
        let mut pos = 0usize;
        let mut left = self.header_count;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            // Validated when the record was parsed; stop quietly if not.
            let key = read_bytes(buf, &mut pos).ok()??;
            let value = read_bytes(buf, &mut pos).ok()?;
            Some((key, value))
        })
    }

    /// The record's timestamp given its batch header (LogAppendTime batches
    /// give every record the batch max timestamp).
    pub fn timestamp(&self, header: &BatchHeader) -> i64 {
        if header.is_log_append_time() {
            header.max_timestamp
        } else {
            header.base_timestamp.wrapping_add(self.timestamp_delta)
        }
    }

    /// The record's offset given its batch header.
    pub fn offset(&self, header: &BatchHeader) -> i64 {
        header.base_offset + i64::from(self.offset_delta)
    }
}

/// Reads a varint-length-prefixed byte string; length -1 is `None`.
fn read_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>, String> {
    let len = read_varint(buf, pos).map_err(str::to_string)?;
    if len == -1 {
        return Ok(None);
    }
    if len < -1 {
        return Err(format!("negative length {len}"));
    }
    let len = len as usize;
    if buf.len() - *pos < len {
        return Err(format!(
            "length {len} runs past the record end ({} bytes left)",
            buf.len() - *pos
        ));
    }
    let out = &buf[*pos..*pos + len];
    *pos += len;
    Ok(Some(out))
}

fn parse_record<'a>(data: &'a [u8], pos: &mut usize) -> Result<Record<'a>, String> {
    let len = read_varint(data, pos).map_err(str::to_string)?;
    if len < 1 {
        return Err(format!("invalid record length {len}"));
    }
    let start = *pos;
    let end = start + len as usize;
    if end > data.len() {
        return Err(format!(
            "record length {len} exceeds the {} bytes left in the batch",
            data.len() - start
        ));
    }
    let body = &data[..end];
    let mut p = start;
    let attributes = body[p] as i8;
    p += 1;
    let timestamp_delta = read_varlong(body, &mut p).map_err(str::to_string)?;
    let offset_delta = read_varint(body, &mut p).map_err(str::to_string)?;
    let key = read_bytes(body, &mut p).map_err(|e| format!("key: {e}"))?;
    let value = read_bytes(body, &mut p).map_err(|e| format!("value: {e}"))?;
    let header_count = read_varint(body, &mut p).map_err(str::to_string)?;
    if header_count < 0 {
        return Err(format!("negative header count {header_count}"));
    }
    let headers_start = p;
    for i in 0..header_count {
        match read_bytes(body, &mut p) {
            Ok(Some(_)) => {}
            Ok(None) => return Err(format!("header {i} has a null key")),
            Err(e) => return Err(format!("header {i} key: {e}")),
        }
        read_bytes(body, &mut p).map_err(|e| format!("header {i} value: {e}"))?;
    }
    if p != end {
        return Err(format!(
            "record declares {len} bytes but its fields use {}",
            p - start
        ));
    }
    *pos = end;
    Ok(Record {
        attributes,
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers: &body[headers_start..end],
        header_count: header_count as usize,
    })
}

/// Iterates the records of one uncompressed batch. `batch` must start at the
/// batch header and hold the whole batch. Fails for compressed batches (see
/// [`decompressed_records`]). The iterator yields an error and stops on a
/// malformed record or when bytes are left over after the declared record count.
pub fn records(
    batch: &[u8],
) -> Result<impl Iterator<Item = Result<Record<'_>, StorageError>> + '_, StorageError> {
    let header = BatchHeader::parse(batch)?;
    let total = header.total_size();
    if batch.len() < total {
        return Err(StorageError::corrupt(format!(
            "batch at offset {} declares {total} bytes but only {} are present",
            header.base_offset,
            batch.len()
        )));
    }
    if header.compression() != 0 {
        return Err(StorageError::InvalidArgument(format!(
            "cannot read records of batch at offset {} in place: it is compressed with codec {}",
            header.base_offset,
            header.compression()
        )));
    }
    Ok(record_spans(&header, &batch[BatchHeader::SIZE..total])?
        .map(|r| r.map(|(record, _)| record)))
}

/// The uncompressed records section of one whole batch (`batch` starts at
/// the header): the batch's own bytes when uncompressed, else decompressed
/// with the batch's codec. Iterate it with [`record_spans`].
pub fn decompressed_records(batch: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, StorageError> {
    let header = BatchHeader::parse(batch)?;
    let total = header.total_size();
    if batch.len() < total {
        return Err(StorageError::corrupt(format!(
            "batch at offset {} declares {total} bytes but only {} are present",
            header.base_offset,
            batch.len()
        )));
    }
    let section = &batch[BatchHeader::SIZE..total];
    if header.compression() == 0 {
        return Ok(std::borrow::Cow::Borrowed(section));
    }
    crate::compression::decompress(header.compression(), section)
        .map(std::borrow::Cow::Owned)
        .map_err(|e| StorageError::corrupt(format!("batch at offset {}: {e}", header.base_offset)))
}

/// Iterates the records of an uncompressed records section `data` of the
/// batch `header`, yielding each record with its byte range in `data` (a
/// record's bytes can be copied into another batch with the same base
/// offset and base timestamp unchanged). Errors and stops like [`records`].
pub fn record_spans<'a>(
    header: &BatchHeader,
    data: &'a [u8],
) -> Result<impl Iterator<Item = Result<(Record<'a>, Range<usize>), StorageError>> + 'a, StorageError>
{
    if header.records_count < 0 {
        return Err(StorageError::corrupt(format!(
            "batch at offset {} has negative records count {}",
            header.base_offset, header.records_count
        )));
    }
    let mut pos = 0usize;
    let mut left = header.records_count as usize;
    let mut done = false;
    let base_offset = header.base_offset;
    Ok(std::iter::from_fn(move || {
        if done {
            return None;
        }
        if left == 0 {
            done = true;
            if pos != data.len() {
                return Some(Err(StorageError::corrupt(format!(
                    "batch at offset {base_offset}: {} bytes left after the last declared record",
                    data.len() - pos
                ))));
            }
            return None;
        }
        left -= 1;
        let start = pos;
        match parse_record(data, &mut pos) {
            Ok(record) => Some(Ok((record, start..pos))),
            Err(reason) => {
                done = true;
                Some(Err(StorageError::corrupt(format!(
                    "batch at offset {base_offset}: malformed record at byte {}: {reason}",
                    BatchHeader::SIZE + pos
                ))))
            }
        }
    }))
}

/// Whether one whole batch (compressed or not) holds a record with a null
/// key: compacted topics refuse those on produce.
pub fn has_record_without_key(batch: &[u8]) -> Result<bool, StorageError> {
    let header = BatchHeader::parse(batch)?;
    let data = decompressed_records(batch)?;
    for item in record_spans(&header, &data)? {
        if item?.0.key.is_none() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Encodes a batch with every header field of `header` except the lengths,
/// the record count and the CRC: `records` (an uncompressed records section
/// holding `records_count` records, offset and timestamp deltas relative to
/// `header`) is compressed with the header's codec. An empty batch
/// (`records_count == 0`) is written uncompressed with no records section,
/// as Kafka writes the empty batches compaction leaves.
pub(crate) fn rebuild_batch(
    header: &BatchHeader,
    records: &[u8],
    records_count: i32,
) -> Result<BytesMut, StorageError> {
    let (attributes, section) = if records_count == 0 {
        (header.attributes & !COMPRESSION_CODEC_MASK, Vec::new())
    } else {
        (
            header.attributes,
            crate::compression::compress(header.compression(), records)?,
        )
    };
    let total = BatchHeader::SIZE + section.len();
    let mut out = BytesMut::with_capacity(total);
    out.put_i64(header.base_offset);
    out.put_i32((total - LOG_OVERHEAD) as i32);
    out.put_i32(header.partition_leader_epoch);
    out.put_i8(MAGIC_V2);
    out.put_u32(0); // CRC, filled below
    out.put_i16(attributes);
    out.put_i32(header.last_offset_delta);
    out.put_i64(header.base_timestamp);
    out.put_i64(header.max_timestamp);
    out.put_i64(header.producer_id);
    out.put_i16(header.producer_epoch);
    out.put_i32(header.base_sequence);
    out.put_i32(records_count);
    out.extend_from_slice(&section);
    write_crc(&mut out);
    Ok(out)
}

// ---------------------------------------------------------------------------
// Validation on append (crate-private)
// ---------------------------------------------------------------------------

/// What validation learnt about a buffer of batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchesSummary {
    pub batch_count: usize,
    /// Sum over batches of `last_offset_delta + 1`: how many offsets they take.
    pub offset_count: i64,
    pub bytes: usize,
    /// Largest batch max timestamp after patching (-1 if none).
    pub max_timestamp: i64,
    /// Base offset of the first batch and last offset of the last one (replicated appends).
    pub first_offset: i64,
    pub last_offset: i64,
}

impl BatchesSummary {
    /// Nothing counted yet, for a record set of `bytes` bytes.
    fn empty(bytes: usize) -> BatchesSummary {
        BatchesSummary {
            batch_count: 0,
            offset_count: 0,
            bytes,
            max_timestamp: NO_TIMESTAMP,
            first_offset: 0,
            last_offset: 0,
        }
    }
}

/// Structural checks shared by both append paths: header, length, CRC, codec.
fn check_batch_structure(buf: &[u8], pos: usize) -> Result<BatchHeader, StorageError> {
    let left = buf.len() - pos;
    if left < BatchHeader::SIZE {
        return Err(StorageError::corrupt(format!(
            "truncated input: {left} bytes at byte {pos}, a batch header needs {}",
            BatchHeader::SIZE
        )));
    }
    let header = BatchHeader::parse(&buf[pos..])?;
    let total = header.total_size();
    if total > left {
        return Err(StorageError::corrupt(format!(
            "batch at byte {pos} declares {total} bytes but only {left} are present"
        )));
    }
    if header.compression() > MAX_COMPRESSION_CODEC {
        return Err(StorageError::corrupt(format!(
            "batch at byte {pos} has unknown compression codec {}",
            header.compression()
        )));
    }
    if header.last_offset_delta < 0 {
        return Err(StorageError::corrupt(format!(
            "batch at byte {pos} has negative lastOffsetDelta {}",
            header.last_offset_delta
        )));
    }
    verify_crc(&buf[pos..pos + total])?;
    Ok(header)
}

/// Validates a producer's (leader) append and patches timestamps in place.
///
/// Checks every batch: structure, CRC, size <= `max_message_bytes`,
/// `records_count >= 1`, `lastOffsetDelta == records_count - 1`, and for
/// uncompressed batches every record (offset deltas 0..n, exact lengths).
/// Then, like Kafka's `LogValidator`: for `LogAppendTime` sets the timestamp
/// type bit and `maxTimestamp = now_ms`; for `CreateTime` clears the bit and,
/// for uncompressed batches, fixes a `maxTimestamp` that disagrees with the
/// records. Touched batches get a new CRC. Offsets are not assigned here.
pub(crate) fn validate_for_append(
    buf: &mut [u8],
    max_message_bytes: u32,
    timestamp_type: TimestampType,
    now_ms: i64,
) -> Result<BatchesSummary, StorageError> {
    if buf.is_empty() {
        return Err(StorageError::corrupt("empty record set"));
    }
    let mut summary = BatchesSummary::empty(buf.len());
    let mut pos = 0usize;
    while pos < buf.len() {
        let header = check_batch_structure(buf, pos)?;
        let total = header.total_size();
        if total > max_message_bytes as usize {
            return Err(StorageError::MessageTooLarge {
                size: total,
                max: max_message_bytes,
            });
        }
        if header.records_count < 1 {
            return Err(StorageError::corrupt(format!(
                "batch at byte {pos} has records count {}, must be at least 1",
                header.records_count
            )));
        }
        if i64::from(header.last_offset_delta) != i64::from(header.records_count) - 1 {
            return Err(StorageError::corrupt(format!(
                "batch at byte {pos} has lastOffsetDelta {} inconsistent with records count {}",
                header.last_offset_delta, header.records_count
            )));
        }
        let batch = &mut buf[pos..pos + total];
        let record_max = if header.compression() == 0 {
            Some(validate_uncompressed_records(batch, &header, pos)?)
        } else {
            None
        };
        let max_timestamp = match timestamp_type {
            TimestampType::LogAppendTime => now_ms,
            TimestampType::CreateTime => record_max.unwrap_or(header.max_timestamp),
        };
        set_max_timestamp(batch, timestamp_type, max_timestamp);
        summary.max_timestamp = summary.max_timestamp.max(max_timestamp);
        summary.batch_count += 1;
        summary.offset_count += i64::from(header.last_offset_delta) + 1;
        pos += total;
    }
    Ok(summary)
}

/// Checks the records of one uncompressed batch; returns their max timestamp.
fn validate_uncompressed_records(
    batch: &[u8],
    header: &BatchHeader,
    at: usize,
) -> Result<i64, StorageError> {
    let mut max = NO_TIMESTAMP;
    for (i, record) in records(batch)?.enumerate() {
        let record = record.map_err(|e| StorageError::corrupt(format!("at byte {at}: {e}")))?;
        if record.offset_delta as usize != i {
            return Err(StorageError::corrupt(format!(
                "batch at byte {at}: record {i} has offset delta {}, expected {i}",
                record.offset_delta
            )));
        }
        let ts = header
            .base_timestamp
            .checked_add(record.timestamp_delta)
            .ok_or_else(|| {
                StorageError::corrupt(format!(
                    "batch at byte {at}: record {i} timestamp overflows (base {}, delta {})",
                    header.base_timestamp, record.timestamp_delta
                ))
            })?;
        max = max.max(ts);
    }
    Ok(max)
}

/// Validates batches copied from a leader: structure, CRC, offsets increasing
/// across batches, whole buffer consumed. Sizes against `max.message.bytes`
/// are not checked (the leader already accepted them; configs may differ).
/// Empty batches (`records_count == 0`, left by compaction) are allowed.
pub(crate) fn validate_replicated(buf: &[u8]) -> Result<BatchesSummary, StorageError> {
    if buf.is_empty() {
        return Err(StorageError::corrupt("empty record set"));
    }
    let mut summary = BatchesSummary::empty(buf.len());
    let mut pos = 0usize;
    let mut next_expected: Option<i64> = None;
    while pos < buf.len() {
        let header = check_batch_structure(buf, pos)?;
        if header.records_count < 0 {
            return Err(StorageError::corrupt(format!(
                "batch at offset {} has negative records count {}",
                header.base_offset, header.records_count
            )));
        }
        if header.base_offset < 0 {
            return Err(StorageError::corrupt(format!(
                "replicated batch has negative base offset {}",
                header.base_offset
            )));
        }
        match next_expected {
            None => summary.first_offset = header.base_offset,
            Some(next) if header.base_offset < next => {
                return Err(StorageError::corrupt(format!(
                    "replicated batch at offset {} overlaps the previous batch, which ends before {next}",
                    header.base_offset
                )));
            }
            Some(_) => {}
        }
        next_expected = Some(header.next_offset());
        summary.last_offset = header.last_offset();
        summary.max_timestamp = summary.max_timestamp.max(header.max_timestamp);
        summary.batch_count += 1;
        summary.offset_count += i64::from(header.last_offset_delta) + 1;
        pos += header.total_size();
    }
    Ok(summary)
}

// ---------------------------------------------------------------------------
// Building
// ---------------------------------------------------------------------------

/// Encodes one uncompressed v2 batch, record by record.
///
/// Defaults: base offset 0, partition leader epoch -1, no producer id
/// (-1/-1/-1), CreateTime, not transactional, not control. The base
/// timestamp is the first record's timestamp unless set before the first
/// [`BatchBuilder::push`]. Used by the group coordinator to write its records
/// and by tests.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    base_offset: i64,
    partition_leader_epoch: i32,
    attributes: i16,
    base_timestamp: Option<i64>,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    records: BytesMut,
    count: i32,
    max_timestamp: i64,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    /// A builder with Kafka's "no producer" defaults.
    pub fn new() -> Self {
        BatchBuilder {
            base_offset: 0,
            partition_leader_epoch: -1,
            attributes: 0,
            base_timestamp: None,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records: BytesMut::new(),
            count: 0,
            max_timestamp: NO_TIMESTAMP,
        }
    }

    pub fn base_offset(mut self, base_offset: i64) -> Self {
        self.base_offset = base_offset;
        self
    }

    pub fn partition_leader_epoch(mut self, epoch: i32) -> Self {
        self.partition_leader_epoch = epoch;
        self
    }

    /// Sets the base timestamp; call before pushing records.
    pub fn base_timestamp(mut self, timestamp: i64) -> Self {
        self.base_timestamp = Some(timestamp);
        self
    }

    /// Idempotent / transactional producer identity.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    pub fn transactional(mut self, yes: bool) -> Self {
        self.set_flag(TRANSACTIONAL_FLAG, yes);
        self
    }

    pub fn control(mut self, yes: bool) -> Self {
        self.set_flag(CONTROL_FLAG, yes);
        self
    }

    pub fn log_append_time(mut self, yes: bool) -> Self {
        self.set_flag(TIMESTAMP_TYPE_FLAG, yes);
        self
    }

    fn set_flag(&mut self, flag: i16, yes: bool) {
        if yes {
            self.attributes |= flag;
        } else {
            self.attributes &= !flag;
        }
    }

    /// Number of records pushed so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends one record.
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) -> &mut Self {
        let base_timestamp = *self.base_timestamp.get_or_insert(timestamp);
        let timestamp_delta = timestamp.wrapping_sub(base_timestamp);
        let offset_delta = self.count;
        let bytes_len = |b: Option<&[u8]>| match b {
            None => varint_len(-1),
            Some(b) => varint_len(b.len() as i32) + b.len(),
        };
        let headers_len: usize = headers
            .iter()
            .map(|(k, v)| bytes_len(Some(k)) + bytes_len(*v))
            .sum();
        let body_len = 1
            + varlong_len(timestamp_delta)
            + varint_len(offset_delta)
            + bytes_len(key)
            + bytes_len(value)
            + varint_len(headers.len() as i32)
            + headers_len;
        let out = &mut self.records;
        out.reserve(body_len + 5);
        put_varint(out, body_len as i32);
        out.put_i8(0);
        put_varlong(out, timestamp_delta);
        put_varint(out, offset_delta);
        put_bytes(out, key);
        put_bytes(out, value);
        put_varint(out, headers.len() as i32);
        for (k, v) in headers {
            put_bytes(out, Some(k));
            put_bytes(out, *v);
        }
        self.count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self
    }

    /// Encodes the batch, computing lengths and the CRC.
    pub fn build(&self) -> BytesMut {
        let total = BatchHeader::SIZE + self.records.len();
        let mut out = BytesMut::with_capacity(total);
        let base_timestamp = self.base_timestamp.unwrap_or(NO_TIMESTAMP);
        let max_timestamp = if self.count == 0 {
            base_timestamp
        } else {
            self.max_timestamp
        };
        out.put_i64(self.base_offset);
        out.put_i32((total - LOG_OVERHEAD) as i32);
        out.put_i32(self.partition_leader_epoch);
        out.put_i8(MAGIC_V2);
        out.put_u32(0); // CRC, filled below
        out.put_i16(self.attributes);
        out.put_i32((self.count - 1).max(0));
        out.put_i64(base_timestamp);
        out.put_i64(max_timestamp);
        out.put_i64(self.producer_id);
        out.put_i16(self.producer_epoch);
        out.put_i32(self.base_sequence);
        out.put_i32(self.count);
        out.extend_from_slice(&self.records);
        write_crc(&mut out);
        out
    }
}

fn put_bytes(out: &mut BytesMut, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}

/// Helpers for tests in this and other crates: build valid batches, read them back.
///
/// Not behind `cfg(test)` so that other crates' tests can use them. The
/// readers panic on malformed input: they are for tests only.
pub mod test_support {
    use bytes::{BufMut, BytesMut};

    use super::{
        decompressed_records, rebuild_batch, record_spans, write_crc, BatchBuilder, BatchHeader,
        LOG_OVERHEAD, MAGIC_V2,
    };

    /// A record to build: `(key, value, timestamp)`.
    pub type RecordSpec<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, i64);

    /// One uncompressed CreateTime batch at offset 0 with producer id/epoch/sequence -1.
    /// Each record is `(key, value, timestamp)`.
    pub fn build_batch(base_timestamp: i64, records: &[RecordSpec<'_>]) -> BytesMut {
        let mut builder = BatchBuilder::new().base_timestamp(base_timestamp);
        for (key, value, timestamp) in records {
            builder.push(*timestamp, *key, *value, &[]);
        }
        builder.build()
    }

    /// A batch of `count` records with values `value-<i>` (no keys), all at `timestamp`.
    pub fn simple_batch(count: usize, timestamp: i64) -> BytesMut {
        let values: Vec<Vec<u8>> = (0..count)
            .map(|i| format!("value-{i}").into_bytes())
            .collect();
        let records: Vec<RecordSpec<'_>> = values
            .iter()
            .map(|v| (None, Some(v.as_slice()), timestamp))
            .collect();
        build_batch(timestamp, &records)
    }

    /// A batch claiming compression `codec` (1..=4) whose records section is the
    /// opaque `payload`: it cannot be decompressed, but its header and CRC are
    /// valid. For tests of code that must not look inside compressed batches.
    pub fn opaque_compressed_batch(
        codec: u8,
        base_timestamp: i64,
        max_timestamp: i64,
        records_count: i32,
        payload: &[u8],
    ) -> BytesMut {
        let total = BatchHeader::SIZE + payload.len();
        let mut out = BytesMut::with_capacity(total);
        out.put_i64(0);
        out.put_i32((total - LOG_OVERHEAD) as i32);
        out.put_i32(-1);
        out.put_i8(MAGIC_V2);
        out.put_u32(0);
        out.put_i16(i16::from(codec & 0x07));
        out.put_i32(records_count - 1);
        out.put_i64(base_timestamp);
        out.put_i64(max_timestamp);
        out.put_i64(-1);
        out.put_i16(-1);
        out.put_i32(-1);
        out.put_i32(records_count);
        out.extend_from_slice(payload);
        write_crc(&mut out);
        out
    }

    /// Like [`build_batch`], with the records section compressed with `codec`
    /// (1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn build_compressed_batch(
        codec: u8,
        base_timestamp: i64,
        records: &[RecordSpec<'_>],
    ) -> BytesMut {
        let plain = build_batch(base_timestamp, records);
        let mut header = BatchHeader::parse(&plain).expect("valid batch");
        header.attributes |= i16::from(codec & 0x07);
        rebuild_batch(&header, &plain[BatchHeader::SIZE..], header.records_count)
            .expect("compress records")
    }

    /// One record as `(offset, timestamp, key, value)`.
    pub type OwnedRecord = (i64, i64, Option<Vec<u8>>, Option<Vec<u8>>);

    /// The records of one batch (decompressed if need be) as `(offset,
    /// timestamp, key, value)`. Panics if `batch` is not a valid batch.
    pub fn records_of(batch: &[u8]) -> Vec<OwnedRecord> {
        let header = BatchHeader::parse(batch).expect("valid batch header");
        let data = decompressed_records(batch).expect("readable records");
        record_spans(&header, &data)
            .expect("valid records count")
            .map(|r| {
                let (r, _) = r.expect("valid record");
                (
                    r.offset(&header),
                    r.timestamp(&header),
                    r.key.map(<[u8]>::to_vec),
                    r.value.map(<[u8]>::to_vec),
                )
            })
            .collect()
    }

    /// The records of every batch in `buf` (e.g. a fetch result), in order.
    pub fn all_records(buf: &[u8]) -> Vec<OwnedRecord> {
        let mut out = Vec::new();
        for item in super::batches(buf) {
            let (_, range) = item.expect("valid batch");
            out.extend(records_of(&buf[range]));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn built_batch_has_the_documented_header_fields() {
        let batch = build_batch(
            1000,
            &[(Some(b"k"), Some(b"v"), 1000), (None, Some(b"w"), 1005)],
        );
        let h = BatchHeader::parse(&batch).unwrap();
        assert_eq!(h.base_offset, 0);
        assert_eq!(h.total_size(), batch.len());
        assert_eq!(h.magic, 2);
        assert_eq!(h.last_offset_delta, 1);
        assert_eq!(h.base_timestamp, 1000);
        assert_eq!(h.max_timestamp, 1005);
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (-1, -1, -1)
        );
        assert_eq!(h.records_count, 2);
        assert_eq!(h.compression(), 0);
        assert!(!h.is_log_append_time() && !h.is_transactional() && !h.is_control());
        verify_crc(&batch).unwrap();
    }

    #[test]
    fn records_of_reads_back_what_build_batch_wrote() {
        let batch = build_batch(
            50,
            &[
                (Some(b"a"), None, 50),
                (None, Some(b""), 40),
                (Some(b"key"), Some(b"value"), 70),
            ],
        );
        assert_eq!(
            records_of(&batch),
            vec![
                (0, 50, Some(b"a".to_vec()), None),
                (1, 40, None, Some(Vec::new())),
                (2, 70, Some(b"key".to_vec()), Some(b"value".to_vec())),
            ]
        );
    }

    #[test]
    fn record_headers_round_trip() {
        let mut builder = BatchBuilder::new();
        builder.push(1, None, Some(b"v"), &[(b"h1", Some(b"x")), (b"h2", None)]);
        let batch = builder.build();
        let rec = records(&batch).unwrap().next().unwrap().unwrap();
        let headers: Vec<_> = rec.headers().collect();
        assert_eq!(
            headers,
            vec![(&b"h1"[..], Some(&b"x"[..])), (&b"h2"[..], None)]
        );
    }

    #[test]
    fn batches_iterator_stops_at_a_torn_tail() {
        let a = build_batch(1, &[(None, Some(b"one"), 1)]);
        let b = build_batch(2, &[(None, Some(b"two"), 2)]);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&a);
        buf.extend_from_slice(&b);
        buf.extend_from_slice(&b[..b.len() / 2]);
        let found: Vec<_> = batches(&buf).map(|r| r.unwrap().1).collect();
        assert_eq!(found, vec![0..a.len(), a.len()..a.len() + b.len()]);
    }

    #[test]
    fn batches_iterator_reports_a_bad_magic() {
        let mut a = build_batch(1, &[(None, Some(b"one"), 1)]);
        a[16] = 1;
        let mut it = batches(&a);
        let err = it.next().unwrap().unwrap_err();
        assert!(err.to_string().contains("magic 1"), "{err}");
        assert!(it.next().is_none());
    }

    #[test]
    fn crc_mismatch_names_both_values() {
        let mut a = build_batch(1, &[(None, Some(b"one"), 1)]);
        let last = a.len() - 1;
        a[last] ^= 0xff;
        let err = verify_crc(&a).unwrap_err().to_string();
        assert!(
            err.contains("CRC mismatch") && err.contains("stored") && err.contains("computed"),
            "{err}"
        );
    }

    #[test]
    fn patching_offset_and_epoch_keeps_the_crc_valid() {
        let mut a = build_batch(1, &[(None, Some(b"one"), 1)]);
        set_base_offset(&mut a, 12345);
        set_partition_leader_epoch(&mut a, 7);
        verify_crc(&a).unwrap();
        let h = BatchHeader::parse(&a).unwrap();
        assert_eq!((h.base_offset, h.partition_leader_epoch), (12345, 7));
    }

    #[test]
    fn validation_rejects_inconsistent_last_offset_delta() {
        let mut a = build_batch(1, &[(None, Some(b"one"), 1), (None, Some(b"two"), 1)]);
        a[23..27].copy_from_slice(&5i32.to_be_bytes());
        write_crc(&mut a);
        let err = validate_for_append(&mut a, u32::MAX, TimestampType::CreateTime, 0).unwrap_err();
        assert!(err.to_string().contains("lastOffsetDelta 5"), "{err}");
    }

    #[test]
    fn validation_rejects_a_record_that_overruns_its_length() {
        let mut a = build_batch(1, &[(None, Some(b"value"), 1)]);
        // The record length varint is the first byte of the records section.
        a[BatchHeader::SIZE] = 2 * 3; // zig-zag 3: far shorter than the fields
        write_crc(&mut a);
        let err = validate_for_append(&mut a, u32::MAX, TimestampType::CreateTime, 0).unwrap_err();
        assert!(matches!(err, StorageError::CorruptBatch { .. }), "{err}");
    }

    #[test]
    fn validation_fixes_a_wrong_max_timestamp_of_an_uncompressed_batch() {
        let mut a = build_batch(100, &[(None, Some(b"x"), 100), (None, Some(b"y"), 150)]);
        a[35..43].copy_from_slice(&999i64.to_be_bytes());
        write_crc(&mut a);
        let summary = validate_for_append(&mut a, u32::MAX, TimestampType::CreateTime, 0).unwrap();
        assert_eq!(summary.max_timestamp, 150);
        assert_eq!(BatchHeader::parse(&a).unwrap().max_timestamp, 150);
        verify_crc(&a).unwrap();
    }

    #[test]
    fn a_null_key_is_found_in_plain_and_compressed_batches() {
        let keyed: &[RecordSpec<'_>] = &[(Some(b"k"), Some(b"v"), 1), (Some(b"j"), None, 1)];
        let keyless: &[RecordSpec<'_>] = &[(Some(b"k"), Some(b"v"), 1), (None, Some(b"v"), 1)];
        for codec in 0..=4u8 {
            let build = |specs| build_compressed_batch(codec, 1, specs);
            assert!(
                !has_record_without_key(&build(keyed)).unwrap(),
                "codec {codec}"
            );
            assert!(
                has_record_without_key(&build(keyless)).unwrap(),
                "codec {codec}"
            );
        }
    }

    #[test]
    fn records_of_compressed_batch_is_refused() {
        let a = opaque_compressed_batch(1, 0, 0, 3, b"opaque");
        assert!(matches!(records(&a), Err(StorageError::InvalidArgument(_))));
    }
}
