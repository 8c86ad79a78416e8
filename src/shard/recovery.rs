//! Recovery on open: rebuild each shard's index and find where its log ends. One file: the
//! decision table below and the code that walks it are read together (the frame scanner is in
//! `segment/scan.rs`; the plan a dry run prints, in `shard/plan.rs`).
//!
//! Sealed segments with a valid index file are not scanned (a file shorter than its index
//! says is); the last segment, and any sealed one whose index file is missing or damaged, are
//! scanned frame by frame, verifying both checksums of every frame. Where the frames stop, at
//! position P, what is known of the log decides what happened. D is the position through which
//! the segment was known durable: the largest of the shard's checkpoint (`shard::checkpoint`)
//! and the durable claims of the frames before P. The decision table, walked by
//! tests/recovery.rs and tests/durable.rs:
//!
//! | what is found                                               | verdict | action                |
//! |-------------------------------------------------------------|---------|-----------------------|
//! | P < D (frames cut short, zeroed, damaged, or the file gone)  | damage  | error naming file, P  |
//! | non-zero bytes beyond the unflushed window after P          | damage  | and D; with repair:   |
//! | a frame after P claiming the log durable past P             | damage  | cut at P, counted     |
//! | P in a sealed segment, not at zeros                         | damage  |                       |
//! | all zero after P                                            | clean   | the log ends at P     |
//! | non-zero only within the unflushed window after P           | torn    | zero them, end at P   |
//!
//! After a clean close the checkpoint says exactly where the log ends, so only the window
//! after it is read; after a crash the rest of the segment is read to its end, since frames
//! may lie anywhere past a stretch of damage. A checkpoint naming a segment newer than the
//! newest one found means segments were lost: refused too.
//!
//! A `next.seg.prep` that starts with a valid frame header was adopted by a roll (renamed to the
//! next segment's name) whose rename the crash undid: the writer does not wait for the
//! directory fsync at a roll. It becomes the segment after the newest and is the last segment.
//! Any other holds nothing acknowledged and is deleted, like `.tmp` files.
//!
//! The unflushed window ([`unflushed_window_bytes`]) bounds where a crash can leave partial
//! writes: the writer never has more than that many bytes written but not flushed. Damage
//! within the window and past D, with no later frame saying otherwise, cannot be told from a
//! torn write and is treated as one: every acknowledged record lies before D except those of
//! the last commits, whose frames the window covers.

use crate::segment::{Offset, SegmentId};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::config::SEGMENT_BYTES_MAX;
use crate::error::{Error, Result};
use crate::index::write_index_file;
use crate::index::{
    BatchEntry, IndexDirectory, Partition, SegmentIndex, SlotEntry, TopicPartition,
};
use crate::io::{self, AlignedBuf, IoBackend};
use crate::layout::{self, ShardFile, index_path};
use crate::segment::LogPos;
use crate::segment::batch::BatchProducer;
use crate::segment::format::{
    BLOCK_BYTES, DURABLE_BEHIND_UNKNOWN, FRAME_HEADER_BYTES, FrameHeader, HeaderSlot,
    encode_gap_frame,
};
use crate::segment::scan::{
    Dropped, Known, ScanEnd, ScannedFrame, SegmentBytes, records_after, scan,
};
use crate::shard::ShardShared;
use crate::shard::checkpoint::{self, Checkpoint, CheckpointFile};
use crate::shard::files::{SegmentFile, adopt_segment, create_segment};
use crate::shard::prepare::prepare_segment;
use crate::shard::producers;
use crate::shard::retention::{StartOffsets, remove_segment_files};

pub(crate) use crate::shard::writer::unflushed_window_bytes;

/// What recovery found and did, for the whole log.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Segment files found.
    pub segments: usize,
    /// Segments scanned frame by frame (the others were loaded from their index file).
    pub segments_scanned: usize,
    /// Frames (batches) recovered.
    pub frames: u64,
    /// Records recovered.
    pub records: u64,
    /// Torn tails found and cut off: (segment file, position, bytes zeroed).
    pub torn_tails: Vec<(PathBuf, u64, u64)>,
    /// Damage cut off by repair: (segment file, position, reason, records dropped).
    pub repaired: Vec<(PathBuf, u64, String, u64)>,
    /// Index files that were missing or damaged and were rebuilt from their segment.
    pub indexes_rebuilt: Vec<PathBuf>,
    /// Index files that were missing or damaged and could not be written for lack of disk
    /// space: their segments' entries are kept in memory until a later open writes them.
    pub indexes_unwritten: Vec<PathBuf>,
    /// Prepared segments (`next.seg.prep`) found holding frames and given their segment name:
    /// a crash came after a roll started writing one and before its rename was durable.
    pub segments_adopted: Vec<PathBuf>,
    /// `meta.json` was missing and repair rebuilt it from the segments: what it found (a line
    /// each). Empty when the metadata was there.
    pub meta_rebuilt: Vec<String>,
    /// Offsets of records a repair cut off, per partition (first, last): a gap frame stands
    /// for them at the new end of the log, so they are never given to new records; reads
    /// pass over them.
    pub offsets_skipped: Vec<(TopicPartition, Offset, Offset)>,
    /// Batches of consumer group commits that failed their checks: skipped, each group
    /// concerned keeping its commit from before (the log opens; only those commits are lost).
    pub commits_damaged: Vec<DamagedCommits>,
    /// Snapshots of the idempotent producers' state (`N.producers`) that failed their checks,
    /// with the reason: the producers' batches before them are forgotten (a retry of one may
    /// be stored again; nothing stored is lost).
    pub producer_snapshots_damaged: Vec<(PathBuf, String)>,
    /// Segments whose rewrite (`shard::rewrite`: each partition's records put together) was
    /// decided when a crash came, and was finished by putting the new files in place.
    pub rewrites_finished: Vec<PathBuf>,
}

impl RecoveryReport {
    /// A line for each change recovery made to the log: what a log file or an operator
    /// should see (the recovery journal, `recovery.log`, holds these).
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for line in &self.meta_rebuilt {
            out.push(format!("rebuilt meta.json from the segments: {line}"));
        }
        for (path, pos, bytes) in &self.torn_tails {
            out.push(format!(
                "cut a torn tail of {bytes} bytes at byte {pos} of {} (never acknowledged)",
                path.display()
            ));
        }
        for (path, pos, reason, records) in &self.repaired {
            out.push(format!(
                "repair cut {} at byte {pos}, dropping {records} records: {reason}",
                path.display()
            ));
        }
        for (tp, first, last) in &self.offsets_skipped {
            out.push(format!(
                "topic id {} partition {}: offsets {first}..={last} were cut off and stay taken",
                tp.topic_id, tp.partition
            ));
        }
        for path in &self.indexes_rebuilt {
            out.push(format!("rebuilt index file {}", path.display()));
        }
        for path in &self.indexes_unwritten {
            out.push(format!(
                "index file {} not written: no disk space (kept in memory)",
                path.display()
            ));
        }
        for (path, reason) in &self.producer_snapshots_damaged {
            out.push(format!(
                "skipped damaged producer snapshot {} ({reason}): retries of idempotent \
                 batches stored before it are not recognised",
                path.display()
            ));
        }
        for path in &self.segments_adopted {
            out.push(format!("adopted prepared segment {}", path.display()));
        }
        for path in &self.rewrites_finished {
            out.push(format!(
                "finished the rewrite of segment {}",
                path.display()
            ));
        }
        for d in &self.commits_damaged {
            out.push(format!(
                "skipped damaged group commits at byte {} of {} (offsets {}..{} of \
                 __consumer_offsets): {}",
                d.pos,
                d.path.display(),
                d.offsets.start,
                d.offsets.end,
                d.reason
            ));
        }
        out
    }
}

/// A batch of the offsets partition that failed its checks when the log opened: the commits
/// in it were skipped, and each of their groups fell back to its commit from before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedCommits {
    /// The segment holding the batch.
    pub path: std::path::PathBuf,
    /// The batch's position in it.
    pub pos: u64,
    /// What was wrong.
    pub reason: String,
    /// The offsets partition's records lost with it.
    pub offsets: std::ops::Range<crate::segment::Offset>,
}

/// Where a shard's writer starts.
pub(crate) struct ShardEnd {
    pub segment: SegmentId,
    pub data_end: u64,
    /// The shard's checkpoint file, recording this end as durable (not clean: the log is
    /// open). `None` if the file could not be created for lack of space: open goes on, and
    /// the next recovery reads every segment end in full.
    pub checkpoint: Option<CheckpointFile>,
}

impl ShardEnd {
    fn with_checkpoint(mut self, dir: &Path, seq: u64) -> Result<ShardEnd> {
        self.checkpoint = open_checkpoint(dir, seq, LogPos::new(self.segment, self.data_end))?;
        Ok(self)
    }
}

/// Opens (or creates) the shard's checkpoint file and records `end` as durable, not clean.
fn open_checkpoint(dir: &Path, seq: u64, end: LogPos) -> Result<Option<CheckpointFile>> {
    let mut file = match CheckpointFile::open(dir, seq) {
        Ok(f) => f,
        Err(e) if e.is_no_space() => return Ok(None),
        Err(e) => return Err(e),
    };
    file.write(Checkpoint {
        durable: end,
        clean: false,
    })?;
    Ok(Some(file))
}

/// What recovery needs to know.
pub(crate) struct RecoverParams<'a> {
    pub backend: IoBackend,
    pub segment_bytes: u64,
    /// The largest frame that can exist: the larger of the commit buffers old and new.
    pub frame_bytes_max: u64,
    pub window: u64,
    pub repair: bool,
    pub prezero: bool,
    pub partitions: &'a HashMap<TopicPartition, Arc<Partition>>,
    /// The metadata's topics, by id: (name, partition count).
    pub topics: &'a HashMap<u32, (String, u32)>,
    /// The metadata's next topic id: every id below it was assigned once.
    pub next_topic_id: u32,
}

impl RecoverParams<'_> {
    /// The partition stored records at `pos` of `path` belong to; `None` for a topic deleted
    /// since (its records stay until retention removes their segment). Records the metadata
    /// cannot account for (a partition past its topic's count, a topic id never assigned) are
    /// refused: they would be hidden, and their ids and offsets handed out again.
    fn partition_of(
        &self,
        tp: TopicPartition,
        path: &Path,
        pos: u64,
    ) -> Result<Option<&Arc<Partition>>> {
        if let Some(p) = self.partitions.get(&tp) {
            return Ok(Some(p));
        }
        let TopicPartition {
            topic_id,
            partition,
        } = tp;
        let reason = match self.topics.get(&topic_id) {
            Some((name, count)) => format!(
                "records of partition {partition} of topic {name:?} (id {topic_id}), which \
                 meta.json gives {count} partitions"
            ),
            None if topic_id >= self.next_topic_id => format!(
                "records of topic id {topic_id}, which meta.json never assigned (its next id \
                 is {})",
                self.next_topic_id
            ),
            None => return Ok(None),
        };
        Err(Error::corrupt(
            path,
            pos,
            format!("{reason}: the metadata does not match the data; restore meta.json"),
        ))
    }
}

/// Scans one segment file read-only (no repair, no lock): every frame verified, and how the
/// frames end. `commit_bytes_max` is the log's (from meta.json), which bounds frames and the
/// unflushed window; `known` is what the shard's checkpoint says of the segment
/// ([`known_for`]). Used by `floodgate inspect`.
pub fn scan_segment_file(
    path: &Path,
    commit_bytes_max: usize,
    known: Known,
) -> Result<(Vec<ScannedFrame>, ScanEnd)> {
    let file = fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    let mut reader = ChunkReader::new(&file, path, len);
    let mut frames = Vec::new();
    let end = scan(
        &mut reader,
        commit_bytes_max as u64,
        unflushed_window_bytes(commit_bytes_max),
        known,
        &mut |f| frames.push(f),
    )?;
    Ok((frames, end))
}

/// What a shard's checkpoint says of its segment `id` when `newest` is its newest segment:
/// how far it was known durable, and whether its end must be read in full (any segment after
/// a crash; a sealed segment always, since nothing records where it ended but its index file).
pub fn known_for(checkpoint: Option<&Checkpoint>, id: SegmentId, newest: SegmentId) -> Known {
    match checkpoint {
        Some(c) if id == newest && c.durable.segment == id => Known {
            durable: c.durable.pos,
            read_to_end: !c.clean,
        },
        _ => Known {
            durable: 0,
            read_to_end: true,
        },
    }
}

/// Refuses a shard whose checkpoint names a segment past its newest: segments that held
/// acknowledged records are gone (with repair, says so in the report and goes on).
fn check_newest_segment(
    shared: &ShardShared,
    params: &RecoverParams<'_>,
    report: &mut RecoveryReport,
    checkpoint: Option<&Checkpoint>,
    newest: Option<SegmentId>,
) -> Result<()> {
    let Some(c) = checkpoint else {
        return Ok(());
    };
    let missing = match newest {
        Some(newest) => c.durable.segment > newest,
        None => c.durable > LogPos::default(),
    };
    if !missing {
        return Ok(());
    }
    let path = shared.segment_path(c.durable.segment);
    let reason = format!(
        "segment file missing: the shard's checkpoint says the log was durable through position \
         {} of segment {}, but its newest segment is {}",
        c.durable.pos,
        c.durable.segment,
        newest.map_or("none".to_string(), |n| n.to_string())
    );
    if !params.repair {
        return Err(Error::corrupt(
            &path,
            c.durable.pos,
            format!(
                "{reason}. Acknowledged records are lost; restore the file, or open with \
                 Config::repair_truncate_damaged(true) to go on without them"
            ),
        ));
    }
    report.repaired.push((path, c.durable.pos, reason, 0));
    Ok(())
}

/// Recovers one shard: lists its segments, loads or scans each, fills the partitions' indexes,
/// and returns where the writer continues.
pub(crate) fn recover_shard(
    shared: &ShardShared,
    params: &RecoverParams<'_>,
    report: &mut RecoveryReport,
) -> Result<ShardEnd> {
    let dir = &shared.dir;
    let loaded = checkpoint::load(dir)?;
    let checkpoint = loaded.map(|(_, c)| c);
    // Where retention left each partition; segments it was deleting when a crash came are
    // deleted now.
    let start = StartOffsets::load(dir)?.unwrap_or_default();
    for &(topic_id, partition, offset) in &start.partitions {
        let tp = TopicPartition::new(topic_id, partition);
        if let Some(p) = params.partitions.get(&tp) {
            p.offset_next.store(offset.0, Ordering::Relaxed);
            p.offset_acked.store(offset.0, Ordering::Release);
        }
    }
    for &(topic_id, partition, offset) in &start.moved {
        if let Some(p) = params
            .partitions
            .get(&TopicPartition::new(topic_id, partition))
        {
            p.restore_start(offset);
        }
    }
    // Rewrites a crash interrupted: finished if decided, else undone.
    for id in crate::shard::rewrite::finish_rewrites(dir)? {
        report.rewrites_finished.push(shared.segment_path(id));
    }
    let mut ids = Vec::new();
    let mut indexes = Vec::new();
    let mut adopted = None;
    for entry in fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))? {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        match ShardFile::of(&entry.file_name().to_string_lossy()) {
            ShardFile::Segment(id) => ids.push(id),
            ShardFile::Index(id) | ShardFile::Producers(id) => indexes.push(id),
            ShardFile::Prepared if holds_frames(&entry.path()) => adopted = Some(entry.path()),
            ShardFile::Prepared | ShardFile::Temporary => {
                let _ = fs::remove_file(entry.path());
            }
            // `finish_rewrites` left none.
            ShardFile::RewrittenSegment(_)
            | ShardFile::RewrittenIndex(_)
            | ShardFile::RewriteRuns(_)
            | ShardFile::KeptAsWritten(_)
            | ShardFile::Other => {}
        }
    }
    ids.sort_unstable();
    let live = |tp: TopicPartition| params.partitions.contains_key(&tp);
    check_start_offsets(dir, params.frame_bytes_max as usize, &ids, &live)?;
    let deleted = ids.partition_point(|&id| id < start.first_segment);
    for &id in ids[..deleted].iter().chain(&indexes) {
        if id < start.first_segment || ids.binary_search(&id).is_err() {
            remove_segment_files(dir, id)?;
        }
    }
    ids.drain(..deleted);
    // A prepared segment holding frames was adopted by a roll whose rename was not durable
    // yet: it is the segment after the newest.
    if let Some(prepared) = adopted {
        let id = ids.last().map_or(start.first_segment, |last| last.next());
        let path = shared.segment_path(id);
        fs::rename(&prepared, &path).map_err(|e| Error::io("rename", &path, e))?;
        io::sync_dir(dir)?;
        report.segments_adopted.push(path);
        ids.push(id);
    }
    report.segments += ids.len();
    check_newest_segment(
        shared,
        params,
        report,
        checkpoint.as_ref(),
        ids.last().copied(),
    )?;
    let seq = loaded.map_or(0, |(seq, _)| seq);
    if ids.is_empty() {
        if params.prezero {
            let prepared = prepare_segment(dir, params.segment_bytes, params.backend, None)?
                .expect("preparation without a stop signal completes");
            adopt_segment(shared, SegmentId(0), &prepared, params.backend, true)?;
        } else {
            create_segment(shared, SegmentId(0), params.segment_bytes, params.backend)?;
        }
        let end = LogPos::new(SegmentId(0), 0);
        return Ok(ShardEnd {
            segment: end.segment,
            data_end: end.pos,
            checkpoint: open_checkpoint(dir, seq, end)?,
        });
    }
    let newest = *ids.last().expect("segments are listed");
    for (i, &id) in ids.iter().enumerate() {
        let path = shared.segment_path(id);
        let file = io::open_segment(&path, params.backend, false, false)?;
        let file_len = file
            .metadata()
            .map_err(|e| Error::io("stat", &path, e))?
            .len();
        let last = i + 1 == ids.len();
        let directory = match last {
            true => None,
            false => load_directory(&index_path(dir, id), id),
        };
        let generation = directory.as_ref().map_or(0, |d| d.generation);
        let segment = Arc::new(SegmentFile {
            path,
            file,
            generation,
            data_end: (directory.as_ref())
                .filter(|d| d.generation > 0)
                .map(|d| d.data_end),
        });
        shared
            .segments
            .write()
            .expect("segments lock")
            .insert(id, Arc::clone(&segment));
        let mut known = known_for(checkpoint.as_ref(), id, newest);
        if let Some(directory) = directory {
            if file_len >= directory.data_end {
                apply_runs(&segment.path, &directory, params, report)?;
                shared.note_sealed(id, directory.runs.iter());
                load_producers(shared, report, id);
                continue;
            }
            // Cut short: its index file says how far its frames went, and the scan below
            // finds them ending earlier.
            known.durable = directory.data_end;
        }
        report.segments_scanned += 1;
        if file_len > SEGMENT_BYTES_MAX {
            return Err(Error::corrupt(
                &segment.path,
                SEGMENT_BYTES_MAX,
                format!(
                    "a segment file of {file_len} bytes: larger than {SEGMENT_BYTES_MAX} (4 GiB), \
                     the most segment_bytes allows"
                ),
            ));
        }
        let mut reader = ChunkReader::new(&segment.file, &segment.path, file_len);
        let mut frame_list: Vec<(TopicPartition, BatchEntry)> = Vec::new();
        let mut records = 0u64;
        let mut producers: Vec<(TopicPartition, BatchProducer, u64)> = Vec::new();
        let end = scan(
            &mut reader,
            params.frame_bytes_max,
            params.window,
            known,
            &mut |f| {
                records += u64::from(f.records);
                let entry = BatchEntry {
                    segment: id,
                    ..f.entry
                };
                let tp = TopicPartition::new(f.topic_id, f.partition);
                if let Some(p) = f.producer {
                    producers.push((tp, p, entry.base_offset.0));
                }
                frame_list.push((tp, entry));
            },
        )?;
        report.records += records;
        apply(&segment.path, &frame_list, params, report)?;
        if matches!(end, ScanEnd::Clean { .. }) || last {
            // Idempotent producers' last batches, so a retry of one across the restart is
            // known (not after damage: a batch a repair drops must not answer for its retry).
            note_producers(shared, &producers);
        }
        let (data_end, cut) = match end {
            ScanEnd::Clean { pos } => (pos, None),
            ScanEnd::Torn { pos, garbage_end } if last => {
                report
                    .torn_tails
                    .push((segment.path.clone(), pos, garbage_end - pos));
                (pos, Some(garbage_end))
            }
            ScanEnd::Torn { pos, .. } | ScanEnd::Damaged { pos, .. } => {
                let reason = match end {
                    ScanEnd::Damaged { reason, .. } => reason,
                    _ => "a torn write in a sealed segment".to_string(),
                };
                let damage = Damage { pos, reason };
                let later = &ids[i + 1..];
                let dropped =
                    damaged(shared, params, report, &segment, &mut reader, later, damage)?;
                // Its snapshot would answer for batches the repair dropped.
                let _ = fs::remove_file(layout::producers_path(dir, id));
                let mut frames = frame_list;
                let end = skip_dropped(shared, params, report, (id, pos, file_len), &dropped)?;
                frames.extend(end.1);
                let end = finish(shared, params, id, end.0, &frames, None)?;
                return end.with_checkpoint(dir, seq);
            }
        };
        if last {
            return finish(shared, params, id, data_end, &frame_list, cut)?
                .with_checkpoint(dir, seq);
        }
        let index = SegmentIndex {
            segment: id,
            generation: 0,
            data_end,
            frames: frame_list,
        };
        let idx_path = index_path(dir, id);
        // The producers as of this segment's end, before its index file (see
        // `shard::producers`): the next open does not scan it.
        let snapshot = {
            let recovered = shared.recovered_producers.lock().expect("producers lock");
            let state = recovered.iter().map(|(tp, p)| (*tp, &**p));
            producers::encode(state, Instant::now(), producers::wall_ms())
        };
        let written = producers::write(&layout::producers_path(dir, id), &snapshot);
        let directory = match written.and_then(|()| write_index_file(&idx_path, &index)) {
            Ok(directory) => directory,
            // A full disk: the segment's entries stay in memory (as the active segment's do),
            // and the next open with room writes the file. Reading needs no new space.
            Err(e) if e.is_no_space() => {
                let stamps = index
                    .frames
                    .iter()
                    .map(|(tp, e)| (tp.topic_id, e.max_timestamp));
                shared.note_sealed_at(id, shared.newest_aged(stamps));
                report.indexes_unwritten.push(idx_path);
                continue;
            }
            Err(e) => return Err(e),
        };
        report.indexes_rebuilt.push(idx_path);
        shared.note_sealed(id, directory.runs.iter());
        // The entries just applied give way to the runs of the new index file.
        for run in &directory.runs {
            if let Some(p) = params.partitions.get(&run.id()) {
                p.seal_run(id, *run, directory.entries_pos(run));
            }
        }
    }
    unreachable!("the last segment returns from the loop")
}

/// Takes the idempotent producers' state from sealed segment `id`'s snapshot, in place of
/// what the segments before it gave (it holds all of that). None (a log written before
/// snapshots): the state stays as it was. A damaged one is reported and the state dropped.
fn load_producers(shared: &ShardShared, report: &mut RecoveryReport, id: SegmentId) {
    let path = layout::producers_path(&shared.dir, id);
    let loaded = producers::load(&path);
    let mut recovered = shared.recovered_producers.lock().expect("producers lock");
    match loaded {
        None => {}
        Some(Ok(state)) => *recovered = state,
        Some(Err(reason)) => {
            recovered.clear();
            report.producer_snapshots_damaged.push((path, reason));
        }
    }
}

/// Notes each idempotent producer's batches (in log order) for the writer to start from.
fn note_producers(shared: &ShardShared, batches: &[(TopicPartition, BatchProducer, u64)]) {
    if batches.is_empty() {
        return;
    }
    let mut recovered = shared.recovered_producers.lock().expect("producers lock");
    for &(tp, p, base_offset) in batches {
        let seqs = recovered.entry(tp).or_default().entry(p.id).or_default();
        seqs.note(p.epoch, p.first_sequence, p.last_sequence, base_offset);
    }
}

/// Checks `start-offsets.json` against the segments before it decides what open deletes:
/// retention records the first segment it keeps and each partition's earliest offset before it
/// removes anything, so the segments below that first one (left by a deletion a crash
/// interrupted) hold only records below those offsets, and the newest segment is never below
/// it. A damaged file would have open delete records nobody deleted: it is refused instead.
///
/// Also used by `floodgate inspect --verify`: `ids` are the shard's segments, sorted;
/// `live(partition)` says whether the metadata has the partition; `frame_bytes_max` bounds the
/// frames of a segment without an index file, which is scanned.
pub fn check_start_offsets(
    shard_dir: &Path,
    frame_bytes_max: usize,
    ids: &[SegmentId],
    live: &dyn Fn(TopicPartition) -> bool,
) -> Result<()> {
    let Some(start) = StartOffsets::load(shard_dir)? else {
        return Ok(());
    };
    let path = layout::start_offsets_path(shard_dir);
    let refuse = |reason: String| {
        Err(Error::corrupt(
            &path,
            0,
            format!("{reason}: the file does not match the segments; restore it or remove it"),
        ))
    };
    if let Some(&newest) = ids.last()
        && start.first_segment > newest
    {
        return refuse(format!(
            "it says segments below {} are deleted, but the newest segment is {newest}",
            start.first_segment
        ));
    }
    let earliest: HashMap<TopicPartition, Offset> = (start.partitions.iter())
        .map(|&(topic_id, partition, offset)| (TopicPartition::new(topic_id, partition), offset))
        .collect();
    for &id in ids.iter().take_while(|&&id| id < start.first_segment) {
        let runs: Vec<(TopicPartition, Offset)> =
            match load_directory(&index_path(shard_dir, id), id) {
                Some(d) => d.runs.iter().map(|r| (r.id(), r.last_offset)).collect(),
                None => {
                    let segment = layout::segment_path(shard_dir, id);
                    let bytes_max = frame_bytes_max;
                    let (frames, _) = scan_segment_file(&segment, bytes_max, Known::default())?;
                    (frames.iter())
                        .map(|f| {
                            (
                                TopicPartition::new(f.topic_id, f.partition),
                                f.entry.last_offset,
                            )
                        })
                        .collect()
                }
            };
        for (tp, last) in runs {
            // Records of a deleted topic may go; a partition's records at or past its earliest
            // offset were never deleted.
            let floor = earliest.get(&tp).copied().unwrap_or_default();
            if live(tp) && last >= floor {
                return refuse(format!(
                    "segment {id}, below its first kept segment {}, holds offset {last} of topic \
                     id {} partition {}, whose earliest kept offset it says is {floor}",
                    start.first_segment, tp.topic_id, tp.partition
                ));
            }
        }
    }
    Ok(())
}

/// Whether a prepared segment file holds frames: it starts with a valid frame header. A roll's
/// records are acknowledged only after a flush that covers the segment's first write, so a
/// file without one holds nothing acknowledged.
pub fn holds_frames(path: &Path) -> bool {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; FRAME_HEADER_BYTES];
    fs::File::open(path)
        .and_then(|f| f.read_exact_at(&mut head, 0))
        .is_ok_and(|()| matches!(FrameHeader::decode(&head), Ok(HeaderSlot::Frame(_))))
}

/// How many index entries recovery hands the segment's entry list at a time.
const SLOTS_PER_PUBLISH: usize = 1 << 16;

/// Cuts the last segment at `data_end` (zeroing up to `garbage_end` if given) and hands it to
/// the writer.
fn finish(
    shared: &ShardShared,
    params: &RecoverParams<'_>,
    id: SegmentId,
    data_end: u64,
    frames: &[(TopicPartition, BatchEntry)],
    garbage_end: Option<u64>,
) -> Result<ShardEnd> {
    if let Some(garbage_end) = garbage_end {
        write_tail(shared, params, id, data_end, &[], garbage_end)?;
    }
    // The active segment's frames, for its index file when the writer seals it; a piece at a
    // time, so that they are not held twice.
    let mut index_log = shared.index_log.lock().expect("index log lock");
    index_log.publish_distributed(id, &[]);
    let mut slots = Vec::with_capacity(frames.len().min(SLOTS_PER_PUBLISH));
    for piece in frames.chunks(SLOTS_PER_PUBLISH) {
        slots.clear();
        slots.extend(piece.iter().filter_map(|(tp, e)| {
            let partition = params.partitions.get(tp)?;
            (e.pos < data_end).then_some(SlotEntry::new(partition.slot, e))
        }));
        index_log.publish_distributed(id, &slots);
    }
    drop(index_log);
    let _ = fs::remove_file(index_path(&shared.dir, id));
    *shared.acked_end.lock().expect("acked end lock") = LogPos::new(id, data_end);
    Ok(ShardEnd {
        segment: id,
        data_end,
        checkpoint: None,
    })
}

/// Damage found before a segment's tail: where, and what is wrong.
struct Damage {
    pos: u64,
    reason: String,
}

/// Handles damage before the tail: an error, or with repair, counts what is dropped and deletes
/// the later segments.
fn damaged(
    shared: &ShardShared,
    params: &RecoverParams<'_>,
    report: &mut RecoveryReport,
    segment: &SegmentFile,
    reader: &mut ChunkReader<'_>,
    later: &[SegmentId],
    damage: Damage,
) -> Result<Dropped> {
    let Damage { pos, reason } = damage;
    if !params.repair {
        return Err(Error::corrupt(
            &segment.path,
            pos,
            format!(
                "{reason}. Open with Config::repair_truncate_damaged(true) to cut the log here \
                 (records after this point are dropped and counted)"
            ),
        ));
    }
    let mut dropped = records_after(reader, pos, params.frame_bytes_max)?;
    for &id in later {
        let path = shared.segment_path(id);
        if let Ok(file) = io::open_segment(&path, params.backend, false, false) {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let mut r = ChunkReader::new(&file, &path, len);
            dropped.add(&records_after(&mut r, 0, params.frame_bytes_max)?);
        }
        shared.segments.write().expect("segments lock").remove(&id);
        fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
        let _ = fs::remove_file(index_path(&shared.dir, id));
        let _ = fs::remove_file(layout::producers_path(&shared.dir, id));
    }
    io::sync_dir(&shared.dir)?;
    report
        .repaired
        .push((segment.path.clone(), pos, reason, dropped.records()));
    Ok(dropped)
}

/// After a repair cut segment `id` at `pos` (its file `len` bytes long), puts a gap frame
/// there for each partition whose records were cut off, standing for their offsets, so that
/// no offset ever given is given again; the rest of the file is zeroed. Returns where the
/// log now ends, and the gap frames' entries (already in their partitions' indexes).
fn skip_dropped(
    shared: &ShardShared,
    params: &RecoverParams<'_>,
    report: &mut RecoveryReport,
    (id, pos, len): (SegmentId, u64, u64),
    dropped: &Dropped,
) -> Result<(u64, Vec<(TopicPartition, BatchEntry)>)> {
    let mut tail = Vec::new();
    let mut gaps = Vec::new();
    for (&(topic_id, partition), &(_, last, _)) in &dropped.partitions {
        let tp = TopicPartition::new(topic_id, partition);
        let Some(p) = params.partitions.get(&tp) else {
            continue; // a topic the metadata no longer has
        };
        // From the partition's next offset: the records of a frame too damaged to read
        // are in the gap too.
        let first = p.offset_next.load(Ordering::Relaxed);
        if last < first {
            continue;
        }
        let frame = encode_gap_frame(topic_id, partition, first, last, DURABLE_BEHIND_UNKNOWN);
        let entry = BatchEntry {
            base_offset: Offset(first),
            last_offset: Offset(last),
            max_timestamp: -1,
            segment: id,
            pos: pos + tail.len() as u64,
            frame_bytes: frame.len() as u32,
        };
        tail.extend_from_slice(&frame);
        gaps.push((tp, entry));
        report
            .offsets_skipped
            .push((tp, entry.base_offset, entry.last_offset));
    }
    write_tail(shared, params, id, pos, &tail, len)?;
    let path = shared.segment_path(id);
    apply(&path, &gaps, params, report)?;
    Ok((pos + tail.len() as u64, gaps))
}

/// Writes `tail` at `pos` of segment `id` and zeroes the rest up to `end`, keeping the bytes
/// before `pos` in its block, and flushes, so no stale bytes lie after the new end of the log.
fn write_tail(
    shared: &ShardShared,
    params: &RecoverParams<'_>,
    id: SegmentId,
    pos: u64,
    tail: &[u8],
    end: u64,
) -> Result<()> {
    let path = shared.segment_path(id);
    let file = io::open_segment(&path, params.backend, false, true)?;
    let start = pos - pos % BLOCK_BYTES as u64;
    let end = end
        .max(pos + tail.len() as u64)
        .next_multiple_of(BLOCK_BYTES as u64);
    if end <= start {
        return Ok(());
    }
    let chunk_max = 1 << 20;
    let mut at = start;
    while at < end {
        let n = ((end - at) as usize).min(chunk_max);
        let mut buf = if at == start {
            io::read_aligned(&file, &path, at, n)?
        } else {
            AlignedBuf::new(n)
        };
        let keep = if at == start {
            (pos - start) as usize
        } else {
            0
        };
        buf[keep..].fill(0);
        // The part of `tail` that falls in this chunk.
        let tail_at = (at + keep as u64 - pos) as usize;
        if let Some(rest) = tail.get(tail_at..) {
            let n = rest.len().min(buf.len() - keep);
            buf[keep..keep + n].copy_from_slice(&rest[..n]);
        }
        io::write_all_at(&file, &path, at, &buf)?;
        at += n as u64;
    }
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", &path, e))
}

/// The directory of a sealed segment's index file, if it is there and sound (else the segment
/// is scanned and its index file rebuilt).
fn load_directory(path: &Path, id: SegmentId) -> Option<IndexDirectory> {
    IndexDirectory::read(path).ok().filter(|d| d.segment == id)
}

/// Adds a sealed segment's runs to their partitions, checking that offsets stay dense. Each
/// run's entries are checked (checksum, density) when a reader first loads them.
fn apply_runs(
    path: &Path,
    directory: &IndexDirectory,
    params: &RecoverParams<'_>,
    report: &mut RecoveryReport,
) -> Result<()> {
    report.frames += u64::from(directory.entry_count);
    for run in &directory.runs {
        let Some(p) = params.partition_of(run.id(), path, 0)? else {
            continue;
        };
        check_dense(path, run.id(), p, run.first_offset, 0)?;
        p.push_run(directory.segment, *run, directory.entries_pos(run));
        p.offset_next
            .store(run.last_offset.next().0, Ordering::Relaxed);
        p.offset_acked
            .store(run.last_offset.next().0, Ordering::Release);
    }
    Ok(())
}

/// An error unless `first_offset` is the partition's next offset.
fn check_dense(
    path: &Path,
    TopicPartition {
        topic_id,
        partition,
    }: TopicPartition,
    p: &Partition,
    first_offset: Offset,
    pos: u64,
) -> Result<()> {
    let next = Offset(p.offset_next.load(Ordering::Relaxed));
    if first_offset == next {
        return Ok(());
    }
    Err(Error::corrupt(
        path,
        pos,
        format!(
            "offset gap in topic id {topic_id} partition {partition}: expected offset {next}, \
             found a batch at {first_offset}"
        ),
    ))
}

/// Adds recovered frames to their partitions, checking that offsets stay dense.
fn apply(
    path: &Path,
    frames: &[(TopicPartition, BatchEntry)],
    params: &RecoverParams<'_>,
    report: &mut RecoveryReport,
) -> Result<()> {
    // Each partition's index grows by exactly its count, not by doubling: a segment of many
    // small batches adds millions of entries at open.
    let mut counts: HashMap<TopicPartition, usize> = HashMap::new();
    for (tp, _) in frames {
        *counts.entry(*tp).or_default() += 1;
    }
    for (tp, n) in counts {
        if let Some(p) = params.partitions.get(&tp) {
            p.reserve(n);
        }
    }
    for &(tp, entry) in frames {
        report.frames += 1;
        let Some(p) = params.partition_of(tp, path, entry.pos)? else {
            continue;
        };
        check_dense(path, tp, p, entry.base_offset, entry.pos)?;
        p.push(entry);
        p.offset_next
            .store(entry.last_offset.next().0, Ordering::Relaxed);
        p.offset_acked
            .store(entry.last_offset.next().0, Ordering::Release);
    }
    Ok(())
}

/// Reads a segment in large aligned chunks, keeping the current one.
pub(crate) struct ChunkReader<'a> {
    file: &'a fs::File,
    path: &'a Path,
    len: u64,
    buf: Option<AlignedBuf>,
    buf_pos: u64,
}

const CHUNK_BYTES: usize = 8 << 20;

impl<'a> ChunkReader<'a> {
    pub fn new(file: &'a fs::File, path: &'a Path, len: u64) -> ChunkReader<'a> {
        ChunkReader {
            file,
            path,
            len,
            buf: None,
            buf_pos: 0,
        }
    }
}

impl SegmentBytes for ChunkReader<'_> {
    fn len(&self) -> u64 {
        self.len
    }

    fn get(&mut self, pos: u64, len: usize) -> Result<&[u8]> {
        assert!(pos + len as u64 <= self.len);
        let have = self.buf.as_ref().is_some_and(|b| {
            pos >= self.buf_pos && pos + len as u64 <= self.buf_pos + b.len() as u64
        });
        if !have {
            let start = pos - pos % BLOCK_BYTES as u64;
            let need = (pos + len as u64 - start).next_multiple_of(BLOCK_BYTES as u64) as usize;
            let n = need.max(CHUNK_BYTES);
            self.buf = Some(io::read_aligned(self.file, self.path, start, n)?);
            self.buf_pos = start;
        }
        let b = self.buf.as_ref().expect("chunk loaded");
        let from = (pos - self.buf_pos) as usize;
        Ok(&b[from..from + len])
    }

    fn last_nonzero(&mut self, from: u64, to: u64) -> Result<Option<u64>> {
        let mut last = None;
        let mut at = from;
        while at < to {
            let n = ((to - at) as usize).min(CHUNK_BYTES);
            if let Some(i) = self.get(at, n)?.iter().rposition(|&b| b != 0) {
                last = Some(at + i as u64);
            }
            at += n as u64;
        }
        Ok(last)
    }
}
