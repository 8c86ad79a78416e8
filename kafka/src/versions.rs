//! The APIs and versions the server advertises in ApiVersions, as Kafka 4.1 advertises them
//! where the server implements them: clients send the highest version both sides support.

use kafka_protocol::messages::ApiKey;

/// An API the server answers, with the versions it advertises and the lowest it accepts.
#[derive(Debug, Clone, Copy)]
pub struct Api {
    /// The API.
    pub key: ApiKey,
    /// The versions advertised.
    pub min: i16,
    pub max: i16,
    /// The lowest version served; requests from `min` up to it get a clear error in the
    /// response (Produce v0-2 carry the old message formats, which floodgate does not store;
    /// old librdkafka refuses a broker that does not advertise them).
    pub min_served: i16,
}

/// Every API the server answers.
pub const SUPPORTED_APIS: &[Api] = &[
    Api {
        key: ApiKey::Produce,
        min: 0,
        max: 11,
        min_served: 3,
    },
    Api {
        key: ApiKey::Fetch,
        min: 4,
        max: 12,
        min_served: 4,
    },
    Api {
        key: ApiKey::ListOffsets,
        min: 1,
        max: 7,
        min_served: 1,
    },
    Api {
        key: ApiKey::Metadata,
        min: 0,
        max: 12,
        min_served: 0,
    },
    Api {
        key: ApiKey::CreateTopics,
        min: 2,
        max: 7,
        min_served: 2,
    },
    Api {
        key: ApiKey::DeleteTopics,
        min: 1,
        max: 5,
        min_served: 1,
    },
    Api {
        key: ApiKey::CreatePartitions,
        min: 0,
        max: 3,
        min_served: 0,
    },
    Api {
        key: ApiKey::DeleteRecords,
        min: 0,
        max: 2,
        min_served: 0,
    },
    Api {
        key: ApiKey::DescribeConfigs,
        min: 1,
        max: 4,
        min_served: 1,
    },
    Api {
        key: ApiKey::FindCoordinator,
        min: 0,
        max: 4,
        min_served: 0,
    },
    Api {
        key: ApiKey::OffsetCommit,
        min: 2,
        max: 9,
        min_served: 2,
    },
    Api {
        key: ApiKey::OffsetFetch,
        min: 1,
        max: 9,
        min_served: 1,
    },
    Api {
        key: ApiKey::JoinGroup,
        min: 0,
        max: 9,
        min_served: 0,
    },
    Api {
        key: ApiKey::Heartbeat,
        min: 0,
        max: 4,
        min_served: 0,
    },
    Api {
        key: ApiKey::LeaveGroup,
        min: 0,
        max: 5,
        min_served: 0,
    },
    Api {
        key: ApiKey::SyncGroup,
        min: 0,
        max: 5,
        min_served: 0,
    },
    Api {
        key: ApiKey::DescribeGroups,
        min: 0,
        max: 5,
        min_served: 0,
    },
    Api {
        key: ApiKey::ListGroups,
        min: 0,
        max: 5,
        min_served: 0,
    },
    Api {
        key: ApiKey::ConsumerGroupHeartbeat,
        min: 0,
        max: 1,
        min_served: 0,
    },
    Api {
        key: ApiKey::ConsumerGroupDescribe,
        min: 0,
        max: 1,
        min_served: 0,
    },
    Api {
        key: ApiKey::DeleteGroups,
        min: 0,
        max: 2,
        min_served: 0,
    },
    Api {
        key: ApiKey::IncrementalAlterConfigs,
        min: 0,
        max: 1,
        min_served: 0,
    },
    Api {
        key: ApiKey::AlterConfigs,
        min: 0,
        max: 2,
        min_served: 0,
    },
    Api {
        key: ApiKey::DescribeAcls,
        min: 1,
        max: 3,
        min_served: 1,
    },
    Api {
        key: ApiKey::CreateAcls,
        min: 1,
        max: 3,
        min_served: 1,
    },
    Api {
        key: ApiKey::DeleteAcls,
        min: 1,
        max: 3,
        min_served: 1,
    },
    Api {
        key: ApiKey::InitProducerId,
        min: 0,
        max: 4,
        min_served: 0,
    },
    Api {
        key: ApiKey::ApiVersions,
        min: 0,
        max: 3,
        min_served: 0,
    },
];

/// The entry of `key`, if the server answers it.
pub fn api(key: ApiKey) -> Option<&'static Api> {
    SUPPORTED_APIS.iter().find(|a| a.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every version served is one the protocol crate can decode and encode (Produce v0-2,
    /// advertised and refused, are answered by `apis::produce::refuse_old`).
    #[test]
    fn served_versions_are_within_the_protocol_crate() {
        for a in SUPPORTED_APIS {
            let valid = a.key.valid_versions();
            assert!(
                a.min <= a.min_served && a.min_served <= a.max,
                "{:?}",
                a.key
            );
            assert!(
                valid.min <= a.min_served && a.max <= valid.max,
                "{:?}",
                a.key
            );
            if a.key != ApiKey::Produce {
                assert_eq!(a.min, a.min_served, "{:?}", a.key);
            }
        }
    }
}
