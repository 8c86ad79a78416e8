//! [`Log`]: the embedded log store's facade. It opens a data directory (lock, metadata,
//! recovery of every shard, the writer, helper and read-ahead threads, the committed offsets),
//! hands out producers and consumers, and closes it all. The work is done below it: topics and
//! reads in [`crate::store`], writing in `shard`, groups in [`crate::consumer`].

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use crate::batches::{BatchesAsk, PartitionBatches};
use crate::config::{COMMIT_BYTES_MAX_DEFAULT, Config};
use crate::consumer::ConsumerBuilder;
use crate::consumer::groups::{GroupLag, GroupOffset, Groups};
use crate::consumer::offsets::{OFFSETS_TOPIC, compaction_thread};
use crate::error::{Error, Result};
use crate::io::{self, IoBackend};
use crate::layout;
use crate::meta::{DirLock, META_VERSION, Meta, validate_topic_name};
use crate::producer::Producer;
use crate::segment::records::StoredRecord;
use crate::segment::{LogPos, Offset, TopicPartition};
use crate::shard::read::ReadMode;
use crate::shard::readahead::Readahead;
use crate::shard::rebuild::{rebuild_meta, shard_folders};
use crate::shard::recovery::{
    RecoverParams, RecoveryReport, holds_frames, recover_shard, unflushed_window_bytes,
};
use crate::shard::stats::ShardStats;
use crate::shard::writer::{Writer, WriterStart};
use crate::shard::{ShardShared, Waiter};
use crate::store::{Store, TopicConfig, TopicInfo, topic_states};

/// An open data directory: the embedded log store.
pub struct Log {
    store: Arc<Store>,
    groups: Arc<Groups>,
    /// The shard writers' threads.
    threads: Vec<JoinHandle<()>>,
    /// Compacts the committed offsets when retention asks.
    compactor: Option<JoinHandle<()>>,
    report: RecoveryReport,
    /// The cores the shard writers are pinned to (none when not pinned), and the others of
    /// those the process may use.
    writer_cores: Vec<usize>,
    other_cores: Vec<usize>,
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
        let mut meta_rebuilt = Vec::new();
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
            None => match refuse_data_without_meta(&dir) {
                Ok(()) => Meta {
                    version: META_VERSION,
                    shards: config.shards as u32,
                    commit_bytes_max: config.commit_bytes_max as u64,
                    next_topic_id: 1,
                    topics: Vec::new(),
                    producer_ids_reserved: 0,
                },
                Err(_) if config.repair_truncate_damaged => {
                    let shards = shard_folders(&dir);
                    if shards as usize != config.shards {
                        return Err(Error::Config(format!(
                            "{} has {shards} shard folders; open it with Config::shards({shards})",
                            dir.display()
                        )));
                    }
                    let frames_max = config.commit_bytes_max.max(COMMIT_BYTES_MAX_DEFAULT);
                    let rebuilt = rebuild_meta(&dir, shards, frames_max as u64)?;
                    // Stored before anything else is written, so the ids it reserves hold.
                    rebuilt.meta.store(&dir)?;
                    meta_rebuilt = rebuilt.lines;
                    rebuilt.meta
                }
                Err(e) => return Err(e),
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
        if let Some(t) = meta.topic(OFFSETS_TOPIC) {
            for shard in &shards {
                shard.compacted_topic.store(t.id, Ordering::Relaxed);
            }
        }
        let topics = topic_states(&meta, &shards);
        let by_id = topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .map(|p| (p.id(), Arc::clone(p)))
            .collect();
        let topic_counts = (meta.topics.iter())
            .map(|t| (t.id, (t.name.clone(), t.partitions)))
            .collect();
        let commit_max = meta.commit_bytes_max.max(config.commit_bytes_max as u64) as usize;
        let params = RecoverParams {
            backend: config.io_backend,
            segment_bytes: config.segment_bytes,
            frame_bytes_max: commit_max as u64,
            window: unflushed_window_bytes(commit_max),
            repair: config.repair_truncate_damaged,
            prezero: config.segment_prezero,
            partitions: &by_id,
            topics: &topic_counts,
            next_topic_id: meta.next_topic_id,
        };
        let mut report = RecoveryReport {
            meta_rebuilt,
            ..RecoveryReport::default()
        };
        let mut ends = Vec::new();
        for shared in &shards {
            ends.push(recover_shard(shared, &params, &mut report)?);
        }
        // Rewritten only when it changes: opening a log on a full disk to read it needs no
        // new space.
        let changed = meta.commit_bytes_max != config.commit_bytes_max as u64;
        meta.commit_bytes_max = config.commit_bytes_max as u64;
        if changed || !layout::meta_path(&dir).exists() {
            meta.store(&dir)?;
        }
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
                #[cfg(any(test, feature = "testing"))]
                io_hooks: config.io_hooks.clone(),
                tail_cache_bytes: config.tail_cache_bytes,
                retention: config.retention(),
                pin_core: pins[shared.id as usize],
                helper_cores: other_cores.clone(),
                segment: end.segment,
                data_end: end.data_end,
                checkpoint: end.checkpoint,
                producer_id_expiry: config.producer_id_expiry,
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
        let store = Arc::new(Store::new(config, meta, topics, shards, readahead));
        let groups = Arc::new(Groups::new(Arc::clone(&store)));
        let mut log = Log {
            store,
            groups,
            threads,
            compactor: None,
            report,
            writer_cores,
            other_cores,
            _lock: lock,
        };
        for rx in started {
            rx.recv().unwrap_or(Err(Error::Closed))?;
        }
        log.start_offsets()?;
        if log.store.config.rewrite_sealed {
            log.store.start_rewriters()?;
        }
        log.journal_recovery();
        for shard in &log.store.shards {
            shard.counters.reset();
        }
        Ok(log)
    }

    /// Appends what recovery changed to the recovery journal, a line each. Best effort: the
    /// report says the same, and a full disk must not keep a log from opening.
    fn journal_recovery(&self) {
        use std::io::Write;
        let lines = self.report.lines();
        if lines.is_empty() {
            return;
        }
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut text = String::new();
        for line in lines {
            text.push_str(&format!("{} {line}\n", utc_time(at)));
        }
        let path = layout::recovery_log_path(&self.store.config.dir);
        let _ = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_data()));
    }

    /// Loads the committed offsets (compacting them), then starts the compaction thread that
    /// retention wakes when a segment it would delete holds live commits.
    fn start_offsets(&mut self) -> Result<()> {
        self.report.commits_damaged = self.groups.load()?;
        // On a full disk the log still opens to be read; the records are written by the next
        // topic change (each compares every topic with its record).
        match self.groups.record_topics() {
            Err(e) if e.is_no_space() => {}
            other => other?,
        }
        let weak = Arc::downgrade(&self.groups);
        let on_blocked: Arc<dyn Fn(TopicPartition) + Send + Sync> =
            Arc::new(move |blocker: TopicPartition| {
                if let Some(groups) = weak.upgrade() {
                    groups.retention_blocked_by(blocker);
                }
            });
        for shard in &self.store.shards {
            shard.set_on_retention_blocked(Arc::clone(&on_blocked));
        }
        let (weak, offsets) = (
            Arc::downgrade(&self.store),
            Arc::clone(&self.groups.offsets),
        );
        let groups = Arc::downgrade(&self.groups);
        let compacted = move || {
            if let Some(groups) = groups.upgrade() {
                groups.update_protection();
            }
        };
        let handle = std::thread::Builder::new()
            .name("floodgate-offsets".into())
            .spawn(move || compaction_thread(weak, offsets, compacted))
            .map_err(|e| Error::io("spawn offsets thread", &self.store.config.dir, e))?;
        self.compactor = Some(handle);
        Ok(())
    }

    /// The cores the shard writers are pinned to, in increasing order (empty with
    /// [`Config::pin_threads`] off).
    pub fn writer_cores(&self) -> &[usize] {
        &self.writer_cores
    }

    /// The cores this process may use that no shard writer is pinned to (empty if the writers
    /// take them all). The shards' helper threads run there. Application threads that wake
    /// often (producers, consumers) are best there too when there are cores to spare; with a
    /// single one, pinning them to it ties them to whatever else runs there, while the
    /// scheduler could move them to an idle core (docs/TUNING.md, "Other processes").
    pub fn other_cores(&self) -> &[usize] {
        &self.other_cores
    }

    /// Waits until every sealed segment has its index file and none waits for its rewrite or
    /// is being rewritten ([`Config::rewrite_sealed_segments`]); returns at once without it. For benchmarks and
    /// tests that read a log the way it settles.
    pub fn wait_for_rewrites(&self) {
        self.store.rewrites_idle();
    }

    /// Each shard's writer counters, by shard id.
    pub fn stats(&self) -> Vec<ShardStats> {
        self.store
            .shards
            .iter()
            .map(|shard| shard.counters.snapshot())
            .collect()
    }

    /// Each shard's state, by shard id: whether it failed (and why: it then accepts no more
    /// writes) and whether it is full (its disk cap reached with nothing deletable: producers
    /// are held back).
    pub fn shard_states(&self) -> Vec<ShardState> {
        (self.store.shards.iter())
            .map(|shard| ShardState {
                failed: shard.stopped().map(|e| e.to_string()),
                full: shard.log_full.load(Ordering::Acquire),
            })
            .collect()
    }

    /// What recovery found and did when this log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Index entries held in memory, over all partitions: those of segments not sealed yet
    /// (sealed segments' entries are read from their index files through a bounded cache).
    pub fn index_entries_in_memory(&self) -> usize {
        self.store
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
        &self.store.config
    }

    /// Creates a topic.
    pub fn create_topic(&self, name: &str, config: TopicConfig) -> Result<()> {
        validate_topic_name(name)?;
        if name == OFFSETS_TOPIC {
            return Err(Error::ReservedTopicName(name.to_owned()));
        }
        self.store.create_topic_with(name, config)?;
        self.groups.record_topics()
    }

    /// Sets topic `name`'s own retention by age (see [`TopicConfig::retention_age`]), or with
    /// `None` leaves it to the log's. At most the log's retention by age.
    pub fn set_topic_retention(&self, name: &str, age: Option<std::time::Duration>) -> Result<()> {
        self.set_topic_config(name, |store| store.set_topic_retention(name, age))
    }

    /// Sets topic `name`'s own retention by size per partition (see
    /// [`TopicConfig::retention_bytes`]), or with `None` removes it.
    pub fn set_topic_retention_bytes(&self, name: &str, bytes: Option<u64>) -> Result<()> {
        self.set_topic_config(name, |store| store.set_topic_retention_bytes(name, bytes))
    }

    /// Sets topic `name`'s own largest record or batch (see
    /// [`TopicConfig::max_message_bytes`]), or with `None` leaves it to the log's
    /// `record_bytes_max`. Producers apply it from their next send.
    pub fn set_topic_max_message_bytes(&self, name: &str, bytes: Option<usize>) -> Result<()> {
        self.set_topic_config(name, |store| store.set_topic_message_bytes_max(name, bytes))
    }

    /// Sets the codec topic `name` stores Kafka clients' batches in (see
    /// [`TopicConfig::compression`]), or with `None` stores them as sent. Producers apply it
    /// from their next batch.
    pub fn set_topic_compression(
        &self,
        name: &str,
        codec: Option<crate::segment::compression::Codec>,
    ) -> Result<()> {
        self.set_topic_config(name, |store| store.set_topic_compression(name, codec))
    }

    /// Changes a config of topic `name` (not the offsets topic's) through `change`, then records
    /// the topics as groups keep them.
    fn set_topic_config(
        &self,
        name: &str,
        change: impl FnOnce(&Store) -> Result<()>,
    ) -> Result<()> {
        if name == OFFSETS_TOPIC {
            return Err(Error::ReservedTopicName(name.to_owned()));
        }
        change(&self.store)?;
        self.groups.record_topics()
    }

    /// Sets which time topic `name`'s records carry (see [`TopicConfig::timestamp_type`]).
    /// Producers apply it from their next send.
    pub fn set_topic_timestamp_type(
        &self,
        name: &str,
        timestamps: crate::store::TimestampType,
    ) -> Result<()> {
        self.set_topic_config(name, |store| {
            store.set_topic_timestamp_type(name, timestamps)
        })
    }

    /// Gives topic `name` the configs of its own that `config` has (retention by age and by
    /// size, largest record, codec, timestamp type), all at once, and removes those it leaves
    /// unset; `config`'s partition count is ignored ([`Log::create_partitions`] changes it).
    /// As Kafka's AlterConfigs does.
    pub fn set_topic_configs(&self, name: &str, config: &TopicConfig) -> Result<()> {
        self.set_topic_config(name, |store| store.set_topic_configs(name, config))
    }

    /// Whether topic `name`'s batches are stamped with the time they are appended.
    pub fn topic_log_append_time(&self, name: &str) -> Result<bool> {
        Ok(self.store.topic(name)?.log_append_time)
    }

    /// The codec topic `name` stores Kafka clients' batches in, if it has one of its own.
    pub fn topic_compression(
        &self,
        name: &str,
    ) -> Result<Option<crate::segment::compression::Codec>> {
        Ok(self.store.topic(name)?.compression)
    }

    /// Gives topic `name` `partitions` partitions in all, more than it has. Records already
    /// stored stay in their partitions (a key's records may land in another partition from
    /// now on, as in Kafka); producers see the new partitions at their next send, and the
    /// topic's consumer groups share them out among their members. The internal offsets
    /// topic keeps its count (groups are placed by it).
    pub fn create_partitions(&self, name: &str, partitions: u32) -> Result<()> {
        if name == OFFSETS_TOPIC {
            return Err(Error::ReservedTopicName(name.to_owned()));
        }
        let topic_id = self.store.add_partitions(name, partitions)?;
        self.groups.grow_topic(topic_id, partitions);
        self.groups.record_topics()
    }

    /// Deletes a topic. Its records become unreachable at once; their bytes go when retention
    /// removes the segments that hold them.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        if name == OFFSETS_TOPIC {
            return Err(Error::ReservedTopicName(name.to_owned()));
        }
        self.store.delete_topic(name)?;
        self.groups.record_topics()
    }

    /// The topics, sorted by name.
    pub fn list_topics(&self) -> Vec<TopicInfo> {
        self.store.list_topics()
    }

    /// A consumer of `topic`: configure it, then `build()`.
    pub fn consumer(&self, topic: &str) -> ConsumerBuilder {
        ConsumerBuilder::new(Arc::clone(&self.store), Arc::clone(&self.groups), topic)
    }

    /// How far consumer group `group` is behind on `topic`, by its committed offsets.
    pub fn group_lag(&self, group: &str, topic: &str) -> Result<GroupLag> {
        self.groups.lag(group, topic)
    }

    /// Forgets consumer group `group`'s committed offsets (on every topic), durably; with
    /// [`Config::protect_unconsumed`], retention no longer keeps records for it. Members in
    /// this process keep consuming from where they are.
    pub fn delete_group(&self, group: &str) -> Result<()> {
        self.groups.delete(group)
    }

    /// Commits `offsets` for consumer group `group`, durably (as durable as any acknowledged
    /// record), in one go: for groups whose members are not this process's consumers, such as
    /// the Kafka front's clients. They are the same committed offsets a [`crate::Consumer`] of the
    /// group starts from. Every topic and partition must exist and every metadata string be
    /// at most [`crate::OFFSET_METADATA_BYTES_MAX`] bytes, or nothing is committed.
    pub fn commit_group_offsets(&self, group: &str, offsets: &[GroupOffset]) -> Result<()> {
        self.groups.commit(group, offsets)
    }

    /// Consumer group `group`'s committed offsets, by topic and partition.
    pub fn group_offsets(&self, group: &str) -> Vec<GroupOffset> {
        self.groups.offsets_of(group)
    }

    /// Every consumer group with committed offsets, or members in this process, by name.
    pub fn list_groups(&self) -> Vec<String> {
        self.groups.names()
    }

    /// A producer id never handed out before by this log, for an idempotent producer (the
    /// Kafka front's InitProducerId): ids are reserved durably in blocks in the metadata, so
    /// one survives restarts and is never given twice while `meta.json` is kept.
    pub fn new_producer_id(&self) -> Result<u64> {
        self.store.new_producer_id()
    }

    /// A new producer. Create one per thread; they are cheap.
    pub fn producer(&self) -> Producer {
        Producer::new(Arc::clone(&self.store))
    }

    /// The earliest stored offset and the next offset (one past the last readable record) of a
    /// partition.
    pub fn offsets(&self, topic: &str, partition: u32) -> Result<(Offset, Offset)> {
        let p = self.store.partition(topic, partition)?;
        Ok((p.offset_earliest(), p.offset_acked()))
    }

    /// Deletes a partition's records below `before` (Kafka's DeleteRecords): its earliest
    /// offset becomes `before` at once, and durably before this returns; their bytes go once
    /// nothing in their segments is read any more. `before` may be at most the partition's
    /// next offset. Returns the earliest offset afterwards (which never goes down).
    pub fn delete_records(&self, topic: &str, partition: u32, before: Offset) -> Result<Offset> {
        if topic == OFFSETS_TOPIC {
            return Err(Error::ReservedTopicName(topic.to_owned()));
        }
        let p = self.store.partition(topic, partition)?;
        let next = p.offset_acked();
        if before > next {
            return Err(Error::OffsetOutOfRange {
                topic: topic.to_owned(),
                partition,
                offset: before,
                earliest: p.offset_earliest(),
                next,
            });
        }
        if p.trim_to(before) {
            crate::shard::retention::store_moved_starts(&self.store.shards[p.shard as usize])?;
        }
        Ok(p.offset_earliest())
    }

    /// Reads records of a partition from `offset` on: whole batches up to about `bytes_max`
    /// bytes (at least one batch, however large). Only acknowledged records are returned.
    /// Reading at the next offset returns nothing; outside `[earliest, next]` is an
    /// [`Error::OffsetOutOfRange`]. Offsets a repair cut off hold no records: a read from
    /// among them returns the records after them, or nothing if none came yet.
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: Offset,
        bytes_max: usize,
    ) -> Result<Vec<StoredRecord>> {
        self.store.read(topic, partition, offset, bytes_max)
    }

    /// Where each shard's acknowledged log ends now: [`Log::published_since`] waits for it to
    /// move. Taken before a read that found too little, so nothing published in between is
    /// missed.
    pub fn publish_mark(&self) -> PublishMark {
        let shards = self.store.shards.len() as u32;
        PublishMark((0..shards).map(|s| self.store.acked_end(s)).collect())
    }

    /// Resolves once some shard has acknowledged records past `mark` (at once if one has): a
    /// reader waiting for new records (a Kafka fetch's long poll) awaits this instead of
    /// polling. Wakes on every publish of any shard; the reader reads again to see whether
    /// its partitions moved.
    pub fn published_since(&self, mark: PublishMark) -> Published {
        Published {
            store: Arc::clone(&self.store),
            mark,
        }
    }

    /// Reads the stored record batches of a partition as they are on disk (Kafka RecordBatch
    /// v2 bytes, as a Kafka fetch response carries them), from the batch holding `offset` on:
    /// whole batches up to about `bytes_max` bytes, at least one, only acknowledged ones. The
    /// first batch may hold offsets before `offset`. Each batch's checksum is verified; a
    /// damaged one is [`Error::Corrupt`]. Returns the batches and the offset after the last.
    /// With `read_ahead`, a read from disk covers a whole window and the next ones are read in
    /// the background (a reader draining a backlog); without, only the batches asked for.
    pub fn read_batches(
        &self,
        topic: &str,
        partition: u32,
        offset: Offset,
        bytes_max: usize,
        read_ahead: bool,
    ) -> Result<(Vec<bytes::Bytes>, Offset)> {
        let mode = ReadMode::ahead_if(read_ahead);
        let read = self
            .store
            .read_batches(topic, partition, offset, bytes_max, mode)?;
        Ok((read.batches, read.next))
    }

    /// Reads the stored batches of many partitions of `topic` at once, as a Kafka fetch naming
    /// them asks: for each of `asks`, its partition's batches from the one holding its offset
    /// on, as [`Log::read_batches`] returns them, within its byte limit and `bytes_max` bytes
    /// in all (each partition at least one whole batch while there is room). Partitions of a
    /// shard are read together, in one pass over its log in position order, so the read costs
    /// about the bytes returned however many partitions are named. One answer per ask, in
    /// their order; each fails on its own (unknown partition, offset out of range, damage).
    pub fn read_batches_of(
        &self,
        topic: &str,
        asks: &[BatchesAsk],
        bytes_max: usize,
    ) -> Vec<Result<PartitionBatches>> {
        self.store.read_batches_of(topic, asks, bytes_max)
    }

    /// The earliest offset whose record has a timestamp at or after `timestamp` (ms), or `None`
    /// if no stored record is that recent.
    pub fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> Result<Option<Offset>> {
        self.store.offset_for_timestamp(topic, partition, timestamp)
    }

    /// The first offset holding the partition's largest record timestamp, and that timestamp;
    /// `None` if the partition holds no record (or the largest was in batches retention
    /// deleted).
    pub fn offset_of_max_timestamp(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Option<(Offset, i64)>> {
        let p = self.store.partition(topic, partition)?;
        let Some(max) = p.max_timestamp() else {
            return Ok(None);
        };
        let found = self.store.offset_for_timestamp(topic, partition, max)?;
        Ok(found.map(|o| (o, max)))
    }

    /// Stops the writers after they have committed everything already sent, and releases the
    /// directory. Records sent after this fail with [`Error::Closed`].
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        self.store.shutdown_rewriters();
        self.store.shutdown_readahead();
        self.groups.offsets.shutdown();
        if let Some(t) = self.compactor.take() {
            let _ = t.join();
        }
        for shard in &self.store.shards {
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
        for shard in &self.store.shards {
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

/// `secs` since the Unix epoch as an RFC 3339 UTC time (`2026-12-04T05:59:07Z`).
fn utc_time(secs: u64) -> String {
    // Days to a civil date: Howard Hinnant's `civil_from_days`.
    let days = (secs / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let s = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// A directory without `meta.json` is a new log only if it holds no log data: segment files
/// without their metadata cannot be read (which topic is which), and opening them as a new log
/// would hand their topic ids and offsets to new records.
fn refuse_data_without_meta(dir: &std::path::Path) -> Result<()> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let shard = entry.path();
        if !shard.is_dir() {
            continue;
        }
        let Ok(files) = fs::read_dir(&shard) else {
            continue;
        };
        // A segment without frames is a new log's first one, made before its metadata.
        found.extend(files.flatten().map(|f| f.path()).filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            match name.as_deref().map(layout::ShardFile::of) {
                Some(layout::ShardFile::Segment(_)) => holds_frames(p),
                Some(layout::ShardFile::Index(_) | layout::ShardFile::Producers(_)) => true,
                _ => false,
            }
        }));
    }
    if found.is_empty() {
        return Ok(());
    }
    found.sort();
    Err(Error::corrupt(
        layout::meta_path(dir),
        0,
        format!(
            "the metadata file is missing but the directory holds {} segment and index files \
             holding records (first: {}): without it the topics of the stored records are unknown. Restore \
             meta.json, or open with Config::repair_truncate_damaged(true) to rebuild it from \
             the segments, or move the data away to start a new log here",
            found.len(),
            found[0].display()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::utc_time;

    #[test]
    fn utc_times_are_rfc3339() {
        assert_eq!(utc_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_time(1_796_356_747), "2026-12-04T03:59:07Z");
        assert_eq!(utc_time(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}

/// Where each shard's acknowledged log ended when [`Log::publish_mark`] was called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishMark(Vec<LogPos>);

/// A future that resolves once some shard has published past a [`PublishMark`]
/// ([`Log::published_since`]).
pub struct Published {
    store: Arc<Store>,
    mark: PublishMark,
}

impl std::fmt::Debug for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Published")
            .field("mark", &self.mark)
            .finish()
    }
}

impl Published {
    fn moved(&self) -> bool {
        (self.mark.0.iter().enumerate()).any(|(s, &end)| self.store.acked_end(s as u32) != end)
    }
}

impl std::future::Future for Published {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.moved() {
            return std::task::Poll::Ready(());
        }
        for shard in &self.store.shards {
            shard.data_waiters.add(Waiter::Task(cx.waker().clone()));
        }
        // Look once more after registering: a publish in between woke no one.
        match self.moved() {
            true => std::task::Poll::Ready(()),
            false => std::task::Poll::Pending,
        }
    }
}

/// A shard's state ([`Log::shard_states`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardState {
    /// Why the shard stopped accepting writes, if it did (a failed write or flush).
    pub failed: Option<String>,
    /// Whether its disk cap is reached with nothing deletable (producers are held back).
    pub full: bool,
}
