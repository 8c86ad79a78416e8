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
use crate::log::LogInner;
use crate::segment::format::encode_record_tail;
use crate::shard::{AckRing, Pending, ShardShared, Waiter};

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
    /// partition is given.
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
    pub offset: u64,
}

struct ProducerRing {
    tx: rtrb::Producer<Pending>,
    ack: Arc<AckRing>,
    seq_next: u64,
}

/// Sends records; one per thread. Create with [`crate::Log::producer`].
pub struct Producer {
    log: Arc<LogInner>,
    rings: Vec<Option<ProducerRing>>,
    keyless_next: u32,
    send_timeout: Duration,
}

impl Producer {
    pub(crate) fn new(log: Arc<LogInner>) -> Producer {
        let shards = log.shards.len();
        Producer {
            log,
            rings: (0..shards).map(|_| None).collect(),
            keyless_next: 0,
            send_timeout: SEND_TIMEOUT_DEFAULT,
        }
    }

    /// How long `send` waits for room in a full ring before failing with [`Error::Timeout`].
    pub fn set_send_timeout(&mut self, timeout: Duration) {
        self.send_timeout = timeout;
    }

    /// Sends a record, waiting (up to the send timeout) while this producer's ring is full.
    pub fn send(&mut self, topic: &str, record: Record<'_>) -> Result<Ack> {
        let timeout = self.send_timeout;
        self.send_inner(topic, record, Some(timeout))
    }

    /// Sends a record, or fails at once with [`Error::Full`] when the ring is full.
    pub fn try_send(&mut self, topic: &str, record: Record<'_>) -> Result<Ack> {
        self.send_inner(topic, record, None)
    }

    fn send_inner(&mut self, topic: &str, r: Record<'_>, wait: Option<Duration>) -> Result<Ack> {
        let topic_state = self.log.topic(topic)?;
        let count = topic_state.partitions.len() as u32;
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
                self.keyless_next = self.keyless_next.wrapping_add(1);
                self.keyless_next % count
            }
        };
        let mut tail =
            Vec::with_capacity(16 + r.key.map_or(0, <[u8]>::len) + r.value.map_or(0, <[u8]>::len));
        encode_record_tail(&mut tail, r.key, r.value, &r.headers);
        let max = self.log.config.record_bytes_max;
        if tail.len() > max {
            return Err(Error::RecordTooLarge {
                bytes: tail.len(),
                max,
            });
        }
        let target = Arc::clone(&topic_state.partitions[partition as usize]);
        let shard = Arc::clone(&self.log.shards[target.shard as usize]);
        if let Some(e) = shard.stopped() {
            return Err(e);
        }
        let timestamp = r.timestamp.unwrap_or_else(now_ms);
        let ring = self.ring(target.shard as usize);
        let seq = ring.seq_next;
        let deadline = wait.map(|d| Instant::now() + d);
        loop {
            if ring.tx.slots() > 0 {
                break;
            }
            let Some(deadline) = deadline else {
                return Err(Error::Full);
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout(wait.unwrap_or_default()));
            }
            ring.ack.add_waiter(Waiter::Thread(std::thread::current()));
            if let Some(e) = shard.stopped() {
                return Err(e);
            }
            // The writer wakes us when it acknowledges; the timeout covers a wake-up that came
            // between the check above and the registration.
            std::thread::park_timeout((deadline - now).min(Duration::from_millis(10)));
        }
        ring.ack.claim_slot(seq);
        ring.tx
            .push(Pending {
                partition: target,
                timestamp,
                tail,
            })
            .expect("the ring had a free slot");
        ring.seq_next += 1;
        shard.notify();
        Ok(Ack {
            ring: Arc::clone(&ring.ack),
            shard,
            seq,
            partition,
        })
    }

    fn ring(&mut self, shard: usize) -> &mut ProducerRing {
        let log = &self.log;
        self.rings[shard].get_or_insert_with(|| {
            let capacity = log.config.ring_records;
            let (tx, rx) = rtrb::RingBuffer::new(capacity);
            let ack = Arc::new(AckRing::new(capacity));
            log.shards[shard].register(rx, Arc::clone(&ack));
            ProducerRing {
                tx,
                ack,
                seq_next: 0,
            }
        })
    }
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
    shard: Arc<ShardShared>,
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
            return Some(Ok(Acked {
                partition: self.partition,
                offset: self.ring.offset_of(self.seq),
            }));
        }
        let e = self.shard.stopped()?;
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
        let backoff = Backoff::new();
        while !backoff.is_completed() {
            if let Some(r) = self.try_get() {
                return Some(r);
            }
            backoff.snooze();
        }
        let deadline = Instant::now() + timeout;
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
        self.ring.release_slot(self.seq);
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ack")
            .field("shard", &self.shard.id)
            .field("partition", &self.partition)
            .field("seq", &self.seq)
            .finish()
    }
}
