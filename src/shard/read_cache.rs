//! Bytes of a shard's log held in memory for readers.

/// Bytes of a shard's log held in memory for readers: each published commit's frames (so
/// consumers that keep up never touch the disk) and each span read from disk (so consumers of
/// other partitions whose frames lie in the same span do not read it again: partitions share
/// one log, and reading a partition's frames drags its neighbours' along). At most `bytes_max`
/// bytes, the oldest inserted evicted first.
#[derive(Debug, Default)]
pub(crate) struct ReadCache {
    bytes_max: usize,
    held: usize,
    /// (segment, position of the first byte) → (bytes, the memory they hold).
    chunks: std::collections::BTreeMap<(u64, u64), (bytes::Bytes, usize)>,
    /// Keys in insertion order, for eviction.
    order: std::collections::VecDeque<(u64, u64)>,
}

impl ReadCache {
    pub fn new(bytes_max: usize) -> ReadCache {
        ReadCache {
            bytes_max,
            ..ReadCache::default()
        }
    }

    /// Adds bytes of `segment` starting at `pos`.
    pub fn insert(&mut self, segment: u64, pos: u64, data: bytes::Bytes) {
        let held = data.len();
        self.insert_holding(segment, pos, data, held);
    }

    /// Adds bytes of `segment` starting at `pos` that keep `held` bytes of memory alive (a
    /// slice of a larger buffer), counted against the cache's size.
    pub fn insert_holding(&mut self, segment: u64, pos: u64, data: bytes::Bytes, held: usize) {
        if data.is_empty() || held > self.bytes_max {
            return;
        }
        self.held += held;
        if let Some((_, old)) = self.chunks.insert((segment, pos), (data, held)) {
            self.held -= old;
        } else {
            self.order.push_back((segment, pos));
        }
        while self.held > self.bytes_max {
            let key = self.order.pop_front().expect("held bytes are in chunks");
            let (_, old) = self.chunks.remove(&key).expect("ordered keys are cached");
            self.held -= old;
        }
    }

    /// Where the first cached chunk of `segment` after `pos` starts, if there is one.
    pub fn next_chunk(&self, segment: u64, pos: u64) -> Option<u64> {
        let ((s, start), _) = self.chunks.range((segment, pos + 1)..).next()?;
        (*s == segment).then_some(*start)
    }

    /// The `len` bytes at `pos` in `segment`: shared with the cache if the chunk starting last
    /// at or before `pos` holds all of them, else copied from that chunk and the ones after it
    /// if together they hold them without a gap (a frame crossing from one read-ahead window
    /// into the next: copying it beats reading it again).
    pub fn get(&self, segment: u64, pos: u64, len: usize) -> Option<bytes::Bytes> {
        let ((s, start), (data, _)) = self.chunks.range(..=(segment, pos)).next_back()?;
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
        let mut at = start + data.len() as u64;
        for ((s, next), (data, _)) in self.chunks.range((segment, pos + 1)..) {
            if *s != segment || *next > at {
                return None;
            }
            let skip = (at - next) as usize;
            if skip >= data.len() {
                continue;
            }
            let take = (data.len() - skip).min((end - at) as usize);
            out.extend_from_slice(&data[skip..skip + take]);
            at += take as u64;
            if at == end {
                return Some(bytes::Bytes::from(out));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::ReadCache;
    use bytes::Bytes;

    #[test]
    fn read_cache_serves_whole_frames_and_evicts_the_oldest() {
        let mut cache = ReadCache::new(100);
        cache.insert(0, 0, Bytes::from(vec![1u8; 40]));
        cache.insert(0, 40, Bytes::from(vec![2u8; 40]));
        assert_eq!(cache.get(0, 10, 20).as_deref(), Some(&[1u8; 20][..]));
        assert_eq!(cache.get(0, 40, 40).as_deref(), Some(&[2u8; 40][..]));
        assert_eq!(
            cache.get(0, 30, 20).as_deref(),
            Some(&[[1u8; 10], [2u8; 10]].concat()[..]),
            "bytes spanning adjacent chunks are put together"
        );
        assert_eq!(cache.get(0, 70, 20), None, "past the cached bytes");
        assert_eq!(cache.get(1, 0, 10), None, "another segment");
        cache.insert(1, 0, Bytes::from(vec![3u8; 40]));
        assert_eq!(cache.get(0, 0, 10), None, "the oldest commit was evicted");
        assert_eq!(cache.get(1, 0, 40).as_deref(), Some(&[3u8; 40][..]));
        assert_eq!(cache.next_chunk(1, 0), None);
        assert_eq!(cache.next_chunk(0, 0), Some(40));
        cache.insert(1, 40, Bytes::from(vec![4u8; 500]));
        assert_eq!(
            cache.get(1, 40, 10),
            None,
            "larger than the cache: not kept"
        );
        assert!(ReadCache::new(0).get(0, 0, 1).is_none());
    }

    #[test]
    fn read_cache_joins_only_contiguous_chunks() {
        let mut cache = ReadCache::new(1000);
        cache.insert(0, 0, Bytes::from(vec![1u8; 40]));
        cache.insert(0, 50, Bytes::from(vec![2u8; 40]));
        cache.insert(0, 80, Bytes::from(vec![3u8; 40]));
        assert_eq!(cache.get(0, 30, 20), None, "a gap at 40..50");
        // Overlapping chunks: the bytes past the first one's end come from the next.
        let joined = cache.get(0, 60, 50).unwrap();
        assert_eq!(&joined[..], &[vec![2u8; 30], vec![3u8; 20]].concat()[..]);
        cache.insert(1, 0, Bytes::from(vec![4u8; 10]));
        assert_eq!(cache.get(0, 110, 20), None, "not into another segment");
    }
}
