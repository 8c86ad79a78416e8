//! Consumer groups as the log keeps them: the groups with members in this process (their
//! assignment and shared rate limit, [`Group`]), every group's committed offsets
//! ([`OffsetStore`]), how far each is behind, and the offsets retention must keep for them
//! (the protection floors handed to each shard).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::consumer::group::Group;
use crate::consumer::offsets::{OFFSETS_TOPIC, OffsetKey, OffsetStore, OffsetValue};
use crate::consumer::rate::RateLimit;
use crate::error::{Error, Result};
use crate::meta::{TopicRecord, validate_group_name};
use crate::producer::Producer;
use crate::segment::Offset;
use crate::segment::TopicPartition;
use crate::shard::recovery::DamagedCommits;
use crate::store::Store;

/// A consumer group's progress on a topic; from [`crate::Log::group_lag`].
#[derive(Debug, Clone, PartialEq)]
pub struct GroupLag {
    /// Per partition.
    pub partitions: Vec<PartitionLag>,
    /// Records stored and not yet committed by the group, over all partitions.
    pub lag: u64,
    /// Members in this process now.
    pub members: usize,
    /// The group-wide rate limit, if one is set.
    pub rate_limit: Option<RateLimit>,
    /// `lag` divided by the group's message rate limit, if it has one.
    pub time_to_drain: Option<Duration>,
}

/// One partition of a [`GroupLag`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLag {
    /// The partition.
    pub partition: u32,
    /// The group's committed offset (the next it will consume), if it has committed.
    pub committed: Option<Offset>,
    /// The partition's next offset.
    pub next: Offset,
    /// Records from the committed offset (or the earliest stored one) to `next`.
    pub lag: u64,
}

/// A group's committed offset of one partition, with the committer's metadata string;
/// [`crate::Log::commit_group_offsets`] and [`crate::Log::group_offsets`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The next offset the group consumes there.
    pub offset: Offset,
    /// What the committer attached (Kafka clients may; empty if nothing).
    pub metadata: String,
}

/// The longest metadata string a commit may carry (Kafka's `offset.metadata.max.bytes`).
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;

// A commit record of the longest group name and metadata string (key: version, length, name,
// topic id, partition; value: offset, metadata; with the record's own varints) is one the log
// always takes.
const _: () = assert!(
    11 + crate::meta::GROUP_NAME_BYTES_MAX + 8 + OFFSET_METADATA_BYTES_MAX + 32
        <= crate::config::INTERNAL_RECORD_BYTES_MAX
);

/// The log's consumer groups.
pub(crate) struct Groups {
    store: Arc<Store>,
    /// Every group's committed offsets.
    pub offsets: Arc<OffsetStore>,
    /// Groups with members in this process, by (group, topic id).
    live: Mutex<HashMap<(String, u32), Arc<Group>>>,
    /// Held while the topics are recorded in the offsets topic, so that a recording never
    /// works from a metadata older than one already recorded.
    recording: Mutex<()>,
    /// Writes the commits of groups whose members are not this process's consumers.
    committer: Mutex<Option<Producer>>,
}

impl Groups {
    /// No groups yet: [`Groups::load`] reads the committed offsets.
    pub fn new(store: Arc<Store>) -> Groups {
        Groups {
            store,
            offsets: Arc::default(),
            live: Mutex::new(HashMap::new()),
            recording: Mutex::new(()),
            committer: Mutex::new(None),
        }
    }

    /// Makes the offsets topic record every topic of the metadata as it is now, and the
    /// deletion of each topic it no longer has (creating the offsets topic if the log has
    /// topics and none yet): so `meta.json` can be rebuilt from the segments. Done at open
    /// and after every topic change; writes only what differs.
    pub fn record_topics(&self) -> Result<()> {
        let _recording = self.recording.lock().expect("recording lock");
        if self.store.meta().topics.is_empty() {
            return Ok(());
        }
        if self.store.topic(OFFSETS_TOPIC).is_err() {
            match self.store.create_topic(OFFSETS_TOPIC, 1) {
                Ok(()) | Err(Error::TopicExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let meta = self.store.meta();
        let recorded = self.offsets.topic_records();
        let mut writes = Vec::new();
        for t in &meta.topics {
            let record = TopicRecord::of(&meta, t).encode();
            if recorded.get(&t.id) != Some(&record) {
                writes.push((t.id, Some(record)));
            }
        }
        for &id in recorded.keys() {
            if !meta.topics.iter().any(|t| t.id == id) {
                writes.push((id, None));
            }
        }
        if writes.is_empty() {
            return Ok(());
        }
        let mut producer = Producer::internal(Arc::clone(&self.store));
        self.offsets.record_topics(&mut producer, &writes)?;
        self.update_protection();
        Ok(())
    }

    /// Loads the committed offsets from the offsets topic, if the log has one, and compacts
    /// them (the last commit of each key is written again) when older commits are stored.
    /// Returns the batches of commits that were damaged and skipped.
    pub fn load(&self) -> Result<Vec<DamagedCommits>> {
        let mut damaged = Vec::new();
        if self.store.topic(OFFSETS_TOPIC).is_ok() {
            let records;
            (records, damaged) = self.offsets.load(&self.store)?;
            // Compacting writes every live commit again, so a damaged record is never needed.
            if records > self.offsets.live_records() || !damaged.is_empty() {
                let mut producer = Producer::internal(Arc::clone(&self.store));
                self.offsets.compact(&mut producer)?;
            }
        }
        self.update_protection();
        Ok(damaged)
    }

    /// Creates the internal offsets topic if this log has none yet.
    fn offsets_topic(&self) -> Result<()> {
        if self.store.topic(OFFSETS_TOPIC).is_err() {
            match self.store.create_topic(OFFSETS_TOPIC, 1) {
                Ok(()) | Err(Error::TopicExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The group `name` consuming `topic`, created on first use (with the internal offsets
    /// topic, if this log has none yet).
    pub fn group(&self, name: &str, topic: &str) -> Result<Arc<Group>> {
        validate_group_name(name)?;
        let t = self.store.topic(topic)?;
        self.offsets_topic()?;
        let group = {
            let mut live = self.live.lock().expect("groups lock");
            let key = (name.to_owned(), t.id);
            Arc::clone(
                live.entry(key)
                    .or_insert_with(|| Arc::new(Group::new(name, t.partitions.len() as u32))),
            )
        };
        self.update_protection();
        Ok(group)
    }

    /// Topic `topic_id` now has `partitions` partitions: its live groups share them out.
    pub fn grow_topic(&self, topic_id: u32, partitions: u32) {
        let live = self.live.lock().expect("groups lock");
        for ((_, t), group) in live.iter() {
            if *t == topic_id {
                group.grow(partitions);
            }
        }
        drop(live);
        self.update_protection();
    }

    /// Tells each shard's retention which offsets it must keep: the oldest live commit record
    /// of the offsets partition, and with `protect_unconsumed`, each group's committed offset
    /// of every partition of its topic (0 where it has not committed).
    pub fn update_protection(&self) {
        let mut floors: HashMap<TopicPartition, Offset> = HashMap::new();
        let mut keep = |key: TopicPartition, offset: Offset| {
            let floor = floors.entry(key).or_insert(offset);
            *floor = (*floor).min(offset);
        };
        let topics = self.store.topics_by_id();
        if let (Ok(t), Some(oldest)) = (
            self.store.topic(OFFSETS_TOPIC),
            self.offsets.oldest_live_record(),
        ) {
            let tp = TopicPartition::new(t.id, 0);
            keep(tp, oldest);
        }
        if self.store.config.protect_unconsumed {
            // Each group with commits or members on a topic keeps, in every partition of it,
            // its committed offset, or everything where it has not committed: a partition's
            // floor is the least commit if every such group committed there, else 0. One pass
            // over the commits (a key per partition per group) without copying them.
            let mut groups_of: HashMap<u32, HashSet<Arc<str>>> = HashMap::new();
            let mut committed: HashMap<TopicPartition, (usize, Offset)> = HashMap::new();
            self.offsets.for_each(|k, offset| {
                let groups = groups_of.entry(k.topic_id).or_default();
                if !groups.contains(&k.group) {
                    groups.insert(k.group.clone());
                }
                let tp = TopicPartition::new(k.topic_id, k.partition);
                let least = committed.entry(tp).or_insert((0, offset));
                *least = (least.0 + 1, least.1.min(offset));
            });
            for (group, topic_id) in self.live.lock().expect("groups lock").keys() {
                groups_of
                    .entry(*topic_id)
                    .or_default()
                    .insert(group.as_str().into());
            }
            for (topic_id, groups) in &groups_of {
                let Some(t) = topics.get(topic_id) else {
                    continue; // a deleted topic
                };
                for p in 0..t.partitions.len() as u32 {
                    let tp = TopicPartition::new(*topic_id, p);
                    let floor = match committed.get(&tp) {
                        Some(&(n, least)) if n == groups.len() => least,
                        _ => Offset::default(),
                    };
                    keep(tp, floor);
                }
            }
        }
        let floors = Arc::new(floors);
        for shard in &self.store.shards {
            shard.set_protected(Arc::clone(&floors));
        }
    }

    /// How far group `group` is behind on `topic`, by its committed offsets.
    pub fn lag(&self, group: &str, topic: &str) -> Result<GroupLag> {
        validate_group_name(group)?;
        let t = self.store.topic(topic)?;
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in 0..t.partitions.len() as u32 {
            let part = self.store.partition(topic, p)?;
            let key = OffsetKey {
                group: group.into(),
                topic_id: t.id,
                partition: p,
            };
            let committed = self.offsets.get(&key);
            let next = part.offset_acked();
            let from = committed.unwrap_or_else(|| part.offset_earliest());
            partitions.push(PartitionLag {
                partition: p,
                committed,
                next,
                lag: next.since(from),
            });
        }
        let lag = partitions.iter().map(|p| p.lag).sum();
        let live = self
            .live
            .lock()
            .expect("groups lock")
            .get(&(group.to_owned(), t.id))
            .cloned();
        let rate_limit = live.as_ref().and_then(|g| g.rate_limit());
        Ok(GroupLag {
            partitions,
            lag,
            members: live.map_or(0, |g| g.members()),
            rate_limit,
            time_to_drain: rate_limit
                .and_then(|l| l.msgs_per_s)
                .map(|r| Duration::from_secs_f64(lag as f64 / r)),
        })
    }

    /// Retention stopped at a segment holding records of `blocker`: if those are live
    /// commits, compacting the offsets frees the segment.
    pub fn retention_blocked_by(&self, blocker: TopicPartition) {
        let offsets_topic = self.store.topic(OFFSETS_TOPIC);
        if offsets_topic.is_ok_and(|t| t.id == blocker.topic_id) {
            self.offsets.want_compaction();
        }
    }

    /// Forgets group `group`'s committed offsets (on every topic), durably.
    pub fn delete(&self, group: &str) -> Result<()> {
        validate_group_name(group)?;
        let keys: Vec<(OffsetKey, Option<OffsetValue>)> = (self.offsets.of_group(group))
            .into_iter()
            .map(|(k, _)| (k, None))
            .collect();
        if !keys.is_empty() {
            let mut producer = Producer::internal(Arc::clone(&self.store));
            self.offsets.commit(&mut producer, &keys)?;
        }
        self.live
            .lock()
            .expect("groups lock")
            .retain(|(name, _), g| name != group || g.members() > 0);
        self.update_protection();
        Ok(())
    }

    /// Commits `offsets` for group `group`, durably, in one go: for groups whose members are
    /// not this process's consumers (the Kafka front's). Every topic and partition must exist
    /// and every metadata string fit, or nothing is committed.
    pub fn commit(&self, group: &str, offsets: &[GroupOffset]) -> Result<()> {
        validate_group_name(group)?;
        let name: Arc<str> = group.into();
        let mut entries = Vec::with_capacity(offsets.len());
        for o in offsets {
            if o.metadata.len() > OFFSET_METADATA_BYTES_MAX {
                return Err(Error::OffsetMetadataTooLarge {
                    bytes: o.metadata.len(),
                    max: OFFSET_METADATA_BYTES_MAX,
                });
            }
            let t = self.store.topic(&o.topic)?;
            self.store.partition(&o.topic, o.partition)?;
            let key = OffsetKey {
                group: Arc::clone(&name),
                topic_id: t.id,
                partition: o.partition,
            };
            let value = OffsetValue {
                offset: o.offset,
                metadata: o.metadata.as_str().into(),
            };
            entries.push((key, Some(value)));
        }
        if entries.is_empty() {
            return Ok(());
        }
        self.offsets_topic()?;
        {
            let mut committer = self.committer.lock().expect("committer lock");
            let producer =
                committer.get_or_insert_with(|| Producer::internal(Arc::clone(&self.store)));
            self.offsets.commit(producer, &entries)?;
        }
        self.update_protection();
        Ok(())
    }

    /// Group `group`'s committed offsets on every topic it committed on, by topic and
    /// partition (commits on deleted topics are left out).
    pub fn offsets_of(&self, group: &str) -> Vec<GroupOffset> {
        let meta = self.store.meta();
        let names: HashMap<u32, &str> = (meta.topics.iter())
            .map(|t| (t.id, t.name.as_str()))
            .collect();
        let mut out: Vec<GroupOffset> = (self.offsets.of_group(group).into_iter())
            .filter_map(|(k, v)| {
                Some(GroupOffset {
                    topic: (*names.get(&k.topic_id)?).to_owned(),
                    partition: k.partition,
                    offset: v.offset,
                    metadata: v.metadata.into(),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        out
    }

    /// Every group with committed offsets or members in this process.
    pub fn names(&self) -> Vec<String> {
        let mut names = HashSet::new();
        self.offsets.for_each(|k, _| {
            if !names.contains(&*k.group) {
                names.insert(k.group.to_string());
            }
        });
        let live = self.live.lock().expect("groups lock");
        names.extend(live.keys().map(|(g, _)| g.clone()));
        let mut names: Vec<String> = names.into_iter().collect();
        names.sort();
        names
    }
}
