//! A shard: one writer thread that owns a sequential log of segment files, and the state it
//! shares with producers and readers.
//!
//! Producers hand records over through one bounded SPSC ring per (producer, shard)
//! ([`AckRing`] is the ring's acknowledgement side). The writer (writer.rs) drains every ring,
//! stamps offsets, frames batches into an aligned commit buffer, writes and flushes it, and then
//! advances each ring's `seq_acked` and each partition's `offset_visible`. Nothing here is shared
//! between shards.

pub(crate) mod writer;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::task::Waker;
use std::thread::Thread;

use crossbeam_utils::CachePadded;

use crate::error::Error;
use crate::index::Partition;

/// A record on its way from a producer to a shard writer: the partition, its timestamp and its
/// encoded tail (key, value, headers), encoded on the producer's thread.
pub(crate) struct Pending {
    pub partition: Arc<Partition>,
    pub timestamp: i64,
    pub tail: Vec<u8>,
}

/// Someone waiting for a ring's acknowledgements.
pub(crate) enum Waiter {
    Thread(Thread),
    Task(Waker),
}

/// The acknowledgement side of one producer's ring into one shard.
///
/// Records are numbered by `seq` in push order. The writer stores the offset of record `seq` in
/// `offsets[seq % capacity]` when it frames it, and publishes `seq_acked` (one past the last
/// acknowledged record) with release ordering once the commit holding it is durable. A slot is
/// reused for `seq + capacity` only after the [`crate::Ack`] of `seq` released it (`slot_next`),
/// so an ack handle can always read its offset.
pub(crate) struct AckRing {
    pub seq_acked: CachePadded<AtomicU64>,
    pub offsets: Box<[AtomicU64]>,
    /// For each slot, the next seq allowed to use it.
    pub slot_next: Box<[AtomicU64]>,
    waiters: Mutex<Vec<Waiter>>,
    waiters_present: AtomicBool,
}

impl AckRing {
    pub fn new(capacity: usize) -> AckRing {
        AckRing {
            seq_acked: CachePadded::new(AtomicU64::new(0)),
            offsets: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            slot_next: (0..capacity as u64).map(AtomicU64::new).collect(),
            waiters: Mutex::new(Vec::new()),
            waiters_present: AtomicBool::new(false),
        }
    }

    pub fn capacity(&self) -> u64 {
        self.offsets.len() as u64
    }

    /// Registers a waiter; the caller must re-check its condition afterwards, then sleep.
    pub fn add_waiter(&self, w: Waiter) {
        let mut waiters = self.waiters.lock().expect("waiters lock");
        waiters.push(w);
        self.waiters_present.store(true, Ordering::SeqCst);
        drop(waiters);
        fence(Ordering::SeqCst);
    }

    /// Wakes everyone waiting; called after `seq_acked` moves or the shard fails.
    pub fn wake_all(&self) {
        fence(Ordering::SeqCst);
        if !self.waiters_present.load(Ordering::SeqCst) {
            return;
        }
        let waiters = {
            let mut w = self.waiters.lock().expect("waiters lock");
            self.waiters_present.store(false, Ordering::SeqCst);
            std::mem::take(&mut *w)
        };
        for w in waiters {
            match w {
                Waiter::Thread(t) => t.unpark(),
                Waiter::Task(w) => w.wake(),
            }
        }
    }
}

/// A segment file as readers see it.
#[derive(Debug)]
pub(crate) struct SegmentFile {
    pub path: PathBuf,
    pub file: File,
}

/// What a shard shares with producers, readers and the `Log`.
pub(crate) struct ShardShared {
    pub id: u32,
    pub dir: PathBuf,
    /// Set by the writer just before it parks; producers unpark it when set.
    pub sleeping: CachePadded<AtomicBool>,
    pub thread: OnceLock<Thread>,
    pub new_rings: Mutex<Vec<(rtrb::Consumer<Pending>, Arc<AckRing>)>>,
    pub new_rings_flag: AtomicBool,
    /// Latched at the first I/O failure, or `Closed` when the writer exits.
    pub failed: OnceLock<Error>,
    pub shutdown: AtomicBool,
    /// Segment files by id, for readers.
    pub segments: RwLock<BTreeMap<u64, Arc<SegmentFile>>>,
}

impl ShardShared {
    pub fn new(id: u32, dir: &Path) -> ShardShared {
        ShardShared {
            id,
            dir: dir.to_owned(),
            sleeping: CachePadded::new(AtomicBool::new(false)),
            thread: OnceLock::new(),
            new_rings: Mutex::new(Vec::new()),
            new_rings_flag: AtomicBool::new(false),
            failed: OnceLock::new(),
            shutdown: AtomicBool::new(false),
            segments: RwLock::new(BTreeMap::new()),
        }
    }

    /// Wakes the writer if it is parked. Call after pushing to a ring.
    pub fn notify(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst)
            && let Some(t) = self.thread.get()
        {
            t.unpark();
        }
    }

    /// Hands a new producer ring to the writer.
    pub fn register(&self, rx: rtrb::Consumer<Pending>, ack: Arc<AckRing>) {
        self.new_rings.lock().expect("rings lock").push((rx, ack));
        self.new_rings_flag.store(true, Ordering::SeqCst);
        self.notify();
    }

    /// The error that stopped this shard, if it has stopped.
    pub fn stopped(&self) -> Option<Error> {
        self.failed.get().cloned()
    }

    /// The path of segment `id`.
    pub fn segment_path(&self, id: u64) -> PathBuf {
        segment_path(&self.dir, id)
    }
}

/// The path of segment `id` in a shard directory.
pub(crate) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// The path of segment `id`'s index file in a shard directory.
pub(crate) fn index_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.idx"))
}
