//! Scanning a segment's bytes: every frame verified, and how the frames end (the decision
//! table of `shard::recovery`). No I/O: the bytes come through [`SegmentBytes`].

use crate::error::Result;
use crate::segment::batch::{BatchProducer, batch_producer, decode_frame};
use crate::segment::format::{
    BLOCK_BYTES, FRAME_HEADER_BYTES, FRAME_MAGIC, FrameHeader, HeaderSlot,
};
use crate::segment::{BatchEntry, Offset, SegmentId};

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
    /// The position through which its header says the segment was durable, if it says.
    pub durable_through: Option<u64>,
    /// Its idempotent producer's marks, if it has them.
    pub producer: Option<BatchProducer>,
}

/// What is known of a segment from outside its frames, before it is scanned.
#[derive(Debug, Clone, Copy, Default)]
pub struct Known {
    /// The segment was durable through this position (the shard's checkpoint; 0 if unknown).
    pub durable: u64,
    /// Whether the bytes after the frames must be read to the end of the file: a crash may
    /// have left frames anywhere past a stretch of damage. Not needed after a clean close,
    /// where the checkpoint says where the log ends.
    pub read_to_end: bool,
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
    /// Damage at `pos` before the position the segment was known durable through, or with
    /// data beyond the window: not a torn tail.
    Damaged {
        /// Where the damage is.
        pos: u64,
        /// What is wrong.
        reason: String,
    },
}

/// Scans frames from the start of a segment until they stop, handing each to `found` in
/// position order, and classifies the end. The frames' own durable claims add to what `known`
/// says. Frames are not collected here: a caller keeps what it needs of each (recovery, a
/// compact entry; a segment of a few million frames would otherwise be held twice).
pub(crate) fn scan(
    reader: &mut impl SegmentBytes,
    frame_bytes_max: u64,
    window: u64,
    known: Known,
    found: &mut impl FnMut(ScannedFrame),
) -> Result<ScanEnd> {
    let mut claimed: Option<u64> = None;
    let mut pos = 0u64;
    // Where the frames stop, and why if not at zeros.
    let stop: Option<String> = loop {
        if pos + FRAME_HEADER_BYTES as u64 > reader.len() {
            break None;
        }
        let header = match FrameHeader::decode(reader.get(pos, FRAME_HEADER_BYTES)?) {
            Ok(HeaderSlot::Zero) => break None,
            Err(e) => break Some(e.0),
            Ok(HeaderSlot::Frame(h)) => h,
        };
        let frame_bytes = header.frame_bytes();
        if frame_bytes > frame_bytes_max || pos + frame_bytes > reader.len() {
            break Some(format!("frame length {frame_bytes} is impossible here"));
        }
        let bytes = reader.get(pos, frame_bytes as usize)?;
        let checked = decode_frame(bytes).and_then(|f| {
            let (_, batch) = f.expect("the header is not zero");
            batch.check_records().map(|_| batch)
        });
        let batch = match checked {
            Ok(b) => b,
            Err(e) => break Some(e.0),
        };
        let durable_through = header.durable_through(pos);
        claimed = claimed.max(durable_through);
        found(ScannedFrame {
            topic_id: header.topic_id,
            partition: header.partition,
            entry: BatchEntry {
                base_offset: Offset(batch.base_offset),
                last_offset: Offset(batch.last_offset()),
                max_timestamp: batch.max_timestamp,
                segment: SegmentId(0),
                pos,
                frame_bytes: frame_bytes as u32,
            },
            records: batch.record_count,
            durable_through,
            producer: batch_producer(&bytes[FRAME_HEADER_BYTES..]),
        });
        pos += frame_bytes;
    };
    let known = Known {
        durable: known.durable.max(claimed.unwrap_or(0)),
        // Frames past where a clean close said the log ended: that word is stale, so the
        // bytes after them are read as after a crash.
        read_to_end: known.read_to_end || pos > known.durable,
    };
    classify(reader, pos, stop, window, known)
}

/// The decision table: what the bytes after the last good frame at `pos` mean.
pub(crate) fn classify(
    reader: &mut impl SegmentBytes,
    pos: u64,
    reason: Option<String>,
    window: u64,
    known: Known,
) -> Result<ScanEnd> {
    if pos < known.durable {
        let what = reason.unwrap_or_else(|| "zeroed bytes".into());
        let reason = format!(
            "{what}, before position {} through which the segment was known durable: \
             acknowledged records are damaged or missing",
            known.durable
        );
        return Ok(ScanEnd::Damaged { pos, reason });
    }
    let window_end = (pos - pos % BLOCK_BYTES as u64 + window).min(reader.len());
    let beyond_end = if known.read_to_end {
        reader.len()
    } else {
        (window_end + BLOCK_BYTES as u64).min(reader.len())
    };
    if let Some(at) = reader.last_nonzero(window_end, beyond_end)? {
        let what = reason.unwrap_or_else(|| "zeroed bytes in the middle of the log".into());
        let reason = format!(
            "{what}; data lies beyond the unflushed window (a non-zero byte at {at}), so this \
             is not a torn tail"
        );
        return Ok(ScanEnd::Damaged { pos, reason });
    }
    let Some(last) = reader.last_nonzero(pos, window_end)? else {
        return Ok(ScanEnd::Clean { pos });
    };
    // A torn write leaves only frames that were never flushed after `pos`. A frame found
    // there that says the log was flushed past `pos` before it was written proves the bytes
    // at `pos` were durable, and are damaged.
    if let Some((at, durable)) = latest_claim(reader, pos + 1, last + 1)?
        && durable > pos
    {
        let what = reason.unwrap_or_else(|| "zeroed bytes".into());
        let reason = format!(
            "{what}; the frame at {at} was written once the segment was durable through \
             {durable}, so acknowledged records are damaged here, not torn"
        );
        return Ok(ScanEnd::Damaged { pos, reason });
    }
    Ok(ScanEnd::Torn {
        pos,
        garbage_end: last + 1,
    })
}

/// The frame header in `[from, to)` that claims the segment durable the furthest: its
/// position and the claim. Headers are found by their magic and checksum, wherever they are.
fn latest_claim(reader: &mut impl SegmentBytes, from: u64, to: u64) -> Result<Option<(u64, u64)>> {
    let mut best: Option<(u64, u64)> = None;
    let end = to.min(reader.len());
    let mut at = from;
    while at + FRAME_HEADER_BYTES as u64 <= end {
        let header = reader.get(at, FRAME_HEADER_BYTES)?;
        if header[..4] == FRAME_MAGIC.to_le_bytes()
            && let Ok(HeaderSlot::Frame(h)) = FrameHeader::decode(header)
            && let Some(claim) = h.durable_through(at)
            && best.is_none_or(|(_, b)| claim > b)
        {
            best = Some((at, claim));
        }
        at += 1;
    }
    Ok(best)
}

/// What the valid frames found at or after a position hold, per partition: offsets and
/// record counts. What repair drops, said before (`floodgate repair --dry-run`) and after.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Per (topic id, partition): the first and last offset found, and the records.
    pub partitions: std::collections::BTreeMap<(u32, u32), (u64, u64, u64)>,
}

impl Dropped {
    /// Records in all.
    pub fn records(&self) -> u64 {
        self.partitions.values().map(|&(_, _, n)| n).sum()
    }

    /// Adds the records of `other`.
    pub fn add(&mut self, other: &Dropped) {
        for (&tp, &(first, last, n)) in &other.partitions {
            let e = self.partitions.entry(tp).or_insert((first, last, 0));
            e.0 = e.0.min(first);
            e.1 = e.1.max(last);
            e.2 += n;
        }
    }
}

/// The records of every valid frame found at or after `pos`, resynchronising byte by byte
/// past damage (what repair drops from there).
pub(crate) fn records_after(
    reader: &mut impl SegmentBytes,
    pos: u64,
    frame_bytes_max: u64,
) -> Result<Dropped> {
    let mut dropped = Dropped::default();
    let mut at = pos;
    while at + FRAME_HEADER_BYTES as u64 <= reader.len() {
        let header = reader.get(at, FRAME_HEADER_BYTES)?;
        if header[..4] != FRAME_MAGIC.to_le_bytes() {
            at += 1;
            continue;
        }
        let slot = FrameHeader::decode(header);
        if let Ok(HeaderSlot::Frame(h)) = slot
            && h.frame_bytes() <= frame_bytes_max
            && at + h.frame_bytes() <= reader.len()
            && let Ok(Some((_, batch))) = decode_frame(reader.get(at, h.frame_bytes() as usize)?)
        {
            let one = Dropped {
                partitions: [(
                    (h.topic_id, h.partition),
                    (
                        batch.base_offset,
                        batch.last_offset(),
                        u64::from(batch.record_count),
                    ),
                )]
                .into(),
            };
            dropped.add(&one);
            at += h.frame_bytes();
            continue;
        }
        // A sound header on a damaged batch still says its first offset was given.
        if let Ok(HeaderSlot::Frame(h)) = slot {
            let one = Dropped {
                partitions: [((h.topic_id, h.partition), (h.base_offset, h.base_offset, 0))].into(),
            };
            dropped.add(&one);
        }
        at += 1;
    }
    Ok(dropped)
}
