//! Every path inside a data directory, named once.
//!
//! ```text
//! DIR/LOCK                        flock'd by the open Log; names its holder ("pid 4242")
//! DIR/meta.json                   topics and shard count (replaced through meta.json.tmp)
//! DIR/shard-000/                  one folder per shard
//!     00000000000000000007.seg    a segment file: preallocated, written with O_DIRECT
//!     00000000000000000006.idx    a sealed segment's index file (written as .idx.tmp)
//!     next.seg.prep               the next segment, zero-filled ahead (.prep.tmp meanwhile)
//!     00000000000000000005.asis   empty: segment 5's rewrite was given up, not to be tried
//!                                 again at the next open (few of its batches merge)
//!     start-offsets.json          where retention has cut (first segment, earliest offsets)
//! ```
//!
//! A file that ends in `.tmp` is always an unfinished write, removed when the shard opens.

use std::path::{Path, PathBuf};

/// The lock file, flock'd while a `Log` has the directory open.
pub fn lock_path(dir: &Path) -> PathBuf {
    dir.join("LOCK")
}

/// A segment's id: its place in the shard's sequence of segment files (each new segment takes
/// the next id, never reused) and its file name. Not an offset and not a byte position.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct SegmentId(pub u64);

impl SegmentId {
    /// The id of the segment after this one.
    pub const fn next(self) -> SegmentId {
        SegmentId(self.0 + 1)
    }
}

impl std::fmt::Display for SegmentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The metadata file: topics, partitions, the shard count.
pub fn meta_path(dir: &Path) -> PathBuf {
    dir.join("meta.json")
}

/// The recovery journal: a line for each change an open made to the log (a cut, a gap, a
/// rebuilt index file), appended, never read by floodgate.
pub fn recovery_log_path(dir: &Path) -> PathBuf {
    dir.join("recovery.log")
}

/// Shard `id`'s folder.
pub fn shard_dir(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("shard-{id:03}"))
}

/// Segment `id`'s file in a shard folder.
pub fn segment_path(shard_dir: &Path, id: SegmentId) -> PathBuf {
    shard_dir.join(format!("{id:020}.seg"))
}

/// The index file of sealed segment `id` in a shard folder.
pub fn index_path(shard_dir: &Path, id: SegmentId) -> PathBuf {
    shard_dir.join(format!("{id:020}.idx"))
}

/// The idempotent producers' state after sealed segment `id` (see `shard::producers`).
pub fn producers_path(shard_dir: &Path, id: SegmentId) -> PathBuf {
    shard_dir.join(format!("{id:020}.producers"))
}

/// Segment `id` rewritten (see `shard::rewrite`), before it replaces `id`'s segment file.
pub fn rewritten_segment_path(shard_dir: &Path, id: SegmentId) -> PathBuf {
    shard_dir.join(format!("{id:020}.seg.rw"))
}

/// The first pass of a rewrite of segment `id` larger than the rewrite's memory: the segment
/// grouped by partition a window at a time (see `shard::rewrite`). Read by the second pass,
/// then deleted; never needed after a crash.
pub fn rewrite_runs_path(shard_dir: &Path, id: SegmentId) -> PathBuf {
    shard_dir.join(format!("{id:020}.seg.runs"))
}

/// The index file of segment `id` rewritten: once it is in place, the rewrite is decided.
pub fn rewritten_index_path(shard_dir: &Path, id: SegmentId) -> PathBuf {
    shard_dir.join(format!("{id:020}.idx.rw"))
}

/// Marks segment `id` as one whose rewrite was given up because few of its batches merge: an
/// open does not queue it again. Empty; losing it only means the rewrite is tried again.
pub fn kept_as_written_path(shard_dir: &Path, id: SegmentId) -> PathBuf {
    shard_dir.join(format!("{id:020}.asis"))
}

/// The next segment, zero-filled ahead of the roll that adopts it.
pub fn prepared_path(shard_dir: &Path) -> PathBuf {
    shard_dir.join("next.seg.prep")
}

/// The shard's retention record: the first segment kept and each partition's earliest offset.
pub fn start_offsets_path(shard_dir: &Path) -> PathBuf {
    shard_dir.join("start-offsets.json")
}

/// The shard's checkpoint: how far its log was known durable, and whether it closed cleanly.
pub fn checkpoint_path(shard_dir: &Path) -> PathBuf {
    shard_dir.join("checkpoint")
}

/// Where `path` is written before it is renamed into place.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// What a file name in a shard folder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardFile {
    /// A segment file, with its id.
    Segment(SegmentId),
    /// A sealed segment's index file, with its id.
    Index(SegmentId),
    /// The idempotent producers' state after a sealed segment, with its id.
    Producers(SegmentId),
    /// A segment rewritten, not yet in place of the segment.
    RewrittenSegment(SegmentId),
    /// A rewritten segment's index file, not yet in place of the segment's.
    RewrittenIndex(SegmentId),
    /// A rewrite's first pass (`N.seg.runs`), deleted on open.
    RewriteRuns(SegmentId),
    /// The prepared next segment.
    Prepared,
    /// A segment whose rewrite was given up (`N.asis`).
    KeptAsWritten(SegmentId),
    /// An unfinished write (`*.tmp`).
    Temporary,
    /// Anything else (`start-offsets.json`, `checkpoint`, files floodgate does not write).
    Other,
}

impl ShardFile {
    /// Classifies a file name found in a shard folder.
    pub fn of(name: &str) -> ShardFile {
        let id_of = |suffix| {
            name.strip_suffix(suffix)
                .and_then(|digits| digits.parse::<u64>().ok())
                .map(SegmentId)
        };
        if let Some(id) = id_of(".seg") {
            ShardFile::Segment(id)
        } else if let Some(id) = id_of(".idx") {
            ShardFile::Index(id)
        } else if let Some(id) = id_of(".producers") {
            ShardFile::Producers(id)
        } else if let Some(id) = id_of(".seg.rw") {
            ShardFile::RewrittenSegment(id)
        } else if let Some(id) = id_of(".idx.rw") {
            ShardFile::RewrittenIndex(id)
        } else if let Some(id) = id_of(".seg.runs") {
            ShardFile::RewriteRuns(id)
        } else if let Some(id) = id_of(".asis") {
            ShardFile::KeptAsWritten(id)
        } else if name == "next.seg.prep" {
            ShardFile::Prepared
        } else if name.ends_with(".tmp") {
            ShardFile::Temporary
        } else {
            ShardFile::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path the layout makes is classified back as what it is.
    #[test]
    fn names_round_trip() {
        let shard = shard_dir(Path::new("/data"), 2);
        assert_eq!(shard, Path::new("/data/shard-002"));
        let name = |p: PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            ShardFile::of(&name(segment_path(&shard, SegmentId(7)))),
            ShardFile::Segment(SegmentId(7))
        );
        assert_eq!(
            ShardFile::of(&name(index_path(&shard, SegmentId(7)))),
            ShardFile::Index(SegmentId(7))
        );
        assert_eq!(
            ShardFile::of(&name(producers_path(&shard, SegmentId(7)))),
            ShardFile::Producers(SegmentId(7))
        );
        assert_eq!(
            ShardFile::of(&name(rewritten_segment_path(&shard, SegmentId(7)))),
            ShardFile::RewrittenSegment(SegmentId(7))
        );
        assert_eq!(
            ShardFile::of(&name(rewritten_index_path(&shard, SegmentId(7)))),
            ShardFile::RewrittenIndex(SegmentId(7))
        );
        assert_eq!(
            ShardFile::of(&name(rewrite_runs_path(&shard, SegmentId(7)))),
            ShardFile::RewriteRuns(SegmentId(7))
        );
        assert_eq!(
            ShardFile::of(&name(kept_as_written_path(&shard, SegmentId(7)))),
            ShardFile::KeptAsWritten(SegmentId(7))
        );
        let tmp = temporary_path(&producers_path(&shard, SegmentId(7)));
        assert_eq!(ShardFile::of(&name(tmp)), ShardFile::Temporary);
        assert_eq!(
            ShardFile::of(&name(prepared_path(&shard))),
            ShardFile::Prepared
        );
        let tmp = temporary_path(&index_path(&shard, SegmentId(7)));
        assert_eq!(ShardFile::of(&name(tmp)), ShardFile::Temporary);
        let tmp = temporary_path(&prepared_path(&shard));
        assert_eq!(ShardFile::of(&name(tmp)), ShardFile::Temporary);
        assert_eq!(
            ShardFile::of(&name(start_offsets_path(&shard))),
            ShardFile::Other
        );
        assert_eq!(
            ShardFile::of(&name(checkpoint_path(&shard))),
            ShardFile::Other
        );
        assert_eq!(ShardFile::of("x.seg"), ShardFile::Other);
    }
}
