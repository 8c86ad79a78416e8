//! Where each partition's frames lie in a rewritten segment, for consumers that read only
//! their own partitions' stretches of it.
//!
//! A segment the writer made interleaves every partition's batches, so a consumer of some of
//! a shard's partitions scans all of it and skips the frames of the others. A rewritten
//! segment holds each partition's batches together (`shard::rewrite`), one stretch per
//! partition per rewrite window: the members of a group, each owning a share of the
//! partitions, read only their stretches, each byte of the segment by one member, and need
//! not keep together in the read cache. The stretches come from the segment's index file,
//! read once per segment and kept for the few segments being read.

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::index::SegmentIndex;
use crate::segment::{SegmentId, TopicPartition};

/// A stretch of a segment holding frames of one partition only, and all of them there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    pub start: u64,
    pub end: u64,
    pub tp: TopicPartition,
}

/// A rewritten segment's stretches, in position order, back to back.
#[derive(Debug)]
pub(crate) struct Extents {
    pub items: Vec<Extent>,
}

/// Segments with more stretches than this are scanned whole instead: a table of them would
/// cost more memory than it saves (a rewrite that merged little leaves one stretch a frame).
pub(crate) const EXTENTS_MAX: usize = 1 << 18;
/// Tables kept per shard: the segments its consumers are reading now.
const TABLES_KEPT: usize = 4;

impl Extents {
    /// The stretches of `index`, None if there are more than [`EXTENTS_MAX`].
    pub fn of(index: &SegmentIndex) -> Option<Extents> {
        let mut items: Vec<Extent> = Vec::new();
        for &(tp, e) in &index.frames {
            let end = e.pos + u64::from(e.frame_bytes);
            match items.last_mut() {
                Some(last) if last.tp == tp && last.end == e.pos => last.end = end,
                _ => {
                    if items.len() == EXTENTS_MAX {
                        return None;
                    }
                    items.push(Extent {
                        start: e.pos,
                        end,
                        tp,
                    });
                }
            }
        }
        Some(Extents { items })
    }

    /// The index of the first stretch ending after `pos`.
    pub fn from(&self, pos: u64) -> usize {
        self.items.partition_point(|e| e.end <= pos)
    }

    /// Into `out` (emptied first), the parts from `pos` on of the stretches whose partitions
    /// `wanted` says are read, as runs to read with one read each: stretches less than
    /// `gap_max` apart are read together, gap included, and no run is longer than `run_max`
    /// (a longer stretch is cut). Runs start where a stretch starts, `pos`, or a cut, and stop
    /// once they cover `bytes`.
    pub fn runs(
        &self,
        pos: u64,
        wanted: impl Fn(TopicPartition) -> bool,
        (gap_max, run_max): (u64, u64),
        bytes: u64,
        out: &mut Vec<(u64, u64)>,
    ) {
        out.clear();
        let mut covered = 0u64;
        let mut run: Option<(u64, u64)> = None;
        for e in self.items[self.from(pos)..].iter().filter(|e| wanted(e.tp)) {
            let mut start = e.start.max(pos);
            if let Some((first, end)) = run.as_mut()
                && start - *end <= gap_max
                && e.end - *first <= run_max
            {
                *end = e.end;
                continue;
            }
            if let Some(r) = run.take() {
                out.push(r);
                covered += r.1 - r.0;
                if covered >= bytes {
                    return;
                }
            }
            while e.end - start > run_max {
                out.push((start, start + run_max));
                covered += run_max;
                start += run_max;
                if covered >= bytes {
                    return;
                }
            }
            run = Some((start, e.end));
        }
        out.extend(run);
    }
}

/// A shard's tables of stretches, for the last few rewritten segments asked for.
#[derive(Debug, Default)]
pub(crate) struct ExtentTables {
    /// Newest asked for last; None: the segment has too many stretches to keep.
    tables: Mutex<Vec<Table>>,
}

/// A segment, its generation, and its stretches (None: too many to keep).
type Table = (SegmentId, u32, Option<Arc<Extents>>);

impl ExtentTables {
    /// The stretches of segment `segment` of generation `generation` (rewritten), read from
    /// its index file in `dir` the first time; None if it has too many, or if the file on
    /// disk is of another generation (a rewrite replaced it meanwhile).
    pub fn get(
        &self,
        dir: &Path,
        segment: SegmentId,
        generation: u32,
    ) -> Result<Option<Arc<Extents>>> {
        {
            let mut tables = self.tables.lock().expect("extent tables lock");
            if let Some(i) = tables
                .iter()
                .position(|(s, g, _)| *s == segment && *g == generation)
            {
                let table = tables.remove(i);
                let found = table.2.clone();
                tables.push(table);
                return Ok(found);
            }
        }
        let path = crate::layout::index_path(dir, segment);
        let bytes = std::fs::read(&path).map_err(|e| Error::io("read index file", &path, e))?;
        let index = SegmentIndex::decode(&bytes, &path)?;
        if index.generation != generation {
            return Ok(None);
        }
        let table = Extents::of(&index).map(Arc::new);
        let mut tables = self.tables.lock().expect("extent tables lock");
        if !tables
            .iter()
            .any(|(s, g, _)| *s == segment && *g == generation)
        {
            if tables.len() == TABLES_KEPT {
                tables.remove(0);
            }
            tables.push((segment, generation, table.clone()));
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::BatchEntry;
    use crate::segment::Offset;

    #[test]
    fn a_partitions_frames_back_to_back_make_one_stretch() {
        let tp = |p| TopicPartition::new(1, p);
        let frame = |p, pos, bytes| {
            let e = BatchEntry {
                base_offset: Offset(0),
                last_offset: Offset(0),
                max_timestamp: 0,
                segment: SegmentId(3),
                pos,
                frame_bytes: bytes,
            };
            (tp(p), e)
        };
        let index = SegmentIndex {
            segment: SegmentId(3),
            generation: 1,
            data_end: 700,
            frames: vec![
                frame(0, 0, 100),
                frame(0, 100, 100),
                frame(1, 200, 300),
                frame(0, 500, 100),
                frame(2, 600, 100),
            ],
        };
        let e = Extents::of(&index).expect("few stretches");
        let spans: Vec<_> = e.items.iter().map(|x| (x.start, x.end, x.tp)).collect();
        assert_eq!(
            spans,
            vec![
                (0, 200, tp(0)),
                (200, 500, tp(1)),
                (500, 600, tp(0)),
                (600, 700, tp(2)),
            ]
        );
        assert_eq!(e.from(0), 0);
        assert_eq!(e.from(199), 0);
        assert_eq!(e.from(200), 1);
        assert_eq!(e.from(650), 3);
        assert_eq!(e.from(700), 4, "past the last");
        let mut runs = Vec::new();
        let all = |_| true;
        e.runs(0, all, (0, 1000), u64::MAX, &mut runs);
        assert_eq!(runs, vec![(0, 700)], "back to back: one run");
        let not_1 = |t: TopicPartition| t.partition != 1;
        e.runs(0, not_1, (0, 1000), u64::MAX, &mut runs);
        assert_eq!(runs, vec![(0, 200), (500, 700)], "partition 1 skipped");
        e.runs(0, not_1, (300, 1000), u64::MAX, &mut runs);
        assert_eq!(runs, vec![(0, 700)], "a gap of 300 read through");
        e.runs(150, not_1, (0, 1000), u64::MAX, &mut runs);
        assert_eq!(runs, vec![(150, 200), (500, 700)], "from within a stretch");
        e.runs(
            0,
            |t: TopicPartition| t.partition == 1,
            (0, 120),
            u64::MAX,
            &mut runs,
        );
        assert_eq!(runs, vec![(200, 320), (320, 440), (440, 500)], "cut");
        e.runs(0, not_1, (0, 1000), 100, &mut runs);
        assert_eq!(runs, vec![(0, 200)], "enough bytes");
        e.runs(
            0,
            |t: TopicPartition| t.partition == 9,
            (0, 1000),
            100,
            &mut runs,
        );
        assert!(runs.is_empty(), "none wanted");
    }
}
