//! Consumer groups over the Kafka protocol for the load tool (`load peak --bootstrap --group
//! G --consumers N`): members that find the group's coordinator, join (the two-step join with
//! MEMBER_ID_REQUIRED), take what the leader assigns (ranges of the load topic's partitions,
//! as the consumer protocol's `range` assignor gives them), fetch from the group's committed
//! offsets, heartbeat, commit, join again when the group rebalances, and leave at the end. The
//! group's rate is set on the broker (`floodgate.rate.msgs.per.sec` on the group, through
//! IncrementalAlterConfigs) where the broker paces groups; elsewhere each member paces itself.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions as HeartbeatPartitions;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedPartitions;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse,
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, FetchResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest,
    SyncGroupResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::TOPIC;
use super::wire::{Conn, TopicLayout, each_record, topic_name};
use super::wire_consume::{Drained, FetchSizes, fetch_request, next_offset};
use crate::error::CliResult;

/// The broker's config of a group's rate in records per second (floodgate's).
pub(crate) const GROUP_RATE_CONFIG: &str = "floodgate.rate.msgs.per.sec";
/// IncrementalAlterConfigs' resource type of a group.
const RESOURCE_GROUP: i8 = 32;
/// The assignor the members name: ranges of partitions, as Kafka's `range`.
const ASSIGNOR: &str = "range";
/// How often a classic member heartbeats; the session lasts [`SESSION_TIMEOUT_MS`].
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
const SESSION_TIMEOUT_MS: i32 = 10_000;
const REBALANCE_TIMEOUT_MS: i32 = 30_000;

fn group_id(name: &str) -> GroupId {
    GroupId(StrBytes::from_string(name.to_owned()))
}

/// Sets (`Some`) or removes (`None`) the group's rate on the broker. `Ok(Err(reason))` if the
/// broker does not pace groups (a Kafka broker refuses the config).
pub(crate) fn set_group_rate(
    conn: &mut Conn,
    group: &str,
    rate: Option<f64>,
) -> CliResult<Result<(), String>> {
    let mut config = AlterableConfig::default();
    config.name = StrBytes::from_static_str(GROUP_RATE_CONFIG);
    config.config_operation = if rate.is_some() { 0 } else { 1 };
    config.value = rate.map(|r| StrBytes::from_string(format!("{}", r.round() as u64)));
    let mut resource = AlterConfigsResource::default();
    resource.resource_type = RESOURCE_GROUP;
    resource.resource_name = StrBytes::from_string(group.to_owned());
    resource.configs = vec![config];
    let mut req = IncrementalAlterConfigsRequest::default();
    req.resources = vec![resource];
    let response: IncrementalAlterConfigsResponse =
        match conn.call(ApiKey::IncrementalAlterConfigs, &req) {
            Ok((_, r)) => r,
            Err(e) => return Ok(Err(e.to_string())),
        };
    match response.responses.first() {
        Some(r) if r.error_code == 0 => Ok(Ok(())),
        Some(r) => Ok(Err(format!(
            "error {} ({})",
            r.error_code,
            r.error_message.as_ref().map_or("", |m| m.as_str())
        ))),
        None => Ok(Err("an empty answer".into())),
    }
}

/// The group coordinator's address, asked of the broker `conn` is connected to.
fn coordinator(conn: &mut Conn, group: &str) -> CliResult<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut req = FindCoordinatorRequest::default();
        req.key = StrBytes::from_string(group.to_owned());
        req.key_type = 0;
        let (_, response): (_, FindCoordinatorResponse) =
            conn.call(ApiKey::FindCoordinator, &req)?;
        if response.error_code == 0 {
            return Ok(format!("{}:{}", response.host.as_str(), response.port));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{}: no coordinator for group {group:?}: error {}",
                conn.addr(),
                response.error_code
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn encode<M: Encodable>(message: &M, version: i16) -> CliResult<Bytes> {
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&version.to_be_bytes());
    message
        .encode(&mut buf, version)
        .map_err(|e| format!("encoding a consumer-protocol message: {e}"))?;
    Ok(buf.freeze())
}

fn decode<M: Decodable>(mut bytes: Bytes) -> CliResult<M> {
    if bytes.len() < 2 {
        return Err("a consumer-protocol message shorter than its version".into());
    }
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    let _ = bytes.split_to(2);
    M::decode(&mut bytes, version.min(3))
        .map_err(|e| format!("a consumer-protocol message: {e}").into())
}

/// The range assignor: `partitions` split among the members (sorted by id) in contiguous
/// ranges, the first ones taking one more when they do not divide evenly.
pub(crate) fn range_assign(members: &[String], partitions: u32) -> Vec<(String, Vec<i32>)> {
    let mut members = members.to_vec();
    members.sort();
    let n = members.len().max(1) as u32;
    let (each, extra) = (partitions / n, partitions % n);
    let mut next = 0i32;
    members
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let count = each + u32::from((i as u32) < extra);
            let range: Vec<i32> = (next..next + count as i32).collect();
            next += count as i32;
            (m, range)
        })
        .collect()
}

/// Which of Kafka's group protocols the members speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupProtocol {
    /// JoinGroup, SyncGroup and Heartbeat; the leader assigns (ranges).
    Classic,
    /// ConsumerGroupHeartbeat (KIP-848); the broker assigns, and each member takes its
    /// partitions at its heartbeats.
    Consumer,
}

impl GroupProtocol {
    pub(crate) fn parse(s: &str) -> Result<GroupProtocol, String> {
        match s {
            "classic" => Ok(GroupProtocol::Classic),
            "consumer" => Ok(GroupProtocol::Consumer),
            _ => Err(format!(
                "{s:?}: the group protocol is `classic` or `consumer`"
            )),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            GroupProtocol::Classic => "classic",
            GroupProtocol::Consumer => "consumer",
        }
    }
}

/// A member of a group: its coordinator connection and where it stands in the group.
pub(crate) struct Member {
    coord: Conn,
    group: String,
    id: String,
    /// The classic protocol's generation, or the consumer protocol's member epoch (0: joining).
    generation: i32,
    partitions: u32,
    protocol: GroupProtocol,
    /// The load topic's id, as consumer-protocol assignments name it.
    topic_id: uuid::Uuid,
    /// Consumer protocol: the partitions it owns, and an assignment a heartbeat gave that it
    /// has not taken yet.
    owned: Vec<i32>,
    given: Option<Vec<i32>>,
    /// How often it heartbeats (the broker sets it in the consumer protocol).
    heartbeat_every: Duration,
}

/// A consumer-protocol member id (chosen by the client from v1): unique per process and
/// member.
fn fresh_member_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let time = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH))
        .map_or(0, |d| d.as_nanos());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("load-{time:x}-{:x}-{n}", std::process::id())
}

/// Whether a response's error says to join the group again.
fn rejoin_error(code: i16) -> bool {
    matches!(
        ResponseError::try_from_code(code),
        Some(
            ResponseError::RebalanceInProgress
                | ResponseError::IllegalGeneration
                | ResponseError::UnknownMemberId
                | ResponseError::StaleMemberEpoch
                | ResponseError::FencedMemberEpoch
        )
    )
}

impl Member {
    /// Connects to the group's coordinator (asked of `bootstrap`).
    pub(crate) fn connect(
        bootstrap: &str,
        group: &str,
        layout: &TopicLayout,
        protocol: GroupProtocol,
    ) -> CliResult<Member> {
        let addr = coordinator(&mut Conn::connect(bootstrap)?, group)?;
        if protocol == GroupProtocol::Consumer && layout.topic_id.is_nil() {
            return Err(
                format!("{bootstrap}: the broker names no topic ids (Metadata v10)").into(),
            );
        }
        Ok(Member {
            coord: Conn::connect(&addr)?,
            group: group.to_owned(),
            id: String::new(),
            generation: match protocol {
                GroupProtocol::Classic => -1,
                GroupProtocol::Consumer => 0,
            },
            partitions: layout.leaders.len() as u32,
            protocol,
            topic_id: layout.topic_id,
            owned: Vec::new(),
            given: None,
            heartbeat_every: HEARTBEAT_EVERY,
        })
    }

    /// How often it heartbeats.
    pub(crate) fn heartbeat_every(&self) -> Duration {
        self.heartbeat_every
    }

    /// Joins (or joins again) and returns the partitions assigned to this member, sorted.
    pub(crate) fn join(&mut self) -> CliResult<Vec<i32>> {
        match self.protocol {
            GroupProtocol::Classic => self.join_classic(),
            GroupProtocol::Consumer => self.join_consumer(),
        }
    }

    /// A ConsumerGroupHeartbeat: joining (epoch 0) with its subscription, leaving (epoch -1),
    /// or saying what it owns. Takes the epoch and interval answered, and keeps a new
    /// assignment in `given`; returns the error code.
    fn beat(&mut self, epoch: i32) -> CliResult<i16> {
        let mut req = ConsumerGroupHeartbeatRequest::default();
        req.group_id = group_id(&self.group);
        req.member_id = StrBytes::from_string(self.id.clone());
        req.member_epoch = epoch;
        req.rebalance_timeout_ms = -1;
        if epoch == 0 {
            self.owned.clear();
            self.given = None;
            req.rebalance_timeout_ms = REBALANCE_TIMEOUT_MS;
            req.subscribed_topic_names = Some(vec![topic_name()]);
        }
        if epoch >= 0 {
            let mut owned = HeartbeatPartitions::default();
            owned.topic_id = self.topic_id;
            owned.partitions = self.owned.clone();
            req.topic_partitions = Some(match self.owned.is_empty() {
                true => Vec::new(),
                false => vec![owned],
            });
        }
        let (_, response): (_, ConsumerGroupHeartbeatResponse) =
            self.coord.call(ApiKey::ConsumerGroupHeartbeat, &req)?;
        if response.error_code != 0 {
            return Ok(response.error_code);
        }
        self.generation = response.member_epoch;
        if response.heartbeat_interval_ms > 0 {
            let every = Duration::from_millis(response.heartbeat_interval_ms as u64);
            self.heartbeat_every = every.max(Duration::from_millis(50));
        }
        if let Some(a) = response.assignment {
            let mut mine: Vec<i32> = (a.topic_partitions.iter())
                .filter(|t| t.topic_id == self.topic_id)
                .flat_map(|t| t.partitions.iter().copied())
                .collect();
            mine.sort_unstable();
            if mine != self.owned {
                self.given = Some(mine);
            }
        }
        Ok(0)
    }

    /// The consumer protocol's join: takes the assignment its last heartbeat gave (or joins
    /// with epoch 0), and says so at once, so that the broker moves on (partitions it gave up
    /// go to others; new ones come as they are released, at later heartbeats).
    fn join_consumer(&mut self) -> CliResult<Vec<i32>> {
        if self.id.is_empty() {
            self.id = fresh_member_id();
        }
        let deadline = Instant::now() + Duration::from_millis(REBALANCE_TIMEOUT_MS as u64 * 2);
        let mut acknowledged = false;
        loop {
            if Instant::now() > deadline {
                return Err(format!("group {:?}: no assignment after 60 s", self.group).into());
            }
            if let Some(given) = self.given.take() {
                self.owned = given;
                acknowledged = false;
            }
            if acknowledged {
                return Ok(self.owned.clone());
            }
            let code = self.beat(self.generation)?;
            match ResponseError::try_from_code(code) {
                None => acknowledged = self.given.is_none(),
                Some(ResponseError::UnknownMemberId | ResponseError::FencedMemberEpoch) => {
                    self.generation = 0;
                }
                Some(
                    ResponseError::CoordinatorLoadInProgress
                    | ResponseError::CoordinatorNotAvailable,
                ) => std::thread::sleep(Duration::from_millis(100)),
                Some(e) => {
                    return Err(format!("group {:?}: heartbeat: {e:?}", self.group).into());
                }
            }
        }
    }

    /// The classic protocol's join: JoinGroup (in two steps), the leader assigning ranges,
    /// SyncGroup.
    fn join_classic(&mut self) -> CliResult<Vec<i32>> {
        let deadline = Instant::now() + Duration::from_millis(REBALANCE_TIMEOUT_MS as u64 * 2);
        loop {
            if Instant::now() > deadline {
                return Err(format!("group {:?}: no assignment after 60 s", self.group).into());
            }
            let mut subscription = ConsumerProtocolSubscription::default();
            subscription.topics = vec![StrBytes::from_static_str(TOPIC)];
            let mut protocol = JoinGroupRequestProtocol::default();
            protocol.name = StrBytes::from_static_str(ASSIGNOR);
            protocol.metadata = encode(&subscription, 0)?;
            let mut req = JoinGroupRequest::default();
            req.group_id = group_id(&self.group);
            req.session_timeout_ms = SESSION_TIMEOUT_MS;
            req.rebalance_timeout_ms = REBALANCE_TIMEOUT_MS;
            req.member_id = StrBytes::from_string(self.id.clone());
            req.protocol_type = StrBytes::from_static_str("consumer");
            req.protocols = vec![protocol];
            let (_, joined): (_, JoinGroupResponse) = self.coord.call(ApiKey::JoinGroup, &req)?;
            match ResponseError::try_from_code(joined.error_code) {
                None => {}
                Some(ResponseError::MemberIdRequired) => {
                    self.id = joined.member_id.to_string();
                    continue;
                }
                Some(ResponseError::UnknownMemberId) => {
                    self.id.clear();
                    continue;
                }
                Some(ResponseError::RebalanceInProgress) => continue,
                Some(e) => {
                    return Err(format!("group {:?}: join: {e:?}", self.group).into());
                }
            }
            self.id = joined.member_id.to_string();
            self.generation = joined.generation_id;
            let mut assignments = Vec::new();
            if joined.leader == joined.member_id {
                let ids: Vec<String> = joined
                    .members
                    .iter()
                    .map(|m| m.member_id.to_string())
                    .collect();
                for (member, partitions) in range_assign(&ids, self.partitions) {
                    let mut topic = AssignedPartitions::default();
                    topic.topic = topic_name();
                    topic.partitions = partitions;
                    let mut assignment = ConsumerProtocolAssignment::default();
                    assignment.assigned_partitions = vec![topic];
                    let mut a = SyncGroupRequestAssignment::default();
                    a.member_id = StrBytes::from_string(member);
                    a.assignment = encode(&assignment, 0)?;
                    assignments.push(a);
                }
            }
            let mut req = SyncGroupRequest::default();
            req.group_id = group_id(&self.group);
            req.generation_id = self.generation;
            req.member_id = StrBytes::from_string(self.id.clone());
            if self.coord.version(ApiKey::SyncGroup)? >= 5 {
                req.protocol_type = Some(StrBytes::from_static_str("consumer"));
                req.protocol_name = joined.protocol_name.clone();
            }
            req.assignments = assignments;
            let (_, synced): (_, SyncGroupResponse) = self.coord.call(ApiKey::SyncGroup, &req)?;
            if rejoin_error(synced.error_code) {
                continue;
            }
            if synced.error_code != 0 {
                return Err(
                    format!("group {:?}: sync: error {}", self.group, synced.error_code).into(),
                );
            }
            if synced.assignment.is_empty() {
                return Ok(Vec::new());
            }
            let assignment: ConsumerProtocolAssignment = decode(synced.assignment)?;
            let mut mine: Vec<i32> = (assignment.assigned_partitions.iter())
                .filter(|t| t.topic.0.as_str() == TOPIC)
                .flat_map(|t| t.partitions.iter().copied())
                .collect();
            mine.sort_unstable();
            return Ok(mine);
        }
    }

    /// Heartbeats; false if the group is rebalancing (join again: in the consumer protocol,
    /// the member's assignment changed).
    pub(crate) fn heartbeat(&mut self) -> CliResult<bool> {
        if self.protocol == GroupProtocol::Consumer {
            let code = self.beat(self.generation)?;
            return match code {
                0 => Ok(self.given.is_none()),
                code if rejoin_error(code) => {
                    self.generation = 0;
                    Ok(false)
                }
                code => Err(format!("group {:?}: heartbeat: error {code}", self.group).into()),
            };
        }
        let mut req = HeartbeatRequest::default();
        req.group_id = group_id(&self.group);
        req.generation_id = self.generation;
        req.member_id = StrBytes::from_string(self.id.clone());
        let (_, response): (_, HeartbeatResponse) = self.coord.call(ApiKey::Heartbeat, &req)?;
        match response.error_code {
            0 => Ok(true),
            code if rejoin_error(code) => Ok(false),
            code => Err(format!("group {:?}: heartbeat: error {code}", self.group).into()),
        }
    }

    /// Commits `offsets` (partition, next offset to read); false if the group rebalanced
    /// meanwhile (the commit was refused: the partitions' next owner reads from the last).
    pub(crate) fn commit(&mut self, offsets: &[(i32, i64)]) -> CliResult<bool> {
        if offsets.is_empty() {
            return Ok(true);
        }
        let mut topic = OffsetCommitRequestTopic::default();
        topic.name = topic_name();
        topic.partitions = (offsets.iter())
            .map(|&(p, o)| {
                let mut q = OffsetCommitRequestPartition::default();
                q.partition_index = p;
                q.committed_offset = o;
                q.committed_leader_epoch = -1;
                q.committed_metadata = Some(StrBytes::from_static_str(""));
                q
            })
            .collect();
        let mut req = OffsetCommitRequest::default();
        req.group_id = group_id(&self.group);
        req.generation_id_or_member_epoch = self.generation;
        req.member_id = StrBytes::from_string(self.id.clone());
        req.retention_time_ms = -1;
        req.topics = vec![topic];
        let (_, response): (_, OffsetCommitResponse) =
            self.coord.call(ApiKey::OffsetCommit, &req)?;
        for t in &response.topics {
            for p in &t.partitions {
                match p.error_code {
                    0 => {}
                    code if rejoin_error(code) => return Ok(false),
                    code => {
                        return Err(format!(
                            "group {:?}: commit of partition {}: error {code}",
                            self.group, p.partition_index
                        )
                        .into());
                    }
                }
            }
        }
        Ok(true)
    }

    /// The group's committed offsets of `partitions` (-1: none).
    pub(crate) fn committed(&mut self, partitions: &[i32]) -> CliResult<Vec<i64>> {
        let mut topic = OffsetFetchRequestTopic::default();
        topic.name = topic_name();
        topic.partition_indexes = partitions.to_vec();
        let mut req = OffsetFetchRequest::default();
        req.group_id = group_id(&self.group);
        req.topics = Some(vec![topic]);
        let (_, response): (_, OffsetFetchResponse) = self.coord.call(ApiKey::OffsetFetch, &req)?;
        if response.error_code != 0 {
            return Err(format!(
                "group {:?}: offset fetch: error {}",
                self.group, response.error_code
            )
            .into());
        }
        let mut out = vec![-1i64; partitions.len()];
        for t in &response.topics {
            for p in &t.partitions {
                if let Some(i) = partitions.iter().position(|&q| q == p.partition_index) {
                    out[i] = if p.error_code == 0 {
                        p.committed_offset
                    } else {
                        -1
                    };
                }
            }
        }
        Ok(out)
    }

    /// Leaves the group (its partitions go to the others at once).
    pub(crate) fn leave(&mut self) -> CliResult<()> {
        if self.protocol == GroupProtocol::Consumer {
            return match self.beat(-1)? {
                0 => Ok(()),
                code => Err(format!("group {:?}: leave: error {code}", self.group).into()),
            };
        }
        let mut me = MemberIdentity::default();
        me.member_id = StrBytes::from_string(self.id.clone());
        let mut req = LeaveGroupRequest::default();
        req.group_id = group_id(&self.group);
        // Several members at once from v3 on, one before.
        match self.coord.version(ApiKey::LeaveGroup)? {
            0..=2 => req.member_id = StrBytes::from_string(self.id.clone()),
            _ => req.members = vec![me],
        }
        let (_, response): (_, LeaveGroupResponse) = self.coord.call(ApiKey::LeaveGroup, &req)?;
        match response.error_code {
            0 => Ok(()),
            code => Err(format!("group {:?}: leave: error {code}", self.group).into()),
        }
    }
}

/// What is done with each record handed over (partition, value), by every member in turn.
pub(crate) type OnRecord<'a> = dyn FnMut(u32, &[u8]) + Send + 'a;

/// How a member drains.
#[derive(Clone, Copy)]
pub(crate) struct MemberRun<'a> {
    pub(crate) layout: &'a TopicLayout,
    pub(crate) bootstrap: &'a str,
    pub(crate) group: &'a str,
    /// Where each partition's run started: a partition the group committed nothing for (or
    /// less) is read from here.
    pub(crate) from: &'a [i64],
    pub(crate) sizes: FetchSizes,
    /// Records per second this member hands over at most (0: as they come, the broker pacing
    /// the group).
    pub(crate) rate: f64,
    pub(crate) until: Instant,
    pub(crate) commit_every: Duration,
    /// When the group first had its assignment: seconds count from it.
    pub(crate) clock: &'a OnceLock<Instant>,
    /// Records handed over by every member.
    pub(crate) consumed: &'a AtomicU64,
    pub(crate) on_record: &'a Mutex<OnRecord<'a>>,
    pub(crate) protocol: GroupProtocol,
}

/// What a member saw, beside its records.
#[derive(Default)]
pub(crate) struct MemberSaw {
    pub(crate) drained: Drained,
    pub(crate) rebalances: u64,
}

/// Runs one member until `run.until`: joins, fetches its partitions from the group's
/// commits, commits every `commit_every` and at the end, joins again when the group
/// rebalances, and leaves.
pub(crate) fn run_member(run: &MemberRun<'_>) -> CliResult<MemberSaw> {
    let mut member = Member::connect(run.bootstrap, run.group, run.layout, run.protocol)?;
    let mut saw = MemberSaw::default();
    let mut fetcher = Conn::connect(run.bootstrap)?;
    let mut last_heartbeat = Instant::now();
    let mut last_commit = Instant::now();
    let mut handed = 0u64;
    'group: while Instant::now() < run.until {
        let mine = member.join()?;
        let clock = *run.clock.get_or_init(Instant::now);
        let committed = member.committed(&mine)?;
        let mut position: Vec<i64> = (mine.iter().zip(&committed))
            .map(|(&p, &c)| c.max(run.from[p as usize]))
            .collect();
        let mut fetch_at = position.clone();
        let mut in_flight: Option<i32> = None;
        loop {
            let stopped = Instant::now() >= run.until;
            if in_flight.is_none() && !stopped && !mine.is_empty() {
                in_flight = Some(send_fetch(&mut fetcher, &mine, &fetch_at, run.sizes)?);
            }
            if let Some(id) = in_flight.take() {
                let response: FetchResponse = fetcher.receive(ApiKey::Fetch, id)?;
                let mut sets = Vec::new();
                for t in &response.responses {
                    for p in &t.partitions {
                        let Some(i) = mine.iter().position(|&q| q == p.partition_index) else {
                            return Err(format!(
                                "a fetch answered partition {} not asked for",
                                p.partition_index
                            )
                            .into());
                        };
                        if p.error_code != 0 {
                            return Err(format!(
                                "fetch of partition {}: error {}",
                                p.partition_index, p.error_code
                            )
                            .into());
                        }
                        let Some(records) = &p.records else { continue };
                        if let Some(next) = next_offset(records) {
                            fetch_at[i] = next.max(fetch_at[i]);
                        }
                        sets.push((i, records.clone()));
                    }
                }
                if Instant::now() < run.until {
                    in_flight = Some(send_fetch(&mut fetcher, &mine, &fetch_at, run.sizes)?);
                }
                for (i, records) in sets {
                    let partition = mine[i];
                    saw.drained.fetched_bytes += records.len() as u64;
                    let pos = &mut position[i];
                    let next = each_record(&records, *pos, |_, value| {
                        if Instant::now() >= run.until {
                            return;
                        }
                        hand_over(&mut saw.drained, clock, run, &mut handed);
                        let mut on_record = run.on_record.lock().expect("record check lock");
                        on_record(partition as u32, value.unwrap_or_default());
                    })
                    .map_err(|e| format!("partition {partition}: {e}"))?;
                    if let Some(next) = next {
                        *pos = next.max(*pos);
                    }
                }
                saw.drained.fetches += 1;
            } else if mine.is_empty() && !stopped {
                std::thread::sleep(Duration::from_millis(100));
            }
            let offsets: Vec<(i32, i64)> =
                mine.iter().copied().zip(position.iter().copied()).collect();
            if Instant::now() >= run.until {
                if let Some(id) = in_flight.take() {
                    let _: FetchResponse = fetcher.receive(ApiKey::Fetch, id)?;
                }
                member.commit(&offsets)?;
                break 'group;
            }
            if last_commit.elapsed() >= run.commit_every {
                last_commit = Instant::now();
                if !member.commit(&offsets)? {
                    break;
                }
            }
            if last_heartbeat.elapsed() >= member.heartbeat_every() {
                last_heartbeat = Instant::now();
                if !member.heartbeat()? {
                    // What was handed over is committed before the partitions move (a
                    // refused commit leaves the next owner to read it again).
                    member.commit(&offsets)?;
                    break;
                }
            }
        }
        // A rebalance: the fetch in flight is answered before the member joins again.
        if let Some(id) = in_flight.take() {
            let _: FetchResponse = fetcher.receive(ApiKey::Fetch, id)?;
        }
        saw.rebalances += 1;
    }
    saw.drained.records = handed;
    member.leave()?;
    Ok(saw)
}

/// What a group's members saw together.
pub(crate) struct GroupSaw {
    /// Their records, per second counted from the group's first assignment.
    pub(crate) drained: Drained,
    pub(crate) rebalances: u64,
    /// When the group first had its assignment.
    pub(crate) assigned_at: Option<Instant>,
}

/// Runs `members` members of `run.group` (each its own thread, `run.rate` split among them
/// when they pace themselves) and merges what they saw.
pub(crate) fn run_members(run: &MemberRun<'_>, members: u32) -> CliResult<GroupSaw> {
    let share = MemberRun {
        rate: run.rate / f64::from(members.max(1)),
        ..*run
    };
    let saws: Vec<CliResult<MemberSaw>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..members)
            .map(|_| s.spawn(|| run_member(&share)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a member thread panicked".into()))
            })
            .collect()
    });
    let mut out = GroupSaw {
        drained: Drained::default(),
        rebalances: 0,
        assigned_at: run.clock.get().copied(),
    };
    for saw in saws {
        let saw = saw?;
        let d = &mut out.drained;
        d.records += saw.drained.records;
        d.fetched_bytes += saw.drained.fetched_bytes;
        d.fetches += saw.drained.fetches;
        if d.per_second.len() < saw.drained.per_second.len() {
            d.per_second.resize(saw.drained.per_second.len(), 0);
        }
        for (total, n) in d.per_second.iter_mut().zip(&saw.drained.per_second) {
            *total += n;
        }
        out.rebalances += saw.rebalances;
    }
    Ok(out)
}

fn send_fetch(
    conn: &mut Conn,
    partitions: &[i32],
    fetch_at: &[i64],
    sizes: FetchSizes,
) -> CliResult<i32> {
    let asked: Vec<(i32, i64)> = partitions
        .iter()
        .copied()
        .zip(fetch_at.iter().copied())
        .collect();
    conn.send(ApiKey::Fetch, &fetch_request(&asked, sizes))
}

/// Counts a record handed over (in its second since `clock`), no faster than the member's
/// rate if it paces itself.
fn hand_over(out: &mut Drained, clock: Instant, run: &MemberRun<'_>, handed: &mut u64) {
    if run.rate > 0.0 && handed.is_multiple_of(64) {
        let due = clock + Duration::from_secs_f64(*handed as f64 / run.rate);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    // Each record in its own second: a broker's pacing is measured here, to the record.
    let second = clock.elapsed().as_secs() as usize;
    if out.per_second.len() <= second {
        out.per_second.resize(second + 1, 0);
    }
    out.per_second[second] += 1;
    *handed += 1;
    run.consumed.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_partition_once_in_member_order() {
        let members: Vec<String> = ["b", "a", "c"].iter().map(|s| s.to_string()).collect();
        let got = range_assign(&members, 8);
        assert_eq!(
            got,
            vec![
                ("a".to_string(), vec![0, 1, 2]),
                ("b".to_string(), vec![3, 4, 5]),
                ("c".to_string(), vec![6, 7]),
            ]
        );
        let got = range_assign(&members[..1], 2);
        assert_eq!(got, vec![("b".to_string(), vec![0, 1])]);
        let got = range_assign(&members, 1);
        assert_eq!(got[2].1, Vec::<i32>::new());
    }

    #[test]
    fn consumer_protocol_messages_round_trip_with_their_version() {
        let mut topic = AssignedPartitions::default();
        topic.topic = topic_name();
        topic.partitions = vec![3, 4];
        let mut a = ConsumerProtocolAssignment::default();
        a.assigned_partitions = vec![topic];
        let bytes = encode(&a, 0).unwrap();
        assert_eq!(&bytes[..2], &[0, 0]);
        let back: ConsumerProtocolAssignment = decode(bytes).unwrap();
        assert_eq!(back, a);
        assert!(decode::<ConsumerProtocolAssignment>(Bytes::from_static(&[0])).is_err());
    }
}
