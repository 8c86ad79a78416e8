//! The consumer group protocol's APIs (KIP-848): ConsumerGroupHeartbeat, through which a
//! member joins, heartbeats, is given its assignment and leaves (the coordinator in
//! `crate::consumer_groups`), and ConsumerGroupDescribe.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup, Member as DescribedMember,
    TopicPartitions as DescribedPartitions,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::metadata::topic_uuid;
use crate::assignors::Assignor;
use crate::conn::ThreadState;
use crate::consumer_groups::{
    Beat, ConsumerGroup, LEAVE_EPOCH, STATIC_LEAVE_EPOCH, TopicMeta, Tp, by_topic, state_name,
};

fn str(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// The log's topics as the assignment names them.
fn topics(state: &ThreadState) -> Vec<TopicMeta> {
    (state.shared.log.list_topics().iter())
        .map(|t| TopicMeta {
            name: t.name.clone(),
            id: topic_uuid(t),
            partitions: t.partitions as i32,
        })
        .collect()
}

/// A member id for a v0 member, which joins without one: unique in this run (a counter) and
/// across runs (the time).
fn fresh_member_id(client_host: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let time =
        (SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)).map_or(0, |d| d.as_nanos());
    let key = format!(
        "{time}/{}/{client_host}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    Uuid::from_u128(xxhash_rust::xxh3::xxh3_128(key.as_bytes()))
        .simple()
        .to_string()
}

/// Why a heartbeat is malformed (INVALID_REQUEST), as Kafka checks it.
fn invalid(req: &ConsumerGroupHeartbeatRequest, version: i16) -> Option<&'static str> {
    let epoch = req.member_epoch;
    if req.group_id.is_empty() {
        return Some("GroupId can't be empty.");
    }
    if req.instance_id.as_ref().is_some_and(|s| s.is_empty()) {
        return Some("InstanceId can't be empty.");
    }
    if req.rack_id.as_ref().is_some_and(|s| s.is_empty()) {
        return Some("RackId can't be empty.");
    }
    if epoch < STATIC_LEAVE_EPOCH {
        return Some("MemberEpoch is invalid.");
    }
    if epoch == STATIC_LEAVE_EPOCH && req.instance_id.is_none() {
        return Some("InstanceId can't be null when MemberEpoch is -2.");
    }
    if epoch == 0 {
        if version >= 1 && req.member_id.is_empty() {
            return Some("MemberId can't be empty.");
        }
        if req.rebalance_timeout_ms < 0 {
            return Some("RebalanceTimeoutMs must be provided in first request.");
        }
        let regex = req
            .subscribed_topic_regex
            .as_ref()
            .filter(|r| !r.is_empty());
        if req.subscribed_topic_names.is_none() && regex.is_none() {
            return Some(
                "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
            );
        }
        if req.topic_partitions.as_ref().is_some_and(|t| !t.is_empty()) {
            return Some("TopicPartitions must be empty when (re-)joining.");
        }
    } else if req.member_id.is_empty() {
        return Some("MemberId can't be empty.");
    }
    None
}

pub(crate) fn consumer_group_heartbeat(
    state: &ThreadState,
    req: ConsumerGroupHeartbeatRequest,
    version: i16,
    client_id: &str,
    client_host: &str,
) -> ConsumerGroupHeartbeatResponse {
    let mut response = ConsumerGroupHeartbeatResponse::default();
    let refuse = |mut r: ConsumerGroupHeartbeatResponse, e: ResponseError, why: String| {
        r.error_code = e.code();
        r.error_message = Some(str(why));
        r
    };
    if let Some(why) = invalid(&req, version) {
        return refuse(response, ResponseError::InvalidRequest, why.to_owned());
    }
    let group = req.group_id.to_string();
    if floodgate::validate_group_name(&group).is_err() {
        let why = format!("group id {group:?} is not a storable group name");
        return refuse(response, ResponseError::InvalidGroupId, why);
    }
    // A pattern matches whole topic names (RE2's syntax, as Kafka's RE2/J); an empty one is
    // none (librdkafka sends one beside topic names).
    let regex = match req.subscribed_topic_regex.as_deref() {
        None => None,
        Some("") => Some(None),
        Some(pattern) => match regex::Regex::new(&format!("^(?:{pattern})$")) {
            Ok(re) => Some(Some(re)),
            Err(e) => {
                let why = format!("SubscribedTopicRegex {pattern:?} is not valid: {e}");
                return refuse(response, ResponseError::InvalidRegularExpression, why);
            }
        },
    };
    let assignor = match req.server_assignor.as_deref() {
        None => None,
        Some(name) => match Assignor::from_name(name) {
            Some(a) => Some(a),
            None => {
                let why = format!("assignor {name:?} is not one of uniform, range");
                return refuse(response, ResponseError::UnsupportedAssignor, why);
            }
        },
    };
    // v0 members join without an id and are given one.
    let member_id = match req.member_id.is_empty() {
        true => fresh_member_id(client_host),
        false => req.member_id.to_string(),
    };
    let beat = Beat {
        member_id,
        epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(|s| s.to_string()),
        rack_id: req.rack_id.as_ref().map(|s| s.to_string()),
        client_id: client_id.to_owned(),
        client_host: client_host.to_owned(),
        rebalance_timeout: (req.rebalance_timeout_ms >= 0)
            .then(|| Duration::from_millis(req.rebalance_timeout_ms as u64)),
        subscribed: (req.subscribed_topic_names.as_ref())
            .map(|names| names.iter().map(|n| n.0.to_string()).collect()),
        regex,
        assignor,
        owned: (req.topic_partitions.as_ref()).map(|ts| {
            (ts.iter())
                .flat_map(|t| t.partitions.iter().map(move |&p| (t.topic_id, p)))
                .collect::<Vec<Tp>>()
        }),
    };
    let leaving = matches!(beat.epoch, LEAVE_EPOCH | STATIC_LEAVE_EPOCH);
    let coordinator = &state.shared.coordinator;
    match coordinator.consumer_heartbeat(&group, beat, &topics(state)) {
        Ok(answer) => {
            response.member_id = Some(str(answer.member_id));
            response.member_epoch = answer.epoch;
            response.heartbeat_interval_ms = match leaving {
                true => 0,
                false => coordinator.timeouts.consumer_heartbeat_interval.as_millis() as i32,
            };
            response.assignment = answer.assignment.map(|topics| {
                let mut a = Assignment::default();
                a.topic_partitions = (topics.into_iter())
                    .map(|(id, partitions)| {
                        let mut t = TopicPartitions::default();
                        t.topic_id = id;
                        t.partitions = partitions;
                        t
                    })
                    .collect();
                a
            });
            response
        }
        Err(e) => {
            let why = match e {
                ResponseError::FencedMemberEpoch => "the member epoch is not the member's".into(),
                ResponseError::UnknownMemberId => format!("no such member in group {group:?}"),
                ResponseError::UnreleasedInstanceId => {
                    "the instance id is still in use by another member".into()
                }
                ResponseError::GroupIdNotFound => {
                    format!("group {group:?} is a classic group with members")
                }
                other => format!("{other:?}"),
            };
            refuse(response, e, why)
        }
    }
}

fn described_assignment(
    set: &std::collections::BTreeSet<Tp>,
    g: &ConsumerGroup,
) -> DescribedAssignment {
    let mut a = DescribedAssignment::default();
    a.topic_partitions = (by_topic(set).into_iter())
        .map(|(id, partitions)| {
            let mut t = DescribedPartitions::default();
            t.topic_id = id;
            if let Some(topic) = g.topics.iter().find(|t| t.id == id) {
                t.topic_name = TopicName(str(topic.name.clone()));
            }
            t.partitions = partitions;
            t
        })
        .collect();
    a
}

pub(crate) fn consumer_group_describe(
    state: &ThreadState,
    req: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let mut response = ConsumerGroupDescribeResponse::default();
    response.groups = (req.group_ids.iter())
        .map(|name| {
            let mut d = DescribedGroup::default();
            d.group_id = name.clone();
            // No ACLs: every operation on a group is allowed.
            d.authorized_operations = i32::MIN;
            let Some(g) = state.shared.coordinator.describe_consumer_group(name) else {
                let known = !state.shared.log.group_offsets(name).is_empty();
                let classic = state.shared.coordinator.describe(name).is_some();
                if known && !classic {
                    // Committed offsets and no members: an empty group of either kind.
                    d.group_state = str("Empty");
                    d.assignor_name = str(Assignor::Uniform.name());
                } else {
                    d.error_code = ResponseError::GroupIdNotFound.code();
                    d.error_message = Some(str(match classic {
                        true => format!("group {name:?} is not a consumer group"),
                        false => format!("group {name:?} not found"),
                    }));
                }
                return d;
            };
            d.group_state = str(state_name(&g));
            d.group_epoch = g.epoch;
            d.assignment_epoch = g.target_epoch;
            d.assignor_name = str(g.assignor().name());
            d.members = (g.members.iter())
                .map(|m| {
                    let mut dm = DescribedMember::default();
                    dm.member_id = str(m.id.clone());
                    dm.instance_id = m.instance_id.clone().map(str);
                    dm.rack_id = m.rack_id.clone().map(str);
                    dm.member_epoch = m.epoch;
                    dm.client_id = str(m.client_id.clone());
                    dm.client_host = str(m.client_host.clone());
                    dm.subscribed_topic_names = (m.names.iter())
                        .map(|n| TopicName(str(n.clone())))
                        .collect();
                    // As given: without the anchors added to match whole names.
                    dm.subscribed_topic_regex = (m.regex.as_ref()).map(|re| {
                        let anchored = re.as_str();
                        str(&anchored[4..anchored.len() - 2])
                    });
                    dm.assignment = described_assignment(&m.assigned, &g);
                    dm.target_assignment = described_assignment(&g.target_of(&m.id), &g);
                    // A member of the consumer protocol (0 would be a classic one).
                    dm.member_type = 1;
                    dm
                })
                .collect();
            d
        })
        .collect();
    response
}
