//! [`Log`]: opening a data directory, topics, and reading by offset or time.
//!
//! ```text
//! DIR/LOCK                     flock'd by the open Log; names its pid
//! DIR/meta.json                topics and shard count, replaced atomically
//! DIR/shard-000/NNNN.seg       preallocated segment files of shard 0, written with O_DIRECT
//! DIR/shard-000/NNNN.idx       index of a sealed segment (the recovery checkpoint)
//! ```

use std::collections::HashMap;
use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::thread::JoinHandle;

use crate::config::Config;
use crate::consumer::group::Group;
use crate::consumer::offsets::{OFFSETS_TOPIC, OffsetKey, OffsetStore, compaction_thread};
use crate::error::{Error, Result};
use crate::index::BatchEntry;
use crate::index::Partition;
use crate::io::{self, IoBackend};
use crate::layout;
use crate::meta::{
    DirLock, META_VERSION, Meta, TopicMeta, validate_group_name, validate_topic_name,
};
use crate::producer::Producer;
use crate::segment::records::{StoredRecord, decode_records};
use crate::shard::ShardShared;
use crate::shard::read::read_span;
use crate::shard::readahead::Readahead;
use crate::shard::recovery::{
    RecoverParams, RecoveryReport, recover_shard, unflushed_window_bytes,
};
use crate::shard::writer::{Writer, WriterStart};

/// How a topic is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicConfig {
    partitions: u32,
}

impl TopicConfig {
    /// A topic with `partitions` partitions.
    pub fn new(partitions: u32) -> TopicConfig {
        TopicConfig { partitions }
    }
}

/// What one shard's writer has done since the log was opened; from [`Log::stats`]. Counters
/// only grow: take two snapshots and subtract for rates. `write_nanos` and `flush_nanos` sum
/// each write's and each flush's time from submission to completion, so
/// `flush_nanos / flushes` is the mean flush latency and `records / writes` the mean group
/// commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Records framed.
    pub records: u64,
    /// Record batches framed (one per partition per commit).
    pub batches: u64,
    /// Segment writes completed (one per group commit).
    pub writes: u64,
    /// Bytes those writes carried (aligned to 4 KiB; a tail block is written again by the
    /// next commit).
    pub write_bytes: u64,
    /// Sum of each write's time from submission to completion.
    pub write_nanos: u64,
    /// Flushes (fdatasync) completed.
    pub flushes: u64,
    /// Sum of each flush's time from submission until its commits were durable.
    pub flush_nanos: u64,
    /// Segments sealed and replaced by a new one.
    pub rolls: u64,
    /// Rolls into a plain preallocated segment because the helper had not finished zeroing
    /// the next one (with `segment_prezero`): that segment's commits convert unwritten
    /// extents, slower to flush (docs/TUNING.md).
    pub rolls_unzeroed: u64,
    /// Bytes of commits put in the tail cache for readers. The writer does that only while a
    /// reader has read near the newest data in the last two seconds: otherwise no reader would
    /// find them there.
    pub tail_cached_bytes: u64,
}

/// Adds another shard's counters (for totals over a log's shards).
impl std::ops::AddAssign for ShardStats {
    fn add_assign(&mut self, other: ShardStats) {
        self.records += other.records;
        self.batches += other.batches;
        self.writes += other.writes;
        self.write_bytes += other.write_bytes;
        self.write_nanos += other.write_nanos;
        self.flushes += other.flushes;
        self.flush_nanos += other.flush_nanos;
        self.rolls += other.rolls;
        self.rolls_unzeroed += other.rolls_unzeroed;
        self.tail_cached_bytes += other.tail_cached_bytes;
    }
}

/// A consumer group's progress on a topic; from [`Log::group_lag`].
#[derive(Debug, Clone, PartialEq)]
pub struct GroupLag {
    /// Per partition.
    pub partitions: Vec<PartitionLag>,
    /// Records stored and not yet committed by the group, over all partitions.
    pub lag: u64,
    /// Members in this process now.
    pub members: usize,
    /// The group-wide rate limit, if one is set.
    pub rate_limit: Option<crate::consumer::RateLimit>,
    /// `lag` divided by the group's message rate limit, if it has one.
    pub time_to_drain: Option<std::time::Duration>,
}

/// One partition of a [`GroupLag`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionLag {
    /// The partition.
    pub partition: u32,
    /// The group's committed offset (the next it will consume), if it has committed.
    pub committed: Option<u64>,
    /// The partition's next offset.
    pub next: u64,
    /// Records from the committed offset (or the earliest stored one) to `next`.
    pub lag: u64,
}

/// A topic as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Its name.
    pub name: String,
    /// Its partition count.
    pub partitions: u32,
}

pub(crate) struct TopicState {
    pub id: u32,
    pub partitions: Vec<Arc<Partition>>,
}

pub(crate) struct LogInner {
    pub config: Config,
    meta: Mutex<Meta>,
    /// Bumped whenever a topic is created or deleted, so producers can cache topics.
    topics_generation: AtomicU64,
    topics: RwLock<HashMap<String, Arc<TopicState>>>,
    pub shards: Vec<Arc<ShardShared>>,
    /// Consumer groups' committed offsets.
    pub offsets: Arc<OffsetStore>,
    /// Consumer groups with members in this process, by (group, topic id).
    groups: Mutex<HashMap<(String, u32), Arc<Group>>>,
    /// Each shard's read-ahead thread.
    readahead: Vec<Readahead>,
    /// The cores the shard writers are pinned to (none when not pinned), and the others of
    /// those the process may use.
    writer_cores: Vec<usize>,
    other_cores: Vec<usize>,
}

impl LogInner {
    pub fn topics_generation(&self) -> u64 {
        self.topics_generation.load(Ordering::Acquire)
    }

    pub fn topic(&self, name: &str) -> Result<Arc<TopicState>> {
        self.topics
            .read()
            .expect("topics lock")
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownTopic(name.to_owned()))
    }

    /// Creates a topic (the name is already validated).
    fn create_topic(&self, name: &str, partitions: u32) -> Result<()> {
        if partitions == 0 || partitions > crate::config::PARTITIONS_MAX {
            return Err(Error::InvalidPartitionCount {
                asked: partitions,
                max: crate::config::PARTITIONS_MAX,
            });
        }
        let mut meta = self.meta.lock().expect("meta lock");
        if meta.topic(name).is_some() {
            return Err(Error::TopicExists(name.to_owned()));
        }
        meta.check_room_for(partitions)?;
        let shards = self.shards.len();
        let t = TopicMeta {
            name: name.to_owned(),
            id: meta.next_topic_id,
            partitions,
            first_shard: meta.next_topic_id % shards as u32,
        };
        let mut next = meta.clone();
        next.next_topic_id += 1;
        next.topics.push(t.clone());
        next.store(&self.config.dir)?;
        *meta = next;
        self.topics
            .write()
            .expect("topics lock")
            .insert(name.to_owned(), Arc::new(topic_state(&t, &self.shards)));
        self.topics_generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// The group `name` consuming `topic`, created on first use (with the internal offsets
    /// topic, if this log has none yet).
    pub fn group(&self, name: &str, topic: &str) -> Result<Arc<Group>> {
        validate_group_name(name)?;
        let t = self.topic(topic)?;
        if self.topic(OFFSETS_TOPIC).is_err() {
            match self.create_topic(OFFSETS_TOPIC, 1) {
                Ok(()) | Err(Error::TopicExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let group = {
            let mut groups = self.groups.lock().expect("groups lock");
            let key = (name.to_owned(), t.id);
            Arc::clone(
                groups
                    .entry(key)
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
        let mut floors: HashMap<(u32, u32), u64> = HashMap::new();
        let mut keep = |key: (u32, u32), offset: u64| {
            let floor = floors.entry(key).or_insert(offset);
            *floor = (*floor).min(offset);
        };
        let topics = self.topics.read().expect("topics lock");
        if let (Some(t), Some(oldest)) =
            (topics.get(OFFSETS_TOPIC), self.offsets.oldest_live_record())
        {
            keep((t.id, 0), oldest);
        }
        if self.config.protect_unconsumed {
            let mut pairs: Vec<(String, u32)> = self
                .offsets
                .all()
                .into_iter()
                .map(|(k, _)| (k.group, k.topic_id))
                .collect();
            pairs.extend(self.groups.lock().expect("groups lock").keys().cloned());
            pairs.sort();
            pairs.dedup();
            for (group, topic_id) in pairs {
                let Some(t) = topics.values().find(|t| t.id == topic_id) else {
                    continue; // a deleted topic
                };
                for p in 0..t.partitions.len() as u32 {
                    let key = OffsetKey {
                        group: group.clone(),
                        topic_id,
                        partition: p,
                    };
                    keep((topic_id, p), self.offsets.get(&key).unwrap_or(0));
                }
            }
        }
        let floors = Arc::new(floors);
        for shard in &self.shards {
            shard.set_protected(Arc::clone(&floors));
        }
    }

    /// See [`Log::read`].
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        bytes_max: usize,
    ) -> Result<Vec<StoredRecord>> {
        self.read_with(topic, partition, offset, bytes_max, ReadMode::Exact)
    }

    /// [`LogInner::read`], choosing how much to read from disk on a cache miss.
    pub fn read_with(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        bytes_max: usize,
        mode: ReadMode,
    ) -> Result<Vec<StoredRecord>> {
        let p = self.partition(topic, partition)?;
        let out_of_range = || {
            let (earliest, next) = (p.offset_earliest(), p.offset_visible());
            (offset < earliest || offset > next).then(|| Error::OffsetOutOfRange {
                topic: topic.to_owned(),
                partition,
                offset,
                earliest,
                next,
            })
        };
        if let Some(e) = out_of_range() {
            return Err(e);
        }
        // Retention may delete the segment (or its index file) while this reads it: then the
        // offset is out of range, not the log damaged.
        self.read_partition(&p, offset, bytes_max, mode)
            .map_err(|e| out_of_range().unwrap_or(e))
    }

    fn read_partition(
        &self,
        p: &Partition,
        offset: u64,
        bytes_max: usize,
        mode: ReadMode,
    ) -> Result<Vec<StoredRecord>> {
        let visible = p.offset_visible();
        let shard = &self.shards[p.shard as usize];
        let entries = p.entries_from(offset, bytes_max, visible, &shard.sealed_runs)?;
        let mut out = Vec::new();
        let expect = (p.topic_id, p.partition);
        shard.note_read(entries.last().map(|e| (e.segment, e.pos)));
        let readahead = &self.readahead[p.shard as usize];
        if mode == ReadMode::Ahead
            && let Some(last) = entries.last()
        {
            readahead.advise(shard, last.segment, last.pos, self.config.segment_bytes);
        }
        for run in coalesce(&entries) {
            let path = shard.segment_path(run[0].segment);
            let mut i = 0;
            while i < run.len() {
                // Fresh frames, and frames near ones read before, come from the read cache.
                let e = &run[i];
                let cached = shard.read_cache.read().expect("read cache lock").get(
                    e.segment,
                    e.pos,
                    e.frame_bytes as usize,
                );
                if let Some(frame) = cached {
                    decode_records(&frame, e, &path, (offset, visible), expect, &mut out)?;
                    i += 1;
                    continue;
                }
                // Being read ahead: wait for it rather than read it again.
                let cached = |shard: &ShardShared| {
                    let cache = shard.read_cache.read().expect("read cache lock");
                    cache
                        .get(e.segment, e.pos, e.frame_bytes as usize)
                        .is_some()
                };
                if readahead.wait_for(e.segment, e.pos) && cached(shard) {
                    continue;
                }
                let window = match mode {
                    ReadMode::Exact => 0,
                    ReadMode::Ahead => READ_AHEAD_BYTES,
                };
                let (start, span) = read_from_disk(shard, window, &run[i..])?;
                let end = start + span.len() as u64;
                while let Some(e) = run.get(i)
                    && e.pos + u64::from(e.frame_bytes) <= end
                {
                    let at = (e.pos - start) as usize;
                    let frame = span.slice(at..at + e.frame_bytes as usize);
                    decode_records(&frame, e, &path, (offset, visible), expect, &mut out)?;
                    i += 1;
                }
            }
        }
        Ok(out)
    }

    /// See [`Log::offset_for_timestamp`].
    pub fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> Result<Option<u64>> {
        let p = self.partition(topic, partition)?;
        let visible = p.offset_visible();
        let shard = &self.shards[p.shard as usize];
        let Some(entry) =
            p.entry_for_timestamp(timestamp, visible, &shard.sealed_runs)?
        else {
            return Ok(None);
        };
        let records = self.read(topic, partition, entry.base_offset, 1)?;
        Ok(records
            .iter()
            .find(|r| r.timestamp >= timestamp)
            .map(|r| r.offset))
    }

    /// A partition, with its index brought up to date with what its writer published.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        let t = self.topic(topic)?;
        let p = t
            .partitions
            .get(partition as usize)
            .cloned()
            .ok_or_else(|| Error::UnknownPartition {
                topic: topic.to_owned(),
                partition,
                partitions: t.partitions.len() as u32,
            })?;
        self.shards[p.shard as usize].catch_up();
        Ok(p)
    }
}

/// An open data directory: the embedded log store.
pub struct Log {
    inner: Arc<LogInner>,
    threads: Vec<JoinHandle<()>>,
    /// Compacts the committed offsets when retention asks.
    compactor: Option<JoinHandle<()>>,
    report: RecoveryReport,
    _lock: DirLock,
}

impl Log {
    /// Opens (creating if needed) the data directory of `config`, recovers every shard, and
    /// starts the shard writers.
    pub fn open(config: Config) -> Result<Log> {
        config.validate()?;
        let dir = config.dir.clone();
        fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let lock = DirLock::acquire(&dir)?;
        if config.io_backend == IoBackend::IoUring {
            io::probe_io_uring()?;
        }
        let mut meta = match Meta::load(&dir)? {
            Some(m) => {
                if m.shards as usize != config.shards {
                    return Err(Error::Config(format!(
                        "{} was created with {} shards; open it with Config::shards({})",
                        dir.display(),
                        m.shards,
                        m.shards
                    )));
                }
                m
            }
            None => Meta {
                version: META_VERSION,
                shards: config.shards as u32,
                commit_bytes_max: config.commit_bytes_max as u64,
                next_topic_id: 1,
                topics: Vec::new(),
            },
        };
        let mut shards = Vec::new();
        for id in 0..config.shards {
            let shard_dir = layout::shard_dir(&dir, id as u32);
            fs::create_dir_all(&shard_dir)
                .map_err(|e| Error::io("create directory", &shard_dir, e))?;
            shards.push(Arc::new(ShardShared::new(
                id as u32,
                &shard_dir,
                config.tail_cache_bytes,
                config.index_cache_bytes,
            )));
        }
        let mut by_id = HashMap::new();
        let mut topics = HashMap::new();
        for t in &meta.topics {
            let state = topic_state(t, &shards);
            for p in &state.partitions {
                by_id.insert((t.id, p.partition), Arc::clone(p));
            }
            topics.insert(t.name.clone(), Arc::new(state));
        }
        let commit_max = meta.commit_bytes_max.max(config.commit_bytes_max as u64) as usize;
        let params = RecoverParams {
            backend: config.io_backend,
            segment_bytes: config.segment_bytes,
            frame_bytes_max: commit_max as u64,
            window: unflushed_window_bytes(commit_max),
            repair: config.repair_truncate_damaged,
            prezero: config.segment_prezero,
            partitions: &by_id,
        };
        let mut report = RecoveryReport::default();
        let mut ends = Vec::new();
        for shared in &shards {
            ends.push(recover_shard(shared, &params, &mut report)?);
        }
        meta.commit_bytes_max = config.commit_bytes_max as u64;
        meta.store(&dir)?;
        let allowed = io::cores::allowed();
        let pins: Vec<Option<usize>> = (0..shards.len())
            .map(|shard| {
                config
                    .pin_threads
                    .then(|| config.writer_core(shard, &allowed))
            })
            .collect();
        let mut writer_cores: Vec<usize> = pins.iter().flatten().copied().collect();
        writer_cores.sort_unstable();
        writer_cores.dedup();
        let other_cores = io::cores::others(&allowed, &writer_cores);
        let mut threads = Vec::new();
        let mut started = Vec::new();
        for (shared, end) in shards.iter().zip(ends) {
            let start = WriterStart {
                segment_bytes: config.segment_bytes,
                commit_bytes_max: config.commit_bytes_max,
                durability: config.durability,
                backend: config.io_backend,
                prezero: config.segment_prezero,
                io_hooks: config.io_hooks.clone(),
                tail_cache_bytes: config.tail_cache_bytes,
                retention: config.retention(),
                pin_core: pins[shared.id as usize],
                helper_cores: other_cores.clone(),
                segment: end.segment,
                data_end: end.data_end,
            };
            let (tx, rx) = mpsc::channel();
            let thread_shared = Arc::clone(shared);
            let handle = std::thread::Builder::new()
                .name(format!("floodgate-shard-{}", shared.id))
                .spawn(move || {
                    let thread = format!("shard {} writer", thread_shared.id);
                    let writer = panic::catch_unwind(AssertUnwindSafe(|| {
                        Writer::new(Arc::clone(&thread_shared), start)
                    }))
                    .unwrap_or_else(|payload| Err(Error::panicked(thread, &*payload)));
                    match writer {
                        Ok(w) => {
                            let _ = tx.send(Ok(()));
                            w.run();
                        }
                        Err(e) => {
                            let _ = thread_shared.failed.set(e.clone());
                            let _ = tx.send(Err(e));
                        }
                    }
                })
                .map_err(|e| Error::io("spawn shard thread", &dir, e))?;
            let _ = shared.thread.set(handle.thread().clone());
            threads.push(handle);
            started.push(rx);
        }
        let readahead = shards
            .iter()
            .map(|s| Readahead::start(Arc::clone(s), config.io_backend))
            .collect::<Result<Vec<_>>>()?;
        let inner = Arc::new(LogInner {
            config,
            meta: Mutex::new(meta),
            topics_generation: AtomicU64::new(0),
            topics: RwLock::new(topics),
            shards,
            offsets: Arc::default(),
            groups: Mutex::new(HashMap::new()),
            readahead,
            writer_cores,
            other_cores,
        });
        let mut log = Log {
            inner,
            threads,
            compactor: None,
            report,
            _lock: lock,
        };
        for rx in started {
            rx.recv().unwrap_or(Err(Error::Closed))?;
        }
        log.start_offsets()?;
        Ok(log)
    }

    /// Loads the committed offsets, compacts them (the last commit of each key is written
    /// again if older ones exist), and starts the compaction thread that retention wakes.
    fn start_offsets(&mut self) -> Result<()> {
        let inner = &self.inner;
        if inner.topic(OFFSETS_TOPIC).is_ok() {
            let records = inner.offsets.load(inner)?;
            if records > inner.offsets.all().len() as u64 {
                inner
                    .offsets
                    .compact(&mut Producer::internal(Arc::clone(inner)))?;
            }
        }
        let offsets_topic = |inner: &LogInner| inner.topic(OFFSETS_TOPIC).ok().map(|t| t.id);
        let weak = Arc::downgrade(inner);
        let on_blocked: Arc<dyn Fn(u32, u32) + Send + Sync> =
            Arc::new(move |topic_id: u32, _partition: u32| {
                if let Some(inner) = weak.upgrade()
                    && offsets_topic(&inner) == Some(topic_id)
                {
                    inner.offsets.want_compaction();
                }
            });
        for shard in &inner.shards {
            shard.set_on_retention_blocked(Arc::clone(&on_blocked));
        }
        let (weak, store) = (Arc::downgrade(inner), Arc::clone(&inner.offsets));
        let handle = std::thread::Builder::new()
            .name("floodgate-offsets".into())
            .spawn(move || compaction_thread(weak, store))
            .map_err(|e| Error::io("spawn offsets thread", &inner.config.dir, e))?;
        self.compactor = Some(handle);
        inner.update_protection();
        Ok(())
    }

    /// The cores the shard writers are pinned to, in increasing order (empty with
    /// [`Config::pin_threads`] off).
    pub fn writer_cores(&self) -> &[usize] {
        &self.inner.writer_cores
    }

    /// The cores this process may use that no shard writer is pinned to (empty if the writers
    /// take them all). The shards' helper threads run there. Application threads that wake
    /// often (producers, consumers) are best there too when there are cores to spare; with a
    /// single one, pinning them to it ties them to whatever else runs there: on the 2-core
    /// development machine another process's 3 ms bursts every second held a producer pinned
    /// to core 0 while the writer's core idled, and the peak scenario's ack p99 was higher in
    /// 5 of 6 alternating runs than with the producer and consumer left to the scheduler.
    pub fn other_cores(&self) -> &[usize] {
        &self.inner.other_cores
    }

    /// Each shard's writer counters, by shard id.
    pub fn stats(&self) -> Vec<ShardStats> {
        self.inner
            .shards
            .iter()
            .map(|shard| shard.counters.snapshot())
            .collect()
    }

    /// What recovery found and did when this log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Index entries held in memory, over all partitions: those of segments not sealed yet
    /// (sealed segments' entries are read from their index files through a bounded cache).
    pub fn index_entries_in_memory(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|shard| {
                shard.catch_up();
                let table = shard.partitions.read().expect("partitions lock");
                table.iter().map(|p| p.entries_in_memory()).sum::<usize>()
            })
            .sum()
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Creates a topic.
    pub fn create_topic(&self, name: &str, config: TopicConfig) -> Result<()> {
        validate_topic_name(name)?;
        if name == OFFSETS_TOPIC {
            return Err(Error::ReservedTopicName(name.to_owned()));
        }
        self.inner.create_topic(name, config.partitions)
    }

    /// Deletes a topic. Its records become unreachable at once; their bytes go when retention
    /// removes the segments that hold them.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        if name == OFFSETS_TOPIC {
            return Err(Error::ReservedTopicName(name.to_owned()));
        }
        let mut meta = self.inner.meta.lock().expect("meta lock");
        if meta.topic(name).is_none() {
            return Err(Error::UnknownTopic(name.to_owned()));
        }
        let mut next = meta.clone();
        next.topics.retain(|t| t.name != name);
        next.store(&self.inner.config.dir)?;
        *meta = next;
        self.inner.topics.write().expect("topics lock").remove(name);
        self.inner.topics_generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// The topics, sorted by name.
    pub fn list_topics(&self) -> Vec<TopicInfo> {
        let meta = self.inner.meta.lock().expect("meta lock");
        let mut out: Vec<TopicInfo> = meta
            .topics
            .iter()
            .filter(|t| t.name != OFFSETS_TOPIC)
            .map(|t| TopicInfo {
                name: t.name.clone(),
                partitions: t.partitions,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// A consumer of `topic`: configure it, then `build()`.
    pub fn consumer(&self, topic: &str) -> crate::consumer::ConsumerBuilder {
        crate::consumer::ConsumerBuilder::new(Arc::clone(&self.inner), topic)
    }

    /// How far consumer group `group` is behind on `topic`, by its committed offsets.
    pub fn group_lag(&self, group: &str, topic: &str) -> Result<GroupLag> {
        validate_group_name(group)?;
        let t = self.inner.topic(topic)?;
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in 0..t.partitions.len() as u32 {
            let part = self.inner.partition(topic, p)?;
            let key = OffsetKey {
                group: group.to_owned(),
                topic_id: t.id,
                partition: p,
            };
            let committed = self.inner.offsets.get(&key);
            let next = part.offset_visible();
            let from = committed.unwrap_or_else(|| part.offset_earliest());
            partitions.push(PartitionLag {
                partition: p,
                committed,
                next,
                lag: next.saturating_sub(from),
            });
        }
        let lag = partitions.iter().map(|p| p.lag).sum();
        let live = self
            .inner
            .groups
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
                .map(|r| std::time::Duration::from_secs_f64(lag as f64 / r)),
        })
    }

    /// Forgets consumer group `group`'s committed offsets (on every topic), durably; with
    /// [`Config::protect_unconsumed`], retention no longer keeps records for it. Members in
    /// this process keep consuming from where they are.
    pub fn delete_group(&self, group: &str) -> Result<()> {
        validate_group_name(group)?;
        let keys: Vec<(OffsetKey, Option<u64>)> = self
            .inner
            .offsets
            .all()
            .into_iter()
            .filter(|(k, _)| k.group == group)
            .map(|(k, _)| (k, None))
            .collect();
        if !keys.is_empty() {
            let mut producer = Producer::internal(Arc::clone(&self.inner));
            self.inner.offsets.commit(&mut producer, &keys)?;
        }
        self.inner
            .groups
            .lock()
            .expect("groups lock")
            .retain(|(name, _), g| name != group || g.members() > 0);
        self.inner.update_protection();
        Ok(())
    }

    /// A new producer. Create one per thread; they are cheap.
    pub fn producer(&self) -> Producer {
        Producer::new(Arc::clone(&self.inner))
    }

    /// The earliest stored offset and the next offset (one past the last readable record) of a
    /// partition.
    pub fn offsets(&self, topic: &str, partition: u32) -> Result<(u64, u64)> {
        let p = self.inner.partition(topic, partition)?;
        Ok((p.offset_earliest(), p.offset_visible()))
    }

    /// Reads records of a partition from `offset` on: whole batches up to about `bytes_max`
    /// bytes (at least one batch, however large). Only acknowledged records are returned.
    /// Reading at the next offset returns nothing; outside `[earliest, next]` is an
    /// [`Error::OffsetOutOfRange`].
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        bytes_max: usize,
    ) -> Result<Vec<StoredRecord>> {
        self.inner.read(topic, partition, offset, bytes_max)
    }

    /// The earliest offset whose record has a timestamp at or after `timestamp` (ms), or `None`
    /// if no stored record is that recent.
    pub fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> Result<Option<u64>> {
        self.inner.offset_for_timestamp(topic, partition, timestamp)
    }

    /// Stops the writers after they have committed everything already sent, and releases the
    /// directory. Records sent after this fail with [`Error::Closed`].
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        for r in &self.inner.readahead {
            r.shutdown();
        }
        self.inner.offsets.shutdown();
        if let Some(t) = self.compactor.take() {
            let _ = t.join();
        }
        for shard in &self.inner.shards {
            shard.shutdown.store(true, Ordering::Release);
            if let Some(t) = shard.thread.get() {
                t.unpark();
            }
        }
        let mut panicked = false;
        for t in self.threads.drain(..) {
            panicked |= t.join().is_err();
        }
        if panicked {
            return Err(Error::Closed);
        }
        for shard in &self.inner.shards {
            if let Some(e @ Error::ShardFailed { .. }) = shard.stopped() {
                return Err(e);
            }
        }
        Ok(())
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// A read from disk in [`ReadMode::Ahead`] covers up to the end of its window on this grid
/// (when that much is published): the frames of other partitions read along land in the read
/// cache, so a consumer going through many partitions of a shard reads the log about
/// sequentially, once.
const READ_AHEAD_BYTES: u64 = crate::shard::readahead::WINDOW_BYTES;

/// How much a read takes from disk when the cache does not have the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadMode {
    /// Just the frames asked for: random reads, and rate-limited consumers, whose large reads
    /// would only delay the writer's commits on the same disk (peak scenario, 500k in and 80k
    /// out: ack p99 8-9 ms with 4 MiB windows read ahead, see `FETCH_BYTES_RATE_LIMITED`).
    Exact,
    /// Whole windows, and the next ones read ahead in the background: consumers draining a
    /// backlog as fast as they can.
    Ahead,
}

/// Reads, with one aligned read, the frames of `run` (one segment, position order) from the
/// first on, and with a `window`, beyond them to the end of the first frame's window on that
/// grid or to the next cached bytes, as far as published; caches and returns what it read,
/// (position, bytes).
fn read_from_disk(
    shard: &ShardShared,
    window: u64,
    run: &[BatchEntry],
) -> Result<(u64, bytes::Bytes)> {
    let (first, last) = (&run[0], &run[run.len() - 1]);
    let segment = shard
        .segments
        .read()
        .expect("segments lock")
        .get(&first.segment)
        .cloned()
        .ok_or_else(|| {
            Error::corrupt(shard.segment_path(first.segment), 0, "segment file missing")
        })?;
    // Stopping at the window's end and at cached bytes keeps reads from overlapping, when
    // readers are at different positions and frames cross windows (measured: 2x the bytes
    // read otherwise).
    let block = crate::segment::format::BLOCK_BYTES as u64;
    let start = first.pos - first.pos % block;
    let needed = last.pos + u64::from(last.frame_bytes);
    let end = match start.checked_div(window) {
        None => needed,
        Some(w) => {
            let cached_after = shard
                .read_cache
                .read()
                .expect("read cache lock")
                .next_chunk(first.segment, start);
            (w + 1)
                .saturating_mul(window)
                .min(cached_after.unwrap_or(u64::MAX))
                .min(shard.readable_end(first.segment))
                .max(needed)
        }
    };
    let span = read_span(&segment, start, end)?;
    shard
        .read_cache
        .write()
        .expect("read cache lock")
        .insert(first.segment, start, span.clone());
    Ok((start, span))
}

/// Reading nearby frames in one read beats reading them one by one: frames of a partition
/// closer than this are read together, gap included.
const READ_GAP_BYTES_MAX: u64 = 64 << 10;
/// The most bytes one read spans.
const READ_SPAN_BYTES_MAX: u64 = 4 << 20;

/// Splits a partition's entries into runs each read with one aligned read: same segment,
/// gaps of at most `READ_GAP_BYTES_MAX`, spans of at most `READ_SPAN_BYTES_MAX` (or one frame).
fn coalesce(entries: &[crate::index::BatchEntry]) -> Vec<&[crate::index::BatchEntry]> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=entries.len() {
        let split = i == entries.len() || {
            let (first, prev, next) = (&entries[start], &entries[i - 1], &entries[i]);
            let prev_end = prev.pos + u64::from(prev.frame_bytes);
            next.segment != first.segment
                || next.pos < prev_end
                || next.pos - prev_end > READ_GAP_BYTES_MAX
                || next.pos + u64::from(next.frame_bytes) - first.pos > READ_SPAN_BYTES_MAX
        };
        if split {
            runs.push(&entries[start..i]);
            start = i;
        }
    }
    runs
}

fn topic_state(t: &TopicMeta, shards: &[Arc<ShardShared>]) -> TopicState {
    let partitions = (0..t.partitions)
        .map(|p| {
            let shard = (t.first_shard as usize + p as usize) % shards.len();
            shards[shard].new_partition(t.id, p)
        })
        .collect();
    TopicState {
        id: t.id,
        partitions,
    }
}
