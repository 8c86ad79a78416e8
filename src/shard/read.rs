//! The read path: a partition's batches found in its index (`index::Partition`), served from
//! the shard's read cache or read from its segment files with aligned reads; the records
//! decoded from them share the read buffers. Runs on the reader's thread.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::index::{BatchEntry, Limit, Partition};
use crate::segment::format::{BLOCK_BYTES, FRAME_HEADER_BYTES, FrameHeader, HeaderSlot};
use crate::segment::records::{StoredRecord, decode_records, decode_scanned_records};
use crate::segment::{LogPos, Offset, SegmentId, TopicPartition};
use crate::shard::files::SegmentFile;
use crate::shard::readahead::{Readahead, ScanTag};
use crate::shard::{ShardShared, WriterCounters};

/// What a read of a partition returns.
#[derive(Debug, Default)]
pub(crate) struct PartitionRead {
    /// The records, in offset order.
    pub records: Vec<StoredRecord>,
    /// The offset after the last batch read (`offset` if none was): where the next read
    /// starts. Past the last record when the read ended in a gap a repair left (offsets with
    /// no records).
    pub next: Offset,
}

/// Reads records of partition `p` (owned by `shard`) from `offset` on: whole batches up to
/// about `bytes_max` bytes, at least one, none at or past the partition's visible watermark.
/// Frames come from the read cache where it has them, else from the segment files, read as
/// `mode` says; with `before`, only batches before that position of the log.
pub(crate) fn read_partition(
    shard: &ShardShared,
    readahead: &Readahead,
    segment_bytes: u64,
    p: &Partition,
    offset: Offset,
    bytes_max: usize,
    (mode, before): (ReadMode, Option<LogPos>),
) -> Result<PartitionRead> {
    let visible = p.offset_acked();
    let expect = p.id();
    let mut out = Vec::new();
    let next = again_if_moved(shard, || {
        out.clear();
        read_frames(
            shard,
            readahead,
            (segment_bytes, p, offset, bytes_max),
            (mode, before),
            |frame, e, path| decode_records(frame, e, path, (offset, visible), expect, &mut out),
        )
    })?;
    Ok(PartitionRead { records: out, next })
}

/// What a read of a partition's stored batches returns.
#[derive(Debug, Default)]
pub(crate) struct BatchesRead {
    /// The RecordBatches as stored (Kafka's RecordBatch v2 bytes), in offset order; the first
    /// holds the offset asked for, and may hold offsets before it.
    pub batches: Vec<bytes::Bytes>,
    /// The offset after the last batch (where the next read starts).
    pub next: Offset,
}

/// Reads the stored batches of partition `p` from the one holding `offset` on, as
/// [`read_partition`] finds them, without decoding their records: each frame's header and
/// batch checksum are verified, and the batch bytes shared with the read buffer.
pub(crate) fn read_partition_batches(
    shard: &ShardShared,
    readahead: &Readahead,
    segment_bytes: u64,
    p: &Partition,
    offset: Offset,
    bytes_max: usize,
    mode: ReadMode,
) -> Result<BatchesRead> {
    let expect = p.id();
    let mut batches = Vec::new();
    let next = again_if_moved(shard, || {
        batches.clear();
        read_frames(
            shard,
            readahead,
            (segment_bytes, p, offset, bytes_max),
            (mode, None),
            |frame, e, path| {
                let corrupt = |reason: String| Error::corrupt(path, e.pos, reason);
                let (header, batch) = crate::segment::decode_frame(frame)
                    .map_err(|d| corrupt(d.0))?
                    .ok_or_else(|| corrupt("indexed frame is all zeros".into()))?;
                let found = TopicPartition::new(header.topic_id, header.partition);
                if found != expect || Offset(batch.base_offset) != e.base_offset {
                    return Err(corrupt(format!(
                        "indexed frame holds {found:?} offset {}, expected {expect:?} offset {}",
                        batch.base_offset, e.base_offset
                    )));
                }
                batches.push(frame.slice(FRAME_HEADER_BYTES..));
                Ok(())
            },
        )
    })?;
    Ok(BatchesRead { batches, next })
}

/// Runs `read` (a read through a partition's index) again while it fails after the shard's
/// layout moved under it: a rewrite replaced a segment whose old positions it held
/// (`shard::rewrite`). A failure with the layout unmoved is the read's answer.
pub(crate) fn again_if_moved<T>(
    shard: &ShardShared,
    mut read: impl FnMut() -> Result<T>,
) -> Result<T> {
    loop {
        let seen = shard.layout_seen();
        match read() {
            Err(_) if shard.layout_moved(seen) => {
                // While a replacement is under way, let it finish.
                while shard.layout_seen() % 2 == 1 {
                    std::thread::yield_now();
                }
            }
            done => return done,
        }
    }
}

/// Finds partition `p`'s frames from the one holding `offset` on (up to about `bytes_max`
/// bytes, at least one, none past its visible watermark, with `before` none at or past that
/// position) and hands each to `on_frame` with its entry and its segment's path, in offset
/// order: from the read cache where it has them, else read from the segment files as `mode`
/// says. Returns the offset after the last frame (`offset` if none).
fn read_frames(
    shard: &ShardShared,
    readahead: &Readahead,
    (segment_bytes, p, offset, bytes_max): (u64, &Partition, Offset, usize),
    (mode, before): (ReadMode, Option<LogPos>),
    mut on_frame: impl FnMut(&bytes::Bytes, &BatchEntry, &std::path::Path) -> Result<()>,
) -> Result<Offset> {
    let visible = p.offset_acked();
    let limit = Limit { visible, before };
    let entries = p.entries_within(offset, bytes_max, limit, &shard.sealed_runs)?;
    shard.note_read(entries.last().map(BatchEntry::at));
    if mode == ReadMode::Ahead
        && let Some(last) = entries.last()
    {
        readahead.advise(shard, last.at(), segment_bytes, ScanTag::default());
    }
    for run in coalesce(&entries) {
        let path = shard.segment_path(run[0].segment);
        let mut i = 0;
        while i < run.len() {
            // Fresh frames, and frames near ones read before, come from the read cache.
            let e = &run[i];
            let cached = (shard.read_cache.read().expect("read cache lock"))
                .get(e.at(), e.frame_bytes as usize);
            if let Some(frame) = cached {
                on_frame(&frame, e, &path)?;
                i += 1;
                continue;
            }
            // Being read ahead: wait for it rather than read it again.
            let cached = |shard: &ShardShared| {
                let cache = shard.read_cache.read().expect("read cache lock");
                cache.get(e.at(), e.frame_bytes as usize).is_some()
            };
            if readahead.wait_for(e.at()) && cached(shard) {
                continue;
            }
            let window = read_window(shard, mode);
            let (start, span) = read_from_disk(shard, window, &run[i..])?;
            let end = start + span.len() as u64;
            while let Some(e) = run.get(i)
                && e.pos + u64::from(e.frame_bytes) <= end
            {
                let at = (e.pos - start) as usize;
                let frame = span.slice(at..at + e.frame_bytes as usize);
                on_frame(&frame, e, &path)?;
                i += 1;
            }
        }
    }
    let frames = entries.iter().map(|e| u64::from(e.frame_bytes)).sum();
    WriterCounters::add(&shard.counters.read_frame_bytes, frames);
    Ok(entries.last().map_or(offset, |e| e.last_offset.next()))
}

/// A read from disk in [`ReadMode::Ahead`] covers up to the end of its window on this grid
/// (when that much is published): the frames of other partitions read along land in the read
/// cache, so a consumer going through many partitions of a shard reads the log about
/// sequentially, once.
const READ_AHEAD_BYTES: u64 = crate::shard::readahead::WINDOW_BYTES;

/// The window of a read from disk in `mode` on `shard`: [`READ_AHEAD_BYTES`], or less when the
/// read cache holds fewer than two of them. A window the cache cannot keep is evicted before
/// the reader reaches its next bytes, and read again from there: a 1 MiB cache read the log
/// five times over.
fn read_window(shard: &ShardShared, mode: ReadMode) -> u64 {
    match mode {
        ReadMode::Exact => 0,
        ReadMode::Ahead => {
            let cache_bytes = shard
                .read_cache
                .read()
                .expect("read cache lock")
                .bytes_max();
            let half = cache_bytes as u64 / 2;
            READ_AHEAD_BYTES.min(half - half % BLOCK_BYTES as u64)
        }
    }
}

/// How much a read takes from disk when the cache does not have the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadMode {
    /// Just the frames asked for: random reads, and rate-limited consumers, whose large reads
    /// would only delay the writer's commits on the same disk (see
    /// `FETCH_BYTES_RATE_LIMITED`).
    Exact,
    /// Whole windows, and the next ones read ahead in the background: consumers draining a
    /// backlog as fast as they can.
    Ahead,
}

impl ReadMode {
    /// `Ahead` for a reader draining a backlog (`read_ahead`), else `Exact`.
    pub(crate) fn ahead_if(read_ahead: bool) -> ReadMode {
        match read_ahead {
            true => ReadMode::Ahead,
            false => ReadMode::Exact,
        }
    }
}

/// Reads, with one aligned read, the frames of `run` (one segment, position order) from the
/// first on, and with a `window`, beyond them to the end of the first frame's window on that
/// grid or to the next cached bytes, as far as published; caches and returns what it read,
/// (position, bytes).
fn read_from_disk(
    shard: &ShardShared,
    window: u64,
    run: &[BatchEntry],
) -> Result<(u64, bytes::Bytes)> {
    let (first, last) = (&run[0], &run[run.len() - 1]);
    let needed = last.pos + u64::from(last.frame_bytes);
    read_span(shard, window, first.at(), needed)
}

/// Reads, with one aligned read, segment bytes from `from` to at least `needed`, and with a
/// `window`, beyond them to the end of `from`'s window on that grid or to the next cached
/// bytes, as far as published; caches and returns what it read, (position, bytes).
fn read_span(
    shard: &ShardShared,
    window: u64,
    from: LogPos,
    needed: u64,
) -> Result<(u64, bytes::Bytes)> {
    let segment = segment_file(shard, from.segment)?;
    // Stopping at the window's end and at cached bytes keeps reads from overlapping when
    // readers are at different positions and frames cross windows (the same bytes would be
    // read twice).
    let block = BLOCK_BYTES as u64;
    let start = from.pos - from.pos % block;
    let end = match start.checked_div(window) {
        None => needed,
        Some(w) => {
            let cached_after = shard
                .read_cache
                .read()
                .expect("read cache lock")
                .next_chunk(LogPos::new(from.segment, start));
            (w + 1)
                .saturating_mul(window)
                .min(cached_after.unwrap_or(u64::MAX))
                .min(shard.readable_end(from.segment))
                .max(needed)
        }
    };
    // The whole blocks read, as far as published: a paced reader's next frames mostly lie in
    // the rest of the last block, which was read again right after (every 16 KiB read took a
    // second read of 8 KiB).
    let read_end = end.next_multiple_of(block);
    let keep = read_end.min(shard.readable_end(from.segment)).max(end);
    let span = segment.read_span(start, keep)?;
    WriterCounters::add(&shard.counters.read_disk_bytes, read_end - start);
    shard
        .read_cache
        .write()
        .expect("read cache lock")
        .insert_read(
            LogPos::new(from.segment, start),
            segment.generation,
            span.clone(),
        );
    Ok((start, span))
}

/// Segment `id`'s file, for reading.
fn segment_file(shard: &ShardShared, id: SegmentId) -> Result<Arc<SegmentFile>> {
    shard
        .segments
        .read()
        .expect("segments lock")
        .get(&id)
        .cloned()
        .ok_or_else(|| Error::corrupt(shard.segment_path(id), 0, "segment file missing"))
}

/// A frame a scan of a shard's log found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogFrame {
    /// The partition it belongs to.
    pub tp: TopicPartition,
    /// Where it is; its offsets are those of its header (`last_offset` is set by
    /// [`LogScan::records`]).
    pub entry: BatchEntry,
    /// The span of [`LogScan::spans`] holding it, and where in that span it starts.
    span: u32,
    start: u32,
}

/// Bytes of the log a scan read (or found cached) and the frames in them refer to.
#[derive(Debug)]
struct ScanSpan {
    bytes: bytes::Bytes,
    /// The segment file holding them (its path names it in errors).
    file: Arc<SegmentFile>,
}

/// What a scan of a shard's log returns. Frames refer to the spans they lie in rather than
/// holding their own share of the read buffer: a frame of a few records costs no reference
/// count, and a scan reused by the next keeps its vectors.
#[derive(Debug, Default)]
pub(crate) struct LogScan {
    /// Whole frames, in log order (every topic's).
    pub frames: Vec<LogFrame>,
    spans: Vec<ScanSpan>,
    /// Where the next scan starts.
    pub next: LogPos,
    /// Who scans (see [`Readahead::advise`]).
    pub tag: ScanTag,
}

impl LogScan {
    /// A scan reused by one reader across its scans, reading with the scanners of `party`
    /// (0: none).
    pub fn tagged(party: u64) -> LogScan {
        LogScan {
            tag: ScanTag::new(party),
            ..LogScan::default()
        }
    }

    /// Lets go of its frames and read buffers, keeping its vectors for the next scan.
    pub fn clear(&mut self) {
        self.frames.clear();
        self.spans.clear();
    }

    /// The bytes of `frame` (one of [`LogScan::frames`]), shared with the read buffer, and the
    /// path of the segment holding them (for errors).
    pub fn frame_bytes(&self, frame: &LogFrame) -> (bytes::Bytes, &std::path::Path) {
        let span = &self.spans[frame.span as usize];
        let start = frame.start as usize;
        let bytes = span
            .bytes
            .slice(start..start + frame.entry.frame_bytes as usize);
        (bytes, &span.file.path)
    }

    /// Decodes the records of `frame` (one of [`LogScan::frames`]) with offsets from `from` on,
    /// handing each to `push` (the scan checked its header; the batch and its checksum are
    /// checked here); keys and values share the read buffer. Returns the offset after its last
    /// (a gap frame holds none, yet spans offsets).
    pub fn records(
        &self,
        frame: &LogFrame,
        from: Offset,
        push: impl FnMut(StoredRecord),
    ) -> Result<Offset> {
        let span = &self.spans[frame.span as usize];
        let start = frame.start as usize;
        let bytes = start..start + frame.entry.frame_bytes as usize;
        let range = (from, Offset(u64::MAX));
        decode_scanned_records(
            &span.bytes,
            bytes,
            &frame.entry,
            &span.file.path,
            range,
            push,
        )
    }
}

/// Scans a shard's log from `at` (a frame's start, or a segment's data end) in position order
/// into `out` (emptied first): the published frames of about `bytes_max` bytes (at least one,
/// if any is published), from the read cache where it has them, else read from the segment
/// files as `mode` says. Only frame headers are checked here; [`LogScan::records`] checks the
/// rest of the frames it is asked to decode. A consumer of many partitions reads each region
/// of the log once this way, handing each frame to its partition, instead of searching each
/// partition's index. The caller counts the frames it takes in `read_frame_bytes`.
pub(crate) fn scan_log(
    shard: &ShardShared,
    readahead: &Readahead,
    segment_bytes: u64,
    mut at: LogPos,
    bytes_max: usize,
    mode: ReadMode,
    out: &mut LogScan,
) -> Result<()> {
    out.clear();
    let mut scanned = 0u64;
    // Less than a block short of `bytes_max` it stops: what is left lies mostly in a frame
    // crossing the end of what was read, and reading that block again for it doubled a paced
    // reader's reads.
    while scanned == 0 || scanned + BLOCK_BYTES as u64 <= bytes_max as u64 {
        let acked = *shard.acked_end.lock().expect("acked end lock");
        if at >= acked {
            break;
        }
        // A segment retention deleted: go on from the oldest one kept.
        let file = {
            let segments = shard.segments.read().expect("segments lock");
            let Some((&id, file)) = segments.range(at.segment..).next() else {
                break;
            };
            if id != at.segment {
                at = LogPos::new(id, 0);
            }
            Arc::clone(file)
        };
        let end = if at.segment < acked.segment {
            let meta = file.file.metadata();
            meta.map_err(|e| Error::io("stat", &file.path, e))?.len()
        } else {
            acked.pos
        };
        let header_bytes = FRAME_HEADER_BYTES as u64;
        if at.pos + header_bytes > end {
            at = LogPos::new(at.segment.next(), 0);
            continue;
        }
        let want = (end - at.pos).min((bytes_max as u64 - scanned).max(BLOCK_BYTES as u64));
        let mut span = span_at(shard, readahead, at, header_bytes, want, mode)?;
        let corrupt = |pos: u64, reason: String| Error::corrupt(file.path.clone(), pos, reason);
        // The first frame whole, even if larger than asked for.
        match FrameHeader::decode(&span) {
            Ok(HeaderSlot::Zero) => {
                at = match at.segment < acked.segment {
                    true => LogPos::new(at.segment.next(), 0),
                    false => acked,
                };
                continue;
            }
            Err(e) => return Err(corrupt(at.pos, e.0)),
            Ok(HeaderSlot::Frame(h)) if h.frame_bytes() > span.len() as u64 => {
                let len = h.frame_bytes();
                if at.pos + len > end {
                    let reason = format!("frame length {len} runs past the segment's data");
                    return Err(corrupt(at.pos, reason));
                }
                // With what follows it: read alone, the rest of a span cut short would be
                // read again.
                span = span_at(shard, readahead, at, len, want.max(len), mode)?;
            }
            Ok(HeaderSlot::Frame(_)) => {}
        }
        let index = u32::try_from(out.spans.len()).expect("spans of one scan fit in u32");
        let mut pos = 0usize;
        while pos + FRAME_HEADER_BYTES <= span.len() {
            let header = match FrameHeader::decode(&span[pos..]) {
                Ok(HeaderSlot::Frame(h)) => h,
                Ok(HeaderSlot::Zero) => break,
                Err(e) => return Err(corrupt(at.pos + pos as u64, e.0)),
            };
            let frame_bytes = header.frame_bytes() as usize;
            if pos + frame_bytes > span.len() {
                break;
            }
            out.frames.push(LogFrame {
                tp: TopicPartition::new(header.topic_id, header.partition),
                entry: BatchEntry {
                    base_offset: Offset(header.base_offset),
                    last_offset: Offset(header.base_offset),
                    max_timestamp: 0,
                    segment: at.segment,
                    pos: at.pos + pos as u64,
                    frame_bytes: frame_bytes as u32,
                },
                span: index,
                start: pos as u32,
            });
            pos += frame_bytes;
        }
        out.spans.push(ScanSpan { bytes: span, file });
        at.pos += pos as u64;
        scanned += pos as u64;
    }
    out.next = at;
    shard.note_read(out.frames.last().map(|f| f.entry.at()));
    if mode == ReadMode::Ahead
        && let Some(last) = out.frames.last()
    {
        readahead.advise(shard, last.entry.at(), segment_bytes, out.tag);
    }
    Ok(())
}

/// Bytes of the log from `at`: at least `len_min` (published, within the segment), up to
/// `len_max`; what the read cache holds from `at` if that is enough, else read from disk as
/// `mode` says (and cached).
fn span_at(
    shard: &ShardShared,
    readahead: &Readahead,
    at: LogPos,
    len_min: u64,
    len_max: u64,
    mode: ReadMode,
) -> Result<bytes::Bytes> {
    let cached = |shard: &ShardShared| {
        let cache = shard.read_cache.read().expect("read cache lock");
        match cache.get_upto(at, len_max as usize) {
            Some(b) if b.len() as u64 >= len_min => Some(b),
            _ => cache.get(at, len_min as usize),
        }
    };
    if let Some(b) = cached(shard) {
        return Ok(b);
    }
    // A frame crossing into the next read ahead waits for that one too.
    let last = LogPos::new(at.segment, at.pos + len_min - 1);
    if (readahead.wait_for(at) | readahead.wait_for(last))
        && let Some(b) = cached(shard)
    {
        return Ok(b);
    }
    let window = read_window(shard, mode);
    let (start, span) = read_span(shard, window, at, at.pos + len_max)?;
    let from = (at.pos - start) as usize;
    Ok(span.slice(from..(from + len_max as usize).min(span.len())))
}

/// Reading nearby frames in one read beats reading them one by one: frames of a partition
/// closer than this are read together, gap included.
pub(crate) const READ_GAP_BYTES_MAX: u64 = 64 << 10;
/// The most bytes one read spans.
const READ_SPAN_BYTES_MAX: u64 = 4 << 20;

const _: () = assert!(READ_GAP_BYTES_MAX < READ_SPAN_BYTES_MAX);
const _: () = assert!(READ_AHEAD_BYTES.is_multiple_of(BLOCK_BYTES as u64));

/// Splits a partition's entries into runs each read with one aligned read: same segment,
/// gaps of at most `READ_GAP_BYTES_MAX`, spans of at most `READ_SPAN_BYTES_MAX` (or one frame).
fn coalesce(entries: &[BatchEntry]) -> Vec<&[BatchEntry]> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=entries.len() {
        let split = i == entries.len() || {
            let (first, prev, next) = (&entries[start], &entries[i - 1], &entries[i]);
            let prev_end = prev.pos + u64::from(prev.frame_bytes);
            next.segment != first.segment
                || next.pos < prev_end
                || next.pos - prev_end > READ_GAP_BYTES_MAX
                || next.pos + u64::from(next.frame_bytes) - first.pos > READ_SPAN_BYTES_MAX
        };
        if split {
            runs.push(&entries[start..i]);
            start = i;
        }
    }
    runs
}
