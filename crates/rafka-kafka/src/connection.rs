//! One client connection.
//!
//! The loop reads frames, decodes them and *starts* each request in arrival order;
//! starting runs the part that must be ordered (a produce's append) and yields a future
//! for the part that may wait (replication acks, a long-poll fetch). Those futures are
//! answered strictly in arrival order, as Kafka clients require, and at most
//! [`MAX_IN_FLIGHT`] may wait at once before the connection stops reading.
//!
//! Any malformed input — a bad length prefix, a truncated frame, an unknown API or
//! version, a body that does not decode — is logged once and ends this connection
//! only.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::stream::{FuturesOrdered, StreamExt};
use kafka_protocol::messages::{ApiKey, ResponseKind};
use kafka_protocol::ResponseError;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::codec::{self, Decoded, FrameError, FrameReader};
use crate::context::BrokerContext;
use crate::handlers::{self, Pending};

/// Requests one connection may have started but not yet answered.
pub const MAX_IN_FLIGHT: usize = 64;

/// Where a connection came from.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub listener: String,
    pub peer: SocketAddr,
}

/// A request started but not answered: what to encode the answer with.
struct InFlight {
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
}

pub struct Connection {
    ctx: Arc<BrokerContext>,
    info: Arc<ConnectionInfo>,
    socket: TcpStream,
}

impl Connection {
    pub fn new(ctx: Arc<BrokerContext>, info: ConnectionInfo, socket: TcpStream) -> Connection {
        Connection {
            ctx,
            info: Arc::new(info),
            socket,
        }
    }

    /// Serves the connection until the peer leaves, sends bad input, or shutdown.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let Connection { ctx, info, socket } = self;
        let (read_half, write_half) = socket.into_split();
        let mut reader = FrameReader::new(read_half, ctx.limits.socket_request_max_bytes);
        let mut writer = tokio::io::BufWriter::with_capacity(64 * 1024, write_half);
        let mut in_flight = FuturesOrdered::new();
        let mut reading = true;
        loop {
            if !reading && in_flight.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                Some((meta, response)) = in_flight.next(), if !in_flight.is_empty() => {
                    let meta: InFlight = meta;
                    let Some(response) = response else { continue };
                    match codec::encode_response(meta.api_key, meta.version, meta.correlation_id, &response) {
                        Ok(frame) => {
                            if let Err(e) = writer.write_all(&frame).await {
                                debug!(error = %e, "write failed; closing");
                                return;
                            }
                        }
                        Err(e) => {
                            warn!(api = ?meta.api_key, version = meta.version, error = %e, "closing connection: response could not be encoded");
                            return;
                        }
                    }
                    if in_flight.is_empty() {
                        if let Err(e) = writer.flush().await {
                            debug!(error = %e, "flush failed; closing");
                            return;
                        }
                    }
                }
                _ = crate::server::until_shutdown(&mut shutdown), if reading => {
                    // Stop taking new requests; answer the ones already started.
                    reading = false;
                }
                frame = reader.read_frame(), if reading && in_flight.len() < MAX_IN_FLIGHT => {
                    match frame {
                        Ok(Some(frame)) => match codec::decode_request(frame) {
                            Ok(Decoded::Request(request)) => {
                                let meta = InFlight {
                                    api_key: request.api_key,
                                    version: request.version,
                                    correlation_id: request.header.correlation_id,
                                };
                                let pending: Pending = handlers::start(&ctx, &info, *request).await;
                                in_flight.push_back(answer(meta, pending));
                            }
                            Ok(Decoded::UnsupportedApiVersions { correlation_id }) => {
                                let meta = InFlight { api_key: ApiKey::ApiVersions, version: 0, correlation_id };
                                let response = handlers::api_versions::response(ResponseError::UnsupportedVersion.code());
                                let pending: Pending = Box::pin(async move { Some(ResponseKind::ApiVersions(response)) });
                                in_flight.push_back(answer(meta, pending));
                            }
                            Err(e) => {
                                log_bad_input(&info, &e);
                                reading = false;
                                // Anything already started is still answered, then we close.
                                if in_flight.is_empty() { break; }
                            }
                        },
                        Ok(None) => break,
                        Err(e) => {
                            log_bad_input(&info, &e);
                            break;
                        }
                    }
                }
            }
        }
        let _ = writer.flush().await;
        let _ = writer.shutdown().await;
    }
}

fn log_bad_input(info: &ConnectionInfo, e: &FrameError) {
    match e {
        FrameError::Io(io) => debug!(peer = %info.peer, error = %io, "connection error"),
        other => warn!(peer = %info.peer, listener = %info.listener, error = %other, "closing connection after bad input"),
    }
}

/// Waits for a started request's answer, keeping what is needed to encode it.
async fn answer(meta: InFlight, pending: Pending) -> (InFlight, Option<ResponseKind>) {
    (meta, pending.await)
}
