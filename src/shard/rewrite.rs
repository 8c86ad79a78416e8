//! Rewriting sealed segments so a partition's records lie together in few batches.
//!
//! With thousands of partitions every commit holds a record or two of each partition: a
//! partition's batches are spread through the whole segment, one record each, and each costs
//! 93 bytes of frame and batch header besides its record (185 bytes of log per 100-byte record
//! at 10,000 partitions, 115 at one). A consumer reading at the device's speed then reads
//! fewer records per second the more partitions there are. Once a segment is sealed and its
//! index file written, this shard's rewrite thread reads it a window at a time
//! (`Config::rewrite_window_bytes`), groups each window's frames by partition, merges each
//! partition's consecutive batches where nothing but the batch boundaries changes
//! (`segment::merge`), and writes the result as a new file with its own index file; then the new
//! files take the old ones' names, and readers move to them.
//!
//! A segment larger than a window takes two passes, as an external sort does: the windows,
//! each grouped and merged, go to a file of sorted runs (`N.seg.runs`, not synced: a crash
//! only deletes it); then every run is read at once, each through its share of the window's
//! memory, and merged by partition into the new segment. A partition's records in the whole
//! segment so become one stretch of few batches: with 10,000 partitions a window alone held
//! about 18 records of each, 8 batches per partition in a 256 MiB segment, and a consumer
//! spent 14% more CPU per record than on one partition's log; with 100,000 partitions a
//! window held one or two records of each, and nothing merged at all.
//!
//! Only segments whose frames average under [`REWRITE_FRAME_BYTES_MAX`] bytes are rewritten (a
//! log of few partitions has large batches already), each once (the index file's generation
//! says so). Offsets, records and every partition's order stay as they were; positions change.
//!
//! Crash safety: the rewritten segment `N.seg.rw` is written and fsynced, then its index file
//! `N.idx.rw` is put in place (temporary file, fsync, rename, directory fsync): from then on the
//! rewrite is decided. `N.seg.rw` is renamed over `N.seg`, `N.idx.rw` over `N.idx`. Opening the
//! log finishes a decided rewrite (the renames left) and deletes an undecided one
//! ([`finish_rewrites`]).
//!
//! Readers: a reader may hold positions of the old layout (index entries, a scan's cursor, a
//! read hint) while the segment is replaced. The shard's layout counter is odd while a
//! replacement is under way and moves at each; a read that fails (a frame not where its entry
//! said, an index run that does not check) while the counter moved is done again, and scans
//! whose cursor was placed before a move are placed again. Spans of the old file are dropped
//! from the read cache, which refuses spans read from it afterwards.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::error::{Error, Result};
use crate::index::{BatchEntry, IndexDirectory, SegmentIndex, TopicPartition};
use crate::io::{self, AlignedBuf, IoBackend};
use crate::layout::{self, index_path, rewritten_index_path, rewritten_segment_path};
use crate::segment::format::{
    BATCH_HEADER_BYTES, BLOCK_BYTES, FRAME_HEADER_BYTES, FrameHeader, HeaderSlot,
};
use crate::segment::merge::{BatchMerger, MergeKey};
use crate::segment::{Offset, SegmentId, decode_frame};
use crate::shard::ShardShared;
use crate::shard::files::SegmentFile;
use crate::shard::stats::WriterLoad;

mod runs;

/// A sealed segment is rewritten when its frames average fewer bytes than this: each frame's
/// 93 bytes of headers are then more than 4.5% of the log.
pub(crate) const REWRITE_FRAME_BYTES_MAX: u64 = 2048;
/// Bytes a rewrite reads and writes per second at most, together: at full speed its 32 MiB
/// reads and writes queued ahead of the writer's commits on the device, and the peak
/// scenario's ack p99 at 10,000 partitions went from 1.3 to 45-48 ms (docs/TUNING.md).
pub(crate) const REWRITE_BYTES_PER_S: f64 = 128e6;
/// The pieces a rewrite reads and writes in, each followed by the pause its pace asks for.
const REWRITE_PIECE_BYTES: usize = 1 << 20;
/// A rewrite yields to a busy writer: it waits while the shard's writer appended more than this
/// per second over the last [`REWRITE_YIELD_WINDOW`]. Paced to 128 MB/s alongside the peak
/// scenario (500k records/s in, 60-90 MB/s of log), a rewrite still took the writer's ack
/// p99 from 1.4 to 2.0-2.2 ms at 10,000 partitions; so rewrites run in the troughs between
/// surges, and a log taking in less than this is rewritten as it goes.
pub(crate) const REWRITE_YIELDS_ABOVE_BYTES_PER_S: f64 = 16e6;
/// How long the writer's rate is measured over before a rewrite goes on, or waits again.
const REWRITE_YIELD_WINDOW: std::time::Duration = std::time::Duration::from_millis(250);

impl WriterLoad<'_> {
    /// Waits while the writer writes more than [`REWRITE_YIELDS_ABOVE_BYTES_PER_S`], measured
    /// a window at a time, or until `stop` says so. Returns whether it waited.
    fn wait_quiet(&mut self, stop: &dyn Fn() -> bool) -> bool {
        let mut waited = false;
        while self.rate() > REWRITE_YIELDS_ABOVE_BYTES_PER_S && !stop() {
            waited = true;
            std::thread::sleep(REWRITE_YIELD_WINDOW);
        }
        waited
    }
}

/// Holds a rewrite's reads and writes to [`REWRITE_BYTES_PER_S`], and holds them back while
/// the shard's writer is busy.
struct Pace<'a> {
    start: std::time::Instant,
    bytes: f64,
    load: WriterLoad<'a>,
    stop: &'a dyn Fn() -> bool,
}

impl std::fmt::Debug for Pace<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pace").field("bytes", &self.bytes).finish()
    }
}

impl<'a> Pace<'a> {
    /// Starts a rewrite's pace once the writer has been quiet for a window.
    fn start(written: &'a AtomicU64, stop: &'a dyn Fn() -> bool) -> Pace<'a> {
        let mut load = WriterLoad::new(written);
        std::thread::sleep(REWRITE_YIELD_WINDOW);
        load.wait_quiet(stop);
        Pace {
            start: std::time::Instant::now(),
            bytes: 0.0,
            load,
            stop,
        }
    }

    /// Counts `n` bytes of I/O, sleeps while the rewrite is ahead of its pace, and once a
    /// window waits while the writer is busy.
    fn note(&mut self, n: usize) {
        self.bytes += n as f64;
        let due = std::time::Duration::from_secs_f64(self.bytes / REWRITE_BYTES_PER_S);
        if let Some(ahead) = due.checked_sub(self.start.elapsed()) {
            std::thread::sleep(ahead);
        }
        if self.load.seen.0.elapsed() >= REWRITE_YIELD_WINDOW && self.load.wait_quiet(self.stop) {
            // The pace counts from the end of the wait: no burst to make up for it.
            self.start = std::time::Instant::now();
            self.bytes = 0.0;
        }
    }
}

/// The largest batch merging makes (a batch already larger is kept as it is).
pub(crate) const MERGED_BATCH_BYTES_MAX: usize = 64 << 10;

/// What a rewrite of one segment came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rewritten {
    /// The segment's files were replaced.
    Done {
        frames_before: u64,
        frames_after: u64,
        bytes_before: u64,
        bytes_after: u64,
    },
    /// Nothing changed, for this reason.
    Skipped(&'static str),
}

/// Whether a sealed segment whose index file says `directory` is worth rewriting.
pub(crate) fn worth_rewriting(directory: &IndexDirectory) -> bool {
    directory.generation == 0
        && directory.entry_count > 0
        && directory.data_end / u64::from(directory.entry_count) < REWRITE_FRAME_BYTES_MAX
}

/// The segments waiting for the rewrite thread, and its stop signal.
#[derive(Debug, Default)]
pub(crate) struct RewriteQueue {
    state: Mutex<QueueState>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct QueueState {
    /// Whether a rewrite thread takes from the queue (else nothing is queued).
    enabled: bool,
    queue: VecDeque<SegmentId>,
    /// The segment being rewritten.
    busy: Option<SegmentId>,
    shutdown: bool,
}

impl RewriteQueue {
    /// Queues segment `id` (sealed, with its index file).
    pub fn push(&self, id: SegmentId) {
        let mut s = self.state.lock().expect("rewrite queue lock");
        if s.enabled && !s.queue.contains(&id) && s.busy != Some(id) {
            s.queue.push_back(id);
            self.cv.notify_all();
        }
    }

    /// Whether the thread is asked to stop.
    fn stopping(&self) -> bool {
        self.state.lock().expect("rewrite queue lock").shutdown
    }

    /// Waits until nothing is queued or being rewritten (tests and benchmarks).
    pub fn wait_idle(&self) {
        let mut s = self.state.lock().expect("rewrite queue lock");
        while !s.shutdown && (s.busy.is_some() || !s.queue.is_empty()) {
            s = self.cv.wait(s).expect("rewrite queue lock");
        }
    }
}

/// A shard's rewrite thread.
pub(crate) struct Rewriter {
    shard: Arc<ShardShared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Rewriter {
    /// Starts the thread of `shard`, and queues the sealed segments not rewritten yet that are
    /// worth it.
    pub fn start(shard: Arc<ShardShared>, settings: RewriteSettings) -> Result<Rewriter> {
        (shard.rewrites.state.lock().expect("rewrite queue lock")).enabled = true;
        for (id, _) in shard.sealed_segments() {
            // One whose rewrite was given up is not tried again at every open (reading and
            // regrouping its first window each time, while consumers catch up).
            if layout::kept_as_written_path(&shard.dir, id).exists() {
                continue;
            }
            if let Ok(d) = IndexDirectory::read(&index_path(&shard.dir, id))
                && worth_rewriting(&d)
            {
                shard.rewrites.push(id);
            }
        }
        let thread_shard = Arc::clone(&shard);
        let thread = std::thread::Builder::new()
            .name(format!("floodgate-rewrite-{}", shard.id))
            .spawn(move || run(&thread_shard, settings))
            .map_err(|e| Error::io("spawn rewrite thread", &shard.dir, e))?;
        Ok(Rewriter {
            shard,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stops the thread; a rewrite under way is abandoned (its files deleted).
    pub fn shutdown(&self) {
        let q = &self.shard.rewrites;
        q.state.lock().expect("rewrite queue lock").shutdown = true;
        q.cv.notify_all();
        if let Some(t) = self.thread.lock().expect("rewrite thread lock").take() {
            let _ = t.join();
        }
    }
}

impl Drop for Rewriter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What a shard's rewrites are held to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RewriteSettings {
    pub backend: IoBackend,
    /// (disk cap, segment bytes) when a disk cap is set: a rewrite needs room for a second
    /// copy of its segment for a while.
    pub disk_room: Option<(u64, u64)>,
    /// The largest frame the log holds (`Config::frame_bytes_max`): a merged batch stays
    /// within it, so every reader's and recovery's bounds hold for rewritten segments too.
    pub frame_bytes_max: usize,
    /// Bytes of a segment grouped in memory at a time (`Config::rewrite_window_bytes`).
    pub window_bytes: usize,
}

/// The thread: takes queued segments one at a time.
fn run(shard: &ShardShared, settings: RewriteSettings) {
    io::set_cpu_priority_lowest();
    io::set_io_priority_idle();
    let q = &shard.rewrites;
    loop {
        let id = {
            let mut s = q.state.lock().expect("rewrite queue lock");
            s.busy = None;
            q.cv.notify_all();
            loop {
                if s.shutdown {
                    return;
                }
                if let Some(id) = s.queue.pop_front() {
                    s.busy = Some(id);
                    break id;
                }
                s = q.cv.wait(s).expect("rewrite queue lock");
            }
        };
        if let Some((cap, segment_bytes)) = settings.disk_room {
            let held = shard.segments.read().expect("segments lock").len() as u64;
            // The next segment, the rewritten copy, and for a segment larger than the window
            // the first pass's runs beside it.
            let copies = if segment_bytes > settings.window_bytes as u64 {
                4
            } else {
                3
            };
            if (held + copies) * segment_bytes > cap {
                shard
                    .counters
                    .rewrites_skipped
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
        }
        let outcome = rewrite_segment(shard, id, settings, &|| q.stopping());
        // Damage the rewrite met stays where it is, for readers and recovery to report; the
        // segment is left as it was.
        let c = &shard.counters;
        let counter = match outcome {
            Ok(Rewritten::Done { .. }) => &c.rewrites_done,
            Ok(Rewritten::Skipped(_)) => &c.rewrites_skipped,
            Err(_) => &c.rewrites_failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Marks segment `id` in `dir` as not worth rewriting (`layout::kept_as_written_path`). Best
/// effort: without the mark, the next open tries the rewrite again.
fn keep_as_written(dir: &Path, id: SegmentId) {
    let _ = std::fs::File::create(layout::kept_as_written_path(dir, id));
}

/// A frame found in a window: its partition, and where it lies in the window.
#[derive(Debug, Clone, Copy)]
struct WindowFrame {
    tp: TopicPartition,
    start: u32,
    len: u32,
}

/// The rewritten segment being written: whole blocks go to the file, the rest waits.
struct Output<'a> {
    file: std::fs::File,
    path: &'a Path,
    /// Bytes not yet written, from `written` on.
    pending: Vec<u8>,
    written: u64,
    /// Each frame written, with its partition, in file order (for the index file: not kept
    /// for a runs file, whose frames may be many).
    frames: Vec<(TopicPartition, BatchEntry)>,
    indexed: bool,
    segment: SegmentId,
    /// The aligned buffer writes go through, kept between windows.
    aligned: Option<AlignedBuf>,
    counters: &'a crate::shard::WriterCounters,
    pace: Pace<'a>,
    /// The largest batch merging makes.
    batch_bytes_max: usize,
}

impl<'a> Output<'a> {
    fn new(
        (file, path, indexed): (std::fs::File, &'a Path, bool),
        segment: SegmentId,
        counters: &'a crate::shard::WriterCounters,
        pace: Pace<'a>,
        batch_bytes_max: usize,
    ) -> Output<'a> {
        Output {
            file,
            path,
            pending: Vec::new(),
            written: 0,
            frames: Vec::new(),
            indexed,
            segment,
            aligned: None,
            counters,
            pace,
            batch_bytes_max,
        }
    }

    fn pos(&self) -> u64 {
        self.written + self.pending.len() as u64
    }

    /// Appends a frame of `tp` holding `batch` (a verified RecordBatch v2).
    fn frame(&mut self, tp: TopicPartition, batch: &[u8]) {
        let be_i64 = |at: usize| i64::from_be_bytes(batch[at..at + 8].try_into().unwrap());
        let base = be_i64(0) as u64;
        let delta = i32::from_be_bytes(batch[23..27].try_into().unwrap()) as u32;
        let header = FrameHeader {
            topic_id: tp.topic_id,
            partition: tp.partition,
            base_offset: base,
            batch_bytes: batch.len() as u32,
            // The whole file is durable before anyone reads it.
            durable_behind_blocks: 0,
        };
        let mut head = [0u8; FRAME_HEADER_BYTES];
        header.encode(&mut head);
        let entry = BatchEntry {
            base_offset: Offset(base),
            last_offset: Offset(base + u64::from(delta)),
            max_timestamp: be_i64(35),
            segment: self.segment,
            pos: self.pos(),
            frame_bytes: (FRAME_HEADER_BYTES + batch.len()) as u32,
        };
        self.pending.extend_from_slice(&head);
        self.pending.extend_from_slice(batch);
        if self.indexed {
            self.frames.push((tp, entry));
        }
    }

    /// Writes the whole blocks pending (with `last`, everything, then zeros to the end of the
    /// next block: a zero frame header ends the segment's data).
    fn flush(&mut self, last: bool) -> Result<()> {
        let len = match last {
            true => (self.pending.len() + FRAME_HEADER_BYTES).next_multiple_of(BLOCK_BYTES),
            false => self.pending.len() / BLOCK_BYTES * BLOCK_BYTES,
        };
        if len == 0 {
            return Ok(());
        }
        if self.aligned.as_ref().is_none_or(|b| b.len() < len) {
            self.aligned = Some(AlignedBuf::new(len));
        }
        let buf = &mut self.aligned.as_mut().expect("a buffer")[..len];
        let n = len.min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        buf[n..].fill(0);
        for (i, piece) in buf.chunks(REWRITE_PIECE_BYTES).enumerate() {
            let at = self.written + (i * REWRITE_PIECE_BYTES) as u64;
            io::write_all_at(&self.file, self.path, at, piece)?;
            self.pace.note(piece.len());
        }
        self.counters
            .rewrite_write_bytes
            .fetch_add(len as u64, Ordering::Relaxed);
        self.pending.drain(..n);
        self.written += len as u64;
        Ok(())
    }
}

/// Rewrites sealed segment `id` of `shard` (see the module's documentation). `stop` is asked
/// between windows; when it says so, the rewrite is abandoned.
pub(crate) fn rewrite_segment(
    shard: &ShardShared,
    id: SegmentId,
    settings: RewriteSettings,
    stop: &dyn Fn() -> bool,
) -> Result<Rewritten> {
    let backend = settings.backend;
    let dir = &shard.dir;
    let Some(source) = shard
        .segments
        .read()
        .expect("segments lock")
        .get(&id)
        .cloned()
    else {
        return Ok(Rewritten::Skipped("deleted"));
    };
    let directory = IndexDirectory::read(&index_path(dir, id))?;
    if !worth_rewriting(&directory) {
        return Ok(Rewritten::Skipped("not worth it"));
    }
    // At best a partition's batches merge into one: under two per partition, the segment
    // would keep more than half its batches. Its index file says so without reading it.
    if directory.runs.len() * 2 > directory.entry_count as usize {
        keep_as_written(dir, id);
        return Ok(Rewritten::Skipped("few batches merge"));
    }
    let out_path = rewritten_segment_path(dir, id);
    let idx_path = rewritten_index_path(dir, id);
    let runs_path = layout::rewrite_runs_path(dir, id);
    let abandon = |out_path: &Path| {
        let _ = std::fs::remove_file(out_path);
        let _ = std::fs::remove_file(&runs_path);
    };
    abandon(&out_path);
    let batch_bytes_max =
        MERGED_BATCH_BYTES_MAX.min(settings.frame_bytes_max.saturating_sub(FRAME_HEADER_BYTES));
    let window = settings.window_bytes;
    // Larger than a window: the windows go to the runs file, and a second pass merges them.
    let two_passes = directory.data_end > window as u64;
    let first_path = if two_passes { &runs_path } else { &out_path };
    let file = io::open_segment(first_path, backend, true, true)?;
    let pace = Pace::start(&shard.counters.log_bytes, stop);
    let mut out = Output::new(
        (file, first_path, !two_passes),
        id,
        &shard.counters,
        pace,
        batch_bytes_max,
    );
    let mut run_ends = Vec::new();
    let written = write_windows(
        &source,
        (directory.data_end, window),
        &mut out,
        stop,
        &mut run_ends,
    );
    let (mut out, written) = match written {
        Ok(Windows::Written) if two_passes => {
            let merged = runs::second_pass(out, (&out_path, backend), &run_ends, window, stop);
            let _ = std::fs::remove_file(&runs_path);
            match merged {
                Ok((out, windows)) => (out, Ok(windows)),
                Err(e) => {
                    abandon(&out_path);
                    return match e.is_no_space() {
                        true => Ok(Rewritten::Skipped("no space")),
                        false => Err(e),
                    };
                }
            }
        }
        written => (out, written),
    };
    match written {
        Ok(Windows::Written) => {}
        Ok(Windows::Stopped) => {
            abandon(&out_path);
            return Ok(Rewritten::Skipped("stopped"));
        }
        Ok(Windows::FewMerge) => {
            abandon(&out_path);
            keep_as_written(dir, id);
            return Ok(Rewritten::Skipped("few batches merge"));
        }
        Err(e) if e.is_no_space() => {
            abandon(&out_path);
            return Ok(Rewritten::Skipped("no space"));
        }
        Err(e) => {
            abandon(&out_path);
            return Err(e);
        }
    }
    let frames_after = out.frames.len() as u64;
    if frames_after * 2 > u64::from(directory.entry_count) {
        abandon(&out_path);
        keep_as_written(dir, id);
        return Ok(Rewritten::Skipped("few batches merge"));
    }
    let data_end = out.pos();
    let durable = out
        .flush(true)
        .and_then(|()| (out.file.sync_data()).map_err(|e| Error::io("fdatasync", &out_path, e)));
    if let Err(e) = durable {
        abandon(&out_path);
        return match e.is_no_space() {
            true => Ok(Rewritten::Skipped("no space")),
            false => Err(e),
        };
    }
    let index = SegmentIndex {
        segment: id,
        generation: directory.generation + 1,
        data_end,
        frames: std::mem::take(&mut out.frames),
    };
    let (index_bytes, new_directory, starts) = index.encode_with_starts();
    drop(out);
    // Retention deletes segments with this held: a segment it deleted meanwhile must not
    // come back.
    let _files = shard.segment_files.lock().expect("segment files lock");
    if !shard
        .segments
        .read()
        .expect("segments lock")
        .contains_key(&id)
    {
        abandon(&out_path);
        return Ok(Rewritten::Skipped("deleted"));
    }
    if let Err(e) = io::replace_file(&idx_path, &index_bytes) {
        abandon(&out_path);
        let _ = std::fs::remove_file(&idx_path);
        return match e.is_no_space() {
            true => Ok(Rewritten::Skipped("no space")),
            false => Err(e),
        };
    }
    // Decided: from here on, a crash leaves opening the log to finish it.
    let path = shard.segment_path(id);
    let rename =
        |from: &Path, to: &Path| std::fs::rename(from, to).map_err(|e| Error::io("rename", to, e));
    // Readers holding the old layout's positions find the new files from the first rename on:
    // the layout counter is odd from before it, so they read again.
    shard.layout.fetch_add(1, Ordering::AcqRel);
    let renamed = rename(&out_path, &path)
        .and_then(|()| rename(&idx_path, &index_path(dir, id)))
        .and_then(|()| io::sync_dir(dir))
        .and_then(|()| io::open_segment(&path, backend, false, false));
    let file = match renamed {
        Ok(file) => file,
        Err(e) => {
            shard.layout.fetch_add(1, Ordering::AcqRel);
            return Err(e);
        }
    };
    shard.replace_segment(
        id,
        SegmentFile {
            path,
            file,
            generation: new_directory.generation,
            data_end: Some(data_end),
        },
        &new_directory,
        starts,
    );
    Ok(Rewritten::Done {
        frames_before: u64::from(directory.entry_count),
        frames_after,
        bytes_before: directory.data_end,
        bytes_after: data_end,
    })
}

/// How writing a segment's windows ended.
#[derive(Debug, PartialEq, Eq)]
enum Windows {
    Written,
    /// `stop` said to stop.
    Stopped,
    /// Most of the first window's batches never merge (compressed, transactional or control
    /// ones): the rest of the segment is not read.
    FewMerge,
}

/// Reads `source` up to `data_end` a window (`window` bytes) at a time and writes each
/// window's frames to `out`, grouped by partition, batches merged; the position in `out`
/// after each window's is pushed to `run_ends`.
fn write_windows(
    source: &SegmentFile,
    (data_end, window): (u64, usize),
    out: &mut Output<'_>,
    stop: &dyn Fn() -> bool,
    run_ends: &mut Vec<u64>,
) -> Result<Windows> {
    let block = BLOCK_BYTES as u64;
    let mut pos = 0u64;
    let mut frames: Vec<WindowFrame> = Vec::new();
    let mut merger = BatchMerger::default();
    let mut read_buf: Option<AlignedBuf> = None;
    let mut frames_in = 0usize;
    let mut unmergeable = 0usize;
    while pos < data_end {
        if stop() {
            return Ok(Windows::Stopped);
        }
        let start = pos / block * block;
        let mut len = (window as u64).min(data_end.next_multiple_of(block) - start);
        let corrupt = |at: u64, reason: String| Error::corrupt(&source.path, at, reason);
        let skip = (pos - start) as usize;
        loop {
            let from = (&source.file, source.path.as_path());
            let buf = fill(from, (start, len as usize), &mut read_buf, &mut out.pace)?;
            (out.counters.rewrite_read_bytes).fetch_add(len, Ordering::Relaxed);
            // A frame larger than the window: read as much as it needs.
            match FrameHeader::decode(&buf[skip..]) {
                Ok(HeaderSlot::Frame(h)) if skip as u64 + h.frame_bytes() > len => {
                    if pos + h.frame_bytes() > data_end {
                        let reason = "frame runs past the segment's data".to_string();
                        return Err(corrupt(pos, reason));
                    }
                    len = (skip as u64 + h.frame_bytes()).next_multiple_of(block);
                }
                Ok(HeaderSlot::Frame(_)) => break,
                Ok(HeaderSlot::Zero) => {
                    let reason = "a zero frame header before the data's end".to_string();
                    return Err(corrupt(pos, reason));
                }
                Err(e) => return Err(corrupt(pos, e.0)),
            }
        }
        let buf: &[u8] = &read_buf.as_ref().expect("a window was read")[..len as usize];
        frames.clear();
        let window_end = ((start + len).min(data_end) - start) as usize;
        let at_data_end = start + window_end as u64 == data_end;
        let mut at = skip;
        while at + FRAME_HEADER_BYTES <= window_end {
            let header = match FrameHeader::decode(&buf[at..]) {
                Ok(HeaderSlot::Frame(h)) => h,
                Ok(HeaderSlot::Zero) => {
                    let reason = "a zero frame header before the data's end".to_string();
                    return Err(corrupt(start + at as u64, reason));
                }
                Err(e) => return Err(corrupt(start + at as u64, e.0)),
            };
            let frame_bytes = header.frame_bytes() as usize;
            if at + frame_bytes > window_end {
                if at_data_end {
                    let reason = "frame runs past the segment's data".to_string();
                    return Err(corrupt(start + at as u64, reason));
                }
                // Cut by the window's end: the next window starts with it.
                break;
            }
            // Both checksums: a damaged frame is not carried into the new file.
            decode_frame(&buf[at..at + frame_bytes])
                .map_err(|e| corrupt(start + at as u64, e.0))?;
            if MergeKey::of(&buf[at + FRAME_HEADER_BYTES..at + frame_bytes]).is_none() {
                unmergeable += 1;
            }
            frames.push(WindowFrame {
                tp: TopicPartition::new(header.topic_id, header.partition),
                start: at as u32,
                len: frame_bytes as u32,
            });
            at += frame_bytes;
        }
        if (at_data_end && at != window_end) || at == skip {
            let reason = "the segment's data ends inside a frame".to_string();
            return Err(corrupt(start + at as u64, reason));
        }
        // Stable: each partition's frames stay in offset order.
        frames.sort_by_key(|f| f.tp);
        write_grouped(buf, &frames, out, &mut merger)?;
        run_ends.push(out.pos());
        frames_in += frames.len();
        // Compressed, transactional or control batches never merge: with half the first
        // window's that kind, the rest of the segment is not read.
        if pos == 0 && unmergeable * 2 > frames_in {
            return Ok(Windows::FewMerge);
        }
        out.flush(false)?;
        pos = start + at as u64;
    }
    Ok(Windows::Written)
}

/// Reads `len` bytes of `file` at `pos` (both block-aligned) into `buf`, which grows to
/// hold them and is kept for the next read; bytes past the end of the file read as zeros.
fn fill<'b>(
    (file, path): (&std::fs::File, &Path),
    (pos, len): (u64, usize),
    buf: &'b mut Option<AlignedBuf>,
    pace: &mut Pace,
) -> Result<&'b [u8]> {
    use std::os::unix::fs::FileExt;
    if buf.as_ref().is_none_or(|b| b.len() < len) {
        *buf = Some(AlignedBuf::new(len));
    }
    let b = &mut buf.as_mut().expect("a buffer")[..len];
    let mut done = 0;
    while done < len {
        let piece = (len - done).min(REWRITE_PIECE_BYTES);
        match file.read_at(&mut b[done..done + piece], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                pace.note(n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    b[done..].fill(0);
    Ok(b)
}

/// Writes `frames` (of `buf`, grouped by partition) to `out`, merging each partition's
/// consecutive batches that merge, up to `out.batch_bytes_max` bytes.
fn write_grouped(
    buf: &[u8],
    frames: &[WindowFrame],
    out: &mut Output<'_>,
    merger: &mut BatchMerger,
) -> Result<()> {
    let batch_of = |f: &WindowFrame| {
        &buf[f.start as usize + FRAME_HEADER_BYTES..f.start as usize + f.len as usize]
    };
    let path = out.path;
    let bad = |e: crate::segment::format::DecodeError| {
        Error::corrupt(path, 0, format!("merging batches: {}", e.0))
    };
    let mut i = 0;
    while i < frames.len() {
        let first = &frames[i];
        let batch = batch_of(first);
        let Some(mut key) = MergeKey::of(batch) else {
            out.frame(first.tp, batch);
            i += 1;
            continue;
        };
        // How many frames after `first` join it.
        let mut joined = 0;
        let mut bytes = batch.len();
        while let Some(next) = frames.get(i + 1 + joined)
            && next.tp == first.tp
            && let Some(next_key) = MergeKey::of(batch_of(next))
            && key.continues(&next_key)
            && bytes + batch_of(next).len() - BATCH_HEADER_BYTES <= out.batch_bytes_max
        {
            if joined == 0 {
                merger.start(batch);
            }
            merger.push(batch_of(next)).map_err(bad)?;
            bytes = merger.len();
            key = key.joined(&next_key);
            joined += 1;
        }
        match joined {
            0 => out.frame(first.tp, batch),
            _ => out.frame(first.tp, merger.finish()),
        }
        i += 1 + joined;
    }
    Ok(())
}

/// Finishes or undoes the rewrites a crash interrupted in shard folder `dir`, before anything
/// else reads it: a rewrite whose index file `N.idx.rw` is in place and sound was decided, and
/// its renames are done now; any other rewrite's files are deleted. Returns the segments whose
/// rewrite was finished.
pub(crate) fn finish_rewrites(dir: &Path) -> Result<Vec<SegmentId>> {
    let Found { decided, leftovers } = rewrites_found(dir)?;
    for path in leftovers {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &path, e)),
        }
    }
    for &id in &decided {
        let segment = rewritten_segment_path(dir, id);
        if segment.exists() {
            let to = layout::segment_path(dir, id);
            std::fs::rename(&segment, &to).map_err(|e| Error::io("rename", &to, e))?;
        }
        let to = index_path(dir, id);
        std::fs::rename(rewritten_index_path(dir, id), &to)
            .map_err(|e| Error::io("rename", &to, e))?;
    }
    if !decided.is_empty() {
        io::sync_dir(dir)?;
    }
    Ok(decided)
}

/// The rewrites a shard folder holds files of.
pub(crate) struct Found {
    /// Decided rewrites (their new index file is in place), in segment order.
    pub decided: Vec<SegmentId>,
    /// Files of rewrites not decided, deleted on open.
    pub leftovers: Vec<std::path::PathBuf>,
}

/// The rewrites shard folder `dir` holds files of.
pub(crate) fn rewrites_found(dir: &Path) -> Result<Found> {
    let mut decided = Vec::new();
    let mut leftovers = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))? {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        match layout::ShardFile::of(&entry.file_name().to_string_lossy()) {
            layout::ShardFile::RewrittenIndex(id) => match rewrite_decided(dir, id) {
                true => decided.push(id),
                false => leftovers.push(entry.path()),
            },
            layout::ShardFile::RewrittenSegment(id) if !rewrite_decided(dir, id) => {
                leftovers.push(entry.path());
            }
            layout::ShardFile::RewriteRuns(_) => leftovers.push(entry.path()),
            _ => {}
        }
    }
    decided.sort_unstable();
    leftovers.sort_unstable();
    Ok(Found { decided, leftovers })
}

/// Whether the rewrite of segment `id` in `dir` was decided: its index file is in place and
/// sound, for that segment.
pub(crate) fn rewrite_decided(dir: &Path, id: SegmentId) -> bool {
    IndexDirectory::read(&rewritten_index_path(dir, id))
        .is_ok_and(|d| d.segment == id && d.generation > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_rewrite_waits_while_the_writer_is_busy() {
        let written = AtomicU64::new(0);
        let never = || false;
        // A quiet writer: no wait.
        let mut load = WriterLoad::new(&written);
        std::thread::sleep(REWRITE_YIELD_WINDOW);
        assert!(!load.wait_quiet(&never));
        // A writer at 20 times the threshold for 4 windows, then quiet.
        let busy = Duration::from_millis(4 * REWRITE_YIELD_WINDOW.as_millis() as u64);
        let per_ms = (REWRITE_YIELDS_ABOVE_BYTES_PER_S * 20.0 / 1000.0) as u64;
        let start = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                while start.elapsed() < busy {
                    written.fetch_add(per_ms, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
            let mut load = WriterLoad::new(&written);
            std::thread::sleep(REWRITE_YIELD_WINDOW);
            assert!(load.wait_quiet(&never));
            assert!(start.elapsed() >= busy, "{:?}", start.elapsed());
        });
        // A stop ends the wait however busy the writer is.
        let mut load = WriterLoad::new(&written);
        written.fetch_add(1 << 40, Ordering::Relaxed);
        let asked = Instant::now();
        load.wait_quiet(&|| asked.elapsed() > REWRITE_YIELD_WINDOW);
        assert!(asked.elapsed() < 4 * REWRITE_YIELD_WINDOW);
    }
}
