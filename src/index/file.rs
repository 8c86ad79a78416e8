//! The index file's bytes: encoding and decoding, no I/O.
//!
//! ```text
//! index file (version 2), little-endian:
//!   0  u32 magic "FGIX"   4 u32 version (2)   8 u64 segment id   16 u64 data_end (bytes of frames)
//!  24  u32 run count     28 u32 entry count  32 u32 generation (0 as written at the seal,
//!      one more at each rewrite of the segment: see `shard::rewrite`)
//!  36  u32 CRC-32C of bytes 0..36 and of the directory
//!  40  directory: one run per partition with batches in the segment, 48 bytes each:
//!        u32 topic_id, u32 partition, u64 first_offset, u64 last_offset, i64 max_timestamp,
//!        u32 first_entry, u32 entry_count, u32 CRC-32C of the run's entries, u32 bytes of the
//!        run's frames (0 in files written before it was recorded: readers then sum its
//!        entries)
//!  then the entries, run after run, each run's in offset order, 40 bytes each:
//!        u64 base_offset, u64 last_offset, i64 max_timestamp, u64 pos, u32 frame_bytes,
//!        u32 reserved
//! ```

use crate::segment::{Offset, SegmentId};
use std::collections::HashMap;
use std::path::Path;

use super::*;
use crate::error::{Error, Result};

pub(super) const INDEX_MAGIC: u32 = u32::from_le_bytes(*b"FGIX");
pub(super) const INDEX_VERSION: u32 = 2;
pub(super) const INDEX_HEADER_BYTES: usize = 40;
pub(super) const INDEX_RUN_BYTES: usize = 48;
pub(crate) const INDEX_ENTRY_BYTES: usize = 40;

/// An index file's content: the segment's frames, each with its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentIndex {
    /// The segment's id.
    pub segment: SegmentId,
    /// How many times the segment was rewritten.
    pub generation: u32,
    /// Bytes of frames in the segment.
    pub data_end: u64,
    /// Every frame, in file order.
    pub frames: Vec<(TopicPartition, BatchEntry)>,
}

/// An index file's header and directory: what recovery reads of a sealed segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDirectory {
    /// The segment's id.
    pub segment: SegmentId,
    /// How many times the segment was rewritten.
    pub generation: u32,
    /// Bytes of frames in the segment.
    pub data_end: u64,
    /// Entries in the file.
    pub entry_count: u32,
    /// One run per partition, in file order.
    pub runs: Vec<IndexRun>,
}

/// Stores `e` as an index file entry (40 bytes).
fn put_entry(out: &mut [u8; INDEX_ENTRY_BYTES], e: &BatchEntry) {
    out[0..8].copy_from_slice(&e.base_offset.0.to_le_bytes());
    out[8..16].copy_from_slice(&e.last_offset.0.to_le_bytes());
    out[16..24].copy_from_slice(&e.max_timestamp.to_le_bytes());
    out[24..32].copy_from_slice(&e.pos.to_le_bytes());
    out[32..40].copy_from_slice(&u64::from(e.frame_bytes).to_le_bytes());
}

/// The frames an index file is encoded from, in file order.
pub(crate) trait IndexFrames {
    /// How many there are.
    fn count(&self) -> usize;
    /// How many partitions they are of: each frame's group is below it.
    fn groups(&self) -> usize;
    /// Calls `f` with each frame's partition, as a dense id, in file order.
    fn each_group(&self, f: impl FnMut(u32));
    /// Group `g`'s (topic id, partition).
    fn name(&self, g: u32) -> TopicPartition;
    /// Frame `i`'s entry.
    fn entry(&self, i: usize) -> BatchEntry;
    /// A hint that frame `i` is wanted soon.
    fn prefetch(&self, _i: usize) {}
}

/// Where an index file's bytes go: `(position, bytes)`, each position written once.
pub(crate) type IndexSink<'a> = dyn FnMut(u64, &[u8]) -> Result<()> + 'a;

/// Bytes of entries handed to the sink at a time: small pieces keep the helper's stretches of
/// encoding short and its writes spread out, so the shard writer's flushes do not wait behind
/// them.
const ENCODE_PIECE_BYTES: usize = 128 << 10;

/// Encodes an index file of `frames`, grouped into runs by partition: runs in group order,
/// each run's entries in file order. Also returns each run's chunk directory (see
/// [`run_chunk_starts`]), so readers need not read it back. A counting sort, written straight
/// out: a comparison sort of millions of frames, and the copies around it, would cost the
/// helper seconds and hundreds of MB at every roll. The entries go to `sink` in pieces of
/// [`ENCODE_PIECE_BYTES`], then the header and directory at position 0, so the file is never a
/// whole buffer in memory. Each run is encoded in one stretch, its header from its group, not
/// by comparing every entry's partition with the run before.
pub(crate) fn encode_index(
    (segment, generation): (SegmentId, u32),
    data_end: u64,
    frames: &impl IndexFrames,
    sink: &mut IndexSink<'_>,
) -> Result<(IndexDirectory, Vec<Vec<Offset>>)> {
    /// Frames visited ahead of their prefetch.
    const PREFETCH_AHEAD: usize = 32;
    let (n, groups) = (frames.count(), frames.groups());
    // After the sort, `ends[g]` is where group g's frames end in `order`.
    let mut ends = vec![0u32; groups + 1];
    frames.each_group(|g| ends[g as usize + 1] += 1);
    let runs = ends.iter().skip(1).filter(|&&c| c > 0).count();
    for g in 0..groups {
        ends[g + 1] += ends[g];
    }
    let mut order = vec![0u32; n];
    let mut i = 0u32;
    frames.each_group(|g| {
        let at = &mut ends[g as usize];
        order[*at as usize] = i;
        *at += 1;
        i += 1;
    });
    let dir_end = INDEX_HEADER_BYTES + runs * INDEX_RUN_BYTES;
    let mut directory = IndexDirectory {
        segment,
        generation,
        data_end,
        entry_count: n as u32,
        runs: Vec::with_capacity(runs),
    };
    let mut starts: Vec<Vec<Offset>> = Vec::with_capacity(runs);
    let piece_entries = ENCODE_PIECE_BYTES / INDEX_ENTRY_BYTES;
    let mut piece = vec![0u8; piece_entries.min(n) * INDEX_ENTRY_BYTES];
    let mut len = 0;
    let mut piece_pos = dir_end as u64;
    let mut begin = 0;
    for (g, &end) in ends[..groups].iter().enumerate() {
        let end = end as usize;
        if begin == end {
            continue;
        }
        let TopicPartition {
            topic_id,
            partition,
        } = frames.name(g as u32);
        let first = frames.entry(order[begin] as usize);
        let mut run = IndexRun {
            topic_id,
            partition,
            first_offset: first.base_offset,
            last_offset: first.last_offset,
            max_timestamp: first.max_timestamp,
            first_entry: begin as u32,
            entry_count: (end - begin) as u32,
            crc: 0,
            bytes: 0,
        };
        let mut run_starts = Vec::with_capacity((end - begin).div_ceil(CHUNK_ENTRIES));
        // The run's CRC goes over whole stretches of it, not a call per entry: from
        // `crc_from` in the piece.
        let mut crc_from = len;
        for k in begin..end {
            if let Some(&ahead) = order.get(k + PREFETCH_AHEAD) {
                frames.prefetch(ahead as usize);
            }
            let e = frames.entry(order[k] as usize);
            if len == piece.len() {
                run.crc = crc32c::crc32c_append(run.crc, &piece[crc_from..len]);
                sink(piece_pos, &piece[..len])?;
                piece_pos += len as u64;
                (len, crc_from) = (0, 0);
            }
            if (k - begin).is_multiple_of(CHUNK_ENTRIES) {
                run_starts.push(e.base_offset);
            }
            run.last_offset = e.last_offset;
            run.bytes = run.bytes.saturating_add(e.frame_bytes);
            run.max_timestamp = run.max_timestamp.max(e.max_timestamp);
            let out = (&mut piece[len..len + INDEX_ENTRY_BYTES])
                .try_into()
                .expect("an entry's bytes");
            put_entry(out, &e);
            len += INDEX_ENTRY_BYTES;
        }
        run.crc = crc32c::crc32c_append(run.crc, &piece[crc_from..len]);
        directory.runs.push(run);
        starts.push(run_starts);
        begin = end;
    }
    if len > 0 {
        sink(piece_pos, &piece[..len])?;
    }
    let mut head = Vec::with_capacity(dir_end);
    head.extend_from_slice(&INDEX_MAGIC.to_le_bytes());
    head.extend_from_slice(&INDEX_VERSION.to_le_bytes());
    head.extend_from_slice(&segment.0.to_le_bytes());
    head.extend_from_slice(&data_end.to_le_bytes());
    head.extend_from_slice(&(directory.runs.len() as u32).to_le_bytes());
    head.extend_from_slice(&(n as u32).to_le_bytes());
    head.extend_from_slice(&generation.to_le_bytes());
    head.extend_from_slice(&0u32.to_le_bytes()); // the CRC, below
    for r in &directory.runs {
        head.extend_from_slice(&r.topic_id.to_le_bytes());
        head.extend_from_slice(&r.partition.to_le_bytes());
        head.extend_from_slice(&r.first_offset.0.to_le_bytes());
        head.extend_from_slice(&r.last_offset.0.to_le_bytes());
        head.extend_from_slice(&r.max_timestamp.to_le_bytes());
        head.extend_from_slice(&r.first_entry.to_le_bytes());
        head.extend_from_slice(&r.entry_count.to_le_bytes());
        head.extend_from_slice(&r.crc.to_le_bytes());
        head.extend_from_slice(&r.bytes.to_le_bytes());
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&head[..36]), &head[INDEX_HEADER_BYTES..]);
    head[36..40].copy_from_slice(&crc.to_le_bytes());
    sink(0, &head)?;
    Ok((directory, starts))
}

/// [`encode_index`] into memory: the file's bytes.
fn encode_index_bytes(
    segment: (SegmentId, u32),
    data_end: u64,
    frames: &impl IndexFrames,
) -> (Vec<u8>, IndexDirectory, Vec<Vec<Offset>>) {
    let mut bytes = Vec::new();
    let mut sink = |pos: u64, piece: &[u8]| {
        let end = pos as usize + piece.len();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[pos as usize..end].copy_from_slice(piece);
        Ok(())
    };
    let (directory, starts) =
        encode_index(segment, data_end, frames, &mut sink).expect("writing to memory cannot fail");
    (bytes, directory, starts)
}

/// A [`SegmentIndex`]'s frames with dense partition ids, in order of first appearance.
struct GroupedFrames<'a> {
    frames: &'a [(TopicPartition, BatchEntry)],
    /// Each frame's partition id.
    groups: Vec<u32>,
    /// Each id's (topic id, partition).
    names: Vec<TopicPartition>,
}

impl IndexFrames for GroupedFrames<'_> {
    fn count(&self) -> usize {
        self.frames.len()
    }
    fn groups(&self) -> usize {
        self.names.len()
    }
    fn each_group(&self, f: impl FnMut(u32)) {
        self.groups.iter().copied().for_each(f);
    }
    fn name(&self, g: u32) -> TopicPartition {
        self.names[g as usize]
    }
    fn entry(&self, i: usize) -> BatchEntry {
        self.frames[i].1
    }
}

pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl SegmentIndex {
    /// Encodes the index file; also returns its directory.
    pub fn encode(&self) -> (Vec<u8>, IndexDirectory) {
        let (bytes, directory, _) = encode_index_bytes(self.head(), self.data_end, &self.grouped());
        (bytes, directory)
    }

    /// Encodes the index file into `sink`; returns its directory.
    pub(crate) fn encode_to(&self, sink: &mut IndexSink<'_>) -> Result<IndexDirectory> {
        encode_index(self.head(), self.data_end, &self.grouped(), sink).map(|(d, _)| d)
    }

    /// Encodes the index file; also returns its directory and each run's chunk directory.
    pub(crate) fn encode_with_starts(&self) -> (Vec<u8>, IndexDirectory, Vec<Vec<Offset>>) {
        encode_index_bytes(self.head(), self.data_end, &self.grouped())
    }

    fn head(&self) -> (SegmentId, u32) {
        (self.segment, self.generation)
    }

    fn grouped(&self) -> GroupedFrames<'_> {
        let mut group_of: HashMap<TopicPartition, u32> = HashMap::new();
        let mut names = Vec::new();
        let groups: Vec<u32> = self
            .frames
            .iter()
            .map(|&(tp, _)| {
                *group_of.entry(tp).or_insert_with(|| {
                    names.push(tp);
                    names.len() as u32 - 1
                })
            })
            .collect();
        GroupedFrames {
            frames: &self.frames,
            groups,
            names,
        }
    }

    /// Decodes a whole index file, checking every checksum and that each run's entries are
    /// dense and agree with the directory; any damage is an error naming the file. The frames
    /// come back in file order.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<SegmentIndex> {
        let directory = IndexDirectory::decode(bytes, bytes.len() as u64, path)?;
        let mut frames = Vec::with_capacity(directory.entry_count as usize);
        for run in &directory.runs {
            let at = directory.entries_pos(run) as usize;
            let len = run.entry_count as usize * INDEX_ENTRY_BYTES;
            let entries = decode_run(&bytes[at..at + len], run, directory.segment, path, at)?;
            let tp = TopicPartition::new(run.topic_id, run.partition);
            frames.extend(entries.iter().map(|e| (tp, *e)));
        }
        frames.sort_by_key(|(_, e)| e.pos);
        Ok(SegmentIndex {
            segment: directory.segment,
            generation: directory.generation,
            data_end: directory.data_end,
            frames,
        })
    }
}

impl IndexDirectory {
    /// Decodes the header and directory at the start of `bytes`, from a file `file_len` long.
    pub(super) fn decode(bytes: &[u8], file_len: u64, path: &Path) -> Result<IndexDirectory> {
        let corrupt = |pos: usize, reason: &str| Err(Error::corrupt(path, pos as u64, reason));
        if bytes.len() < INDEX_HEADER_BYTES {
            return corrupt(0, "index file too short");
        }
        if u32_at(bytes, 0) != INDEX_MAGIC || u32_at(bytes, 4) != INDEX_VERSION {
            return corrupt(0, "not a version 2 index file");
        }
        let run_count = u32_at(bytes, 24) as usize;
        let entry_count = u32_at(bytes, 28);
        let dir_end = INDEX_HEADER_BYTES as u64 + run_count as u64 * INDEX_RUN_BYTES as u64;
        if dir_end > bytes.len() as u64 {
            return corrupt(24, "index run count exceeds the file");
        }
        let dir = &bytes[INDEX_HEADER_BYTES..dir_end as usize];
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[..36]), dir);
        if crc != u32_at(bytes, 36) {
            return corrupt(36, "index directory checksum mismatch");
        }
        if dir_end + u64::from(entry_count) * INDEX_ENTRY_BYTES as u64 != file_len {
            return corrupt(28, "index entry count does not match the file length");
        }
        let mut runs = Vec::with_capacity(run_count);
        let mut next_entry = 0u32;
        for i in 0..run_count {
            let r = &dir[i * INDEX_RUN_BYTES..(i + 1) * INDEX_RUN_BYTES];
            let run = IndexRun {
                topic_id: u32_at(r, 0),
                partition: u32_at(r, 4),
                first_offset: Offset(u64_at(r, 8)),
                last_offset: Offset(u64_at(r, 16)),
                max_timestamp: u64_at(r, 24) as i64,
                first_entry: u32_at(r, 32),
                entry_count: u32_at(r, 36),
                crc: u32_at(r, 40),
                bytes: u32_at(r, 44),
            };
            if run.first_entry != next_entry
                || run.entry_count == 0
                || run.first_offset > run.last_offset
            {
                return corrupt(INDEX_HEADER_BYTES + i * INDEX_RUN_BYTES, "bad index run");
            }
            next_entry = next_entry.saturating_add(run.entry_count);
            runs.push(run);
        }
        if next_entry != entry_count {
            return corrupt(28, "index runs do not cover the entries");
        }
        Ok(IndexDirectory {
            segment: SegmentId(u64_at(bytes, 8)),
            generation: u32_at(bytes, 32),
            data_end: u64_at(bytes, 16),
            entry_count,
            runs,
        })
    }

    /// Byte position of `run`'s entries in the file.
    pub fn entries_pos(&self, run: &IndexRun) -> u64 {
        (INDEX_HEADER_BYTES
            + self.runs.len() * INDEX_RUN_BYTES
            + run.first_entry as usize * INDEX_ENTRY_BYTES) as u64
    }
}

/// Checks and decodes one run's entries: its checksum, density, and agreement with the run.
pub(super) fn decode_run(
    bytes: &[u8],
    run: &IndexRun,
    segment: SegmentId,
    path: &Path,
    file_pos: usize,
) -> Result<Vec<BatchEntry>> {
    let corrupt = |reason: &str| Err(Error::corrupt(path, file_pos as u64, reason));
    if bytes.len() != run.entry_count as usize * INDEX_ENTRY_BYTES {
        return corrupt("index run length mismatch");
    }
    if crc32c::crc32c(bytes) != run.crc {
        return corrupt("index run checksum mismatch");
    }
    let mut entries = Vec::with_capacity(run.entry_count as usize);
    let mut next = run.first_offset;
    let mut max_timestamp = i64::MIN;
    for e in bytes.chunks_exact(INDEX_ENTRY_BYTES) {
        let entry = decode_entry(e, segment);
        if entry.base_offset != next || entry.last_offset < entry.base_offset {
            return corrupt("index run entries are not dense");
        }
        next = entry.last_offset.next();
        max_timestamp = max_timestamp.max(entry.max_timestamp);
        entries.push(entry);
    }
    if next != run.last_offset.next() || max_timestamp != run.max_timestamp {
        return corrupt("index run entries disagree with the directory");
    }
    Ok(entries)
}

/// Decodes one 40-byte index file entry of `segment`.
pub(super) fn decode_entry(e: &[u8], segment: SegmentId) -> BatchEntry {
    BatchEntry {
        base_offset: Offset(u64_at(e, 0)),
        last_offset: Offset(u64_at(e, 8)),
        max_timestamp: u64_at(e, 16) as i64,
        segment,
        pos: u64_at(e, 24),
        frame_bytes: u32_at(e, 32),
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn sample() -> SegmentIndex {
        let e = |base: u64, pos| BatchEntry {
            base_offset: Offset(base),
            last_offset: Offset(base + 9),
            max_timestamp: 1_700_000_000_000 + base as i64,
            segment: SegmentId(3),
            pos,
            frame_bytes: 500,
        };
        SegmentIndex {
            segment: SegmentId(3),
            generation: 0,
            data_end: 1000,
            frames: vec![
                (TopicPartition::new(1, 0), e(0, 0)),
                (TopicPartition::new(2, 5), e(10, 500)),
            ],
        }
    }

    #[test]
    fn index_file_round_trips() {
        let idx = sample();
        let (bytes, directory) = idx.encode();
        assert_eq!(SegmentIndex::decode(&bytes, Path::new("x")).unwrap(), idx);
        assert_eq!(directory.runs.len(), 2);
        assert_eq!(
            IndexDirectory::decode(&bytes, bytes.len() as u64, Path::new("x")).unwrap(),
            directory
        );
    }

    #[test]
    fn index_file_damage_is_detected() {
        let (bytes, _) = sample().encode();
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
}
