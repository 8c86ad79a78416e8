//! Consumer groups' committed offsets, stored in the log itself.
//!
//! Every commit is a record of the internal topic `__consumer_offsets` (one partition), keyed
//! by (group, topic id, partition), whose value is the committed offset (8 bytes, big-endian)
//! followed by the commit's metadata string (UTF-8, usually empty: Kafka clients may attach
//! one); a null value deletes the key. A commit returns once its records are acknowledged, so it is
//! as durable as the log's durability setting makes any record. On open the partition is read
//! from its earliest offset and the last record of each key wins; then the live commits are
//! written again (compaction), so older segments hold nothing still needed and retention may
//! delete them. Retention never deletes a segment holding a live commit record: it asks for a
//! compaction instead, done by a background thread.
//!
//! The same partition records each topic (its [`crate::meta::TopicRecord`], keyed by topic id;
//! a null value when the topic is deleted), so that the metadata can be rebuilt from the
//! segments if `meta.json` is lost. Those records are live like commits: compacted, and kept by
//! retention.
//!
//! Commits are serialised (one at a time, log-wide): their order in the partition is the order
//! in which they take effect, so the last record of a key is always the newest commit.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, Weak};

use crate::error::{Error, Result};
use crate::producer::{Producer, Record};
use crate::segment::Offset;
use crate::shard::recovery::DamagedCommits;
use crate::store::Store;

pub(crate) use crate::meta::OFFSETS_TOPIC;

const KEY_VERSION: u8 = 1;
/// The longest a commit waits for its records to be acknowledged.
const COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Commits are written in chunks of about this many bytes of keys and values, each acked
/// before the next is sent: a member of 10,000 partitions committing them at once (about
/// 340 KiB) made one group commit of the shard carry all of it, every second, and the
/// producers' ack p99 went from 0.6 to 1.3-1.8 ms (docs/TUNING.md).
const COMMIT_CHUNK_BYTES: usize = 32 << 10;

/// What a commit record is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct OffsetKey {
    /// Shared with the group and every key of it: a commit of 10,000 partitions copies no name.
    pub group: Arc<str>,
    pub topic_id: u32,
    pub partition: u32,
}

impl OffsetKey {
    fn encode_into(&self, out: &mut Vec<u8>) {
        assert!(
            self.group.len() <= crate::meta::GROUP_NAME_BYTES_MAX,
            "group names are validated before they reach a key"
        );
        out.push(KEY_VERSION);
        out.extend_from_slice(&(self.group.len() as u16).to_be_bytes());
        out.extend_from_slice(self.group.as_bytes());
        out.extend_from_slice(&self.topic_id.to_be_bytes());
        out.extend_from_slice(&self.partition.to_be_bytes());
    }

    fn decode(b: &[u8]) -> Option<OffsetKey> {
        let (&version, rest) = b.split_first()?;
        if version != KEY_VERSION || rest.len() < 2 {
            return None;
        }
        let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let rest = &rest[2..];
        if rest.len() != len + 8 {
            return None;
        }
        let partition = u32::from_be_bytes(rest[len + 4..].try_into().ok()?);
        if partition >= crate::config::PARTITIONS_MAX {
            return None; // no partition of any topic: not a key this build wrote
        }
        Some(OffsetKey {
            group: std::str::from_utf8(&rest[..len]).ok()?.into(),
            topic_id: u32::from_be_bytes(rest[len..len + 4].try_into().ok()?),
            partition,
        })
    }
}

/// What a commit stores: the next offset to consume, and the committer's metadata string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OffsetValue {
    pub offset: Offset,
    pub metadata: Box<str>,
}

impl OffsetValue {
    /// A commit of `offset` without metadata.
    pub fn of(offset: Offset) -> OffsetValue {
        OffsetValue {
            offset,
            metadata: Box::default(),
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.0.to_be_bytes());
        out.extend_from_slice(self.metadata.as_bytes());
    }

    /// `None` for a value this build cannot read (shorter than an offset, or metadata that is
    /// not UTF-8).
    fn decode(b: &[u8]) -> Option<OffsetValue> {
        let offset = Offset(u64::from_be_bytes(b.get(..8)?.try_into().ok()?));
        let metadata = std::str::from_utf8(&b[8..]).ok()?.into();
        Some(OffsetValue { offset, metadata })
    }
}

/// A live commit: its value and where its record is in the offsets partition.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Committed {
    value: OffsetValue,
    record: Offset,
}

/// A live topic record: its bytes and where it is in the offsets partition.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Defined {
    value: Vec<u8>,
    record: Offset,
}

/// The live commits, by group, topic id and partition. A member's commit updates the same keys
/// every time: held densely by partition, a commit of 10,000 partitions walks one array instead
/// of missing the cache on a hash table entry per key (4 ms of a shared core per commit).
#[derive(Debug, Default)]
struct Live {
    groups: HashMap<Arc<str>, HashMap<u32, Commits>>,
    /// Live commits in all.
    len: usize,
}

/// One group's live commits on one topic, indexed by partition.
#[derive(Debug, Default)]
struct Commits {
    partitions: Vec<Option<Committed>>,
    len: usize,
}

impl Live {
    fn get(&self, key: &OffsetKey) -> Option<&Committed> {
        let commits = self.groups.get(&*key.group)?.get(&key.topic_id)?;
        commits.partitions.get(key.partition as usize)?.as_ref()
    }

    /// The commits of `group` on topic `topic_id`, created empty if there are none.
    fn commits(&mut self, group: &Arc<str>, topic_id: u32) -> &mut Commits {
        if !self.groups.contains_key(&**group) {
            self.groups.insert(Arc::clone(group), HashMap::new());
        }
        let topics = self.groups.get_mut(&**group).expect("inserted above");
        topics.entry(topic_id).or_default()
    }

    /// Sets (`Some`) or deletes (`None`) the commit of `partition` in `commits`.
    fn set(len: &mut usize, commits: &mut Commits, partition: u32, value: Option<Committed>) {
        let at = partition as usize;
        if value.is_some() && commits.partitions.len() <= at {
            commits.partitions.resize(at + 1, None);
        }
        let Some(slot) = commits.partitions.get_mut(at) else {
            return; // deleting what is not there
        };
        match (slot.is_some(), value.is_some()) {
            (false, true) => {
                commits.len += 1;
                *len += 1;
            }
            (true, false) => {
                commits.len -= 1;
                *len -= 1;
            }
            _ => {}
        }
        *slot = value;
    }

    /// Applies `entries` (all of one group and topic) with the offsets their records got.
    fn apply(&mut self, entries: &[(OffsetKey, Option<OffsetValue>)], records: &[Offset]) {
        let Some((first, _)) = entries.first() else {
            return;
        };
        let mut len = self.len;
        let commits = self.commits(&first.group, first.topic_id);
        for ((key, value), &record) in entries.iter().zip(records) {
            let at = key.partition as usize;
            match (value, commits.partitions.get_mut(at)) {
                // In place where the key is known (a member commits the same keys each time).
                (Some(value), Some(Some(c))) => {
                    c.value.clone_from(value);
                    c.record = record;
                }
                (value, _) => {
                    let value = value.as_ref().map(|value| Committed {
                        value: value.clone(),
                        record,
                    });
                    Live::set(&mut len, commits, key.partition, value);
                }
            }
        }
        self.len = len;
        self.forget_empty(&first.group, first.topic_id);
    }

    /// Sets or deletes one commit.
    fn put(&mut self, key: OffsetKey, value: Option<Committed>) {
        let mut len = self.len;
        let commits = self.commits(&key.group, key.topic_id);
        Live::set(&mut len, commits, key.partition, value);
        self.len = len;
        self.forget_empty(&key.group, key.topic_id);
    }

    fn forget_empty(&mut self, group: &str, topic_id: u32) {
        let Some(topics) = self.groups.get_mut(group) else {
            return;
        };
        if topics.get(&topic_id).is_some_and(|c| c.len == 0) {
            topics.remove(&topic_id);
        }
        if topics.is_empty() {
            self.groups.remove(group);
        }
    }

    /// Calls `f` with each live commit's key and commit.
    fn for_each(&self, mut f: impl FnMut(&OffsetKey, &Committed)) {
        for (group, topics) in &self.groups {
            for (&topic_id, commits) in topics {
                let mut key = OffsetKey {
                    group: Arc::clone(group),
                    topic_id,
                    partition: 0,
                };
                for (partition, c) in commits.partitions.iter().enumerate() {
                    if let Some(c) = c {
                        key.partition = partition as u32;
                        f(&key, c);
                    }
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct Compaction {
    wanted: bool,
    shutdown: bool,
}

/// The committed offsets of every group, in memory, backed by `__consumer_offsets`.
#[derive(Debug, Default)]
pub(crate) struct OffsetStore {
    live: Mutex<Live>,
    /// The live topic records, by topic id.
    defs: Mutex<HashMap<u32, Defined>>,
    /// Held while commit records are sent and acknowledged (see the module documentation).
    writing: Mutex<()>,
    compaction: (Mutex<Compaction>, Condvar),
}

impl OffsetStore {
    /// The committed offset of `key`, if any.
    pub fn get(&self, key: &OffsetKey) -> Option<Offset> {
        self.live
            .lock()
            .expect("offsets lock")
            .get(key)
            .map(|c| c.value.offset)
    }

    /// Every live commit, as (key, committed value).
    pub fn all(&self) -> Vec<(OffsetKey, OffsetValue)> {
        let live = self.live.lock().expect("offsets lock");
        let mut out = Vec::with_capacity(live.len);
        live.for_each(|k, c| out.push((k.clone(), c.value.clone())));
        out
    }

    /// The live commits of `group`, as (key, committed value).
    pub fn of_group(&self, group: &str) -> Vec<(OffsetKey, OffsetValue)> {
        let live = self.live.lock().expect("offsets lock");
        let mut out = Vec::new();
        live.for_each(|k, c| {
            if *k.group == *group {
                out.push((k.clone(), c.value.clone()));
            }
        });
        out
    }

    /// Calls `f` with each live commit's key and offset, under the lock (no copies).
    pub fn for_each(&self, mut f: impl FnMut(&OffsetKey, Offset)) {
        let live = self.live.lock().expect("offsets lock");
        live.for_each(|k, c| f(k, c.value.offset));
    }

    /// The oldest record of the offsets partition that is still a live commit.
    pub fn oldest_live_record(&self) -> Option<Offset> {
        let live = self.live.lock().expect("offsets lock");
        let defs = self.defs.lock().expect("topic records lock");
        let mut oldest = defs.values().map(|d| d.record).min();
        live.for_each(|_, c| oldest = Some(oldest.map_or(c.record, |o| o.min(c.record))));
        oldest
    }

    /// Live records: commits and topic records.
    pub fn live_records(&self) -> u64 {
        let commits = self.live.lock().expect("offsets lock").len;
        (commits + self.defs.lock().expect("topic records lock").len()) as u64
    }

    /// The live topic records, by topic id.
    pub fn topic_records(&self) -> HashMap<u32, Vec<u8>> {
        let defs = self.defs.lock().expect("topic records lock");
        defs.iter().map(|(&id, d)| (id, d.value.clone())).collect()
    }

    /// Records topics (id, record bytes; `None`: deleted), durably, then as live.
    pub fn record_topics(
        &self,
        producer: &mut Producer,
        topics: &[(u32, Option<Vec<u8>>)],
    ) -> Result<()> {
        let _writing = self.writing.lock().expect("offsets write lock");
        self.write_topics(producer, topics)
    }

    /// Writes topic records and notes them as live. The caller holds `writing`.
    fn write_topics(
        &self,
        producer: &mut Producer,
        topics: &[(u32, Option<Vec<u8>>)],
    ) -> Result<()> {
        let mut raw = Encoded::default();
        for (id, value) in topics {
            let key = raw.append(|b| b.extend_from_slice(&crate::meta::topic_record_key(*id)));
            let value = value
                .as_ref()
                .map(|v| raw.append(|b| b.extend_from_slice(v)));
            raw.records.push((key, value));
        }
        let records = write_records(producer, &raw)?;
        let mut defs = self.defs.lock().expect("topic records lock");
        for ((id, value), record) in topics.iter().zip(records) {
            match value {
                Some(value) => {
                    let value = value.clone();
                    defs.insert(*id, Defined { value, record });
                }
                None => {
                    defs.remove(id);
                }
            }
        }
        Ok(())
    }

    /// Reads the offsets partition (after recovery); returns how many records it held, and
    /// the batches that failed their checks and were skipped. A damaged batch costs only the
    /// commits in it: each of its groups keeps its commit from before it.
    pub fn load(&self, log: &Store) -> Result<(u64, Vec<DamagedCommits>)> {
        let (mut offset, next) = {
            let p = log.partition(OFFSETS_TOPIC, 0)?;
            (p.offset_earliest(), p.offset_acked())
        };
        let records = next - offset;
        let mut damaged = Vec::new();
        let mut live = self.live.lock().expect("offsets lock");
        let mut defs = self.defs.lock().expect("topic records lock");
        while offset < next {
            let read = log.read(OFFSETS_TOPIC, 0, offset, 1 << 20);
            // A damaged batch fails the whole read: read the next batch alone to find it.
            let read = match read {
                Err(Error::Corrupt { .. }) => log.read(OFFSETS_TOPIC, 0, offset, 1),
                other => other,
            };
            let batch = match read {
                Ok(batch) => batch,
                Err(Error::Corrupt { path, pos, reason }) => {
                    let entry = log.batch_holding(OFFSETS_TOPIC, 0, offset)?;
                    damaged.push(DamagedCommits {
                        path,
                        pos,
                        reason,
                        offsets: entry.base_offset..entry.last_offset.next(),
                    });
                    offset = entry.last_offset.next();
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(last) = batch.last() else {
                break;
            };
            offset = last.offset.next();
            for r in batch {
                if let Some(id) = r.key.as_deref().and_then(crate::meta::topic_record_id) {
                    match r.value {
                        Some(v) => {
                            let value = v.to_vec();
                            defs.insert(
                                id,
                                Defined {
                                    value,
                                    record: r.offset,
                                },
                            );
                        }
                        None => {
                            defs.remove(&id);
                        }
                    }
                    continue;
                }
                let key = r.key.as_deref().and_then(OffsetKey::decode);
                let Some(key) = key else {
                    continue; // not a commit record this build knows; skipped
                };
                match r.value.as_deref().map(OffsetValue::decode) {
                    Some(Some(value)) => {
                        let record = r.offset;
                        live.put(key, Some(Committed { value, record }));
                    }
                    None => live.put(key, None),
                    Some(None) => {}
                }
            }
        }
        Ok((records, damaged))
    }

    /// Makes `entries` (key, value; `None` deletes) durable, in order, and then visible.
    pub fn commit(
        &self,
        producer: &mut Producer,
        entries: &[(OffsetKey, Option<OffsetValue>)],
    ) -> Result<()> {
        let _writing = self.writing.lock().expect("offsets write lock");
        self.write(producer, entries)
    }

    /// Writes every live commit again at the end of the partition, so no older record is
    /// needed any more.
    pub fn compact(&self, producer: &mut Producer) -> Result<()> {
        // Snapshot and write under the commit lock: a commit in between would otherwise be
        // followed in the log by an older value.
        let _writing = self.writing.lock().expect("offsets write lock");
        let entries: Vec<(OffsetKey, Option<OffsetValue>)> =
            self.all().into_iter().map(|(k, v)| (k, Some(v))).collect();
        self.write(producer, &entries)?;
        let topics: Vec<(u32, Option<Vec<u8>>)> = (self.topic_records().into_iter())
            .map(|(id, v)| (id, Some(v)))
            .collect();
        self.write_topics(producer, &topics)
    }

    /// Sends the records, waits for their acks, then updates the live map. The caller holds
    /// `writing`.
    fn write(
        &self,
        producer: &mut Producer,
        entries: &[(OffsetKey, Option<OffsetValue>)],
    ) -> Result<()> {
        let mut raw = Encoded::default();
        for (key, value) in entries {
            let key = raw.append(|b| key.encode_into(b));
            let value = value.as_ref().map(|v| raw.append(|b| v.encode_into(b)));
            raw.records.push((key, value));
        }
        let records = write_records(producer, &raw)?;
        let mut live = self.live.lock().expect("offsets lock");
        let mut done = 0;
        // By runs of one group and topic (a commit is usually one run).
        for run in entries.chunk_by(|(a, _), (b, _)| a.group == b.group && a.topic_id == b.topic_id)
        {
            live.apply(run, &records[done..done + run.len()]);
            done += run.len();
        }
        Ok(())
    }

    /// Asks the compaction thread to compact (retention found a live record in its way).
    pub fn want_compaction(&self) {
        let (lock, cv) = &self.compaction;
        lock.lock().expect("compaction lock").wanted = true;
        cv.notify_all();
    }

    /// Stops the compaction thread.
    pub fn shutdown(&self) {
        let (lock, cv) = &self.compaction;
        lock.lock().expect("compaction lock").shutdown = true;
        cv.notify_all();
    }
}

/// Records' keys and values, encoded one after another into one buffer (one allocation for a
/// commit, not two per partition).
#[derive(Default)]
struct Encoded {
    bytes: Vec<u8>,
    /// Each record's key and value (`None`: a tombstone), as ranges of `bytes`.
    records: Vec<(Range<usize>, Option<Range<usize>>)>,
}

impl Encoded {
    /// Appends what `encode` writes; its range.
    fn append(&mut self, encode: impl FnOnce(&mut Vec<u8>)) -> Range<usize> {
        let start = self.bytes.len();
        encode(&mut self.bytes);
        start..self.bytes.len()
    }
}

/// Sends records (key, value; `None`: a tombstone) to the offsets partition and waits for
/// their acks; returns their offsets there.
fn write_records(producer: &mut Producer, raw: &Encoded) -> Result<Vec<Offset>> {
    let mut offsets = Vec::with_capacity(raw.records.len());
    let mut acks = Vec::new();
    let mut rest = &raw.records[..];
    while !rest.is_empty() {
        // A chunk of about `COMMIT_CHUNK_BYTES`, at least one record.
        let mut bytes = 0;
        let n = rest
            .iter()
            .take_while(|(k, v)| {
                bytes += k.len() + v.as_ref().map_or(0, Range::len);
                bytes <= COMMIT_CHUNK_BYTES
            })
            .count()
            .max(1);
        let (chunk, after) = rest.split_at(n);
        rest = after;
        let chunk = chunk.iter().map(|(key, value)| {
            let record = match value {
                Some(v) => Record::new(&raw.bytes[v.clone()]),
                None => Record::tombstone(),
            };
            record.key(&raw.bytes[key.clone()]).partition(0)
        });
        acks.clear();
        producer.send_batch(OFFSETS_TOPIC, chunk, &mut acks)?;
        for ack in acks.drain(..) {
            // Bounded: a shard that filled even the segment reserved for commits would
            // otherwise hold the caller forever.
            let acked = ack
                .wait_timeout(COMMIT_TIMEOUT)
                .ok_or(Error::Timeout(COMMIT_TIMEOUT))??;
            offsets.push(acked.offset);
        }
    }
    Ok(offsets)
}

/// The compaction thread: waits for requests and compacts, until shutdown. After each
/// compaction `compacted` runs (the groups move retention's floor past the records rewritten).
pub(crate) fn compaction_thread(log: Weak<Store>, store: Arc<OffsetStore>, compacted: impl Fn()) {
    loop {
        {
            let (lock, cv) = &store.compaction;
            let mut c = lock.lock().expect("compaction lock");
            while !c.wanted && !c.shutdown {
                c = cv.wait(c).expect("compaction lock");
            }
            if c.shutdown {
                return;
            }
            c.wanted = false;
        }
        let Some(log) = log.upgrade() else {
            return;
        };
        let mut producer = Producer::internal(Arc::clone(&log));
        match store.compact(&mut producer) {
            Ok(()) => compacted(),
            // The shard that failed reports it to producers and readers; nothing else to do.
            Err(e) => {
                let _: Error = e;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(group: u8, topic_id: u32, partition: u32) -> OffsetKey {
        OffsetKey {
            group: format!("g{group}").into(),
            topic_id,
            partition,
        }
    }

    proptest! {
        /// Commits applied in runs and one by one (as at load) leave the same live commits as
        /// a plain map of the last value per key would; the count and the oldest record agree.
        #[test]
        fn live_commits_are_the_last_value_of_each_key(
            ops in proptest::collection::vec(
                (0u8..3, 0u32..2, 0u32..40, proptest::option::weighted(0.8, 0u64..1000)),
                0..300,
            ),
            one_by_one in any::<bool>(),
        ) {
            let mut live = Live::default();
            let mut model: HashMap<OffsetKey, Committed> = HashMap::new();
            let entries: Vec<(OffsetKey, Option<OffsetValue>)> = (ops.iter())
                .map(|&(g, t, p, v)| (key(g, t, p), v.map(|o| OffsetValue::of(Offset(o)))))
                .collect();
            let records: Vec<Offset> = (0..entries.len() as u64).map(Offset).collect();
            for ((k, v), &record) in entries.iter().zip(&records) {
                match v {
                    Some(value) => {
                        let value = value.clone();
                        model.insert(k.clone(), Committed { value, record });
                    }
                    None => {
                        model.remove(k);
                    }
                }
            }
            if one_by_one {
                for ((k, v), &record) in entries.iter().zip(&records) {
                    let value = v.clone().map(|value| Committed { value, record });
                    live.put(k.clone(), value);
                }
            } else {
                let mut done = 0;
                let same = |(a, _): &(OffsetKey, _), (b, _): &(OffsetKey, _)| {
                    a.group == b.group && a.topic_id == b.topic_id
                };
                for run in entries.chunk_by(same) {
                    live.apply(run, &records[done..done + run.len()]);
                    done += run.len();
                }
            }
            let mut seen = HashMap::new();
            live.for_each(|k, c| {
                seen.insert(k.clone(), c.clone());
            });
            prop_assert_eq!(&seen, &model);
            prop_assert_eq!(live.len, model.len());
            for (k, c) in &model {
                prop_assert_eq!(live.get(k), Some(c));
            }
            // Nothing kept for a group and topic without live commits.
            let topics: usize = live.groups.values().map(HashMap::len).sum();
            let pairs: std::collections::HashSet<(Arc<str>, u32)> =
                model.keys().map(|k| (Arc::clone(&k.group), k.topic_id)).collect();
            prop_assert_eq!(topics, pairs.len());
        }
    }

    #[test]
    fn keys_round_trip_and_partitions_past_the_limit_are_not_keys() {
        let k = key(7, 3, 12_345);
        let mut b = Vec::new();
        k.encode_into(&mut b);
        assert_eq!(OffsetKey::decode(&b), Some(k));
        let mut far = Vec::new();
        key(7, 3, crate::config::PARTITIONS_MAX).encode_into(&mut far);
        assert_eq!(OffsetKey::decode(&far), None);
    }
}
