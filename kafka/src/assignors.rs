//! The consumer protocol's server-side assignors (KIP-848): given the members' subscriptions
//! and the subscribed topics, each member's target partitions.

use std::collections::{BTreeSet, HashMap};

use uuid::Uuid;

use crate::consumer_groups::{TopicMeta, Tp};

/// The server-side assignors, by the names clients give them (`group.remote.assignor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Assignor {
    /// Kafka's default: balanced over every member, keeping each partition where it was.
    Uniform,
    /// Each topic's partitions in contiguous ranges over the members subscribed to it.
    Range,
}

impl Assignor {
    pub fn from_name(name: &str) -> Option<Assignor> {
        match name {
            "uniform" => Some(Assignor::Uniform),
            "range" => Some(Assignor::Range),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }
}

/// Every partition of `topics` that some member subscribes to, sorted.
fn subscribed_partitions(members: &[(&str, &BTreeSet<String>)], topics: &[TopicMeta]) -> Vec<Tp> {
    (topics.iter())
        .filter(|t| members.iter().any(|(_, s)| s.contains(&t.name)))
        .flat_map(|t| (0..t.partitions).map(move |p| (t.id, p)))
        .collect()
}

/// The uniform assignor: every member about as many partitions as the others (those of the
/// topics it subscribes to), each partition left with the member `previous` gave it while
/// that keeps the balance.
pub(crate) fn uniform(
    members: &[(&str, &BTreeSet<String>)],
    topics: &[TopicMeta],
    previous: &HashMap<String, BTreeSet<Tp>>,
) -> HashMap<String, BTreeSet<Tp>> {
    let mut out: HashMap<String, BTreeSet<Tp>> = (members.iter())
        .map(|(id, _)| (id.to_string(), BTreeSet::new()))
        .collect();
    let partitions = subscribed_partitions(members, topics);
    let name_of: HashMap<Uuid, &str> = topics.iter().map(|t| (t.id, t.name.as_str())).collect();
    let subscribes = |m: usize, tp: &Tp| {
        name_of
            .get(&tp.0)
            .is_some_and(|n| members[m].1.contains(*n))
    };
    let active = (0..members.len())
        .filter(|&m| partitions.iter().any(|tp| subscribes(m, tp)))
        .count();
    if active == 0 {
        return out;
    }
    let floor = partitions.len() / active;
    let mut extra = partitions.len() % active;
    let mut free: BTreeSet<Tp> = partitions.iter().copied().collect();
    let mut kept: Vec<Vec<Tp>> = vec![Vec::new(); members.len()];
    // Each member keeps up to `floor` of what it had, then one more while the remainder lasts.
    for round in 0..2 {
        for (m, (id, _)) in members.iter().enumerate() {
            let Some(had) = previous.get(*id) else {
                continue;
            };
            let limit = match round {
                0 => floor,
                _ if extra > 0 && kept[m].len() == floor => floor + 1,
                _ => continue,
            };
            for tp in had {
                if kept[m].len() >= limit {
                    break;
                }
                if subscribes(m, tp) && free.remove(tp) {
                    kept[m].push(*tp);
                    if round == 1 {
                        extra -= 1;
                    }
                }
            }
        }
    }
    // The rest, each to the least loaded member that subscribes to its topic; partitions
    // fewer members can take go first.
    let mut free: Vec<Tp> = free.into_iter().collect();
    free.sort_by_cached_key(|tp| (0..members.len()).filter(|&m| subscribes(m, tp)).count());
    for tp in free {
        let least = (0..members.len())
            .filter(|&m| subscribes(m, &tp))
            .min_by_key(|&m| kept[m].len());
        if let Some(m) = least {
            kept[m].push(tp);
        }
    }
    for (m, (id, _)) in members.iter().enumerate() {
        out.insert(id.to_string(), kept[m].iter().copied().collect());
    }
    out
}

/// The range assignor: each topic's partitions in contiguous ranges over the members that
/// subscribe to it (by member id), the first ones one more when they do not divide evenly.
pub(crate) fn range(
    members: &[(&str, &BTreeSet<String>)],
    topics: &[TopicMeta],
) -> HashMap<String, BTreeSet<Tp>> {
    let mut out: HashMap<String, BTreeSet<Tp>> = (members.iter())
        .map(|(id, _)| (id.to_string(), BTreeSet::new()))
        .collect();
    for t in topics {
        let mut subscribers: Vec<&str> = (members.iter())
            .filter(|(_, s)| s.contains(&t.name))
            .map(|(id, _)| *id)
            .collect();
        if subscribers.is_empty() {
            continue;
        }
        subscribers.sort();
        let n = subscribers.len() as i32;
        let (per, extra) = (t.partitions / n, t.partitions % n);
        let mut next = 0;
        for (k, id) in subscribers.iter().enumerate() {
            let count = per + i32::from((k as i32) < extra);
            let set = out.get_mut(*id).expect("every member has an entry");
            set.extend((next..next + count).map(|p| (t.id, p)));
            next += count;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, partitions: i32) -> TopicMeta {
        TopicMeta {
            name: name.into(),
            id: Uuid::from_u128(xxhash_rust::xxh3::xxh3_128(name.as_bytes())),
            partitions,
        }
    }

    #[test]
    fn the_uniform_assignor_moves_only_a_leavers_partitions_in_a_large_group() {
        let all: Vec<TopicMeta> = (0..5).map(|i| topic(&format!("t{i}"), 1_000)).collect();
        let sub: BTreeSet<String> = all.iter().map(|t| t.name.clone()).collect();
        let ids: Vec<String> = (0..50).map(|i| format!("m{i:02}")).collect();
        let members: Vec<(&str, &BTreeSet<String>)> =
            ids.iter().map(|id| (id.as_str(), &sub)).collect();
        let first = uniform(&members, &all, &HashMap::new());
        let counts: BTreeSet<usize> = first.values().map(BTreeSet::len).collect();
        assert_eq!(counts, [100].into());
        // m07 leaves: only its 100 partitions move, two or three to each of the others.
        let mut rest = members.clone();
        rest.remove(7);
        let second = uniform(&rest, &all, &first);
        for (id, _) in &rest {
            let (before, after) = (&first[*id], &second[*id]);
            assert!(after.is_superset(before), "{id} kept what it had");
            assert!((102..=103).contains(&after.len()), "{id}: {}", after.len());
        }
        let total: usize = second.values().map(BTreeSet::len).sum();
        assert_eq!(total, 5_000);
    }

    #[test]
    fn the_uniform_assignor_keeps_partitions_where_they_were() {
        let all = [topic("orders", 10)];
        let sub: BTreeSet<String> = ["orders".to_string()].into();
        let members = [("a", &sub), ("b", &sub), ("c", &sub)];
        let first = uniform(&members, &all, &HashMap::new());
        // c leaves: a and b keep all they had.
        let second = uniform(&members[..2], &all, &first);
        for id in ["a", "b"] {
            assert!(second[id].is_superset(&first[id]));
        }
        assert_eq!(second["a"].len() + second["b"].len(), 10);
        // d joins: each of a and b gives up only what d needs.
        let members = [("a", &sub), ("b", &sub), ("d", &sub)];
        let third = uniform(&members, &all, &second);
        let moved: usize = ["a", "b"]
            .iter()
            .map(|id| second[*id].difference(&third[*id]).count())
            .sum();
        assert_eq!(moved, third["d"].len());
        assert!((3..=4).contains(&third["d"].len()));
    }
}
