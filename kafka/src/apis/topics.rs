//! CreateTopics and DeleteTopics, for admin clients and tools. One broker: a replication
//! factor other than 1 (or -1, the default) cannot be met; replica assignments may name only
//! this broker. Retention is the log's, not a topic's: a topic created with configs is refused
//! rather than created without them.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
};
use kafka_protocol::protocol::StrBytes;

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
            Ok(_) if !topic.configs.is_empty() => Some((
                ResponseError::InvalidConfig,
                "topic configs are not supported: retention is set for the whole log".to_owned(),
            )),
            Ok(_) => None,
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
                .create_topic(&name, floodgate::TopicConfig::new(n))
                .map(|()| n)
                .map_err(|e| (create_error(&e), e.to_string())),
            (None, Err(())) => unreachable!("refused above"),
        };
        match outcome {
            Ok(n) => {
                result.num_partitions = n as i32;
                result.replication_factor = 1;
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

fn create_error(e: &floodgate::Error) -> i16 {
    match e {
        floodgate::Error::TopicExists(_) => ResponseError::TopicAlreadyExists.code(),
        floodgate::Error::InvalidPartitionCount { .. }
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
