//! Sealed runs' entries loaded from index files, within a byte budget.

use crate::segment::{Offset, SegmentId};
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use super::*;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::layout::index_path;

/// Chunks of sealed runs' entries recently loaded from index files, and each run's chunk
/// directory (the first offset of every chunk), each kind within its own byte budget.
///
/// Directories have a quarter of the budget to themselves: they are small, handed over at
/// each seal, and rebuilding one means reading the whole run back (milliseconds a partition,
/// all of a consumer's partitions at once). Sharing one budget, the chunks a catching-up
/// consumer streams through would push out the directories of the segments ahead of it, and
/// a paced consumer entering a segment would stall rebuilding them (docs/TUNING.md,
/// `index_cache_bytes`).
///
/// Eviction within a kind is second chance: the oldest item goes first unless it was used
/// since it came in or since its last chance, when it goes to the back instead (oldest-first
/// alone evicted the directories of the runs being read, every 20-27 s).
#[derive(Debug)]
pub(crate) struct IndexCache {
    /// By kind: [`CHUNKS`], [`DIRECTORIES`].
    bytes_max: [usize; 2],
    bytes: [usize; 2],
    order: [VecDeque<(SegmentId, u64, usize)>; 2],
    /// (segment, run's first entry and checksum, chunk) → entries and whether they were used since their
    /// last chance; chunk [`STARTS`] is the directory.
    items: HashMap<(SegmentId, u64, usize), (CacheItem, bool), BuildHasherDefault<WordHasher>>,
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
    Starts(Arc<[Offset]>),
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

/// A run within its segment: its first entry, and the checksum of its entries, which differs
/// between a segment's layouts (a rewrite moves every position, `shard::rewrite`), so a run of
/// a rewritten segment never finds the old layout's entries cached.
fn run_key(run: &SealedRun) -> u64 {
    u64::from(run.run.crc) << 32 | u64::from(run.run.first_entry)
}

/// Hashes the index cache's keys (segment ids and positions the shard made, never input from
/// outside) with a multiply per word: SipHash's resistance to chosen keys buys nothing here, and
/// a roll inserts a directory per partition.
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
        match self.used((run.segment, run_key(run), chunk)) {
            Some(CacheItem::Chunk(c)) => Some(Arc::clone(c)),
            _ => None,
        }
    }

    /// The chunk directory of `run`, if cached.
    pub fn starts(&mut self, run: &SealedRun) -> Option<Arc<[Offset]>> {
        match self.used((run.segment, run_key(run), STARTS)) {
            Some(CacheItem::Starts(s)) => Some(Arc::clone(s)),
            _ => None,
        }
    }

    /// The item under `key`, marked used.
    fn used(&mut self, key: (SegmentId, u64, usize)) -> Option<&CacheItem> {
        let (item, used) = self.items.get_mut(&key)?;
        *used = true;
        Some(item)
    }

    pub fn insert_chunk(&mut self, run: &SealedRun, chunk: usize, entries: Arc<[BatchEntry]>) {
        self.insert(
            (run.segment, run_key(run), chunk),
            CacheItem::Chunk(entries),
        );
    }

    pub fn insert_starts(&mut self, run: &SealedRun, starts: Arc<[Offset]>) {
        self.insert(
            (run.segment, run_key(run), STARTS),
            CacheItem::Starts(starts),
        );
    }

    fn insert(&mut self, key: (SegmentId, u64, usize), item: CacheItem) {
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
    pub fn forget_below(&mut self, segment: SegmentId) {
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

/// A shard's sealed runs: their entries loaded on demand from the shard's index files, through
/// a bounded [`IndexCache`]. The first load of a run checks all its entries and keeps its
/// chunk directory; later loads read one chunk.
#[derive(Debug)]
pub(crate) struct SealedRuns {
    /// The shard's folder, where the index files are.
    dir: PathBuf,
    cache: Mutex<IndexCache>,
}

impl SealedRuns {
    /// Runs of the index files in `dir`, cached within `cache_bytes`.
    pub fn new(dir: &Path, cache_bytes: usize) -> SealedRuns {
        SealedRuns {
            dir: dir.to_owned(),
            cache: Mutex::new(IndexCache::new(cache_bytes)),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, IndexCache> {
        self.cache.lock().expect("index cache lock")
    }

    /// Hands over a run's chunk directory, known when its index file was written.
    pub fn insert_starts(&self, run: &SealedRun, starts: Arc<[Offset]>) {
        self.cache().insert_starts(run, starts);
    }

    /// Forgets the runs of segments below `segment` (deleted by retention).
    pub fn forget_below(&self, segment: SegmentId) {
        self.cache().forget_below(segment);
    }
}

impl RunLoader for SealedRuns {
    fn load_run(&self, run: &SealedRun, offset: Offset) -> Result<Arc<[BatchEntry]>> {
        let path = index_path(&self.dir, run.segment);
        let cached = self.cache().starts(run);
        let starts = match cached {
            Some(s) => s,
            None => {
                let s: Arc<[Offset]> = run_chunk_starts(&path, run)?.into();
                self.cache().insert_starts(run, Arc::clone(&s));
                s
            }
        };
        let chunk = starts.partition_point(|&s| s <= offset).saturating_sub(1);
        if let Some(entries) = self.cache().chunk(run, chunk) {
            return Ok(entries);
        }
        let (chunk, entries) = read_chunk(&path, run, &starts, offset)?;
        let entries: Arc<[BatchEntry]> = entries.into();
        self.cache().insert_chunk(run, chunk, Arc::clone(&entries));
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {

    use std::sync::Arc;

    use super::*;

    /// A sealed run of `segment` for the cache tests (only its key matters there).
    fn cache_run(segment: SegmentId) -> SealedRun {
        SealedRun {
            segment,
            run: IndexRun {
                topic_id: 1,
                partition: 0,
                first_offset: Offset(0),
                last_offset: Offset(0),
                max_timestamp: 0,
                first_entry: 0,
                entry_count: 1,
                crc: 0,
                bytes: 0,
            },
            entries_pos: 0,
            running_max: 0,
        }
    }

    /// `n` entries, for the cache tests (only their number matters there).
    fn cache_entries(n: usize) -> Arc<[BatchEntry]> {
        vec![
            BatchEntry {
                base_offset: Offset(0),
                last_offset: Offset(0),
                max_timestamp: 0,
                segment: SegmentId(0),
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
        cache.insert_chunk(&run(SegmentId(0)), 0, entries(1));
        cache.insert_chunk(&run(SegmentId(0)), 1, entries(2));
        cache.insert_chunk(&run(SegmentId(1)), 0, entries(1));
        assert!(
            cache.chunk(&run(SegmentId(0)), 0).is_none(),
            "oldest evicted"
        );
        assert_eq!(cache.chunk(&run(SegmentId(0)), 1).unwrap().len(), 2);
        // Used since it came in, (0, 1) gets a second chance: (1, 0) goes instead.
        cache.insert_chunk(&run(SegmentId(2)), 0, entries(1));
        assert!(
            cache.chunk(&run(SegmentId(1)), 0).is_none(),
            "oldest unused evicted"
        );
        assert!(cache.chunk(&run(SegmentId(0)), 1).is_some());
        assert!(cache.chunk(&run(SegmentId(2)), 0).is_some());
        cache.insert_chunk(&run(SegmentId(3)), 0, entries(4));
        assert!(
            cache.chunk(&run(SegmentId(3)), 0).is_none(),
            "larger than the cache"
        );
        cache.forget_below(SegmentId(1));
        assert!(cache.chunk(&run(SegmentId(0)), 1).is_none());
        assert!(cache.chunk(&run(SegmentId(2)), 0).is_some());
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
            cache.insert_starts(
                &run(SegmentId(segment)),
                vec![Offset(0), Offset(4096)].into(),
            );
        }
        for c in 0..100 {
            assert!(
                cache.starts(&run(SegmentId(0))).is_some(),
                "directory in use, chunk {c}"
            );
            cache.insert_chunk(&run(SegmentId(0)), c, Arc::clone(&chunk));
        }
        assert!(cache.chunk(&run(SegmentId(0)), 99).is_some());
        assert!(
            cache.chunk(&run(SegmentId(0)), 90).is_none(),
            "chunks evicted"
        );
        assert!(cache.bytes[CHUNKS] <= 16 * size_of::<BatchEntry>());
        assert!(
            cache.starts(&run(SegmentId(1))).is_some(),
            "no directory evicted by chunks"
        );
        for segment in 3..6 {
            cache.insert_starts(
                &run(SegmentId(segment)),
                vec![Offset(0), Offset(4096)].into(),
            );
        }
        // Six directories in room for four: 0 and 1 were used, so 2 and 3 go.
        assert!(cache.starts(&run(SegmentId(2))).is_none());
        assert!(cache.starts(&run(SegmentId(3))).is_none());
        for segment in [0, 1, 4, 5] {
            assert!(
                cache.starts(&run(SegmentId(segment))).is_some(),
                "directory {segment}"
            );
        }
        assert_eq!(cache.bytes[DIRECTORIES], 4 * directory);
        cache.forget_below(SegmentId(5));
        assert_eq!(cache.bytes, [0, directory]);
    }
}
