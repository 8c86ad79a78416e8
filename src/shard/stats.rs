//! What a shard has done: counters its writer and readers bump, snapshots `Log::stats` reads.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a shard's writer has done since the log was opened; read by `Log::stats`.
#[derive(Debug, Default)]
pub(crate) struct WriterCounters {
    pub records: AtomicU64,
    pub batches: AtomicU64,
    pub writes: AtomicU64,
    pub write_bytes: AtomicU64,
    /// Bytes of frames the writer appended to the log (`write_bytes` counts whole blocks,
    /// the log's last block again at each commit).
    pub log_bytes: AtomicU64,
    pub write_nanos: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_nanos: AtomicU64,
    pub rolls: AtomicU64,
    pub rolls_unzeroed: AtomicU64,
    pub tail_cached_bytes: AtomicU64,
    pub read_disk_bytes: AtomicU64,
    pub read_frame_bytes: AtomicU64,
    /// Sealed segments rewritten, left as they were (not worth it, stopped, no room), and
    /// whose rewrite failed (damage it met, an I/O error).
    pub rewrites_done: AtomicU64,
    pub rewrites_skipped: AtomicU64,
    pub rewrites_failed: AtomicU64,
    /// Bytes rewrites read from sealed segments and wrote to their new files.
    pub rewrite_read_bytes: AtomicU64,
    pub rewrite_write_bytes: AtomicU64,
}

impl WriterCounters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets every counter back to zero: `Log::open` counts from the moment it returns, not
    /// the reads and writes the open itself made (loading the committed offsets).
    pub fn reset(&self) {
        for c in [
            &self.records,
            &self.batches,
            &self.writes,
            &self.write_bytes,
            &self.log_bytes,
            &self.write_nanos,
            &self.flushes,
            &self.flush_nanos,
            &self.rolls,
            &self.rolls_unzeroed,
            &self.tail_cached_bytes,
            &self.read_disk_bytes,
            &self.read_frame_bytes,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> ShardStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ShardStats {
            records: get(&self.records),
            batches: get(&self.batches),
            writes: get(&self.writes),
            write_bytes: get(&self.write_bytes),
            write_nanos: get(&self.write_nanos),
            flushes: get(&self.flushes),
            flush_nanos: get(&self.flush_nanos),
            rolls: get(&self.rolls),
            rolls_unzeroed: get(&self.rolls_unzeroed),
            tail_cached_bytes: get(&self.tail_cached_bytes),
            read_disk_bytes: get(&self.read_disk_bytes),
            read_frame_bytes: get(&self.read_frame_bytes),
            rewrites_done: get(&self.rewrites_done),
            rewrites_skipped: get(&self.rewrites_skipped),
            rewrites_failed: get(&self.rewrites_failed),
            rewrite_read_bytes: get(&self.rewrite_read_bytes),
            rewrite_write_bytes: get(&self.rewrite_write_bytes),
        }
    }
}

/// What one shard's writer has done since [`crate::Log::open`] returned; from [`crate::Log::stats`]. Counters
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
    /// Bytes readers and read-ahead read from the segment files (on the device).
    pub read_disk_bytes: u64,
    /// Bytes of frames handed to readers. `read_disk_bytes / read_frame_bytes` is the read
    /// amplification of a consumer that reads each frame once: 1.0 when every byte read from
    /// disk is consumed once (frames served from the tail cache make it lower).
    pub read_frame_bytes: u64,
    /// Sealed segments rewritten with each partition's records together, in fewer batches
    /// (segments of small batches only; see `docs/ARCHITECTURE.md`). Counted since the log was
    /// opened, rewrites the open queued included.
    pub rewrites_done: u64,
    /// Rewrites left undone: merging would not have halved the batches, the log was closing,
    /// no disk room, or the segment was deleted meanwhile.
    pub rewrites_skipped: u64,
    /// Rewrites that met damage or an I/O error: the segment is left as it was (readers and
    /// recovery report the damage).
    pub rewrites_failed: u64,
    /// Bytes rewrites read from sealed segments (not in `read_disk_bytes`).
    pub rewrite_read_bytes: u64,
    /// Bytes rewrites wrote.
    pub rewrite_write_bytes: u64,
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
        self.read_disk_bytes += other.read_disk_bytes;
        self.read_frame_bytes += other.read_frame_bytes;
        self.rewrites_done += other.rewrites_done;
        self.rewrites_skipped += other.rewrites_skipped;
        self.rewrites_failed += other.rewrites_failed;
        self.rewrite_read_bytes += other.rewrite_read_bytes;
        self.rewrite_write_bytes += other.rewrite_write_bytes;
    }
}

/// How busy the shard's writer is: the bytes of frames it appended, as last looked at.
pub(crate) struct WriterLoad<'a> {
    written: &'a AtomicU64,
    /// When it was last looked at, and the bytes then.
    pub seen: (std::time::Instant, u64),
}

impl<'a> WriterLoad<'a> {
    pub fn new(written: &'a AtomicU64) -> WriterLoad<'a> {
        WriterLoad {
            written,
            seen: (std::time::Instant::now(), written.load(Ordering::Relaxed)),
        }
    }

    /// The writer's bytes per second since it was last looked at; looks again.
    pub fn rate(&mut self) -> f64 {
        let (at, before) = self.seen;
        let now = self.written.load(Ordering::Relaxed);
        let elapsed = at.elapsed().as_secs_f64().max(1e-3);
        self.seen = (std::time::Instant::now(), now);
        now.saturating_sub(before) as f64 / elapsed
    }

    /// Whether the writer appends more than `bytes_per_s`, as measured over the last `every`
    /// at least: `last` (the verdict of the last look) until `every` has passed, then looks.
    pub fn busy(&mut self, last: bool, bytes_per_s: f64, every: std::time::Duration) -> bool {
        if self.seen.0.elapsed() < every {
            return last;
        }
        self.rate() > bytes_per_s
    }
}
