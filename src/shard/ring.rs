//! The hand-off between producers and a shard's writer: records in one bounded SPSC ring per
//! (producer, shard), and each ring's acknowledgement side, which the writer advances once a
//! commit is durable and producers wait on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Waker;
use std::thread::Thread;

use crossbeam_utils::CachePadded;

use crate::error::Error;
use crate::shard::ShardShared;
use crate::shard::slots;

/// A record on its way from a producer to a shard writer: its partition's slot in the shard's
/// partition table, its timestamp and its encoded tail (key, value, headers), encoded on the
/// producer's thread; or, with `batch`, a whole RecordBatch v2 checked on the producer's
/// thread, stored as it is in a frame of its own (the writer stamps its base offset). The
/// buffer goes back to the producer for reuse.
pub(crate) struct Pending {
    pub slot: u32,
    pub timestamp: i64,
    pub tail: Vec<u8>,
    pub batch: bool,
}

/// A new producer's rings into a shard: records in, acks, record buffers back; and whether it
/// carries floodgate's own records (committed offsets), which a full shard still takes.
pub(crate) type NewRing = (
    rtrb::Consumer<Pending>,
    Arc<AckRing>,
    rtrb::Producer<Vec<u8>>,
    bool,
);

/// Someone waiting for a ring's acknowledgements.
pub(crate) enum Waiter {
    Thread(Thread),
    Task(Waker),
}

/// The acknowledgement side of one producer's ring into one shard: the watermark the writer
/// publishes (`seq_acked`, one past the last acknowledged record, stored with release ordering
/// once the commit holding it is durable), the records' offsets, and who waits for them.
pub(crate) struct AckRing {
    pub seq_acked: CachePadded<AtomicU64>,
    pub slots: slots::AckSlots,
    /// The shard's failure latch (shared, so an `Ack` needs no reference to the shard).
    pub failed: Arc<OnceLock<Error>>,
    pub shard: u32,
    waiters: WaitList,
}

impl AckRing {
    pub fn new(capacity: usize, shard: &ShardShared) -> AckRing {
        AckRing {
            seq_acked: CachePadded::new(AtomicU64::new(0)),
            slots: slots::AckSlots::new(capacity),
            failed: Arc::clone(&shard.failed),
            shard: shard.id,
            waiters: WaitList::default(),
        }
    }

    /// Registers a waiter; the caller must re-check its condition afterwards, then sleep.
    pub fn add_waiter(&self, w: Waiter) {
        self.waiters.add(w);
    }

    /// Wakes everyone waiting; called after `seq_acked` moves or the shard fails.
    pub fn wake_all(&self) {
        self.waiters.wake_all();
    }
}

/// Threads and tasks waiting for something to change, woken all at once. Waking costs one
/// atomic load when nobody waits.
#[derive(Default)]
pub(crate) struct WaitList {
    waiters: Mutex<Vec<Waiter>>,
    present: AtomicBool,
}

impl WaitList {
    /// Registers a waiter; the caller must re-check its condition afterwards, then sleep.
    pub fn add(&self, w: Waiter) {
        let mut waiters = self.waiters.lock().expect("waiters lock");
        waiters.push(w);
        self.present.store(true, Ordering::SeqCst);
        drop(waiters);
        fence(Ordering::SeqCst);
    }

    /// Wakes everyone waiting.
    pub fn wake_all(&self) {
        fence(Ordering::SeqCst);
        if !self.present.load(Ordering::SeqCst) {
            return;
        }
        let waiters = {
            let mut w = self.waiters.lock().expect("waiters lock");
            self.present.store(false, Ordering::SeqCst);
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

/// A producer's ring as the writer holds it.
pub(crate) struct RingIn {
    pub rx: rtrb::Consumer<Pending>,
    pub ack: Arc<AckRing>,
    /// Record buffers going back to the producer for reuse.
    pub recycle: rtrb::Producer<Vec<u8>>,
    /// One past the sequence number of the last record taken from `rx`.
    pub seq_popped: u64,
    /// Carries committed offsets: drained even while the shard is full.
    pub internal: bool,
}

/// Record buffers up to this size always go back to their producer for reuse (the recycle ring
/// is as long as the record ring, so at most `ring_records × 1 KiB` wait there)...
pub(crate) const RECYCLE_SMALL_BYTES_MAX: usize = 1 << 10;
/// ...and up to this size while fewer than `RECYCLE_LARGE_MAX` buffers wait; larger ones are
/// freed.
pub(crate) const RECYCLE_BYTES_MAX: usize = 16 << 10;
pub(crate) const RECYCLE_LARGE_MAX: usize = 256;

const _: () = assert!(RECYCLE_SMALL_BYTES_MAX <= RECYCLE_BYTES_MAX);

/// Hands a framed record's buffer back to its producer for reuse, within the limits above;
/// otherwise frees it.
pub(crate) fn recycle_buffer(recycle: &mut rtrb::Producer<Vec<u8>>, tail: Vec<u8>) {
    let parked = recycle.buffer().capacity() - recycle.slots();
    let cap = tail.capacity();
    if cap <= RECYCLE_SMALL_BYTES_MAX || (cap <= RECYCLE_BYTES_MAX && parked < RECYCLE_LARGE_MAX) {
        let _ = recycle.push(tail);
    }
}
