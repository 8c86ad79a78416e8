//! Metadata: one broker (this server), which is also the controller and every partition's
//! leader; the topics asked for (all of them when none are named), created when missing if
//! the request and the server allow it.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::conn::ThreadState;

/// The broker's node id: the only one.
pub(crate) const NODE_ID: i32 = 0;

pub(crate) fn metadata(
    state: &ThreadState,
    req: MetadataRequest,
    version: i16,
) -> MetadataResponse {
    let shared = &state.shared;
    let mut response = MetadataResponse::default();
    let mut broker = MetadataResponseBroker::default();
    broker.node_id = BrokerId(NODE_ID);
    broker.host = StrBytes::from_string(shared.advertised.0.clone());
    broker.port = i32::from(shared.advertised.1);
    response.brokers = vec![broker];
    response.cluster_id = Some(StrBytes::from_static_str(CLUSTER_ID));
    response.controller_id = BrokerId(NODE_ID);
    // v0 names no topics to mean all of them; from v1, null does. From v10 a topic may be
    // asked for by its id instead of its name.
    let (named, by_id): (Option<Vec<String>>, Vec<uuid::Uuid>) = match req.topics {
        Some(t) if version == 0 && t.is_empty() => (None, Vec::new()),
        Some(t) => {
            // By id: an id and no name (or an empty one).
            let by_id = |t: &MetadataRequestTopic| {
                !t.topic_id.is_nil() && t.name.as_ref().is_none_or(|n| n.is_empty())
            };
            let ids = t.iter().filter(|t| by_id(t)).map(|t| t.topic_id).collect();
            let names = (t.into_iter())
                .filter(|t| !by_id(t))
                .filter_map(|t| t.name.map(|n| n.0.to_string()))
                .collect();
            (Some(names), ids)
        }
        None => (None, Vec::new()),
    };
    // Before v4 a request could not say; the server's setting decides.
    let may_create =
        shared.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
    let log = &shared.log;
    response.topics = match named {
        None => log.list_topics().iter().map(topic_entry).collect(),
        Some(names) => names
            .iter()
            .map(|name| {
                let mut found = find(log, name);
                if found.is_none() && may_create {
                    let partitions = shared.config.default_partitions;
                    match log.create_topic(name, floodgate::TopicConfig::new(partitions)) {
                        Ok(()) | Err(floodgate::Error::TopicExists(_)) => found = find(log, name),
                        Err(e) => return topic_error(name, super::error_code(&e)),
                    }
                }
                match found {
                    Some(t) => topic_entry(&t),
                    None => topic_error(name, ResponseError::UnknownTopicOrPartition.code()),
                }
            })
            .collect(),
    };
    if !by_id.is_empty() {
        let topics = log.list_topics();
        for id in by_id {
            response
                .topics
                .push(match topics.iter().find(|t| topic_uuid(t) == id) {
                    Some(t) => topic_entry(t),
                    None => {
                        let mut topic = MetadataResponseTopic::default();
                        topic.topic_id = id;
                        topic.error_code = ResponseError::UnknownTopicId.code();
                        topic
                    }
                });
        }
    }
    response
}

/// The cluster id clients see (Kafka's are 22 characters of base64).
const CLUSTER_ID: &str = "floodgate-single-node0";

pub(crate) fn find(log: &floodgate::Log, name: &str) -> Option<floodgate::TopicInfo> {
    log.list_topics().into_iter().find(|t| t.name == name)
}

/// A topic's UUID: derived from its name and its id in the log, so it stays the same across
/// restarts and differs for a topic deleted and created again under the same name.
pub(crate) fn topic_uuid(t: &floodgate::TopicInfo) -> uuid::Uuid {
    let mut key = t.id.to_be_bytes().to_vec();
    key.extend_from_slice(t.name.as_bytes());
    let id = xxhash_rust::xxh3::xxh3_128(&key);
    // Never the nil UUID, which means "no id" in the protocol.
    uuid::Uuid::from_u128(id.max(1))
}

fn topic_entry(t: &floodgate::TopicInfo) -> MetadataResponseTopic {
    let mut topic = MetadataResponseTopic::default();
    topic.name = Some(TopicName(StrBytes::from_string(t.name.clone())));
    topic.topic_id = topic_uuid(t);
    topic.partitions = (0..t.partitions as i32)
        .map(|p| {
            let mut partition = MetadataResponsePartition::default();
            partition.partition_index = p;
            partition.leader_id = BrokerId(NODE_ID);
            partition.leader_epoch = 0;
            partition.replica_nodes = vec![BrokerId(NODE_ID)];
            partition.isr_nodes = vec![BrokerId(NODE_ID)];
            partition
        })
        .collect();
    topic
}

fn topic_error(name: &str, code: i16) -> MetadataResponseTopic {
    let mut topic = MetadataResponseTopic::default();
    topic.name = Some(TopicName(StrBytes::from_string(name.to_owned())));
    topic.error_code = code;
    topic
}
