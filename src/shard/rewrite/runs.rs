//! A rewrite's second pass, for a segment larger than its window: the first pass wrote the
//! segment's windows, each grouped by partition, as runs of one file; this merges the runs
//! into the rewritten segment, every run read at once through its share of the window, their
//! heads on a heap, as an external sort's merge does.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::{Output, Pace, REWRITE_PIECE_BYTES, Windows, fill};
use crate::error::{Error, Result};
use crate::index::TopicPartition;
use crate::io::{self, AlignedBuf, IoBackend};
use crate::segment::decode_frame;
use crate::segment::format::{
    BATCH_HEADER_BYTES, BLOCK_BYTES, FRAME_HEADER_BYTES, FrameHeader, HeaderSlot,
};
use crate::segment::merge::{BatchMerger, MergeKey};

/// The first pass's file of sorted runs, and where each run ends.
struct Runs<'a> {
    file: &'a std::fs::File,
    path: &'a Path,
    /// The file position after each run's last frame.
    ends: &'a [u64],
}

/// Reads one run of the runs file front to back, a buffer at a time.
struct RunReader {
    buf: Option<AlignedBuf>,
    /// The file position of `buf`'s first byte, and how many of its bytes were read.
    start: u64,
    len: usize,
    /// The position of the run's next frame, and of its end.
    pos: u64,
    end: u64,
    /// Where in `buf` the frame `next` found lies.
    current: std::ops::Range<usize>,
}

impl RunReader {
    /// Moves to the next frame (checked whole; [`RunReader::frame`] holds it), reading `chunk`
    /// bytes or more from it on when the buffer does not hold it; returns its partition, or
    /// `None` at the run's end.
    fn next(
        &mut self,
        runs: &Runs<'_>,
        chunk: usize,
        (pace, counters): (&mut Pace, &crate::shard::WriterCounters),
    ) -> Result<Option<TopicPartition>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let corrupt = |reason: String| Error::corrupt(runs.path, self.pos, reason);
        let mut want = FRAME_HEADER_BYTES as u64;
        loop {
            if self.buf.is_none()
                || self.pos < self.start
                || self.pos + want > self.start + self.len as u64
            {
                let block = BLOCK_BYTES as u64;
                let start = self.pos / block * block;
                let len = ((self.pos + want - start).next_multiple_of(block) as usize).max(chunk);
                fill((runs.file, runs.path), (start, len), &mut self.buf, pace)?;
                (counters.rewrite_read_bytes).fetch_add(len as u64, Ordering::Relaxed);
                (self.start, self.len) = (start, len);
            }
            let at = (self.pos - self.start) as usize;
            let buf = &self.buf.as_ref().expect("a run was read")[..self.len];
            let frame_bytes = match FrameHeader::decode(&buf[at..]) {
                Ok(HeaderSlot::Frame(h)) => h.frame_bytes(),
                Ok(HeaderSlot::Zero) => return Err(corrupt("a zero frame header in a run".into())),
                Err(e) => return Err(corrupt(e.0)),
            };
            if self.pos + frame_bytes > self.end {
                return Err(corrupt("a frame runs past its run's end".into()));
            }
            if want < frame_bytes && self.pos + frame_bytes > self.start + self.len as u64 {
                want = frame_bytes;
                continue;
            }
            let frame = &buf[at..at + frame_bytes as usize];
            let (header, _) = decode_frame(frame)
                .map_err(|d| corrupt(d.0))?
                .ok_or_else(|| corrupt("a zero frame in a run".into()))?;
            self.pos += frame_bytes;
            self.current = at..at + frame_bytes as usize;
            return Ok(Some(TopicPartition::new(header.topic_id, header.partition)));
        }
    }

    /// The batch of the frame [`RunReader::next`] moved to.
    fn batch(&self) -> &[u8] {
        let frame = &self.buf.as_ref().expect("a run was read")[self.current.clone()];
        &frame[FRAME_HEADER_BYTES..]
    }
}

/// A partition's batches being merged in the second pass.
struct Merging {
    tp: TopicPartition,
    /// Its first batch, and its key (`None`: it merges with nothing).
    first: Vec<u8>,
    key: Option<MergeKey>,
    /// Batches joined to the first in `merger`.
    joined: usize,
    bytes: usize,
}

/// Ends the first pass (`runs`, the runs file being written, its runs ending at `run_ends`)
/// and merges its runs into a new output at `path`, which it returns.
pub(super) fn second_pass<'a>(
    mut runs: Output<'a>,
    (path, backend): (&'a Path, IoBackend),
    run_ends: &[u64],
    window: usize,
    stop: &dyn Fn() -> bool,
) -> Result<(Output<'a>, Windows)> {
    runs.flush(true)?;
    let file = io::open_segment(path, backend, true, true)?;
    let (segment, counters, batch_bytes_max) = (runs.segment, runs.counters, runs.batch_bytes_max);
    let mut out = Output::new(
        (file, path, true),
        segment,
        counters,
        runs.pace,
        batch_bytes_max,
    );
    let runs = Runs {
        file: &runs.file,
        path: runs.path,
        ends: run_ends,
    };
    let merged = merge_runs(&runs, window, &mut out, stop)?;
    Ok((out, merged))
}

/// The second pass: merges the runs (each grouped by partition, in log order) into `out`, the
/// partition first in any run first (its frames of an earlier run before a later one's), each
/// run read through its share of `window` bytes; each partition's consecutive batches that
/// merge become one, up to `out.batch_bytes_max` bytes. Memory: the runs' buffers, whatever
/// the frame count.
fn merge_runs(
    runs: &Runs<'_>,
    window: usize,
    out: &mut Output<'_>,
    stop: &dyn Fn() -> bool,
) -> Result<Windows> {
    use std::cmp::Reverse;
    let k = runs.ends.len().max(1);
    let chunk = (window / k / BLOCK_BYTES * BLOCK_BYTES).max(BLOCK_BYTES);
    let mut readers: Vec<RunReader> = (runs.ends.iter().enumerate())
        .map(|(r, &end)| RunReader {
            buf: None,
            start: 0,
            len: 0,
            pos: if r == 0 { 0 } else { runs.ends[r - 1] },
            end,
            current: 0..0,
        })
        .collect();
    // The next frame's partition of each run not at its end, smallest first (then the
    // earliest run).
    let mut heads = std::collections::BinaryHeap::new();
    for (r, reader) in readers.iter_mut().enumerate() {
        if let Some(tp) = reader.next(runs, chunk, (&mut out.pace, out.counters))? {
            heads.push(Reverse((tp, r)));
        }
    }
    let path = out.path;
    let bad = |e: crate::segment::format::DecodeError| {
        Error::corrupt(path, 0, format!("merging batches: {}", e.0))
    };
    let mut merger = BatchMerger::default();
    let mut current: Option<Merging> = None;
    let mut count = 0usize;
    while let Some(Reverse((tp, r))) = heads.pop() {
        count += 1;
        if count.is_multiple_of(4096) && stop() {
            return Ok(Windows::Stopped);
        }
        let batch = readers[r].batch();
        let next_key = MergeKey::of(batch);
        let joins = match (&current, &next_key) {
            (Some(m), Some(nk)) => {
                m.tp == tp
                    && m.key.as_ref().is_some_and(|k| k.continues(nk))
                    && m.bytes + batch.len() - BATCH_HEADER_BYTES <= out.batch_bytes_max
            }
            _ => false,
        };
        if joins {
            let m = current.as_mut().expect("a partition being merged");
            if m.joined == 0 {
                merger.start(&m.first);
            }
            merger.push(batch).map_err(bad)?;
            m.bytes = merger.len();
            m.key = m.key.map(|k| k.joined(next_key.as_ref().expect("a key")));
            m.joined += 1;
        } else {
            if let Some(m) = current.take() {
                finish_merging(m, &mut merger, out);
            }
            current = Some(Merging {
                tp,
                first: batch.to_vec(),
                key: next_key,
                joined: 0,
                bytes: batch.len(),
            });
        }
        if let Some(tp) = readers[r].next(runs, chunk, (&mut out.pace, out.counters))? {
            heads.push(Reverse((tp, r)));
        }
        if out.pending.len() >= REWRITE_PIECE_BYTES {
            out.flush(false)?;
        }
    }
    if let Some(m) = current.take() {
        finish_merging(m, &mut merger, out);
    }
    Ok(Windows::Written)
}

/// Writes a partition's merged batch (or its one batch) to `out`.
fn finish_merging(m: Merging, merger: &mut BatchMerger, out: &mut Output<'_>) {
    match m.joined {
        0 => out.frame(m.tp, &m.first),
        _ => out.frame(m.tp, merger.finish()),
    }
}
