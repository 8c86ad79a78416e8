//! Consumer groups as the log keeps them: the groups with members in this process (their
//! assignment and shared rate limit, [`Group`]), every group's committed offsets
//! ([`OffsetStore`]), how far each is behind, and the offsets retention must keep for them
//! (the protection floors handed to each shard).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::consumer::group::Group;
use crate::consumer::offsets::{OFFSETS_TOPIC, OffsetKey, OffsetStore};
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
}

impl Groups {
    /// No groups yet: [`Groups::load`] reads the committed offsets.
    pub fn new(store: Arc<Store>) -> Groups {
        Groups {
            store,
            offsets: Arc::default(),
            live: Mutex::new(HashMap::new()),
            recording: Mutex::new(()),
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

    /// The group `name` consuming `topic`, created on first use (with the internal offsets
    /// topic, if this log has none yet).
    pub fn group(&self, name: &str, topic: &str) -> Result<Arc<Group>> {
        validate_group_name(name)?;
        let t = self.store.topic(topic)?;
        if self.store.topic(OFFSETS_TOPIC).is_err() {
            match self.store.create_topic(OFFSETS_TOPIC, 1) {
                Ok(()) | Err(Error::TopicExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
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
            let mut pairs: Vec<(String, u32)> = self
                .offsets
                .all()
                .into_iter()
                .map(|(k, _)| (k.group, k.topic_id))
                .collect();
            pairs.extend(self.live.lock().expect("groups lock").keys().cloned());
            pairs.sort();
            pairs.dedup();
            for (group, topic_id) in pairs {
                let Some(t) = topics.get(&topic_id) else {
                    continue; // a deleted topic
                };
                for p in 0..t.partitions.len() as u32 {
                    let key = OffsetKey {
                        group: group.clone(),
                        topic_id,
                        partition: p,
                    };
                    let tp = TopicPartition::new(topic_id, p);
                    keep(tp, self.offsets.get(&key).unwrap_or_default());
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
                group: group.to_owned(),
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
        let keys: Vec<(OffsetKey, Option<Offset>)> = self
            .offsets
            .all()
            .into_iter()
            .filter(|(k, _)| k.group == group)
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
}
