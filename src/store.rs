//! [`Store`]: the shards and the topics over them, which producers, consumers and the
//! [`crate::Log`] facade share. It creates and deletes topics (in the metadata file first),
//! finds a partition, and reads records by offset or time through the shard's read path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::index::Partition;
use crate::meta::OFFSETS_TOPIC;
use crate::meta::{Meta, TopicMeta};
use crate::segment::compression::Codec;
use crate::segment::format::BLOCK_BYTES;
use crate::segment::records::StoredRecord;
use crate::segment::{BatchEntry, LogPos, Offset, TopicPartition};
use crate::shard::ShardShared;
use crate::shard::read::READ_GAP_BYTES_MAX;
use crate::shard::read::{
    BatchesRead, LogScan, PartitionRead, ReadMode, read_partition, read_partition_batches, scan_log,
};
use crate::shard::readahead::Readahead;
use crate::shard::readahead::{READ_BYTES_MAX, ScanTag};

/// How a topic is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicConfig {
    partitions: u32,
    retention_age: Option<Duration>,
    retention_bytes: Option<u64>,
    message_bytes_max: Option<usize>,
    compression: Option<Codec>,
    timestamps: TimestampType,
}

/// Which time a topic's records carry (Kafka's `message.timestamp.type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TimestampType {
    /// The producer's (`CreateTime`, Kafka's default).
    #[default]
    CreateTime,
    /// The time the log appended them (`LogAppendTime`): a batch's newest timestamp is set
    /// to it and its attributes say so, so readers take it for every record of the batch.
    LogAppendTime,
}

impl TopicConfig {
    /// A topic with `partitions` partitions, keeping its records as long as the log does.
    pub fn new(partitions: u32) -> TopicConfig {
        TopicConfig {
            partitions,
            retention_age: None,
            retention_bytes: None,
            message_bytes_max: None,
            compression: None,
            timestamps: TimestampType::CreateTime,
        }
    }

    /// Keeps the topic's records for `age` (Kafka's `retention.ms` on a topic), at most the
    /// log's [`crate::Config::retention_age`]. Segments are shared by every topic of a shard,
    /// so this moves the topic's partitions' earliest offsets rather than deleting files: once
    /// a sealed segment's newest record is older than `age`, the topic's records in it and
    /// before it are no longer read (Kafka's rule, by whole segments), and the segment's file
    /// goes when no topic reads anything in it.
    pub fn retention_age(mut self, age: Duration) -> TopicConfig {
        self.retention_age = Some(age);
        self
    }

    /// Keeps at most about `bytes` of each of the topic's partitions (Kafka's
    /// `retention.bytes` on a topic, which is per partition): while a partition holds at least
    /// `bytes` without its oldest sealed segment, its records there are no longer read, so it
    /// keeps between `bytes` and `bytes` plus a segment. Segments still being written always
    /// stay. As with [`TopicConfig::retention_age`], a segment's file goes when no topic reads
    /// anything in it; the log's [`crate::Config::retention_bytes`] still bounds the whole log.
    pub fn retention_bytes(mut self, bytes: u64) -> TopicConfig {
        self.retention_bytes = Some(bytes);
        self
    }

    /// Its own retention by size per partition, if it has one.
    pub fn retention_size(&self) -> Option<u64> {
        self.retention_bytes
    }

    /// Accepts records (and a Kafka client's batches, [`crate::Producer::append_batch`]) of at
    /// most `bytes` bytes in this topic (Kafka's `max.message.bytes` on a topic), at most the
    /// log's [`crate::Config::record_bytes_max`]; a larger one is
    /// [`crate::Error::RecordTooLarge`].
    pub fn max_message_bytes(mut self, bytes: usize) -> TopicConfig {
        self.message_bytes_max = Some(bytes);
        self
    }

    /// Its own largest record or batch, if it has one.
    pub fn message_bytes(&self) -> Option<usize> {
        self.message_bytes_max
    }

    /// Stores the batches Kafka clients send ([`crate::Producer::append_batch`]) compressed
    /// with `codec` (Kafka's `compression.type` on a topic; [`Codec::None`] is its
    /// `uncompressed`): a batch in another codec has its records compressed again, its CRC
    /// recomputed and every other field kept, as Kafka's broker does. That costs the
    /// appending thread the codec's time (see docs/TUNING.md). Records sent one by one
    /// ([`crate::Producer::send`]) are framed by the shard writer, uncompressed, whatever the
    /// topic's codec.
    pub fn compression(mut self, codec: Codec) -> TopicConfig {
        self.compression = Some(codec);
        self
    }

    /// The codec it stores client batches in, if it has one.
    pub fn codec(&self) -> Option<Codec> {
        self.compression
    }

    /// Which time its records carry (Kafka's `message.timestamp.type` on a topic). With
    /// [`TimestampType::LogAppendTime`], a Kafka client's batch
    /// ([`crate::Producer::append_batch`]) gets the time it is appended as its newest timestamp
    /// and the attribute saying so (a new CRC; nothing else changes), as Kafka's broker does;
    /// records sent one by one get that time as their timestamp. Retention by age and lookups
    /// by time then go by it.
    pub fn timestamp_type(mut self, timestamps: TimestampType) -> TopicConfig {
        self.timestamps = timestamps;
        self
    }

    /// Which time its records carry.
    pub fn timestamps(&self) -> TimestampType {
        self.timestamps
    }

    /// Its partition count.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Its own retention by age, if it has one.
    pub fn retention(&self) -> Option<Duration> {
        self.retention_age
    }
}

/// A topic as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Its name.
    pub name: String,
    /// Its partition count.
    pub partitions: u32,
    /// Its id in this log: never reused, kept in the metadata and the topic records (a topic
    /// deleted and created again under its name gets a new one).
    pub id: u32,
    /// Its own retention by age, if it has one (else the log's applies).
    pub retention_age: Option<Duration>,
    /// Its own retention by size per partition, if it has one.
    pub retention_bytes: Option<u64>,
    /// Its own largest batch (or record), if it has one (else the log's `record_bytes_max`).
    pub message_bytes_max: Option<usize>,
    /// The codec it stores client batches in, if it has one (else as sent).
    pub compression: Option<Codec>,
    /// Which time its records carry.
    pub timestamp_type: TimestampType,
}

pub(crate) struct TopicState {
    pub id: u32,
    pub partitions: Vec<Arc<Partition>>,
    /// Its own largest batch or record, if it has one (else the log's `record_bytes_max`).
    pub message_bytes_max: Option<usize>,
    /// The codec its client batches are stored in, if it has one (else as sent).
    pub compression: Option<Codec>,
    /// Whether its batches are stamped with the time they are appended.
    pub log_append_time: bool,
}

impl TopicState {
    /// Topic `t`'s state, with `partitions`.
    fn of(t: &TopicMeta, partitions: Vec<Arc<Partition>>) -> TopicState {
        TopicState {
            id: t.id,
            partitions,
            message_bytes_max: t.message_bytes_max.map(|b| b as usize),
            compression: codec_of(t),
            log_append_time: t.log_append_time,
        }
    }
}

/// `codec` as the metadata names it (Kafka's topic config values).
fn codec_name(codec: Codec) -> &'static str {
    match codec {
        Codec::None => "uncompressed",
        c => c.name(),
    }
}

/// The codec topic `t` stores client batches in, if it has one.
fn codec_of(t: &TopicMeta) -> Option<Codec> {
    t.compression.as_deref().and_then(Codec::from_name)
}

/// What a scan of a shard's log reads next (see [`Store::next_stretch`]).
pub(crate) enum Stretch {
    /// The log whole from where it is.
    Scan,
    /// `[start, end)` of the segment it is in: a run of the stretches of the partitions read.
    Run(u64, u64),
    /// Nothing more of the segment it is in.
    None,
}

/// The shards, the topics, and the metadata that names them.
pub(crate) struct Store {
    pub config: Config,
    /// The metadata file's content; held while it is replaced.
    meta: Mutex<Meta>,
    /// Bumped whenever a topic is created or deleted, so producers can cache topics.
    topics_generation: AtomicU64,
    topics: RwLock<HashMap<String, Arc<TopicState>>>,
    /// By shard id.
    pub shards: Vec<Arc<ShardShared>>,
    /// Each shard's read-ahead thread, by shard id.
    readahead: Vec<Readahead>,
    /// Each shard's rewrite thread (`Config::rewrite_sealed_segments`).
    rewriters: Mutex<Vec<crate::shard::rewrite::Rewriter>>,
    /// The producer id handed out next.
    next_producer_id: Mutex<u64>,
}

/// Producer ids reserved in the metadata at a time.
const PRODUCER_ID_BLOCK: u64 = 1024;

impl Store {
    /// A store over recovered shards, their read-ahead threads, and the metadata and topics
    /// (from [`topic_states`]) they were recovered with.
    pub fn new(
        config: Config,
        meta: Meta,
        topics: HashMap<String, Arc<TopicState>>,
        shards: Vec<Arc<ShardShared>>,
        readahead: Vec<Readahead>,
    ) -> Store {
        Store {
            config,
            next_producer_id: Mutex::new(meta.producer_ids_reserved),
            meta: Mutex::new(meta),
            topics_generation: AtomicU64::new(0),
            topics: RwLock::new(topics),
            shards,
            readahead,
            rewriters: Mutex::new(Vec::new()),
        }
    }

    /// Starts each shard's rewrite thread.
    pub fn start_rewriters(&self) -> Result<()> {
        let room = (self.config.disk_bytes_max).map(|cap| (cap, self.config.segment_bytes));
        let mut rewriters = self.rewriters.lock().expect("rewriters lock");
        for shard in &self.shards {
            let settings = crate::shard::rewrite::RewriteSettings {
                backend: self.config.io_backend,
                disk_room: room,
                frame_bytes_max: self.config.frame_bytes_max(),
                window_bytes: self.config.rewrite_window_bytes,
            };
            let r = crate::shard::rewrite::Rewriter::start(Arc::clone(shard), settings)?;
            rewriters.push(r);
        }
        Ok(())
    }

    /// Stops the rewrite threads (a rewrite under way is abandoned).
    pub fn shutdown_rewriters(&self) {
        for r in self.rewriters.lock().expect("rewriters lock").drain(..) {
            r.shutdown();
        }
    }

    /// Waits until every sealed segment has its index file (a segment is queued for its
    /// rewrite once it has; the helper spreads that write over time), for a minute at most,
    /// and then until none waits for a rewrite or is being rewritten.
    pub fn rewrites_idle(&self) {
        if !self.config.rewrite_sealed {
            return;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        for shard in &self.shards {
            while shard.seals_pending() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            shard.rewrites.wait_idle();
        }
    }

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
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<()> {
        self.create_topic_with(name, TopicConfig::new(partitions))
    }

    /// Creates a topic as `config` says (the name is already validated).
    pub fn create_topic_with(&self, name: &str, config: TopicConfig) -> Result<()> {
        let partitions = config.partitions();
        let retention_ms = self.topic_retention_ms(name, config.retention())?;
        let message_bytes_max = self.topic_message_bytes_max(name, config.message_bytes())?;
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
            retention_ms,
            retention_bytes: config.retention_size(),
            message_bytes_max,
            compression: config.codec().map(|c| codec_name(c).to_owned()),
            log_append_time: config.timestamps() == TimestampType::LogAppendTime,
        };
        let mut next = meta.clone();
        next.next_topic_id += 1;
        next.topics.push(t.clone());
        next.store(&self.config.dir)?;
        *meta = next;
        if name == OFFSETS_TOPIC {
            for shard in &self.shards {
                shard.compacted_topic.store(t.id, Ordering::Relaxed);
            }
        }
        self.topics
            .write()
            .expect("topics lock")
            .insert(name.to_owned(), Arc::new(topic_state(&t, &self.shards)));
        self.topics_generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Gives topic `name` `total` partitions, more than it has; returns its id. The new
    /// partitions go to shards as the topic's first ones did (partition p on shard
    /// `(first_shard + p) % shards`), so an open finds them from the metadata alone.
    pub fn add_partitions(&self, name: &str, total: u32) -> Result<u32> {
        if total > crate::config::PARTITIONS_MAX {
            return Err(Error::InvalidPartitionCount {
                asked: total,
                max: crate::config::PARTITIONS_MAX,
            });
        }
        let mut meta = self.meta.lock().expect("meta lock");
        let Some(t) = meta.topic(name).cloned() else {
            return Err(Error::UnknownTopic(name.to_owned()));
        };
        if total <= t.partitions {
            return Err(Error::PartitionCountNotIncreased {
                topic: name.to_owned(),
                partitions: t.partitions,
                asked: total,
            });
        }
        meta.check_room_for(total - t.partitions)?;
        let mut next = meta.clone();
        for topic in next.topics.iter_mut().filter(|x| x.id == t.id) {
            topic.partitions = total;
        }
        next.store(&self.config.dir)?;
        *meta = next;
        let mut topics = self.topics.write().expect("topics lock");
        let mut partitions = topics
            .get(name)
            .map(|s| s.partitions.clone())
            .unwrap_or_default();
        for p in partitions.len() as u32..total {
            partitions.push(new_partition(&t, p, &self.shards));
        }
        topics.insert(name.to_owned(), Arc::new(TopicState::of(&t, partitions)));
        self.topics_generation.fetch_add(1, Ordering::AcqRel);
        Ok(t.id)
    }

    /// Gives topic `name` the configs of its own that `config` has (all of them at once, in
    /// one write of the metadata; its partition count is not among them), and none of those
    /// `config` leaves unset.
    pub fn set_topic_configs(&self, name: &str, config: &TopicConfig) -> Result<()> {
        let retention_ms = self.topic_retention_ms(name, config.retention())?;
        let message_bytes_max = self.topic_message_bytes_max(name, config.message_bytes())?;
        self.set_topic_config(name, |t| {
            t.retention_ms = retention_ms;
            t.retention_bytes = config.retention_size();
            t.message_bytes_max = message_bytes_max;
            t.compression = config.codec().map(|c| codec_name(c).to_owned());
            t.log_append_time = config.timestamps() == TimestampType::LogAppendTime;
        })
    }

    /// Sets (or with `None` clears) topic `name`'s own retention by age.
    pub fn set_topic_retention(&self, name: &str, age: Option<Duration>) -> Result<()> {
        let retention_ms = self.topic_retention_ms(name, age)?;
        self.set_topic_config(name, |t| t.retention_ms = retention_ms)
    }

    /// Sets (or with `None` clears) topic `name`'s own retention by size per partition.
    pub fn set_topic_retention_bytes(&self, name: &str, bytes: Option<u64>) -> Result<()> {
        self.set_topic_config(name, |t| t.retention_bytes = bytes)
    }

    /// Sets (or with `None` clears) topic `name`'s own largest batch.
    pub fn set_topic_message_bytes_max(&self, name: &str, bytes: Option<usize>) -> Result<()> {
        let bytes = self.topic_message_bytes_max(name, bytes)?;
        self.set_topic_config(name, |t| t.message_bytes_max = bytes)
    }

    /// Sets (or with `None` clears) the codec topic `name` stores client batches in.
    pub fn set_topic_compression(&self, name: &str, codec: Option<Codec>) -> Result<()> {
        self.set_topic_config(name, |t| {
            t.compression = codec.map(|c| codec_name(c).to_owned())
        })
    }

    /// Sets which time topic `name`'s records carry.
    pub fn set_topic_timestamp_type(&self, name: &str, timestamps: TimestampType) -> Result<()> {
        self.set_topic_config(name, |t| {
            t.log_append_time = timestamps == TimestampType::LogAppendTime
        })
    }

    /// Changes topic `name`'s configs in the metadata as `change` does, then gives its
    /// partitions and producers the new ones.
    fn set_topic_config(&self, name: &str, change: impl FnOnce(&mut TopicMeta)) -> Result<()> {
        let mut meta = self.meta.lock().expect("meta lock");
        let Some(mut t) = meta.topic(name).cloned() else {
            return Err(Error::UnknownTopic(name.to_owned()));
        };
        change(&mut t);
        let mut next = meta.clone();
        for topic in next.topics.iter_mut().filter(|x| x.name == name) {
            *topic = t.clone();
        }
        next.store(&self.config.dir)?;
        *meta = next;
        let mut topics = self.topics.write().expect("topics lock");
        if let Some(state) = topics.get(name) {
            for p in &state.partitions {
                p.set_retention_ms(t.retention_ms);
                p.set_retention_bytes(t.retention_bytes);
            }
            let partitions = state.partitions.clone();
            topics.insert(name.to_owned(), Arc::new(TopicState::of(&t, partitions)));
        }
        // Producers cache topics: they see the change at their next send.
        self.topics_generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// A topic's own largest batch, refused when zero or above the log's `record_bytes_max`.
    fn topic_message_bytes_max(&self, name: &str, bytes: Option<usize>) -> Result<Option<u64>> {
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        let log = self.config.record_bytes_max;
        if bytes == 0 || bytes > log {
            return Err(Error::TopicMessageBytesAboveLog {
                topic: name.to_owned(),
                asked: bytes,
                log,
            });
        }
        Ok(Some(bytes as u64))
    }

    /// A topic's own retention in milliseconds, refused when it would keep records longer
    /// than the log does: segments are shared, and the log's retention deletes them.
    fn topic_retention_ms(&self, name: &str, age: Option<Duration>) -> Result<Option<u64>> {
        let Some(age) = age else {
            return Ok(None);
        };
        let log_age = self.config.retention_age;
        if age.is_zero() || log_age.is_some_and(|log| age > log) {
            return Err(Error::TopicRetentionAboveLog {
                topic: name.to_owned(),
                asked: age,
                log: log_age,
            });
        }
        Ok(Some(age.as_millis().try_into().unwrap_or(u64::MAX)))
    }

    /// Deletes a topic: unreachable at once, its bytes gone when retention removes them.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let mut meta = self.meta.lock().expect("meta lock");
        if meta.topic(name).is_none() {
            return Err(Error::UnknownTopic(name.to_owned()));
        }
        let mut next = meta.clone();
        next.topics.retain(|t| t.name != name);
        next.store(&self.config.dir)?;
        *meta = next;
        if let Some(t) = self.topics.write().expect("topics lock").remove(name) {
            for p in &t.partitions {
                p.set_deleted();
            }
        }
        self.topics_generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// A producer id never handed out before in this log (see [`crate::Log::new_producer_id`]).
    pub fn new_producer_id(&self) -> Result<u64> {
        let mut next = self.next_producer_id.lock().expect("producer ids lock");
        let mut meta = self.meta.lock().expect("meta lock");
        if *next >= meta.producer_ids_reserved {
            let mut reserved = meta.clone();
            reserved.producer_ids_reserved = *next + PRODUCER_ID_BLOCK;
            reserved.store(&self.config.dir)?;
            *meta = reserved;
        }
        let id = *next;
        *next += 1;
        Ok(id)
    }

    /// The metadata as it is now.
    pub fn meta(&self) -> Meta {
        self.meta.lock().expect("meta lock").clone()
    }

    /// The user's topics (not floodgate's own), sorted by name.
    pub fn list_topics(&self) -> Vec<TopicInfo> {
        let meta = self.meta.lock().expect("meta lock");
        let mut out: Vec<TopicInfo> = meta
            .topics
            .iter()
            .filter(|t| t.name != OFFSETS_TOPIC)
            .map(|t| TopicInfo {
                name: t.name.clone(),
                partitions: t.partitions,
                id: t.id,
                retention_age: t.retention_ms.map(Duration::from_millis),
                retention_bytes: t.retention_bytes,
                message_bytes_max: t.message_bytes_max.map(|b| b as usize),
                compression: codec_of(t),
                timestamp_type: if t.log_append_time {
                    TimestampType::LogAppendTime
                } else {
                    TimestampType::CreateTime
                },
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Stops every shard's read-ahead thread.
    pub fn shutdown_readahead(&self) {
        for r in &self.readahead {
            r.shutdown();
        }
    }

    /// Every topic, by id (topics of the metadata, floodgate's own included).
    pub fn topics_by_id(&self) -> HashMap<u32, Arc<TopicState>> {
        let topics = self.topics.read().expect("topics lock");
        topics.values().map(|t| (t.id, Arc::clone(t))).collect()
    }

    /// See [`crate::Log::read`].
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: Offset,
        bytes_max: usize,
    ) -> Result<Vec<StoredRecord>> {
        self.read_with(topic, partition, offset, bytes_max, ReadMode::Exact)
    }

    /// [`Store::read`], choosing how much to read from disk on a cache miss.
    pub fn read_with(
        &self,
        topic: &str,
        partition: u32,
        offset: Offset,
        bytes_max: usize,
        mode: ReadMode,
    ) -> Result<Vec<StoredRecord>> {
        let read = self.read_before(topic, partition, offset, bytes_max, mode, None)?;
        Ok(read.records)
    }

    /// [`Store::read_with`], taking only batches that lie before `before` in the shard's log
    /// (none if the batch holding `offset` does not): a reader of many partitions moves
    /// through the log in position order, so each region is read from disk once.
    pub fn read_before(
        &self,
        topic: &str,
        partition: u32,
        offset: Offset,
        bytes_max: usize,
        mode: ReadMode,
        before: Option<LogPos>,
    ) -> Result<PartitionRead> {
        self.read_in_range(topic, partition, offset, |shard, readahead, p| {
            let segment_bytes = self.config.segment_bytes;
            let limits = (mode, before);
            read_partition(
                shard,
                readahead,
                segment_bytes,
                p,
                offset,
                bytes_max,
                limits,
            )
        })
    }

    /// The stored batches of a partition from the one holding `offset` on: see
    /// [`read_partition_batches`].
    pub fn read_batches(
        &self,
        topic: &str,
        partition: u32,
        offset: Offset,
        bytes_max: usize,
        mode: ReadMode,
    ) -> Result<BatchesRead> {
        self.read_in_range(topic, partition, offset, |shard, readahead, p| {
            let segment_bytes = self.config.segment_bytes;
            read_partition_batches(shard, readahead, segment_bytes, p, offset, bytes_max, mode)
        })
    }

    /// Runs `read` on a partition whose stored range holds `offset` (else
    /// [`Error::OffsetOutOfRange`]). Retention may delete the segment (or its index file) while
    /// `read` reads it: a failure with the offset out of range by then is that, not the log
    /// damaged.
    fn read_in_range<T>(
        &self,
        topic: &str,
        partition: u32,
        offset: Offset,
        read: impl FnOnce(&ShardShared, &Readahead, &Partition) -> Result<T>,
    ) -> Result<T> {
        let p = self.partition(topic, partition)?;
        let out_of_range = || {
            let (earliest, next) = (p.offset_earliest(), p.offset_acked());
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
        let shard = p.shard as usize;
        read(&self.shards[shard], &self.readahead[shard], &p)
            .map_err(|e| out_of_range().unwrap_or(e))
    }

    /// Scans shard `shard`'s log from `at` in position order into `out`: see [`scan_log`].
    pub fn scan_log(
        &self,
        shard: u32,
        at: LogPos,
        (bytes_max, mode): (usize, ReadMode),
        out: &mut LogScan,
    ) -> Result<()> {
        let s = shard as usize;
        let segment_bytes = self.config.segment_bytes;
        scan_log(
            &self.shards[s],
            &self.readahead[s],
            segment_bytes,
            at,
            bytes_max,
            mode,
            out,
        )
    }

    /// Where a scan of shard `shard`'s log from `at` (a frame's start) reads next, for the
    /// partitions `wanted` says: in a rewritten segment, which holds each partition's frames
    /// together (`shard::extents`), only the stretches of those partitions: the first run of
    /// them from `at` on, at most `bytes_max` of it (read exactly), or none left in the
    /// segment; elsewhere the log whole from `at`. With `ahead` (how far runs were asked to be
    /// read ahead in this segment, and who reads), the next runs are read ahead as far as
    /// [`crate::shard::readahead::Readahead::prefetch_bytes`] says, and the reader counts as
    /// reading at `at` for those of its group scanning the log after the rewritten segments
    /// ([`crate::shard::readahead::Readahead::touch`]). `runs` is scratch space.
    pub(crate) fn next_stretch(
        &self,
        shard: u32,
        at: LogPos,
        wanted: impl Fn(TopicPartition) -> bool,
        bytes_max: usize,
        ahead: Option<(&mut LogPos, ScanTag)>,
        runs: &mut Vec<(u64, u64)>,
    ) -> Stretch {
        let s = shard as usize;
        let Some(extents) = self.shards[s].extents(at.segment) else {
            return Stretch::Scan;
        };
        let limits = (READ_GAP_BYTES_MAX, READ_BYTES_MAX - BLOCK_BYTES as u64);
        let first = (limits.0, limits.1.min(bytes_max.max(1) as u64));
        extents.runs(at.pos, &wanted, first, 1, runs);
        let Some(&(start, end)) = runs.first() else {
            return Stretch::None;
        };
        if let Some((asked, tag)) = ahead {
            self.readahead[s].touch(at, tag);
            // Once less than half of the budget ahead is asked for, the runs within it, from
            // the first not asked for yet (asking a little at every scan made reads of a few
            // blocks, and more frames crossing from one read into the next).
            let budget = self.readahead[s].prefetch_bytes(&self.shards[s]);
            let from = match *asked {
                a if a.segment == at.segment && a.pos > start => a.pos,
                _ => start,
            };
            if from < start + budget / 2 {
                extents.runs(from, &wanted, limits, start + budget - from, runs);
                if let Some(&(_, last)) = runs.last() {
                    self.readahead[s].prefetch(&self.shards[s], at.segment, runs);
                    *asked = LogPos::new(at.segment, last);
                }
            }
        }
        Stretch::Run(start, end)
    }

    /// Counts `bytes` of frames a scan of shard `shard`'s log handed to a reader.
    pub fn count_frames_read(&self, shard: u32, bytes: u64) {
        let counters = &self.shards[shard as usize].counters;
        crate::shard::WriterCounters::add(&counters.read_frame_bytes, bytes);
    }

    /// The end of shard `shard`'s published log: frames published later lie past it.
    pub fn acked_end(&self, shard: u32) -> LogPos {
        *self.shards[shard as usize]
            .acked_end
            .lock()
            .expect("acked end lock")
    }

    /// The stored batch holding `offset` of a partition, from the index (the batch itself is
    /// not read): how far to skip past a batch that fails to read.
    pub fn batch_holding(&self, topic: &str, partition: u32, offset: Offset) -> Result<BatchEntry> {
        let p = self.partition(topic, partition)?;
        let shard = &self.shards[p.shard as usize];
        let entries = crate::shard::read::again_if_moved(shard, || {
            p.entries_from(offset, 1, p.offset_acked(), &shard.sealed_runs)
        })?;
        entries.first().copied().ok_or(Error::OffsetOutOfRange {
            topic: topic.to_owned(),
            partition,
            offset,
            earliest: p.offset_earliest(),
            next: p.offset_acked(),
        })
    }

    /// See [`crate::Log::offset_for_timestamp`].
    pub fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp: i64,
    ) -> Result<Option<Offset>> {
        let p = self.partition(topic, partition)?;
        let visible = p.offset_acked();
        let shard = &self.shards[p.shard as usize];
        let found = crate::shard::read::again_if_moved(shard, || {
            p.entry_for_timestamp(timestamp, visible, &shard.sealed_runs)
        })?;
        let Some(entry) = found else {
            return Ok(None);
        };
        // Records below the partition's start are not read, though their batches are stored.
        let mut at = entry.base_offset.max(p.offset_earliest());
        while at < visible {
            let records = self.read(topic, partition, at, 1)?;
            let Some(last) = records.last() else {
                break;
            };
            if let Some(r) = records.iter().find(|r| r.timestamp >= timestamp) {
                return Ok(Some(r.offset));
            }
            at = last.offset + 1;
        }
        Ok(None)
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

/// The topics of `meta`, each partition made in its shard's table (once per open: the tables
/// only grow).
pub(crate) fn topic_states(
    meta: &Meta,
    shards: &[Arc<ShardShared>],
) -> HashMap<String, Arc<TopicState>> {
    meta.topics
        .iter()
        .map(|t| (t.name.clone(), Arc::new(topic_state(t, shards))))
        .collect()
}

fn topic_state(t: &TopicMeta, shards: &[Arc<ShardShared>]) -> TopicState {
    let partitions = (0..t.partitions)
        .map(|p| new_partition(t, p, shards))
        .collect();
    TopicState::of(t, partitions)
}

/// Partition `p` of topic `t`, made in its shard's table with the topic's own retention.
fn new_partition(t: &TopicMeta, p: u32, shards: &[Arc<ShardShared>]) -> Arc<Partition> {
    let shard = (t.first_shard as usize + p as usize) % shards.len();
    let partition = shards[shard].new_partition(t.id, p);
    partition.set_retention_ms(t.retention_ms);
    partition.set_retention_bytes(t.retention_bytes);
    partition
}
