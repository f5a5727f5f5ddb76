//! Framing and the request/response envelope.
//!
//! A Kafka frame is a big-endian `i32` length followed by that many bytes. The length
//! is checked against `socket.request.max.bytes` *before* anything is buffered or
//! decoded, so a hostile prefix cannot make the broker allocate. "Incomplete" (wait
//! for more bytes) is kept apart from "invalid" (close the connection).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::versions;

/// The smallest request: api key, api version, correlation id and a client id length.
pub const MIN_REQUEST_SIZE: usize = 10;

/// Why a connection is being closed.
#[derive(Debug, Error)]
pub enum FrameError {
    #[error("frame length {length} is outside 10..={max} (socket.request.max.bytes)")]
    InvalidLength { length: i64, max: usize },
    #[error("connection closed in the middle of a {expected}-byte frame ({received} received)")]
    Truncated { expected: usize, received: usize },
    #[error("unknown API key {api_key}")]
    UnknownApiKey { api_key: i16 },
    #[error("unsupported version {version} of {api:?}")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("malformed {api:?} v{version} request: {reason}")]
    Malformed {
        api: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads length-prefixed frames from a byte stream. `read_frame` is cancel-safe:
/// partial input stays in the buffer.
pub struct FrameReader<R> {
    reader: R,
    buffer: BytesMut,
    max_frame: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(reader: R, max_frame: usize) -> FrameReader<R> {
        FrameReader {
            reader,
            buffer: BytesMut::with_capacity(8 * 1024),
            max_frame,
        }
    }

    /// The next whole frame, or `None` when the peer closed cleanly between frames.
    pub async fn read_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        loop {
            if let Some(frame) = self.parse_frame()? {
                return Ok(Some(frame));
            }
            if self.reader.read_buf(&mut self.buffer).await? == 0 {
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                let expected = if self.buffer.len() >= 4 {
                    4 + i32::from_be_bytes(self.buffer[..4].try_into().unwrap_or_default()) as usize
                } else {
                    4
                };
                return Err(FrameError::Truncated {
                    expected,
                    received: self.buffer.len(),
                });
            }
        }
    }

    fn parse_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buffer.len() < 4 {
            return Ok(None);
        }
        let length = i32::from_be_bytes([self.buffer[0], self.buffer[1], self.buffer[2], self.buffer[3]]);
        if length < MIN_REQUEST_SIZE as i32 || length as usize > self.max_frame {
            return Err(FrameError::InvalidLength {
                length: length as i64,
                max: self.max_frame,
            });
        }
        let total = 4 + length as usize;
        if self.buffer.len() < total {
            // Grow towards the frame size in bounded steps, so a client that announces a
            // large frame and then stalls holds no more memory than it actually sent.
            let want = (total - self.buffer.len()).min(1 << 20);
            self.buffer.reserve(want);
            return Ok(None);
        }
        self.buffer.advance(4);
        Ok(Some(self.buffer.split_to(length as usize).freeze()))
    }
}

/// The fixed first fields of every request header, readable whatever the version.
#[derive(Debug, Clone, Copy)]
pub struct RequestPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

impl RequestPrefix {
    pub fn parse(frame: &[u8]) -> RequestPrefix {
        RequestPrefix {
            api_key: i16::from_be_bytes([frame[0], frame[1]]),
            api_version: i16::from_be_bytes([frame[2], frame[3]]),
            correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
        }
    }
}

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: RequestKind,
}

/// What to do with a frame that is not a request we implement.
#[derive(Debug)]
pub enum Decoded {
    Request(Box<Request>),
    /// An ApiVersions request of a version we do not know: answer it with a v0 body
    /// carrying UNSUPPORTED_VERSION and our ranges, so the client can retry (KIP-511).
    UnsupportedApiVersions { correlation_id: i32 },
}

/// Decodes one frame (already bounded in size) into a request.
pub fn decode_request(frame: Bytes) -> Result<Decoded, FrameError> {
    let prefix = RequestPrefix::parse(&frame);
    let api_key = ApiKey::try_from(prefix.api_key).map_err(|_| FrameError::UnknownApiKey {
        api_key: prefix.api_key,
    })?;
    let version = prefix.api_version;
    if !versions::is_supported(api_key, version) {
        if api_key == ApiKey::ApiVersions && version > 0 {
            return Ok(Decoded::UnsupportedApiVersions {
                correlation_id: prefix.correlation_id,
            });
        }
        if versions::supported(api_key).is_none() {
            return Err(FrameError::UnknownApiKey {
                api_key: prefix.api_key,
            });
        }
        return Err(FrameError::UnsupportedVersion { api: api_key, version });
    }
    let malformed = |reason: String| FrameError::Malformed {
        api: api_key,
        version,
        reason,
    };
    let mut buf = frame.clone();
    let header = RequestHeader::decode(&mut buf, api_key.request_header_version(version))
        .map_err(|e| malformed(format!("header: {e}")))?;
    let body = RequestKind::decode(api_key, &mut buf, version).map_err(|e| malformed(e.to_string()))?;
    if buf.has_remaining() {
        // Kafka ignores bytes after a decoded request, and librdkafka 2.16 sends three
        // after its Metadata v13 body; refusing them would refuse a real client.
        tracing::debug!(api = ?api_key, version, trailing = buf.remaining(), frame = %hex_prefix(&frame, 256), "request with trailing bytes");
    }
    Ok(Decoded::Request(Box::new(Request {
        api_key,
        version,
        header,
        body,
    })))
}

/// The first `limit` bytes of a frame in hex, for diagnosing malformed requests.
pub fn hex_prefix(frame: &[u8], limit: usize) -> String {
    frame.iter().take(limit).map(|b| format!("{b:02x}")).collect()
}

/// Encodes a response frame: length, response header, body.
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> Result<Bytes, anyhow_like::EncodeError> {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, api_key.response_header_version(version))
        .map_err(anyhow_like::EncodeError::from_any)?;
    body.encode(&mut buf, version)
        .map_err(anyhow_like::EncodeError::from_any)?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// Encoding errors from the codec crate (which reports them as `anyhow::Error`).
pub mod anyhow_like {
    /// A response that could not be encoded (a field out of range for the version).
    #[derive(Debug, thiserror::Error)]
    #[error("cannot encode response: {0}")]
    pub struct EncodeError(pub String);

    impl EncodeError {
        pub fn from_any(e: impl std::fmt::Display) -> EncodeError {
            EncodeError(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiVersionsRequest;

    fn frame_of(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(api_key);
        b.put_i16(version);
        b.put_i32(correlation_id);
        b.put_i16(-1); // null client id
        b.extend_from_slice(body);
        b.freeze()
    }

    async fn read_all(input: Vec<u8>, max: usize) -> Vec<Result<Option<Bytes>, String>> {
        let mut reader = FrameReader::new(&input[..], max);
        let mut out = vec![];
        loop {
            let r = reader.read_frame().await.map_err(|e| e.to_string());
            let stop = !matches!(r, Ok(Some(_)));
            out.push(r);
            if stop {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn frames_split_across_reads_are_reassembled() {
        let mut input = vec![];
        for body in [b"0123456789".as_slice(), b"abcdefghijkl"] {
            input.extend_from_slice(&(body.len() as i32).to_be_bytes());
            input.extend_from_slice(body);
        }
        let frames = read_all(input, 100).await;
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[1].as_ref().unwrap().as_ref().unwrap().as_ref(), b"abcdefghijkl");
        assert!(matches!(frames[2], Ok(None)));
    }

    #[tokio::test]
    async fn negative_and_oversized_lengths_are_invalid() {
        for length in [-1i32, 0, 5, 101, i32::MAX] {
            let frames = read_all(length.to_be_bytes().to_vec(), 100).await;
            assert!(frames[0].as_ref().unwrap_err().contains("outside"), "{length}");
        }
    }

    #[tokio::test]
    async fn a_truncated_frame_is_reported() {
        let mut input = 50i32.to_be_bytes().to_vec();
        input.extend_from_slice(b"only some");
        let frames = read_all(input, 100).await;
        assert!(frames[0].as_ref().unwrap_err().contains("middle"));
    }

    #[test]
    fn unknown_api_key_and_version_are_refused() {
        assert!(matches!(
            decode_request(frame_of(9999, 0, 1, b"")),
            Err(FrameError::UnknownApiKey { api_key: 9999 })
        ));
        assert!(matches!(
            decode_request(frame_of(3, 99, 1, b"")),
            Err(FrameError::UnsupportedVersion { .. })
        ));
        // A known API the broker does not implement (AddPartitionsToTxn) is refused as unknown.
        assert!(matches!(
            decode_request(frame_of(24, 0, 1, b"")),
            Err(FrameError::UnknownApiKey { api_key: 24 })
        ));
    }

    #[test]
    fn a_newer_api_versions_gets_the_fallback_answer() {
        assert!(matches!(
            decode_request(frame_of(18, 42, 7, b"")),
            Ok(Decoded::UnsupportedApiVersions { correlation_id: 7 })
        ));
    }

    #[test]
    fn garbage_body_is_malformed() {
        // Metadata v1 expects an array length; give it a huge one with no elements.
        assert!(matches!(
            decode_request(frame_of(3, 1, 1, &[0x7f, 0xff, 0xff, 0xff])),
            Err(FrameError::Malformed { .. })
        ));
        // Bytes after a complete body are ignored, as Kafka does.
        assert!(matches!(decode_request(frame_of(18, 0, 1, b"trailing")), Ok(Decoded::Request(_))));
    }

    #[test]
    fn api_versions_v3_round_trips() {
        let mut body = BytesMut::new();
        ApiVersionsRequest::default()
            .with_client_software_name("t".into())
            .with_client_software_version("1".into())
            .encode(&mut body, 3)
            .unwrap();
        let mut frame = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(18)
            .with_request_api_version(3)
            .with_correlation_id(5)
            .encode(&mut frame, 2)
            .unwrap();
        frame.extend_from_slice(&body);
        match decode_request(frame.freeze()).unwrap() {
            Decoded::Request(r) => {
                assert_eq!(r.header.correlation_id, 5);
                assert!(matches!(r.body, RequestKind::ApiVersions(_)));
            }
            other => panic!("{other:?}"),
        }
    }
}
