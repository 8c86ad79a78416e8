//! What a shard's writer has done: counters it bumps, snapshots `Log::stats` reads.

use std::sync::atomic::{AtomicU64, Ordering};

/// What a shard's writer has done since the log was opened; read by `Log::stats`.
#[derive(Debug, Default)]
pub(crate) struct WriterCounters {
    pub records: AtomicU64,
    pub batches: AtomicU64,
    pub writes: AtomicU64,
    pub write_bytes: AtomicU64,
    pub write_nanos: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_nanos: AtomicU64,
    pub rolls: AtomicU64,
    pub rolls_unzeroed: AtomicU64,
    pub tail_cached_bytes: AtomicU64,
}

impl WriterCounters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> crate::log::ShardStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        crate::log::ShardStats {
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
        }
    }
}
