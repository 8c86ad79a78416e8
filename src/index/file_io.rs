//! Reading and writing index files.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::file::{
    INDEX_ENTRY_BYTES, INDEX_HEADER_BYTES, INDEX_RUN_BYTES, decode_entry, decode_run, u32_at,
};
use super::*;
use crate::error::{Error, Result};
use crate::io::{self, AlignedBuf, IoBackend};
use crate::layout::temporary_path;
use crate::segment::Offset;
use crate::segment::format::BLOCK_BYTES;

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
pub(crate) fn run_chunk_starts(path: &Path, run: &SealedRun) -> Result<Vec<Offset>> {
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
    starts: &[Offset],
    offset: Offset,
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
    let dense = entries.windows(2).all(|w| {
        w[1].base_offset == w[0].last_offset.next() && w[0].base_offset <= w[0].last_offset
    });
    let last = entries.last().expect("count > 0").last_offset;
    let end_ok = match starts.get(chunk + 1) {
        Some(&next) => next == last.next(),
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

/// Writes an index file atomically (temp file, fsync, rename, directory fsync); returns its
/// directory.
pub(crate) fn write_index_file(
    path: &std::path::Path,
    index: &SegmentIndex,
) -> Result<IndexDirectory> {
    write_index_file_paced(path, IoBackend::Portable, &mut |_| {}, |sink| {
        index.encode_to(sink)
    })
}

/// Writes an index file like [`write_index_file`], its bytes coming from `encode` through the
/// sink it is given, pushing each piece to the disk and then calling `pace` with its size (to
/// pause: a 1 GiB segment of small batches has an index of a hundred MB or more, which written
/// and flushed in one go would delay the writer's next fdatasyncs). With the io_uring backend
/// the file
/// is written with O_DIRECT from one reused buffer (see [`DirectPieces`]).
pub(crate) fn write_index_file_paced<R>(
    path: &std::path::Path,
    backend: IoBackend,
    pace: &mut dyn FnMut(usize),
    encode: impl FnOnce(&mut IndexSink<'_>) -> Result<R>,
) -> Result<R> {
    use std::os::unix::fs::FileExt;
    let tmp = temporary_path(path);
    let encoded = if backend == IoBackend::IoUring {
        let f = io::open_segment(&tmp, backend, true, true)?;
        let mut pieces = DirectPieces::new(&f, &tmp, pace);
        let encoded = encode(&mut |pos, bytes| pieces.put(pos, bytes))?;
        pieces.finish()?;
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        encoded
    } else {
        let f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        let mut sink = |pos: u64, bytes: &[u8]| {
            f.write_all_at(bytes, pos)
                .map_err(|e| Error::io("write", &tmp, e))?;
            io::start_writeback(&f, pos, bytes.len() as u64);
            pace(bytes.len());
            Ok(())
        };
        let encoded = encode(&mut sink)?;
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        encoded
    };
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))?;
    io::sync_dir(
        path.parent()
            .expect("index files live in a shard directory"),
    )?;
    Ok(encoded)
}

/// An index file written with O_DIRECT: pieces arrive in file order after the first (the
/// entries), and the bytes before the first piece's block (the header and directory) last.
/// Those are held in memory; the rest goes out in aligned 1 MiB writes from one buffer.
/// Buffered, the page cache copies took as much CPU as the rest of the helper's work at
/// 10,000 partitions (1.9 s of 12.5 s of a 30 M record run), on fresh pages each time.
struct DirectPieces<'a> {
    file: &'a File,
    path: &'a std::path::Path,
    /// Called with each write's size after it.
    pace: &'a mut dyn FnMut(usize),
    /// Bytes `0..front.len()` of the file, written last.
    front: Vec<u8>,
    /// The bytes after `front` not written yet, from `buf_pos`.
    buf: AlignedBuf,
    buf_len: usize,
    buf_pos: u64,
    /// The file's length so far.
    end: u64,
}

const _: () = assert!(DirectPieces::<'static>::PIECE_BYTES.is_multiple_of(BLOCK_BYTES));

impl<'a> DirectPieces<'a> {
    /// Each write's size. Every flush the shard writer issues waits for the disk to take the
    /// writes completed before it, these too, so the pieces are small.
    const PIECE_BYTES: usize = 128 << 10;

    fn new(
        file: &'a File,
        path: &'a std::path::Path,
        pace: &'a mut dyn FnMut(usize),
    ) -> DirectPieces<'a> {
        DirectPieces {
            file,
            path,
            pace,
            front: Vec::new(),
            buf: AlignedBuf::new(Self::PIECE_BYTES),
            buf_len: 0,
            buf_pos: u64::MAX,
            end: 0,
        }
    }

    fn put(&mut self, pos: u64, mut bytes: &[u8]) -> Result<()> {
        self.end = self.end.max(pos + bytes.len() as u64);
        if self.buf_pos == u64::MAX {
            // The first piece: the bytes before its block are the front.
            self.buf_pos = pos.next_multiple_of(BLOCK_BYTES as u64);
            self.front.resize(self.buf_pos as usize, 0);
        }
        if pos < self.buf_pos {
            let n = bytes.len().min((self.buf_pos - pos) as usize);
            self.front[pos as usize..pos as usize + n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if bytes.is_empty() {
                return Ok(());
            }
        }
        let at = pos.max(self.buf_pos);
        assert_eq!(
            at,
            self.buf_pos + self.buf_len as u64,
            "index pieces come in file order"
        );
        while !bytes.is_empty() {
            let n = bytes.len().min(Self::PIECE_BYTES - self.buf_len);
            self.buf[self.buf_len..self.buf_len + n].copy_from_slice(&bytes[..n]);
            self.buf_len += n;
            bytes = &bytes[n..];
            if self.buf_len == Self::PIECE_BYTES {
                self.flush_buf()?;
            }
        }
        Ok(())
    }

    /// Writes the buffered bytes, the last block padded with zeros (cut off by `finish`).
    fn flush_buf(&mut self) -> Result<()> {
        let padded = self.buf_len.next_multiple_of(BLOCK_BYTES);
        self.buf[self.buf_len..padded].fill(0);
        io::write_all_at(self.file, self.path, self.buf_pos, &self.buf[..padded])?;
        self.buf_pos += self.buf_len as u64;
        self.buf_len = 0;
        (self.pace)(padded);
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        if self.buf_len > 0 {
            self.flush_buf()?;
        }
        if !self.front.is_empty() {
            let padded = self.front.len().next_multiple_of(BLOCK_BYTES);
            let mut front = AlignedBuf::new(padded);
            front[..self.front.len()].copy_from_slice(&self.front);
            io::write_all_at(self.file, self.path, 0, &front)?;
        }
        self.file
            .set_len(self.end)
            .map_err(|e| Error::io("truncate", self.path, e))
    }
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
        let frames: Vec<(TopicPartition, BatchEntry)> = (0..n)
            .map(|i| {
                let e = BatchEntry {
                    base_offset: Offset(2 * i),
                    last_offset: Offset(2 * i + 1),
                    max_timestamp: i as i64,
                    segment: SegmentId(0),
                    pos: i * 10,
                    frame_bytes: 10,
                };
                p.push(e);
                (TopicPartition::new(1, 0), e)
            })
            .collect();
        p.offset_acked.store(2 * n, Ordering::Release);
        let (bytes, directory, starts) = SegmentIndex {
            segment: SegmentId(0),
            generation: 0,
            data_end: n * 10,
            frames,
        }
        .encode_with_starts();
        std::fs::write(&path, &bytes).unwrap();
        let run = directory.runs[0];
        let sealed_run = SealedRun {
            segment: SegmentId(0),
            run,
            entries_pos: directory.entries_pos(&run),
            running_max: 0,
        };
        assert_eq!(
            starts[0],
            run_chunk_starts(&path, &sealed_run).unwrap(),
            "the writer's chunk directory is the one read back"
        );
        assert!(p.seal_run(SegmentId(0), run, directory.entries_pos(&run)));
        let mut cache = crate::index::cache::IndexCache::new(1 << 20);
        let load = |sealed: &SealedRun, offset: Offset| -> Result<Arc<[BatchEntry]>> {
            let starts = run_chunk_starts(&path, sealed)?;
            let (chunk, entries) = read_chunk(&path, sealed, &starts, offset)?;
            assert_eq!(chunk, (offset.0 / 2) as usize / CHUNK_ENTRIES);
            Ok(entries.into())
        };
        // Across the first chunk boundary: entries 4090.. 4105.
        let got = p
            .entries_from(Offset(2 * 4090), 16 * 10, Offset(2 * n), &load)
            .unwrap();
        let bases: Vec<u64> = got.iter().map(|e| e.base_offset.0 / 2).collect();
        assert_eq!(bases, (4090..4106).collect::<Vec<_>>());
        let last = p
            .entries_from(Offset(2 * n - 1), 1000, Offset(2 * n), &load)
            .unwrap();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].base_offset, Offset(2 * n - 2));
        let at = p
            .entry_for_timestamp(9000, Offset(2 * n), &load)
            .unwrap()
            .unwrap();
        assert_eq!(at.base_offset, Offset(18_000));
        // Chunks and directories in the cache.
        let sealed = SealedRun {
            segment: SegmentId(0),
            run,
            entries_pos: directory.entries_pos(&run),
            running_max: 0,
        };
        cache.insert_starts(&sealed, run_chunk_starts(&path, &sealed).unwrap().into());
        assert_eq!(cache.starts(&sealed).unwrap().len(), 3);
        cache.insert_chunk(&sealed, 1, load(&sealed, Offset(2 * 5000)).unwrap());
        assert_eq!(
            cache.chunk(&sealed, 1).unwrap()[0].base_offset,
            Offset(2 * 4096)
        );
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
            read_chunk(&path, &sealed, &starts, Offset(2 * 5000)),
            Err(Error::Corrupt { .. })
        ));
    }

    /// An index file written through O_DIRECT pieces (held front, aligned middle, padded
    /// and cut tail) is byte for byte the encoded index, at every size around the edges.
    #[test]
    fn index_files_are_the_same_whichever_way_they_are_written() {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/unit-tmp");
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::tempdir_in(base).unwrap();
        // 0 entries (header only), a file within one block, one just past a piece, several pieces.
        for n in [0u64, 2, 26_300, 80_000] {
            let frames = (0..n)
                .map(|i| {
                    let entry = BatchEntry {
                        base_offset: Offset(i / 3),
                        last_offset: Offset(i / 3),
                        max_timestamp: i as i64,
                        segment: SegmentId(7),
                        pos: i * 100,
                        frame_bytes: 100,
                    };
                    (TopicPartition::new(1, (i % 3) as u32), entry)
                })
                .collect();
            let index = SegmentIndex {
                segment: SegmentId(7),
                generation: 0,
                data_end: n * 100,
                frames,
            };
            let (expected, directory) = index.encode();
            for backend in [IoBackend::IoUring, IoBackend::Portable] {
                let path = dir.path().join(format!("{n}-{backend:?}.idx"));
                let written = write_index_file_paced(&path, backend, &mut |_| {}, |sink| {
                    index.encode_to(sink)
                })
                .unwrap();
                assert_eq!(written, directory);
                let bytes = std::fs::read(&path).unwrap();
                assert!(bytes == expected, "{n} entries, {backend:?}");
            }
        }
    }
}
