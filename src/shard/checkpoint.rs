//! The shard's checkpoint: how far its log was known durable, and whether it was closed
//! cleanly. Recovery may cut only bytes past the known-durable position as a torn tail; damage
//! before it is lost acknowledged data and is refused (`shard::recovery`).
//!
//! Who writes it: recovery, once the log's end is known (not clean: the log is open); the
//! shard's helper thread, about every [`CHECKPOINT_INTERVAL`] while acknowledgements move; and
//! the helper again when the shard closes, clean if the writer stopped without a failure.
//! The frames carry their own, finer claim (`FrameHeader::durable_behind_blocks`); the
//! checkpoint is what survives when the frames that would say it are gone (a segment cut short
//! or emptied).
//!
//! ```text
//! file `checkpoint`: two 512-byte slots, written alternately in place, each write followed by
//! fdatasync. A slot is one sector: a torn write leaves it old or new, and a mix of both fails
//! its checksum; the other slot still holds the previous checkpoint. The valid slot with the
//! higher sequence number counts; an all-zero slot was never written.
//!
//! slot, little-endian:
//!   0  u32  magic      "FGCK"
//!   4  u32  version    1
//!   8  u64  sequence   one more than the previous checkpoint's
//!  16  u64  segment    the log was durable through this segment...
//!  24  u64  position   ...up to this byte position (every acknowledged record lies before it)
//!  32  u8   clean      1: written when the shard closed; the log ends exactly there
//!  33  u8×3 zero
//!  36  u32  crc        CRC-32C of bytes 0..36
//! ```
//!
//! Writing in place needs no new disk space: a log on a full disk still opens.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::io;
use crate::layout::checkpoint_path;
use crate::segment::format::SECTOR_BYTES;
use crate::segment::{LogPos, SegmentId};

/// How often the helper records a moved durable position. Recovery treats damage before the
/// checkpoint as lost data even where the frames after it are gone; this bounds how much of the
/// log's end only the frames' own claims cover.
pub(crate) const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

const MAGIC: u32 = u32::from_le_bytes(*b"FGCK");
const VERSION: u32 = 1;
const SLOT_BYTES: usize = SECTOR_BYTES;
const SLOT_USED_BYTES: usize = 40;
const _: () = assert!(SLOT_USED_BYTES <= SLOT_BYTES);

/// What a checkpoint says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Every acknowledged record of the shard lies before this position.
    pub durable: LogPos,
    /// Written when the shard closed without a failure: the log ends exactly at `durable`.
    pub clean: bool,
}

/// A slot's contents, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Empty,
    Valid(u64, Checkpoint),
    Damaged,
}

fn encode(seq: u64, c: Checkpoint) -> [u8; SLOT_BYTES] {
    let mut b = [0u8; SLOT_BYTES];
    b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    b[4..8].copy_from_slice(&VERSION.to_le_bytes());
    b[8..16].copy_from_slice(&seq.to_le_bytes());
    b[16..24].copy_from_slice(&c.durable.segment.0.to_le_bytes());
    b[24..32].copy_from_slice(&c.durable.pos.to_le_bytes());
    b[32] = u8::from(c.clean);
    let crc = crate::segment::crc::crc32c(&b[0..36]);
    b[36..40].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Slot {
    if b.iter().all(|&x| x == 0) {
        return Slot::Empty;
    }
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    if b.len() < SLOT_USED_BYTES
        || u32_at(0) != MAGIC
        || u32_at(4) != VERSION
        || u32_at(36) != crate::segment::crc::crc32c(&b[0..36])
        || b[32] > 1
        || b[33..36] != [0, 0, 0]
    {
        return Slot::Damaged;
    }
    Slot::Valid(
        u64_at(8),
        Checkpoint {
            durable: LogPos::new(SegmentId(u64_at(16)), u64_at(24)),
            clean: b[32] == 1,
        },
    )
}

/// Reads both slots: the newest valid checkpoint and its sequence number. `None` if the file
/// is missing or was never written; an error if no slot is valid but one was written (both
/// damaged: no torn write does that).
pub(crate) fn load(dir: &Path) -> Result<Option<(u64, Checkpoint)>> {
    let path = checkpoint_path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let slots: Vec<Slot> = bytes.chunks(SLOT_BYTES).take(2).map(decode).collect();
    let newest = slots
        .iter()
        .filter_map(|s| match s {
            Slot::Valid(seq, c) => Some((*seq, *c)),
            _ => None,
        })
        .max_by_key(|(seq, _)| *seq);
    if newest.is_none() && slots.contains(&Slot::Damaged) {
        return Err(Error::corrupt(
            &path,
            0,
            "both checkpoint slots are damaged (a torn write damages one at most); remove the \
             file to open the log as after a crash, with every segment end checked in full",
        ));
    }
    Ok(newest)
}

/// The checkpoint file, open for writing.
#[derive(Debug)]
pub(crate) struct CheckpointFile {
    file: File,
    path: PathBuf,
    seq: u64,
    last: Option<Checkpoint>,
}

impl CheckpointFile {
    /// Opens the shard's checkpoint file, creating it (two empty slots, flushed, its name made
    /// durable) if it is missing. `seq` is the newest sequence number found by [`load`].
    pub fn open(dir: &Path, seq: u64) -> Result<CheckpointFile> {
        let path = checkpoint_path(dir);
        let file = match OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)
                    .map_err(|e| Error::io("create", &path, e))?;
                f.write_all_at(&[0u8; 2 * SLOT_BYTES], 0)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| Error::io("write", &path, e))?;
                io::sync_dir(dir)?;
                f
            }
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        Ok(CheckpointFile {
            file,
            path,
            seq,
            last: None,
        })
    }

    /// Records `c` in the older slot and flushes it. Nothing is written if `c` is what this
    /// handle wrote last.
    pub fn write(&mut self, c: Checkpoint) -> Result<()> {
        if self.last == Some(c) {
            return Ok(());
        }
        let seq = self.seq + 1;
        let at = (seq % 2) * SLOT_BYTES as u64;
        self.file
            .write_all_at(&encode(seq, c), at)
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| Error::io("fdatasync", &self.path, e))?;
        self.seq = seq;
        self.last = Some(c);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(segment: u64, pos: u64, clean: bool) -> Checkpoint {
        Checkpoint {
            durable: LogPos::new(SegmentId(segment), pos),
            clean,
        }
    }

    /// The newest slot counts; a damaged slot falls back to the other; both damaged is an
    /// error; a missing file or empty slots say nothing.
    #[test]
    fn newest_valid_slot_counts() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let mut f = CheckpointFile::open(dir.path(), 0).unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        f.write(at(3, 4096, false)).unwrap();
        f.write(at(3, 8192, false)).unwrap();
        f.write(at(4, 100, true)).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some((3, at(4, 100, true))));
        // A torn write of slot 1 (sequence 3): the other slot's checkpoint stands.
        let path = checkpoint_path(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SLOT_BYTES + 20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some((2, at(3, 8192, false))));
        bytes[20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(load(dir.path()).is_err(), "both slots damaged");
        // A reopened handle continues the sequence.
        std::fs::remove_file(&path).unwrap();
        let mut f = CheckpointFile::open(dir.path(), 7).unwrap();
        f.write(at(9, 0, false)).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some((8, at(9, 0, false))));
    }

    /// Every bit of a slot's used bytes is covered by its checks.
    #[test]
    fn every_flipped_bit_is_caught() {
        let slot = encode(5, at(7, 12345, true));
        assert_eq!(decode(&slot), Slot::Valid(5, at(7, 12345, true)));
        for bit in 0..SLOT_USED_BYTES * 8 {
            let mut b = slot;
            b[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decode(&b), Slot::Damaged, "bit {bit}");
        }
    }
}
