//! InitProducerId for idempotent producers.
//!
//! Producer ids come from blocks the controller allocates to this broker through the
//! metadata log, so no two brokers (and no two controllers across a failover) ever
//! hand out the same id. Every InitProducerId without a transactional id gets a fresh
//! id at epoch 0, as Kafka does for idempotent producers (also when a KIP-360 producer
//! presents its old id and epoch to be bumped). Transactions are not offered: a
//! request naming a transactional id is refused.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;
use rafka_metadata::controller::{ControllerRequest, ControllerResponse};
use tokio::sync::Mutex;

use crate::context::BrokerContext;
use crate::errors::KafkaError;

/// The unused part of this broker's current producer-id block.
#[derive(Debug, Default)]
pub struct ProducerIdAllocator {
    /// `next..end` are still free.
    block: Mutex<(i64, i64)>,
}

impl ProducerIdAllocator {
    pub fn new() -> ProducerIdAllocator {
        ProducerIdAllocator::default()
    }

    /// A fresh producer id, asking the controller for a new block when this one is used up.
    pub async fn next(&self, ctx: &BrokerContext) -> Result<i64, KafkaError> {
        let mut block = self.block.lock().await;
        if block.0 >= block.1 {
            let answer = ctx.controller.submit(ControllerRequest::AllocateProducerIds { broker_id: ctx.node_id }).await?;
            match answer {
                ControllerResponse::ProducerIds { first_producer_id, count, .. } => {
                    *block = (first_producer_id, first_producer_id + count);
                }
                other => {
                    return Err(KafkaError::with_message(
                        ResponseError::UnknownServerError,
                        format!("unexpected controller answer to a producer-id allocation: {other:?}"),
                    ))
                }
            }
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }
}

pub async fn handle(ctx: &BrokerContext, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let failed = |e: KafkaError| {
        InitProducerIdResponse::default()
            .with_error_code(e.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if request.transactional_id.is_some() {
        return failed(KafkaError::with_message(
            ResponseError::TransactionalIdAuthorizationFailed,
            "transactions are not supported by this broker; idempotent producers (no transactional.id) are",
        ));
    }
    match ctx.producer_ids.next(ctx).await {
        Ok(id) => InitProducerIdResponse::default()
            .with_error_code(0)
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            tracing::warn!(error = ?e.message, "cannot allocate a producer id");
            // Retriable for the client: the controller may be moving.
            failed(KafkaError::new(ResponseError::CoordinatorNotAvailable))
        }
    }
}
