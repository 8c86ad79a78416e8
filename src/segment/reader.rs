//! Reading stored batches back: one aligned read covers a run of frames of a segment; the
//! records share the read buffer (`Bytes::from_owner`), so keys and values are not copied.

use std::path::Path;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::index::BatchEntry;
use crate::io::{self, AlignedBuf};
use crate::segment::format::{BLOCK_BYTES, decode_frame};
use crate::shard::SegmentFile;

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Its offset in the partition.
    pub offset: u64,
    /// Its timestamp, milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Its key, if it has one.
    pub key: Option<Bytes>,
    /// Its value, if it has one.
    pub value: Option<Bytes>,
    /// Its headers.
    pub headers: Vec<(String, Option<Bytes>)>,
}

struct Shared(AlignedBuf);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Reads bytes `[start, end)` of a segment (`start` block-aligned) with one aligned read;
/// the returned bytes own the aligned buffer, and records sliced from them share it.
pub(crate) fn read_span(segment: &SegmentFile, start: u64, end: u64) -> Result<Bytes> {
    debug_assert!(start.is_multiple_of(BLOCK_BYTES as u64));
    let aligned_end = end.next_multiple_of(BLOCK_BYTES as u64);
    let buf = io::read_aligned(
        &segment.file,
        &segment.path,
        start,
        (aligned_end - start) as usize,
    )?;
    Ok(shared_bytes(buf).slice(..(end - start) as usize))
}

/// Bytes owning an aligned buffer (slices of them share it).
pub(crate) fn shared_bytes(buf: AlignedBuf) -> Bytes {
    Bytes::from_owner(Shared(buf))
}

/// Decodes one stored frame (`frame` holds exactly its bytes) and appends its records with
/// offsets in `range` to `out`; keys and values share `frame`'s memory.
pub(crate) fn decode_records(
    frame: &Bytes,
    e: &BatchEntry,
    path: &Path,
    range: (u64, u64),
    expect: (u32, u32),
    out: &mut Vec<StoredRecord>,
) -> Result<()> {
    let corrupt = |reason: String| Error::corrupt(path, e.pos, reason);
    let (header, batch) = decode_frame(frame)
        .map_err(|d| corrupt(d.0))?
        .ok_or_else(|| corrupt("indexed frame is all zeros".into()))?;
    if (header.topic_id, header.partition) != expect || batch.base_offset != e.base_offset {
        return Err(corrupt(format!(
            "indexed frame holds topic id {} partition {} offset {}, expected {:?} offset {}",
            header.topic_id, header.partition, batch.base_offset, expect, e.base_offset
        )));
    }
    for r in batch.records() {
        let r = r.map_err(|d| corrupt(d.0))?;
        if r.offset < range.0 || r.offset >= range.1 {
            continue;
        }
        let share = |s: &[u8]| frame.slice_ref(s);
        let mut headers = Vec::new();
        for h in r.headers() {
            let (k, v) = h.map_err(|d| corrupt(d.0))?;
            headers.push((k.to_owned(), v.map(share)));
        }
        out.push(StoredRecord {
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key.map(share),
            value: r.value.map(share),
            headers,
        });
    }
    Ok(())
}
