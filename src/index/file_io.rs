//! Reading and writing index files.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::file::{
    INDEX_ENTRY_BYTES, INDEX_HEADER_BYTES, INDEX_RUN_BYTES, decode_entry, decode_run, u32_at,
};
use super::*;
use crate::error::{Error, Result};

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
    use std::sync::atomic::Ordering;

    use std::sync::Arc;

    use super::*;
    use crate::error::Result;

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
}
