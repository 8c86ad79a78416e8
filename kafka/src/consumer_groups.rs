//! Groups of Kafka's consumer protocol (KIP-848, `group.protocol=consumer`): the coordinator,
//! not a member, computes the assignment, and every member converges on it through its own
//! heartbeats (ConsumerGroupHeartbeat). Nothing waits for the whole group: a member that
//! leaves frees its partitions at once, and the others take them at their next heartbeat, whose
//! interval the server sets. So a group rebalances within one heartbeat interval of a member
//! leaving, where the classic protocol needs one of the client's.
//!
//! - The group's epoch moves on whenever its members, their subscriptions or the subscribed
//!   topics' partitions change; the target assignment (the assignor's, sticky) is computed
//!   for that epoch.
//! - A member moves towards its target: it first gives up what the target takes from it (it
//!   keeps its epoch until a heartbeat shows it owns none of them any more), then takes its new
//!   epoch and every new partition that no other member still owns; the rest it takes as they
//!   are released, at its following heartbeats.
//! - A heartbeat from an epoch the member no longer has is fenced (FENCED_MEMBER_EPOCH), except
//!   from the previous epoch when the member owns no more than it is assigned (a lost answer).
//! - Static members (an instance id) leave with epoch -2 and keep their assignment until their
//!   session runs out; a member joining with the same instance id takes it over.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use regex::Regex;
use uuid::Uuid;

use crate::assignors::{Assignor, range, uniform};

/// A partition as the protocol names it: its topic's id and its index.
pub(crate) type Tp = (Uuid, i32);

/// A topic as the assignment sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
}

/// Where a member is on its way to its target assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemberState {
    /// It has its target.
    Stable,
    /// It must give up partitions before it moves on.
    UnrevokedPartitions,
    /// It has its epoch, but some of its partitions are still owned by others.
    UnreleasedPartitions,
}

/// A ConsumerGroupHeartbeat, as the group needs it. `None` fields are unchanged since the
/// member's last heartbeat.
#[derive(Debug, Clone, Default)]
pub(crate) struct Beat {
    pub member_id: String,
    pub epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout: Option<Duration>,
    pub subscribed: Option<Vec<String>>,
    /// The topics it subscribes to by pattern (matching whole names): `Some(None)` for none.
    pub regex: Option<Option<Regex>>,
    pub assignor: Option<Assignor>,
    /// The partitions the member owns now.
    pub owned: Option<Vec<Tp>>,
}

/// A heartbeat's answer: the member's epoch, and its assignment when it changed (or the
/// member sent a full heartbeat).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BeatAnswer {
    pub member_id: String,
    pub epoch: i32,
    pub assignment: Option<Vec<(Uuid, Vec<i32>)>>,
}

/// Epoch -1: the member leaves; -2: a static member leaves for now.
pub(crate) const LEAVE_EPOCH: i32 = -1;
pub(crate) const STATIC_LEAVE_EPOCH: i32 = -2;

#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout: Duration,
    /// The topics it names.
    pub names: BTreeSet<String>,
    /// The topics it subscribes to by pattern.
    pub regex: Option<Regex>,
    /// What it subscribes to: the topics it names and those of the log its pattern matches.
    pub subscribed: BTreeSet<String>,
    pub assignor: Option<Assignor>,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub state: MemberState,
    /// What it may own now.
    pub assigned: BTreeSet<Tp>,
    /// What it must give up.
    pub revoking: BTreeSet<Tp>,
    /// When it must have given them up, or be removed.
    revoke_by: Option<Instant>,
    /// A static member that left with epoch -2: it holds its assignment until its session
    /// runs out.
    pub away: bool,
    seen: Instant,
}

/// A consumer-protocol group.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerGroup {
    pub epoch: i32,
    pub target_epoch: i32,
    target: HashMap<String, BTreeSet<Tp>>,
    /// In the order they joined.
    pub members: Vec<Member>,
    /// The subscribed topics, as the target was last computed from (in the log's order).
    pub topics: Vec<TopicMeta>,
    /// Every topic some member subscribes to.
    subscribed: BTreeSet<String>,
    /// The log's topic names when patterns were last matched against them.
    known_topics: Vec<String>,
}

/// A group's state as ListGroups and ConsumerGroupDescribe name it.
pub(crate) fn state_name(g: &ConsumerGroup) -> &'static str {
    if g.members.is_empty() {
        "Empty"
    } else if g.target_epoch != g.epoch {
        "Assigning"
    } else if (g.members.iter())
        .any(|m| m.epoch != g.target_epoch || m.state != MemberState::Stable)
    {
        "Reconciling"
    } else {
        "Stable"
    }
}

/// `set` grouped by topic, as the protocol sends assignments.
pub(crate) fn by_topic(set: &BTreeSet<Tp>) -> Vec<(Uuid, Vec<i32>)> {
    let mut out: Vec<(Uuid, Vec<i32>)> = Vec::new();
    for &(topic, p) in set {
        match out.last_mut() {
            Some((t, ps)) if *t == topic => ps.push(p),
            _ => out.push((topic, vec![p])),
        }
    }
    out
}

impl ConsumerGroup {
    pub fn new() -> ConsumerGroup {
        ConsumerGroup {
            epoch: 0,
            target_epoch: 0,
            target: HashMap::new(),
            members: Vec::new(),
            topics: Vec::new(),
            subscribed: BTreeSet::new(),
            known_topics: Vec::new(),
        }
    }

    /// How many members have partitions to give up by a deadline.
    pub fn revocations(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.revoke_by.is_some())
            .count()
    }

    pub fn member(&self, id: &str) -> Option<usize> {
        self.members.iter().position(|m| m.id == id)
    }

    /// Takes the subscribed topics' partitions from `all` (the log's topics now); whether
    /// they changed. A heartbeat costs a walk of the log's topics, not a copy of them.
    fn refresh_topics(&mut self, all: &[TopicMeta]) -> bool {
        let mut now = all.iter().filter(|t| self.subscribed.contains(&t.name));
        let mut before = self.topics.iter();
        let same = loop {
            match (now.next(), before.next()) {
                (None, None) => break true,
                (a, b) if a == b => continue,
                _ => break false,
            }
        };
        if !same {
            self.topics = (all.iter())
                .filter(|t| self.subscribed.contains(&t.name))
                .cloned()
                .collect();
        }
        !same
    }

    /// Every topic some member subscribes to, after a subscription changed or a member left.
    fn refresh_subscribed(&mut self) {
        self.subscribed = (self.members.iter())
            .flat_map(|m| m.subscribed.iter().cloned())
            .collect();
        let subscribed = &self.subscribed;
        self.topics.retain(|t| subscribed.contains(&t.name));
    }

    /// The assignor most members ask for (Kafka's rule); uniform if none does.
    pub fn assignor(&self) -> Assignor {
        let asked = |a: Assignor| {
            self.members
                .iter()
                .filter(|m| m.assignor == Some(a))
                .count()
        };
        match asked(Assignor::Range) > asked(Assignor::Uniform) {
            true => Assignor::Range,
            false => Assignor::Uniform,
        }
    }

    /// A new epoch, and its target assignment.
    fn bump(&mut self) {
        self.epoch += 1;
        let subscribers: Vec<(&str, &BTreeSet<String>)> = (self.members.iter())
            .map(|m| (m.id.as_str(), &m.subscribed))
            .collect();
        self.target = match self.assignor() {
            Assignor::Uniform => uniform(&subscribers, &self.topics, &self.target),
            Assignor::Range => range(&subscribers, &self.topics),
        };
        self.target_epoch = self.epoch;
    }

    /// What members subscribe to, from the topics they name and the log's topics their
    /// patterns match: member `i`'s (its heartbeat may have changed them), and everyone's when
    /// the log's topics changed. Returns whether a subscription changed.
    fn resolve_subscriptions(&mut self, i: usize, all: &[TopicMeta]) -> bool {
        let names_changed = self.known_topics.len() != all.len()
            || (self.known_topics.iter())
                .zip(all)
                .any(|(known, t)| *known != t.name);
        if names_changed {
            self.known_topics = all.iter().map(|t| t.name.clone()).collect();
        }
        let mut changed = false;
        for (j, m) in self.members.iter_mut().enumerate() {
            if j != i && !(names_changed && m.regex.is_some()) {
                continue;
            }
            let mut subscribed = m.names.clone();
            if let Some(re) = &m.regex {
                let matching = all.iter().filter(|t| re.is_match(&t.name));
                subscribed.extend(matching.map(|t| t.name.clone()));
            }
            if subscribed != m.subscribed {
                m.subscribed = subscribed;
                changed = true;
            }
        }
        changed
    }

    /// Partitions owned by members other than `i` (assigned to them or not yet given up).
    fn owned_by_others(&self, i: usize) -> BTreeSet<Tp> {
        let mut out = BTreeSet::new();
        for (j, m) in self.members.iter().enumerate() {
            if j != i {
                out.extend(m.assigned.iter().copied());
                out.extend(m.revoking.iter().copied());
            }
        }
        out
    }

    /// Moves member `i` towards its target, given what it says it owns.
    fn reconcile(&mut self, i: usize, owned: Option<&[Tp]>, now: Instant) {
        let m = &self.members[i];
        if m.state == MemberState::UnrevokedPartitions {
            let revoked = owned.is_some_and(|o| o.iter().all(|tp| !m.revoking.contains(tp)));
            if !revoked {
                return;
            }
            let m = &mut self.members[i];
            m.revoking.clear();
            m.revoke_by = None;
            m.state = MemberState::Stable;
        }
        let m = &self.members[i];
        if m.epoch == self.target_epoch && m.state == MemberState::Stable {
            return;
        }
        let target = self.target.get(&m.id).cloned().unwrap_or_default();
        let revoke: BTreeSet<Tp> = m.assigned.difference(&target).copied().collect();
        if !revoke.is_empty() {
            let m = &mut self.members[i];
            m.assigned.retain(|tp| target.contains(tp));
            m.revoking = revoke;
            m.revoke_by = Some(now + m.rebalance_timeout);
            m.state = MemberState::UnrevokedPartitions;
            return;
        }
        let others = self.owned_by_others(i);
        let target_epoch = self.target_epoch;
        let m = &mut self.members[i];
        let mut unreleased = false;
        for tp in target.difference(&m.assigned.clone()) {
            match others.contains(tp) {
                true => unreleased = true,
                false => {
                    m.assigned.insert(*tp);
                }
            }
        }
        if m.epoch != target_epoch {
            m.previous_epoch = m.epoch;
            m.epoch = target_epoch;
        }
        m.state = match unreleased {
            true => MemberState::UnreleasedPartitions,
            false => MemberState::Stable,
        };
    }

    /// Removes member `i` (it left, was fenced, or its session ran out): its partitions are
    /// free at once, and the group moves to a new epoch.
    pub fn remove(&mut self, i: usize) {
        let m = self.members.remove(i);
        self.target.remove(&m.id);
        self.refresh_subscribed();
        self.bump();
    }

    /// A ConsumerGroupHeartbeat from a member. `all` is every topic of the log now.
    pub fn heartbeat(
        &mut self,
        beat: Beat,
        all: &[TopicMeta],
        now: Instant,
    ) -> Result<BeatAnswer, ResponseError> {
        if beat.epoch == LEAVE_EPOCH || beat.epoch == STATIC_LEAVE_EPOCH {
            return self.leave(&beat);
        }
        let before = self
            .member(&beat.member_id)
            .map(|i| self.members[i].assigned.clone());
        let (i, fresh) = match beat.epoch {
            0 => self.join(&beat, now)?,
            _ => (self.check_epoch(&beat)?, false),
        };
        let m = &mut self.members[i];
        m.seen = now;
        m.client_id = beat.client_id.clone();
        m.client_host = beat.client_host.clone();
        if let Some(t) = beat.rebalance_timeout {
            m.rebalance_timeout = t;
        }
        if beat.rack_id.is_some() {
            m.rack_id = beat.rack_id.clone();
        }
        let mut changed = fresh;
        if let Some(names) = &beat.subscribed {
            m.names = names.iter().cloned().collect();
        }
        if let Some(regex) = &beat.regex {
            m.regex = regex.clone();
        }
        if let Some(a) = beat.assignor {
            changed |= m.assignor != Some(a);
            m.assignor = Some(a);
        }
        if self.resolve_subscriptions(i, all) {
            changed = true;
            self.refresh_subscribed();
        }
        if self.refresh_topics(all) || changed {
            self.bump();
        }
        self.reconcile(i, beat.owned.as_deref(), now);
        let m = &self.members[i];
        let full = beat.owned.is_some() || beat.epoch == 0;
        let assignment =
            (full || before.as_ref() != Some(&m.assigned)).then(|| by_topic(&m.assigned));
        Ok(BeatAnswer {
            member_id: m.id.clone(),
            epoch: m.epoch,
            assignment,
        })
    }

    /// A member's epoch-0 heartbeat: a new member (`true`), one joining again, or a static
    /// member taking over its instance's place.
    fn join(&mut self, beat: &Beat, now: Instant) -> Result<(usize, bool), ResponseError> {
        if let Some(instance) = &beat.instance_id
            && let Some(i) = (self.members.iter())
                .position(|m| m.instance_id.as_deref() == Some(instance.as_str()))
            && self.members[i].id != beat.member_id
        {
            if !self.members[i].away {
                return Err(ResponseError::UnreleasedInstanceId);
            }
            // Its place, its assignment and its epoch, under the new member id.
            let old = std::mem::replace(&mut self.members[i].id, beat.member_id.clone());
            if let Some(t) = self.target.remove(&old) {
                self.target.insert(beat.member_id.clone(), t);
            }
            self.members[i].away = false;
            return Ok((i, false));
        }
        if let Some(i) = self.member(&beat.member_id) {
            // Joining again (after it was fenced, or lost its partitions): it owns nothing.
            let m = &mut self.members[i];
            m.assigned.clear();
            m.revoking.clear();
            m.revoke_by = None;
            m.previous_epoch = m.epoch;
            m.epoch = 0;
            m.state = MemberState::Stable;
            m.away = false;
            return Ok((i, false));
        }
        self.members.push(Member {
            id: beat.member_id.clone(),
            instance_id: beat.instance_id.clone(),
            rack_id: beat.rack_id.clone(),
            client_id: beat.client_id.clone(),
            client_host: beat.client_host.clone(),
            rebalance_timeout: beat.rebalance_timeout.unwrap_or(Duration::from_secs(300)),
            names: BTreeSet::new(),
            regex: None,
            subscribed: BTreeSet::new(),
            assignor: None,
            epoch: 0,
            previous_epoch: -1,
            state: MemberState::Stable,
            assigned: BTreeSet::new(),
            revoking: BTreeSet::new(),
            revoke_by: None,
            away: false,
            seen: now,
        });
        Ok((self.members.len() - 1, true))
    }

    /// The member a heartbeat of a positive epoch comes from, if that epoch is its own (or its
    /// previous one, resent after a lost answer).
    fn check_epoch(&self, beat: &Beat) -> Result<usize, ResponseError> {
        let i = self
            .member(&beat.member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        let m = &self.members[i];
        if m.away || beat.epoch > m.epoch {
            return Err(ResponseError::FencedMemberEpoch);
        }
        if beat.epoch < m.epoch {
            let resent = beat.epoch == m.previous_epoch
                && (beat.owned.as_ref())
                    .is_some_and(|o| o.iter().all(|tp| m.assigned.contains(tp)));
            if !resent {
                return Err(ResponseError::FencedMemberEpoch);
            }
        }
        Ok(i)
    }

    fn leave(&mut self, beat: &Beat) -> Result<BeatAnswer, ResponseError> {
        let i = match beat.epoch == STATIC_LEAVE_EPOCH {
            true => {
                let instance = beat.instance_id.as_deref();
                (self.members.iter()).position(|m| {
                    m.id == beat.member_id
                        && instance.is_some()
                        && m.instance_id.as_deref() == instance
                })
            }
            false => self.member(&beat.member_id),
        };
        let i = i.ok_or(ResponseError::UnknownMemberId)?;
        match beat.epoch {
            STATIC_LEAVE_EPOCH => self.members[i].away = true,
            _ => self.remove(i),
        }
        Ok(BeatAnswer {
            member_id: beat.member_id.clone(),
            epoch: beat.epoch,
            assignment: None,
        })
    }

    /// Removes members whose session ran out and members that did not give up partitions
    /// within their rebalance timeout. Returns when it next has something to do.
    pub fn tick(&mut self, now: Instant, session: Duration) -> Option<Instant> {
        while let Some(i) = (self.members.iter()).position(|m| {
            now.duration_since(m.seen) >= session || m.revoke_by.is_some_and(|by| now >= by)
        }) {
            self.remove(i);
        }
        let sessions = self.members.iter().map(|m| m.seen + session);
        let revokes = self.members.iter().filter_map(|m| m.revoke_by);
        sessions.chain(revokes).min()
    }

    /// Whether a commit or offset fetch by `member_id` at `epoch` may go ahead: from a
    /// member at its epoch (or its previous one: a commit sent before it took its new epoch).
    pub fn check_member(&self, member_id: &str, epoch: i32) -> Result<(), ResponseError> {
        let i = self
            .member(member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        let m = &self.members[i];
        match epoch == m.epoch || epoch == m.previous_epoch && epoch > 0 {
            true => Ok(()),
            false => Err(ResponseError::StaleMemberEpoch),
        }
    }

    /// Whether member `m` owns partition `partition` of the topic named `topic` (for pacing
    /// its fetches: a lookup, nothing copied, on the fetch path).
    pub fn owns(&self, m: &Member, topic: &str, partition: i32) -> bool {
        (self.topics.iter())
            .find(|t| t.name == topic)
            .is_some_and(|t| m.assigned.contains(&(t.id, partition)))
    }

    /// Member `id`'s target assignment.
    pub fn target_of(&self, id: &str) -> BTreeSet<Tp> {
        self.target.get(id).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: Duration = Duration::from_secs(45);

    fn topic(name: &str, partitions: i32) -> TopicMeta {
        TopicMeta {
            name: name.into(),
            id: Uuid::from_u128(xxhash_rust::xxh3::xxh3_128(name.as_bytes())),
            partitions,
        }
    }

    fn join(id: &str, topics: &[&str]) -> Beat {
        Beat {
            member_id: id.into(),
            epoch: 0,
            rebalance_timeout: Some(Duration::from_secs(30)),
            subscribed: Some(topics.iter().map(|t| t.to_string()).collect()),
            owned: Some(Vec::new()),
            ..Beat::default()
        }
    }

    fn beat(id: &str, epoch: i32, owned: Option<&BTreeSet<Tp>>) -> Beat {
        Beat {
            member_id: id.into(),
            epoch,
            owned: owned.map(|o| o.iter().copied().collect()),
            ..Beat::default()
        }
    }

    /// Heartbeats from every member, each reporting what its last answer gave it, until no
    /// answer changes anything; returns the rounds taken.
    fn settle(g: &mut ConsumerGroup, all: &[TopicMeta], now: Instant) -> usize {
        for round in 1..20 {
            let before: Vec<(i32, BTreeSet<Tp>)> = g
                .members
                .iter()
                .map(|m| (m.epoch, m.assigned.clone()))
                .collect();
            for i in 0..g.members.len() {
                let m = &g.members[i];
                let b = beat(&m.id.clone(), m.epoch, Some(&m.assigned.clone()));
                g.heartbeat(b, all, now).expect("heartbeat");
            }
            let after: Vec<(i32, BTreeSet<Tp>)> = g
                .members
                .iter()
                .map(|m| (m.epoch, m.assigned.clone()))
                .collect();
            if before == after && state_name(g) == "Stable" {
                return round;
            }
        }
        panic!("the group did not settle: {g:#?}");
    }

    /// Every partition of `all` is assigned to exactly one member, and counts differ by at
    /// most one.
    fn assert_balanced(g: &ConsumerGroup, all: &[TopicMeta]) {
        let total: i32 = all.iter().map(|t| t.partitions).sum();
        let mut seen = BTreeSet::new();
        for m in &g.members {
            for tp in &m.assigned {
                assert!(seen.insert(*tp), "{tp:?} assigned twice");
            }
        }
        assert_eq!(seen.len() as i32, total);
        let counts: Vec<usize> = g.members.iter().map(|m| m.assigned.len()).collect();
        let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(hi - lo <= 1, "unbalanced: {counts:?}");
    }

    #[test]
    fn members_that_join_share_the_partitions_after_the_first_gives_some_up() {
        let all = [topic("orders", 12)];
        let now = Instant::now();
        let mut g = ConsumerGroup::new();
        let a = g.heartbeat(join("a", &["orders"]), &all, now).unwrap();
        assert_eq!(a.epoch, 1);
        assert_eq!(
            a.assignment.unwrap()[0].1.len(),
            12,
            "a lone member takes everything"
        );
        let b = g.heartbeat(join("b", &["orders"]), &all, now).unwrap();
        // b's partitions are still a's: b has the new epoch and nothing yet.
        assert_eq!(b.epoch, 2);
        assert_eq!(b.assignment, Some(Vec::new()));
        assert_eq!(g.members[1].state, MemberState::UnreleasedPartitions);
        // a must give up six before it moves to epoch 2.
        let owned = g.members[0].assigned.clone();
        let a = g.heartbeat(beat("a", 1, Some(&owned)), &all, now).unwrap();
        assert_eq!(a.epoch, 1);
        assert_eq!(a.assignment.unwrap()[0].1.len(), 6);
        assert_eq!(g.members[0].state, MemberState::UnrevokedPartitions);
        // A commit from a at epoch 1 is still fine; from b at epoch 1 it is stale.
        assert!(g.check_member("a", 1).is_ok());
        assert_eq!(g.check_member("b", 1), Err(ResponseError::StaleMemberEpoch));
        // a still reports all twelve: nothing moves.
        let a = g.heartbeat(beat("a", 1, Some(&owned)), &all, now).unwrap();
        assert_eq!((a.epoch, a.assignment.map(|x| x[0].1.len())), (1, Some(6)));
        let b = g.heartbeat(beat("b", 2, None), &all, now).unwrap();
        assert_eq!(b.assignment, None, "nothing changed for b");
        // a gave them up: it moves on, and b takes them at its next heartbeat.
        let kept = g.members[0].assigned.clone();
        let a = g.heartbeat(beat("a", 1, Some(&kept)), &all, now).unwrap();
        assert_eq!(a.epoch, 2);
        let b = g.heartbeat(beat("b", 2, None), &all, now).unwrap();
        assert_eq!(b.assignment.unwrap()[0].1.len(), 6);
        assert_eq!(state_name(&g), "Stable");
        assert_balanced(&g, &all);
    }

    #[test]
    fn a_member_leaving_hands_its_partitions_to_the_others_at_their_next_heartbeat() {
        let all = [topic("orders", 12), topic("returns", 5)];
        let now = Instant::now();
        let mut g = ConsumerGroup::new();
        for id in ["a", "b", "c"] {
            g.heartbeat(join(id, &["orders", "returns"]), &all, now)
                .unwrap();
        }
        settle(&mut g, &all, now);
        assert_balanced(&g, &all);
        let held: Vec<BTreeSet<Tp>> = g.members.iter().map(|m| m.assigned.clone()).collect();
        let epoch = g.epoch;
        let left = g
            .heartbeat(beat("c", LEAVE_EPOCH, None), &all, now)
            .unwrap();
        assert_eq!(left.epoch, LEAVE_EPOCH);
        assert_eq!(g.epoch, epoch + 1);
        // One heartbeat each: nothing to give up (the assignment is sticky), so each takes
        // its share of c's partitions at once.
        for (i, id) in ["a", "b"].into_iter().enumerate() {
            let answer = g.heartbeat(beat(id, epoch, None), &all, now).unwrap();
            assert_eq!(answer.epoch, epoch + 1);
            let now_held = &g.members[i].assigned;
            assert!(now_held.is_superset(&held[i]), "{id} kept what it had");
            assert_eq!(g.members[i].state, MemberState::Stable);
        }
        assert_eq!(state_name(&g), "Stable");
        assert_balanced(&g, &all);
        assert_eq!(
            g.heartbeat(beat("c", epoch, None), &all, now),
            Err(ResponseError::UnknownMemberId)
        );
    }

    #[test]
    fn epochs_are_fenced_except_a_resent_previous_one() {
        let all = [topic("orders", 4)];
        let now = Instant::now();
        let mut g = ConsumerGroup::new();
        g.heartbeat(join("a", &["orders"]), &all, now).unwrap();
        g.heartbeat(join("b", &["orders"]), &all, now).unwrap();
        settle(&mut g, &all, now);
        g.heartbeat(join("c", &["orders"]), &all, now).unwrap();
        settle(&mut g, &all, now);
        let (epoch, previous) = (g.members[1].epoch, g.members[1].previous_epoch);
        assert!(previous > 0 && previous < epoch, "{previous} then {epoch}");
        let owned = g.members[1].assigned.clone();
        let fenced = Err(ResponseError::FencedMemberEpoch);
        assert_eq!(g.heartbeat(beat("b", epoch + 1, None), &all, now), fenced);
        // The previous epoch with a subset of its partitions: an answer was lost.
        let resent = g.heartbeat(beat("b", previous, Some(&owned)), &all, now);
        assert_eq!(resent.unwrap().epoch, epoch);
        // The previous epoch without saying what it owns, or an older one: fenced.
        assert_eq!(g.heartbeat(beat("b", previous, None), &all, now), fenced);
        assert_eq!(
            g.heartbeat(beat("b", previous - 1, Some(&owned)), &all, now),
            fenced
        );
        // Fenced members join again with epoch 0 and the same id, owning nothing.
        let again = g.heartbeat(join("b", &["orders"]), &all, now).unwrap();
        assert_eq!(again.epoch, g.target_epoch);
        settle(&mut g, &all, now);
        assert_balanced(&g, &all);
    }

    #[test]
    fn sessions_and_revocations_that_run_out_remove_the_member() {
        let all = [topic("orders", 6)];
        let start = Instant::now();
        let mut g = ConsumerGroup::new();
        g.heartbeat(join("a", &["orders"]), &all, start).unwrap();
        g.heartbeat(join("b", &["orders"]), &all, start).unwrap();
        // a is told to give up three and never does.
        let owned = g.members[0].assigned.clone();
        g.heartbeat(beat("a", 1, Some(&owned)), &all, start)
            .unwrap();
        assert_eq!(g.members[0].state, MemberState::UnrevokedPartitions);
        let later = start + Duration::from_secs(31);
        // b heartbeats meanwhile, so only a's revocation has run out.
        g.heartbeat(beat("b", 2, None), &all, later).unwrap();
        g.tick(later, SESSION);
        assert_eq!(g.members.len(), 1);
        let b = g.heartbeat(beat("b", 2, None), &all, later).unwrap();
        assert_eq!(
            b.assignment.unwrap()[0].1.len(),
            6,
            "a's partitions are free"
        );
        // b's session runs out too.
        let next = g.tick(later, SESSION).unwrap();
        assert_eq!(next, later + SESSION);
        g.tick(next, SESSION);
        assert!(g.members.is_empty());
        assert_eq!(state_name(&g), "Empty");
    }

    #[test]
    fn a_static_member_that_comes_back_takes_its_place_without_a_new_epoch() {
        let all = [topic("orders", 6)];
        let now = Instant::now();
        let mut g = ConsumerGroup::new();
        let mut a = join("a1", &["orders"]);
        a.instance_id = Some("host-a".into());
        g.heartbeat(a.clone(), &all, now).unwrap();
        g.heartbeat(join("b", &["orders"]), &all, now).unwrap();
        settle(&mut g, &all, now);
        let (epoch, held) = (g.epoch, g.members[0].assigned.clone());
        let mut away = beat("a1", STATIC_LEAVE_EPOCH, None);
        away.instance_id = Some("host-a".into());
        g.heartbeat(away, &all, now).unwrap();
        assert_eq!(g.epoch, epoch, "a static member away keeps its place");
        let mut back = join("a2", &["orders"]);
        back.instance_id = Some("host-a".into());
        let answer = g.heartbeat(back, &all, now).unwrap();
        assert_eq!(answer.member_id, "a2");
        assert_eq!(g.epoch, epoch, "it took its place back without a new epoch");
        assert_eq!(g.members[0].assigned, held);
        let given: BTreeSet<Tp> = (answer.assignment.unwrap().into_iter())
            .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t, p)))
            .collect();
        assert_eq!(given, held);
        let mut dup = join("a3", &["orders"]);
        dup.instance_id = Some("host-a".into());
        assert_eq!(
            g.heartbeat(dup, &all, now),
            Err(ResponseError::UnreleasedInstanceId)
        );
        // Another member may not take the instance id while it is in use.
        settle(&mut g, &all, now);
        assert_balanced(&g, &all);
    }

    #[test]
    fn new_partitions_and_subscriptions_move_the_group_on() {
        let mut all = vec![topic("orders", 2)];
        let now = Instant::now();
        let mut g = ConsumerGroup::new();
        g.heartbeat(join("a", &["orders", "later"]), &all, now)
            .unwrap();
        g.heartbeat(join("b", &["orders"]), &all, now).unwrap();
        settle(&mut g, &all, now);
        let epoch = g.epoch;
        all[0].partitions = 4;
        all.push(topic("later", 3));
        settle(&mut g, &all, now);
        assert_eq!(g.epoch, epoch + 1);
        assert_balanced(&g, &all);
        // b does not subscribe to "later": none of its partitions are b's.
        let later = all[1].id;
        assert!(g.members[1].assigned.iter().all(|(t, _)| *t != later));
        // b subscribes to nothing any more: a takes everything.
        let mut none = beat("b", g.members[1].epoch, None);
        none.subscribed = Some(Vec::new());
        g.heartbeat(none, &all, now).unwrap();
        settle(&mut g, &all, now);
        assert_eq!(g.members[0].assigned.len(), 7);
        assert!(g.members[1].assigned.is_empty());
    }

    #[test]
    fn a_pattern_subscribes_to_the_topics_it_matches_as_they_come() {
        let mut all = vec![topic("orders-eu", 2), topic("returns", 2)];
        let now = Instant::now();
        let mut g = ConsumerGroup::new();
        let mut a = join("a", &[]);
        a.regex = Some(Some(Regex::new("^(?:orders-.*)$").unwrap()));
        g.heartbeat(a, &all, now).unwrap();
        settle(&mut g, &all, now);
        let ids = |g: &ConsumerGroup| -> BTreeSet<Uuid> {
            g.members[0].assigned.iter().map(|(t, _)| *t).collect()
        };
        assert_eq!(ids(&g), [all[0].id].into());
        // A matching topic created later is taken at the next heartbeat.
        all.push(topic("orders-us", 3));
        let epoch = g.epoch;
        settle(&mut g, &all, now);
        assert_eq!(g.epoch, epoch + 1);
        assert_eq!(ids(&g), [all[0].id, all[2].id].into());
        assert_eq!(g.members[0].assigned.len(), 5);
        // The pattern cleared: only the names it gives ("returns").
        let mut b = beat("a", g.members[0].epoch, None);
        b.regex = Some(None);
        b.subscribed = Some(vec!["returns".into()]);
        g.heartbeat(b, &all, now).unwrap();
        settle(&mut g, &all, now);
        assert_eq!(ids(&g), [all[1].id].into());
    }

    #[test]
    fn the_range_assignor_gives_contiguous_ranges_per_topic() {
        let all = [topic("orders", 7)];
        let now = Instant::now();
        let mut g = ConsumerGroup::new();
        for id in ["m1", "m2", "m3"] {
            let mut j = join(id, &["orders"]);
            j.assignor = Some(Assignor::Range);
            g.heartbeat(j, &all, now).unwrap();
        }
        settle(&mut g, &all, now);
        let parts =
            |i: usize| -> Vec<i32> { g.members[i].assigned.iter().map(|tp| tp.1).collect() };
        assert_eq!(parts(0), vec![0, 1, 2]);
        assert_eq!(parts(1), vec![3, 4]);
        assert_eq!(parts(2), vec![5, 6]);
    }
}
