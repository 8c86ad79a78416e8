//! Where a partition's batches are: offset and time → (segment, position).
//!
//! The index is derived data. Each partition keeps, in memory, one [`BatchEntry`] per batch of
//! the segments that are not sealed yet (appended when the batch becomes visible), and one
//! [`IndexRun`] per sealed segment it has batches in. A sealed segment `N.seg` has an index file
//! `N.idx` holding its entries grouped by partition; a run names where its partition's entries
//! are in that file, and readers load them on demand through a bounded [`IndexCache`]. So the
//! memory the index takes grows with the number of partitions and segments, not with the
//! number of batches stored (at 10,000 partitions of 100-byte records, one entry per record:
//! 32 bytes per record in the segment being written, 320 MB per 10 M records, before runs
//! replaced sealed entries).
//!
//! The index file is also the recovery checkpoint: open reads only its directory, so it skips
//! scanning sealed segments. A missing or damaged index file is rebuilt by scanning its segment.
//!
//! ```text
//! index file (version 2), little-endian:
//!   0  u32 magic "FGIX"   4 u32 version (2)   8 u64 segment id   16 u64 data_end (bytes of frames)
//!  24  u32 run count     28 u32 entry count  32 u32 reserved
//!  36  u32 CRC-32C of bytes 0..36 and of the directory
//!  40  directory: one run per partition with batches in the segment, 48 bytes each:
//!        u32 topic_id, u32 partition, u64 first_offset, u64 last_offset, i64 max_timestamp,
//!        u32 first_entry, u32 entry_count, u32 CRC-32C of the run's entries, u32 reserved
//!  then the entries, run after run, each run's in offset order, 40 bytes each:
//!        u64 base_offset, u64 last_offset, i64 max_timestamp, u64 pos, u32 frame_bytes,
//!        u32 reserved
//! ```

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::hash::BuildHasherDefault;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

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

/// A published entry as its segment's [`EntryChunks`] hold it: the partition's slot in its
/// shard and the entry, in 32 bytes instead of 56 (the segment is the chunks', the last offset
/// a delta, positions within a segment of at most 4 GiB). With 10,000 partitions every record
/// is its own batch: a 1 GiB segment holds about 6 M of these until its index file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotEntry {
    /// The partition's slot in its shard.
    pub slot: u32,
    last_delta: u32,
    base_offset: u64,
    max_timestamp: i64,
    pos: u32,
    frame_bytes: u32,
}

impl SlotEntry {
    /// Packs `e` (of a batch of at most 2^32 records at a position below 4 GiB).
    pub fn new(slot: u32, e: &BatchEntry) -> SlotEntry {
        SlotEntry {
            slot,
            last_delta: u32::try_from(e.last_offset - e.base_offset).expect("records per batch"),
            base_offset: e.base_offset,
            max_timestamp: e.max_timestamp,
            pos: u32::try_from(e.pos).expect("segments are at most 4 GiB"),
            frame_bytes: e.frame_bytes,
        }
    }

    /// The entry, in `segment`.
    pub fn entry(&self, segment: u64) -> BatchEntry {
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
    pub first_offset: u64,
    /// Offset of the last record of its last batch.
    pub last_offset: u64,
    /// The largest record timestamp in it.
    pub max_timestamp: i64,
    /// Index of its first entry among the file's entries.
    pub first_entry: u32,
    /// Number of entries (batches), at least 1.
    pub entry_count: u32,
    /// CRC-32C of its entries' bytes in the file.
    pub crc: u32,
}

/// A sealed run held by a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedRun {
    /// The sealed segment.
    pub segment: u64,
    /// Its entry in the directory of the segment's index file.
    pub run: IndexRun,
    /// Byte position of its entries in the index file.
    pub entries_pos: u64,
    /// Largest timestamp of this run and every earlier one of the partition.
    running_max: i64,
}

impl SealedRun {
    /// A run as the index cache knows it (the running maximum is the partition's business).
    pub(crate) fn new(segment: u64, run: IndexRun, entries_pos: u64) -> SealedRun {
        SealedRun {
            segment,
            run,
            entries_pos,
            running_max: run.max_timestamp,
        }
    }
}

/// Loads the chunk of a sealed run's entries holding an offset (from the index cache or the
/// index file): at most [`CHUNK_ENTRIES`] entries, in offset order.
pub(crate) type RunLoader<'a> = dyn Fn(&SealedRun, u64) -> Result<Arc<[BatchEntry]>> + 'a;

/// Entries per chunk of a run loaded at once: a run of a busy partition holds hundreds of
/// thousands of entries (small frames at a paced rate), and loading whole runs for each read
/// made a cache of 16 MiB thrash (peak scenario: the consumer fell from 80,000 to 20,000
/// records/s once it read sealed segments).
pub(crate) const CHUNK_ENTRIES: usize = 4096;

#[derive(Debug, Default)]
struct PartitionIndex {
    /// One run per sealed segment holding batches of the partition, in offset order.
    sealed: Vec<SealedRun>,
    /// Batches of segments whose index file is not written yet, in offset order, each with
    /// the running maximum timestamp up to it (over the sealed runs too). A ring, so a sealed
    /// segment's entries leave from the front without moving the newer ones.
    active: VecDeque<(BatchEntry, i64)>,
}

impl PartitionIndex {
    fn running_max(&self) -> Option<i64> {
        self.active
            .back()
            .map(|(_, m)| *m)
            .or(self.sealed.last().map(|r| r.running_max))
    }

    fn next_offset(&self) -> Option<u64> {
        self.active
            .back()
            .map(|(e, _)| e.last_offset + 1)
            .or(self.sealed.last().map(|r| r.run.last_offset + 1))
    }
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
    index: RwLock<PartitionIndex>,
}

/// Appends entries to `out` while they fit in `frame_bytes_max` bytes of frames (the first
/// always does) and lie below `visible`; returns false once one does not (the read is done).
fn take_entries<'a>(
    out: &mut Vec<BatchEntry>,
    entries: impl Iterator<Item = &'a BatchEntry>,
    frame_bytes_max: usize,
    visible: u64,
) -> bool {
    let mut bytes: usize = out.iter().map(|e| e.frame_bytes as usize).sum();
    for e in entries {
        if e.base_offset >= visible
            || (!out.is_empty() && bytes + e.frame_bytes as usize > frame_bytes_max)
        {
            return false;
        }
        bytes += e.frame_bytes as usize;
        out.push(*e);
    }
    true
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
            index: RwLock::new(PartitionIndex::default()),
        }
    }

    /// Appends an entry (the writer, when the batch becomes visible; recovery).
    pub(crate) fn push(&self, entry: BatchEntry) {
        let mut index = self.index.write().expect("index lock");
        if let Some(next) = index.next_offset() {
            assert_eq!(next, entry.base_offset, "index entries must be dense");
        }
        let running_max = index
            .running_max()
            .map_or(entry.max_timestamp, |m| m.max(entry.max_timestamp));
        index.active.push_back((entry, running_max));
    }

    /// Appends a sealed run (recovery, from an index file's directory).
    pub(crate) fn push_run(&self, segment: u64, run: IndexRun, entries_pos: u64) {
        let mut index = self.index.write().expect("index lock");
        if let Some(next) = index.next_offset() {
            assert_eq!(next, run.first_offset, "index runs must be dense");
        }
        assert!(
            index.active.is_empty(),
            "sealed runs come before active entries"
        );
        let running_max = index
            .running_max()
            .map_or(run.max_timestamp, |m| m.max(run.max_timestamp));
        index.sealed.push(SealedRun {
            segment,
            run,
            entries_pos,
            running_max,
        });
    }

    /// Replaces the entries of `segment`, whose index file is now written, by its run: the
    /// partition's oldest active entries that are of that segment (all, some or none of the
    /// run's: the rest may never have been pushed) go. Returns false (and changes nothing)
    /// unless the run continues the sealed runs and those entries are a prefix of it.
    pub(crate) fn seal_run(&self, segment: u64, run: IndexRun, entries_pos: u64) -> bool {
        let mut index = self.index.write().expect("index lock");
        // Found by bisection: counting the segment's entries one by one read all of them (the
        // peak scenario's 2 M) with the index lock held, and readers waited 10-20 ms at a roll.
        let n = match index.active.front() {
            Some((e, _)) if e.segment == segment => {
                index.active.partition_point(|(e, _)| e.segment <= segment)
            }
            _ => 0,
        };
        let continues = index
            .sealed
            .last()
            .is_none_or(|r| r.run.last_offset + 1 == run.first_offset);
        let prefix = n == 0
            || (index.active[0].0.base_offset == run.first_offset
                && index.active[n - 1].0.last_offset <= run.last_offset);
        let rest_follows = index
            .active
            .get(n)
            .is_none_or(|(e, _)| e.base_offset == run.last_offset + 1);
        if !(continues && prefix && rest_follows) {
            return false;
        }
        let running_max = index
            .sealed
            .last()
            .map_or(run.max_timestamp, |r| r.running_max.max(run.max_timestamp));
        index.active.drain(..n);
        index.sealed.push(SealedRun {
            segment,
            run,
            entries_pos,
            running_max,
        });
        true
    }

    /// Drops every batch of segments below `segment` (retention).
    pub(crate) fn forget_below(&self, segment: u64) {
        let mut index = self.index.write().expect("index lock");
        let sealed = index.sealed.partition_point(|r| r.segment < segment);
        index.sealed.drain(..sealed);
        let active = index.active.partition_point(|(e, _)| e.segment < segment);
        index.active.drain(..active);
    }

    /// The last offset stored in segments up to `segment`, if any.
    pub(crate) fn last_offset_through(&self, segment: u64) -> Option<u64> {
        let index = self.index.read().expect("index lock");
        let active = index.active.partition_point(|(e, _)| e.segment <= segment);
        if active > 0 {
            return Some(index.active[active - 1].0.last_offset);
        }
        let sealed = index.sealed.partition_point(|r| r.segment <= segment);
        (sealed > 0).then(|| index.sealed[sealed - 1].run.last_offset)
    }

    /// The earliest stored offset.
    pub fn offset_earliest(&self) -> u64 {
        let index = self.index.read().expect("index lock");
        index
            .sealed
            .first()
            .map(|r| r.run.first_offset)
            .or(index.active.front().map(|(e, _)| e.base_offset))
            .unwrap_or_else(|| self.offset_visible.load(Ordering::Acquire))
    }

    /// One past the last readable offset.
    pub fn offset_visible(&self) -> u64 {
        self.offset_visible.load(Ordering::Acquire)
    }

    /// Entries from the batch holding `offset` on, up to `frame_bytes_max` bytes of frames
    /// (at least one entry), limited to offsets below `visible`.
    pub(crate) fn entries_from(
        &self,
        offset: u64,
        frame_bytes_max: usize,
        visible: u64,
        load: &RunLoader<'_>,
    ) -> Result<Vec<BatchEntry>> {
        let mut out = Vec::new();
        let mut offset = offset;
        loop {
            let sealed = {
                let index = self.index.read().expect("index lock");
                let i = index.sealed.partition_point(|r| r.run.last_offset < offset);
                match index.sealed.get(i) {
                    Some(run) => *run,
                    None => {
                        let start = index
                            .active
                            .partition_point(|(e, _)| e.last_offset < offset);
                        let active = index.active.range(start..).map(|(e, _)| e);
                        take_entries(&mut out, active, frame_bytes_max, visible);
                        return Ok(out);
                    }
                }
            };
            let entries = load(&sealed, offset)?;
            let start = entries.partition_point(|e| e.last_offset < offset);
            if !take_entries(&mut out, entries[start..].iter(), frame_bytes_max, visible) {
                return Ok(out);
            }
            // The next chunk of this run, or the next run.
            offset = entries
                .last()
                .map_or(sealed.run.last_offset, |e| e.last_offset)
                + 1;
        }
    }

    /// The first batch whose records may have a timestamp at or after `timestamp`.
    pub(crate) fn entry_for_timestamp(
        &self,
        timestamp: i64,
        visible: u64,
        load: &RunLoader<'_>,
    ) -> Result<Option<BatchEntry>> {
        let sealed = {
            let index = self.index.read().expect("index lock");
            let i = index.sealed.partition_point(|r| r.running_max < timestamp);
            match index.sealed.get(i) {
                Some(run) => *run,
                None => {
                    let i = index.active.partition_point(|(_, m)| *m < timestamp);
                    return Ok(index
                        .active
                        .get(i)
                        .map(|(e, _)| *e)
                        .filter(|e| e.base_offset < visible));
                }
            }
        };
        // Every earlier run's timestamps are below `timestamp`, so the first batch of this run
        // reaching it is the answer.
        let mut offset = sealed.run.first_offset;
        while offset <= sealed.run.last_offset {
            let entries = load(&sealed, offset)?;
            if let Some(e) = entries.iter().find(|e| e.max_timestamp >= timestamp) {
                return Ok(Some(*e).filter(|e| e.base_offset < visible));
            }
            offset = entries
                .last()
                .map_or(sealed.run.last_offset, |e| e.last_offset)
                + 1;
        }
        Ok(None)
    }

    /// Batches held in memory (not yet replaced by a sealed run), for tests and metrics.
    pub fn entries_in_memory(&self) -> usize {
        self.index.read().expect("index lock").active.len()
    }
}

/// Chunks of sealed runs' entries recently loaded from index files, and each run's chunk
/// directory (the first offset of every chunk), each kind within its own byte budget.
///
/// Directories have a quarter of the budget to themselves: they are small, handed over at
/// each seal, and rebuilding one means reading the whole run back (2-26 ms a partition here,
/// all of a consumer's partitions at once). Sharing one budget, the chunks a catching-up
/// consumer streams through pushed out the directories of the segments ahead of it, and the
/// peak scenario's consumer, entering a segment sealed a minute earlier, spent 200 ms of `poll`
/// rebuilding eleven of them (that second 6.3% short of its rate).
///
/// Eviction within a kind is second chance: the oldest item goes first unless it was used
/// since it came in or since its last chance, when it goes to the back instead (oldest-first
/// alone evicted the directories of the runs being read, every 20-27 s).
#[derive(Debug)]
pub(crate) struct IndexCache {
    /// By kind: [`CHUNKS`], [`DIRECTORIES`].
    bytes_max: [usize; 2],
    bytes: [usize; 2],
    order: [VecDeque<(u64, u32, usize)>; 2],
    /// (segment, run's first entry, chunk) → entries and whether they were used since their
    /// last chance; chunk [`STARTS`] is the directory.
    items: HashMap<(u64, u32, usize), (CacheItem, bool), BuildHasherDefault<WordHasher>>,
}

const CHUNKS: usize = 0;
const DIRECTORIES: usize = 1;

/// What an item costs beside its entries: its key in the map and the queue, the map's value
/// and the shared allocation's counts. Counted for directories, most of which hold one or two
/// offsets (10,000 partitions: 10,000 directories a segment).
const ITEM_OVERHEAD_BYTES: usize = 80;

#[derive(Debug, Clone)]
enum CacheItem {
    Chunk(Arc<[BatchEntry]>),
    Starts(Arc<[u64]>),
}

impl CacheItem {
    fn bytes(&self) -> usize {
        match self {
            CacheItem::Chunk(c) => c.len() * size_of::<BatchEntry>(),
            CacheItem::Starts(s) => s.len() * 8 + ITEM_OVERHEAD_BYTES,
        }
    }

    fn kind(&self) -> usize {
        match self {
            CacheItem::Chunk(_) => CHUNKS,
            CacheItem::Starts(_) => DIRECTORIES,
        }
    }
}

const STARTS: usize = usize::MAX;

/// Hashes the index cache's keys (segment ids and positions the shard made, never input from
/// outside) with a multiply per word: SipHash made each insert of a roll's 10,000 chunk
/// directories cost 1,300 instructions (callgrind).
#[derive(Default)]
struct WordHasher(u64);

impl std::hash::Hasher for WordHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(26) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

impl IndexCache {
    /// A cache of `bytes_max` bytes: a quarter for chunk directories, the rest for chunks.
    pub fn new(bytes_max: usize) -> IndexCache {
        IndexCache::with_budgets(bytes_max - bytes_max / 4, bytes_max / 4)
    }

    fn with_budgets(chunks: usize, directories: usize) -> IndexCache {
        IndexCache {
            bytes_max: [chunks, directories],
            bytes: [0, 0],
            order: [VecDeque::new(), VecDeque::new()],
            items: HashMap::default(),
        }
    }

    /// Chunk `chunk` of `run`, if cached.
    pub fn chunk(&mut self, run: &SealedRun, chunk: usize) -> Option<Arc<[BatchEntry]>> {
        match self.used((run.segment, run.run.first_entry, chunk)) {
            Some(CacheItem::Chunk(c)) => Some(Arc::clone(c)),
            _ => None,
        }
    }

    /// The chunk directory of `run`, if cached.
    pub fn starts(&mut self, run: &SealedRun) -> Option<Arc<[u64]>> {
        match self.used((run.segment, run.run.first_entry, STARTS)) {
            Some(CacheItem::Starts(s)) => Some(Arc::clone(s)),
            _ => None,
        }
    }

    /// The item under `key`, marked used.
    fn used(&mut self, key: (u64, u32, usize)) -> Option<&CacheItem> {
        let (item, used) = self.items.get_mut(&key)?;
        *used = true;
        Some(item)
    }

    pub fn insert_chunk(&mut self, run: &SealedRun, chunk: usize, entries: Arc<[BatchEntry]>) {
        self.insert(
            (run.segment, run.run.first_entry, chunk),
            CacheItem::Chunk(entries),
        );
    }

    pub fn insert_starts(&mut self, run: &SealedRun, starts: Arc<[u64]>) {
        self.insert(
            (run.segment, run.run.first_entry, STARTS),
            CacheItem::Starts(starts),
        );
    }

    fn insert(&mut self, key: (u64, u32, usize), item: CacheItem) {
        let (size, kind) = (item.bytes(), item.kind());
        if size > self.bytes_max[kind] {
            return;
        }
        match self.items.entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => return,
            std::collections::hash_map::Entry::Vacant(v) => v.insert((item, false)),
        };
        self.order[kind].push_back(key);
        self.bytes[kind] += size;
        // Ends: each pass over the queue clears every mark it meets.
        while self.bytes[kind] > self.bytes_max[kind] {
            let old = self.order[kind]
                .pop_front()
                .expect("bytes are held by some item");
            let (_, used) = self.items.get_mut(&old).expect("ordered items are held");
            if std::mem::take(used) {
                self.order[kind].push_back(old);
                continue;
            }
            let (gone, _) = self.items.remove(&old).expect("ordered items are held");
            self.bytes[kind] -= gone.bytes();
        }
    }

    /// Forgets the runs of segments below `segment`.
    pub fn forget_below(&mut self, segment: u64) {
        for order in &mut self.order {
            order.retain(|k| k.0 >= segment);
        }
        let bytes = &mut self.bytes;
        self.items.retain(|k, (v, _)| {
            let keep = k.0 >= segment;
            if !keep {
                bytes[v.kind()] -= v.bytes();
            }
            keep
        });
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
    segments: VecDeque<SegmentLog>,
    pool: Arc<ChunkPool>,
}

/// Entries per chunk of a segment's published entries (256 KiB).
const LOG_CHUNK_ENTRIES: usize = 8192;

type LogChunk = Vec<SlotEntry>;

/// Chunks of published entries that no segment uses any more, kept for the next segments.
///
/// With 10,000 partitions every record is its own batch, so a 1 GiB segment publishes about
/// 5 M entries (280 MB). Held in one growing `Vec` and freed at each seal, they cost 444,000
/// page faults per 10 M records (the kernel zeroing fresh pages, plus the copies of each
/// doubling): `perf stat` counted 6.3 s of CPU against 2.8 s for one partition. Chunks that
/// never move, recycled from segment to segment, take the faults once.
#[derive(Debug, Default)]
struct ChunkPool {
    free: Mutex<Vec<LogChunk>>,
}

impl ChunkPool {
    fn take(&self) -> LogChunk {
        self.free
            .lock()
            .expect("chunk pool lock")
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(LOG_CHUNK_ENTRIES))
    }

    /// Takes back a dropped segment's chunks, keeping at most as many as it had: what the
    /// next segment will likely need, never more than one segment's worth idle.
    fn give_back(&self, chunks: &mut Vec<LogChunk>) {
        let mut free = self.free.lock().expect("chunk pool lock");
        let keep = chunks.len();
        free.truncate(keep);
        for mut chunk in chunks.drain(..) {
            if free.len() == keep {
                break;
            }
            chunk.clear();
            free.push(chunk);
        }
    }
}

/// A segment's published entries, in fixed-size chunks (appending never moves what is there),
/// whose memory goes back to the shard's pool when dropped.
#[derive(Debug)]
pub struct EntryChunks {
    segment: u64,
    chunks: Vec<LogChunk>,
    len: usize,
    pool: Arc<ChunkPool>,
}

impl EntryChunks {
    fn new(segment: u64, pool: Arc<ChunkPool>) -> EntryChunks {
        EntryChunks {
            segment,
            chunks: Vec::new(),
            len: 0,
            pool,
        }
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entry `i` (below `len()`).
    pub fn get(&self, i: usize) -> (u32, BatchEntry) {
        let e = &self.chunks[i / LOG_CHUNK_ENTRIES][i % LOG_CHUNK_ENTRIES];
        (e.slot, e.entry(self.segment))
    }

    /// Entries `range`, in order.
    pub fn iter(&self, range: Range<usize>) -> impl Iterator<Item = (u32, BatchEntry)> {
        self.packed(range).map(|e| (e.slot, e.entry(self.segment)))
    }

    /// Each entry's slot, in order.
    pub fn slots(&self) -> impl Iterator<Item = u32> {
        self.chunks.iter().flatten().map(|e| e.slot)
    }

    fn packed(&self, range: Range<usize>) -> impl Iterator<Item = &SlotEntry> {
        let first = range.start / LOG_CHUNK_ENTRIES;
        self.chunks
            .iter()
            .enumerate()
            .skip(first)
            .take_while(move |(c, _)| c * LOG_CHUNK_ENTRIES < range.end)
            .flat_map(move |(c, chunk)| {
                let base = c * LOG_CHUNK_ENTRIES;
                let from = range.start.saturating_sub(base);
                let to = (range.end - base).min(chunk.len());
                &chunk[from..to]
            })
    }

    fn extend(&mut self, mut entries: &[SlotEntry]) {
        while !entries.is_empty() {
            if self
                .chunks
                .last()
                .is_none_or(|c| c.len() == LOG_CHUNK_ENTRIES)
            {
                self.chunks.push(self.pool.take());
            }
            let chunk = self.chunks.last_mut().expect("pushed above");
            let n = entries.len().min(LOG_CHUNK_ENTRIES - chunk.len());
            chunk.extend_from_slice(&entries[..n]);
            self.len += n;
            entries = &entries[n..];
        }
    }

    /// Asks the CPU to bring entry `i` into its cache (a hint: it reads nothing). Encoding
    /// the index file visits the entries in partition order, each a cache miss in hundreds of
    /// megabytes: prefetched a few visits ahead, encoding a 10,000-partition segment took
    /// half the helper's CPU (620 ms -> 290 ms per 5 M entries, with the writes). Both cache
    /// lines an entry may span, 32 visits ahead: the helper's CPU per 10 M records at 10,000
    /// partitions 398-505 ms -> 316-425 ms (one line, 16 ahead).
    pub fn prefetch(&self, i: usize) {
        #[cfg(target_arch = "x86_64")]
        if let Some(entry) = self
            .chunks
            .get(i / LOG_CHUNK_ENTRIES)
            .and_then(|c| c.get(i % LOG_CHUNK_ENTRIES))
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            // SAFETY: a prefetch never faults and has no effect but on caches; the pointer
            // is to a live entry anyway.
            unsafe {
                let at = std::ptr::from_ref(entry).cast::<i8>();
                _mm_prefetch::<_MM_HINT_T0>(at);
                _mm_prefetch::<_MM_HINT_T0>(at.add(size_of::<SlotEntry>() - 1));
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = i;
    }

    #[cfg(test)]
    fn to_vec(&self) -> Vec<(u32, BatchEntry)> {
        self.iter(0..self.len).collect()
    }
}

impl Drop for EntryChunks {
    fn drop(&mut self) {
        self.pool.give_back(&mut self.chunks);
    }
}

/// Entries of one segment, shared with the helper thread once the segment is sealed.
pub type SegmentEntries = Arc<EntryChunks>;

#[derive(Debug)]
struct SegmentLog {
    segment: u64,
    entries: SegmentEntries,
    /// Entries before this index are distributed to their partitions.
    distributed: usize,
    sealed: bool,
}

/// Entries taken from the [`IndexLog`] to be distributed, oldest first: sealed segments' shared
/// (a segment's worth when nobody read for a while: no copy), the newest segment's copied (it
/// is still being appended to).
#[derive(Debug, Default)]
pub struct Undistributed {
    sealed: Vec<(SegmentEntries, Range<usize>)>,
    active: Vec<(u32, BatchEntry)>,
}

impl Undistributed {
    /// The entries, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (u32, BatchEntry)> {
        self.sealed
            .iter()
            .flat_map(|(entries, range)| entries.iter(range.clone()))
            .chain(self.active.iter().copied())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.sealed.is_empty() && self.active.is_empty()
    }

    /// Lets go of the entries (keeping the copy buffer's memory).
    pub fn clear(&mut self) {
        self.sealed.clear();
        self.active.clear();
    }
}

impl IndexLog {
    fn segment_mut(&mut self, segment: u64) -> &mut SegmentLog {
        if self.segments.back().is_none_or(|s| s.segment != segment) {
            self.segments.push_back(SegmentLog {
                segment,
                entries: Arc::new(EntryChunks::new(segment, Arc::clone(&self.pool))),
                distributed: 0,
                sealed: false,
            });
        }
        self.segments.back_mut().expect("pushed above")
    }

    /// Appends entries published by the writer (all of one commit, so of one segment).
    pub fn publish(&mut self, segment: u64, entries: &[SlotEntry]) {
        if entries.is_empty() {
            return;
        }
        let log = self.segment_mut(segment);
        assert!(!log.sealed, "publishing into a sealed segment");
        Arc::get_mut(&mut log.entries)
            .expect("only sealed segments' entries are shared")
            .extend(entries);
    }

    /// Appends entries that are already in their partitions (recovery).
    pub fn publish_distributed(&mut self, segment: u64, entries: &[SlotEntry]) {
        let log = self.segment_mut(segment);
        let chunks =
            Arc::get_mut(&mut log.entries).expect("only sealed segments' entries are shared");
        chunks.extend(entries);
        log.distributed = chunks.len();
    }

    /// Takes the entries not yet distributed into `out` and marks them distributed.
    pub fn take_undistributed(&mut self, out: &mut Undistributed) {
        self.take_undistributed_through(u64::MAX, out);
    }

    /// Takes the entries not yet distributed of segments up to `segment` into `out` and marks
    /// them distributed.
    pub fn take_undistributed_through(&mut self, segment: u64, out: &mut Undistributed) {
        for log in self
            .segments
            .iter_mut()
            .take_while(|s| s.segment <= segment)
        {
            let range = log.distributed..log.entries.len();
            if range.is_empty() {
                continue;
            }
            if log.sealed {
                out.sealed.push((Arc::clone(&log.entries), range.clone()));
            } else {
                out.active.extend(log.entries.iter(range.clone()));
            }
            log.distributed = range.end;
        }
        self.forget_done();
    }

    /// Marks `segment` sealed and returns its entries (shared, without copying).
    pub fn seal(&mut self, segment: u64) -> SegmentEntries {
        let Some(log) = self.segments.iter_mut().find(|s| s.segment == segment) else {
            // Nothing was published into it.
            return Arc::new(EntryChunks::new(segment, Arc::clone(&self.pool)));
        };
        log.sealed = true;
        let entries = Arc::clone(&log.entries);
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
const INDEX_VERSION: u32 = 2;
const INDEX_HEADER_BYTES: usize = 40;
const INDEX_RUN_BYTES: usize = 48;
pub(crate) const INDEX_ENTRY_BYTES: usize = 40;

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

/// An index file's header and directory: what recovery reads of a sealed segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDirectory {
    /// The segment's id.
    pub segment: u64,
    /// Bytes of frames in the segment.
    pub data_end: u64,
    /// Entries in the file.
    pub entry_count: u32,
    /// One run per partition, in file order.
    pub runs: Vec<IndexRun>,
}

/// Stores `e` as an index file entry (40 bytes).
fn put_entry(out: &mut [u8; INDEX_ENTRY_BYTES], e: &BatchEntry) {
    out[0..8].copy_from_slice(&e.base_offset.to_le_bytes());
    out[8..16].copy_from_slice(&e.last_offset.to_le_bytes());
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
    fn name(&self, g: u32) -> (u32, u32);
    /// Frame `i`'s entry.
    fn entry(&self, i: usize) -> BatchEntry;
    /// A hint that frame `i` is wanted soon.
    fn prefetch(&self, _i: usize) {}
}

/// Where an index file's bytes go: `(position, bytes)`, each position written once.
pub(crate) type IndexSink<'a> = dyn FnMut(u64, &[u8]) -> Result<()> + 'a;

/// Bytes of entries handed to the sink at a time: encoding 1 MiB (26,000 entries) took the
/// helper 1-2 ms at a stretch, and while the pieces came every 6-8 ms the shard writer's
/// flushes came up to 1.3 ms apart instead of ~0.1 ms (peak scenario, 8 partitions).
const ENCODE_PIECE_BYTES: usize = 128 << 10;

/// Encodes an index file of `frames`, grouped into runs by partition: runs in group order,
/// each run's entries in file order. Also returns each run's chunk directory (see
/// [`run_chunk_starts`]), so readers need not read it back. A counting sort, written straight
/// out (a comparison sort of 5 M frames of 10,000 partitions, and the copies around it, took
/// the helper thread over a second and 700 MB at every roll). The entries go to `sink` in
/// pieces, then the header and directory at position 0: the file's 200 MB of a 1 GiB
/// segment of 10,000 partitions were a fresh buffer at each roll (50,000 page faults).
/// (Pieces are [`ENCODE_PIECE_BYTES`].) Each run is encoded in one stretch, its header from
/// its group: 244 -> 130-144 instructions per entry (callgrind, 10,000 partitions) against a
/// loop that compared every entry's partition with the run before and grew the piece field
/// by field.
pub(crate) fn encode_index(
    segment: u64,
    data_end: u64,
    frames: &impl IndexFrames,
    sink: &mut IndexSink<'_>,
) -> Result<(IndexDirectory, Vec<Vec<u64>>)> {
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
        data_end,
        entry_count: n as u32,
        runs: Vec::with_capacity(runs),
    };
    let mut starts: Vec<Vec<u64>> = Vec::with_capacity(runs);
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
        let (topic_id, partition) = frames.name(g as u32);
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
        };
        let mut run_starts = Vec::with_capacity((end - begin).div_ceil(CHUNK_ENTRIES));
        // The run's CRC goes over whole stretches of it (one call per entry took 50 ms per
        // 5 M entries): from `crc_from` in the piece.
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
    head.extend_from_slice(&segment.to_le_bytes());
    head.extend_from_slice(&data_end.to_le_bytes());
    head.extend_from_slice(&(directory.runs.len() as u32).to_le_bytes());
    head.extend_from_slice(&(n as u32).to_le_bytes());
    head.extend_from_slice(&0u32.to_le_bytes());
    head.extend_from_slice(&0u32.to_le_bytes()); // the CRC, below
    for r in &directory.runs {
        head.extend_from_slice(&r.topic_id.to_le_bytes());
        head.extend_from_slice(&r.partition.to_le_bytes());
        head.extend_from_slice(&r.first_offset.to_le_bytes());
        head.extend_from_slice(&r.last_offset.to_le_bytes());
        head.extend_from_slice(&r.max_timestamp.to_le_bytes());
        head.extend_from_slice(&r.first_entry.to_le_bytes());
        head.extend_from_slice(&r.entry_count.to_le_bytes());
        head.extend_from_slice(&r.crc.to_le_bytes());
        head.extend_from_slice(&0u32.to_le_bytes());
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&head[..36]), &head[INDEX_HEADER_BYTES..]);
    head[36..40].copy_from_slice(&crc.to_le_bytes());
    sink(0, &head)?;
    Ok((directory, starts))
}

/// [`encode_index`] into memory: the file's bytes.
fn encode_index_bytes(
    segment: u64,
    data_end: u64,
    frames: &impl IndexFrames,
) -> (Vec<u8>, IndexDirectory, Vec<Vec<u64>>) {
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
    frames: &'a [(u32, u32, BatchEntry)],
    /// Each frame's partition id.
    groups: Vec<u32>,
    /// Each id's (topic id, partition).
    names: Vec<(u32, u32)>,
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
    fn name(&self, g: u32) -> (u32, u32) {
        self.names[g as usize]
    }
    fn entry(&self, i: usize) -> BatchEntry {
        self.frames[i].2
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl SegmentIndex {
    /// Encodes the index file; also returns its directory.
    pub fn encode(&self) -> (Vec<u8>, IndexDirectory) {
        let (bytes, directory, _) =
            encode_index_bytes(self.segment, self.data_end, &self.grouped());
        (bytes, directory)
    }

    /// Encodes the index file into `sink`; returns its directory.
    pub(crate) fn encode_to(&self, sink: &mut IndexSink<'_>) -> Result<IndexDirectory> {
        encode_index(self.segment, self.data_end, &self.grouped(), sink).map(|(d, _)| d)
    }

    /// Encodes the index file; also returns its directory and each run's chunk directory.
    #[cfg(test)]
    fn encode_with_starts(&self) -> (Vec<u8>, IndexDirectory, Vec<Vec<u64>>) {
        encode_index_bytes(self.segment, self.data_end, &self.grouped())
    }

    fn grouped(&self) -> GroupedFrames<'_> {
        let mut group_of: HashMap<(u32, u32), u32> = HashMap::new();
        let mut names = Vec::new();
        let groups: Vec<u32> = self
            .frames
            .iter()
            .map(|&(t, p, _)| {
                *group_of.entry((t, p)).or_insert_with(|| {
                    names.push((t, p));
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
            frames.extend(entries.iter().map(|e| (run.topic_id, run.partition, *e)));
        }
        frames.sort_by_key(|(_, _, e)| e.pos);
        Ok(SegmentIndex {
            segment: directory.segment,
            data_end: directory.data_end,
            frames,
        })
    }
}

impl IndexDirectory {
    /// Reads and checks the header and directory of the index file at `path`.
    pub fn read(path: &Path) -> Result<IndexDirectory> {
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        let mut header = [0u8; INDEX_HEADER_BYTES];
        if len < INDEX_HEADER_BYTES as u64 {
            return Err(Error::corrupt(path, 0, "index file too short"));
        }
        file.read_exact_at(&mut header, 0)
            .map_err(|e| Error::io("read", path, e))?;
        // The run count is checked against the file length before it sizes a buffer.
        let runs = u64::from(u32_at(&header, 24));
        let dir_end = INDEX_HEADER_BYTES as u64 + runs * INDEX_RUN_BYTES as u64;
        if dir_end > len {
            return Err(Error::corrupt(path, 24, "index run count exceeds the file"));
        }
        let mut bytes = vec![0u8; dir_end as usize];
        file.read_exact_at(&mut bytes, 0)
            .map_err(|e| Error::io("read", path, e))?;
        IndexDirectory::decode(&bytes, len, path)
    }

    /// Decodes the header and directory at the start of `bytes`, from a file `file_len` long.
    fn decode(bytes: &[u8], file_len: u64, path: &Path) -> Result<IndexDirectory> {
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
                first_offset: u64_at(r, 8),
                last_offset: u64_at(r, 16),
                max_timestamp: u64_at(r, 24) as i64,
                first_entry: u32_at(r, 32),
                entry_count: u32_at(r, 36),
                crc: u32_at(r, 40),
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
            segment: u64_at(bytes, 8),
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
fn decode_run(
    bytes: &[u8],
    run: &IndexRun,
    segment: u64,
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
        next = entry.last_offset + 1;
        max_timestamp = max_timestamp.max(entry.max_timestamp);
        entries.push(entry);
    }
    if next != run.last_offset + 1 || max_timestamp != run.max_timestamp {
        return corrupt("index run entries disagree with the directory");
    }
    Ok(entries)
}

/// Checks a sealed run's entries in its index file (checksum, density) and returns the base
/// offset of each chunk's first entry: the run's chunk directory.
pub(crate) fn run_chunk_starts(path: &Path, run: &SealedRun) -> Result<Vec<u64>> {
    let entries = read_run(path, run)?;
    Ok(entries
        .iter()
        .step_by(CHUNK_ENTRIES)
        .map(|e| e.base_offset)
        .collect())
}

/// The chunk of a sealed run's entries holding `offset` (or its last chunk), given the run's
/// chunk directory: its index and entries. The run's checksum covers all of it and was checked
/// when `starts` was made; the chunk is checked for density and agreement with `starts` and
/// the run.
pub(crate) fn read_chunk(
    path: &Path,
    run: &SealedRun,
    starts: &[u64],
    offset: u64,
) -> Result<(usize, Vec<BatchEntry>)> {
    let chunk = starts.partition_point(|&s| s <= offset).saturating_sub(1);
    let first = chunk * CHUNK_ENTRIES;
    let count = (run.run.entry_count as usize)
        .saturating_sub(first)
        .min(CHUNK_ENTRIES);
    let at = run.entries_pos + (first * INDEX_ENTRY_BYTES) as u64;
    let corrupt = |reason: &str| Err(Error::corrupt(path, at, reason));
    if count == 0 {
        return corrupt("index run chunk past the run's entries");
    }
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut bytes = vec![0u8; count * INDEX_ENTRY_BYTES];
    file.read_exact_at(&mut bytes, at)
        .map_err(|e| Error::io("read", path, e))?;
    let entries: Vec<BatchEntry> = bytes
        .chunks_exact(INDEX_ENTRY_BYTES)
        .map(|e| decode_entry(e, run.segment))
        .collect();
    let dense = entries
        .windows(2)
        .all(|w| w[1].base_offset == w[0].last_offset + 1 && w[0].base_offset <= w[0].last_offset);
    let last = entries.last().expect("count > 0").last_offset;
    let end_ok = match starts.get(chunk + 1) {
        Some(&next) => next == last + 1,
        None => last == run.run.last_offset,
    };
    if !dense || entries[0].base_offset != starts[chunk] || !end_ok {
        return corrupt("index run chunk entries are not dense or disagree with the run");
    }
    Ok((chunk, entries))
}

fn decode_entry(e: &[u8], segment: u64) -> BatchEntry {
    BatchEntry {
        base_offset: u64_at(e, 0),
        last_offset: u64_at(e, 8),
        max_timestamp: u64_at(e, 16) as i64,
        segment,
        pos: u64_at(e, 24),
        frame_bytes: u32_at(e, 32),
    }
}

/// Reads a sealed run's entries from its segment's index file.
pub(crate) fn read_run(path: &Path, run: &SealedRun) -> Result<Vec<BatchEntry>> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    // The entry count was checked against the file's length when its directory was read.
    let mut bytes = vec![0u8; run.run.entry_count as usize * INDEX_ENTRY_BYTES];
    file.read_exact_at(&mut bytes, run.entries_pos)
        .map_err(|e| Error::io("read", path, e))?;
    decode_run(
        &bytes,
        &run.run,
        run.segment,
        path,
        run.entries_pos as usize,
    )
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
        let packed = |slot, e: BatchEntry| [SlotEntry::new(slot, &e)];
        log.publish_distributed(0, &packed(0, e(0, 0)));
        log.publish(0, &packed(1, e(0, 1)));
        log.publish(1, &packed(0, e(1, 2)));
        let mut out = Undistributed::default();
        let taken = |log: &mut IndexLog, out: &mut Undistributed| {
            out.clear();
            log.take_undistributed(out);
            out.iter().collect::<Vec<_>>()
        };
        assert_eq!(taken(&mut log, &mut out), vec![(1, e(0, 1)), (0, e(1, 2))]);
        assert!(
            taken(&mut log, &mut out).is_empty(),
            "each entry is distributed once"
        );
        log.publish(1, &packed(1, e(1, 3)));
        // Sealing segment 0 returns its entries and forgets them (all distributed).
        assert_eq!(log.seal(0).to_vec(), vec![(0, e(0, 0)), (1, e(0, 1))]);
        assert_eq!(log.held(), 2);
        // Segment 1's undistributed entry survives its sealing until a reader takes it.
        assert_eq!(log.seal(1).to_vec(), vec![(0, e(1, 2)), (1, e(1, 3))]);
        assert_eq!(log.held(), 2);
        assert_eq!(taken(&mut log, &mut out), vec![(1, e(1, 3))]);
        assert_eq!(log.held(), 0);
    }

    #[test]
    fn index_log_chunks_hold_entries_in_order_and_are_reused() {
        let e = |base| BatchEntry {
            base_offset: base,
            last_offset: base,
            max_timestamp: 0,
            segment: 0,
            pos: base,
            frame_bytes: 1,
        };
        let n = 3 * LOG_CHUNK_ENTRIES + 5;
        let all: Vec<(u32, BatchEntry)> = (0..n as u64).map(|i| (i as u32, e(i))).collect();
        let packed: Vec<SlotEntry> = all.iter().map(|(s, e)| SlotEntry::new(*s, e)).collect();
        let mut log = IndexLog::default();
        // Commits of uneven sizes, crossing chunk boundaries.
        for part in packed.chunks(1000) {
            log.publish(0, part);
        }
        let mut out = Undistributed::default();
        log.take_undistributed(&mut out);
        assert!(out.iter().eq(all.iter().copied()));
        let sealed = log.seal(0);
        assert_eq!(sealed.len(), n);
        assert_eq!(sealed.get(LOG_CHUNK_ENTRIES), all[LOG_CHUNK_ENTRIES]);
        let mid = LOG_CHUNK_ENTRIES - 3..2 * LOG_CHUNK_ENTRIES + 7;
        assert!(sealed.iter(mid.clone()).eq(all[mid].iter().copied()));
        drop(out);
        drop(sealed);
        assert_eq!(
            log.pool.free.lock().unwrap().len(),
            4,
            "the chunks went back"
        );
        log.publish(0, &packed[..10]);
        assert_eq!(
            log.pool.free.lock().unwrap().len(),
            3,
            "and are taken again"
        );
    }

    fn no_runs(_: &SealedRun, _: u64) -> Result<Arc<[BatchEntry]>> {
        panic!("no sealed runs in this test")
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
            p.entries_from(o, max, 40, &no_runs)
                .unwrap()
                .iter()
                .map(|e| e.base_offset)
                .collect::<Vec<_>>()
        };
        assert_eq!(from(0, 1), vec![0]);
        assert_eq!(from(15, 250), vec![10, 20]);
        assert_eq!(from(39, 10_000), vec![30]);
        assert_eq!(from(40, 10_000), Vec::<u64>::new());
        let at = |ts| {
            p.entry_for_timestamp(ts, 40, &no_runs)
                .unwrap()
                .map(|e| e.base_offset)
        };
        assert_eq!(at(250), Some(10));
        assert_eq!(at(50), Some(0));
        assert_eq!(at(401), None);
        assert_eq!(p.offset_earliest(), 0);
    }

    /// Two partitions interleaved over segments 0 and 1; segment 0's index file is written and
    /// its entries replaced by runs, read back through the file.
    #[test]
    fn sealed_runs_replace_entries_and_read_back_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.idx");
        let parts = [Partition::new(1, 0, 0, 0), Partition::new(1, 1, 0, 1)];
        let mut frames = Vec::new();
        for i in 0..20u64 {
            let (segment, p) = (i / 10, (i % 2) as usize);
            let base = i / 2 * 3;
            let e = BatchEntry {
                base_offset: base,
                last_offset: base + 2,
                max_timestamp: 1000 + i as i64 * if p == 0 { 1 } else { -1 },
                segment,
                pos: (i % 10) * 64,
                frame_bytes: 64,
            };
            parts[p].push(e);
            if segment == 0 {
                frames.push((1, p as u32, e));
            }
        }
        for p in &parts {
            p.offset_visible.store(30, Ordering::Release);
        }
        let index = SegmentIndex {
            segment: 0,
            data_end: 640,
            frames,
        };
        let (bytes, directory) = index.encode();
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(IndexDirectory::read(&path).unwrap(), directory);
        for run in &directory.runs {
            let p = &parts[run.partition as usize];
            assert!(p.seal_run(0, *run, directory.entries_pos(run)));
            assert!(
                !p.seal_run(0, *run, directory.entries_pos(run)),
                "sealing twice changes nothing"
            );
            assert_eq!(p.entries_in_memory(), 5);
        }
        let loads = std::cell::Cell::new(0);
        let load = |run: &SealedRun, offset: u64| -> Result<Arc<[BatchEntry]>> {
            loads.set(loads.get() + 1);
            let starts = run_chunk_starts(&path, run)?;
            Ok(read_chunk(&path, run, &starts, offset)?.1.into())
        };
        for (pi, p) in parts.iter().enumerate() {
            // Offsets 0..15 are in the sealed segment, 15..30 in memory.
            let got: Vec<_> = p.entries_from(4, 4 * 64, 30, &load).unwrap();
            assert_eq!(got.len(), 4, "the rest of segment 0");
            assert_eq!(got[0].base_offset, 3);
            assert_eq!(got[0].pos, 128 + 64 * pi as u64);
            assert_eq!(got[0].segment, 0);
            let got = p.entries_from(15, 10_000, 30, &load).unwrap();
            assert_eq!((got.len(), got[0].segment), (5, 1));
            let got = p.entries_from(0, 10_000, 30, &load).unwrap();
            let bases: Vec<u64> = got.iter().map(|e| e.base_offset).collect();
            assert_eq!(
                bases,
                (0..10).map(|i| i * 3).collect::<Vec<_>>(),
                "across segments"
            );
            assert_eq!(p.offset_earliest(), 0);
        }
        // Partition 0's timestamps rise, partition 1's fall: the running maximum finds the
        // first batch that may hold a later record.
        let at = |p: &Partition, ts| {
            p.entry_for_timestamp(ts, 30, &load)
                .unwrap()
                .map(|e| e.base_offset)
        };
        assert_eq!(at(&parts[0], 1004), Some(6));
        assert_eq!(at(&parts[0], 1018), Some(27));
        assert_eq!(at(&parts[0], 1019), None);
        assert_eq!(at(&parts[1], 999), Some(0));
        assert_eq!(at(&parts[1], 1000), None);
        assert!(loads.get() > 0);
        // Damage in a run's entries is caught when they are loaded.
        let mut damaged = bytes.clone();
        let last = bytes.len() - 10;
        damaged[last] ^= 1;
        std::fs::write(&path, &damaged).unwrap();
        assert!(matches!(
            parts[1].entries_from(0, 10_000, 30, &load),
            Err(Error::Corrupt { .. })
        ));
        // Retention forgets whole segments.
        parts[0].forget_below(1);
        assert_eq!(parts[0].offset_earliest(), 15);
    }

    /// Segments sealed in turn while newer batches keep arriving: each seal takes exactly its
    /// segment's batches from the front of the in-memory ones (which wrap around their ring),
    /// the rest stay in order, and a seal that does not match leaves everything in place.
    #[test]
    fn sealing_in_turn_keeps_newer_entries_in_order() {
        let p = Partition::new(1, 0, 0, 0);
        let entry = |i: u64| BatchEntry {
            base_offset: i,
            last_offset: i,
            max_timestamp: i as i64,
            segment: i / 100,
            pos: i % 100 * 64,
            frame_bytes: 64,
        };
        let run_of = |segment: u64| IndexRun {
            topic_id: 1,
            partition: 0,
            first_offset: segment * 100,
            last_offset: segment * 100 + 99,
            max_timestamp: segment as i64 * 100 + 99,
            first_entry: 0,
            entry_count: 100,
            crc: 0,
        };
        for i in 0..150 {
            p.push(entry(i));
        }
        for segment in 0..8u64 {
            // Batches of the next segment but one arrive before this one is sealed.
            for i in (segment + 1) * 100 + 50..(segment + 2) * 100 + 50 {
                p.push(entry(i));
            }
            let wrong = IndexRun {
                last_offset: segment * 100 + 98,
                ..run_of(segment)
            };
            assert!(!p.seal_run(segment, wrong, 0), "a run ending early");
            assert!(
                !p.seal_run(segment + 1, run_of(segment + 1), 0),
                "not the oldest"
            );
            assert_eq!(p.entries_in_memory(), 250);
            assert!(p.seal_run(segment, run_of(segment), 0));
            assert_eq!(p.entries_in_memory(), 150);
            let index = p.index.read().unwrap();
            let bases: Vec<u64> = index.active.iter().map(|(e, _)| e.base_offset).collect();
            let first = (segment + 1) * 100;
            assert_eq!(bases, (first..first + 150).collect::<Vec<_>>());
            assert_eq!(index.sealed.len() as u64, segment + 1);
        }
    }

    /// A run of 10,000 batches is read a chunk at a time: reads cross chunk boundaries, a time
    /// lookup finds a batch in a later chunk, and a damaged chunk is caught.
    #[test]
    fn long_runs_are_read_in_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.idx");
        let p = Partition::new(1, 0, 0, 0);
        let n = 10_000u64;
        let frames: Vec<(u32, u32, BatchEntry)> = (0..n)
            .map(|i| {
                let e = BatchEntry {
                    base_offset: 2 * i,
                    last_offset: 2 * i + 1,
                    max_timestamp: i as i64,
                    segment: 0,
                    pos: i * 10,
                    frame_bytes: 10,
                };
                p.push(e);
                (1, 0, e)
            })
            .collect();
        p.offset_visible.store(2 * n, Ordering::Release);
        let (bytes, directory, starts) = SegmentIndex {
            segment: 0,
            data_end: n * 10,
            frames,
        }
        .encode_with_starts();
        std::fs::write(&path, &bytes).unwrap();
        let run = directory.runs[0];
        let sealed_run = SealedRun {
            segment: 0,
            run,
            entries_pos: directory.entries_pos(&run),
            running_max: 0,
        };
        assert_eq!(
            starts[0],
            run_chunk_starts(&path, &sealed_run).unwrap(),
            "the writer's chunk directory is the one read back"
        );
        assert!(p.seal_run(0, run, directory.entries_pos(&run)));
        let mut cache = IndexCache::new(1 << 20);
        let load = |sealed: &SealedRun, offset: u64| -> Result<Arc<[BatchEntry]>> {
            let starts = run_chunk_starts(&path, sealed)?;
            let (chunk, entries) = read_chunk(&path, sealed, &starts, offset)?;
            assert_eq!(chunk, (offset / 2) as usize / CHUNK_ENTRIES);
            Ok(entries.into())
        };
        // Across the first chunk boundary: entries 4090.. 4105.
        let got = p.entries_from(2 * 4090, 16 * 10, 2 * n, &load).unwrap();
        let bases: Vec<u64> = got.iter().map(|e| e.base_offset / 2).collect();
        assert_eq!(bases, (4090..4106).collect::<Vec<_>>());
        let last = p.entries_from(2 * n - 1, 1000, 2 * n, &load).unwrap();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].base_offset, 2 * n - 2);
        let at = p.entry_for_timestamp(9000, 2 * n, &load).unwrap().unwrap();
        assert_eq!(at.base_offset, 18_000);
        // Chunks and directories in the cache.
        let sealed = SealedRun {
            segment: 0,
            run,
            entries_pos: directory.entries_pos(&run),
            running_max: 0,
        };
        cache.insert_starts(&sealed, run_chunk_starts(&path, &sealed).unwrap().into());
        assert_eq!(cache.starts(&sealed).unwrap().len(), 3);
        cache.insert_chunk(&sealed, 1, load(&sealed, 2 * 5000).unwrap());
        assert_eq!(cache.chunk(&sealed, 1).unwrap()[0].base_offset, 2 * 4096);
        assert!(cache.chunk(&sealed, 2).is_none());
        // A flipped byte in the second chunk: caught by the run's checksum when the directory
        // is made, and by the chunk's own checks when it is read with a stale directory.
        let starts = run_chunk_starts(&path, &sealed).unwrap();
        let mut damaged = bytes.clone();
        let at = directory.entries_pos(&run) as usize + (4096 + 7) * INDEX_ENTRY_BYTES;
        damaged[at] ^= 0x40;
        std::fs::write(&path, &damaged).unwrap();
        assert!(run_chunk_starts(&path, &sealed).is_err());
        assert!(matches!(
            read_chunk(&path, &sealed, &starts, 2 * 5000),
            Err(Error::Corrupt { .. })
        ));
    }

    /// A sealed run of `segment` for the cache tests (only its key matters there).
    fn cache_run(segment: u64) -> SealedRun {
        SealedRun {
            segment,
            run: IndexRun {
                topic_id: 1,
                partition: 0,
                first_offset: 0,
                last_offset: 0,
                max_timestamp: 0,
                first_entry: 0,
                entry_count: 1,
                crc: 0,
            },
            entries_pos: 0,
            running_max: 0,
        }
    }

    /// `n` entries, for the cache tests (only their number matters there).
    fn cache_entries(n: usize) -> Arc<[BatchEntry]> {
        vec![
            BatchEntry {
                base_offset: 0,
                last_offset: 0,
                max_timestamp: 0,
                segment: 0,
                pos: 0,
                frame_bytes: 0,
            };
            n
        ]
        .into()
    }

    #[test]
    fn index_cache_evicts_the_oldest_item() {
        let (run, entries) = (cache_run, cache_entries);
        let one = size_of::<BatchEntry>();
        let mut cache = IndexCache::with_budgets(3 * one, 0);
        cache.insert_chunk(&run(0), 0, entries(1));
        cache.insert_chunk(&run(0), 1, entries(2));
        cache.insert_chunk(&run(1), 0, entries(1));
        assert!(cache.chunk(&run(0), 0).is_none(), "oldest evicted");
        assert_eq!(cache.chunk(&run(0), 1).unwrap().len(), 2);
        // Used since it came in, (0, 1) gets a second chance: (1, 0) goes instead.
        cache.insert_chunk(&run(2), 0, entries(1));
        assert!(cache.chunk(&run(1), 0).is_none(), "oldest unused evicted");
        assert!(cache.chunk(&run(0), 1).is_some());
        assert!(cache.chunk(&run(2), 0).is_some());
        cache.insert_chunk(&run(3), 0, entries(4));
        assert!(cache.chunk(&run(3), 0).is_none(), "larger than the cache");
        cache.forget_below(1);
        assert!(cache.chunk(&run(0), 1).is_none());
        assert!(cache.chunk(&run(2), 0).is_some());
        assert_eq!(cache.bytes, [one, 0]);
    }

    /// Chunks streaming through the cache leave the chunk directories alone (a consumer
    /// reaches the segments ahead of it with their directories at hand); among directories,
    /// the oldest unused goes first.
    #[test]
    fn index_cache_keeps_chunk_directories_apart_from_chunks() {
        let (run, chunk) = (cache_run, cache_entries(4));
        let directory = 2 * 8 + ITEM_OVERHEAD_BYTES;
        let mut cache = IndexCache::with_budgets(16 * size_of::<BatchEntry>(), 4 * directory);
        for segment in 0..3 {
            cache.insert_starts(&run(segment), vec![0, 4096].into());
        }
        for c in 0..100 {
            assert!(
                cache.starts(&run(0)).is_some(),
                "directory in use, chunk {c}"
            );
            cache.insert_chunk(&run(0), c, Arc::clone(&chunk));
        }
        assert!(cache.chunk(&run(0), 99).is_some());
        assert!(cache.chunk(&run(0), 90).is_none(), "chunks evicted");
        assert!(cache.bytes[CHUNKS] <= 16 * size_of::<BatchEntry>());
        assert!(
            cache.starts(&run(1)).is_some(),
            "no directory evicted by chunks"
        );
        for segment in 3..6 {
            cache.insert_starts(&run(segment), vec![0, 4096].into());
        }
        // Six directories in room for four: 0 and 1 were used, so 2 and 3 go.
        assert!(cache.starts(&run(2)).is_none());
        assert!(cache.starts(&run(3)).is_none());
        for segment in [0, 1, 4, 5] {
            assert!(cache.starts(&run(segment)).is_some(), "directory {segment}");
        }
        assert_eq!(cache.bytes[DIRECTORIES], 4 * directory);
        cache.forget_below(5);
        assert_eq!(cache.bytes, [0, directory]);
    }
}
