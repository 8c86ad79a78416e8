//! The bytes of a shard's log, and nothing else: no files, no threads. `format` lays out
//! frames (a header and one Kafka RecordBatch v2), `crc` checksums them, `scan` walks a
//! segment's bytes frame by frame and says how they end, `records` turns a stored frame back
//! into records.

pub(crate) mod batch;
pub mod compression;
pub mod crc;
pub mod format;
pub(crate) mod merge;
pub(crate) mod records;
pub(crate) mod scan;

pub use crate::layout::SegmentId;
pub use crate::offset::Offset;
pub use batch::{BatchView, RecordIter, RecordRef, decode_frame};

/// One stored batch of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchEntry {
    /// Offset of its first record.
    pub base_offset: Offset,
    /// Offset of its last record.
    pub last_offset: Offset,
    /// Its largest record timestamp.
    pub max_timestamp: i64,
    /// The segment holding it.
    pub segment: SegmentId,
    /// Byte position of its frame in the segment.
    pub pos: u64,
    /// Length of its frame.
    pub frame_bytes: u32,
}

impl BatchEntry {
    /// Where its frame starts.
    pub fn at(&self) -> LogPos {
        LogPos::new(self.segment, self.pos)
    }
}

/// A topic's partition as a frame names it: the topic's id (never reused) and the partition
/// number. Not a shard and a slot, which say where a partition lives in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic's id.
    pub topic_id: u32,
    /// The partition number.
    pub partition: u32,
}

impl TopicPartition {
    /// Partition `partition` of topic `topic_id`.
    pub const fn new(topic_id: u32, partition: u32) -> TopicPartition {
        TopicPartition {
            topic_id,
            partition,
        }
    }
}

/// A byte of a shard's log: a segment and a position in it. Ordered as the log is written:
/// by segment, then by position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogPos {
    /// The segment's id.
    pub segment: SegmentId,
    /// The byte position in the segment.
    pub pos: u64,
}

impl LogPos {
    /// Byte `pos` of segment `segment`.
    pub const fn new(segment: SegmentId, pos: u64) -> LogPos {
        LogPos { segment, pos }
    }
}
