//! Looking into a data directory without opening it as a [`crate::Log`]: read-only, no lock,
//! nothing repaired. `floodgate inspect` is built on these.

pub use crate::index::{IndexDirectory, SegmentIndex};
pub use crate::meta::{Meta, TopicMeta};
pub use crate::segment::scan::{ScanEnd, ScannedFrame};
pub use crate::shard::recovery::{holds_frames, scan_segment_file};
