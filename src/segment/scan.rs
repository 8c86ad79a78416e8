//! Scanning a segment's bytes: every frame verified, and how the frames end (the decision
//! table of `shard::recovery`). No I/O: the bytes come through [`SegmentBytes`].

use crate::error::Result;
use crate::segment::batch::decode_frame;
use crate::segment::format::{
    BLOCK_BYTES, FRAME_HEADER_BYTES, FRAME_MAGIC, FrameHeader, HeaderSlot,
};
use crate::segment::{BatchEntry, SegmentId};

/// A segment's bytes, as a scan reads them.
pub(crate) trait SegmentBytes {
    /// The segment's length.
    fn len(&self) -> u64;
    /// `len` bytes at `pos` (within the segment).
    fn get(&mut self, pos: u64, len: usize) -> Result<&[u8]>;
    /// The position of the last non-zero byte in `[from, to)`, if any.
    fn last_nonzero(&mut self, from: u64, to: u64) -> Result<Option<u64>>;
}

/// A frame found by a scan, verified (both checksums, every record).
#[derive(Debug, Clone, Copy)]
pub struct ScannedFrame {
    /// Its topic's id.
    pub topic_id: u32,
    /// Its partition.
    pub partition: u32,
    /// Where it is and what it holds (`entry.segment` is 0: the caller knows the segment).
    pub entry: BatchEntry,
    /// Its record count.
    pub records: u32,
}

/// How a scan ended: the decision table of the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// Zeros after the last frame: the data ends at `pos`.
    Clean {
        /// Where the data ends.
        pos: u64,
    },
    /// Bytes that are not a valid frame at `pos`, within the unflushed window: a torn tail.
    Torn {
        /// Where the valid frames end.
        pos: u64,
        /// One past the last non-zero byte of the tear.
        garbage_end: u64,
    },
    /// Damage at `pos` with data beyond the window: not a torn tail.
    Damaged {
        /// Where the damage is.
        pos: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Scans frames from the start of a segment until they stop, and classifies the end.
pub(crate) fn scan(
    reader: &mut impl SegmentBytes,
    frame_bytes_max: u64,
    window: u64,
) -> Result<(Vec<ScannedFrame>, ScanEnd)> {
    let mut frames = Vec::new();
    let mut pos = 0u64;
    loop {
        if pos + FRAME_HEADER_BYTES as u64 > reader.len() {
            return Ok((frames, classify(reader, pos, None, window)?));
        }
        let header = match FrameHeader::decode(reader.get(pos, FRAME_HEADER_BYTES)?) {
            Ok(HeaderSlot::Zero) => {
                return Ok((frames, classify(reader, pos, None, window)?));
            }
            Err(e) => return Ok((frames, classify(reader, pos, Some(e.0), window)?)),
            Ok(HeaderSlot::Frame(h)) => h,
        };
        let frame_bytes = header.frame_bytes();
        if frame_bytes > frame_bytes_max || pos + frame_bytes > reader.len() {
            let reason = format!("frame length {frame_bytes} is impossible here");
            return Ok((frames, classify(reader, pos, Some(reason), window)?));
        }
        let bytes = reader.get(pos, frame_bytes as usize)?;
        let checked = decode_frame(bytes).and_then(|f| {
            let (_, batch) = f.expect("the header is not zero");
            batch.check_records().map(|_| batch)
        });
        let batch = match checked {
            Ok(b) => b,
            Err(e) => return Ok((frames, classify(reader, pos, Some(e.0), window)?)),
        };
        frames.push(ScannedFrame {
            topic_id: header.topic_id,
            partition: header.partition,
            entry: BatchEntry {
                base_offset: batch.base_offset,
                last_offset: batch.last_offset(),
                max_timestamp: batch.max_timestamp,
                segment: SegmentId(0),
                pos,
                frame_bytes: frame_bytes as u32,
            },
            records: batch.record_count,
        });
        pos += frame_bytes;
    }
}

/// The decision table: what the bytes after the last good frame at `pos` mean.
pub(crate) fn classify(
    reader: &mut impl SegmentBytes,
    pos: u64,
    reason: Option<String>,
    window: u64,
) -> Result<ScanEnd> {
    let window_end = (pos - pos % BLOCK_BYTES as u64 + window).min(reader.len());
    let beyond_end = (window_end + BLOCK_BYTES as u64).min(reader.len());
    if reader.last_nonzero(window_end, beyond_end)?.is_some() {
        let reason = reason.unwrap_or_else(|| "zeroed bytes in the middle of the log".into());
        return Ok(ScanEnd::Damaged { pos, reason });
    }
    Ok(match reader.last_nonzero(pos, window_end)? {
        None => ScanEnd::Clean { pos },
        Some(last) => ScanEnd::Torn {
            pos,
            garbage_end: last + 1,
        },
    })
}

/// Counts the records of every valid frame found at or after `pos`, resynchronising byte by
/// byte past damage (used by repair to report what it drops).
pub(crate) fn count_records_after(
    reader: &mut impl SegmentBytes,
    pos: u64,
    frame_bytes_max: u64,
) -> Result<u64> {
    let mut records = 0;
    let mut at = pos;
    while at + FRAME_HEADER_BYTES as u64 <= reader.len() {
        let header = reader.get(at, FRAME_HEADER_BYTES)?;
        if header[..4] != FRAME_MAGIC.to_le_bytes() {
            at += 1;
            continue;
        }
        if let Ok(HeaderSlot::Frame(h)) = FrameHeader::decode(header)
            && h.frame_bytes() <= frame_bytes_max
            && at + h.frame_bytes() <= reader.len()
            && let Ok(Some((_, batch))) = decode_frame(reader.get(at, h.frame_bytes() as usize)?)
        {
            records += u64::from(batch.record_count);
            at += h.frame_bytes();
            continue;
        }
        at += 1;
    }
    Ok(records)
}
