//! ApiVersions: the implemented APIs and versions, straight from [`crate::versions`].

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::ApiVersionsResponse;

use crate::versions::SUPPORTED_APIS;

/// The ApiVersions answer with `error_code` (0, or UNSUPPORTED_VERSION for the v0
/// fallback answer to a version we do not know).
pub fn response(error_code: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(
            SUPPORTED_APIS
                .iter()
                .map(|a| {
                    ApiVersion::default()
                        .with_api_key(a.key as i16)
                        .with_min_version(a.min)
                        .with_max_version(a.max)
                })
                .collect(),
        )
        .with_finalized_features_epoch(-1)
}
