//! Looking into a data directory without opening it as a [`crate::Log`]: read-only, no lock,
//! nothing repaired. `floodgate inspect` is built on these.

pub use crate::index::{IndexDirectory, SegmentIndex};
pub use crate::meta::{Meta, TopicMeta};
pub use crate::segment::scan::{Dropped, Known, ScanEnd, ScannedFrame};
pub use crate::shard::checkpoint::Checkpoint;
pub use crate::shard::plan::{RepairAction, plan_repair};
pub use crate::shard::recovery::{check_start_offsets, holds_frames, known_for, scan_segment_file};

/// The metadata of `dir` rebuilt from its segments (what repair does when `meta.json` is
/// missing), and a line for each thing found. Read-only.
pub fn rebuild_meta(dir: &std::path::Path) -> crate::Result<(Meta, Vec<String>)> {
    let rebuilt = crate::shard::rebuild::rebuild_found(dir)?;
    Ok((rebuilt.meta, rebuilt.lines))
}

/// A shard folder's checkpoint: how far its log was known durable, and whether it closed
/// cleanly. `None` if it has none (a log written by an older build, or never opened).
pub fn load_checkpoint(shard_dir: &std::path::Path) -> crate::Result<Option<Checkpoint>> {
    Ok(crate::shard::checkpoint::load(shard_dir)?.map(|(_, c)| c))
}
