//! Record-section codecs for the log cleaner and the produce-path key check.
//!
//! Storage normally keeps batches exactly as received and never looks inside
//! a compressed one. Compaction must: it reads the records of every batch,
//! and rewrites a batch that lost records with the same codec. The codecs
//! themselves are the `kafka-protocol` crate's (gzip, Kafka's xerial-framed
//! snappy, LZ4 frames, zstd); this module only maps the batch attribute
//! codec number to them and their errors to [`StorageError`].

use bytes::BytesMut;
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};

use crate::StorageError;

/// Codec numbers of the batch attributes (bits 0-2).
pub(crate) const NONE: u8 = 0;
const GZIP: u8 = 1;
const SNAPPY: u8 = 2;
const LZ4: u8 = 3;
const ZSTD: u8 = 4;

fn codec_error(codec: u8, what: &str, e: &impl std::fmt::Display) -> StorageError {
    StorageError::corrupt(format!(
        "{what} with compression codec {codec} failed: {e:#}"
    ))
}

/// The uncompressed records section of a batch whose records section is `data`.
pub(crate) fn decompress(codec: u8, data: &[u8]) -> Result<Vec<u8>, StorageError> {
    let mut input = data;
    let take = |out: &mut bytes::Bytes| Ok(out.to_vec());
    let result = match codec {
        NONE => return Ok(data.to_vec()),
        GZIP => Gzip::decompress(&mut input, take),
        SNAPPY => Snappy::decompress(&mut input, take),
        LZ4 => Lz4::decompress(&mut input, take),
        ZSTD => Zstd::decompress(&mut input, take),
        other => {
            return Err(StorageError::corrupt(format!(
                "unknown compression codec {other}"
            )))
        }
    };
    result.map_err(|e| codec_error(codec, "decompressing", &e))
}

/// `data` (an uncompressed records section) compressed with `codec`.
pub(crate) fn compress(codec: u8, data: &[u8]) -> Result<Vec<u8>, StorageError> {
    let mut out = BytesMut::new();
    let put = |buf: &mut BytesMut| {
        buf.extend_from_slice(data);
        Ok(())
    };
    let result = match codec {
        NONE => return Ok(data.to_vec()),
        GZIP => Gzip::compress(&mut out, put),
        SNAPPY => Snappy::compress(&mut out, put),
        LZ4 => Lz4::compress(&mut out, put),
        ZSTD => Zstd::compress(&mut out, put),
        other => {
            return Err(StorageError::corrupt(format!(
                "unknown compression codec {other}"
            )))
        }
    };
    result.map_err(|e| codec_error(codec, "compressing", &e))?;
    Ok(out.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..5000u32).flat_map(|i| (i % 251).to_be_bytes()).collect();
        for codec in [NONE, GZIP, SNAPPY, LZ4, ZSTD] {
            let packed = compress(codec, &data).unwrap();
            assert_eq!(decompress(codec, &packed).unwrap(), data, "codec {codec}");
        }
    }

    #[test]
    fn garbage_is_a_corrupt_batch_naming_the_codec() {
        let err = decompress(GZIP, b"not gzip at all").unwrap_err();
        assert!(matches!(err, StorageError::CorruptBatch { .. }), "{err}");
        assert!(err.to_string().contains("codec 1"), "{err}");
    }
}
