//! Segment preparation: a helper thread per shard zero-fills the next segment while the writer
//! fills the current one.
//!
//! Why: on ext4, a preallocated (fallocate) extent is "unwritten"; the first write to each block
//! converts it, and the next fdatasync must commit that metadata change to the journal, which
//! makes a commit into fresh blocks about twice as slow to flush as an overwrite
//! (docs/TUNING.md, `segment_prezero`). Writing zeros over a segment before it is used makes
//! every commit an overwrite; the cost is writing each segment twice, off the critical path.
//! `Config::segment_prezero(false)` turns it off for bandwidth-bound workloads.
//!
//! Zeroing is paced by the writer's progress and done in small writes at idle I/O priority:
//! every flush the writer issues waits for the writes completed before it, so zeros written in
//! bursts would be carried by the writer's flushes (see [`ZERO_PACE_QUARTERS`]).
//!
//! When the writer fills segments faster than the helper can zero them (a bandwidth-bound load),
//! it does not wait: it rolls into a plain preallocated segment and adopts the zeroed one at a
//! later roll. Prezeroing thus speeds up commits when the disk has bandwidth to spare and costs
//! nothing but that spare bandwidth otherwise.
//!
//! Files: the helper writes `next.seg.prep.tmp`, flushes it, fsyncs the directory (see below),
//! renames it to `next.seg.prep` and fsyncs the directory again. The writer adopts it at a roll
//! by renaming it to `N.seg`, without waiting for that rename to be durable: recovery gives a
//! `next.seg.prep` that holds frames the next segment's name, and deletes any other `.prep` or
//! `.tmp` file, so a crash mid-way leaves nothing that looks like log data and loses nothing
//! acknowledged. The first directory fsync makes the writer's rename durable before a new file
//! takes the name `next.seg.prep`.

use crate::segment::SegmentId;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::Retention;
use crate::error::{Error, Result};
use crate::index::write_index_file_paced;
use crate::index::{
    BatchEntry, INDEX_ENTRY_BYTES, IndexFrames, SegmentEntries, TopicPartition, encode_index,
};
use crate::io::{self, AlignedBuf, IoBackend};
use crate::layout;
use crate::segment::format::BLOCK_BYTES;
use crate::shard::ShardShared;
use crate::shard::checkpoint::{CHECKPOINT_INTERVAL, Checkpoint, CheckpointFile};
use crate::shard::producers;
use crate::shard::retention::enforce;

/// Zeroing's write size, and (below) its lead and how often it looks at the writer's
/// progress: every write completed before one of the writer's flushes is waited for by that
/// flush, so zeroing goes out in small writes spread over time rather than bursts of
/// megabytes, which would hold the writer's flushes back by milliseconds.
const ZERO_CHUNK_BYTES: usize = 64 << 10;
/// Zeroing's write size when nothing else is written.
const ZERO_CHUNK_UNPACED_BYTES: usize = 1 << 20;
/// How far zeroing may run ahead of [`ZERO_PACE_QUARTERS`] quarters of the writer's progress.
const ZERO_LEAD_BYTES: u64 = 1 << 20;
/// Zeroing may run this many times the writer's progress ahead (in quarters): 5/4 finishes
/// when the current segment is 80% full, with the disk taking zeros at 1.25 times the
/// writer's bandwidth meanwhile: fast enough that a roll finds the next segment ready, slow
/// enough that the zeros barely delay the writer's flushes (docs/TUNING.md has the figures).
const ZERO_PACE_QUARTERS: u64 = 5;

const _: () = assert!(ZERO_CHUNK_BYTES.is_multiple_of(BLOCK_BYTES));
const _: () = assert!(ZERO_CHUNK_UNPACED_BYTES.is_multiple_of(BLOCK_BYTES));
// Zeroing may always take its next chunk once the writer has moved at all.
const _: () = assert!(ZERO_LEAD_BYTES >= ZERO_CHUNK_BYTES as u64);
// Zeroing runs ahead of the writer, or the next roll would find the segment unzeroed.
const _: () = assert!(ZERO_PACE_QUARTERS > 4);
/// How often paced zeroing looks at the writer's progress.
const PACE_POLL: std::time::Duration = Duration::from_millis(2);
/// The longest poll while the writer makes no progress.
const PACE_POLL_IDLE_MAX: std::time::Duration = Duration::from_millis(128);
/// A sealed segment's index file is written over a quarter of the time the segment took to
/// fill (the next roll is then far off), in small pieces with pauses between them: written at
/// full speed, the file's bytes would hold the writer's flushes back for as long as the disk
/// takes them.
const INDEX_WRITE_SPREAD: u32 = 4;
/// The shortest pause per MiB of index file (200 MB/s at most)...
const INDEX_WRITE_PAUSE_PER_MIB_MIN: Duration = Duration::from_millis(5);
/// ...and the longest (10 MB/s at least).
const INDEX_WRITE_PAUSE_PER_MIB_MAX: Duration = Duration::from_millis(100);
/// Sealed segments whose index files may wait to be written before a roll waits for them.
const SEALS_PENDING_MAX: usize = 2;
/// How often retention is checked.
const RETENTION_INTERVAL: Duration = Duration::from_secs(1);
/// How often an index file that met a full disk is tried again.
const SEAL_RETRY: Duration = Duration::from_secs(1);

/// A sealed segment whose index file is to be written.
pub(crate) struct Seal {
    pub path: PathBuf,
    pub segment: SegmentId,
    pub data_end: u64,
    pub entries: SegmentEntries,
    /// Slot → partition, for the entries.
    pub names: Vec<TopicPartition>,
    /// How long the writer took to fill the segment.
    pub filled_in: Duration,
    /// The idempotent producers' state at the seal (`shard::producers`), written before the
    /// index file.
    pub producers: Vec<u8>,
}

impl Seal {
    /// Writes the index file, then lets the partitions drop the segment's entries from memory.
    /// Paced (see [`INDEX_WRITE_SPREAD`]) unless `hurry()` says otherwise (more seals wait, or
    /// the log is closing): then as fast as the disk takes it.
    fn write(
        &self,
        shard: &ShardShared,
        backend: IoBackend,
        hurry: &dyn Fn() -> bool,
    ) -> Result<()> {
        let mib = (self.entries.len() * INDEX_ENTRY_BYTES).max(1) as f64 / f64::from(1 << 20);
        let per_mib = (self.filled_in / INDEX_WRITE_SPREAD)
            .div_f64(mib)
            .clamp(INDEX_WRITE_PAUSE_PER_MIB_MIN, INDEX_WRITE_PAUSE_PER_MIB_MAX);
        let mut pace = |bytes: usize| {
            if !hurry() {
                std::thread::sleep(per_mib.mul_f64(bytes as f64 / f64::from(1 << 20)));
            }
        };
        // Before the index file: a segment with an index file is not scanned by recovery, so
        // its producers' batches are known from this file only.
        let dir = self
            .path
            .parent()
            .expect("index files live in a shard directory");
        producers::write(&layout::producers_path(dir, self.segment), &self.producers)?;
        let (directory, starts) = write_index_file_paced(&self.path, backend, &mut pace, |sink| {
            encode_index((self.segment, 0), self.data_end, self, sink)
        })?;
        let runs: Vec<_> = directory
            .runs
            .iter()
            .zip(starts)
            .map(|(r, s)| (*r, directory.entries_pos(r), s))
            .collect();
        let rewrite = crate::shard::rewrite::worth_rewriting(&directory);
        shard.index_sealed(self.segment, runs, rewrite);
        Ok(())
    }
}

impl IndexFrames for Seal {
    fn count(&self) -> usize {
        self.entries.len()
    }
    fn groups(&self) -> usize {
        self.names.len()
    }
    fn each_group(&self, f: impl FnMut(u32)) {
        self.entries.slots().for_each(f);
    }
    fn name(&self, g: u32) -> TopicPartition {
        self.names[g as usize]
    }
    fn entry(&self, i: usize) -> BatchEntry {
        self.entries.get(i).1
    }
    fn prefetch(&self, i: usize) {
        self.entries.prefetch(i);
    }
}

#[derive(Default)]
struct State {
    /// A prepared segment is wanted.
    want: bool,
    /// `next.seg.prep` is complete, ready to adopt.
    ready: bool,
    failed: Option<Error>,
    shutdown: bool,
    /// Index files of sealed segments to write.
    seals: Vec<Seal>,
    /// Seals taken from `seals` whose index files are being written.
    sealing: usize,
    /// Apply retention now, not at its next interval.
    retention_now: bool,
    /// Index files wait for disk space until then.
    seals_retry: Option<Instant>,
}

impl State {
    /// Whether index files wait to be written now.
    fn seals_due(&self) -> bool {
        !self.seals.is_empty() && self.seals_retry.is_none_or(|at| Instant::now() >= at)
    }
}

/// Dropped when the helper thread ends: if that was not the writer's doing (a panic), the
/// writer learns it at its next roll instead of waiting for index files nobody writes.
struct Stopped<'a>(&'a (Mutex<State>, Condvar), &'a Path);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        let (lock, cv) = self.0;
        let mut state = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !state.shutdown {
            let stopped = std::io::Error::other("the shard's helper thread stopped");
            state
                .failed
                .get_or_insert(Error::io("segment helper", self.1, stopped));
        }
        cv.notify_all();
    }
}

/// The handle the writer keeps; dropping it stops the helper thread.
pub(crate) struct Preparer {
    shared: Arc<(Mutex<State>, Condvar)>,
    /// The writer's position in its current segment: zeroing the next one is paced to stay
    /// within `ZERO_PACE_QUARTERS / 4 × writer_pos + ZERO_LEAD_BYTES`, so it finishes by the
    /// time the current segment is 80% full, and never floods the disk (the writer's flushes
    /// would then carry the zeros too).
    writer_pos: Arc<std::sync::atomic::AtomicU64>,
    dir: PathBuf,
    thread: Option<JoinHandle<()>>,
}

/// How far zeroing the next segment may go, by the writer's progress since the zeroing
/// started: [`ZERO_PACE_QUARTERS`] quarters of it, scaled so that the zeroing would end when
/// the writer has filled what was left of its segment, plus [`ZERO_LEAD_BYTES`]. After a roll
/// this is 5/4 of the writer's position; after an open it is not a burst as large as the
/// segment already written, which a log opened to be read would pay for in its reads.
struct WriterProgress {
    /// The writer's last position seen, in its current segment.
    last: u64,
    /// Bytes the writer wrote since the zeroing started (across rolls).
    moved: u64,
    /// The segment bytes left when the zeroing started (at least one).
    left: u64,
    segment_bytes: u64,
}

impl WriterProgress {
    fn new(pos: u64, segment_bytes: u64) -> WriterProgress {
        WriterProgress {
            last: pos,
            moved: 0,
            left: segment_bytes.saturating_sub(pos).max(1),
            segment_bytes,
        }
    }

    /// The bytes that may be zeroed with the writer at `pos` (in its current segment, which
    /// may be a later one).
    fn zeroing_allowed(&mut self, pos: u64) -> u64 {
        // Below the last position seen, the writer rolled: it wrote `pos` in the new segment.
        self.moved += pos.checked_sub(self.last).unwrap_or(pos);
        self.last = pos;
        let scaled =
            u128::from(self.moved) * u128::from(self.segment_bytes) / u128::from(self.left);
        let paced = scaled * u128::from(ZERO_PACE_QUARTERS) / 4;
        u64::try_from(paced)
            .unwrap_or(u64::MAX)
            .saturating_add(ZERO_LEAD_BYTES)
    }
}

/// Creates `next.seg.prep`: preallocated, zero-filled and flushed. Without `pace` it zeroes in
/// large writes (nothing else is written meanwhile: a new log's first segment); with it, in
/// [`ZERO_CHUNK_BYTES`] writes, calling `pace(bytes zeroed so far)` before each, which waits
/// as long as it likes and returns false to abandon the work.
pub(crate) fn prepare_segment(
    dir: &Path,
    segment_bytes: u64,
    backend: IoBackend,
    pace: Option<&dyn Fn(u64) -> bool>,
) -> Result<Option<PathBuf>> {
    let done = layout::prepared_path(dir);
    let tmp = layout::temporary_path(&done);
    let file = io::open_segment(&tmp, backend, true, true)?;
    io::preallocate(&file, &tmp, segment_bytes)?;
    let chunk = if pace.is_some() {
        ZERO_CHUNK_BYTES
    } else {
        ZERO_CHUNK_UNPACED_BYTES
    };
    let zeros = AlignedBuf::new(chunk);
    let mut at = 0u64;
    while at < segment_bytes {
        if pace.is_some_and(|pace| !pace(at)) {
            drop(file);
            let _ = std::fs::remove_file(&tmp);
            return Ok(None);
        }
        let n = ((segment_bytes - at) as usize).min(chunk);
        io::write_all_at(&file, &tmp, at, &zeros[..n])?;
        at += n as u64;
    }
    file.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    // The writer's last roll renamed the previous `next.seg.prep` without waiting for it to be
    // durable (recovery adopts a prepared file that holds frames). Make that rename durable
    // before this file takes the name, or a crash could leave the new, empty file under it
    // and the old one, with acknowledged records, nameless.
    io::sync_dir(dir)?;
    std::fs::rename(&tmp, &done).map_err(|e| Error::io("rename", &done, e))?;
    io::sync_dir(dir)?;
    Ok(Some(done))
}

impl Preparer {
    /// Starts the helper thread for a shard directory.
    pub fn start(
        shard: &Arc<ShardShared>,
        segment_bytes: u64,
        backend: IoBackend,
        retention: Retention,
        cores: &[usize],
        checkpoint: Option<CheckpointFile>,
    ) -> Result<Preparer> {
        let dir = &shard.dir;
        let shared: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let writer_pos = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let thread_shared = Arc::clone(&shared);
        let thread_pos = Arc::clone(&writer_pos);
        let thread_shard = Arc::clone(shard);
        let cores = cores.to_vec();
        let (pinned_tx, pinned) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("floodgate-prep-{}", shard.id))
            .spawn(move || {
                crate::io::cores::pin(&cores);
                let _ = pinned_tx.send(());
                let _stopped = Stopped(&thread_shared, &thread_shard.dir);
                let checkpoint = RefCell::new(checkpoint);
                run(
                    &thread_shared,
                    &thread_pos,
                    &thread_shard,
                    segment_bytes,
                    backend,
                    retention,
                    &checkpoint,
                );
                // The writer has stopped (it drops this helper last): the log ends where its
                // acknowledgements do, and it closed cleanly unless the writer failed.
                let clean = matches!(thread_shard.failed.get(), Some(Error::Closed));
                if let Some(file) = checkpoint.borrow_mut().as_mut() {
                    let durable = *thread_shard.acked_end.lock().expect("acked end lock");
                    let _ = file.write(Checkpoint { durable, clean });
                }
            })
            .map_err(|e| Error::io("spawn segment preparer", dir, e))?;
        // The log opens with its threads where they belong.
        let _ = pinned.recv();
        Ok(Preparer {
            shared,
            writer_pos,
            dir: dir.to_owned(),
            thread: Some(thread),
        })
    }

    /// Tells the preparer how far the writer is in its current segment.
    pub fn writer_progress(&self, pos: u64) {
        self.writer_pos
            .store(pos, std::sync::atomic::Ordering::Relaxed);
    }

    /// Writes a sealed segment's index file on the helper thread: it is the recovery
    /// checkpoint, not needed for correctness (a missing one is rebuilt by a scan), and writing
    /// it on the writer stalled commits for hundreds of milliseconds (tens of MB and an fsync).
    ///
    /// Waits while more than [`SEALS_PENDING_MAX`] seals are waiting or being written: each
    /// holds its segment's index entries in memory (32 bytes a batch: 200 MB for a 1 GiB
    /// segment of one-record batches), so a helper that falls behind slows the writer rather
    /// than let memory grow.
    pub fn seal(&self, seal: Seal) {
        let (lock, cv) = &*self.shared;
        let mut state = lock.lock().expect("preparer lock");
        state.seals.push(seal);
        cv.notify_all();
        while state.seals.len() + state.sealing > SEALS_PENDING_MAX
            && !state.shutdown
            && state.failed.is_none()
        {
            state = cv.wait(state).expect("preparer lock");
        }
    }

    /// Asks for retention to run now (the writer is at its disk cap).
    pub fn retention_now(&self) {
        let (lock, cv) = &*self.shared;
        lock.lock().expect("preparer lock").retention_now = true;
        cv.notify_all();
    }

    /// Asks for a segment to be prepared (if none is ready or under way).
    pub fn request(&self) {
        let (lock, cv) = &*self.shared;
        lock.lock().expect("preparer lock").want = true;
        cv.notify_all();
    }

    /// The prepared segment's path, if one is ready; the caller must rename it away (adopt it)
    /// before calling `request` again. A failure to prepare is returned once.
    pub fn take_ready(&self) -> Result<Option<PathBuf>> {
        let (lock, _) = &*self.shared;
        let mut state = lock.lock().expect("preparer lock");
        if let Some(e) = state.failed.take() {
            return Err(e);
        }
        if !state.ready {
            return Ok(None);
        }
        state.ready = false;
        Ok(Some(layout::prepared_path(&self.dir)))
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        let (lock, cv) = &*self.shared;
        lock.lock().expect("preparer lock").shutdown = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    shared: &(Mutex<State>, Condvar),
    writer_pos: &std::sync::atomic::AtomicU64,
    shard: &ShardShared,
    segment_bytes: u64,
    backend: IoBackend,
    retention: Retention,
    checkpoint: &RefCell<Option<CheckpointFile>>,
) {
    // The helper's work is background work, so it runs at the lowest CPU priority: at normal
    // priority, encoding a sealed segment's index takes the producers' core in slices, and the
    // writer finds nothing to commit meanwhile. It still gets every idle moment, and the writer
    // waits for it rather than let sealed segments pile up (SEALS_PENDING_MAX).
    io::set_cpu_priority_lowest();
    io::set_io_priority_idle();
    let dir = &shard.dir;
    let (lock, cv) = shared;
    let retention_due = std::cell::Cell::new(Instant::now());
    let checkpoint_due = std::cell::Cell::new(Instant::now() + CHECKPOINT_INTERVAL);
    // Writes pending index files, then applies retention if it is due, then records how far
    // the log is durable if that is due; a failure is reported to the writer like a failed
    // preparation.
    let maintain = || {
        let seals = {
            let mut state = lock.lock().expect("preparer lock");
            if std::mem::take(&mut state.retention_now) {
                retention_due.set(Instant::now());
            }
            if state.seals_due() {
                state.sealing = state.seals.len();
                std::mem::take(&mut state.seals)
            } else {
                Vec::new()
            }
        };
        let hurry = || {
            let state = lock.lock().expect("preparer lock");
            state.shutdown || !state.seals.is_empty()
        };
        let any = !seals.is_empty();
        let mut outcome = Ok(());
        let mut seals = seals.into_iter();
        let mut waiting = Vec::new();
        while let Some(seal) = seals.next() {
            match seal.write(shard, backend, &hurry) {
                Ok(()) => {}
                // An index file waits for space (retention may make some): the shard goes on,
                // its entries of the segment kept in memory meanwhile.
                Err(e) if e.is_no_space() => {
                    waiting.push(seal);
                    waiting.extend(seals.by_ref());
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        if any {
            let mut state = lock.lock().expect("preparer lock");
            state.sealing = 0;
            state.seals_retry = None;
            if !waiting.is_empty() {
                waiting.append(&mut state.seals);
                state.seals = waiting;
                state.seals_retry = Some(Instant::now() + SEAL_RETRY);
            }
            cv.notify_all();
        }
        if outcome.is_ok()
            && (retention.enabled() || shard.starts_move())
            && Instant::now() >= retention_due.get()
        {
            retention_due.set(Instant::now() + RETENTION_INTERVAL);
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            outcome = enforce(shard, &retention, segment_bytes, now_ms).map(drop);
        }
        if outcome.is_ok() && Instant::now() >= checkpoint_due.get() {
            checkpoint_due.set(Instant::now() + CHECKPOINT_INTERVAL);
            if let Some(file) = checkpoint.borrow_mut().as_mut() {
                let durable = *shard.acked_end.lock().expect("acked end lock");
                outcome = file.write(Checkpoint {
                    durable,
                    clean: false,
                });
            }
        }
        if let Err(e) = outcome {
            lock.lock().expect("preparer lock").failed.get_or_insert(e);
            cv.notify_all();
        }
    };
    // How long the helper may sleep with nothing to do: until the next checkpoint or retention
    // (the log's or a topic's, which may be set at any time) is due.
    let idle_wait = RETENTION_INTERVAL.min(CHECKPOINT_INTERVAL);
    loop {
        {
            let mut state = lock.lock().expect("preparer lock");
            loop {
                if state.seals_due()
                    || state.retention_now
                    || Instant::now() >= retention_due.get()
                    || Instant::now() >= checkpoint_due.get()
                {
                    drop(state);
                    maintain();
                    state = lock.lock().expect("preparer lock");
                    if state.seals_due() {
                        continue;
                    }
                }
                if state.shutdown {
                    return;
                }
                if state.want && !state.ready && state.failed.is_none() {
                    state.want = false;
                    break;
                }
                state = cv.wait_timeout(state, idle_wait).expect("preparer lock").0;
            }
        }
        // The poll backs off while the writer stands still (an idle log should cost no CPU)
        // and comes back to `PACE_POLL` once it moves.
        let poll = std::cell::Cell::new(PACE_POLL);
        let seen = std::cell::Cell::new(u64::MAX);
        let progress = std::cell::RefCell::new(WriterProgress::new(
            writer_pos.load(std::sync::atomic::Ordering::Relaxed),
            segment_bytes,
        ));
        let pace = |zeroed: u64| loop {
            maintain();
            let state = lock.lock().expect("preparer lock");
            if state.shutdown {
                return false;
            }
            let pos = writer_pos.load(std::sync::atomic::Ordering::Relaxed);
            if zeroed < progress.borrow_mut().zeroing_allowed(pos) {
                return true;
            }
            poll.set(if pos == seen.replace(pos) {
                (poll.get() * 2).min(PACE_POLL_IDLE_MAX)
            } else {
                PACE_POLL
            });
            drop(cv.wait_timeout(state, poll.get()).expect("preparer lock"));
        };
        let outcome = prepare_segment(dir, segment_bytes, backend, Some(&pace));
        let mut state = lock.lock().expect("preparer lock");
        match outcome {
            Ok(Some(_)) => state.ready = true,
            Ok(None) => {
                drop(state);
                maintain();
                return;
            }
            Err(e) => state.failed = Some(e),
        }
        cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEGMENT: u64 = 1 << 30;

    /// Zeroing that starts with a segment (after a roll) runs at 5/4 of the writer's position.
    #[test]
    fn zeroing_after_a_roll_keeps_five_quarters_of_the_writer() {
        let mut p = WriterProgress::new(0, SEGMENT);
        assert_eq!(p.zeroing_allowed(0), ZERO_LEAD_BYTES);
        assert_eq!(p.zeroing_allowed(400 << 20), (500 << 20) + ZERO_LEAD_BYTES);
    }

    /// Zeroing that starts with the writer deep in its segment (a log just opened) waits for
    /// the writer to move, then keeps pace to end with the segment: no burst of the bytes the
    /// segment already holds.
    #[test]
    fn zeroing_after_an_open_waits_for_the_writer_to_move() {
        let start = SEGMENT / 4 * 3;
        let mut p = WriterProgress::new(start, SEGMENT);
        assert_eq!(p.zeroing_allowed(start), ZERO_LEAD_BYTES);
        // Half of what was left: the zeroing may be past half the segment.
        let allowed = p.zeroing_allowed(start + SEGMENT / 8);
        assert_eq!(allowed, SEGMENT / 2 * 5 / 4 + ZERO_LEAD_BYTES);
        // The writer rolls (into a segment not zeroed ahead) and writes on.
        let allowed = p.zeroing_allowed(SEGMENT / 8);
        assert_eq!(allowed, SEGMENT * 5 / 4 + ZERO_LEAD_BYTES);
    }
}
