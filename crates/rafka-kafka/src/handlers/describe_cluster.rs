//! DescribeCluster: cluster id, controller and the brokers' endpoints on the caller's listener.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::connection::ConnectionInfo;
use crate::context::BrokerContext;
use crate::handlers::metadata::broker_endpoints;

/// Kafka's `endpoint_type` for brokers (1); controllers (2) are not exposed separately.
const ENDPOINT_TYPE_BROKERS: i8 = 1;

pub fn handle(
    ctx: &BrokerContext,
    conn: &ConnectionInfo,
    request: DescribeClusterRequest,
    _version: i16,
) -> DescribeClusterResponse {
    let response = DescribeClusterResponse::default()
        .with_endpoint_type(request.endpoint_type)
        .with_cluster_id(StrBytes::from_string(ctx.cluster_id.clone()))
        .with_cluster_authorized_operations(i32::MIN);
    if request.endpoint_type != ENDPOINT_TYPE_BROKERS {
        return response
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "only broker endpoints (endpoint_type 1) are described",
            )))
            .with_controller_id(BrokerId(-1));
    }
    let image = ctx.image();
    let brokers = broker_endpoints(&image, &conn.listener)
        .map(|(id, host, port, rack)| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(id))
                .with_host(StrBytes::from_string(host))
                .with_port(port as i32)
                .with_rack(rack.map(StrBytes::from_string))
        })
        .collect();
    let response = response.with_controller_id(BrokerId(ctx.controller_id())).with_brokers(brokers);
    if request.include_cluster_authorized_operations {
        response.with_cluster_authorized_operations(crate::handlers::metadata::CLUSTER_OPERATIONS)
    } else {
        response
    }
}
