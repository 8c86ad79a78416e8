//! The shard writer: the one thread that appends to a shard's log.
//!
//! Each turn of its loop it drains the producer rings into the commit buffer being built
//! (stamping offsets and framing one batch per partition),
//! submits that buffer as one aligned write when no write is in flight, flushes written commits,
//! and publishes what became durable: partition index entries and `offset_acked`, then each
//! ring's `seq_acked`. Pipelining: the next commit is built while the previous one is written
//! and flushed; at most one write and [`FLUSHES_IN_FLIGHT_MAX`] flushes are in flight.
//!
//! Flushes are separate `fdatasync`s rather than `RWF_DSYNC` writes, so one commit's flush
//! overlaps the next commit's write (docs/TUNING.md, `durability`).
//!
//! Writes never overlap in time: commit N+1 rewrites the last, partial block of commit N (the
//! tail block) with the same leading bytes, so it is submitted only once write N completed.
//! Under the sector-atomic model a torn rewrite leaves each sector old or new, and both agree
//! on every byte of commit N, so acknowledged bytes are never damaged.
//!
//! The bytes that may not be durable at any moment lie within
//! [`unflushed_window_bytes`] before the end of the log: recovery uses that bound to tell a torn
//! tail from damage in the middle of the log.
//!
//! A failed write or flush latches the shard into a failed state: nothing after the last good
//! flush is acknowledged, waiters get the error, and the writer stops (an fsync is never
//! retried).
//!
//! This file is longer than most (about 840 lines): it holds the loop and the commit pipeline
//! (submit, reap, flush, publish, roll), through which one commit's state moves as a whole.
//! Framing is in `framing.rs`, segment files in `files.rs`, tail-cache memory in
//! `tail_memory.rs`.

use crate::segment::SegmentId;
use std::fs::File;
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{Ordering, fence};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Durability;
use crate::config::Retention;
use crate::error::{Error, Result};
use crate::index::SlotEntry;
use crate::io::{self, AlignedBuf, Completion, Device, IoBackend};
use crate::layout::index_path;
use crate::segment::LogPos;
use crate::segment::format::{
    BLOCK_BYTES, FRAME_HEADER_BYTES, FRAME_OVERHEAD_BYTES, RECORD_PREFIX_BYTES_MAX,
    checksum_batches,
};
use crate::shard::checkpoint::CheckpointFile;
use crate::shard::files::{adopt_segment, create_segment};
use crate::shard::framing::{
    Build, SeqCheck, SlotState, entry_batch_range, frame_partition, frame_stored_batch,
    refresh_partitions,
};
use crate::shard::prepare::{Preparer, Seal};
use crate::shard::producers;
use crate::shard::ring::{RingIn, recycle_buffer};
use crate::shard::slots::REFUSED;
use crate::shard::tail_memory::{CopyArenas, PooledBuf};
use crate::shard::{AckRing, ShardShared, WriterCounters};

/// The most bytes at the end of a shard's log that may not be durable. The writer holds back
/// a write that would go past it (see `maybe_submit_write`); recovery treats damage within it
/// as a torn tail.
pub fn unflushed_window_bytes(commit_bytes_max: usize) -> u64 {
    4 * commit_bytes_max as u64 + 2 * BLOCK_BYTES as u64
}

/// Flushes in flight at once. A second flush submitted while the first runs covers the commit
/// written meanwhile, so it is acknowledged one flush earlier than if it waited.
pub const FLUSHES_IN_FLIGHT_MAX: usize = 2;

const TOKEN_WRITE: u64 = 0;
/// Flush tokens are `TOKEN_FLUSH_FIRST + n` for the n-th flush.
const TOKEN_FLUSH_FIRST: u64 = 1;
/// How long an idle writer parks before looking around again.
const IDLE_PARK: Duration = Duration::from_millis(100);
/// How often a shard at its disk cap tries again to roll.
const LOG_FULL_RETRY: Duration = Duration::from_millis(10);

/// What the writer needs to start: settings and where recovery left the log.
pub(crate) struct WriterStart {
    pub segment_bytes: u64,
    pub commit_bytes_max: usize,
    pub durability: Durability,
    pub backend: IoBackend,
    pub prezero: bool,
    pub pin_core: Option<usize>,
    /// Where the shard's helper thread runs (anywhere if empty).
    pub helper_cores: Vec<usize>,
    #[cfg(any(test, feature = "testing"))]
    pub io_hooks: crate::testing::IoHooks,
    /// The shard's tail cache size (0: no cache; commits are not kept).
    pub tail_cache_bytes: usize,
    /// What the helper thread deletes, and the disk cap.
    pub retention: Retention,
    /// The last segment's id, and how many bytes of frames it holds.
    pub segment: SegmentId,
    pub data_end: u64,
    /// The shard's checkpoint file, for the helper thread to keep up to date.
    pub checkpoint: Option<CheckpointFile>,
    /// How long a partition remembers an idempotent producer after its last batch there.
    pub producer_id_expiry: Duration,
}

/// A commit's frames on their way to the tail cache.
enum TailBytes {
    /// Copied: the bytes, and the memory they hold.
    Copied(bytes::Bytes, usize),
    /// The write's own buffer goes to the cache when it comes back: the frames' range in it.
    Lent(std::ops::Range<usize>),
}

/// A submitted commit, waiting to become durable.
struct Commit {
    segment: SegmentId,
    end: u64,
    /// The frames for the tail cache: where they start, and their bytes.
    cached: Option<(LogPos, TailBytes)>,
    acks: Vec<(Arc<AckRing>, u64)>,
    /// (partition slot, entry) of each frame.
    entries: Vec<SlotEntry>,
}

/// The writer's requested scheduler slice (see [`crate::io::set_short_slices`]).
const WRITER_SLICE: Duration = Duration::from_micros(100);

struct Active {
    id: SegmentId,
    file: Arc<File>,
    path: PathBuf,
}

pub(crate) struct Writer {
    shared: Arc<ShardShared>,
    device: Box<dyn Device>,
    start: WriterStart,
    window: u64,
    rings: Vec<RingIn>,
    segment: Active,
    build: Build,
    spare: Vec<AlignedBuf>,
    /// Commit buffers back from the tail cache (see [`PooledBuf`]).
    buf_pool: Arc<Mutex<Vec<AlignedBuf>>>,
    /// Where smaller commits are copied for the tail cache.
    copies: CopyArenas,
    write_in_flight: Option<Commit>,
    written: Vec<Commit>,
    /// Flushes in flight, oldest first: (token, the commits they make durable, submitted at).
    flushes: std::collections::VecDeque<(u64, Vec<Commit>, Instant)>,
    write_submitted: Instant,
    /// When the writer began the current segment (or opened the log).
    segment_started: Instant,
    flush_next: u64,
    /// Segment position up to which everything is durable.
    pos_durable: u64,
    last_flush: Instant,
    /// When partitions last forgot the idempotent producers idle past their expiry.
    producers_swept: Instant,
    roll_pending: bool,
    completions: Vec<Completion>,
    /// The helper thread: zero-fills the next segment, writes sealed segments' index files.
    preparer: Preparer,
    /// The shard's partitions by slot, as far as the writer has seen them.
    partitions: Vec<SlotState>,
    /// Per partition slot, the `stamp` of the last fill that counted a frame for it.
    seen: Vec<u32>,
    stamp: u32,
    /// Scratch for `fill`: records taken from each ring; per partition slot, its group in this
    /// fill that records join; the groups; each record's group, in the order counted (rings in
    /// turn); where each record is, grouped by partition.
    counts: Vec<usize>,
    group_of: Vec<u32>,
    groups: Vec<FillGroup>,
    group_of_record: Vec<u32>,
    order: Vec<RecordAt>,
    /// The batches framed by a `fill`, checksummed after the last is framed.
    unsummed: Vec<Range<usize>>,
    /// Published commits' entry lists, emptied, for the next commits (see
    /// [`SPARE_ENTRY_LISTS`]).
    spare_entries: Vec<Vec<SlotEntry>>,
}

/// One partition's records in a fill: its slot, how many, and where they start in the fill's
/// `order` (counted first, then placed); or, with `batch`, one producer's batch, framed as it
/// is. Groups are framed in the order they were made, so a partition's records sent after a
/// batch take offsets after it.
#[derive(Debug, Clone, Copy)]
struct FillGroup {
    slot: u32,
    records: u32,
    first: u32,
    batch: bool,
}

/// A record taken in a fill: its ring and its index in that ring's readable chunk.
#[derive(Debug, Clone, Copy)]
struct RecordAt {
    ring: u32,
    index: u32,
}

/// Entry lists kept for reuse. A commit of 10,000 partitions' one-record batches lists about
/// 3,000 entries; a fresh list would grow to that by doubling at every commit.
const SPARE_ENTRY_LISTS: usize = 4;

impl Writer {
    /// Sets the writer up on the shard thread (the io_uring instance belongs to it), pinned
    /// first: its ring and buffers are set up on its core, and the log opens with it pinned.
    pub fn new(shared: Arc<ShardShared>, mut start: WriterStart) -> Result<Writer> {
        if let Some(core) = start.pin_core {
            io::cores::pin(&[core]);
        }
        #[cfg(any(test, feature = "testing"))]
        let device = crate::testing::device(start.backend, 64, &start.io_hooks)?;
        #[cfg(not(any(test, feature = "testing")))]
        let device = io::device(start.backend, 64)?;
        let path = shared.segment_path(start.segment);
        let file = Arc::new(io::open_segment(&path, start.backend, false, true)?);
        let mut buf = AlignedBuf::new(start.commit_bytes_max);
        let block_start = align_down(start.data_end);
        let carried = (start.data_end - block_start) as usize;
        if carried > 0 {
            let block = io::read_aligned(&file, &path, block_start, BLOCK_BYTES)?;
            buf[..carried].copy_from_slice(&block[..carried]);
        }
        let preparer = Preparer::start(
            &shared,
            start.segment_bytes,
            start.backend,
            start.retention,
            &start.helper_cores,
            start.checkpoint.take(),
        )?;
        if start.prezero {
            preparer.request();
        }
        Ok(Writer {
            preparer,
            partitions: Vec::new(),
            seen: Vec::new(),
            stamp: 0,
            counts: Vec::new(),
            group_of: Vec::new(),
            group_of_record: Vec::new(),
            groups: Vec::new(),
            order: Vec::new(),
            unsummed: Vec::new(),
            spare_entries: Vec::new(),
            window: unflushed_window_bytes(start.commit_bytes_max),
            device,
            rings: Vec::new(),
            segment: Active {
                id: start.segment,
                file,
                path,
            },
            build: Build {
                buf,
                start: block_start,
                len: carried,
                first_frame: carried,
                frames: 0,
                records: 0,
                acks: Vec::new(),
                entries: Vec::new(),
            },
            spare: vec![AlignedBuf::new(start.commit_bytes_max)],
            buf_pool: Arc::default(),
            copies: CopyArenas::new(start.tail_cache_bytes),
            write_in_flight: None,
            written: Vec::new(),
            flushes: std::collections::VecDeque::new(),
            write_submitted: Instant::now(),
            segment_started: Instant::now(),
            flush_next: TOKEN_FLUSH_FIRST,
            pos_durable: start.data_end,
            last_flush: Instant::now(),
            producers_swept: Instant::now(),
            roll_pending: false,
            completions: Vec::new(),
            shared,
            start,
        })
    }

    /// Runs until shutdown or failure, a panic included; then records why it stopped and
    /// wakes every waiter, so no `Ack::wait` or `send` blocks on a writer that is gone.
    pub fn run(mut self) {
        crate::io::set_short_slices(WRITER_SLICE);
        let thread = format!("shard {} writer", self.shared.id);
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| self.run_loop()))
            .unwrap_or_else(|payload| Err(Error::panicked(thread.clone(), &*payload)));
        // Every operation must finish before buffers and files are dropped. A device that
        // cannot finish them (its ring broken) keeps its buffers: the kernel may still use them.
        let drained = panic::catch_unwind(AssertUnwindSafe(|| self.drain_io())).unwrap_or(false);
        let error = match outcome {
            Ok(()) => Error::Closed,
            Err(e) => Error::ShardFailed {
                shard: self.shared.id,
                cause: Arc::new(e),
            },
        };
        let _ = self.shared.failed.set(error);
        self.take_new_rings();
        for ring in &self.rings {
            ring.ack.wake_all();
        }
        self.shared.data_waiters.wake_all();
        if !drained {
            std::mem::forget(self);
        }
    }

    /// Waits for every operation in flight; false if the device cannot say they are done.
    fn drain_io(&mut self) -> bool {
        let mut done = Vec::new();
        while self.device.in_flight() > 0 {
            if self.device.wait(&mut done, true, None).is_err() {
                return false;
            }
            done.clear();
        }
        true
    }

    fn run_loop(&mut self) -> Result<()> {
        loop {
            let mut progress = self.reap(false, None)?;
            // A write that just completed is flushed before more records are framed: framing a
            // few thousand records takes a few hundred microseconds, which the flush would wait.
            progress |= self.maybe_flush();
            self.take_new_rings();
            progress |= self.fill();
            progress |= self.maybe_submit_write();
            progress |= self.maybe_flush();
            progress |= self.release_unwritten_acks();
            let mut full = false;
            if self.roll_pending && self.idle_io() && self.build.frames == 0 {
                full = !self.roll()?;
                progress |= !full;
            }
            let shutdown = self.shared.shutdown.load(Ordering::Acquire);
            let drained = self.rings_empty() || self.shared.log_full.load(Ordering::Acquire);
            if shutdown && self.idle_io() && self.build.frames == 0 && drained {
                return Ok(());
            }
            if full {
                // Retention may free a segment; records wait in the rings meanwhile.
                std::thread::park_timeout(LOG_FULL_RETRY);
            } else if !progress {
                self.wait_for_work()?;
            }
        }
    }

    /// Publishes the acks of a fill that framed nothing (retries of stored batches, refused
    /// batches) once no commit is under way: everything before them is published, the
    /// batches they repeat included.
    fn release_unwritten_acks(&mut self) -> bool {
        if self.build.frames > 0 || self.build.acks.is_empty() || !self.idle_io() {
            return false;
        }
        for (ack, seq_end) in self.build.acks.drain(..) {
            ack.seq_acked.store(seq_end, Ordering::Release);
            ack.wake_all();
        }
        true
    }

    fn idle_io(&self) -> bool {
        self.write_in_flight.is_none() && self.written.is_empty() && self.flushes.is_empty()
    }

    fn rings_empty(&self) -> bool {
        self.rings.iter().all(|r| r.rx.is_empty())
    }

    /// Whether a ring's records may be taken now: not a user's while the shard is full.
    fn drainable(ring: &RingIn, full: bool) -> bool {
        !full || ring.internal
    }

    /// Whether any ring has records that may be taken now.
    fn work_waiting(&self) -> bool {
        let full = self.shared.log_full.load(Ordering::Acquire);
        self.rings
            .iter()
            .any(|r| !r.rx.is_empty() && Self::drainable(r, full))
    }

    fn take_new_rings(&mut self) {
        if !self.shared.new_rings_flag.swap(false, Ordering::AcqRel) {
            return;
        }
        let new = std::mem::take(&mut *self.shared.new_rings.lock().expect("rings lock"));
        for (rx, ack, recycle, internal) in new {
            self.rings.push(RingIn {
                rx,
                ack,
                recycle,
                seq_popped: 0,
                internal,
            });
        }
    }

    /// Blocks until something may have changed: an I/O completion, a record, a deadline.
    fn wait_for_work(&mut self) -> Result<()> {
        let deadline = self.flush_deadline();
        if self.device.in_flight() > 0 {
            self.reap(true, deadline)?;
            return Ok(());
        }
        self.shared.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let work = self.work_waiting()
            || self.shared.new_rings_flag.load(Ordering::SeqCst)
            || self.shared.shutdown.load(Ordering::SeqCst);
        if !work {
            std::thread::park_timeout(deadline.unwrap_or(IDLE_PARK).min(IDLE_PARK));
        }
        self.shared.sleeping.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Time until an interval flush is due, if one will be.
    fn flush_deadline(&self) -> Option<Duration> {
        match self.start.durability {
            Durability::Interval(d) if !self.written.is_empty() && self.flushes.is_empty() => {
                Some(d.saturating_sub(self.last_flush.elapsed()))
            }
            _ => None,
        }
    }

    /// Moves records from the rings into the commit buffer: as many as fit, grouped into one
    /// batch per partition (so many partitions do not mean many tiny batches). Returns whether
    /// any moved.
    ///
    /// Two passes over each ring's readable chunk: the first counts how many records fit (an
    /// upper bound of each record's encoded size, plus a frame's overhead for the first record
    /// of each partition), the second frames them by partition. Offsets are stored for the
    /// acks before the chunk is committed, because committing frees the ring slots.
    fn fill(&mut self) -> bool {
        if self.roll_pending {
            return false;
        }
        // Drop rings whose producer is gone once everything they sent is framed.
        self.rings
            .retain(|r| !(r.rx.is_abandoned() && r.rx.is_empty()));
        let segment_room = self.start.segment_bytes.saturating_sub(self.build.start) as usize;
        let room = self.build.buf.len().min(segment_room);
        if !self.count_fitting(room, segment_room) {
            return false;
        }
        self.frame_counted(room);
        true
    }

    /// The first pass of [`Writer::fill`]: counts, per ring, the records that fit in `room`
    /// (and per partition, in `groups`); asks for a roll when the next one would not fit in
    /// the segment. Returns whether any record fits.
    fn count_fitting(&mut self, room: usize, segment_room: usize) -> bool {
        self.stamp = self.stamp.wrapping_add(1);
        let stamp = self.stamp;
        let mut used = self.build.len;
        self.counts.clear();
        self.counts.resize(self.rings.len(), 0);
        self.groups.clear();
        self.group_of_record.clear();
        let full = self.shared.log_full.load(Ordering::Acquire);
        'rings: for (r, ring) in self.rings.iter_mut().enumerate() {
            let n = if Self::drainable(ring, full) {
                ring.rx.slots()
            } else {
                0
            };
            if n == 0 {
                continue;
            }
            let chunk = ring.rx.read_chunk(n).expect("slots are readable");
            let (a, b) = chunk.as_slices();
            for item in a.iter().chain(b) {
                let slot = item.slot as usize;
                if slot >= self.partitions.len() {
                    refresh_partitions(
                        &self.shared,
                        &mut self.partitions,
                        &mut self.seen,
                        &mut self.group_of,
                    );
                }
                let first = self.seen[slot] != stamp;
                let bytes = match item.batch {
                    true => item.tail.len() + FRAME_HEADER_BYTES,
                    false => {
                        item.tail.len()
                            + RECORD_PREFIX_BYTES_MAX
                            + if first { FRAME_OVERHEAD_BYTES } else { 0 }
                    }
                };
                if used + bytes > room {
                    if used + bytes > segment_room {
                        self.roll_pending = true;
                    }
                    break 'rings;
                }
                let group = if item.batch || first {
                    self.groups.push(FillGroup {
                        slot: item.slot,
                        records: 0,
                        first: 0,
                        batch: item.batch,
                    });
                    self.groups.len() as u32 - 1
                } else {
                    self.group_of[slot]
                };
                // The partition's next records join this group, or after a batch, a new one.
                self.seen[slot] = if item.batch {
                    stamp.wrapping_sub(1)
                } else {
                    stamp
                };
                self.group_of[slot] = group;
                self.group_of_record.push(group);
                self.groups[group as usize].records += 1;
                used += bytes;
                self.counts[r] += 1;
            }
        }
        self.counts.iter().any(|&c| c > 0)
    }

    /// Partitions forget the idempotent producers whose last batch there is older than the
    /// expiry (checked at most once a second, and before batches are checked against them).
    fn expire_producers(&mut self) {
        let expiry = self.start.producer_id_expiry;
        let now = Instant::now();
        if now.duration_since(self.producers_swept) < expiry.min(Duration::from_secs(1)) {
            return;
        }
        self.producers_swept = now;
        for p in &mut self.partitions {
            p.expire_producers(now, expiry);
        }
    }

    /// The second pass of [`Writer::fill`]: takes the counted records from the rings, frames
    /// them one batch per partition (stamping offsets and storing each for its ack), then frees
    /// the ring slots and hands the record buffers back.
    fn frame_counted(&mut self, room: usize) {
        self.expire_producers();
        let build = &mut self.build;
        let mut chunks = Vec::with_capacity(self.rings.len());
        // Group by partition with a counting sort: each group's start, then each record into its
        // group in ring order, so a partition's records keep their order within each ring.
        let mut next_start = 0u32;
        for group in &mut self.groups {
            group.first = next_start;
            next_start += group.records;
            group.records = 0;
        }
        self.order.clear();
        self.order
            .resize(next_start as usize, RecordAt { ring: 0, index: 0 });
        let mut counted = self.group_of_record.iter();
        for (r, (ring, &count)) in self.rings.iter_mut().zip(&self.counts).enumerate() {
            let chunk = ring
                .rx
                .read_chunk(count)
                .expect("counted slots are readable");
            let (a, b) = chunk.as_slices();
            for i in 0..a.len() + b.len() {
                let group = counted.next().expect("every counted record has its group");
                let group = &mut self.groups[*group as usize];
                self.order[(group.first + group.records) as usize] = RecordAt {
                    ring: r as u32,
                    index: i as u32,
                };
                group.records += 1;
            }
            chunks.push((chunk, &ring.ack, &mut ring.seq_popped, &mut ring.recycle));
        }
        for &FillGroup {
            slot,
            records: len,
            first: start,
            batch,
        } in &self.groups
        {
            let group = &self.order[start as usize..(start + len) as usize];
            let partition = &mut self.partitions[slot as usize];
            let record = |&RecordAt { ring: r, index: i }: &RecordAt| {
                let (chunk, ack, seq_popped, _) = &chunks[r as usize];
                let (a, b) = chunk.as_slices();
                let i = i as usize;
                let item = if i < a.len() { &a[i] } else { &b[i - a.len()] };
                (item, &***ack, **seq_popped + i as u64)
            };
            let (segment, durable) = (self.segment.id, self.pos_durable);
            if batch {
                // Stored as the producer checked it: its own checksum stands. An idempotent
                // producer's retry of a stored batch gets that batch's offset; one out of
                // sequence, or of a fenced epoch, is refused (its ack says why).
                let (item, ack, seq) = record(&group[0]);
                match partition.check_sequence(&item.tail) {
                    SeqCheck::Append => {
                        let at = (item, ack, seq);
                        let entry = frame_stored_batch(build, partition, segment, durable, at);
                        partition.note_sequence(&item.tail, entry.base_offset.0);
                        build.entries.push(SlotEntry::new(slot, &entry));
                    }
                    SeqCheck::Duplicate(offset) => ack.slots.store(seq, offset),
                    SeqCheck::Refuse(why) => ack.slots.store(seq, REFUSED | why as u64),
                }
                continue;
            }
            let base_timestamp = record(&group[0]).0.timestamp;
            let records = group.iter().map(record);
            let entry = frame_partition(
                build,
                partition,
                segment,
                durable,
                base_timestamp,
                records,
                room,
            );
            self.unsummed.push(entry_batch_range(build.start, &entry));
            build.entries.push(SlotEntry::new(slot, &entry));
        }
        checksum_batches(&mut build.buf, &self.unsummed);
        self.unsummed.clear();
        // Free the ring slots (the offsets are stored) and hand the record buffers back.
        for (chunk, ack, seq_popped, recycle) in chunks {
            let count = chunk.len() as u64;
            if count == 0 {
                continue;
            }
            for item in chunk {
                recycle_buffer(recycle, item.tail);
            }
            *seq_popped += count;
            build.acks.push((Arc::clone(ack), *seq_popped));
        }
    }

    /// Submits the commit being built, if there is one and the disk is free for it.
    fn maybe_submit_write(&mut self) -> bool {
        if self.build.frames == 0 || self.write_in_flight.is_some() {
            return false;
        }
        let end = self.build.start + self.build.len as u64;
        if end - self.pos_durable > self.window {
            return false; // wait for a flush: keep the unflushed region within the window
        }
        let mut next = self
            .spare
            .pop()
            .or_else(|| self.buf_pool.lock().expect("buffer pool lock").pop())
            .unwrap_or_else(|| AlignedBuf::new(self.start.commit_bytes_max));
        let build = &mut self.build;
        let padded = build.len.next_multiple_of(BLOCK_BYTES);
        build.buf[build.len..padded].fill(0);
        debug_assert!(verify_frames(&build.buf[build.first_frame..build.len]));
        let next_start = align_down(end);
        let carried = (end - next_start) as usize;
        let from = (next_start - build.start) as usize;
        next[..carried].copy_from_slice(&build.buf[from..from + carried]);
        let pos = build.start + build.first_frame as u64;
        let frames = build.first_frame..build.len;
        let frames_len = frames.len() as u64;
        let now = Instant::now();
        let wanted = self.start.tail_cache_bytes > 0 && self.shared.tail_wanted(now);
        if wanted {
            WriterCounters::add(&self.shared.counters.tail_cached_bytes, frames.len() as u64);
        }
        let cached = wanted.then(|| {
            let bytes = if frames.len() >= build.buf.len() / SHARE_FILL_DIVISOR {
                TailBytes::Lent(frames)
            } else {
                let data = self.copies.copy(&build.buf[frames]);
                let held = data.len();
                TailBytes::Copied(data, held)
            };
            (LogPos::new(self.segment.id, pos), bytes)
        });
        let buf = std::mem::replace(&mut build.buf, next);
        let commit = Commit {
            segment: self.segment.id,
            end,
            cached,
            acks: std::mem::take(&mut build.acks),
            entries: std::mem::replace(
                &mut build.entries,
                self.spare_entries.pop().unwrap_or_default(),
            ),
        };
        self.device
            .write(&self.segment.file, build.start, buf, padded, TOKEN_WRITE);
        self.write_submitted = now;
        let counters = &self.shared.counters;
        WriterCounters::add(&counters.records, build.records as u64);
        WriterCounters::add(&counters.batches, build.frames as u64);
        WriterCounters::add(&counters.write_bytes, padded as u64);
        WriterCounters::add(&counters.log_bytes, frames_len);
        build.start = next_start;
        build.len = carried;
        build.first_frame = carried;
        build.frames = 0;
        build.records = 0;
        self.write_in_flight = Some(commit);
        self.preparer.writer_progress(end);
        true
    }

    /// Submits a flush when one is due.
    fn maybe_flush(&mut self) -> bool {
        if self.flushes.len() >= FLUSHES_IN_FLIGHT_MAX || self.written.is_empty() {
            return false;
        }
        let due = match self.start.durability {
            Durability::Sync => true,
            Durability::Interval(d) => {
                let unflushed = self.written.last().map_or(0, |c| c.end) - self.pos_durable;
                self.flushes.is_empty()
                    && (self.last_flush.elapsed() >= d
                        || unflushed >= self.start.commit_bytes_max as u64)
                    || self.roll_pending
                    || self.shared.shutdown.load(Ordering::Relaxed)
            }
        };
        if !due {
            return false;
        }
        let token = self.flush_next;
        self.flush_next += 1;
        self.flushes
            .push_back((token, std::mem::take(&mut self.written), Instant::now()));
        self.device.flush(&self.segment.file, token);
        true
    }

    /// Handles finished I/O. Returns whether anything finished.
    fn reap(&mut self, block: bool, timeout: Option<Duration>) -> Result<bool> {
        let mut done = std::mem::take(&mut self.completions);
        self.device.wait(&mut done, block, timeout)?;
        let progress = !done.is_empty();
        for c in done.drain(..) {
            if let Err(e) = c.result {
                let op = if c.token == TOKEN_WRITE {
                    "write"
                } else {
                    "fdatasync"
                };
                return Err(Error::io(op, &self.segment.path, e));
            }
            match c.token {
                TOKEN_WRITE => {
                    let counters = &self.shared.counters;
                    WriterCounters::add(&counters.writes, 1);
                    WriterCounters::add(
                        &counters.write_nanos,
                        self.write_submitted.elapsed().as_nanos() as u64,
                    );
                    let buf = c.buf.expect("a write returns its buffer");
                    let mut commit = self.write_in_flight.take().expect("a write in flight");
                    if let Some((_, tail)) = &mut commit.cached
                        && let TailBytes::Lent(frames) = tail
                    {
                        let frames = frames.clone();
                        let held = buf.len();
                        let pooled = PooledBuf::new(buf, Arc::clone(&self.buf_pool));
                        *tail =
                            TailBytes::Copied(bytes::Bytes::from_owner(pooled).slice(frames), held);
                    } else {
                        self.spare.push(buf);
                    }
                    if matches!(self.start.durability, Durability::Interval(_)) {
                        publish(&commit, &self.shared);
                    }
                    self.written.push(commit);
                }
                token => {
                    // A flush covers every write completed before it was submitted, so it also
                    // completes the flushes submitted before it.
                    self.last_flush = Instant::now();
                    let mut commits = Vec::new();
                    while self.flushes.front().is_some_and(|(t, _, _)| *t <= token) {
                        let (_, flushed, submitted) = self.flushes.pop_front().expect("a flush");
                        let counters = &self.shared.counters;
                        WriterCounters::add(&counters.flushes, 1);
                        let nanos = submitted.elapsed().as_nanos() as u64;
                        WriterCounters::add(&counters.flush_nanos, nanos);
                        commits.extend(flushed);
                    }
                    if let Some(last) = commits.last() {
                        self.pos_durable = last.end;
                    }
                    if self.start.durability == Durability::Sync {
                        for commit in &commits {
                            publish(commit, &self.shared);
                        }
                    }
                    for commit in commits {
                        if self.spare_entries.len() < SPARE_ENTRY_LISTS {
                            let mut entries = commit.entries;
                            entries.clear();
                            self.spare_entries.push(entries);
                        }
                    }
                }
            }
        }
        self.completions = done;
        Ok(progress)
    }

    /// Seals the full segment (writes its index file) and starts the next one; returns false
    /// (and marks the shard full) if the disk cap leaves no room for another segment.
    fn roll(&mut self) -> Result<bool> {
        if let Some(cap) = self.start.retention.disk_bytes_max {
            let held = self.shared.segments.read().expect("segments lock").len() as u64;
            if (held + 1) * self.start.segment_bytes > cap {
                if !self.shared.log_full.swap(true, Ordering::AcqRel) {
                    self.preparer.retention_now();
                }
                return Ok(false);
            }
        }
        // The sealed segment's index file, written by the helper: every commit is published
        // by now (the roll waits for the disk to go idle). Handing over the entries is O(1);
        // building the file from millions of entries is not work for the writer's thread.
        let entries = self
            .shared
            .index_log
            .lock()
            .expect("index log lock")
            .seal(self.segment.id);
        self.preparer.seal(Seal {
            path: index_path(&self.shared.dir, self.segment.id),
            segment: self.segment.id,
            data_end: self.pos_durable,
            entries,
            names: self.partitions.iter().map(SlotState::id).collect(),
            filled_in: self.segment_started.elapsed(),
            producers: producers::encode(
                (self.partitions.iter()).filter_map(|p| Some((p.id(), &**p.producers.as_ref()?))),
                Instant::now(),
                producers::wall_ms(),
            ),
        });
        self.segment_started = Instant::now();
        let id = self.segment.id.next();
        // A zero-filled segment if the helper has one ready; otherwise a plain preallocated one
        // rather than waiting (the helper's one is then adopted at a later roll).
        // Taken even without prezeroing: it reports a failed index file write. A preparation
        // that met a full disk is not the end: the plain segment below fails the same way if
        // the disk is still full, and succeeds once space was made.
        let prepared = match self.preparer.take_ready() {
            Err(e) if e.is_no_space() => None,
            other => other?,
        };
        let file = match prepared {
            Some(path) => adopt_segment(&self.shared, id, &path, self.start.backend, false)?,
            None => {
                if self.start.prezero {
                    WriterCounters::add(&self.shared.counters.rolls_unzeroed, 1);
                }
                create_segment(
                    &self.shared,
                    id,
                    self.start.segment_bytes,
                    self.start.backend,
                )?
            }
        };
        if self.start.prezero {
            self.preparer.writer_progress(0);
            self.preparer.request();
        }
        self.segment = Active {
            id,
            file: Arc::new(file),
            path: self.shared.segment_path(id),
        };
        self.build.start = 0;
        self.build.len = 0;
        self.build.first_frame = 0;
        self.pos_durable = 0;
        self.roll_pending = false;
        WriterCounters::add(&self.shared.counters.rolls, 1);
        self.shared.update_full(
            self.start.retention.disk_bytes_max,
            self.start.segment_bytes,
        );
        if self.shared.log_full.load(Ordering::Acquire) {
            self.preparer.retention_now();
        }
        Ok(true)
    }
}

/// A commit at least this fraction full (1/n of its buffer) gives the tail cache its write
/// buffer instead of a copy: copying large commits costs a good part of the write bandwidth
/// (docs/TUNING.md, `tail_cache_bytes`). Smaller commits are copied, so a cache of small
/// commits is not mostly empty buffers.
const SHARE_FILL_DIVISOR: usize = 2;

/// Makes a durable commit visible: index entries first (readers move them into the partitions),
/// then acknowledgements.
fn publish(commit: &Commit, shared: &ShardShared) {
    *shared.acked_end.lock().expect("acked end lock") = LogPos::new(commit.segment, commit.end);
    if let Some((at, TailBytes::Copied(data, held))) = &commit.cached {
        shared
            .read_cache
            .write()
            .expect("read cache lock")
            .insert_holding(*at, data.clone(), *held);
    }
    shared
        .index_log
        .lock()
        .expect("index log lock")
        .publish(commit.segment, &commit.entries);
    shared.data_waiters.wake_all();
    for (ack, seq_end) in &commit.acks {
        ack.seq_acked.store(*seq_end, Ordering::Release);
        ack.wake_all();
    }
}

fn align_down(pos: u64) -> u64 {
    pos - pos % BLOCK_BYTES as u64
}

/// Checks every frame written by a commit decodes (a debug assertion before each write).
fn verify_frames(bytes: &[u8]) -> bool {
    use crate::segment::decode_frame;
    let mut pos = 0usize;
    while pos < bytes.len() {
        match decode_frame(&bytes[pos..]) {
            Ok(Some((h, batch))) if batch.check_records().is_ok() => {
                pos += h.frame_bytes() as usize
            }
            _ => return false,
        }
    }
    true
}
