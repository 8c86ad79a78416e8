//! Producing: routing a record to a partition, encoding it on the caller's thread, and handing
//! it to the partition's shard writer through this producer's own SPSC ring into that shard.
//!
//! A [`Producer`] is one per thread (it is `Send`, not `Sync`). Its [`Ack`] handles resolve from
//! the shard's published watermark, without a syscall or an allocation per record. Each ring
//! holds at most `ring_records` records waiting for the writer: that is the producer's
//! backpressure bound.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_utils::Backoff;

use crate::error::{Error, Result};
use crate::meta::OFFSETS_TOPIC;
use crate::shard::framing::Refusal;
use crate::shard::slots::REFUSED;
use std::collections::HashMap;

use crate::segment::compression::{Codec, recompress_batch};
use crate::segment::format::{encode_record_tail, stamp_log_append_time};
use crate::segment::{BatchView, Offset};
use crate::shard::{AckRing, Pending, Waiter};
use crate::store::Store;

/// How long [`Producer::send`] waits for room before giving up, by default.
pub const SEND_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// A record to produce. Borrowed: it is encoded during `send`.
#[derive(Debug, Clone, Default)]
pub struct Record<'a> {
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: Vec<(&'a str, Option<&'a [u8]>)>,
    partition: Option<u32>,
    timestamp: Option<i64>,
}

impl<'a> Record<'a> {
    /// A record with a value.
    pub fn new(value: &'a [u8]) -> Record<'a> {
        Record {
            value: Some(value),
            ..Record::default()
        }
    }

    /// A record with a null value (a tombstone, in Kafka's terms).
    pub fn tombstone() -> Record<'a> {
        Record::default()
    }

    /// Sets the key; keyed records go to partition `xxh3_64(key) % partitions` unless a
    /// partition is given. Records with neither key nor partition use a sticky partition
    /// (see [`STICKY_BYTES`]).
    pub fn key(mut self, key: &'a [u8]) -> Record<'a> {
        self.key = Some(key);
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: &'a str, value: Option<&'a [u8]>) -> Record<'a> {
        self.headers.push((key, value));
        self
    }

    /// Sends to this partition.
    pub fn partition(mut self, partition: u32) -> Record<'a> {
        self.partition = Some(partition);
        self
    }

    /// Sets the timestamp (milliseconds since the Unix epoch); the default is the send time.
    pub fn timestamp(mut self, ms: i64) -> Record<'a> {
        self.timestamp = Some(ms);
        self
    }
}

/// Where an acknowledged record is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Acked {
    /// Its partition.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: Offset,
}

struct ProducerRing {
    tx: rtrb::Producer<Pending>,
    ack: Arc<AckRing>,
    /// Record buffers the writer is done with, for reuse.
    recycled: rtrb::Consumer<Vec<u8>>,
    seq_next: u64,
}

/// A topic as this producer last saw it, with its sticky partition for keyless records.
struct CachedTopic {
    /// Each partition's route, densely: looking them up through the partitions' shared state
    /// would take a cache miss per record with many partitions.
    routes: Vec<Route>,
    sticky_partition: u32,
    sticky_bytes: usize,
    /// The largest record or batch the topic takes.
    bytes_max: usize,
    /// The codec it stores client batches in, if it has one.
    compression: Option<Codec>,
    /// Whether its batches are stamped with the time they are appended.
    log_append_time: bool,
}

/// Where a partition's records go: its shard, and its slot in that shard's partition table.
#[derive(Debug, Clone, Copy)]
struct Route {
    shard: u32,
    slot: u32,
}

/// Keyless records without a partition stick to one partition until this many bytes went
/// there, then move on (Kafka's sticky partitioner, with its default `batch.size`): batches
/// stay large while load still spreads over every partition.
pub const STICKY_BYTES: usize = 16 << 10;

/// Sends records; one per thread. Create with [`crate::Log::producer`].
pub struct Producer {
    log: Arc<Store>,
    rings: Vec<Option<ProducerRing>>,
    topics: HashMap<String, CachedTopic>,
    topics_generation: u64,
    /// Where this producer's sticky partitions start, so producers do not move in lockstep.
    sticky_seed: u32,
    send_timeout: Duration,
    /// Writes committed offsets (only floodgate's own producers may).
    internal: bool,
}

impl Producer {
    pub(crate) fn new(log: Arc<Store>) -> Producer {
        static PRODUCERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let shards = log.shards.len();
        Producer {
            topics_generation: log.topics_generation(),
            log,
            rings: (0..shards).map(|_| None).collect(),
            topics: HashMap::new(),
            sticky_seed: PRODUCERS
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0x9E37_79B9),
            send_timeout: SEND_TIMEOUT_DEFAULT,
            internal: false,
        }
    }

    /// A producer of floodgate's own records (committed offsets): the only kind that may
    /// write the internal offsets topic, and that a full shard still accepts.
    pub(crate) fn internal(log: Arc<Store>) -> Producer {
        Producer {
            internal: true,
            ..Producer::new(log)
        }
    }

    /// How long `send` waits for room in a full ring before failing with [`Error::Timeout`].
    pub fn set_send_timeout(&mut self, timeout: Duration) {
        self.send_timeout = timeout;
    }

    /// Sends a record, waiting (up to the send timeout) while this producer's ring is full.
    pub fn send(&mut self, topic: &str, record: Record<'_>) -> Result<Ack> {
        let timeout = self.send_timeout;
        self.send_one(topic, record, Some(timeout))
    }

    /// Sends a record, or fails at once with [`Error::Full`] when the ring is full.
    pub fn try_send(&mut self, topic: &str, record: Record<'_>) -> Result<Ack> {
        self.send_one(topic, record, None)
    }

    /// Appends a producer's RecordBatch v2, as a Kafka client sends it, to `partition` of
    /// `topic`, stored byte for byte in a frame of its own: the writer sets only its base
    /// offset and partition leader epoch, which its checksum does not cover. The batch is
    /// checked first (length, magic, CRC-32C, every record) and may be at most
    /// `record_bytes_max` bytes, or the topic's own limit ([`crate::TopicConfig::max_message_bytes`])
    /// ([`Error::RecordTooLarge`]); a malformed one is
    /// [`Error::InvalidBatch`], a transactional one [`Error::UnsupportedBatch`]. Compressed
    /// batches (gzip, snappy, lz4, zstd) are stored compressed; the library's readers
    /// decompress them.
    /// Waits (up to the send timeout) while the ring is full; the ack resolves to the batch's
    /// first offset, and its records take the offsets after it.
    pub fn append_batch(&mut self, topic: &str, partition: u32, batch: &[u8]) -> Result<Ack> {
        let timeout = self.send_timeout;
        self.append(topic, partition, batch, Some(timeout))
    }

    /// As [`Producer::append_batch`], but fails at once with [`Error::Full`] when the ring is
    /// full (or [`Error::LogFull`] when the log is).
    pub fn try_append_batch(&mut self, topic: &str, partition: u32, batch: &[u8]) -> Result<Ack> {
        self.append(topic, partition, batch, None)
    }

    /// As [`Producer::try_append_batch`], for a batch [`check_batch`] has checked already (a
    /// caller storing several batches all or none checks them all first): it is not checked
    /// again, but for its size against this log's limit.
    pub fn try_append_checked(
        &mut self,
        topic: &str,
        partition: u32,
        batch: &CheckedBatch<'_>,
    ) -> Result<Ack> {
        self.append_checked(topic, partition, batch, None)
    }

    fn append(
        &mut self,
        topic: &str,
        partition: u32,
        batch: &[u8],
        wait: Option<Duration>,
    ) -> Result<Ack> {
        let checked = check_batch(batch, self.log.config.record_bytes_max)?;
        self.append_checked(topic, partition, &checked, wait)
    }

    fn append_checked(
        &mut self,
        topic: &str,
        partition: u32,
        checked: &CheckedBatch<'_>,
        wait: Option<Duration>,
    ) -> Result<Ack> {
        self.topic(topic)?;
        let cached = &self.topics[topic];
        let recompressed = match cached.compression {
            Some(codec) if codec != checked.view.codec => {
                Some(recompress_batch(checked.bytes, codec).map_err(|e| Error::InvalidBatch(e.0))?)
            }
            _ => None,
        };
        let (batch, max) = (
            recompressed.as_deref().unwrap_or(checked.bytes),
            cached.bytes_max,
        );
        let log_append_time = cached.log_append_time;
        if batch.len() > max {
            return Err(Error::RecordTooLarge {
                bytes: batch.len(),
                max,
            });
        }
        let routes = &self.topics[topic].routes;
        let Some(&Route { shard, slot }) = routes.get(partition as usize) else {
            return Err(Error::UnknownPartition {
                topic: topic.to_owned(),
                partition,
                partitions: routes.len() as u32,
            });
        };
        let shard = shard as usize;
        if let Some(e) = self.log.shards[shard].stopped() {
            return Err(e);
        }
        let ring = Self::ring(&mut self.rings, &self.log, shard, self.internal);
        let mut tail = ring.recycled.pop().unwrap_or_default();
        tail.clear();
        tail.extend_from_slice(batch);
        if log_append_time {
            stamp_log_append_time(&mut tail, checked.append_ms.unwrap_or_else(now_ms));
        }
        let item = Pending {
            slot,
            timestamp: checked.view.base_timestamp,
            tail,
            batch: true,
        };
        let ack = self.push(shard, partition, item, wait)?;
        self.log.shards[shard].notify();
        Ok(ack)
    }

    fn send_one(&mut self, topic: &str, record: Record<'_>, wait: Option<Duration>) -> Result<Ack> {
        let mut ack = None;
        self.send_records(topic, std::iter::once(record), wait, |a| ack = Some(a))?;
        Ok(ack.expect("one record was sent"))
    }

    /// Sends many records to one topic, appending an [`Ack`] per record sent to `acks`. Cheaper
    /// per record than `send`: the topic is looked up, the clock read and the writer woken once
    /// per call. On an error, the records before the failing one are sent (their acks are in
    /// `acks`) and the rest are not.
    pub fn send_batch<'a>(
        &mut self,
        topic: &str,
        records: impl IntoIterator<Item = Record<'a>>,
        acks: &mut Vec<Ack>,
    ) -> Result<()> {
        let timeout = self.send_timeout;
        self.send_records(topic, records, Some(timeout), |a| acks.push(a))
    }

    /// Sends records until one fails; wakes the writers once at the end.
    fn send_records<'a>(
        &mut self,
        topic: &str,
        records: impl IntoIterator<Item = Record<'a>>,
        wait: Option<Duration>,
        mut sent: impl FnMut(Ack),
    ) -> Result<()> {
        self.topic(topic)?;
        // Take the cached topic out for the batch: one lookup per call, not per record.
        let (name, mut cached) = self.topics.remove_entry(topic).expect("cached above");
        let now = now_ms();
        let mut outcome = Ok(());
        for record in records {
            match self.enqueue(topic, &mut cached, record, wait, now) {
                Ok(ack) => sent(ack),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        self.topics.insert(name, cached);
        self.notify_all();
        outcome
    }

    /// Wakes the writers this producer has rings into.
    fn notify_all(&self) {
        for (shard, ring) in self.log.shards.iter().zip(&self.rings) {
            if ring.is_some() {
                shard.notify();
            }
        }
    }

    /// The topic, from this producer's cache while no topic was created or deleted since.
    fn topic(&mut self, name: &str) -> Result<()> {
        let generation = self.log.topics_generation();
        if generation != self.topics_generation {
            self.topics.clear();
            self.topics_generation = generation;
        }
        if !self.topics.contains_key(name) {
            if name == OFFSETS_TOPIC && !self.internal {
                return Err(Error::ReservedTopicName(name.to_owned()));
            }
            let state = self.log.topic(name)?;
            let count = state.partitions.len() as u32;
            self.topics.insert(
                name.to_owned(),
                CachedTopic {
                    routes: (state.partitions.iter())
                        .map(|p| Route {
                            shard: p.shard,
                            slot: p.slot,
                        })
                        .collect(),
                    sticky_partition: self.sticky_seed % count,
                    sticky_bytes: 0,
                    bytes_max: (state.message_bytes_max)
                        .unwrap_or(self.log.config.record_bytes_max),
                    compression: state.compression,
                    log_append_time: state.log_append_time,
                },
            );
        }
        Ok(())
    }

    /// Routes, encodes and queues one record; the caller wakes the writer.
    fn enqueue(
        &mut self,
        topic: &str,
        cached: &mut CachedTopic,
        r: Record<'_>,
        wait: Option<Duration>,
        now: i64,
    ) -> Result<Ack> {
        let mut record_bytes_max = cached.bytes_max;
        if self.internal {
            // A commit is written whatever limit the application's records have.
            record_bytes_max = record_bytes_max.max(crate::config::INTERNAL_RECORD_BYTES_MAX);
        }
        let count = cached.routes.len() as u32;
        let partition = match (r.partition, r.key) {
            (Some(p), _) if p < count => p,
            (Some(p), _) => {
                return Err(Error::UnknownPartition {
                    topic: topic.to_owned(),
                    partition: p,
                    partitions: count,
                });
            }
            (None, Some(key)) => partition_for_key(key, count),
            (None, None) => {
                if cached.sticky_bytes >= STICKY_BYTES {
                    cached.sticky_bytes = 0;
                    cached.sticky_partition = (cached.sticky_partition + 1) % count;
                }
                cached.sticky_bytes += r.value.map_or(0, <[u8]>::len);
                cached.sticky_partition
            }
        };
        let Route {
            shard: shard_id,
            slot,
        } = cached.routes[partition as usize];
        let shard_id = shard_id as usize;
        let shard = &self.log.shards[shard_id];
        if let Some(e) = shard.stopped() {
            return Err(e);
        }
        let ring = Self::ring(&mut self.rings, &self.log, shard_id, self.internal);
        let mut tail = ring.recycled.pop().unwrap_or_default();
        tail.clear();
        let headers: usize = r
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.map_or(0, <[u8]>::len) + 10)
            .sum();
        tail.reserve(20 + r.key.map_or(0, <[u8]>::len) + r.value.map_or(0, <[u8]>::len) + headers);
        encode_record_tail(&mut tail, r.key, r.value, &r.headers);
        if tail.len() > record_bytes_max {
            return Err(Error::RecordTooLarge {
                bytes: tail.len(),
                max: record_bytes_max,
            });
        }
        let item = Pending {
            slot,
            timestamp: match (cached.log_append_time, r.timestamp) {
                (false, Some(t)) => t,
                _ => now,
            },
            tail,
            batch: false,
        };
        self.push(shard_id, partition, item, wait)
    }

    /// Queues `item` (of `partition`) on this producer's ring into shard `shard_id`, waiting
    /// up to `wait` while the ring or the log is full; the caller wakes the writer.
    fn push(
        &mut self,
        shard_id: usize,
        partition: u32,
        item: Pending,
        wait: Option<Duration>,
    ) -> Result<Ack> {
        let shard = &self.log.shards[shard_id];
        let ring = Self::ring(&mut self.rings, &self.log, shard_id, self.internal);
        let seq = ring.seq_next;
        // The clock is read only once the ring is full (a read per record costs more than the
        // rest of a small record's hand-off): the wait starts then.
        let mut deadline = None;
        // A full log (disk cap reached, nothing deletable) holds records back like a full ring;
        // committed offsets still go through (their reserved segment), so groups can commit
        // and let retention free space.
        let internal = self.internal;
        let log_full = || !internal && shard.log_full.load(Ordering::Acquire);
        while ring.tx.slots() == 0 || log_full() {
            let full = log_full();
            let Some(wait) = wait else {
                return Err(if full {
                    Error::LogFull { shard: shard.id }
                } else {
                    Error::Full
                });
            };
            let now = Instant::now();
            let deadline = *deadline.get_or_insert(now + wait);
            if now >= deadline {
                return Err(if full {
                    Error::LogFull { shard: shard.id }
                } else {
                    Error::Timeout(wait)
                });
            }
            // Records queued by this call's caller may not have woken the writer yet.
            shard.notify();
            ring.ack.add_waiter(Waiter::Thread(std::thread::current()));
            if let Some(e) = shard.stopped() {
                return Err(e);
            }
            // The writer wakes us when it acknowledges; the timeout covers a wake-up that came
            // between the check above and the registration.
            std::thread::park_timeout((deadline - now).min(Duration::from_millis(10)));
        }
        ring.ack.slots.claim(seq);
        ring.tx.push(item).expect("the ring had a free slot");
        ring.seq_next += 1;
        Ok(Ack {
            ring: Arc::clone(&ring.ack),
            seq,
            partition,
        })
    }

    /// This producer's ring into `shard`, created on first use. A free function over the two
    /// fields, so the caller can keep borrowing the log meanwhile.
    fn ring<'a>(
        rings: &'a mut [Option<ProducerRing>],
        log: &Store,
        shard: usize,
        internal: bool,
    ) -> &'a mut ProducerRing {
        rings[shard].get_or_insert_with(|| {
            let capacity = log.config.ring_records;
            let (tx, rx) = rtrb::RingBuffer::new(capacity);
            let (recycle, recycled) = rtrb::RingBuffer::new(capacity);
            let ack = Arc::new(AckRing::new(capacity, &log.shards[shard]));
            log.shards[shard].register((rx, Arc::clone(&ack), recycle, internal));
            ProducerRing {
                tx,
                ack,
                recycled,
                seq_next: 0,
            }
        })
    }
}

/// A record batch [`check_batch`] found whole, for [`Producer::try_append_checked`].
#[derive(Debug, Clone, Copy)]
pub struct CheckedBatch<'a> {
    bytes: &'a [u8],
    view: BatchView<'a>,
    append_ms: Option<i64>,
}

impl<'a> CheckedBatch<'a> {
    /// The batch, to be stamped with `append_ms` if its topic stamps batches with the time
    /// they are appended ([`crate::TimestampType::LogAppendTime`]; else with the time it is
    /// queued): a server stamps every batch of a request alike and answers with that time.
    pub fn appended_at(mut self, append_ms: i64) -> CheckedBatch<'a> {
        self.append_ms = Some(append_ms);
        self
    }

    /// Its header, decoded.
    pub fn view(&self) -> &BatchView<'a> {
        &self.view
    }

    /// Its bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// Checks a record batch as [`Producer::append_batch`] does before storing it: at most
/// `bytes_max` bytes (the log's `record_bytes_max`), outside any transaction, and whole
/// (length, magic, CRC-32C, its records decompressed if they are compressed, and walked). A
/// caller with several batches that must be stored all or none checks them all first, then
/// appends them with [`Producer::try_append_checked`].
pub fn check_batch(batch: &[u8], bytes_max: usize) -> Result<CheckedBatch<'_>> {
    if batch.len() > bytes_max {
        return Err(Error::RecordTooLarge {
            bytes: batch.len(),
            max: bytes_max,
        });
    }
    if let Some(a) = batch.get(21..23) {
        let attributes = i16::from_be_bytes([a[0], a[1]]);
        let refuse = |what: &str| Err(Error::UnsupportedBatch(what.to_owned()));
        if attributes & 0x10 != 0 {
            return refuse("transactional batches: floodgate has no transactions");
        }
        if attributes & 0x20 != 0 {
            return refuse("control batches: floodgate has no transactions");
        }
    }
    let view = BatchView::decode(batch).map_err(|e| Error::InvalidBatch(e.0))?;
    if view.record_count == 0 {
        return Err(Error::InvalidBatch("a batch without records".into()));
    }
    view.check_records().map_err(|e| Error::InvalidBatch(e.0))?;
    Ok(CheckedBatch {
        bytes: batch,
        view,
        append_ms: None,
    })
}

/// The partition of a keyed record: `xxh3_64(key) % partitions`. Stable across versions and
/// platforms (xxh3 with seed 0), so a key always lands on the same partition.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(key) % u64::from(partitions)) as u32
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The acknowledgement of one sent record: wait on it, poll it, or `.await` it. Dropping it
/// without waiting is fine (fire and forget).
pub struct Ack {
    ring: Arc<AckRing>,
    seq: u64,
    partition: u32,
}

impl Ack {
    /// The partition the record was sent to.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The outcome, if known.
    pub fn try_get(&self) -> Option<Result<Acked>> {
        if self.seq < self.ring.seq_acked.load(Ordering::Acquire) {
            let offset = self.ring.slots.offset_of(self.seq);
            if offset & REFUSED != 0 {
                return Some(Err(match offset & !REFUSED {
                    r if r == Refusal::Fenced as u64 => Error::ProducerFenced,
                    _ => Error::OutOfOrderSequence,
                }));
            }
            return Some(Ok(Acked {
                partition: self.partition,
                offset: Offset(offset),
            }));
        }
        let e = self.ring.failed.get().cloned()?;
        // The writer publishes before it stops: look once more.
        if self.seq < self.ring.seq_acked.load(Ordering::Acquire) {
            return self.try_get();
        }
        Some(Err(e))
    }

    /// Blocks until the record is acknowledged (or its shard fails).
    pub fn wait(self) -> Result<Acked> {
        loop {
            if let Some(r) = self.wait_timeout(Duration::from_secs(3600)) {
                return r;
            }
        }
    }

    /// Blocks up to `timeout`; `None` if the outcome is still unknown then.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<Acked>> {
        let deadline = Instant::now() + timeout;
        let backoff = Backoff::new();
        while !backoff.is_completed() {
            if let Some(r) = self.try_get() {
                return Some(r);
            }
            // A short timeout ends the spin early: the caller may have other work.
            if Instant::now() >= deadline {
                return None;
            }
            backoff.snooze();
        }
        loop {
            self.ring.add_waiter(Waiter::Thread(std::thread::current()));
            if let Some(r) = self.try_get() {
                return Some(r);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            std::thread::park_timeout(deadline - now);
        }
    }
}

impl Future for Ack {
    type Output = Result<Acked>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.try_get() {
            return Poll::Ready(r);
        }
        self.ring.add_waiter(Waiter::Task(cx.waker().clone()));
        match self.try_get() {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        self.ring.slots.release(self.seq);
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ack")
            .field("shard", &self.ring.shard)
            .field("partition", &self.partition)
            .field("seq", &self.seq)
            .finish()
    }
}
