//! Reading the stored batches of many partitions of a topic at once: what a Kafka fetch naming
//! many partitions asks for. Runs on the reader's thread.
//!
//! A partition's batches lie spread through its shard's log, interleaved with every other
//! partition's. Read one partition at a time, a fetch of N partitions would read each region
//! of the log N times (or hold N read-ahead windows); instead the partitions of a shard that
//! have something to read are served by one scan of that shard's log in position order, from
//! the earliest batch any of them asks for, handing each frame to its partition: each region is
//! read once, and a frame costs a header check and a table lookup. A partition alone in its
//! shard is read through its index, as [`crate::Log::read_batches`] does. Limits are those of
//! a Kafka fetch: bytes per partition and bytes in all, each partition at least one whole batch
//! while the response has room, and the scan of one shard bounded ([`SCAN_BYTES_MAX`]).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::index::Partition;
use crate::segment::format::FRAME_HEADER_BYTES;
use crate::segment::{LogPos, Offset, TopicPartition};
use crate::shard::read::{LogFrame, LogScan, ReadMode};
use crate::shard::readahead::ScanTag;
use crate::store::{Store, Stretch};

/// The most bytes of a shard's log one call scans (every topic's frames in it): bounds the work
/// and the latency of one fetch when the partitions asked for are a small part of the log.
pub(crate) const SCAN_BYTES_MAX: usize = 64 << 20;
/// The most bytes one step of a scan reads.
const SCAN_STEP_BYTES_MAX: usize = 4 << 20;
/// The least bytes one step of a scan reads.
const SCAN_STEP_BYTES_MIN: usize = 64 << 10;

const _: () = assert!(SCAN_STEP_BYTES_MIN <= SCAN_STEP_BYTES_MAX);
const _: () = assert!(SCAN_STEP_BYTES_MAX <= SCAN_BYTES_MAX);

/// A partition whose batches a read of many asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchesAsk {
    /// The partition.
    pub partition: u32,
    /// Its first offset wanted: the batch holding it comes first.
    pub offset: Offset,
    /// The most bytes of its batches wanted (at least one batch is returned while the whole
    /// read has room).
    pub bytes_max: usize,
    /// Whether a read from disk should cover whole windows and have the next ones read in the
    /// background (a reader draining a backlog), or only the bytes needed.
    pub read_ahead: bool,
}

/// A partition's answer in a read of many.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionBatches {
    /// Its stored RecordBatches (Kafka RecordBatch v2 bytes, checksums verified), in offset
    /// order from the one holding the offset asked for (which may hold earlier offsets).
    pub batches: Vec<bytes::Bytes>,
    /// The offset after the last batch (the offset asked for if none).
    pub next: Offset,
    /// The partition's earliest stored offset when it was read.
    pub earliest: Offset,
    /// One past its last readable offset when it was read: no batch returned reaches it.
    pub end: Offset,
}

/// A partition of the read that has batches to read.
struct Pending {
    /// Its place in the asks.
    ask: usize,
    partition: Arc<Partition>,
    /// Where the batch holding the offset asked for lies (from the partition's index), or a
    /// position of the log before it with none of the partition's batches between (from its
    /// read hint: the batch then starts at the offset asked for).
    holding: LogPos,
    /// Where its last batch taken ends in the log.
    taken_end: Option<LogPos>,
    /// Its readable end when the read started.
    end: Offset,
    /// Bytes of batches taken.
    taken: usize,
    /// Whether it takes no more.
    done: bool,
    /// Whether the scan could not serve it (its first batch was not where the index said:
    /// retention deleted it meanwhile), so it is read on its own.
    stray: bool,
}

impl Store {
    /// The stored batches of each partition of `topic` in `asks` (see [`BatchesAsk`]), up to
    /// `bytes_max` bytes in all: one answer per ask, in their order, each an error of its own
    /// (unknown partition, offset out of range, damage) without failing the others.
    pub(crate) fn read_batches_of(
        &self,
        topic: &str,
        asks: &[BatchesAsk],
        bytes_max: usize,
    ) -> Vec<Result<PartitionBatches>> {
        let mut out: Vec<Result<PartitionBatches>> = Vec::with_capacity(asks.len());
        let mut pending: Vec<Vec<Pending>> = (0..self.shards.len()).map(|_| Vec::new()).collect();
        // Positions found from here on belong to this layout of each shard's log (a rewrite of
        // a sealed segment moves them: `shard::rewrite`).
        let layouts: Vec<u64> = self.shards.iter().map(|s| s.layout_seen()).collect();
        for (i, ask) in asks.iter().enumerate() {
            match self.pending(topic, ask, &layouts) {
                Ok((answer, p)) => {
                    if let Some(mut p) = p {
                        p.ask = i;
                        pending[p.partition.shard as usize].push(p);
                    }
                    out.push(Ok(answer));
                }
                Err(e) => out.push(Err(e)),
            }
        }
        let mut total = 0usize;
        for (shard, mut pending) in pending.into_iter().enumerate() {
            if total >= bytes_max.max(1) {
                break;
            }
            if pending.len() > 1 {
                let room = bytes_max - total;
                let scanned =
                    self.scan_batches(shard, &mut pending, asks, (room, layouts[shard]), &mut out);
                total += scanned;
                // Those it could not serve are read on their own (after damage in the region
                // scanned, their own reads find whether it is theirs).
                pending.retain(|p| p.stray);
            }
            for p in &pending {
                let ask = &asks[p.ask];
                let room = bytes_max.saturating_sub(total);
                if room == 0 && total > 0 {
                    break;
                }
                let read = self.read_one(topic, ask, room);
                if let Ok(read) = &read {
                    total += read.batches.iter().map(bytes::Bytes::len).sum::<usize>();
                }
                out[p.ask] = read;
            }
        }
        out
    }

    /// The answer to `ask` before anything is read, and whether its partition has batches to
    /// read (then where the first lies).
    fn pending(
        &self,
        topic: &str,
        ask: &BatchesAsk,
        layouts: &[u64],
    ) -> Result<(PartitionBatches, Option<Pending>)> {
        let p = self.partition(topic, ask.partition)?;
        let (earliest, end) = (p.offset_earliest(), p.offset_acked());
        if ask.offset < earliest || ask.offset > end {
            return Err(Error::OffsetOutOfRange {
                topic: topic.to_owned(),
                partition: ask.partition,
                offset: ask.offset,
                earliest,
                next: end,
            });
        }
        let answer = PartitionBatches {
            batches: Vec::new(),
            next: ask.offset,
            earliest,
            end,
        };
        if ask.offset == end {
            return Ok((answer, None));
        }
        // Where the last read of many stopped in this partition, if this one goes on from
        // there: no index lookup (a fetch names every partition of a consumer, every time).
        let holding = match p.read_hint(ask.offset, layouts[p.shard as usize]) {
            Some(pos) => pos,
            None => self.batch_holding(topic, ask.partition, ask.offset)?.at(),
        };
        let pending = Pending {
            ask: 0,
            partition: p,
            holding,
            taken_end: None,
            end,
            taken: 0,
            done: false,
            stray: false,
        };
        Ok((answer, Some(pending)))
    }

    /// `ask` read through its partition's index, with `room` bytes left in the read.
    fn read_one(&self, topic: &str, ask: &BatchesAsk, room: usize) -> Result<PartitionBatches> {
        let mode = ReadMode::ahead_if(ask.read_ahead);
        let bytes_max = ask.bytes_max.min(room).max(1);
        let read = self.read_batches(topic, ask.partition, ask.offset, bytes_max, mode)?;
        // Where the partition stands after the read: no batch read reaches past it.
        let p = self.partition(topic, ask.partition)?;
        let (earliest, end) = (p.offset_earliest(), p.offset_acked());
        Ok(PartitionBatches {
            batches: read.batches,
            next: read.next,
            earliest,
            end,
        })
    }

    /// Serves `pending` (partitions of shard `shard`, more than one) from one scan of its log
    /// in position order, up to `bytes_max` bytes, writing each one's batches into its answer
    /// in `out`. Returns the bytes taken. A partition it could not serve is left `stray` (if the
    /// scan failed, or the shard's layout moved from `layout`, all that took nothing are).
    fn scan_batches(
        &self,
        shard: usize,
        pending: &mut [Pending],
        asks: &[BatchesAsk],
        (bytes_max, layout): (usize, u64),
        out: &mut [Result<PartitionBatches>],
    ) -> usize {
        let mut of: HashMap<TopicPartition, usize> = HashMap::with_capacity(pending.len());
        for (i, p) in pending.iter_mut().enumerate() {
            // A partition named twice: the scan serves the first ask, the other is read alone.
            match of.entry(p.partition.id()) {
                Entry::Occupied(_) => (p.done, p.stray) = (true, true),
                Entry::Vacant(v) => {
                    v.insert(i);
                }
            }
        }
        let Some(mut at) = pending.iter().map(|p| p.holding).min() else {
            return 0;
        };
        let mode = ReadMode::ahead_if(pending.iter().any(|p| asks[p.ask].read_ahead));
        let mut taken = 0usize;
        let mut open = pending.iter().filter(|p| !p.done).count();
        let mut scan = LogScan::default();
        let mut scanned_bytes = 0usize;
        // How far this scan asked for its partitions' stretches of a rewritten segment to be
        // read ahead.
        let mut asked = LogPos::default();
        let mut runs = Vec::new();
        while open > 0 && taken < bytes_max && scanned_bytes < SCAN_BYTES_MAX {
            let step = (bytes_max - taken).clamp(SCAN_STEP_BYTES_MIN, SCAN_STEP_BYTES_MAX);
            // In a rewritten segment, only the stretches of the partitions still open.
            let wanted = |tp| of.get(&tp).is_some_and(|&i| !pending[i].done);
            let ahead = (mode == ReadMode::Ahead).then_some((&mut asked, ScanTag::default()));
            let read = match self.next_stretch(shard as u32, at, wanted, step, ahead, &mut runs) {
                Stretch::Scan => (step, mode),
                Stretch::Run(start, end) => {
                    at = LogPos::new(at.segment, start);
                    ((end - start) as usize, ReadMode::Exact)
                }
                Stretch::None => {
                    at = LogPos::new(at.segment.next(), 0);
                    continue;
                }
            };
            let scanned = self.scan_log(shard as u32, at, read, &mut scan);
            // Positions of a layout a rewrite replaced meanwhile: what was taken stands (every
            // batch checked, in offset order), the rest is read through the new index.
            if scanned.is_err() || self.shards[shard].layout_moved(layout) {
                for p in pending.iter_mut() {
                    match p.taken {
                        0 => (p.done, p.stray) = (true, true),
                        _ => p.done = true,
                    }
                }
                break;
            }
            if scan.frames.is_empty() {
                break;
            }
            let mut frames_taken = 0u64;
            for f in &scan.frames {
                let Some(&i) = of.get(&f.tp) else {
                    continue;
                };
                let p = &mut pending[i];
                if p.done || f.entry.at() < p.holding {
                    continue;
                }
                let answer = match &mut out[p.ask] {
                    Ok(answer) => answer,
                    Err(_) => continue,
                };
                match take(p, &asks[p.ask], f, &scan, (taken, bytes_max), answer) {
                    // A damaged batch ends the partition's answer: the next read starts at it and
                    // gets the error, unless this one has nothing before it.
                    Err(e) => {
                        p.done = true;
                        if p.taken == 0 {
                            out[p.ask] = Err(e);
                        }
                    }
                    Ok(0) => {}
                    Ok(bytes) => {
                        taken += bytes;
                        frames_taken += u64::from(f.entry.frame_bytes);
                    }
                }
                if p.done {
                    open -= 1;
                }
                if taken >= bytes_max {
                    break;
                }
            }
            self.count_frames_read(shard as u32, frames_taken);
            scanned_bytes += frames_span(&scan);
            at = scan.next;
            scan.clear();
        }
        for p in pending.iter() {
            if let (Some(end), Ok(answer)) = (p.taken_end, &out[p.ask]) {
                p.partition.set_read_hint(answer.next, end, layout);
            }
        }
        taken
    }
}

/// Hands frame `f` of `scan` (a frame of pending partition `p`, at or past the batch holding the
/// offset asked for) to `p`'s answer if its limits and the read's (`(taken, bytes_max)`) allow,
/// marking `p` done when it takes no more. Returns the batch bytes taken.
fn take(
    p: &mut Pending,
    ask: &BatchesAsk,
    f: &LogFrame,
    scan: &LogScan,
    (taken, bytes_max): (usize, usize),
    answer: &mut PartitionBatches,
) -> Result<usize> {
    if f.entry.base_offset >= p.end {
        p.done = true;
        return Ok(0);
    }
    let (frame, path) = scan.frame_bytes(f);
    let len = frame.len() - FRAME_HEADER_BYTES;
    if p.taken == 0 {
        // The first batch must be the one found in the index, or the one starting at the
        // offset asked for: anything else means the log changed under the scan (retention
        // deleted it) or the hint was stale; the partition's own read says how.
        if f.entry.at() != p.holding && f.entry.base_offset != ask.offset {
            (p.done, p.stray) = (true, true);
            return Ok(0);
        }
    } else if p.taken + len > ask.bytes_max
        || taken + len > bytes_max
        || f.entry.base_offset != answer.next
    {
        // (A batch that does not go on from the last taken: the log changed under the scan.)
        p.done = true;
        return Ok(0);
    }
    let corrupt = |reason: String| Error::corrupt(path, f.entry.pos, reason);
    let (header, batch) = crate::segment::decode_frame(&frame)
        .map_err(|d| corrupt(d.0))?
        .ok_or_else(|| corrupt("scanned frame is all zeros".into()))?;
    debug_assert_eq!(TopicPartition::new(header.topic_id, header.partition), f.tp);
    answer.batches.push(frame.slice(FRAME_HEADER_BYTES..));
    answer.next = Offset(batch.last_offset()).next();
    p.taken += len;
    p.taken_end = Some(LogPos::new(
        f.entry.segment,
        f.entry.pos + frame.len() as u64,
    ));
    if answer.next >= p.end {
        p.done = true;
    }
    Ok(len)
}

/// Bytes of the log a scan covered.
fn frames_span(scan: &LogScan) -> usize {
    match (scan.frames.first(), scan.frames.last()) {
        (Some(a), Some(b)) if a.entry.segment == b.entry.segment => {
            (b.entry.pos + u64::from(b.entry.frame_bytes) - a.entry.pos) as usize
        }
        (Some(_), Some(_)) => scan
            .frames
            .iter()
            .map(|f| f.entry.frame_bytes as usize)
            .sum(),
        _ => 0,
    }
}
