//! The one place where internal errors become Kafka error codes.

use kafka_protocol::ResponseError;
use rafka_metadata::{ControllerError, MetadataError};
use rafka_storage::StorageError;

/// A Kafka error code plus a message for the response's `error_message` field.
#[derive(Debug, Clone)]
pub struct KafkaError {
    pub code: ResponseError,
    pub message: Option<String>,
}

impl KafkaError {
    pub fn new(code: ResponseError) -> KafkaError {
        KafkaError { code, message: None }
    }

    pub fn with_message(code: ResponseError, message: impl Into<String>) -> KafkaError {
        KafkaError {
            code,
            message: Some(message.into()),
        }
    }

    pub fn code(&self) -> i16 {
        self.code.code()
    }
}

impl From<ResponseError> for KafkaError {
    fn from(code: ResponseError) -> KafkaError {
        KafkaError::new(code)
    }
}

impl From<&ControllerError> for KafkaError {
    fn from(e: &ControllerError) -> KafkaError {
        let code = match e {
            ControllerError::InvalidTopic { .. } => ResponseError::InvalidTopicException,
            ControllerError::TopicAlreadyExists { .. } => ResponseError::TopicAlreadyExists,
            ControllerError::UnknownTopic { .. } => ResponseError::UnknownTopicOrPartition,
            ControllerError::UnknownTopicId { .. } => ResponseError::UnknownTopicId,
            ControllerError::InvalidPartitions { .. } => ResponseError::InvalidPartitions,
            ControllerError::InvalidReplicationFactor { .. } => {
                ResponseError::InvalidReplicationFactor
            }
            ControllerError::InvalidReplicaAssignment { .. } => {
                ResponseError::InvalidReplicaAssignment
            }
            ControllerError::InvalidConfig { .. } => ResponseError::InvalidConfig,
            ControllerError::InvalidRequest { .. } => ResponseError::InvalidRequest,
            ControllerError::InconsistentClusterId { .. } => ResponseError::InconsistentClusterId,
            ControllerError::UnknownTopicOrPartition { .. } => ResponseError::UnknownTopicOrPartition,
            ControllerError::NotLeaderOrFollower { .. } => ResponseError::NotLeaderOrFollower,
            ControllerError::FencedLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
            ControllerError::InvalidUpdateVersion { .. } => ResponseError::InvalidUpdateVersion,
            ControllerError::IneligibleReplica { .. } => ResponseError::IneligibleReplica,
            ControllerError::ElectionNotNeeded { .. } => ResponseError::ElectionNotNeeded,
            ControllerError::PreferredLeaderNotAvailable { .. } => ResponseError::PreferredLeaderNotAvailable,
            ControllerError::EligibleLeadersNotAvailable { .. } => ResponseError::EligibleLeadersNotAvailable,
            ControllerError::Log(MetadataError::NotController | MetadataError::Unavailable(_)) => ResponseError::NotController,
            ControllerError::Log(_) => ResponseError::UnknownServerError,
        };
        KafkaError::with_message(code, e.to_string())
    }
}

impl From<ControllerError> for KafkaError {
    fn from(e: ControllerError) -> KafkaError {
        KafkaError::from(&e)
    }
}

impl From<&StorageError> for KafkaError {
    fn from(e: &StorageError) -> KafkaError {
        let code = match e {
            StorageError::CorruptBatch { .. } => ResponseError::CorruptMessage,
            StorageError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
            StorageError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            StorageError::Io(_) | StorageError::IoAt { .. } | StorageError::CorruptCheckpoint { .. } => {
                ResponseError::KafkaStorageError
            }
            StorageError::StaleLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
            StorageError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
            StorageError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
            StorageError::Closed { .. } => ResponseError::NotLeaderOrFollower,
            StorageError::UnexpectedAppendOffset { .. } | StorageError::InvalidArgument(_) => {
                ResponseError::UnknownServerError
            }
        };
        KafkaError::with_message(code, e.to_string())
    }
}

impl From<StorageError> for KafkaError {
    fn from(e: StorageError) -> KafkaError {
        KafkaError::from(&e)
    }
}
