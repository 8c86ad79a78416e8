//! Retention: deleting a shard's oldest sealed segments by total size and by age.
//!
//! Segments are shared by every partition of the shard, so retention deletes whole segments,
//! oldest first, and only sealed ones whose index file is written (the active segment is never
//! deleted). A segment goes when the shard's segment files take more than its share of
//! `Config::retention_bytes`, or when its newest record timestamp is older than
//! `Config::retention_age` (Kafka's rule for `retention.ms`: the largest timestamp in the
//! segment). It runs on the shard's helper thread, so producers never wait for it.
//!
//! Deleting must not let offsets restart: a partition whose every batch was deleted would
//! otherwise come back at offset 0 after a restart. Before any file is removed, the shard writes
//! `start-offsets.json`: the first segment kept and, for each partition, its earliest offset
//! from then on. Recovery starts each partition there and first finishes any deletion a crash
//! interrupted (segments below the first one kept).
//!
//! A topic may keep its records for less time than the log (`TopicConfig::retention_age`),
//! or keep fewer bytes per partition (`TopicConfig::retention_bytes`). Its partitions share
//! segments with others, so retention moves their starts instead: once a sealed segment's
//! newest timestamp is older than the topic's retention, or a partition holds more than its
//! bytes without the segment, the partition's records in it and before it are no longer read
//! (short of what a protecting group has not committed). The starts are kept in `start-offsets.json` too (`moved`), and a segment goes
//! once nothing in it, nor before it, is read any more.

use crate::segment::{Offset, SegmentId};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::Retention;
use crate::error::{Error, Result};
use crate::io;
use crate::layout::{index_path, segment_path, start_offsets_path};
use crate::meta::read_json_file;
use crate::shard::ShardShared;

const START_OFFSETS_VERSION: u32 = 1;

/// The shard's `start-offsets.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct StartOffsets {
    pub version: u32,
    /// Segments below this one are deleted (or about to be).
    pub first_segment: SegmentId,
    /// (topic id, partition, earliest offset) of every partition of the shard.
    pub partitions: Vec<(u32, u32, Offset)>,
    /// (topic id, partition, start) of each partition whose start was moved past its first
    /// stored batch: readers begin there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moved: Vec<(u32, u32, Offset)>,
}

impl StartOffsets {
    /// Reads a shard's start offsets; `None` if retention never deleted anything there.
    pub fn load(dir: &Path) -> Result<Option<StartOffsets>> {
        let path = start_offsets_path(dir);
        let Some(offsets) = read_json_file::<StartOffsets>(&path)? else {
            return Ok(None);
        };
        if offsets.version != START_OFFSETS_VERSION {
            return Err(Error::corrupt(
                &path,
                0,
                format!("start offsets version {}", offsets.version),
            ));
        }
        Ok(Some(offsets))
    }

    fn store(&self, dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec(self).expect("start offsets serialise");
        io::replace_file(&start_offsets_path(dir), &bytes)
    }
}

/// Deletes what `policy` no longer keeps; returns the number of segments deleted.
pub(crate) fn enforce(
    shard: &ShardShared,
    policy: &Retention,
    segment_bytes: u64,
    now_ms: i64,
) -> Result<usize> {
    // Before the log has loaded what groups committed, nothing is known to be safe to delete.
    if !shard.protection_set() {
        return Ok(0);
    }
    let sealed = shard.sealed_segments();
    let by_topic = move_starts(shard, &sealed, now_ms)?;
    let mut held = shard.segments.read().expect("segments lock").len() as u64 * segment_bytes;
    let age_ms = policy.age.map(|a| a.as_millis() as i64);
    let mut doomed = Vec::new();
    for (id, max_timestamp) in sealed {
        let too_big = policy.bytes.is_some_and(|max| held > max);
        let too_old = age_ms.is_some_and(|age| max_timestamp < now_ms.saturating_sub(age));
        let unread = by_topic && shard.unread_through(id);
        if !(too_big || too_old || unread) || shard.retention_blocker(id).is_some() {
            break;
        }
        doomed.push(id);
        held = held.saturating_sub(segment_bytes);
    }
    let Some(&last) = doomed.last() else {
        return Ok(0);
    };
    delete_through(shard, last.next(), &doomed)?;
    shard.update_full(policy.disk_bytes_max, segment_bytes);
    Ok(doomed.len())
}

/// Moves the start of each partition whose topic has a retention of its own (by age, by size
/// or both) past the records of the sealed segments that retention lets go (`sealed`: each sealed segment and its newest
/// timestamp, oldest first), short of what a protecting group has not committed, and makes the
/// starts durable. Returns whether any partition's start may have moved.
fn move_starts(shard: &ShardShared, sealed: &[(SegmentId, i64)], now_ms: i64) -> Result<bool> {
    shard.catch_up();
    let floors = shard.protected_floors().unwrap_or_default();
    let mut moved = false;
    let partitions: Vec<_> = shard.partitions.read().expect("partitions lock").clone();
    for p in partitions {
        let by_age = match p.retention_ms() {
            Some(ms) => {
                let cutoff = now_ms.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX));
                // Kafka's rule: a segment goes when its newest record is older than the
                // retention, and the segments before it went.
                let expired = sealed.iter().take_while(|&&(_, newest)| newest < cutoff);
                expired
                    .last()
                    .and_then(|&(id, _)| p.last_offset_through(id))
                    .map(Offset::next)
            }
            None => None,
        };
        let by_size = match p.retention_bytes() {
            Some(limit) => p.retained_bytes(limit, &shard.sealed_runs)?,
            None => None,
        };
        let Some(last) = by_age.max(by_size) else {
            continue;
        };
        let to = match floors.get(&p.id()) {
            Some(&floor) => floor.min(last),
            None => last,
        };
        moved |= p.trim_to(to);
    }
    if moved {
        store_moved_starts(shard)?;
    }
    Ok(shard.starts_move())
}

/// Makes the shard's partitions' moved starts durable.
pub(crate) fn store_moved_starts(shard: &ShardShared) -> Result<()> {
    let _file = shard.start_offsets.lock().expect("start offsets lock");
    let mut starts = StartOffsets::load(&shard.dir)?.unwrap_or(StartOffsets {
        version: START_OFFSETS_VERSION,
        ..StartOffsets::default()
    });
    starts.moved = shard.moved_starts();
    starts.store(&shard.dir)
}

/// Deletes `doomed` (every sealed segment below `keep_from`).
fn delete_through(shard: &ShardShared, keep_from: SegmentId, doomed: &[SegmentId]) -> Result<()> {
    // Readers stop seeing the batches first; then the new start offsets are made durable;
    // only then do files go. A crash in between leaves data that recovery deletes or keeps,
    // never offsets that restart.
    let partitions = shard.forget_segments_below(keep_from);
    let file = shard.start_offsets.lock().expect("start offsets lock");
    StartOffsets {
        version: START_OFFSETS_VERSION,
        first_segment: keep_from,
        partitions,
        moved: shard.moved_starts(),
    }
    .store(&shard.dir)?;
    drop(file);
    // Not while a rewrite puts a segment's new files in place.
    let _files = shard.segment_files.lock().expect("segment files lock");
    for &id in doomed {
        shard.segments.write().expect("segments lock").remove(&id);
        remove_segment_files(&shard.dir, id)?;
    }
    io::sync_dir(&shard.dir)
}

/// Removes segment `id` and its index file (either may already be gone).
pub(crate) fn remove_segment_files(dir: &Path, id: SegmentId) -> Result<()> {
    let producers = crate::layout::producers_path(dir, id);
    let rewritten = [
        crate::layout::rewritten_segment_path(dir, id),
        crate::layout::rewritten_index_path(dir, id),
        crate::layout::kept_as_written_path(dir, id),
    ];
    for path in [segment_path(dir, id), index_path(dir, id), producers]
        .into_iter()
        .chain(rewritten)
    {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &path, e)),
        }
    }
    Ok(())
}
