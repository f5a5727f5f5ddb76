//! FindCoordinator: there is no group or transaction coordinator yet, and the answer
//! says so (COORDINATOR_NOT_AVAILABLE, a retriable error) for every key.
//!
//! Advertising the API matters beyond groups: librdkafka decides that a broker supports
//! LZ4 only when ApiVersions lists FindCoordinator v0, so without it librdkafka clients
//! silently send lz4-configured batches uncompressed.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

const MESSAGE: &str = "consumer groups and transactions are not supported by this broker yet";

pub fn handle(request: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    let code = ResponseError::CoordinatorNotAvailable.code();
    if version < 4 {
        return FindCoordinatorResponse::default()
            .with_error_code(code)
            .with_error_message(Some(StrBytes::from_static_str(MESSAGE)))
            .with_node_id(BrokerId(-1))
            .with_port(-1);
    }
    // v4+ batches keys: one answer per key.
    let coordinators = request
        .coordinator_keys
        .into_iter()
        .map(|key| {
            Coordinator::default()
                .with_key(key)
                .with_node_id(BrokerId(-1))
                .with_port(-1)
                .with_error_code(code)
                .with_error_message(Some(StrBytes::from_static_str(MESSAGE)))
        })
        .collect();
    FindCoordinatorResponse::default().with_coordinators(coordinators)
}
