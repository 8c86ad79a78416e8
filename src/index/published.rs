//! Index entries the writer published, in commit order, on their way to partitions.

use crate::segment::SegmentId;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use super::*;

/// The index entries a shard's writer has published, in commit order, before they reach their
/// partitions.
///
/// The writer appends each commit's entries here under one short lock: one hot, contiguous
/// append per commit instead of touching every partition's index (a cold cache line each, with
/// many partitions). Readers move new entries into their
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
/// With 10,000 partitions every record is its own batch, so a 1 GiB segment publishes millions
/// of entries. Held in one growing `Vec` and freed at each seal, they would cost a page fault
/// per 4 KiB at every segment (the kernel zeroing fresh pages) plus the copies of each
/// doubling. Chunks that never move, recycled from segment to segment, take the faults once.
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
    segment: SegmentId,
    chunks: Vec<LogChunk>,
    len: usize,
    pool: Arc<ChunkPool>,
}

impl EntryChunks {
    fn new(segment: SegmentId, pool: Arc<ChunkPool>) -> EntryChunks {
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
    /// megabytes, so entries are prefetched 32 visits ahead, both cache lines an entry may
    /// span (docs/TUNING.md, "Many partitions").
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
    segment: SegmentId,
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
    fn segment_mut(&mut self, segment: SegmentId) -> &mut SegmentLog {
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
    pub fn publish(&mut self, segment: SegmentId, entries: &[SlotEntry]) {
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
    pub fn publish_distributed(&mut self, segment: SegmentId, entries: &[SlotEntry]) {
        let log = self.segment_mut(segment);
        let chunks =
            Arc::get_mut(&mut log.entries).expect("only sealed segments' entries are shared");
        chunks.extend(entries);
        log.distributed = chunks.len();
    }

    /// Takes the entries not yet distributed into `out` and marks them distributed.
    pub fn take_undistributed(&mut self, out: &mut Undistributed) {
        self.take_undistributed_through(SegmentId(u64::MAX), out);
    }

    /// Takes the entries not yet distributed of segments up to `segment` into `out` and marks
    /// them distributed.
    pub fn take_undistributed_through(&mut self, segment: SegmentId, out: &mut Undistributed) {
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
    pub fn seal(&mut self, segment: SegmentId) -> SegmentEntries {
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

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn index_log_keeps_entries_until_distributed_and_sealed() {
        let e = |segment, base: u64| BatchEntry {
            base_offset: Offset(base),
            last_offset: Offset(base),
            max_timestamp: 0,
            segment,
            pos: base * 100,
            frame_bytes: 100,
        };
        let mut log = IndexLog::default();
        let packed = |slot, e: BatchEntry| [SlotEntry::new(slot, &e)];
        log.publish_distributed(SegmentId(0), &packed(0, e(SegmentId(0), 0)));
        log.publish(SegmentId(0), &packed(1, e(SegmentId(0), 1)));
        log.publish(SegmentId(1), &packed(0, e(SegmentId(1), 2)));
        let mut out = Undistributed::default();
        let taken = |log: &mut IndexLog, out: &mut Undistributed| {
            out.clear();
            log.take_undistributed(out);
            out.iter().collect::<Vec<_>>()
        };
        assert_eq!(
            taken(&mut log, &mut out),
            vec![(1, e(SegmentId(0), 1)), (0, e(SegmentId(1), 2))]
        );
        assert!(
            taken(&mut log, &mut out).is_empty(),
            "each entry is distributed once"
        );
        log.publish(SegmentId(1), &packed(1, e(SegmentId(1), 3)));
        // Sealing segment 0 returns its entries and forgets them (all distributed).
        assert_eq!(
            log.seal(SegmentId(0)).to_vec(),
            vec![(0, e(SegmentId(0), 0)), (1, e(SegmentId(0), 1))]
        );
        assert_eq!(log.held(), 2);
        // Segment 1's undistributed entry survives its sealing until a reader takes it.
        assert_eq!(
            log.seal(SegmentId(1)).to_vec(),
            vec![(0, e(SegmentId(1), 2)), (1, e(SegmentId(1), 3))]
        );
        assert_eq!(log.held(), 2);
        assert_eq!(taken(&mut log, &mut out), vec![(1, e(SegmentId(1), 3))]);
        assert_eq!(log.held(), 0);
    }

    #[test]
    fn index_log_chunks_hold_entries_in_order_and_are_reused() {
        let e = |base: u64| BatchEntry {
            base_offset: Offset(base),
            last_offset: Offset(base),
            max_timestamp: 0,
            segment: SegmentId(0),
            pos: base,
            frame_bytes: 1,
        };
        let n = 3 * LOG_CHUNK_ENTRIES + 5;
        let all: Vec<(u32, BatchEntry)> = (0..n as u64).map(|i| (i as u32, e(i))).collect();
        let packed: Vec<SlotEntry> = all.iter().map(|(s, e)| SlotEntry::new(*s, e)).collect();
        let mut log = IndexLog::default();
        // Commits of uneven sizes, crossing chunk boundaries.
        for part in packed.chunks(1000) {
            log.publish(SegmentId(0), part);
        }
        let mut out = Undistributed::default();
        log.take_undistributed(&mut out);
        assert!(out.iter().eq(all.iter().copied()));
        let sealed = log.seal(SegmentId(0));
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
        log.publish(SegmentId(0), &packed[..10]);
        assert_eq!(
            log.pool.free.lock().unwrap().len(),
            3,
            "and are taken again"
        );
    }
}
