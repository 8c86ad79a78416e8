//! Where a partition's batches are: offset and time → (segment, position).
//!
//! The index is derived data. Each partition keeps, in memory, one [`BatchEntry`] per batch of
//! the segments that are not sealed yet (appended when the batch becomes visible), and one
//! [`IndexRun`] per sealed segment it has batches in. A sealed segment `N.seg` has an index file
//! `N.idx` holding its entries grouped by partition; a run names where its partition's entries
//! are in that file, and readers load them on demand through a bounded cache ([`SealedRuns`]). So the
//! memory the index takes grows with the number of partitions and segments, not with the
//! number of batches stored (at 10,000 partitions of 100-byte records, one entry per record:
//! 32 bytes per record in the segment being written, 320 MB per 10 M records, before runs
//! replaced sealed entries).
//!
//! The index file is also the recovery checkpoint: open reads only its directory, so it skips
//! scanning sealed segments. A missing or damaged index file is rebuilt by scanning its segment.
//!
//! Files: [`partition`] (a partition's entries and runs, and its watermarks), [`published`]
//! (entries the writer published, on their way to partitions), [`cache`] (sealed runs' entries
//! loaded from index files), [`mod@file`] (the index file's bytes) and [`file_io`] (reading and
//! writing index files).

mod cache;
mod file;
mod file_io;
mod partition;
mod published;

use crate::segment::{Offset, SegmentId};
use std::sync::Arc;

use crate::error::Result;

/// A published entry as its segment's [`published::EntryChunks`] hold it: the partition's slot in its
/// shard and the entry, in 32 bytes instead of 56 (the segment is the chunks', the last offset
/// a delta, positions within a segment of at most 4 GiB). With 10,000 partitions every record
/// is its own batch: a 1 GiB segment holds about 6 M of these until its index file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotEntry {
    /// The partition's slot in its shard.
    pub slot: u32,
    last_delta: u32,
    base_offset: Offset,
    max_timestamp: i64,
    pos: u32,
    frame_bytes: u32,
}

impl SlotEntry {
    /// Packs `e` (of a batch of at most 2^32 records at a position below 4 GiB).
    pub fn new(slot: u32, e: &BatchEntry) -> SlotEntry {
        SlotEntry {
            slot,
            last_delta: u32::try_from(e.last_offset.since(e.base_offset))
                .expect("records per batch"),
            base_offset: e.base_offset,
            max_timestamp: e.max_timestamp,
            pos: u32::try_from(e.pos).expect("segments are at most 4 GiB"),
            frame_bytes: e.frame_bytes,
        }
    }

    /// The entry, in `segment`.
    pub fn entry(&self, segment: SegmentId) -> BatchEntry {
        BatchEntry {
            base_offset: self.base_offset,
            last_offset: self.base_offset + u64::from(self.last_delta),
            max_timestamp: self.max_timestamp,
            segment,
            pos: u64::from(self.pos),
            frame_bytes: self.frame_bytes,
        }
    }
}

/// A partition's batches in one sealed segment, as listed in the directory of the segment's
/// index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexRun {
    /// The topic's id.
    pub topic_id: u32,
    /// The partition.
    pub partition: u32,
    /// Offset of the first record of its first batch.
    pub first_offset: Offset,
    /// Offset of the last record of its last batch.
    pub last_offset: Offset,
    /// The largest record timestamp in it.
    pub max_timestamp: i64,
    /// Index of its first entry among the file's entries.
    pub first_entry: u32,
    /// Number of entries (batches), at least 1.
    pub entry_count: u32,
    /// CRC-32C of its entries' bytes in the file.
    pub crc: u32,
    /// Bytes of its batches' frames in the segment; 0 where the index file predates this
    /// field (see [`Partition::retained_bytes`], which then sums the run's entries).
    pub bytes: u32,
}

impl IndexRun {
    /// Its partition.
    pub fn id(&self) -> TopicPartition {
        TopicPartition::new(self.topic_id, self.partition)
    }
}

/// A sealed run held by a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedRun {
    /// The sealed segment.
    pub segment: SegmentId,
    /// Its entry in the directory of the segment's index file.
    pub run: IndexRun,
    /// Byte position of its entries in the index file.
    pub entries_pos: u64,
    /// Largest timestamp of this run and every earlier one of the partition.
    running_max: i64,
}

impl SealedRun {
    /// A run as the index cache knows it (the running maximum is the partition's business).
    pub(crate) fn new(segment: SegmentId, run: IndexRun, entries_pos: u64) -> SealedRun {
        SealedRun {
            segment,
            run,
            entries_pos,
            running_max: run.max_timestamp,
        }
    }
}

/// Where a partition's lookups get sealed runs' entries: [`SealedRuns`] (a shard's index files
/// through its cache), or any function (tests).
pub(crate) trait RunLoader {
    /// The chunk of `run`'s entries holding `offset`: at most [`CHUNK_ENTRIES`] entries, in
    /// offset order.
    fn load_run(&self, run: &SealedRun, offset: Offset) -> Result<Arc<[BatchEntry]>>;
}

impl<F: Fn(&SealedRun, Offset) -> Result<Arc<[BatchEntry]>>> RunLoader for F {
    fn load_run(&self, run: &SealedRun, offset: Offset) -> Result<Arc<[BatchEntry]>> {
        self(run, offset)
    }
}

/// Entries per chunk of a run loaded at once: a run of a busy partition holds hundreds of
/// thousands of entries (small frames at a paced rate), and loading whole runs for each read
/// would make the index cache thrash.
pub(crate) const CHUNK_ENTRIES: usize = 4096;

pub use crate::segment::{BatchEntry, TopicPartition};
pub(crate) use cache::SealedRuns;
pub(crate) use file::{INDEX_ENTRY_BYTES, IndexFrames, IndexSink, encode_index};
pub use file::{IndexDirectory, SegmentIndex};
pub(crate) use file_io::{read_chunk, run_chunk_starts, write_index_file, write_index_file_paced};
pub(crate) use partition::Limit;
pub use partition::Partition;
pub use published::{IndexLog, SegmentEntries, Undistributed};
