//! The read path: a partition's batches found in its index, served from the read cache or
//! read from the segment files with aligned reads.

use bytes::Bytes;

use crate::error::Result;
use crate::io::{self, AlignedBuf};
use crate::segment::format::BLOCK_BYTES;
use crate::shard::files::SegmentFile;

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
