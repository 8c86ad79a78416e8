//! The consumer group APIs: FindCoordinator (this broker, for groups), JoinGroup, SyncGroup,
//! Heartbeat and LeaveGroup (the coordinator in `crate::groups`), OffsetCommit and OffsetFetch
//! (the log's committed offsets, shared with its Rust consumers), DescribeGroups, ListGroups
//! and DeleteGroups.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use floodgate::{GroupOffset, Offset};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest,
    SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::metadata::NODE_ID;
use crate::conn::ThreadState;
use crate::groups::{JoinAsk, Phase, Reply};

/// FindCoordinator's key types.
const GROUP_KEY: i8 = 0;

const NO_TRANSACTIONS: &str =
    "floodgate serve has no transaction coordinator: transactions are not supported";

fn str(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

fn opt(s: Option<&StrBytes>) -> Option<String> {
    s.map(|s| s.to_string())
}

/// Why a group id is refused, if it is: the log keys committed offsets by group name, so a
/// group must have a name it can store.
fn bad_group(group: &str) -> Option<ResponseError> {
    floodgate::validate_group_name(group)
        .is_err()
        .then_some(ResponseError::InvalidGroupId)
}

/// A topic's partitions in a response: (partition, outcome).
type PartitionsOf<T> = Vec<(TopicName, Vec<(i32, T)>)>;

fn code(e: Option<ResponseError>) -> i16 {
    e.map_or(0, |e| e.code())
}

/// Every group key names this broker; transactional ids get an error that says they are not
/// supported.
pub(crate) fn find_coordinator(
    state: &ThreadState,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let (host, port) = &state.shared.advertised;
    let answer = |key_type: i8, key: &str| -> Result<(), (ResponseError, String)> {
        match key_type {
            GROUP_KEY => match bad_group(key) {
                Some(e) => Err((e, format!("group id {key:?} is not a storable group name"))),
                None => Ok(()),
            },
            _ => Err((
                ResponseError::CoordinatorNotAvailable,
                NO_TRANSACTIONS.to_owned(),
            )),
        }
    };
    let mut response = FindCoordinatorResponse::default();
    if version >= 4 {
        response.coordinators = (req.coordinator_keys.iter())
            .map(|key| {
                let mut c = Coordinator::default();
                c.key = key.clone();
                match answer(req.key_type, key) {
                    Ok(()) => {
                        c.node_id = BrokerId(NODE_ID);
                        c.host = str(host.clone());
                        c.port = i32::from(*port);
                    }
                    Err((e, why)) => {
                        c.node_id = BrokerId(-1);
                        c.port = -1;
                        c.error_code = e.code();
                        c.error_message = Some(str(why));
                    }
                }
                c
            })
            .collect();
    } else {
        match answer(req.key_type, &req.key) {
            Ok(()) => {
                response.node_id = BrokerId(NODE_ID);
                response.host = str(host.clone());
                response.port = i32::from(*port);
            }
            Err((e, why)) => {
                response.node_id = BrokerId(-1);
                response.port = -1;
                response.error_code = e.code();
                if version >= 1 {
                    response.error_message = Some(str(why));
                }
            }
        }
    }
    response
}

pub(crate) async fn join_group(
    state: &ThreadState,
    req: JoinGroupRequest,
    version: i16,
    client_id: String,
    client_host: String,
) -> JoinGroupResponse {
    let group = req.group_id.0.to_string();
    let session_timeout = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
    // v0 has no rebalance timeout: the session timeout stands in, as in Kafka.
    let rebalance_timeout = match version {
        0 => session_timeout,
        _ => Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64),
    };
    let mut response = JoinGroupResponse::default();
    response.generation_id = -1;
    response.member_id = req.member_id.clone();
    if let Some(e) = bad_group(&group) {
        response.error_code = e.code();
        return response;
    }
    let ask = JoinAsk {
        group,
        member_id: req.member_id.to_string(),
        instance_id: opt(req.group_instance_id.as_ref()),
        client_id,
        client_host,
        session_timeout,
        rebalance_timeout,
        protocol_type: req.protocol_type.to_string(),
        protocols: (req.protocols.iter())
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member: version >= 4,
    };
    let joined = match state.shared.coordinator.join(ask) {
        Reply::Now(j) => j,
        Reply::Later(rx) => match rx.await {
            Ok(j) => j,
            Err(_) => {
                response.error_code = ResponseError::CoordinatorNotAvailable.code();
                return response;
            }
        },
    };
    response.error_code = code(joined.error);
    response.generation_id = joined.generation;
    response.member_id = str(joined.member_id);
    response.leader = str(joined.leader);
    if version >= 7 {
        response.protocol_type = joined.protocol_type.map(str);
    }
    // Not nullable before v7.
    response.protocol_name = match version {
        ..=6 => Some(str(joined.protocol.unwrap_or_default())),
        _ => joined.protocol.map(str),
    };
    response.members = (joined.members.into_iter())
        .map(|(id, instance, metadata)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = str(id);
            if version >= 5 {
                m.group_instance_id = instance.map(str);
            }
            m.metadata = metadata;
            m
        })
        .collect();
    response
}

pub(crate) async fn sync_group(
    state: &ThreadState,
    req: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let group = req.group_id.0.to_string();
    let assignments: Vec<(String, Bytes)> = (req.assignments.iter())
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let reply = state.shared.coordinator.sync(
        &group,
        req.generation_id,
        &req.member_id,
        req.group_instance_id.as_deref(),
        (req.protocol_type.as_deref(), req.protocol_name.as_deref()),
        assignments,
    );
    let synced = match reply {
        Reply::Now(s) => s,
        Reply::Later(rx) => rx
            .await
            .unwrap_or(Err(ResponseError::CoordinatorNotAvailable)),
    };
    let mut response = SyncGroupResponse::default();
    match synced {
        Ok((protocol_type, protocol, assignment)) => {
            if version >= 5 {
                response.protocol_type = protocol_type.map(str);
                response.protocol_name = protocol.map(str);
            }
            response.assignment = assignment;
        }
        Err(e) => response.error_code = e.code(),
    }
    response
}

pub(crate) fn heartbeat(state: &ThreadState, req: HeartbeatRequest) -> HeartbeatResponse {
    let error = state.shared.coordinator.heartbeat(
        &req.group_id,
        req.generation_id,
        &req.member_id,
        req.group_instance_id.as_deref(),
    );
    let mut response = HeartbeatResponse::default();
    response.error_code = code(error);
    response
}

pub(crate) fn leave_group(
    state: &ThreadState,
    req: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = match version {
        ..=2 => vec![(req.member_id.to_string(), None)],
        _ => (req.members.iter())
            .map(|m| (m.member_id.to_string(), opt(m.group_instance_id.as_ref())))
            .collect(),
    };
    let outcomes = state.shared.coordinator.leave(&req.group_id, &members);
    let mut response = LeaveGroupResponse::default();
    if version <= 2 {
        response.error_code = code(outcomes[0]);
        return response;
    }
    response.members = (members.into_iter().zip(outcomes))
        .map(|((id, instance), outcome)| {
            let mut m = MemberResponse::default();
            m.member_id = str(id);
            m.group_instance_id = instance.map(str);
            m.error_code = code(outcome);
            m
        })
        .collect();
    // As Kafka: the request's error is that of a member when it names only one.
    if let [only] = &response.members[..] {
        response.error_code = only.error_code;
    }
    response
}

pub(crate) async fn offset_commit(
    state: &ThreadState,
    req: OffsetCommitRequest,
    version: i16,
) -> OffsetCommitResponse {
    let group = req.group_id.0.to_string();
    let log = &state.shared.log;
    let allowed = match bad_group(&group) {
        Some(e) => Err(e),
        None => state.shared.coordinator.may_commit(
            &group,
            req.generation_id_or_member_epoch,
            &req.member_id,
            req.group_instance_id.as_deref(),
            version,
        ),
    };
    // Each partition's outcome; the valid ones are committed together.
    let mut outcomes: PartitionsOf<Option<ResponseError>> = Vec::new();
    let mut commits = Vec::new();
    for topic in &req.topics {
        let name = topic.name.0.to_string();
        let mut parts = Vec::new();
        for p in &topic.partitions {
            let metadata = p.committed_metadata.as_deref().unwrap_or_default();
            let partition = u32::try_from(p.partition_index).ok();
            let known = partition.is_some_and(|q| log.offsets(&name, q).is_ok());
            let error = match allowed {
                Err(e) => Some(e),
                Ok(()) if !known => Some(ResponseError::UnknownTopicOrPartition),
                Ok(()) if metadata.len() > floodgate::OFFSET_METADATA_BYTES_MAX => {
                    Some(ResponseError::OffsetMetadataTooLarge)
                }
                Ok(()) if p.committed_offset < 0 => Some(ResponseError::InvalidCommitOffsetSize),
                Ok(()) => {
                    commits.push(GroupOffset {
                        topic: name.clone(),
                        partition: partition.expect("known"),
                        offset: Offset(p.committed_offset as u64),
                        metadata: metadata.to_owned(),
                    });
                    None
                }
            };
            parts.push((p.partition_index, error));
        }
        outcomes.push((topic.name.clone(), parts));
    }
    if !commits.is_empty() {
        // The commit waits for its records' acks: off the event loop.
        let log = std::sync::Arc::clone(log);
        let committed =
            tokio::task::spawn_blocking(move || log.commit_group_offsets(&group, &commits)).await;
        let failed = match committed {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(
                ResponseError::try_from_code(super::error_code(&e))
                    .unwrap_or(ResponseError::UnknownServerError),
            ),
            Err(_) => Some(ResponseError::UnknownServerError),
        };
        if let Some(e) = failed {
            for (_, parts) in &mut outcomes {
                for (_, outcome) in parts.iter_mut().filter(|(_, o)| o.is_none()) {
                    *outcome = Some(e);
                }
            }
        }
    }
    let mut response = OffsetCommitResponse::default();
    response.topics = (outcomes.into_iter())
        .map(|(name, parts)| {
            let mut t = OffsetCommitResponseTopic::default();
            t.name = name;
            t.partitions = (parts.into_iter())
                .map(|(index, outcome)| {
                    let mut p = OffsetCommitResponsePartition::default();
                    p.partition_index = index;
                    p.error_code = code(outcome);
                    p
                })
                .collect();
            t
        })
        .collect();
    response
}

/// One group's committed offsets as OffsetFetch answers them: the partitions asked for (each
/// partition of every topic it committed on, if `None`); -1 where it has not committed.
fn fetch_offsets(
    state: &ThreadState,
    group: &str,
    topics: Option<Vec<(TopicName, Vec<i32>)>>,
) -> PartitionsOf<(i64, String)> {
    let committed = state.shared.log.group_offsets(group);
    let mut by_topic: BTreeMap<String, BTreeMap<i32, (i64, String)>> = BTreeMap::new();
    for c in committed {
        let entry = by_topic.entry(c.topic).or_default();
        entry.insert(c.partition as i32, (c.offset.0 as i64, c.metadata));
    }
    match topics {
        Some(topics) => (topics.into_iter())
            .map(|(name, partitions)| {
                let known = by_topic.get(name.0.as_str());
                let parts = (partitions.into_iter())
                    .map(|p| {
                        let (offset, metadata) = known
                            .and_then(|k| k.get(&p).cloned())
                            .unwrap_or((-1, String::new()));
                        (p, (offset, metadata))
                    })
                    .collect();
                (name, parts)
            })
            .collect(),
        None => (by_topic.into_iter())
            .map(|(name, parts)| {
                let parts = parts.into_iter().collect();
                (TopicName(str(name)), parts)
            })
            .collect(),
    }
}

/// One group's answer in OffsetFetch's layout of topics `$topic` holding partitions `$part`
/// (the batched layout of v8 and the older one differ only in their types' names).
macro_rules! fetched_topics {
    ($state:expr, $group:expr, $asked:expr, $topic:ty, $part:ty) => {
        (fetch_offsets($state, $group, $asked).into_iter())
            .map(|(name, parts)| {
                let mut t = <$topic>::default();
                t.name = name;
                t.partitions = (parts.into_iter())
                    .map(|(index, (offset, metadata))| {
                        let mut p = <$part>::default();
                        p.partition_index = index;
                        p.committed_offset = offset;
                        p.committed_leader_epoch = -1;
                        p.metadata = Some(str(metadata));
                        p
                    })
                    .collect();
                t
            })
            .collect()
    };
}

pub(crate) fn offset_fetch(
    state: &ThreadState,
    req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let mut response = OffsetFetchResponse::default();
    if version >= 8 {
        response.groups = (req.groups.iter())
            .map(|g| {
                let mut out = OffsetFetchResponseGroup::default();
                out.group_id = g.group_id.clone();
                // As Kafka: no member id and a negative epoch is a fetch from outside the
                // group (an admin client, a consumer not yet joined).
                let member = match (g.member_id.as_deref(), g.member_epoch) {
                    (None, ..0) => None,
                    (id, epoch) => Some((id.unwrap_or_default(), epoch)),
                };
                let coordinator = &state.shared.coordinator;
                let refused = bad_group(&g.group_id)
                    .or_else(|| coordinator.may_fetch_offsets(&g.group_id, member).err());
                if let Some(e) = refused {
                    out.error_code = e.code();
                    return out;
                }
                let asked = (g.topics.as_ref()).map(|ts| {
                    (ts.iter())
                        .map(|t| (t.name.clone(), t.partition_indexes.clone()))
                        .collect()
                });
                out.topics = fetched_topics!(
                    state,
                    &g.group_id,
                    asked,
                    OffsetFetchResponseTopics,
                    OffsetFetchResponsePartitions
                );
                out
            })
            .collect();
        return response;
    }
    if let Some(e) = bad_group(&req.group_id) {
        response.error_code = e.code();
        return response;
    }
    let asked = (req.topics.as_ref()).map(|ts| {
        (ts.iter())
            .map(|t| (t.name.clone(), t.partition_indexes.clone()))
            .collect()
    });
    response.topics = fetched_topics!(
        state,
        &req.group_id,
        asked,
        OffsetFetchResponseTopic,
        OffsetFetchResponsePartition
    );
    response
}

/// The phase a group without members here shows: `Empty` if it has committed offsets, else
/// `Dead` (Kafka's answer for a group it does not know).
fn idle_phase(state: &ThreadState, group: &str) -> &'static str {
    match state.shared.log.group_offsets(group).is_empty() {
        true => "Dead",
        false => Phase::Empty.name(),
    }
}

pub(crate) fn describe_groups(
    state: &ThreadState,
    req: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let mut response = DescribeGroupsResponse::default();
    response.groups = (req.groups.iter())
        .map(|name| {
            let mut g = DescribedGroup::default();
            g.group_id = name.clone();
            if let Some(e) = bad_group(name) {
                g.error_code = e.code();
                return g;
            }
            if state
                .shared
                .coordinator
                .describe_consumer_group(name)
                .is_some()
            {
                // As Kafka: ConsumerGroupDescribe describes groups of the consumer protocol.
                g.error_code = ResponseError::GroupIdNotFound.code();
                if version >= 6 {
                    g.error_message = Some(str(format!("group {name:?} is not a classic group")));
                }
                return g;
            }
            match state.shared.coordinator.describe(name) {
                Some(view) if view.phase != Phase::Empty || !view.members.is_empty() => {
                    g.group_state = str(view.phase.name());
                    g.protocol_type = str(view.protocol_type);
                    g.protocol_data = str(view.protocol);
                    g.members = (view.members.into_iter())
                        .map(|m| {
                            let mut d = DescribedGroupMember::default();
                            d.member_id = str(m.id);
                            if version >= 4 {
                                d.group_instance_id = m.instance_id.map(str);
                            }
                            d.client_id = str(m.client_id);
                            d.client_host = str(m.client_host);
                            d.member_metadata = m.metadata;
                            d.member_assignment = m.assignment;
                            d
                        })
                        .collect();
                }
                Some(view) => {
                    g.group_state = str(view.phase.name());
                    g.protocol_type = str(view.protocol_type);
                }
                None => g.group_state = str(idle_phase(state, name)),
            }
            if version >= 3 {
                // No ACLs: every operation on a group is allowed.
                g.authorized_operations = i32::MIN;
            }
            g
        })
        .collect();
    response
}

pub(crate) fn list_groups(
    state: &ThreadState,
    req: ListGroupsRequest,
    version: i16,
) -> ListGroupsResponse {
    // (protocol type, state, type): v5 names a group's type, `consumer` for the consumer
    // protocol's groups and `classic` for the others (a group with only committed offsets
    // here is classic, as in Kafka).
    let mut listed: BTreeMap<String, (String, &'static str, &'static str)> = BTreeMap::new();
    for name in state.shared.log.list_groups() {
        listed.insert(name, (String::new(), Phase::Empty.name(), "classic"));
    }
    for (name, protocol_type, phase, kind) in state.shared.coordinator.list() {
        listed.insert(name, (protocol_type, phase, kind));
    }
    let wanted = |phase: &str, kind: &str| {
        let by_state = req.states_filter.is_empty()
            || (req.states_filter.iter()).any(|s| s.eq_ignore_ascii_case(phase));
        let by_type = version < 5
            || req.types_filter.is_empty()
            || (req.types_filter.iter()).any(|t| t.eq_ignore_ascii_case(kind));
        version < 4 || by_state && by_type
    };
    let mut response = ListGroupsResponse::default();
    response.groups = (listed.into_iter())
        .filter(|(_, (_, phase, kind))| wanted(phase, kind))
        .map(|(name, (protocol_type, phase, kind))| {
            let mut g = ListedGroup::default();
            g.group_id = GroupId(str(name));
            if version >= 4 {
                g.group_state = str(phase);
            }
            if version >= 5 {
                g.group_type = str(kind);
            }
            g.protocol_type = str(protocol_type);
            g
        })
        .collect();
    response
}

pub(crate) async fn delete_groups(
    state: &ThreadState,
    req: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut response = DeleteGroupsResponse::default();
    for name in &req.groups_names {
        let mut result = DeletableGroupResult::default();
        result.group_id = name.clone();
        let coordinator = &state.shared.coordinator;
        let known = coordinator.describe(name).is_some()
            || coordinator.describe_consumer_group(name).is_some()
            || !state.shared.log.group_offsets(name).is_empty();
        let error = match bad_group(name) {
            Some(e) => Some(e),
            None if !known => Some(ResponseError::GroupIdNotFound),
            None => match state.shared.coordinator.forget(name) {
                Err(e) => Some(e),
                Ok(()) => {
                    let log = std::sync::Arc::clone(&state.shared.log);
                    let group = name.to_string();
                    let deleted =
                        tokio::task::spawn_blocking(move || log.delete_group(&group)).await;
                    match deleted {
                        Ok(Ok(())) => None,
                        _ => Some(ResponseError::KafkaStorageError),
                    }
                }
            },
        };
        result.error_code = code(error);
        response.results.push(result);
    }
    response
}
