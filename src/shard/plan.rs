//! What opening a data directory with repair would do, worked out without changing anything:
//! `floodgate repair --dry-run`. It walks each shard as recovery does (`shard::recovery`):
//! the segments retention has not deleted, a prepared segment a roll adopted, the checkpoint,
//! the segments recovery scans (the newest, and sealed ones without a sound index file), and
//! how each scan ends. Read-only: no lock, nothing written.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::index::IndexDirectory;
use crate::layout::{self, ShardFile};
use crate::meta::Meta;
use crate::segment::SegmentId;
use crate::segment::scan::{Dropped, ScanEnd, records_after};
use crate::shard::checkpoint;
use crate::shard::rebuild::{Rebuilt, rebuild_found};
use crate::shard::recovery::{ChunkReader, holds_frames, known_for, scan_segment_file};
use crate::shard::retention::StartOffsets;
use crate::shard::rewrite::rewrites_found;

/// One thing [`crate::Config::repair_truncate_damaged`] makes `Log::open` do to a data
/// directory (a plain open does the torn tails, index files and adoptions too).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RepairAction {
    /// A torn write at the end of the log is zeroed: nothing acknowledged is in it.
    CutTornTail {
        /// The segment.
        segment: PathBuf,
        /// Where the log ends after the cut.
        pos: u64,
        /// Bytes zeroed.
        bytes: u64,
    },
    /// The shard's log is cut at damage: the records after `pos`, in this segment and the
    /// later ones (deleted), are dropped.
    CutDamage {
        /// The segment.
        segment: PathBuf,
        /// Where the log ends after the cut.
        pos: u64,
        /// What is wrong there.
        reason: String,
        /// The segments after it, deleted.
        later_segments: Vec<PathBuf>,
        /// The records dropped, by partition (found by resynchronising past the damage).
        dropped: Dropped,
    },
    /// Segments the shard's checkpoint says held acknowledged records are missing: the log
    /// goes on without them.
    SegmentMissing {
        /// The shard folder.
        shard_dir: PathBuf,
        /// The segment the checkpoint names.
        segment: SegmentId,
        /// The position in it through which the log was durable.
        durable_pos: u64,
    },
    /// `meta.json` is missing: it is rebuilt from the segments (the topics the log records,
    /// and every topic id and partition its frames hold).
    RebuildMeta {
        /// What the rebuilt metadata holds, a line each.
        lines: Vec<String>,
    },
    /// A sealed segment's missing or damaged index file is rebuilt from the segment.
    RebuildIndex {
        /// The index file.
        path: PathBuf,
    },
    /// A sealed segment's rewrite that was decided (its new index file in place) and not
    /// finished: the rewritten files take the segment's names.
    FinishRewrite {
        /// The segment.
        segment: PathBuf,
    },
    /// The files of a rewrite a crash cut short before it was decided are deleted; the
    /// segment stays as it was.
    DropRewrite {
        /// The file.
        path: PathBuf,
    },
    /// A prepared segment holding frames (a roll's rename a crash undid) gets its name.
    AdoptPrepared {
        /// The prepared file.
        path: PathBuf,
        /// The name it gets.
        segment: PathBuf,
    },
}

impl RepairAction {
    /// Whether a plain open (without repair) refuses the directory over this.
    pub fn needs_repair(&self) -> bool {
        matches!(
            self,
            RepairAction::CutDamage { .. }
                | RepairAction::SegmentMissing { .. }
                | RepairAction::RebuildMeta { .. }
        )
    }
}

/// What opening `dir` with repair would do, shard by shard, in order.
pub fn plan_repair(dir: &Path) -> Result<Vec<RepairAction>> {
    let mut plan = Vec::new();
    let meta = match Meta::load(dir)? {
        Some(meta) => meta,
        None => {
            let Rebuilt { meta, lines } = rebuild_found(dir)?;
            if meta.topics.is_empty() && meta.next_topic_id == 1 {
                return Err(Error::corrupt(layout::meta_path(dir), 0, "no meta.json"));
            }
            plan.push(RepairAction::RebuildMeta { lines });
            meta
        }
    };
    let frame_bytes_max = meta.commit_bytes_max as usize;
    for shard in 0..meta.shards {
        let shard_dir = layout::shard_dir(dir, shard);
        let start = StartOffsets::load(&shard_dir)?.unwrap_or_default();
        let rewrites = rewrites_found(&shard_dir)?;
        for path in rewrites.leftovers {
            plan.push(RepairAction::DropRewrite { path });
        }
        for &id in &rewrites.decided {
            plan.push(RepairAction::FinishRewrite {
                segment: layout::segment_path(&shard_dir, id),
            });
        }
        // A decided rewrite's files are the segment's from the open on.
        let rewritten = |id: SegmentId, path: PathBuf, index: PathBuf| {
            if !rewrites.decided.contains(&id) {
                return (path, index);
            }
            let segment = layout::rewritten_segment_path(&shard_dir, id);
            let path = if segment.exists() { segment } else { path };
            (path, layout::rewritten_index_path(&shard_dir, id))
        };
        let mut segments: Vec<(SegmentId, PathBuf)> = Vec::new();
        let listing = std::fs::read_dir(&shard_dir)
            .map_err(|e| Error::io("read directory", &shard_dir, e))?;
        for entry in listing {
            let entry = entry.map_err(|e| Error::io("read directory", &shard_dir, e))?;
            if let ShardFile::Segment(id) = ShardFile::of(&entry.file_name().to_string_lossy())
                && id >= start.first_segment
            {
                segments.push((id, entry.path()));
            }
        }
        segments.sort();
        let prepared = layout::prepared_path(&shard_dir);
        if holds_frames(&prepared) {
            let id = segments
                .last()
                .map_or(start.first_segment, |(id, _)| id.next());
            plan.push(RepairAction::AdoptPrepared {
                path: prepared.clone(),
                segment: layout::segment_path(&shard_dir, id),
            });
            segments.push((id, prepared));
        }
        let checkpoint = checkpoint::load(&shard_dir)?.map(|(_, c)| c);
        let newest = segments.last().map(|(id, _)| *id);
        if let Some(c) = checkpoint {
            let missing = match newest {
                Some(n) => c.durable.segment > n,
                None => c.durable > Default::default(),
            };
            if missing {
                plan.push(RepairAction::SegmentMissing {
                    shard_dir: shard_dir.clone(),
                    segment: c.durable.segment,
                    durable_pos: c.durable.pos,
                });
            }
        }
        let Some(newest) = newest else {
            continue;
        };
        for (i, (id, path)) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            let (path, index) = rewritten(*id, path.clone(), layout::index_path(&shard_dir, *id));
            let path = &path;
            let file_len = std::fs::metadata(path)
                .map_err(|e| Error::io("stat", path, e))?
                .len();
            let mut known = known_for(checkpoint.as_ref(), *id, newest);
            let directory = IndexDirectory::read(&index)
                .ok()
                .filter(|d| d.segment == *id);
            if !last && let Some(d) = &directory {
                if file_len >= d.data_end {
                    continue;
                }
                known.durable = d.data_end;
            }
            let (_, end) = scan_segment_file(path, frame_bytes_max, known)?;
            let (pos, reason) = match end {
                ScanEnd::Clean { .. } => {
                    if !last {
                        plan.push(RepairAction::RebuildIndex { path: index });
                    }
                    continue;
                }
                ScanEnd::Torn { pos, garbage_end } if last => {
                    plan.push(RepairAction::CutTornTail {
                        segment: path.clone(),
                        pos,
                        bytes: garbage_end - pos,
                    });
                    continue;
                }
                ScanEnd::Torn { pos, .. } => (pos, "a torn write in a sealed segment".into()),
                ScanEnd::Damaged { pos, reason } => (pos, reason),
            };
            let mut dropped = dropped_from(path, pos, frame_bytes_max)?;
            let later: Vec<PathBuf> = segments[i + 1..].iter().map(|(_, p)| p.clone()).collect();
            for p in &later {
                dropped.add(&dropped_from(p, 0, frame_bytes_max)?);
            }
            plan.push(RepairAction::CutDamage {
                segment: path.clone(),
                pos,
                reason,
                later_segments: later,
                dropped,
            });
            break;
        }
    }
    Ok(plan)
}

/// The records of the valid frames of `path` from `pos` on.
fn dropped_from(path: &Path, pos: u64, frame_bytes_max: usize) -> Result<Dropped> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    let mut reader = ChunkReader::new(&file, path, len);
    records_after(&mut reader, pos, frame_bytes_max as u64)
}
