//! Consumer groups in one process: members share a topic's partitions.
//!
//! A [`Group`] (one per group name and topic) keeps its members and, per partition, the member
//! that should own it (the *target*, from [`assign`]) and the member that owns it now. A
//! partition changes hands in two steps, so two members never deliver it at once: when a
//! member joins or leaves, targets are recomputed and the generation bumped; at its next poll
//! each member releases the partitions no longer targeted at it (committing their positions
//! first if it auto-commits), and takes the free ones targeted at it, starting from the
//! group's committed offset. A member that is dropped leaves the group and releases
//! everything.
//!
//! The assignment is sticky: a member keeps what it has up to its fair share (`partitions /
//! members`, rounded up for the members holding the most), and only the excess moves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::consumer::rate::{RateLimit, RateLimiter};

/// Identifies a member within its group.
pub(crate) type MemberId = u64;

/// The sticky assignment: the new target of each partition, given the current targets and
/// the members (in join order). Every partition gets a member (if there is one); each member
/// gets `n / m` or `n / m + 1`; members keep their current partitions as far as that allows.
pub(crate) fn assign(current: &[Option<MemberId>], members: &[MemberId]) -> Vec<Option<MemberId>> {
    if members.is_empty() {
        return vec![None; current.len()];
    }
    let n = current.len();
    let m = members.len();
    let held = |member: MemberId| current.iter().filter(|t| **t == Some(member)).count();
    // Members holding the most get the larger shares, so fewer partitions move.
    let mut by_held: Vec<(usize, MemberId)> = members.iter().map(|&id| (held(id), id)).collect();
    by_held.sort_by_key(|&(held, _)| std::cmp::Reverse(held));
    let quota = |member: MemberId| {
        let rank = by_held
            .iter()
            .position(|&(_, id)| id == member)
            .expect("a member");
        n / m + usize::from(rank < n % m)
    };
    let mut target = vec![None; n];
    let mut count = vec![0usize; m];
    let slot = |member: MemberId| members.iter().position(|&id| id == member);
    // Keep what each member holds, up to its quota.
    for (p, t) in current.iter().enumerate() {
        if let Some(member) = *t
            && let Some(i) = slot(member)
            && count[i] < quota(member)
        {
            target[p] = Some(member);
            count[i] += 1;
        }
    }
    // Hand out the rest to members under their quota, in join order.
    let mut i = 0;
    for t in target.iter_mut().filter(|t| t.is_none()) {
        while count[i] >= quota(members[i]) {
            i += 1;
        }
        *t = Some(members[i]);
        count[i] += 1;
    }
    target
}

/// What a member must do to match the group: partitions to let go of, and to take.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    pub release: Vec<u32>,
    pub take: Vec<u32>,
}

#[derive(Debug)]
struct State {
    members: Vec<MemberId>,
    next_member: MemberId,
    target: Vec<Option<MemberId>>,
    owner: Vec<Option<MemberId>>,
}

/// A consumer group's membership and assignment for one topic.
#[derive(Debug)]
pub(crate) struct Group {
    pub name: Arc<str>,
    /// Bumped at every change a member may have to act on.
    generation: AtomicU64,
    state: Mutex<State>,
    /// The group-wide rate limit, shared by its members (none: unlimited).
    pub limiter: Mutex<Option<RateLimiter>>,
}

impl Group {
    pub fn new(name: &str, partitions: u32) -> Group {
        Group {
            name: name.into(),
            generation: AtomicU64::new(0),
            state: Mutex::new(State {
                members: Vec::new(),
                next_member: 1,
                target: vec![None; partitions as usize],
                owner: vec![None; partitions as usize],
            }),
            limiter: Mutex::new(None),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Adds a member; returns its id.
    pub fn join(&self) -> MemberId {
        let mut s = self.state.lock().expect("group lock");
        let id = s.next_member;
        s.next_member += 1;
        s.members.push(id);
        s.target = assign(&s.target, &s.members);
        self.bump();
        id
    }

    /// The topic has `partitions` partitions now (more than before): the new ones are
    /// assigned to the members, each keeping what it has up to its share.
    pub fn grow(&self, partitions: u32) {
        let mut s = self.state.lock().expect("group lock");
        let n = partitions as usize;
        if n <= s.target.len() {
            return;
        }
        s.target.resize(n, None);
        s.owner.resize(n, None);
        s.target = assign(&s.target, &s.members);
        self.bump();
    }

    /// Removes a member, freeing every partition it owns.
    pub fn leave(&self, member: MemberId) {
        let mut s = self.state.lock().expect("group lock");
        s.members.retain(|&m| m != member);
        for o in &mut s.owner {
            if *o == Some(member) {
                *o = None;
            }
        }
        s.target = assign(&s.target, &s.members);
        self.bump();
    }

    /// What `member` must release and may take now.
    pub fn changes(&self, member: MemberId) -> Changes {
        let s = self.state.lock().expect("group lock");
        let mut c = Changes::default();
        for (p, (t, o)) in s.target.iter().zip(&s.owner).enumerate() {
            if *o == Some(member) && *t != Some(member) {
                c.release.push(p as u32);
            } else if *o != Some(member) && *t == Some(member) && o.is_none() {
                c.take.push(p as u32);
            }
        }
        c
    }

    /// `member` no longer owns `partitions` (it has committed what it will).
    pub fn release(&self, member: MemberId, partitions: &[u32]) {
        let mut s = self.state.lock().expect("group lock");
        for &p in partitions {
            if s.owner[p as usize] == Some(member) {
                s.owner[p as usize] = None;
            }
        }
        self.bump();
    }

    /// `member` takes `partitions`, if they are still free and targeted at it; returns those
    /// it got.
    pub fn take(&self, member: MemberId, partitions: &[u32]) -> Vec<u32> {
        let mut s = self.state.lock().expect("group lock");
        let mut got = Vec::new();
        for &p in partitions {
            let i = p as usize;
            if s.owner[i].is_none() && s.target[i] == Some(member) {
                s.owner[i] = Some(member);
                got.push(p);
            }
        }
        got
    }

    /// Members now.
    pub fn members(&self) -> usize {
        self.state.lock().expect("group lock").members.len()
    }

    /// The group-wide rate limit, if any.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        let limiter = self.limiter.lock().expect("group limiter lock");
        limiter.as_ref().map(RateLimiter::limit)
    }

    /// Sets (or with `None`, removes) the group-wide rate limit.
    pub fn set_rate_limit(&self, limit: Option<RateLimit>, now: std::time::Instant) {
        let mut limiter = self.limiter.lock().expect("group limiter lock");
        match (limit, limiter.as_mut()) {
            (None, _) => *limiter = None,
            (Some(l), Some(r)) => r.set_limit(l, now),
            (Some(l), None) => *limiter = Some(RateLimiter::new(l, now)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(target: &[Option<MemberId>], members: &[MemberId]) -> Vec<usize> {
        members
            .iter()
            .map(|m| target.iter().filter(|t| **t == Some(*m)).count())
            .collect()
    }

    #[test]
    fn assignment_is_balanced_complete_and_sticky() {
        let mut target = vec![None; 10];
        let mut members = vec![1];
        target = assign(&target, &members);
        assert_eq!(counts(&target, &members), vec![10]);
        members.push(2);
        let before = target.clone();
        target = assign(&target, &members);
        assert_eq!(counts(&target, &members), vec![5, 5]);
        let moved = before.iter().zip(&target).filter(|(a, b)| a != b).count();
        assert_eq!(moved, 5, "only member 2's share moves");
        members.push(3);
        let before = target.clone();
        target = assign(&target, &members);
        let mut c = counts(&target, &members);
        c.sort();
        assert_eq!(c, vec![3, 3, 4]);
        let moved = before.iter().zip(&target).filter(|(a, b)| a != b).count();
        assert_eq!(moved, 3, "member 3 gets 3, taken from the others");
        // Member 1 leaves: its partitions go to the others, nothing else moves.
        members.retain(|&m| m != 1);
        let before = target.clone();
        target = assign(&target, &members);
        assert_eq!(counts(&target, &members), vec![5, 5]);
        for (b, t) in before.iter().zip(&target) {
            if *b != Some(1) {
                assert_eq!(b, t, "partitions of members who stayed stay");
            }
        }
        assert!(target.iter().all(|t| t.is_some()));
        assert_eq!(assign(&target, &[]), vec![None; 10]);
        // More members than partitions: some get none.
        let few = assign(&[None, None], &[1, 2, 3]);
        assert_eq!(counts(&few, &[1, 2, 3]), vec![1, 1, 0]);
    }

    #[test]
    fn partitions_change_hands_only_once_released() {
        let g = Group::new("g", 4);
        let a = g.join();
        let c = g.changes(a);
        assert_eq!(c.take, vec![0, 1, 2, 3]);
        assert_eq!(g.take(a, &c.take), vec![0, 1, 2, 3]);
        let gen_before = g.generation();
        let b = g.join();
        assert!(g.generation() > gen_before);
        let for_b = g.changes(b);
        assert!(for_b.take.is_empty(), "nothing is free until a releases");
        let for_a = g.changes(a);
        assert_eq!(for_a.release.len(), 2);
        g.release(a, &for_a.release);
        let for_b = g.changes(b);
        assert_eq!(for_b.take, for_a.release);
        assert_eq!(g.take(b, &for_b.take), for_a.release);
        assert_eq!(g.changes(a), Changes::default());
        assert_eq!(g.changes(b), Changes::default());
        // b leaves: a gets everything back.
        g.leave(b);
        assert_eq!(g.changes(a).take, for_a.release);
        assert_eq!(g.members(), 1);
    }
}
