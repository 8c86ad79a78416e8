//! Configuration of a [`crate::Log`]: every limit is a named `*_max` or `*_bytes`, checked
//! against the others when the log opens.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::io::IoBackend;
use crate::segment::format::{BLOCK_BYTES, FRAME_OVERHEAD_BYTES, RECORD_PREFIX_BYTES_MAX};

/// When a produced record is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledged once written and flushed to stable storage (the default). An acknowledged
    /// record survives a crash or power loss; consumers see it only then.
    #[default]
    Sync,
    /// Acknowledged once written to the device; flushed at least every `Duration`. A power loss
    /// can lose what was acknowledged in the last interval.
    Interval(Duration),
}

/// The largest record accepted by default, encoded (key, value and headers with their
/// framing): 1 MiB, as Kafka's `max.message.bytes`.
pub const RECORD_BYTES_MAX_DEFAULT: usize = 1 << 20;
/// Default segment size: 1 GiB.
pub const SEGMENT_BYTES_DEFAULT: u64 = 1 << 30;
/// Largest `segment_bytes`: positions within a segment are 32-bit in the index.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 32;
/// Default largest single write of a group commit: 4 MiB.
pub const COMMIT_BYTES_MAX_DEFAULT: usize = 4 << 20;
/// Smallest allowed commit buffer.
pub const COMMIT_BYTES_MIN: usize = 64 << 10;
/// The largest record the log writes itself, whatever `record_bytes_max` is: a committed offset
/// with the longest group name and metadata string (`consumer/groups.rs` checks it fits).
pub(crate) const INTERNAL_RECORD_BYTES_MAX: usize = 40 << 10;
/// Records a producer may have in flight per shard before `send` waits (backpressure).
pub const RING_RECORDS_DEFAULT: usize = 1 << 14;
/// Default size of each shard's cache of its newest commits: 64 MiB.
pub const TAIL_CACHE_BYTES_DEFAULT: usize = 64 << 20;
/// Default memory a segment's rewrite groups it in ([`Config::rewrite_window_bytes`]). At
/// 10,000 partitions of 100-byte records a window holds about 18 records of each.
pub const REWRITE_WINDOW_BYTES_DEFAULT: usize = 32 << 20;
/// The least: a second pass shares it between a segment's runs, at least a block each.
pub const REWRITE_WINDOW_BYTES_MIN: usize = 64 << 10;
/// Most partitions one topic may have.
pub const PARTITIONS_MAX: u32 = 1 << 20;
/// Most partitions of all topics together (each costs memory on open: its index state and
/// a slot in its shard's table).
pub const PARTITIONS_TOTAL_MAX: u64 = 1 << 22;
/// Most shards.
pub const SHARDS_MAX: usize = 256;

/// Default for [`Config::index_cache_bytes`].
pub const INDEX_CACHE_BYTES_DEFAULT: usize = 16 << 20;
/// How long a partition remembers an idempotent producer after its last batch there (Kafka's
/// `producer.id.expiration.ms` default).
pub const PRODUCER_ID_EXPIRY_DEFAULT: std::time::Duration =
    std::time::Duration::from_secs(24 * 60 * 60);

const _: () = assert!(COMMIT_BYTES_MAX_DEFAULT >= RECORD_BYTES_MAX_DEFAULT + FRAME_OVERHEAD_BYTES);
const _: () = assert!(SEGMENT_BYTES_DEFAULT >= COMMIT_BYTES_MAX_DEFAULT as u64);
const _: () = assert!(COMMIT_BYTES_MIN.is_multiple_of(BLOCK_BYTES));
const _: () = assert!(
    COMMIT_BYTES_MIN >= INTERNAL_RECORD_BYTES_MAX + RECORD_PREFIX_BYTES_MAX + FRAME_OVERHEAD_BYTES
);
const _: () = assert!(COMMIT_BYTES_MAX_DEFAULT.is_multiple_of(BLOCK_BYTES));
const _: () = assert!(SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX);
const _: () = assert!(PARTITIONS_MAX as u64 <= PARTITIONS_TOTAL_MAX);
// A shard id, a partition number and a slot in a shard's table are u32 everywhere.
const _: () = assert!(SHARDS_MAX <= u32::MAX as usize && PARTITIONS_TOTAL_MAX <= u32::MAX as u64);

/// How to open a [`crate::Log`].
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) dir: PathBuf,
    pub(crate) shards: usize,
    pub(crate) segment_bytes: u64,
    pub(crate) record_bytes_max: usize,
    pub(crate) commit_bytes_max: usize,
    pub(crate) ring_records: usize,
    pub(crate) durability: Durability,
    pub(crate) io_backend: IoBackend,
    pub(crate) pin_threads: bool,
    pub(crate) writer_cores: Vec<usize>,
    pub(crate) tail_cache_bytes: usize,
    pub(crate) index_cache_bytes: usize,
    pub(crate) retention_bytes: Option<u64>,
    pub(crate) retention_age: Option<std::time::Duration>,
    pub(crate) protect_unconsumed: bool,
    pub(crate) disk_bytes_max: Option<u64>,
    pub(crate) producer_id_expiry: std::time::Duration,
    /// Test hooks for each shard's device (only with the `testing` feature).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) io_hooks: crate::testing::IoHooks,
    pub(crate) repair_truncate_damaged: bool,
    pub(crate) segment_prezero: bool,
    pub(crate) rewrite_sealed: bool,
    pub(crate) rewrite_window_bytes: usize,
}

impl Config {
    /// Defaults for a data directory: 1 shard, 1 GiB segments, 1 MiB records, `Sync`, io_uring.
    pub fn new(dir: impl AsRef<Path>) -> Config {
        Config {
            dir: dir.as_ref().to_owned(),
            shards: 1,
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            record_bytes_max: RECORD_BYTES_MAX_DEFAULT,
            commit_bytes_max: COMMIT_BYTES_MAX_DEFAULT,
            ring_records: RING_RECORDS_DEFAULT,
            durability: Durability::Sync,
            io_backend: IoBackend::IoUring,
            pin_threads: true,
            writer_cores: Vec::new(),
            #[cfg(any(test, feature = "testing"))]
            io_hooks: crate::testing::IoHooks::default(),
            tail_cache_bytes: TAIL_CACHE_BYTES_DEFAULT,
            index_cache_bytes: INDEX_CACHE_BYTES_DEFAULT,
            retention_bytes: None,
            retention_age: None,
            protect_unconsumed: false,
            disk_bytes_max: None,
            producer_id_expiry: PRODUCER_ID_EXPIRY_DEFAULT,
            repair_truncate_damaged: false,
            segment_prezero: true,
            rewrite_sealed: true,
            rewrite_window_bytes: REWRITE_WINDOW_BYTES_DEFAULT,
        }
    }

    /// Number of shards (writer threads). Fixed when the directory is created.
    pub fn shards(mut self, n: usize) -> Config {
        self.shards = n;
        self
    }

    /// Size of each preallocated segment file (a multiple of 4 KiB, at most 4 GiB: the index
    /// holds positions within a segment in 32 bits).
    pub fn segment_bytes(mut self, n: u64) -> Config {
        self.segment_bytes = n;
        self
    }

    /// Largest encoded record accepted by `send`.
    pub fn record_bytes_max(mut self, n: usize) -> Config {
        self.record_bytes_max = n;
        self
    }

    /// Largest single write of a group commit (a multiple of 4 KiB). Two such buffers per shard
    /// are allocated; bigger commits amortise flushes, smaller ones cut latency under load.
    pub fn commit_bytes_max(mut self, n: usize) -> Config {
        self.commit_bytes_max = n;
        self
    }

    /// Records each producer may have unacknowledged per shard before `send` waits.
    pub fn ring_records(mut self, n: usize) -> Config {
        self.ring_records = n;
        self
    }

    /// When records are acknowledged.
    pub fn durability(mut self, d: Durability) -> Config {
        self.durability = d;
        self
    }

    /// The I/O backend.
    pub fn io_backend(mut self, b: IoBackend) -> Config {
        self.io_backend = b;
        self
    }

    /// Zero-fill each segment before it is used (default on), on a helper thread ahead of the
    /// writer. Commits then overwrite written blocks instead of converting preallocated ones,
    /// which halves the cost of a small commit's flush on ext4; the price is writing every
    /// segment twice. Turn it off when the disk's bandwidth, not commit latency, is the limit.
    pub fn segment_prezero(mut self, prezero: bool) -> Config {
        self.segment_prezero = prezero;
        self
    }

    /// Rewrite sealed segments of small batches (default on): a background thread per shard
    /// puts each partition's records of a segment together and merges its consecutive
    /// batches, so a log of thousands of partitions (a record or two per partition per commit)
    /// is read back with fewer bytes and frames per record. Costs reading each such segment
    /// once more and writing it again, at idle I/O priority, paced, and only while the shard's
    /// writer appends under 16 MB/s: a surge is not slowed by it, and its segments are
    /// rewritten after it. Offsets and records are unchanged (docs/ARCHITECTURE.md, step 5 of
    /// a consumer's poll; docs/FORMAT.md, "Rewritten segments").
    pub fn rewrite_sealed_segments(mut self, on: bool) -> Config {
        self.rewrite_sealed = on;
        self
    }

    /// The memory a segment's rewrite groups it in (default 32 MiB, a multiple of 4096 and at
    /// least 64 KiB): a segment up to this size is read, grouped by partition and written in
    /// one pass; a larger one is grouped a window of this size at a time into a file of
    /// sorted runs, which a second pass merges (reading every run at once, each through its
    /// share of this memory), so that each partition's records lie together in the whole
    /// segment whatever its size.
    pub fn rewrite_window_bytes(mut self, bytes: usize) -> Config {
        self.rewrite_window_bytes = bytes;
        self
    }

    /// The cores the shard writers are pinned to: shard i goes to `cores[i % cores.len()]`.
    /// By default shard i goes to the `i % n`-th of the process's n allowed cores (its
    /// affinity mask, as `taskset` or a cpuset leave it), counting down from the last one.
    /// Put writers on the cores that take the disk's interrupts, where completions arrive
    /// (docs/TUNING.md, `writer_cores`). The shard's helper thread runs on the other cores (see
    /// [`crate::Log::other_cores`]).
    pub fn writer_cores(mut self, cores: Vec<usize>) -> Config {
        self.writer_cores = cores;
        self
    }

    /// The core shard `shard` is pinned to, given the cores the process may use (not empty).
    pub(crate) fn writer_core(&self, shard: usize, allowed: &[usize]) -> usize {
        if self.writer_cores.is_empty() {
            allowed[allowed.len() - 1 - shard % allowed.len()]
        } else {
            self.writer_cores[shard % self.writer_cores.len()]
        }
    }

    /// Pin each shard writer to a core (default on; see [`Config::writer_cores`]).
    pub fn pin_threads(mut self, pin: bool) -> Config {
        self.pin_threads = pin;
        self
    }

    /// On open, truncate the log at the first damaged frame found before the tail (losing
    /// every record after it) instead of refusing to open. The number of records dropped is
    /// reported by [`crate::Log::recovery_report`].
    pub fn repair_truncate_damaged(mut self, repair: bool) -> Config {
        self.repair_truncate_damaged = repair;
        self
    }

    /// Memory per shard for its newest commits, from which consumers that keep up read without
    /// touching the disk, and for what catching-up consumers read (default 64 MiB; 0 turns
    /// the cache off). A read from disk spans at most half of it (4 MiB at most), and the
    /// read-ahead reads as many 4 MiB windows ahead as it holds twice over (up to 4; none
    /// below 8 MiB).
    pub fn tail_cache_bytes(mut self, n: usize) -> Config {
        self.tail_cache_bytes = n;
        self
    }

    /// Memory per shard for index entries of sealed segments loaded from their index files
    /// (default 16 MiB). Entries of the segment being written stay in memory until it is sealed;
    /// after that, each partition keeps one small run per sealed segment and readers load its
    /// entries through this cache, so the index's memory does not grow with the log. A quarter
    /// of it holds the runs' chunk directories (about 80 bytes a run plus 8 per 4,096
    /// batches), so that chunks streaming through the rest do not push them out.
    pub fn index_cache_bytes(mut self, n: usize) -> Config {
        self.index_cache_bytes = n;
        self
    }

    /// Keep at most about this many bytes of segment files: past it, the oldest sealed
    /// segments are deleted (whole segments; each shard keeps `n / shards`, and never deletes
    /// its active segment, so the floor is one segment per shard). Default: keep everything.
    pub fn retention_bytes(mut self, n: u64) -> Config {
        self.retention_bytes = Some(n);
        self
    }

    /// Delete sealed segments whose newest record timestamp is older than `age` (like Kafka's
    /// `retention.ms`). Checked about once a second. Default: keep everything.
    pub fn retention_age(mut self, age: std::time::Duration) -> Config {
        self.retention_age = Some(age);
        self
    }

    /// Retention never deletes records that a consumer group of the log (one that has joined
    /// or committed) has not committed yet: a group's committed offset of each partition of its
    /// topic (0 where it has none) is kept, whatever the size or age. Use with
    /// [`Config::disk_bytes_max`], or the log grows without bound while a group lags.
    /// [`crate::Log::delete_group`] releases a group's hold. Default: off.
    pub fn protect_unconsumed(mut self, protect: bool) -> Config {
        self.protect_unconsumed = protect;
        self
    }

    /// The most bytes of segment files the log may hold (each shard `n / shards`). A shard at
    /// its cap that may not delete anything (see [`Config::protect_unconsumed`]) stops
    /// accepting records: `try_send` fails with [`crate::Error::LogFull`], `send` waits (up to
    /// its timeout, then `LogFull`) until groups commit and retention frees a segment. At least
    /// two segments per shard. Default: no cap.
    pub fn disk_bytes_max(mut self, n: u64) -> Config {
        self.disk_bytes_max = Some(n);
        self
    }

    /// How long a partition keeps what it knows of an idempotent producer (its epoch and last
    /// five batches, to answer retries and check sequences) after that producer's last batch
    /// there, like Kafka's `producer.id.expiration.ms`. A producer that sends again after that
    /// is taken as new there: its batch is stored whatever its sequence. Without it every
    /// producer that ever sent (each client restart gets a new id) stays in memory. Default:
    /// 1 day.
    pub fn producer_id_expiry(mut self, d: std::time::Duration) -> Config {
        self.producer_id_expiry = d;
        self
    }

    /// The retention policy of each shard.
    pub(crate) fn retention(&self) -> Retention {
        let shards = self.shards as u64;
        // At a disk cap, retention also keeps a segment's room free for the next roll.
        let cap = self
            .disk_bytes_max
            .map(|b| (b / shards).saturating_sub(self.segment_bytes));
        let bytes = match (self.retention_bytes.map(|b| b / shards), cap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Retention {
            bytes,
            age: self.retention_age,
            disk_bytes_max: self.disk_bytes_max.map(|b| b / shards),
        }
    }

    /// FOR TESTS ONLY (feature `testing`): route the shard writers' I/O through `faults`,
    /// which can stall it, fail writes and flushes, or panic the writer on demand.
    #[cfg(any(test, feature = "testing"))]
    pub fn testing_io_faults(mut self, faults: std::sync::Arc<crate::testing::IoFaults>) -> Config {
        self.io_hooks.faults = Some(faults);
        self
    }

    /// FOR TESTS ONLY (feature `testing`): record every write and flush of the shard writers in
    /// `recorder`, so a test can build the disk image a power loss would leave at any point.
    #[cfg(any(test, feature = "testing"))]
    pub fn testing_io_recorder(
        mut self,
        recorder: std::sync::Arc<crate::testing::IoRecorder>,
    ) -> Config {
        self.io_hooks.recorder = Some(recorder);
        self
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The largest record, or record batch appended as it is, the log accepts, in bytes.
    pub fn record_bytes_limit(&self) -> usize {
        self.record_bytes_max
    }

    /// The size of a segment file, in bytes.
    pub fn segment_size(&self) -> u64 {
        self.segment_bytes
    }

    /// The log's retention: by size (bytes) and by age, each if set.
    pub fn retention_limits(&self) -> (Option<u64>, Option<std::time::Duration>) {
        (self.retention_bytes, self.retention_age)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(Error::Config(s));
        if self.shards == 0 || self.shards > SHARDS_MAX {
            return bad(format!(
                "shards must be 1 to {SHARDS_MAX}, not {}",
                self.shards
            ));
        }
        if self.record_bytes_max == 0 {
            return bad("record_bytes_max must be positive".into());
        }
        if self.producer_id_expiry < std::time::Duration::from_millis(1) {
            // Forgetting every producer at once would store each retry again.
            return bad("producer_id_expiry must be at least 1 ms".into());
        }
        if !self.commit_bytes_max.is_multiple_of(BLOCK_BYTES)
            || self.commit_bytes_max < COMMIT_BYTES_MIN
        {
            return bad(format!(
                "commit_bytes_max ({}) must be a multiple of {BLOCK_BYTES} and at least \
                 {COMMIT_BYTES_MIN}",
                self.commit_bytes_max
            ));
        }
        if self.frame_bytes_max() + BLOCK_BYTES > self.commit_bytes_max {
            return bad(format!(
                "commit_bytes_max ({}) must hold a largest record (record_bytes_max {} + \
                 {} bytes of framing) plus a {BLOCK_BYTES}-byte tail block",
                self.commit_bytes_max,
                self.record_bytes_max,
                FRAME_OVERHEAD_BYTES + RECORD_PREFIX_BYTES_MAX
            ));
        }
        if !self.segment_bytes.is_multiple_of(BLOCK_BYTES as u64)
            || self.segment_bytes < self.commit_bytes_max as u64
            || self.segment_bytes > SEGMENT_BYTES_MAX
        {
            return bad(format!(
                "segment_bytes ({}) must be a multiple of {BLOCK_BYTES}, at least \
                 commit_bytes_max ({}) and at most {SEGMENT_BYTES_MAX} (4 GiB)",
                self.segment_bytes, self.commit_bytes_max
            ));
        }
        if self.ring_records == 0 {
            return bad("ring_records must be positive".into());
        }
        if !self.rewrite_window_bytes.is_multiple_of(BLOCK_BYTES)
            || self.rewrite_window_bytes < REWRITE_WINDOW_BYTES_MIN
        {
            return bad(format!(
                "rewrite_window_bytes ({}) must be a multiple of {BLOCK_BYTES} and at least \
                 {REWRITE_WINDOW_BYTES_MIN}",
                self.rewrite_window_bytes
            ));
        }
        if let Some(cap) = self.disk_bytes_max
            && cap / (self.shards as u64) < 2 * self.segment_bytes
        {
            return bad(format!(
                "disk_bytes_max ({cap}) must allow at least two segments of {} bytes per shard \
                 ({} shards)",
                self.segment_bytes, self.shards
            ));
        }
        if let Durability::Interval(d) = self.durability
            && d.is_zero()
        {
            return bad("a zero flush interval: use Durability::Sync".into());
        }
        Ok(())
    }

    /// The largest frame a single record can make.
    pub(crate) fn frame_bytes_max(&self) -> usize {
        self.record_bytes_max + RECORD_PREFIX_BYTES_MAX + FRAME_OVERHEAD_BYTES
    }
}

/// How much of the log a shard keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Retention {
    /// The most bytes of segment files the shard keeps (its share of the configured total).
    pub bytes: Option<u64>,
    /// Segments whose newest record is older than this are deleted.
    pub age: Option<std::time::Duration>,
    /// The most bytes of segment files the shard may hold (its share of the disk cap).
    pub disk_bytes_max: Option<u64>,
}

impl Retention {
    pub fn enabled(&self) -> bool {
        self.bytes.is_some() || self.age.is_some()
    }
}
