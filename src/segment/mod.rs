//! Segments: the files of a shard's log. `format` is the pure byte layout; `recovery` scans
//! segments on open; `reader` turns stored frames back into records.

pub mod crc;
pub mod format;
pub mod reader;
pub mod recovery;
