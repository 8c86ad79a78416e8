//! The group coordinator of Kafka's classic consumer group protocol: members join a group,
//! the first of them (the leader) computes every member's assignment on the client side, and
//! the coordinator hands each member its share. Every group is coordinated here (one broker);
//! its committed offsets are the log's ([`floodgate::Log::commit_group_offsets`]), the same
//! ones a Rust consumer of the group starts from.
//!
//! A group moves through four phases, as Kafka's do:
//!
//! - `Empty`: no members (it may have committed offsets);
//! - `PreparingRebalance`: a member joined, left or was expired; every member must join again
//!   (their JoinGroup waits) within the rebalance timeout, or is dropped;
//! - `CompletingRebalance`: all joined, the generation moved on; the members' SyncGroup wait
//!   for the leader's, which carries the assignments;
//! - `Stable`: each member has its assignment and heartbeats within its session timeout.
//!
//! A new group's first rebalance waits `initial_rebalance_delay` (extended by each member that
//! joins meanwhile, up to the rebalance timeout), so consumers started together join one
//! generation, as Kafka's `group.initial.rebalance.delay.ms` does. Static members (a group
//! instance id) that restart with the same protocols take their old place and assignment
//! without a rebalance. Waiting JoinGroup and SyncGroup requests are answered through one-shot
//! channels; one thread expires sessions and ends rebalances whose time is up.
//!
//! The [`Coordinator`] also holds the groups of the consumer protocol (`crate::consumer_groups`:
//! a group name is of one kind or the other, and its commits are checked by its kind) and the
//! paced groups' rates (`crate::pace`), found for a fetch by its member.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use floodgate::RateLimit;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

use crate::consumer_groups::{Beat, BeatAnswer, ConsumerGroup, TopicMeta};
use crate::pace::Pace;

/// The coordinator's timing, as Kafka's broker configs name them.
#[derive(Debug, Clone, Copy)]
pub struct GroupTimeouts {
    /// `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay: Duration,
    /// `group.min.session.timeout.ms`.
    pub min_session: Duration,
    /// `group.max.session.timeout.ms`.
    pub max_session: Duration,
    /// `group.consumer.heartbeat.interval.ms`: how often members of consumer-protocol groups
    /// heartbeat, so how soon they learn that their assignment changed.
    pub consumer_heartbeat_interval: Duration,
    /// `group.consumer.session.timeout.ms`: a consumer-protocol member that does not heartbeat
    /// for this long is removed.
    pub consumer_session: Duration,
}

impl Default for GroupTimeouts {
    /// Kafka's defaults (3 s, 6 s, 30 min; a session of 45 s), except the consumer protocol's
    /// heartbeat interval: 1 s rather than Kafka's 5 s, so that a group rebalances within a
    /// second of a member leaving.
    fn default() -> GroupTimeouts {
        GroupTimeouts {
            initial_rebalance_delay: Duration::from_secs(3),
            min_session: Duration::from_secs(6),
            max_session: Duration::from_secs(1800),
            consumer_heartbeat_interval: Duration::from_secs(1),
            consumer_session: Duration::from_secs(45),
        }
    }
}

/// A group's phase (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl Phase {
    /// As DescribeGroups and ListGroups name it.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Empty => "Empty",
            Phase::PreparingRebalance => "PreparingRebalance",
            Phase::CompletingRebalance => "CompletingRebalance",
            Phase::Stable => "Stable",
        }
    }
}

/// A JoinGroup, as the coordinator needs it.
#[derive(Debug, Clone)]
pub(crate) struct JoinAsk {
    pub group: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    /// (name, metadata), in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// v4 and later: a member without an id is given one and must join again with it.
    pub require_known_member: bool,
}

/// A JoinGroup's answer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Joined {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// For the leader: every member (id, instance id, metadata for the chosen protocol).
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl Joined {
    fn error(error: ResponseError, member_id: &str) -> Joined {
        Joined {
            error: Some(error),
            generation: -1,
            member_id: member_id.to_owned(),
            ..Joined::default()
        }
    }
}

/// A SyncGroup's answer: the member's assignment, or why not.
pub(crate) type Synced = Result<(Option<String>, Option<String>, Bytes), ResponseError>;

/// An answer now, or one to wait for (a dropped sender means the coordinator stopped).
pub(crate) enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

/// A member in DescribeGroups.
#[derive(Debug, Clone)]
pub(crate) struct MemberView {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group in DescribeGroups and ListGroups.
#[derive(Debug, Clone)]
pub(crate) struct GroupView {
    pub phase: Phase,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberView>,
}

/// The partitions a consumer-protocol assignment (`protocol_type` "consumer") gives, as
/// (topic, partition): version (i16), topics (i32 count; each a string and an i32 array),
/// then user data this ignores. `None` if it does not parse.
pub(crate) fn consumer_assignment(mut b: &[u8]) -> Option<Vec<(String, i32)>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (b.len() >= n).then(|| b.split_at(n))?;
        *b = rest;
        Some(head)
    }
    let int =
        |b: &mut &[u8]| -> Option<i32> { Some(i32::from_be_bytes(take(b, 4)?.try_into().ok()?)) };
    take(&mut b, 2)?; // version
    let topics = int(&mut b)?;
    let mut out = Vec::new();
    for _ in 0..topics.max(0) {
        let len = i16::from_be_bytes(take(&mut b, 2)?.try_into().ok()?);
        let name = std::str::from_utf8(take(&mut b, usize::try_from(len).ok()?)?).ok()?;
        let partitions = int(&mut b)?;
        for _ in 0..partitions.max(0) {
            out.push((name.to_owned(), int(&mut b)?));
        }
    }
    Some(out)
}

struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// `assignment` read as a consumer's, sorted (empty for other protocol types).
    assigned: Vec<(String, i32)>,
    /// Its last request to the coordinator.
    seen: Instant,
    joining: Option<oneshot::Sender<Joined>>,
    syncing: Option<oneshot::Sender<Synced>>,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        (self.protocols.iter())
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    /// Waiting in a JoinGroup or SyncGroup: its session does not run out meanwhile.
    fn waiting(&self) -> bool {
        self.joining.is_some() || self.syncing.is_some()
    }
}

struct Group {
    phase: Phase,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    /// In the order they joined.
    members: Vec<Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they join with them.
    pending: HashMap<String, Instant>,
    /// When the current rebalance ends, whoever has joined by then.
    deadline: Option<Instant>,
    /// A new group's first rebalance: it does not end before this (see the module docs), and
    /// not after `rebalance_end`.
    delay_until: Option<Instant>,
    rebalance_end: Option<Instant>,
}

impl Group {
    fn new() -> Group {
        Group {
            phase: Phase::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: Vec::new(),
            pending: HashMap::new(),
            deadline: None,
            delay_until: None,
            rebalance_end: None,
        }
    }

    fn member(&self, id: &str) -> Option<usize> {
        self.members.iter().position(|m| m.id == id)
    }

    fn by_instance(&self, instance: &str) -> Option<usize> {
        (self.members.iter()).position(|m| m.instance_id.as_deref() == Some(instance))
    }

    /// The member `id`, or the error its request gets: a static member whose instance id is
    /// now held by another member id was replaced (FENCED_INSTANCE_ID).
    fn known(&self, id: &str, instance: Option<&str>) -> Result<usize, ResponseError> {
        if let Some(instance) = instance
            && let Some(i) = self.by_instance(instance)
            && self.members[i].id != id
        {
            return Err(ResponseError::FencedInstanceId);
        }
        self.member(id).ok_or(ResponseError::UnknownMemberId)
    }

    /// Whether a member offering `protocols` of `protocol_type` fits the group.
    fn fits(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|(name, _)| {
                (self.members.iter()).all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
    }

    /// The protocol every member supports that most members prefer (each votes for the first
    /// of its list that all support; ties go to the first member's order).
    fn choose_protocol(&self) -> Option<String> {
        let first = self.members.first()?;
        let shared: Vec<&String> = (first.protocols.iter())
            .map(|(name, _)| name)
            .filter(|name| {
                (self.members.iter()).all(|m| m.protocols.iter().any(|(n, _)| n == *name))
            })
            .collect();
        let mut votes: Vec<usize> = vec![0; shared.len()];
        for m in &self.members {
            let pick = (m.protocols.iter()).find_map(|(n, _)| shared.iter().position(|s| *s == n));
            if let Some(i) = pick {
                votes[i] += 1;
            }
        }
        let best = votes.iter().copied().max()?;
        let i = votes.iter().position(|&v| v == best)?;
        Some(shared[i].clone())
    }

    /// The current generation as a JoinGroup answer to member `id` (the leader gets the
    /// members).
    fn joined(&self, id: &str) -> Joined {
        let protocol = self.protocol.clone().unwrap_or_default();
        let leader = self.leader.clone().unwrap_or_default();
        let members = match leader == id {
            true => (self.members.iter())
                .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&protocol)))
                .collect(),
            false => Vec::new(),
        };
        Joined {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader,
            member_id: id.to_owned(),
            members,
        }
    }

    /// Starts a rebalance (or goes on with the one under way): every member must join again.
    fn prepare_rebalance(&mut self, now: Instant, timeouts: &GroupTimeouts) {
        if self.phase == Phase::CompletingRebalance {
            // Those waiting for the leader's assignment join again.
            for m in &mut self.members {
                if let Some(tx) = m.syncing.take() {
                    let _ = tx.send(Err(ResponseError::RebalanceInProgress));
                }
            }
        }
        if self.phase != Phase::PreparingRebalance {
            let timeout = (self.members.iter())
                .map(|m| m.rebalance_timeout)
                .max()
                .unwrap_or_default();
            if self.phase == Phase::Empty {
                let delay = timeouts.initial_rebalance_delay.min(timeout);
                self.delay_until = Some(now + delay);
                self.rebalance_end = Some(now + timeout);
                self.deadline = Some(now + delay);
            } else {
                self.delay_until = None;
                self.deadline = Some(now + timeout);
            }
            self.phase = Phase::PreparingRebalance;
        } else if let (Some(_), Some(end)) = (self.delay_until, self.rebalance_end) {
            // One more member of a new group: wait a delay more for the next, up to the end.
            let until = (now + timeouts.initial_rebalance_delay).min(end);
            self.delay_until = Some(until);
            self.deadline = Some(until);
        }
    }

    /// Ends the rebalance if every member has joined (and a new group's delay is over), or
    /// its time is up: members that did not join are dropped, the generation moves on, and
    /// every joined member is answered.
    fn try_complete_join(&mut self, now: Instant) {
        if self.phase != Phase::PreparingRebalance {
            return;
        }
        let all_joined =
            self.pending.is_empty() && self.members.iter().all(|m| m.joining.is_some());
        let delayed = self.delay_until.is_some_and(|d| now < d);
        let expired = self.deadline.is_some_and(|d| now >= d);
        let ready = all_joined && !delayed;
        if !ready && !expired {
            return;
        }
        self.members.retain(|m| m.joining.is_some());
        self.pending.clear();
        self.deadline = None;
        self.delay_until = None;
        self.rebalance_end = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.phase = Phase::Empty;
            self.protocol = None;
            self.protocol_type = None;
            self.leader = None;
            return;
        }
        self.protocol = self.choose_protocol();
        if (self.leader.as_ref()).is_none_or(|l| self.member(l).is_none()) {
            self.leader = Some(self.members[0].id.clone());
        }
        self.phase = Phase::CompletingRebalance;
        for i in 0..self.members.len() {
            self.members[i].assignment = Bytes::new();
            self.members[i].assigned.clear();
            let answer = self.joined(&self.members[i].id);
            if let Some(tx) = self.members[i].joining.take() {
                let _ = tx.send(answer);
            }
            self.members[i].seen = now;
        }
    }

    /// Removes member `i` (it left, or its session ran out) and rebalances the rest.
    fn remove(&mut self, i: usize, now: Instant, timeouts: &GroupTimeouts) {
        let m = self.members.remove(i);
        if let Some(tx) = m.joining {
            let _ = tx.send(Joined::error(ResponseError::UnknownMemberId, &m.id));
        }
        if let Some(tx) = m.syncing {
            let _ = tx.send(Err(ResponseError::UnknownMemberId));
        }
        if self.leader.as_deref() == Some(m.id.as_str()) {
            self.leader = None;
        }
        match self.phase {
            Phase::Stable | Phase::CompletingRebalance => self.prepare_rebalance(now, timeouts),
            Phase::PreparingRebalance | Phase::Empty => {}
        }
        if self.members.is_empty() && self.phase == Phase::PreparingRebalance {
            // Nobody left to wait for.
            self.deadline = Some(now);
            self.delay_until = None;
        }
        self.try_complete_join(now);
    }

    /// Expires members and handed-out ids whose session ran out, and ends a rebalance whose
    /// time is up. Returns when it next has something to do.
    fn tick(&mut self, now: Instant, timeouts: &GroupTimeouts) -> Option<Instant> {
        self.pending.retain(|_, expiry| *expiry > now);
        while let Some(i) = (self.members.iter())
            .position(|m| !m.waiting() && now.duration_since(m.seen) >= m.session_timeout)
        {
            self.remove(i, now, timeouts);
        }
        self.try_complete_join(now);
        let sessions = (self.members.iter())
            .filter(|m| !m.waiting())
            .map(|m| m.seen + m.session_timeout);
        let pending = self.pending.values().copied();
        sessions.chain(pending).chain(self.deadline).min()
    }
}

struct Inner {
    groups: HashMap<String, Group>,
    /// Groups of the consumer protocol (KIP-848), by name: a name is one kind or the other.
    consumer_groups: HashMap<String, ConsumerGroup>,
    /// Paced groups, by name (whether or not they have members now).
    paces: HashMap<String, Arc<Pace>>,
    stopped: bool,
    /// Makes member ids unique within this run.
    next_member: u64,
}

/// Every group's membership (their offsets are the log's).
pub(crate) struct Coordinator {
    inner: Mutex<Inner>,
    /// Wakes the expiry thread when a deadline may have come nearer.
    wake: Condvar,
    pub timeouts: GroupTimeouts,
    /// Started at, for member ids.
    epoch: u64,
}

impl Coordinator {
    pub fn new(timeouts: GroupTimeouts, rates: &[(String, RateLimit)]) -> Arc<Coordinator> {
        let now = Instant::now();
        let paces = (rates.iter())
            .map(|(group, limit)| (group.clone(), Arc::new(Pace::new(*limit, now))))
            .collect();
        let epoch = (SystemTime::now().duration_since(SystemTime::UNIX_EPOCH))
            .map_or(0, |d| d.as_micros() as u64);
        Arc::new(Coordinator {
            inner: Mutex::new(Inner {
                groups: HashMap::new(),
                consumer_groups: HashMap::new(),
                paces,
                stopped: false,
                next_member: 0,
            }),
            wake: Condvar::new(),
            timeouts,
            epoch,
        })
    }

    /// Starts the thread that expires sessions and ends rebalances.
    pub fn start(self: &Arc<Coordinator>) -> std::io::Result<JoinHandle<()>> {
        let c = Arc::clone(self);
        std::thread::Builder::new()
            .name("floodgate-groups".into())
            .spawn(move || c.expiry_loop())
    }

    fn expiry_loop(&self) {
        let mut inner = self.inner.lock().expect("groups lock");
        while !inner.stopped {
            let now = Instant::now();
            let classic = (inner.groups.values_mut())
                .filter_map(|g| g.tick(now, &self.timeouts))
                .min();
            let session = self.timeouts.consumer_session;
            let consumer = (inner.consumer_groups.values_mut())
                .filter_map(|g| g.tick(now, session))
                .min();
            inner.consumer_groups.retain(|_, g| !g.members.is_empty());
            let next = classic.into_iter().chain(consumer).min();
            inner = match next {
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    let wait = wait.max(Duration::from_millis(1));
                    self.wake.wait_timeout(inner, wait).expect("groups lock").0
                }
                None => self.wake.wait(inner).expect("groups lock"),
            };
        }
    }

    /// Stops the expiry thread; requests still waiting are told to find the coordinator again.
    pub fn stop(&self) {
        let mut inner = self.inner.lock().expect("groups lock");
        inner.stopped = true;
        for g in inner.groups.values_mut() {
            for m in &mut g.members {
                if let Some(tx) = m.joining.take() {
                    let _ = tx.send(Joined::error(ResponseError::NotCoordinator, &m.id));
                }
                if let Some(tx) = m.syncing.take() {
                    let _ = tx.send(Err(ResponseError::NotCoordinator));
                }
            }
        }
        self.wake.notify_all();
    }

    pub fn join(&self, ask: JoinAsk) -> Reply<Joined> {
        let now = Instant::now();
        let t = &self.timeouts;
        if ask.session_timeout < t.min_session || ask.session_timeout > t.max_session {
            return Reply::Now(Joined::error(
                ResponseError::InvalidSessionTimeout,
                &ask.member_id,
            ));
        }
        let mut inner = self.inner.lock().expect("groups lock");
        if inner.stopped {
            return Reply::Now(Joined::error(ResponseError::NotCoordinator, &ask.member_id));
        }
        if inner.consumer_groups.contains_key(&ask.group) {
            // Its members use the consumer protocol; the two do not mix in one group.
            let error = ResponseError::InconsistentGroupProtocol;
            return Reply::Now(Joined::error(error, &ask.member_id));
        }
        let fresh_id = format!("{}-{:x}-{:x}", ask.client_id, self.epoch, inner.next_member);
        inner.next_member += 1;
        let group = inner
            .groups
            .entry(ask.group.clone())
            .or_insert_with(Group::new);
        let reply = self.join_group(group, fresh_id, &ask, now);
        let unused = group.generation == 0 && group.members.is_empty() && group.pending.is_empty();
        if unused {
            // A first join that failed leaves nothing behind.
            inner.groups.remove(&ask.group);
        }
        reply
    }

    fn join_group(
        &self,
        group: &mut Group,
        fresh_id: String,
        ask: &JoinAsk,
        now: Instant,
    ) -> Reply<Joined> {
        if !group.fits(&ask.protocol_type, &ask.protocols) {
            let error = ResponseError::InconsistentGroupProtocol;
            return Reply::Now(Joined::error(error, &ask.member_id));
        }
        let instance = ask.instance_id.as_deref();
        match (ask.member_id.is_empty(), instance) {
            (true, Some(instance)) => match group.by_instance(instance) {
                Some(i) => self.rejoin_static(group, i, fresh_id, ask, now),
                None => self.add(group, fresh_id, ask, now),
            },
            (true, None) if ask.require_known_member => {
                let expiry = now + ask.session_timeout;
                group.pending.insert(fresh_id.clone(), expiry);
                self.wake.notify_all();
                let error = ResponseError::MemberIdRequired;
                Reply::Now(Joined::error(error, &fresh_id))
            }
            (true, None) => self.add(group, fresh_id, ask, now),
            (false, _) if group.pending.remove(&ask.member_id).is_some() => {
                self.add(group, ask.member_id.clone(), ask, now)
            }
            (false, _) => match group.known(&ask.member_id, instance) {
                Err(e) => Reply::Now(Joined::error(e, &ask.member_id)),
                Ok(i) => self.rejoin(group, i, ask, now),
            },
        }
    }

    /// A new member joins and a rebalance starts (or goes on).
    fn add(&self, group: &mut Group, id: String, ask: &JoinAsk, now: Instant) -> Reply<Joined> {
        let (tx, rx) = oneshot::channel();
        group.members.push(Member {
            id,
            instance_id: ask.instance_id.clone(),
            client_id: ask.client_id.clone(),
            client_host: ask.client_host.clone(),
            session_timeout: ask.session_timeout,
            rebalance_timeout: ask.rebalance_timeout,
            protocols: ask.protocols.clone(),
            assignment: Bytes::new(),
            assigned: Vec::new(),
            seen: now,
            joining: Some(tx),
            syncing: None,
        });
        if group.protocol_type.is_none() {
            group.protocol_type = Some(ask.protocol_type.clone());
        }
        group.prepare_rebalance(now, &self.timeouts);
        group.try_complete_join(now);
        self.wake.notify_all();
        Reply::Later(rx)
    }

    /// A known member joins again: in a rebalance it waits for the others; in a settled group
    /// it gets the current generation back unless it leads or its protocols changed, which
    /// starts a rebalance.
    fn rejoin(&self, group: &mut Group, i: usize, ask: &JoinAsk, now: Instant) -> Reply<Joined> {
        let m = &mut group.members[i];
        let same = m.protocols == ask.protocols;
        m.protocols = ask.protocols.clone();
        m.session_timeout = ask.session_timeout;
        m.rebalance_timeout = ask.rebalance_timeout;
        m.seen = now;
        let leads = group.leader.as_deref() == Some(ask.member_id.as_str());
        let settled = matches!(group.phase, Phase::Stable | Phase::CompletingRebalance);
        if settled && same && !(leads && group.phase == Phase::Stable) {
            return Reply::Now(group.joined(&ask.member_id));
        }
        let (tx, rx) = oneshot::channel();
        if let Some(old) = group.members[i].joining.replace(tx) {
            // Its earlier JoinGroup is superseded by this one.
            let _ = old.send(Joined::error(
                ResponseError::RebalanceInProgress,
                &ask.member_id,
            ));
        }
        group.prepare_rebalance(now, &self.timeouts);
        group.try_complete_join(now);
        self.wake.notify_all();
        Reply::Later(rx)
    }

    /// A static member restarted (a new member id for its instance id): it takes the old
    /// member's place; with the same protocols in a settled group, without a rebalance.
    fn rejoin_static(
        &self,
        group: &mut Group,
        i: usize,
        id: String,
        ask: &JoinAsk,
        now: Instant,
    ) -> Reply<Joined> {
        let old = std::mem::replace(&mut group.members[i].id, id.clone());
        let m = &mut group.members[i];
        if let Some(tx) = m.joining.take() {
            let _ = tx.send(Joined::error(ResponseError::FencedInstanceId, &old));
        }
        if let Some(tx) = m.syncing.take() {
            let _ = tx.send(Err(ResponseError::FencedInstanceId));
        }
        m.client_id = ask.client_id.clone();
        m.client_host = ask.client_host.clone();
        if group.leader.as_deref() == Some(old.as_str()) {
            group.leader = Some(id.clone());
        }
        let same = group.members[i].protocols == ask.protocols;
        if group.phase == Phase::Stable && same {
            let m = &mut group.members[i];
            m.session_timeout = ask.session_timeout;
            m.rebalance_timeout = ask.rebalance_timeout;
            m.seen = now;
            // Its assignment is the one it had: no members list even for the leader, whose
            // SyncGroup in a stable group gets its own assignment back.
            let mut joined = group.joined(&id);
            joined.members.clear();
            return Reply::Now(joined);
        }
        let mut ask = ask.clone();
        ask.member_id = id;
        self.rejoin(group, i, &ask, now)
    }

    pub fn sync(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        protocol: (Option<&str>, Option<&str>),
        assignments: Vec<(String, Bytes)>,
    ) -> Reply<Synced> {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("groups lock");
        let Some(g) = inner.groups.get_mut(group) else {
            return Reply::Now(Err(ResponseError::UnknownMemberId));
        };
        let i = match g.known(member_id, instance_id) {
            Ok(i) => i,
            Err(e) => return Reply::Now(Err(e)),
        };
        g.members[i].seen = now;
        if generation != g.generation {
            return Reply::Now(Err(ResponseError::IllegalGeneration));
        }
        let (protocol_type, protocol_name) = protocol;
        if protocol_type.is_some_and(|t| g.protocol_type.as_deref() != Some(t))
            || protocol_name.is_some_and(|p| g.protocol.as_deref() != Some(p))
        {
            return Reply::Now(Err(ResponseError::InconsistentGroupProtocol));
        }
        let answer = |g: &Group, i: usize| -> Synced {
            let m = &g.members[i];
            Ok((
                g.protocol_type.clone(),
                g.protocol.clone(),
                m.assignment.clone(),
            ))
        };
        match g.phase {
            Phase::Empty => Reply::Now(Err(ResponseError::UnknownMemberId)),
            Phase::PreparingRebalance => Reply::Now(Err(ResponseError::RebalanceInProgress)),
            Phase::Stable => Reply::Now(answer(g, i)),
            Phase::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                g.members[i].syncing = Some(tx);
                if g.leader.as_deref() == Some(member_id) {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    let consumers = g.protocol_type.as_deref() == Some("consumer");
                    for m in &mut g.members {
                        m.assignment = given.remove(&m.id).unwrap_or_default();
                        m.assigned = match consumers {
                            true => consumer_assignment(&m.assignment).unwrap_or_default(),
                            false => Vec::new(),
                        };
                        m.assigned.sort();
                    }
                    g.phase = Phase::Stable;
                    for j in 0..g.members.len() {
                        let a = answer(g, j);
                        let m = &mut g.members[j];
                        m.seen = now;
                        if let Some(tx) = m.syncing.take() {
                            let _ = tx.send(a);
                        }
                    }
                }
                self.wake.notify_all();
                Reply::Later(rx)
            }
        }
    }

    pub fn heartbeat(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Option<ResponseError> {
        let mut inner = self.inner.lock().expect("groups lock");
        let Some(g) = inner.groups.get_mut(group) else {
            return Some(ResponseError::UnknownMemberId);
        };
        let i = match g.known(member_id, instance_id) {
            Ok(i) => i,
            Err(e) => return Some(e),
        };
        g.members[i].seen = Instant::now();
        match g.phase {
            Phase::Empty => Some(ResponseError::UnknownMemberId),
            _ if generation != g.generation => Some(ResponseError::IllegalGeneration),
            Phase::PreparingRebalance => Some(ResponseError::RebalanceInProgress),
            Phase::CompletingRebalance | Phase::Stable => None,
        }
    }

    /// Members leave (by member id, or a static member by its instance id alone); each gets
    /// its own outcome.
    pub fn leave(
        &self,
        group: &str,
        members: &[(String, Option<String>)],
    ) -> Vec<Option<ResponseError>> {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("groups lock");
        let Some(g) = inner.groups.get_mut(group) else {
            return vec![Some(ResponseError::UnknownMemberId); members.len()];
        };
        let outcomes = (members.iter())
            .map(|(id, instance)| {
                let i = match (id.is_empty(), instance) {
                    (true, Some(instance)) => g.by_instance(instance),
                    _ => match g.known(id, instance.as_deref()) {
                        Ok(i) => Some(i),
                        Err(e) => return Some(e),
                    },
                };
                match i {
                    Some(i) => {
                        g.remove(i, now, &self.timeouts);
                        None
                    }
                    None => Some(ResponseError::UnknownMemberId),
                }
            })
            .collect();
        self.wake.notify_all();
        outcomes
    }

    /// Whether a commit of `generation` by `member_id` may be stored: from a member of the
    /// current generation (during a rebalance too, so members commit before they give
    /// partitions up), or with generation -1 and no member id to a group without members (a
    /// consumer that assigns itself partitions).
    ///
    /// In a consumer-protocol group, `generation` is the member's epoch (OffsetCommit v9 and
    /// later; earlier versions cannot name one and are refused, as Kafka refuses them).
    pub fn may_commit(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        version: i16,
    ) -> Result<(), ResponseError> {
        let mut inner = self.inner.lock().expect("groups lock");
        let simple = generation < 0 && member_id.is_empty() && instance_id.is_none();
        if let Some(g) = inner.consumer_groups.get(group) {
            return match (simple, version) {
                (true, _) => Err(ResponseError::UnknownMemberId),
                (false, ..=8) => Err(ResponseError::UnsupportedVersion),
                (false, _) => g.check_member(member_id, generation),
            };
        }
        let g = inner.groups.get_mut(group);
        let Some(g) = g else {
            return match simple {
                true => Ok(()),
                false => Err(ResponseError::UnknownMemberId),
            };
        };
        if simple {
            return match g.members.is_empty() {
                true => Ok(()),
                false => Err(ResponseError::UnknownMemberId),
            };
        }
        let i = g.known(member_id, instance_id)?;
        g.members[i].seen = Instant::now();
        if generation != g.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        match g.phase {
            Phase::CompletingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// A ConsumerGroupHeartbeat to group `group`; `topics` are the log's topics now. A group
    /// is made by its first member's epoch-0 heartbeat, and forgotten (its offsets stay in the
    /// log) when its last member goes.
    pub fn consumer_heartbeat(
        &self,
        group: &str,
        beat: Beat,
        topics: &[TopicMeta],
    ) -> Result<BeatAnswer, ResponseError> {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("groups lock");
        if inner.stopped {
            return Err(ResponseError::NotCoordinator);
        }
        if inner
            .groups
            .get(group)
            .is_some_and(|g| !g.members.is_empty())
        {
            // A classic group with members: Kafka's answer without a migration.
            return Err(ResponseError::GroupIdNotFound);
        }
        let joining = beat.epoch == 0;
        let g = match inner.consumer_groups.get_mut(group) {
            Some(g) => g,
            None if joining => {
                inner.groups.remove(group);
                (inner.consumer_groups)
                    .entry(group.to_owned())
                    .or_insert_with(ConsumerGroup::new)
            }
            None => return Err(ResponseError::UnknownMemberId),
        };
        let (epoch, revoking) = (g.epoch, g.revocations());
        let answer = g.heartbeat(beat, topics, now);
        // A heartbeat only moves its member's session later: the expiry thread needs waking
        // for a new epoch (a member came or went) or a new revocation deadline, not for every
        // heartbeat of every member.
        let sooner = g.epoch != epoch || g.revocations() > revoking;
        if g.members.is_empty() {
            inner.consumer_groups.remove(group);
        }
        if sooner {
            self.wake.notify_all();
        }
        answer
    }

    /// Checks an OffsetFetch that names a consumer-protocol member (v9 and later): `Ok` for
    /// other groups, and for no member.
    pub fn may_fetch_offsets(
        &self,
        group: &str,
        member: Option<(&str, i32)>,
    ) -> Result<(), ResponseError> {
        let inner = self.inner.lock().expect("groups lock");
        match (inner.consumer_groups.get(group), member) {
            (Some(g), Some((id, epoch))) => g.check_member(id, epoch),
            _ => Ok(()),
        }
    }

    /// How many members group `group` has here, of either protocol.
    pub fn member_count(&self, group: &str) -> usize {
        let inner = self.inner.lock().expect("groups lock");
        match (inner.groups.get(group), inner.consumer_groups.get(group)) {
            (_, Some(g)) => g.members.len(),
            (Some(g), None) => g.members.len(),
            (None, None) => 0,
        }
    }

    /// A consumer-protocol group as ConsumerGroupDescribe shows it.
    pub fn describe_consumer_group(&self, group: &str) -> Option<ConsumerGroup> {
        let inner = self.inner.lock().expect("groups lock");
        inner.consumer_groups.get(group).cloned()
    }

    /// A group as DescribeGroups shows it, if it has had members since the server started.
    pub fn describe(&self, group: &str) -> Option<GroupView> {
        let inner = self.inner.lock().expect("groups lock");
        let g = inner.groups.get(group)?;
        let protocol = g.protocol.clone().unwrap_or_default();
        let members = (g.members.iter())
            .map(|m| MemberView {
                id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: m.metadata(&protocol),
                assignment: m.assignment.clone(),
            })
            .collect();
        Some(GroupView {
            phase: g.phase,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol,
            members,
        })
    }

    /// Every group with members or a rebalance: its name, protocol type, state, and type
    /// (`classic`, or `consumer` for the consumer protocol's).
    pub fn list(&self) -> Vec<(String, String, &'static str, &'static str)> {
        let (classic, consumer): (Vec<String>, Vec<(String, &'static str)>) = {
            let inner = self.inner.lock().expect("groups lock");
            let consumer = (inner.consumer_groups.iter())
                .map(|(n, g)| (n.clone(), crate::consumer_groups::state_name(g)))
                .collect();
            (inner.groups.keys().cloned().collect(), consumer)
        };
        let classic = (classic.into_iter()).filter_map(|n| {
            let v = self.describe(&n)?;
            Some((n, v.protocol_type, v.phase.name(), "classic"))
        });
        let consumer =
            (consumer.into_iter()).map(|(n, state)| (n, "consumer".to_owned(), state, "consumer"));
        classic.chain(consumer).collect()
    }

    /// Forgets a group without members, for DeleteGroups: `Err(NON_EMPTY_GROUP)` if it has
    /// some.
    pub fn forget(&self, group: &str) -> Result<(), ResponseError> {
        let mut inner = self.inner.lock().expect("groups lock");
        if inner.consumer_groups.contains_key(group) {
            return Err(ResponseError::NonEmptyGroup);
        }
        match inner.groups.get(group) {
            Some(g) if !g.members.is_empty() || g.phase != Phase::Empty => {
                Err(ResponseError::NonEmptyGroup)
            }
            _ => {
                inner.groups.remove(group);
                Ok(())
            }
        }
    }

    /// Whether any group is paced.
    pub fn any_paced(&self) -> bool {
        !self.inner.lock().expect("groups lock").paces.is_empty()
    }

    /// Group `group`'s rate, if it is paced.
    pub fn rate(&self, group: &str) -> Option<RateLimit> {
        let inner = self.inner.lock().expect("groups lock");
        let pace = inner.paces.get(group)?;
        Some(pace.limiter.lock().expect("pace lock").limit())
    }

    /// Paces group `group` at `limit` from now on (`None`: no longer paced).
    pub fn set_rate(&self, group: &str, limit: Option<RateLimit>) {
        let mut inner = self.inner.lock().expect("groups lock");
        let now = Instant::now();
        match (limit, inner.paces.get(group)) {
            (None, _) => {
                inner.paces.remove(group);
            }
            (Some(limit), Some(pace)) => {
                pace.limiter
                    .lock()
                    .expect("pace lock")
                    .set_limit(limit, now);
            }
            (Some(limit), None) => {
                inner
                    .paces
                    .insert(group.to_owned(), Arc::new(Pace::new(limit, now)));
            }
        }
    }

    /// The pace of the group whose member sent a fetch of `partitions` (topic, partition),
    /// if a paced group has one: a member of the same client id and host that is assigned
    /// every partition the fetch names. A fetch carries no group or member id; this is how a
    /// member's fetch connection is told from its coordinator connection.
    pub fn pace_of(
        &self,
        client_id: &str,
        host: &str,
        partitions: &[(&str, i32)],
    ) -> Option<(String, Arc<Pace>)> {
        if partitions.is_empty() {
            return None;
        }
        let inner = self.inner.lock().expect("groups lock");
        for (name, pace) in &inner.paces {
            let Some(g) = inner.groups.get(name) else {
                continue;
            };
            let fetched_by = |m: &Member| {
                m.client_id == client_id
                    && m.client_host == host
                    && (partitions.iter()).all(|&(t, p)| {
                        (m.assigned)
                            .binary_search_by(|(mt, mp)| (mt.as_str(), *mp).cmp(&(t, p)))
                            .is_ok()
                    })
            };
            if g.members.iter().any(fetched_by) {
                return Some((name.clone(), Arc::clone(pace)));
            }
        }
        for (name, pace) in &inner.paces {
            let Some(g) = inner.consumer_groups.get(name) else {
                continue;
            };
            let fetched_by = |m: &crate::consumer_groups::Member| {
                m.client_id == client_id
                    && m.client_host == host
                    && (partitions.iter()).all(|&(t, p)| g.owns(m, t, p))
            };
            if g.members.iter().any(fetched_by) {
                return Some((name.clone(), Arc::clone(pace)));
            }
        }
        None
    }
}
