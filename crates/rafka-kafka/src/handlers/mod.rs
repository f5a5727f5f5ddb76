//! Request handlers, one module per API family, and the dispatch that starts them.
//!
//! [`start`] runs a request's ordered part now and returns a [`Pending`] answer: an
//! already-finished future for most APIs, the replication wait for an `acks=all`
//! produce, the long poll for a fetch. `None` means "send no response" (`acks=0`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;

use crate::codec::Request;
use crate::connection::ConnectionInfo;
use crate::context::BrokerContext;

pub mod admin;
pub mod api_versions;
pub mod configs;
pub mod describe_cluster;
pub mod describe_quorum;
pub mod fetch;
pub mod find_coordinator;
pub mod groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod producer_ids;
pub mod elect_leaders;

/// A started request's answer, possibly still being waited for.
pub type Pending = Pin<Box<dyn Future<Output = Option<ResponseKind>> + Send>>;

fn ready(response: ResponseKind) -> Pending {
    Box::pin(std::future::ready(Some(response)))
}

/// Starts `request`; see the module doc.
pub async fn start(ctx: &Arc<BrokerContext>, conn: &Arc<ConnectionInfo>, request: Request) -> Pending {
    let v = request.version;
    let client_id = request.header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default();
    if groups::handles(&request.body) {
        return groups::start(ctx, conn, client_id, request.body, v);
    }
    match request.body {
        RequestKind::Produce(r) => produce::start(ctx.clone(), r, v),
        RequestKind::Fetch(r) => {
            let ctx = ctx.clone();
            Box::pin(async move { Some(ResponseKind::Fetch(fetch::handle(&ctx, r, v).await)) })
        }
        RequestKind::ApiVersions(_) => ready(ResponseKind::ApiVersions(api_versions::response(0))),
        RequestKind::Metadata(r) => ready(ResponseKind::Metadata(metadata::handle(ctx, conn, r, v).await)),
        RequestKind::FindCoordinator(r) => {
            ready(ResponseKind::FindCoordinator(find_coordinator::handle(ctx, conn, r, v).await))
        }
        RequestKind::ListOffsets(r) => ready(ResponseKind::ListOffsets(list_offsets::handle(ctx, r, v))),
        RequestKind::CreateTopics(r) => ready(ResponseKind::CreateTopics(admin::create_topics(ctx, r, v).await)),
        RequestKind::DeleteTopics(r) => ready(ResponseKind::DeleteTopics(admin::delete_topics(ctx, r, v).await)),
        RequestKind::CreatePartitions(r) => {
            ready(ResponseKind::CreatePartitions(admin::create_partitions(ctx, r, v).await))
        }
        RequestKind::DescribeConfigs(r) => ready(ResponseKind::DescribeConfigs(configs::describe(ctx, r, v))),
        RequestKind::AlterConfigs(r) => ready(ResponseKind::AlterConfigs(configs::alter(ctx, r, v).await)),
        RequestKind::IncrementalAlterConfigs(r) => {
            ready(ResponseKind::IncrementalAlterConfigs(configs::incremental_alter(ctx, r, v).await))
        }
        RequestKind::DescribeCluster(r) => {
            ready(ResponseKind::DescribeCluster(describe_cluster::handle(ctx, conn, r, v)))
        }
        RequestKind::DescribeQuorum(r) => ready(ResponseKind::DescribeQuorum(describe_quorum::handle(ctx, r, v).await)),
        RequestKind::OffsetForLeaderEpoch(r) => {
            ready(ResponseKind::OffsetForLeaderEpoch(offset_for_leader_epoch::handle(ctx, r, v)))
        }
        RequestKind::InitProducerId(r) => ready(ResponseKind::InitProducerId(producer_ids::handle(ctx, r).await)),
        RequestKind::ElectLeaders(r) => ready(ResponseKind::ElectLeaders(elect_leaders::handle(ctx, r, v).await)),
        // The codec refuses every API outside `versions::SUPPORTED_APIS`, so nothing else
        // reaches here; answering would need a response type we do not implement.
        other => unreachable!("request {other:?} passed the version table but has no handler"),
    }
}

/// `Some(StrBytes)` from an optional message, for `error_message` fields.
pub(crate) fn message(m: &Option<String>) -> Option<StrBytes> {
    m.as_ref().map(|s| StrBytes::from_string(s.clone()))
}

/// The current time in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
