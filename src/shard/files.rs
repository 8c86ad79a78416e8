//! A shard's segment files: creating, adopting a prepared one, and listing them for readers.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::io::{self, IoBackend};
use crate::segment::SegmentId;
use crate::segment::format::BLOCK_BYTES;
use crate::shard::ShardShared;

/// A segment file as readers see it.
#[derive(Debug)]
pub(crate) struct SegmentFile {
    pub path: PathBuf,
    pub file: File,
    /// How many times the segment was rewritten (`shard::rewrite`).
    pub generation: u32,
    /// Where a rewritten segment's data ends (its file ends with zeros through the next
    /// block); None for a segment as the writer made it, the segment size long.
    pub data_end: Option<u64>,
}

impl SegmentFile {
    /// Reads bytes `[start, end)` (`start` block-aligned) with one aligned read; the returned
    /// bytes own the aligned buffer, and records sliced from them share it.
    pub fn read_span(&self, start: u64, end: u64) -> Result<Bytes> {
        debug_assert!(start.is_multiple_of(BLOCK_BYTES as u64));
        let aligned_end = end.next_multiple_of(BLOCK_BYTES as u64);
        let len = (aligned_end - start) as usize;
        let buf = io::read_aligned(&self.file, &self.path, start, len)?;
        Ok(io::shared_bytes(buf).slice(..(end - start) as usize))
    }
}

/// Creates, preallocates and registers segment `id` of a shard; fsyncs the directory.
pub(crate) fn create_segment(
    shared: &ShardShared,
    id: SegmentId,
    segment_bytes: u64,
    backend: IoBackend,
) -> Result<File> {
    let path = shared.segment_path(id);
    let file = io::open_segment(&path, backend, true, true)?;
    io::preallocate(&file, &path, segment_bytes)?;
    io::sync_dir(&shared.dir)?;
    register_segment(shared, id, backend)?;
    Ok(file)
}

/// Makes a prepared (zero-filled) segment file segment `id` of the log and registers it. With
/// `durable_name`, fsyncs the directory so the new name is durable before this returns. The
/// writer's rolls do without: the segment's records may be acknowledged while the rename is
/// still only in memory, because recovery adopts a `next.seg.prep` that holds frames as the
/// segment after the newest (see `shard::recovery`), and a directory fsync at every roll
/// would stop the writer for as long as the file system takes.
pub(crate) fn adopt_segment(
    shared: &ShardShared,
    id: SegmentId,
    prepared: &std::path::Path,
    backend: IoBackend,
    durable_name: bool,
) -> Result<File> {
    let path = shared.segment_path(id);
    std::fs::rename(prepared, &path).map_err(|e| Error::io("rename", &path, e))?;
    if durable_name {
        io::sync_dir(&shared.dir)?;
    }
    let file = io::open_segment(&path, backend, false, true)?;
    register_segment(shared, id, backend)?;
    Ok(file)
}

/// Opens segment `id` for readers and lists it in the shard.
fn register_segment(shared: &ShardShared, id: SegmentId, backend: IoBackend) -> Result<()> {
    let path = shared.segment_path(id);
    let read = io::open_segment(&path, backend, false, false)?;
    shared.segments.write().expect("segments lock").insert(
        id,
        Arc::new(SegmentFile {
            path,
            file: read,
            generation: 0,
            data_end: None,
        }),
    );
    Ok(())
}
