//! The read path: a partition's batches found in its index (`index::Partition`), served from
//! the shard's read cache or read from its segment files with aligned reads; the records
//! decoded from them share the read buffers. Runs on the reader's thread.

use crate::error::{Error, Result};
use crate::index::{BatchEntry, Limit, Partition};
use crate::segment::format::BLOCK_BYTES;
use crate::segment::records::{StoredRecord, decode_records};
use crate::segment::{LogPos, Offset};
use crate::shard::readahead::Readahead;
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
    let limit = Limit { visible, before };
    let entries = p.entries_within(offset, bytes_max, limit, &shard.sealed_runs)?;
    let mut out = Vec::new();
    let expect = p.id();
    shard.note_read(entries.last().map(BatchEntry::at));
    if mode == ReadMode::Ahead
        && let Some(last) = entries.last()
    {
        readahead.advise(shard, last.at(), segment_bytes);
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
                decode_records(&frame, e, &path, (offset, visible), expect, &mut out)?;
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
            let window = match mode {
                ReadMode::Exact => 0,
                ReadMode::Ahead => READ_AHEAD_BYTES,
            };
            let (start, span) = read_from_disk(shard, window, &run[i..])?;
            let end = start + span.len() as u64;
            while let Some(e) = run.get(i)
                && e.pos + u64::from(e.frame_bytes) <= end
            {
                let at = (e.pos - start) as usize;
                let frame = span.slice(at..at + e.frame_bytes as usize);
                decode_records(&frame, e, &path, (offset, visible), expect, &mut out)?;
                i += 1;
            }
        }
    }
    let frames = entries.iter().map(|e| u64::from(e.frame_bytes)).sum();
    WriterCounters::add(&shard.counters.read_frame_bytes, frames);
    let next = entries.last().map_or(offset, |e| e.last_offset.next());
    Ok(PartitionRead { records: out, next })
}

/// A read from disk in [`ReadMode::Ahead`] covers up to the end of its window on this grid
/// (when that much is published): the frames of other partitions read along land in the read
/// cache, so a consumer going through many partitions of a shard reads the log about
/// sequentially, once.
const READ_AHEAD_BYTES: u64 = crate::shard::readahead::WINDOW_BYTES;

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
    let segment = shard
        .segments
        .read()
        .expect("segments lock")
        .get(&first.segment)
        .cloned()
        .ok_or_else(|| {
            Error::corrupt(shard.segment_path(first.segment), 0, "segment file missing")
        })?;
    // Stopping at the window's end and at cached bytes keeps reads from overlapping when
    // readers are at different positions and frames cross windows (the same bytes would be
    // read twice).
    let block = BLOCK_BYTES as u64;
    let start = first.pos - first.pos % block;
    let needed = last.pos + u64::from(last.frame_bytes);
    let end = match start.checked_div(window) {
        None => needed,
        Some(w) => {
            let cached_after = shard
                .read_cache
                .read()
                .expect("read cache lock")
                .next_chunk(LogPos::new(first.segment, start));
            (w + 1)
                .saturating_mul(window)
                .min(cached_after.unwrap_or(u64::MAX))
                .min(shard.readable_end(first.segment))
                .max(needed)
        }
    };
    let span = segment.read_span(start, end)?;
    WriterCounters::add(&shard.counters.read_disk_bytes, span.len() as u64);
    shard
        .read_cache
        .write()
        .expect("read cache lock")
        .insert(LogPos::new(first.segment, start), span.clone());
    Ok((start, span))
}

/// Reading nearby frames in one read beats reading them one by one: frames of a partition
/// closer than this are read together, gap included.
const READ_GAP_BYTES_MAX: u64 = 64 << 10;
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
