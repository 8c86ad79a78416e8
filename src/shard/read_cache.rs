//! Bytes of a shard's log held in memory for readers.

use crate::segment::{LogPos, SegmentId};

/// Bytes of a shard's log held in memory for readers: each published commit's frames (so
/// consumers that keep up never touch the disk) and each span read from disk (so consumers of
/// other partitions whose frames lie in the same span do not read it again: partitions share
/// one log, and reading a partition's frames drags its neighbours' along). At most `bytes_max`
/// bytes, the oldest inserted evicted first.
#[derive(Debug, Default)]
pub(crate) struct ReadCache {
    bytes_max: usize,
    held: usize,
    /// Where each chunk's first byte is → (bytes, the memory they hold).
    chunks: std::collections::BTreeMap<LogPos, (bytes::Bytes, usize)>,
    /// Keys in insertion order, for eviction (a key whose chunk was dropped is passed over).
    order: std::collections::VecDeque<LogPos>,
    /// Segments rewritten while the log is open, with their file's generation: spans read
    /// from an older file of theirs are not cached (`shard::rewrite`).
    generations: std::collections::HashMap<SegmentId, u32>,
}

impl ReadCache {
    pub fn new(bytes_max: usize) -> ReadCache {
        ReadCache {
            bytes_max,
            ..ReadCache::default()
        }
    }

    /// The most bytes it holds.
    pub fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    /// Adds bytes starting at `at`.
    pub fn insert(&mut self, at: LogPos, data: bytes::Bytes) {
        let held = data.len();
        self.insert_holding(at, data, held);
    }

    /// Adds bytes starting at `at`, read from the file of generation `generation` of its
    /// segment: nothing if the segment was rewritten since.
    pub fn insert_read(&mut self, at: LogPos, generation: u32, data: bytes::Bytes) {
        if (self.generations.get(&at.segment)).is_some_and(|&newest| generation < newest) {
            return;
        }
        self.insert(at, data);
    }

    /// Drops every span of `segment`, which a rewrite replaced by its file of generation
    /// `generation`, and refuses spans of older files of it from now on.
    pub fn retire(&mut self, segment: SegmentId, generation: u32) {
        self.generations.insert(segment, generation);
        let stale: Vec<LogPos> = (self.chunks)
            .range(LogPos::new(segment, 0)..LogPos::new(segment.next(), 0))
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            if let Some((_, held)) = self.chunks.remove(&key) {
                self.held -= held;
            }
        }
    }

    /// Adds bytes starting at `at` that keep `held` bytes of memory alive (a slice of a
    /// larger buffer), counted against the cache's size.
    pub fn insert_holding(&mut self, at: LogPos, data: bytes::Bytes, held: usize) {
        if data.is_empty() || held > self.bytes_max {
            return;
        }
        self.held += held;
        if let Some((_, old)) = self.chunks.insert(at, (data, held)) {
            self.held -= old;
        } else {
            self.order.push_back(at);
        }
        while self.held > self.bytes_max {
            let key = self.order.pop_front().expect("held bytes are in chunks");
            if let Some((_, old)) = self.chunks.remove(&key) {
                self.held -= old;
            }
        }
    }

    /// Where the first cached chunk after `at` in its segment starts, if there is one.
    pub fn next_chunk(&self, at: LogPos) -> Option<u64> {
        let (next, _) = self
            .chunks
            .range(LogPos::new(at.segment, at.pos + 1)..)
            .next()?;
        (next.segment == at.segment).then_some(next.pos)
    }

    /// Up to `len_max` bytes from `at`, as far as the chunk holding `at` goes (shared with the
    /// cache), if one holds it.
    pub fn get_upto(&self, at: LogPos, len_max: usize) -> Option<bytes::Bytes> {
        let (first, (data, _)) = self.chunks.range(..=at).next_back()?;
        if first.segment != at.segment || first.pos + (data.len() as u64) <= at.pos {
            return None;
        }
        let from = (at.pos - first.pos) as usize;
        Some(data.slice(from..(from + len_max).min(data.len())))
    }

    /// The `len` bytes at `at`: shared with the cache if the chunk starting last at or before
    /// `at` holds all of them, else copied from that chunk and the ones after it if together
    /// they hold them without a gap (a frame crossing from one read-ahead window into the
    /// next: copying it beats reading it again).
    pub fn get(&self, at: LogPos, len: usize) -> Option<bytes::Bytes> {
        let LogPos { segment, pos } = at;
        let (first, (data, _)) = self.chunks.range(..=at).next_back()?;
        let (s, start) = (&first.segment, &first.pos);
        let end = pos + len as u64;
        if *s != segment || start + (data.len() as u64) <= pos {
            return None;
        }
        let from = (pos - start) as usize;
        if from + len <= data.len() {
            return Some(data.slice(from..from + len));
        }
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&data[from..]);
        let mut filled = start + data.len() as u64;
        for (chunk, (data, _)) in self.chunks.range(LogPos::new(segment, pos + 1)..) {
            let (s, next) = (&chunk.segment, &chunk.pos);
            if *s != segment || *next > filled {
                return None;
            }
            let skip = (filled - next) as usize;
            if skip >= data.len() {
                continue;
            }
            let take = (data.len() - skip).min((end - filled) as usize);
            out.extend_from_slice(&data[skip..skip + take]);
            filled += take as u64;
            if filled == end {
                return Some(bytes::Bytes::from(out));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::ReadCache;
    use crate::segment::{LogPos, SegmentId};
    use bytes::Bytes;

    #[test]
    fn read_cache_serves_whole_frames_and_evicts_the_oldest() {
        let mut cache = ReadCache::new(100);
        cache.insert(LogPos::new(SegmentId(0), 0), Bytes::from(vec![1u8; 40]));
        cache.insert(LogPos::new(SegmentId(0), 40), Bytes::from(vec![2u8; 40]));
        assert_eq!(
            cache.get(LogPos::new(SegmentId(0), 10), 20).as_deref(),
            Some(&[1u8; 20][..])
        );
        assert_eq!(
            cache.get(LogPos::new(SegmentId(0), 40), 40).as_deref(),
            Some(&[2u8; 40][..])
        );
        assert_eq!(
            cache.get(LogPos::new(SegmentId(0), 30), 20).as_deref(),
            Some(&[[1u8; 10], [2u8; 10]].concat()[..]),
            "bytes spanning adjacent chunks are put together"
        );
        assert_eq!(
            cache.get(LogPos::new(SegmentId(0), 70), 20),
            None,
            "past the cached bytes"
        );
        assert_eq!(
            cache.get(LogPos::new(SegmentId(1), 0), 10),
            None,
            "another segment"
        );
        cache.insert(LogPos::new(SegmentId(1), 0), Bytes::from(vec![3u8; 40]));
        assert_eq!(
            cache.get(LogPos::new(SegmentId(0), 0), 10),
            None,
            "the oldest commit was evicted"
        );
        assert_eq!(
            cache.get(LogPos::new(SegmentId(1), 0), 40).as_deref(),
            Some(&[3u8; 40][..])
        );
        assert_eq!(cache.next_chunk(LogPos::new(SegmentId(1), 0)), None);
        assert_eq!(cache.next_chunk(LogPos::new(SegmentId(0), 0)), Some(40));
        cache.insert(LogPos::new(SegmentId(1), 40), Bytes::from(vec![4u8; 500]));
        assert_eq!(
            cache.get(LogPos::new(SegmentId(1), 40), 10),
            None,
            "larger than the cache: not kept"
        );
        assert!(
            ReadCache::new(0)
                .get(LogPos::new(SegmentId(0), 0), 1)
                .is_none()
        );
    }

    #[test]
    fn read_cache_joins_only_contiguous_chunks() {
        let mut cache = ReadCache::new(1000);
        cache.insert(LogPos::new(SegmentId(0), 0), Bytes::from(vec![1u8; 40]));
        cache.insert(LogPos::new(SegmentId(0), 50), Bytes::from(vec![2u8; 40]));
        cache.insert(LogPos::new(SegmentId(0), 80), Bytes::from(vec![3u8; 40]));
        assert_eq!(
            cache.get(LogPos::new(SegmentId(0), 30), 20),
            None,
            "a gap at 40..50"
        );
        // Overlapping chunks: the bytes past the first one's end come from the next.
        let joined = cache.get(LogPos::new(SegmentId(0), 60), 50).unwrap();
        assert_eq!(&joined[..], &[vec![2u8; 30], vec![3u8; 20]].concat()[..]);
        cache.insert(LogPos::new(SegmentId(1), 0), Bytes::from(vec![4u8; 10]));
        assert_eq!(
            cache.get(LogPos::new(SegmentId(0), 110), 20),
            None,
            "not into another segment"
        );
    }
}
