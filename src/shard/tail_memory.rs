//! Memory for the tail cache's copies of commits: commit buffers lent to the cache and
//! returned to the writer's pool, and arenas where smaller commits are copied.

use std::sync::{Arc, Mutex};

use crate::io::AlignedBuf;

/// Commit buffers kept for reuse once the tail cache lets go of them.
pub(crate) const BUF_POOL_MAX: usize = 4;

/// Where the tail cache's copies of commits are made: large arenas used in turn, each reused
/// once every copy made in it has left the cache and the readers. A fresh allocation per copy
/// (a commit can be hundreds of KB) would take a page fault for every 4 KiB of it on the
/// writer's thread.
pub(crate) struct CopyArenas {
    /// The arena being filled (none before the first copy).
    current: Option<bytes::BytesMut>,
    /// Arenas filled before `current`, oldest first.
    used: std::collections::VecDeque<bytes::BytesMut>,
    arena_bytes: usize,
}

impl CopyArenas {
    /// Arenas kept for reuse: the cache holds about 16 arenas' worth, so the oldest has
    /// usually left it by the time it comes round.
    const KEPT: usize = 18;

    pub fn new(cache_bytes: usize) -> CopyArenas {
        CopyArenas {
            current: None,
            used: std::collections::VecDeque::new(),
            arena_bytes: (cache_bytes / 16).clamp(64 << 10, 4 << 20),
        }
    }

    pub fn copy(&mut self, data: &[u8]) -> bytes::Bytes {
        let room = self.current.as_ref().map_or(0, |c| c.capacity() - c.len());
        if room < data.len() {
            let need = self.arena_bytes.max(data.len());
            self.used.extend(self.current.take());
            let reclaimed = self
                .used
                .front_mut()
                .is_some_and(|oldest| oldest.try_reclaim(need));
            self.current = Some(if reclaimed {
                self.used.pop_front().expect("the oldest arena")
            } else {
                if self.used.len() > Self::KEPT {
                    // Still referenced: freed when its last copy goes.
                    self.used.pop_front();
                }
                bytes::BytesMut::with_capacity(need)
            });
        }
        let current = self.current.as_mut().expect("an arena");
        current.extend_from_slice(data);
        current.split().freeze()
    }
}

/// A commit buffer lent to the tail cache; it goes back to the writer's pool when the cache
/// and every reader are done with it (a fresh 4 MiB buffer per commit would cost its page
/// faults each time).
pub(crate) struct PooledBuf {
    buf: Option<AlignedBuf>,
    pool: Arc<Mutex<Vec<AlignedBuf>>>,
}

impl PooledBuf {
    /// Lends `buf`; it goes back to `pool` when the last reference is dropped.
    pub fn new(buf: AlignedBuf, pool: Arc<Mutex<Vec<AlignedBuf>>>) -> PooledBuf {
        PooledBuf {
            buf: Some(buf),
            pool,
        }
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_deref().expect("held until dropped")
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take()
            && let Ok(mut pool) = self.pool.lock()
            && pool.len() < BUF_POOL_MAX
        {
            pool.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copies come back intact however many arenas later, and an arena is reused only once
    /// every copy made in it is gone.
    #[test]
    fn copy_arenas_reuse_only_released_memory() {
        let mut arenas = CopyArenas::new(16 << 20); // 1 MiB arenas
        let piece = |i: u64| -> Vec<u8> { (0..100_000).map(|k| (i * 7 + k) as u8).collect() };
        let kept: Vec<(u64, bytes::Bytes)> = (0..300)
            .map(|i| (i, arenas.copy(&piece(i))))
            .filter(|(i, _)| i.is_multiple_of(37))
            .collect();
        for (i, copy) in &kept {
            assert_eq!(copy[..], piece(*i)[..], "copy {i}");
        }
        // Memory still referenced by a kept copy is never written again.
        for (i, copy) in &kept {
            let range = copy.as_ptr() as usize..copy.as_ptr() as usize + copy.len();
            for j in 300..330 {
                let fresh = arenas.copy(&piece(j));
                let at = fresh.as_ptr() as usize;
                assert!(!range.contains(&at), "copy {j} landed on kept copy {i}");
            }
        }
        // With every copy released, the oldest arenas come round again.
        drop(kept);
        let before: Vec<usize> = arenas.used.iter().map(|a| a.as_ptr() as usize).collect();
        for j in 0..400 {
            drop(arenas.copy(&piece(j)));
        }
        let reused = arenas.used.iter().any(|a| {
            let p = a.as_ptr() as usize;
            before.iter().any(|&b| p.abs_diff(b) < (1 << 20))
        });
        assert!(reused, "released arenas are reused");
    }
}
