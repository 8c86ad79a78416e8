//! CreateTopics, CreatePartitions and DeleteTopics, for admin clients and tools. One broker: a
//! replication factor other than 1 (or -1, the default) cannot be met; replica assignments may
//! name only this broker. A topic may have its own `retention.ms` (at most the log's),
//! `retention.bytes`, `max.message.bytes` (at most the log's), `compression.type` and
//! `message.timestamp.type`; its other configs are the log's and may only restate the log's values (tools that always send `cleanup.policy=delete`
//! work unchanged); any other value is refused rather than ignored.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::configs::{TopicOwn, check_topic_configs, creatable, created_topic_configs};
use super::metadata::{NODE_ID, find, topic_uuid};
use crate::conn::ThreadState;

pub(crate) fn create_topics(state: &ThreadState, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let log = &state.shared.log;
    let mut response = CreateTopicsResponse::default();
    for topic in &req.topics {
        let name = topic.name.0.to_string();
        let mut result = CreatableTopicResult::default();
        result.name = topic.name.clone();
        let partitions = match topic.num_partitions {
            -1 if topic.assignments.is_empty() => Ok(state.shared.config.default_partitions),
            -1 => Ok(topic.assignments.len() as u32),
            n => u32::try_from(n).map_err(|_| ()),
        };
        let mut own = TopicOwn::default();
        let refusal = match partitions {
            Err(()) | Ok(0) => Some((
                ResponseError::InvalidPartitions,
                format!("{} partitions", topic.num_partitions),
            )),
            Ok(_) if !matches!(topic.replication_factor, -1 | 1) => Some((
                ResponseError::InvalidReplicationFactor,
                format!(
                    "replication factor {}: this is a single broker",
                    topic.replication_factor
                ),
            )),
            Ok(_)
                if (topic.assignments.iter())
                    .any(|a| a.broker_ids.iter().any(|b| b.0 != NODE_ID)) =>
            {
                Some((
                    ResponseError::InvalidReplicaAssignment,
                    format!("replicas may only be on broker {NODE_ID}"),
                ))
            }
            Ok(_) => match check_topic_configs(state, creatable(&topic.configs)) {
                Ok(asked) => {
                    own = asked;
                    None
                }
                Err(why) => Some((ResponseError::InvalidConfig, why)),
            },
        };
        let outcome = match (refusal, partitions) {
            (Some((code, why)), _) => Err((code.code(), why)),
            (None, Ok(n)) if req.validate_only => match find(log, &name) {
                Some(_) => Err((
                    ResponseError::TopicAlreadyExists.code(),
                    format!("topic {name:?} exists already"),
                )),
                None => Ok(n),
            },
            (None, Ok(n)) => log
                .create_topic(&name, own.config(n))
                .map(|()| n)
                .map_err(|e| (create_error(&e), e.to_string())),
            (None, Err(())) => unreachable!("refused above"),
        };
        match outcome {
            Ok(n) => {
                result.num_partitions = n as i32;
                result.replication_factor = 1;
                result.configs = Some(created_topic_configs(state, own));
                if let Some(t) = find(log, &name) {
                    result.topic_id = topic_uuid(&t);
                }
            }
            Err((code, why)) => {
                result.error_code = code;
                result.error_message = Some(StrBytes::from_string(why));
            }
        }
        response.topics.push(result);
    }
    response
}

/// CreatePartitions: each topic to the count asked for. Assignments, if given, name this broker
/// only, one per new partition; a topic named twice in one request is refused for both.
pub(crate) fn create_partitions(
    state: &ThreadState,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let log = &state.shared.log;
    let mut response = CreatePartitionsResponse::default();
    for topic in &req.topics {
        let name = topic.name.0.to_string();
        let mut result = CreatePartitionsTopicResult::default();
        result.name = topic.name.clone();
        let current = find(log, &name).map(|t| t.partitions);
        let named = req.topics.iter().filter(|t| t.name == topic.name).count();
        let refusal = match (current, u32::try_from(topic.count)) {
            _ if named > 1 => Some((
                ResponseError::InvalidRequest,
                format!("topic {name:?} is named {named} times in the request"),
            )),
            (None, _) => Some((
                ResponseError::UnknownTopicOrPartition,
                format!("no topic {name:?}"),
            )),
            (Some(n), Ok(count)) if count > n => match &topic.assignments {
                Some(a) if a.len() as u32 != count - n => Some((
                    ResponseError::InvalidReplicaAssignment,
                    format!("{} assignments for {} new partitions", a.len(), count - n),
                )),
                Some(a)
                    if a.iter()
                        .any(|a| a.broker_ids.iter().any(|b| b.0 != NODE_ID)) =>
                {
                    Some((
                        ResponseError::InvalidReplicaAssignment,
                        format!("replicas may only be on broker {NODE_ID}"),
                    ))
                }
                _ => None,
            },
            (Some(n), _) => Some((
                ResponseError::InvalidPartitions,
                format!(
                    "topic {name:?} has {n} partitions; partitions can only be added, and {} \
                     asked for",
                    topic.count
                ),
            )),
        };
        let outcome = match refusal {
            Some((code, why)) => Err((code.code(), why)),
            None if req.validate_only => Ok(()),
            None => log
                .create_partitions(&name, topic.count as u32)
                .map_err(|e| (create_error(&e), e.to_string())),
        };
        if let Err((code, why)) = outcome {
            result.error_code = code;
            result.error_message = Some(StrBytes::from_string(why));
        }
        response.results.push(result);
    }
    response
}

fn create_error(e: &floodgate::Error) -> i16 {
    match e {
        floodgate::Error::TopicExists(_) => ResponseError::TopicAlreadyExists.code(),
        floodgate::Error::InvalidPartitionCount { .. }
        | floodgate::Error::PartitionCountNotIncreased { .. }
        | floodgate::Error::TooManyPartitions { .. } => ResponseError::InvalidPartitions.code(),
        e => super::error_code(e),
    }
}

pub(crate) fn delete_topics(state: &ThreadState, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let log = &state.shared.log;
    let mut response = DeleteTopicsResponse::default();
    for name in &req.topic_names {
        let mut result = DeletableTopicResult::default();
        result.name = Some(name.clone());
        if let Err(e) = log.delete_topic(&name.0) {
            result.error_code = super::error_code(&e);
            result.error_message = Some(StrBytes::from_string(e.to_string()));
        }
        response.responses.push(result);
    }
    response
}
