//! The APIs this broker implements and the versions of each.
//!
//! This table is the single source of truth: ApiVersions answers with it, and the
//! connection refuses any request outside it. Each range is what the handlers fully
//! implement, within what the `kafka-protocol` crate can encode.

use kafka_protocol::messages::ApiKey;

/// An implemented API and its inclusive version range.
#[derive(Debug, Clone, Copy)]
pub struct SupportedApi {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

/// Every implemented API. Keep sorted by API key.
pub const SUPPORTED_APIS: &[SupportedApi] = &[
    SupportedApi { key: ApiKey::Produce, min: 3, max: 13 },
    SupportedApi { key: ApiKey::Fetch, min: 4, max: 17 },
    SupportedApi { key: ApiKey::ListOffsets, min: 1, max: 10 },
    SupportedApi { key: ApiKey::Metadata, min: 0, max: 13 },
    SupportedApi { key: ApiKey::OffsetCommit, min: 2, max: 9 },
    SupportedApi { key: ApiKey::OffsetFetch, min: 1, max: 9 },
    SupportedApi { key: ApiKey::FindCoordinator, min: 0, max: 6 },
    SupportedApi { key: ApiKey::JoinGroup, min: 0, max: 9 },
    SupportedApi { key: ApiKey::Heartbeat, min: 0, max: 4 },
    SupportedApi { key: ApiKey::LeaveGroup, min: 0, max: 5 },
    SupportedApi { key: ApiKey::SyncGroup, min: 0, max: 5 },
    SupportedApi { key: ApiKey::DescribeGroups, min: 0, max: 5 },
    SupportedApi { key: ApiKey::ListGroups, min: 0, max: 5 },
    SupportedApi { key: ApiKey::ApiVersions, min: 0, max: 4 },
    SupportedApi { key: ApiKey::CreateTopics, min: 2, max: 7 },
    SupportedApi { key: ApiKey::DeleteTopics, min: 1, max: 6 },
    SupportedApi { key: ApiKey::InitProducerId, min: 0, max: 5 },
    SupportedApi { key: ApiKey::OffsetForLeaderEpoch, min: 2, max: 4 },
    SupportedApi { key: ApiKey::DescribeConfigs, min: 1, max: 4 },
    SupportedApi { key: ApiKey::AlterConfigs, min: 0, max: 2 },
    SupportedApi { key: ApiKey::CreatePartitions, min: 0, max: 3 },
    SupportedApi { key: ApiKey::DeleteGroups, min: 0, max: 2 },
    SupportedApi { key: ApiKey::ElectLeaders, min: 0, max: 2 },
    SupportedApi { key: ApiKey::IncrementalAlterConfigs, min: 0, max: 1 },
    SupportedApi { key: ApiKey::OffsetDelete, min: 0, max: 0 },
    SupportedApi { key: ApiKey::DescribeQuorum, min: 0, max: 2 },
    SupportedApi { key: ApiKey::DescribeCluster, min: 0, max: 2 },
];

/// The supported range for `key`, if the API is implemented.
pub fn supported(key: ApiKey) -> Option<SupportedApi> {
    SUPPORTED_APIS.iter().copied().find(|a| a.key == key)
}

/// Whether `version` of `key` is implemented.
pub fn is_supported(key: ApiKey, version: i16) -> bool {
    supported(key).is_some_and(|a| (a.min..=a.max).contains(&version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_range_is_within_what_the_codec_knows() {
        for api in SUPPORTED_APIS {
            let codec = api.key.valid_versions();
            assert!(api.min >= codec.min && api.max <= codec.max, "{:?}", api.key);
            assert!(api.min <= api.max);
        }
    }

    #[test]
    fn table_is_sorted_and_unique() {
        let keys: Vec<i16> = SUPPORTED_APIS.iter().map(|a| a.key as i16).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(keys, sorted);
    }
}
