//! Where a partition's batches are: offset and time → (segment, position).
//!
//! The index is derived data. In memory, each partition keeps one [`BatchEntry`] per stored
//! batch, appended by its shard writer when the batch becomes visible and searched by readers.
//! On disk, a sealed segment `N.seg` gets `N.idx` with the entries of every frame in it; it is
//! the recovery checkpoint that lets open skip scanning sealed segments. A missing or damaged
//! `.idx` is rebuilt by scanning its segment.
//!
//! ```text
//! index file, little-endian:
//!   0  u32  magic "FGIX"      4  u32 version (1)      8  u64 segment id
//!  16  u64  data_end (bytes of frames in the segment) 24  u32 entry count   28 u32 reserved
//!  32  entries, 48 bytes each:
//!        u32 topic_id, u32 partition, u64 base_offset, u64 last_offset, i64 max_timestamp,
//!        u64 pos, u32 frame_bytes, u32 reserved
//!  end u32  CRC-32C of everything before it
//! ```

use std::path::Path;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// One stored batch of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchEntry {
    /// Offset of its first record.
    pub base_offset: u64,
    /// Offset of its last record.
    pub last_offset: u64,
    /// Its largest record timestamp.
    pub max_timestamp: i64,
    /// The segment holding it.
    pub segment: u64,
    /// Byte position of its frame in the segment.
    pub pos: u64,
    /// Length of its frame.
    pub frame_bytes: u32,
}

/// A partition's shared state: written by its shard writer, read by anyone.
#[derive(Debug)]
pub struct Partition {
    /// The topic's id.
    pub topic_id: u32,
    /// The partition number.
    pub partition: u32,
    /// The shard that owns it.
    pub shard: u32,
    /// Its slot in the shard's partition table.
    pub slot: u32,
    /// The offset the next record will get. Only the shard writer (or recovery before it
    /// starts) changes it.
    pub(crate) offset_next: AtomicU64,
    /// One past the last acknowledged record: readers see offsets below it.
    pub(crate) offset_visible: AtomicU64,
    /// The batches, in offset order, each with the running maximum timestamp up to it.
    entries: RwLock<Vec<(BatchEntry, i64)>>,
}

impl Partition {
    /// An empty partition.
    pub fn new(topic_id: u32, partition: u32, shard: u32, slot: u32) -> Partition {
        Partition {
            topic_id,
            partition,
            shard,
            slot,
            offset_next: AtomicU64::new(0),
            offset_visible: AtomicU64::new(0),
            entries: RwLock::new(Vec::new()),
        }
    }

    /// Appends an entry (the writer, when the batch becomes visible; recovery).
    pub(crate) fn push(&self, entry: BatchEntry) {
        let mut entries = self.entries.write().expect("index lock");
        if let Some((last, _)) = entries.last() {
            assert_eq!(
                last.last_offset + 1,
                entry.base_offset,
                "index entries must be dense"
            );
        }
        let running_max = entries
            .last()
            .map_or(entry.max_timestamp, |(_, m)| (*m).max(entry.max_timestamp));
        entries.push((entry, running_max));
    }

    /// The earliest stored offset.
    pub fn offset_earliest(&self) -> u64 {
        let entries = self.entries.read().expect("index lock");
        entries
            .first()
            .map_or(self.offset_visible.load(Ordering::Acquire), |(e, _)| {
                e.base_offset
            })
    }

    /// One past the last readable offset.
    pub fn offset_visible(&self) -> u64 {
        self.offset_visible.load(Ordering::Acquire)
    }

    /// Entries from the batch holding `offset` on, up to `frame_bytes_max` bytes of frames
    /// (at least one entry), limited to offsets below `visible`.
    pub fn entries_from(
        &self,
        offset: u64,
        frame_bytes_max: usize,
        visible: u64,
    ) -> Vec<BatchEntry> {
        let entries = self.entries.read().expect("index lock");
        let start = entries.partition_point(|(e, _)| e.last_offset < offset);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for (e, _) in &entries[start..] {
            if e.base_offset >= visible
                || (!out.is_empty() && bytes + e.frame_bytes as usize > frame_bytes_max)
            {
                break;
            }
            bytes += e.frame_bytes as usize;
            out.push(*e);
        }
        out
    }

    /// The first batch whose records may have a timestamp at or after `timestamp`.
    pub fn entry_for_timestamp(&self, timestamp: i64, visible: u64) -> Option<BatchEntry> {
        let entries = self.entries.read().expect("index lock");
        let i = entries.partition_point(|(_, running_max)| *running_max < timestamp);
        entries
            .get(i)
            .map(|(e, _)| *e)
            .filter(|e| e.base_offset < visible)
    }
}

/// The index entries a shard's writer has published, in commit order, before they reach their
/// partitions.
///
/// The writer appends each commit's entries here under one short lock: one hot, contiguous
/// append per commit instead of touching every partition's index (cold cache lines, measured as
/// the writer's largest cost with 10,000 partitions). Readers move new entries into their
/// partitions (`ShardShared::catch_up`) before they look a partition up. Entries stay here until
/// they are distributed and their segment is sealed (its index file is written from them).
#[derive(Debug, Default)]
pub struct IndexLog {
    /// Per segment, oldest first.
    segments: std::collections::VecDeque<SegmentLog>,
}

/// Entries of one segment, shared with the helper thread once the segment is sealed.
pub type SegmentEntries = std::sync::Arc<Vec<(u32, BatchEntry)>>;

#[derive(Debug)]
struct SegmentLog {
    segment: u64,
    entries: SegmentEntries,
    /// Entries before this index are distributed to their partitions.
    distributed: usize,
    sealed: bool,
}

impl IndexLog {
    fn segment_mut(&mut self, segment: u64) -> &mut SegmentLog {
        if self.segments.back().is_none_or(|s| s.segment != segment) {
            self.segments.push_back(SegmentLog {
                segment,
                entries: SegmentEntries::default(),
                distributed: 0,
                sealed: false,
            });
        }
        self.segments.back_mut().expect("pushed above")
    }

    /// Appends entries published by the writer (all of one commit, so of one segment).
    pub fn publish(&mut self, entries: &[(u32, BatchEntry)]) {
        let Some((_, first)) = entries.first() else {
            return;
        };
        let log = self.segment_mut(first.segment);
        assert!(!log.sealed, "publishing into a sealed segment");
        std::sync::Arc::make_mut(&mut log.entries).extend_from_slice(entries);
    }

    /// Appends entries that are already in their partitions (recovery).
    pub fn publish_distributed(
        &mut self,
        segment: u64,
        entries: impl Iterator<Item = (u32, BatchEntry)>,
    ) {
        let log = self.segment_mut(segment);
        std::sync::Arc::make_mut(&mut log.entries).extend(entries);
        log.distributed = log.entries.len();
    }

    /// Takes a copy of the entries not yet distributed and marks them distributed.
    pub fn take_undistributed(&mut self, out: &mut Vec<(u32, BatchEntry)>) {
        for log in &mut self.segments {
            out.extend_from_slice(&log.entries[log.distributed..]);
            log.distributed = log.entries.len();
        }
        self.forget_done();
    }

    /// Marks `segment` sealed and returns its entries (shared, without copying).
    pub fn seal(&mut self, segment: u64) -> SegmentEntries {
        let Some(log) = self.segments.iter_mut().find(|s| s.segment == segment) else {
            return SegmentEntries::default(); // nothing was published into it
        };
        log.sealed = true;
        let entries = std::sync::Arc::clone(&log.entries);
        self.forget_done();
        entries
    }

    /// Drops sealed segments whose entries all reached their partitions.
    fn forget_done(&mut self) {
        while self
            .segments
            .front()
            .is_some_and(|s| s.sealed && s.distributed == s.entries.len())
        {
            self.segments.pop_front();
        }
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.segments.iter().map(|s| s.entries.len()).sum()
    }
}

const INDEX_MAGIC: u32 = u32::from_le_bytes(*b"FGIX");
const INDEX_VERSION: u32 = 1;
const INDEX_HEADER_BYTES: usize = 32;
const INDEX_ENTRY_BYTES: usize = 48;

/// An index file's content: the segment's frames as (topic id, partition, entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentIndex {
    /// The segment's id.
    pub segment: u64,
    /// Bytes of frames in the segment.
    pub data_end: u64,
    /// Every frame, in file order.
    pub frames: Vec<(u32, u32, BatchEntry)>,
}

impl SegmentIndex {
    /// Encodes the index file.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(INDEX_HEADER_BYTES + self.frames.len() * INDEX_ENTRY_BYTES + 4);
        out.extend_from_slice(&INDEX_MAGIC.to_le_bytes());
        out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
        out.extend_from_slice(&self.segment.to_le_bytes());
        out.extend_from_slice(&self.data_end.to_le_bytes());
        out.extend_from_slice(&(self.frames.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        for (topic_id, partition, e) in &self.frames {
            out.extend_from_slice(&topic_id.to_le_bytes());
            out.extend_from_slice(&partition.to_le_bytes());
            out.extend_from_slice(&e.base_offset.to_le_bytes());
            out.extend_from_slice(&e.last_offset.to_le_bytes());
            out.extend_from_slice(&e.max_timestamp.to_le_bytes());
            out.extend_from_slice(&e.pos.to_le_bytes());
            out.extend_from_slice(&e.frame_bytes.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes an index file; any damage is an error naming the file.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<SegmentIndex> {
        let corrupt = |pos: usize, reason: &str| Err(Error::corrupt(path, pos as u64, reason));
        if bytes.len() < INDEX_HEADER_BYTES + 4 {
            return corrupt(0, "index file too short");
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().unwrap()) {
            return corrupt(body.len(), "index file checksum mismatch");
        }
        let u32_at = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().unwrap());
        if u32_at(0) != INDEX_MAGIC || u32_at(4) != INDEX_VERSION {
            return corrupt(0, "not a version 1 index file");
        }
        let count = u32_at(24) as usize;
        if body.len() != INDEX_HEADER_BYTES + count * INDEX_ENTRY_BYTES {
            return corrupt(24, "index entry count does not match the file length");
        }
        let mut frames = Vec::with_capacity(count);
        for i in 0..count {
            let at = INDEX_HEADER_BYTES + i * INDEX_ENTRY_BYTES;
            frames.push((
                u32_at(at),
                u32_at(at + 4),
                BatchEntry {
                    base_offset: u64_at(at + 8),
                    last_offset: u64_at(at + 16),
                    max_timestamp: u64_at(at + 24) as i64,
                    segment: u64_at(8),
                    pos: u64_at(at + 32),
                    frame_bytes: u32_at(at + 40),
                },
            ));
        }
        Ok(SegmentIndex {
            segment: u64_at(8),
            data_end: u64_at(16),
            frames,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentIndex {
        let e = |base, pos| BatchEntry {
            base_offset: base,
            last_offset: base + 9,
            max_timestamp: 1_700_000_000_000 + base as i64,
            segment: 3,
            pos,
            frame_bytes: 500,
        };
        SegmentIndex {
            segment: 3,
            data_end: 1000,
            frames: vec![(1, 0, e(0, 0)), (2, 5, e(10, 500))],
        }
    }

    #[test]
    fn index_file_round_trips() {
        let idx = sample();
        assert_eq!(
            SegmentIndex::decode(&idx.encode(), Path::new("x")).unwrap(),
            idx
        );
    }

    #[test]
    fn index_file_damage_is_detected() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            assert!(
                SegmentIndex::decode(&damaged, Path::new("x")).is_err(),
                "byte {i}"
            );
        }
        for len in 0..bytes.len() {
            assert!(
                SegmentIndex::decode(&bytes[..len], Path::new("x")).is_err(),
                "len {len}"
            );
        }
    }

    #[test]
    fn index_log_keeps_entries_until_distributed_and_sealed() {
        let e = |segment, base| BatchEntry {
            base_offset: base,
            last_offset: base,
            max_timestamp: 0,
            segment,
            pos: base * 100,
            frame_bytes: 100,
        };
        let mut log = IndexLog::default();
        log.publish_distributed(0, [(0, e(0, 0))].into_iter());
        log.publish(&[(1, e(0, 1))]);
        log.publish(&[(0, e(1, 2))]);
        let mut out = Vec::new();
        log.take_undistributed(&mut out);
        assert_eq!(out, vec![(1, e(0, 1)), (0, e(1, 2))]);
        out.clear();
        log.take_undistributed(&mut out);
        assert!(out.is_empty(), "each entry is distributed once");
        log.publish(&[(1, e(1, 3))]);
        // Sealing segment 0 returns its entries and forgets them (all distributed).
        assert_eq!(*log.seal(0), vec![(0, e(0, 0)), (1, e(0, 1))]);
        assert_eq!(log.held(), 2);
        // Segment 1's undistributed entry survives its sealing until a reader takes it.
        assert_eq!(*log.seal(1), vec![(0, e(1, 2)), (1, e(1, 3))]);
        assert_eq!(log.held(), 2);
        log.take_undistributed(&mut out);
        assert_eq!(out, vec![(1, e(1, 3))]);
        assert_eq!(log.held(), 0);
    }

    #[test]
    fn lookups_by_offset_and_time() {
        let p = Partition::new(1, 0, 0, 0);
        for (i, ts) in [100, 300, 200, 400].into_iter().enumerate() {
            let base = i as u64 * 10;
            p.push(BatchEntry {
                base_offset: base,
                last_offset: base + 9,
                max_timestamp: ts,
                segment: 0,
                pos: i as u64 * 100,
                frame_bytes: 100,
            });
        }
        p.offset_visible.store(40, Ordering::Release);
        let from = |o, max| {
            p.entries_from(o, max, 40)
                .iter()
                .map(|e| e.base_offset)
                .collect::<Vec<_>>()
        };
        assert_eq!(from(0, 1), vec![0]);
        assert_eq!(from(15, 250), vec![10, 20]);
        assert_eq!(from(39, 10_000), vec![30]);
        assert_eq!(from(40, 10_000), Vec::<u64>::new());
        assert_eq!(p.entry_for_timestamp(250, 40).unwrap().base_offset, 10);
        assert_eq!(p.entry_for_timestamp(50, 40).unwrap().base_offset, 0);
        assert_eq!(p.entry_for_timestamp(401, 40), None);
        assert_eq!(p.offset_earliest(), 0);
    }
}
