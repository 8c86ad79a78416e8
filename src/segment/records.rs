//! Records decoded from a stored frame; keys and values share the frame's memory (the read
//! buffer, through `Bytes`), so they are not copied. No I/O.

use std::path::Path;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::segment::batch::{BatchView, decode_frame};
use crate::segment::format::FRAME_HEADER_BYTES;
use crate::segment::{BatchEntry, Offset, TopicPartition};

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Its offset in the partition.
    pub offset: crate::segment::Offset,
    /// Its timestamp, milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Its key, if it has one.
    pub key: Option<Bytes>,
    /// Its value, if it has one.
    pub value: Option<Bytes>,
    /// Its headers.
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Decodes one stored frame (`frame` holds exactly its bytes) and appends its records with
/// offsets in `range` to `out`; keys and values share `frame`'s memory.
pub(crate) fn decode_records(
    frame: &Bytes,
    e: &BatchEntry,
    path: &Path,
    range: (Offset, Offset),
    expect: TopicPartition,
    out: &mut Vec<StoredRecord>,
) -> Result<()> {
    let corrupt = |reason: String| Error::corrupt(path, e.pos, reason);
    let (header, batch) = decode_frame(frame)
        .map_err(|d| corrupt(d.0))?
        .ok_or_else(|| corrupt("indexed frame is all zeros".into()))?;
    let found = TopicPartition::new(header.topic_id, header.partition);
    if found != expect || Offset(batch.base_offset) != e.base_offset {
        return Err(corrupt(format!(
            "indexed frame holds topic id {} partition {} offset {}, expected topic id {} \
             partition {} offset {}",
            found.topic_id,
            found.partition,
            batch.base_offset,
            expect.topic_id,
            expect.partition,
            e.base_offset
        )));
    }
    push_records(frame, &batch, range, &mut |r| out.push(r), corrupt)
}

/// Decodes a frame whose header a scan of the log has checked already (and which named the
/// partition `e` belongs to): `buf[frame]` holds exactly its bytes. The batch is decoded and
/// verified, its records with offsets in `range` handed to `push`, their keys and values
/// sharing `buf`'s memory. Returns the offset after the batch's last (a gap frame holds no
/// record, yet spans offsets).
pub(crate) fn decode_scanned_records(
    buf: &Bytes,
    frame: std::ops::Range<usize>,
    e: &BatchEntry,
    path: &Path,
    range: (Offset, Offset),
    mut push: impl FnMut(StoredRecord),
) -> Result<Offset> {
    let corrupt = |reason: String| Error::corrupt(path, e.pos, reason);
    let batch = buf
        .get(frame)
        .and_then(|f| f.get(FRAME_HEADER_BYTES..))
        .ok_or_else(|| corrupt("frame shorter than its header".into()))
        .and_then(|b| BatchView::decode(b).map_err(|d| corrupt(d.0)))?;
    if Offset(batch.base_offset) != e.base_offset {
        return Err(corrupt(format!(
            "batch base offset {} differs from {} in the frame header",
            batch.base_offset, e.base_offset
        )));
    }
    push_records(buf, &batch, range, &mut push, corrupt)?;
    Ok(Offset(batch.last_offset()) + 1)
}

/// Hands `batch`'s records (from `buf`, which holds the batch) with offsets in `range` to
/// `push`.
fn push_records(
    buf: &Bytes,
    batch: &BatchView<'_>,
    range: (Offset, Offset),
    push: &mut impl FnMut(StoredRecord),
    corrupt: impl Fn(String) -> Error,
) -> Result<()> {
    // A compressed batch's records are decompressed once; they share that buffer instead.
    let decompressed = batch
        .decompressed()
        .map_err(|d| corrupt(d.0))?
        .map(Bytes::from);
    let (buf, records) = match &decompressed {
        Some(d) => (d, batch.records_in(d)),
        None => (buf, batch.records()),
    };
    for r in records {
        let r = r.map_err(|d| corrupt(d.0))?;
        let offset = Offset(r.offset);
        if offset < range.0 || offset >= range.1 {
            continue;
        }
        let share = |s: &[u8]| buf.slice_ref(s);
        let mut headers = Vec::new();
        for h in r.headers() {
            let (k, v) = h.map_err(|d| corrupt(d.0))?;
            headers.push((k.to_owned(), v.map(share)));
        }
        push(StoredRecord {
            offset,
            timestamp: r.timestamp,
            key: r.key.map(share),
            value: r.value.map(share),
            headers,
        });
    }
    Ok(())
}
