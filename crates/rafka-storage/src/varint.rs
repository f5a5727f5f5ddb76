//! Zig-zag varints as used inside Kafka v2 records (protobuf style).
//!
//! `varint` is a 32-bit signed value in at most 5 bytes, `varlong` a 64-bit
//! signed value in at most 10 bytes. Decoders report a short, human-readable
//! reason; callers wrap it into a `CorruptBatch` error with their context.

use bytes::BufMut;

/// Decodes a zig-zag varint at `*pos`, advancing `pos`.
pub(crate) fn read_varint(buf: &[u8], pos: &mut usize) -> Result<i32, &'static str> {
    let raw = read_unsigned(buf, pos, 5)?;
    if raw > u64::from(u32::MAX) {
        return Err("varint does not fit 32 bits");
    }
    let raw = raw as u32;
    Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
}

/// Decodes a zig-zag varlong at `*pos`, advancing `pos`.
pub(crate) fn read_varlong(buf: &[u8], pos: &mut usize) -> Result<i64, &'static str> {
    let raw = read_unsigned(buf, pos, 10)?;
    Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

fn read_unsigned(buf: &[u8], pos: &mut usize, max_bytes: usize) -> Result<u64, &'static str> {
    let mut value: u64 = 0;
    for i in 0..max_bytes {
        let Some(&byte) = buf.get(*pos) else {
            return Err("varint runs past the end of the record");
        };
        *pos += 1;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint is too long")
}

/// Appends a zig-zag varint.
pub(crate) fn put_varint(out: &mut impl BufMut, value: i32) {
    put_unsigned(out, u64::from(((value << 1) ^ (value >> 31)) as u32));
}

/// Appends a zig-zag varlong.
pub(crate) fn put_varlong(out: &mut impl BufMut, value: i64) {
    put_unsigned(out, ((value << 1) ^ (value >> 63)) as u64);
}

fn put_unsigned(out: &mut impl BufMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// Encoded size of a zig-zag varint.
pub(crate) fn varint_len(value: i32) -> usize {
    unsigned_len(u64::from(((value << 1) ^ (value >> 31)) as u32))
}

/// Encoded size of a zig-zag varlong.
pub(crate) fn varlong_len(value: i64) -> usize {
    unsigned_len(((value << 1) ^ (value >> 63)) as u64)
}

fn unsigned_len(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_including_extremes() {
        for v in [0, 1, -1, 63, -64, 64, 300, -300, i32::MAX, i32::MIN] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v), "length of {v}");
            let mut pos = 0;
            assert_eq!(read_varint(&buf, &mut pos), Ok(v));
            assert_eq!(pos, buf.len());
        }
        for v in [0, 1, -1, 1 << 40, -(1 << 40), i64::MAX, i64::MIN] {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            assert_eq!(buf.len(), varlong_len(v), "length of {v}");
            let mut pos = 0;
            assert_eq!(read_varlong(&buf, &mut pos), Ok(v));
            assert_eq!(pos, buf.len());
        }
    }

    #[test]
    fn truncated_and_overlong_varints_are_errors() {
        let mut pos = 0;
        assert!(read_varint(&[0x80], &mut pos).is_err());
        let mut pos = 0;
        assert!(read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01], &mut pos).is_err());
    }
}
